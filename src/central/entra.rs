//! Microsoft Entra sign-in: IoT Central credentials from the Azure SDK's identity crate.
//!
//! IoT Central prefers Entra bearer tokens to API tokens for automation: a factory pipeline
//! signs in as a service principal, an operator through the Azure CLI, a workload on Azure as
//! a managed or workload identity. [`EntraSettings::credential`] turns an [`AuthMethod`] and
//! the usual `AZURE_*` values into a [`Credential`] whose tokens (scope [`SCOPE`]) come from
//! `azure_identity` 1.x and are cached by [`TokenCache`].
//!
//! Two things are ours rather than the crate's, and why:
//!
//! * **The transport.** The identity crate's HTTP goes through [`EntraHttp`], our reqwest
//!   (rustls on aws-lc-rs) with the same extra trusted CA as the IoT Central client, so an
//!   authority with a private CA (the emulator's) works and no second TLS stack is linked: the
//!   crate's own reqwest transport would bring reqwest 0.12 next to our 0.13.
//! * **The certificate assertion.** The crate's `ClientCertificateCredential` exists only
//!   with its `client_certificate` feature, which links OpenSSL (one crypto backend here:
//!   aws-lc-rs). So a certificate signs in through the crate's `ClientAssertionCredential`
//!   with a [`ClientCertificate`] that signs the assertion the way the crate's credential
//!   does (RS256, `x5t` = base64url SHA-1 of the certificate, five-minute lifetime) with
//!   jsonwebtoken on aws-lc-rs.
//!
//! Secrets (the client secret, the certificate's key) and tokens never reach `Debug` or logs.

use super::credential::{AccessToken, AccessTokenFuture, Credential, TokenCache, TokenSource};
use super::error::Error;
use crate::secret::Secret;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions, Transport};
use base64::Engine;
use sha1::Digest;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use url::Url;
use zeroize::Zeroizing;

/// The scope of IoT Central tokens: the resource `https://apps.azureiotcentral.com`.
pub const SCOPE: &str = "https://apps.azureiotcentral.com/.default";
/// The public cloud's authority, used when no other is given.
pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";

/// Directory (tenant) id of a service principal or workload identity.
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
/// Application (client) id; for a managed identity, the user-assigned identity's client id.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// Client secret of a service principal.
pub const ENV_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// PEM (certificate + private key) or PKCS#12 file of a service principal's certificate.
pub const ENV_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// Password of that file's private key (an encrypted PEM key or a PKCS#12 file).
pub const ENV_CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
/// The Entra authority, `https://login.microsoftonline.com` unless set.
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// The federated token file of a workload identity (set by the Kubernetes webhook).
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";

/// How the client signs in to IoT Central (`--auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// An IoT Central API token (or a bearer token given as a value).
    ApiToken,
    /// The Azure CLI's signed-in account (`az login`), else the Azure Developer CLI's
    /// (`azd auth login`).
    AzureCli,
    /// A service principal with a client secret or a certificate.
    ServicePrincipal,
    /// The managed identity of the Azure resource the program runs on.
    ManagedIdentity,
    /// A workload identity (federated token file, for example on AKS).
    WorkloadIdentity,
}

impl AuthMethod {
    /// Every method, in the order the CLI lists them.
    pub const ALL: [AuthMethod; 5] = [
        AuthMethod::ApiToken,
        AuthMethod::AzureCli,
        AuthMethod::ServicePrincipal,
        AuthMethod::ManagedIdentity,
        AuthMethod::WorkloadIdentity,
    ];

    /// The name on the command line and in profiles.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ApiToken => "api-token",
            AuthMethod::AzureCli => "azure-cli",
            AuthMethod::ServicePrincipal => "service-principal",
            AuthMethod::ManagedIdentity => "managed-identity",
            AuthMethod::WorkloadIdentity => "workload-identity",
        }
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = AuthMethod::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown auth method {s:?} (expected {})", names.join(", "))
            })
    }
}

/// A service principal's certificate and private key (RSA: Entra accepts no other key type
/// for client assertions), ready to sign assertions.
#[derive(Clone)]
pub struct ClientCertificate {
    /// PKCS#1 DER of the RSA private key (what the signer takes).
    key_der: Zeroizing<Vec<u8>>,
    /// base64url SHA-1 of the certificate DER (the `x5t` header).
    x5t: String,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("x5t", &self.x5t)
            .field("key", &"[secret elided]")
            .finish()
    }
}

