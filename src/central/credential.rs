//! How the client authenticates to IoT Central.
//!
//! IoT Central accepts two header forms: an API token, sent raw (`Authorization:
//! SharedAccessSignature sr=…`, no `Bearer` prefix), and an Azure AD access token for the
//! resource `https://apps.azureiotcentral.com` (`Authorization: Bearer …`).
//!
//! Why no `azure_identity`: the Azure SDK for Rust identity crate (Azure CLI, environment and
//! managed-identity credentials) is pre-1.0 and its API still changes between releases; it brings
//! its own `azure_core` HTTP pipeline (a second HTTP/TLS stack next to our reqwest 0.13 + rustls),
//! which would double the dependency tree for one header. Instead a bearer token is taken as a
//! value (for example from `IOTC_BEARER_TOKEN`, filled by `az account get-access-token
//! --resource https://apps.azureiotcentral.com --query accessToken -o tsv`), and anything that can
//! mint tokens — including an `azure_identity` credential in the caller's own crate — plugs in
//! through the [`TokenProvider`] trait, which the client asks before every request.

use crate::secret::Secret;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The environment variable holding an API token.
pub const ENV_API_TOKEN: &str = "IOTC_API_TOKEN";
/// The environment variable holding an Azure AD bearer token.
pub const ENV_BEARER_TOKEN: &str = "IOTC_BEARER_TOKEN";

/// The future a [`TokenProvider`] returns.
pub type TokenFuture<'a> = Pin<Box<dyn Future<Output = Result<Secret, String>> + Send + 'a>>;

/// Something that mints Azure AD access tokens for `https://apps.azureiotcentral.com`
/// (for example a wrapper around an `azure_identity` credential). Called before every request;
/// caching and refreshing are the provider's business.
pub trait TokenProvider: Send + Sync {
    /// Returns a valid access token (without the `Bearer ` prefix).
    fn token(&self) -> TokenFuture<'_>;
}

/// A credential for IoT Central.
///
/// ```
/// use iotc::central::Credential;
/// let c = Credential::api_token("SharedAccessSignature sr=x&sig=y&skn=t&se=1");
/// assert_eq!(format!("{c:?}"), "Credential::ApiToken([secret elided])");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Credential {
    /// An IoT Central API token, `SharedAccessSignature sr=…`, sent as is.
    ApiToken(Secret),
    /// An Azure AD access token, sent as `Bearer <token>`.
    Bearer(Secret),
    /// A provider asked for a fresh bearer token before each request.
    Provider(Arc<dyn TokenProvider>),
}

impl Credential {
    /// An API token. A value without the `SharedAccessSignature ` prefix gets it added.
    pub fn api_token(token: impl Into<String>) -> Credential {
        let token = token.into();
        let token = token.trim();
        if token.starts_with("SharedAccessSignature ") {
            Credential::ApiToken(Secret::new(token))
        } else {
            Credential::ApiToken(Secret::new(format!("SharedAccessSignature {token}")))
        }
    }

    /// An Azure AD bearer token (with or without the `Bearer ` prefix).
    pub fn bearer(token: impl Into<String>) -> Credential {
        let token = token.into();
        let token = token.trim();
        let token = token.strip_prefix("Bearer ").unwrap_or(token);
        Credential::Bearer(Secret::new(token))
    }

    /// A credential from the environment: `IOTC_API_TOKEN`, else `IOTC_BEARER_TOKEN`.
    pub fn from_env() -> Option<Credential> {
        if let Ok(t) = std::env::var(ENV_API_TOKEN) {
            if !t.trim().is_empty() {
                return Some(Credential::api_token(t));
            }
        }
        match std::env::var(ENV_BEARER_TOKEN) {
            Ok(t) if !t.trim().is_empty() => Some(Credential::bearer(t)),
            _ => None,
        }
    }

    /// The value of the `Authorization` header.
    pub(crate) async fn header_value(&self) -> Result<Secret, String> {
        match self {
            Credential::ApiToken(t) => Ok(t.clone()),
            Credential::Bearer(t) => Ok(Secret::new(format!("Bearer {}", t.expose()))),
            Credential::Provider(p) => {
                let t = p.token().await?;
                Ok(Secret::new(format!("Bearer {}", t.expose())))
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiToken(_) => f.write_str("Credential::ApiToken([secret elided])"),
            Credential::Bearer(_) => f.write_str("Credential::Bearer([secret elided])"),
            Credential::Provider(_) => f.write_str("Credential::Provider(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_forms() {
        let a = Credential::api_token("sr=a&sig=b&skn=c&se=1");
        assert_eq!(
            a.header_value().await.unwrap().expose(),
            "SharedAccessSignature sr=a&sig=b&skn=c&se=1"
        );
        let b = Credential::bearer("Bearer eyJ0");
        assert_eq!(b.header_value().await.unwrap().expose(), "Bearer eyJ0");
        assert!(!format!("{b:?}").contains("eyJ0"));
    }
}
