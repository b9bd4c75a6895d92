//! Certificates: the X.509 profiles IoT Central and DPS need, made natively.
//!
//! This module replaces the docs' `create_test_cert.js` and `certGen.sh`: it makes root and
//! intermediate CAs, device and verification (proof-of-possession) certificates and TLS server
//! certificates with the profiles of DESIGN.md ([`profile`]), signs CSRs, reads and describes
//! certificates ([`inspect`]), validates chains ([`verify_chain`]) and what a certificate is
//! good for ([`check_purpose`]), and writes bundles as PEM, encrypted PKCS#8 and PKCS#12
//! ([`write_bundle`]). A CA's key is a file key or a key in a PKCS#11 token
//! ([`crate::pkcs11`]): [`Authority::new_root_in_token`], [`Authority::load`] with
//! `PREFIX_key.uri`. It is synchronous and has no I/O except [`Authority::load`],
//! [`write_bundle`] and the token calls of a token CA.
//!
//! ```
//! use iotc::cert::{Authority, CaOptions, LeafOptions, KeyType};
//! use iotc::ids::RegistrationId;
//!
//! let root = Authority::new_root(&CaOptions { cn: Some("Contoso root".into()), ..Default::default() })?;
//! let inter = root.issue_intermediate(&CaOptions::default())?;
//! let device = inter.issue_device(&RegistrationId::new("sensor-0001")?, &LeafOptions {
//!     key_type: KeyType::EcP256, ..Default::default() })?;
//! // What the device presents in TLS: its certificate, then the intermediate.
//! assert_eq!(device.chain_der()?.len(), 2);
//! println!("SHA-1 thumbprint: {}", device.sha1_thumbprint());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod authority;
mod csr;
mod error;
mod inspect;
mod key;
pub mod profile;
mod purpose;
mod signer;
mod verify;
mod write;

pub use authority::{Authority, Issued};
pub use error::{CertError, ChainError};
pub use inspect::{
    certificate_string, decode_certificate_string, inspect, parse_pem_certs, read_certs,
    sha1_thumbprint, sha256_thumbprint, CertInfo, ExtensionInfo,
};
pub use key::{KeyType, PrivateKey, UnknownKeyType, DEFAULT_KDF_ITERATIONS};
pub use profile::{CaOptions, LeafOptions};
pub use purpose::{check_purpose, Purpose, UnknownPurpose};
pub use verify::{verify_chain, verify_signed_by, ChainPath, MAX_CHAIN};
pub use write::{
    bundle_paths, check_bundle_name, pkcs12, write_bundle, WriteOptions, WrittenFiles,
};

/// `PREFIX_cert.pem`-style path: `prefix` with `suffix` appended to its last component.
pub fn prefixed_path(prefix: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    authority::prefixed(prefix, suffix)
}

#[cfg(test)]
mod tests;