impl ClientCertificate {
    /// From the certificate (DER) and its private key (PKCS#8 DER). Refuses a key that is not
    /// RSA or that does not belong to the certificate.
    pub fn from_der(cert_der: &[u8], pkcs8_key_der: &[u8]) -> Result<ClientCertificate, Error> {
        use pkcs8::der::Decode;
        use x509_parser::prelude::FromDer;
        let bad = |reason: String| Error::Credential { reason };
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
            .map_err(|e| bad(format!("the client certificate is not valid DER: {e}")))?;
        let info = pkcs8::PrivateKeyInfo::from_der(pkcs8_key_der)
            .map_err(|e| bad(format!("the client certificate's key is not PKCS#8: {e}")))?;
        // rsaEncryption; Entra signs in with RSA certificates only (RS256 / PS256 assertions).
        if info.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
            return Err(bad(
                "the client certificate's key is not RSA: Microsoft Entra accepts only RSA \
                 certificates for client assertions (make one with --key-type rsa-2048)"
                    .into(),
            ));
        }
        use rcgen::PublicKeyData;
        let key_pair = rcgen::KeyPair::try_from(pkcs8_key_der)
            .map_err(|e| bad(format!("the client certificate's key is unusable: {e}")))?;
        if key_pair.subject_public_key_info() != cert.public_key().raw {
            return Err(bad(
                "the private key does not belong to the client certificate".into(),
            ));
        }
        let x5t =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(cert_der));
        Ok(ClientCertificate {
            key_der: Zeroizing::new(info.private_key.to_vec()),
            x5t,
        })
    }

    /// The `x5t` header value: base64url of the certificate's SHA-1 thumbprint.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// A client assertion for `client_id` at the token endpoint `audience`, valid five
    /// minutes (what the Azure SDK's certificate credential sends).
    pub fn assertion(&self, client_id: &str, audience: &str) -> Result<String, Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut jti = [0u8; 16];
        rand::fill(&mut jti);
        let jti: String = jti.iter().map(|b| format!("{b:02x}")).collect();
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": jti,
            "nbf": now,
            "iat": now,
            "exp": now + 300,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        let key = jsonwebtoken::EncodingKey::from_rsa_der(&self.key_der);
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| Error::Credential {
            reason: format!("cannot sign the client assertion: {e}"),
        })
    }
}

/// Everything the Entra credentials are made from. The CLI fills it from the `AZURE_*`
/// environment variables (see `cli::config`); a library user fills it directly.
#[derive(Clone, Default)]
pub struct EntraSettings {
    /// Directory (tenant) id (`AZURE_TENANT_ID`).
    pub tenant_id: Option<String>,
    /// Application (client) id (`AZURE_CLIENT_ID`).
    pub client_id: Option<String>,
    /// Client secret (`AZURE_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// Client certificate (`AZURE_CLIENT_CERTIFICATE_PATH`, loaded by the caller).
    pub client_certificate: Option<ClientCertificate>,
    /// The authority (`AZURE_AUTHORITY_HOST`); `None`: the public cloud's.
    pub authority_host: Option<String>,
    /// Federated token file of a workload identity (`AZURE_FEDERATED_TOKEN_FILE`).
    pub federated_token_file: Option<PathBuf>,
    /// Extra trusted CA certificates (PEM) for the authority, as `--ca-file` gives them.
    pub extra_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for EntraSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraSettings")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_certificate", &self.client_certificate)
            .field("authority_host", &self.authority_host)
            .field("federated_token_file", &self.federated_token_file)
            .field("extra_ca_pem", &self.extra_ca_pem.as_ref().map(|_| "[set]"))
            .finish()
    }
}

fn missing(method: AuthMethod, what: &str, env: &str) -> Error {
    Error::Credential {
        reason: format!("--auth {method} needs {what}: set {env}"),
    }
}

