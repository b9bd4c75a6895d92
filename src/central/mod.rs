//! The IoT Central data-plane client (api-version 2022-07-31, preview for list queries).
//!
//! One [`Client`] handles auth, api-version, pacing, retries, timeouts and paging; each resource
//! has its own file adding methods to it (one method per operation of the spec). The wire models
//! in [`models`] are shared with the emulator. Errors are one type, [`Error`], which keeps the
//! service's status, code, message and requestId.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iotc::central::Error> {
//! use iotc::central::{CertificateEntry, Client, ClientOptions, Credential};
//! let pem = std::fs::read("emulator/ca.pem").unwrap_or_default();
//! let client = Client::new(
//!     "https://127.0.0.1:8443",
//!     Credential::api_token("SharedAccessSignature sr=…"),
//!     Some(ClientOptions::default().with_ca_pem(pem)),
//! )?;
//! let code = client.generate_verification_code("line-1", CertificateEntry::Primary).await?;
//! println!("sign a certificate with CN={}", code.verification_code);
//! # Ok(()) }
//! ```

mod api_tokens;
pub mod client;
pub mod credential;
mod device_groups;
mod device_templates;
mod devices;
pub mod enrollment_groups;
pub mod entra;
pub mod error;
pub mod models;
mod organizations;
mod pacing;
pub mod pager;
mod roles;
mod users;

pub use client::{api_base_url, Client, ClientOptions, ClientStats, RetryOptions};
pub use credential::{AccessToken, Credential, TokenCache, TokenProvider, TokenSource};
pub use enrollment_groups::CertificateEntry;
pub use entra::{AuthMethod, ClientCertificate, EntraSettings};
pub use error::Error;
pub use pager::{ListOptions, Pager};