impl EntraSettings {
    /// The credential of `method`. Fails, naming the missing or conflicting value, before
    /// anything is sent; [`AuthMethod::ApiToken`] is not an Entra method and is refused.
    pub fn credential(&self, method: AuthMethod) -> Result<Credential, Error> {
        let source: AzureSource = match method {
            AuthMethod::ApiToken => {
                return Err(Error::Credential {
                    reason: "api-token is not a Microsoft Entra sign-in".into(),
                })
            }
            AuthMethod::AzureCli => {
                let cred = azure_identity::DeveloperToolsCredential::new(None).map_err(azure)?;
                AzureSource::new(method, cred)
            }
            AuthMethod::ServicePrincipal => self.service_principal()?,
            AuthMethod::ManagedIdentity => {
                let options = azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: self
                        .client_id
                        .clone()
                        .map(azure_identity::UserAssignedId::ClientId),
                    client_options: self.client_options()?,
                };
                let cred =
                    azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(azure)?;
                AzureSource::new(method, cred)
            }
            AuthMethod::WorkloadIdentity => {
                let tenant = self.tenant(method)?;
                let client = self.client(method)?;
                let file = self.federated_token_file.clone().ok_or_else(|| {
                    missing(method, "the federated token file", ENV_FEDERATED_TOKEN_FILE)
                })?;
                let options = azure_identity::WorkloadIdentityCredentialOptions {
                    credential_options: azure_identity::ClientAssertionCredentialOptions {
                        client_options: self.client_options()?,
                    },
                    client_id: Some(client),
                    tenant_id: Some(tenant),
                    token_file_path: Some(file),
                };
                let cred = azure_identity::WorkloadIdentityCredential::new(Some(options))
                    .map_err(azure)?;
                AzureSource::new(method, cred)
            }
        };
        Ok(Credential::Entra(Arc::new(TokenCache::new(source))))
    }

    fn tenant(&self, method: AuthMethod) -> Result<String, Error> {
        self.tenant_id
            .clone()
            .ok_or_else(|| missing(method, "the directory (tenant) id", ENV_TENANT_ID))
    }

    fn client(&self, method: AuthMethod) -> Result<String, Error> {
        self.client_id
            .clone()
            .ok_or_else(|| missing(method, "the application (client) id", ENV_CLIENT_ID))
    }

    fn service_principal(&self) -> Result<AzureSource, Error> {
        let method = AuthMethod::ServicePrincipal;
        let tenant = self.tenant(method)?;
        let client = self.client(method)?;
        match (&self.client_secret, &self.client_certificate) {
            (Some(_), Some(_)) => Err(Error::Credential {
                reason: format!(
                    "--auth service-principal got both a client secret ({ENV_CLIENT_SECRET}) \
                     and a certificate ({ENV_CLIENT_CERTIFICATE_PATH}); unset one of them"
                ),
            }),
            (None, None) => Err(missing(
                method,
                "a client secret or a certificate",
                &format!("{ENV_CLIENT_SECRET} or {ENV_CLIENT_CERTIFICATE_PATH}"),
            )),
            (Some(secret), None) => {
                let options = azure_identity::ClientSecretCredentialOptions {
                    client_options: self.client_options()?,
                };
                let cred = azure_identity::ClientSecretCredential::new(
                    &tenant,
                    client,
                    azure_core::credentials::Secret::new(secret.expose().to_owned()),
                    Some(options),
                )
                .map_err(azure)?;
                Ok(AzureSource::new(method, cred))
            }
            (None, Some(cert)) => {
                let audience = self
                    .authority()?
                    .join(&format!("/{tenant}/oauth2/v2.0/token"))
                    .map_err(|e| Error::Credential {
                        reason: format!("tenant id {tenant:?} does not make a URL: {e}"),
                    })?;
                let assertion = CertificateAssertion {
                    certificate: cert.clone(),
                    client_id: client.clone(),
                    audience: audience.to_string(),
                };
                let options = azure_identity::ClientAssertionCredentialOptions {
                    client_options: self.client_options()?,
                };
                let cred = azure_identity::ClientAssertionCredential::new(
                    tenant,
                    client,
                    assertion,
                    Some(options),
                )
                .map_err(azure)?;
                Ok(AzureSource::new(method, cred))
            }
        }
    }

    /// The authority, checked: https, no path.
    fn authority(&self) -> Result<Url, Error> {
        let text = self
            .authority_host
            .as_deref()
            .unwrap_or(PUBLIC_AUTHORITY_HOST);
        let bad = |reason: &str| Error::Credential {
            reason: format!("authority host {text:?} ({ENV_AUTHORITY_HOST}): {reason}"),
        };
        let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(bad("it must be an https URL"));
        }
        if !url.path().trim_end_matches('/').is_empty() || url.query().is_some() {
            return Err(bad("expected the authority's root URL, without a path"));
        }
        Ok(url)
    }

    /// The identity crate's options: our transport and the authority.
    fn client_options(&self) -> Result<ClientOptions, Error> {
        let http = EntraHttp::new(self.extra_ca_pem.as_deref())?;
        let mut cloud = azure_core::cloud::CustomConfiguration::default();
        cloud.authority_host = self.authority()?.as_str().trim_end_matches('/').to_owned();
        Ok(ClientOptions {
            transport: Some(Transport::new(Arc::new(http))),
            cloud: Some(Arc::new(cloud.into())),
            ..ClientOptions::default()
        })
    }
}

fn azure(e: azure_core::Error) -> Error {
    Error::Credential {
        reason: e.to_string(),
    }
}

/// The identity crate's HTTP transport: our reqwest client (rustls on aws-lc-rs, the extra
/// trusted CA). Not https-only: a managed identity's endpoint (IMDS) is plain http.
#[derive(Debug, Clone)]
pub struct EntraHttp {
    http: reqwest::Client,
}

impl EntraHttp {
    /// A transport trusting the system roots and the CA certificates of `extra_ca_pem`.
    pub fn new(extra_ca_pem: Option<&[u8]>) -> Result<EntraHttp, Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("iotc/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = extra_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| Error::InvalidCa {
                    reason: e.to_string(),
                })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|source| Error::BuildClient { source })?;
        Ok(EntraHttp { http })
    }
}

#[async_trait::async_trait]
impl azure_core::http::HttpClient for EntraHttp {
    async fn execute_request(
        &self,
        request: &azure_core::http::Request,
    ) -> azure_core::Result<azure_core::http::AsyncRawResponse> {
        use azure_core::error::{ErrorKind, ResultExt};
        use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
        let method = reqwest::Method::from_bytes(request.method().as_ref().as_bytes())
            .with_context(ErrorKind::Other, "unsupported HTTP method")?;
        let mut req = self.http.request(method, request.url().clone());
        for (name, value) in request.headers().iter() {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match request.body() {
            azure_core::http::Body::Bytes(bytes) => req.body(bytes.clone()),
            _ => {
                return Err(azure_core::Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by iotc's Entra transport",
                ))
            }
        };
        let resp = req.send().await.map_err(|e| {
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            azure_core::Error::with_error(kind, e, "the request to the Entra authority failed")
        })?;
        let status = resp.status().as_u16();
        let headers: std::collections::HashMap<HeaderName, HeaderValue> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                let v = v.to_str().ok()?;
                Some((
                    HeaderName::from(k.as_str().to_owned()),
                    HeaderValue::from(v.to_owned()),
                ))
            })
            .collect();
        let body = resp.bytes().await.map_err(|e| {
            azure_core::Error::with_error(ErrorKind::Io, e, "reading the authority's answer failed")
        })?;
        Ok(azure_core::http::AsyncRawResponse::from_bytes(
            status.into(),
            Headers::from(headers),
            body,
        ))
    }
}

/// The assertion of a certificate-based service principal, made fresh for each token request.
struct CertificateAssertion {
    certificate: ClientCertificate,
    client_id: String,
    audience: String,
}

impl fmt::Debug for CertificateAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAssertion")
            .field("client_id", &self.client_id)
            .field("certificate", &self.certificate)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl azure_identity::ClientAssertion for CertificateAssertion {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        self.certificate
            .assertion(&self.client_id, &self.audience)
            .map_err(|e| {
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    e.to_string(),
                )
            })
    }
}

/// An identity-crate credential as a [`TokenSource`].
struct AzureSource {
    method: AuthMethod,
    credential: Arc<dyn TokenCredential>,
}

impl AzureSource {
    fn new(method: AuthMethod, credential: Arc<dyn TokenCredential>) -> AzureSource {
        AzureSource { method, credential }
    }
}

impl TokenSource for AzureSource {
    fn fetch(&self) -> AccessTokenFuture<'_> {
        Box::pin(async move {
            let t = self
                .credential
                .get_token(&[SCOPE], None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(AccessToken {
                token: Secret::new(t.token.secret().to_owned()),
                expires_on: t.expires_on,
            })
        })
    }

    fn name(&self) -> &str {
        self.method.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_unknown_names_list_the_choices() {
        for m in AuthMethod::ALL {
            assert_eq!(m.as_str().parse::<AuthMethod>().unwrap(), m);
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
        let e = "device-code".parse::<AuthMethod>().unwrap_err();
        assert!(e.contains("azure-cli, service-principal"), "{e}");
    }

    #[test]
    fn service_principal_names_what_is_missing_or_conflicting() {
        let err = |s: &EntraSettings| {
            s.credential(AuthMethod::ServicePrincipal)
                .unwrap_err()
                .to_string()
        };
        let mut s = EntraSettings::default();
        assert!(err(&s).contains("AZURE_TENANT_ID"), "{}", err(&s));
        s.tenant_id = Some("t".into());
        assert!(err(&s).contains("AZURE_CLIENT_ID"), "{}", err(&s));
        s.client_id = Some("c".into());
        assert!(err(&s).contains("AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH"));
        s.client_secret = Some(Secret::new("hunter2"));
        s.authority_host = Some("http://127.0.0.1:1".into());
        assert!(err(&s).contains("https"), "{}", err(&s));
        s.authority_host = None;
        let c = s.credential(AuthMethod::ServicePrincipal).unwrap();
        assert_eq!(format!("{c:?}"), "Credential::Entra(service-principal)");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(EntraSettings::default()
            .credential(AuthMethod::ApiToken)
            .is_err());
    }
}
