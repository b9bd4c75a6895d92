//! How the client authenticates to IoT Central.
//!
//! IoT Central accepts two header forms: an API token, sent raw (`Authorization:
//! SharedAccessSignature sr=…`, no `Bearer` prefix), and a Microsoft Entra (Azure AD) access
//! token for the resource `https://apps.azureiotcentral.com` (`Authorization: Bearer …`).
//!
//! Entra tokens come from the Azure SDK's identity crate (see [`super::entra`]: Azure CLI,
//! service principal, managed identity, workload identity) through a [`TokenCache`]. The
//! cache exists because the identity crate's credentials do not all cache (the Azure CLI one
//! runs `az` on every call) and those that do refresh a fixed five minutes before expiry,
//! which for a short-lived token means on every call. The cache asks its [`TokenSource`]
//! once per token lifetime: it refreshes ahead of expiry (a quarter of the lifetime before
//! it, at most five minutes), concurrent requests share one refresh (the first caller
//! fetches, the others wait for its answer), a refresh that fails while the old token is
//! still valid keeps the old one, and a 401 for a token that has expired (or that the
//! service says has expired) drops it so the request is retried once with a fresh one.
//!
//! A token taken as a value (`IOTC_BEARER_TOKEN`) is sent as is, and anything else that mints
//! tokens plugs in through the [`TokenProvider`] trait, asked before every request.

use crate::secret::Secret;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

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
    /// A Microsoft Entra credential behind a [`TokenCache`] (see [`super::entra`]).
    Entra(Arc<TokenCache>),
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
            Credential::Entra(cache) => {
                let t = cache.token().await?;
                Ok(Secret::new(format!("Bearer {}", t.expose())))
            }
        }
    }

    /// After a 401 to a request sent with `header`: whether a fresh token may fix it (and
    /// the stale one is dropped so the next [`Credential::header_value`] fetches anew).
    /// Only an Entra token that has expired, or that the service called expired
    /// (`service_says_expired`), qualifies: any other refusal would repeat with a new token.
    pub(crate) async fn unauthorized(&self, header: &Secret, service_says_expired: bool) -> bool {
        match self {
            Credential::Entra(cache) => {
                let token = header.expose().strip_prefix("Bearer ").unwrap_or_default();
                cache.invalidate_if_stale(token, service_says_expired).await
            }
            _ => false,
        }
    }
}

/// An access token and the time it expires.
#[derive(Clone)]
pub struct AccessToken {
    /// The token (a JWT), without the `Bearer ` prefix.
    pub token: Secret,
    /// When it expires.
    pub expires_on: OffsetDateTime,
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &self.token)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// The future a [`TokenSource`] returns.
pub type AccessTokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, String>> + Send + 'a>>;

/// Something that fetches a fresh access token on every call (no caching of its own needed):
/// what a [`TokenCache`] wraps.
pub trait TokenSource: Send + Sync {
    /// Fetches a new token for `https://apps.azureiotcentral.com/.default`.
    fn fetch(&self) -> AccessTokenFuture<'_>;
    /// A short name for messages and `Debug` (`service-principal`, `azure-cli`, …).
    fn name(&self) -> &str;
}

/// The longest a token is refreshed ahead of its expiry.
const MAX_REFRESH_AHEAD: Duration = Duration::minutes(5);
/// After a failed refresh, how long the old (still valid) token is used before trying again.
const RETRY_FAILED_REFRESH: Duration = Duration::seconds(5);

struct Cached {
    token: AccessToken,
    /// From then on the next caller refreshes.
    refresh_at: OffsetDateTime,
}

/// Caches the token of a [`TokenSource`] and refreshes it ahead of expiry, one refresh at a
/// time (see the module documentation). Shared by every clone of a client.
pub struct TokenCache {
    source: Box<dyn TokenSource>,
    state: tokio::sync::Mutex<Option<Cached>>,
    fetches: AtomicU64,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("source", &self.source.name())
            .field("fetches", &self.fetches())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache around `source`; nothing is fetched until the first request.
    pub fn new(source: impl TokenSource + 'static) -> TokenCache {
        TokenCache {
            source: Box::new(source),
            state: tokio::sync::Mutex::new(None),
            fetches: AtomicU64::new(0),
        }
    }

    /// The name of the source.
    pub fn source_name(&self) -> &str {
        self.source.name()
    }

    /// How many times the source was asked for a token so far.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a fresh one when it is due for refresh.
    pub async fn token(&self) -> Result<Secret, String> {
        // Held across the fetch: callers that arrive during a refresh wait for its result
        // instead of starting their own.
        let mut state = self.state.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = state.as_ref() {
            if now < c.refresh_at {
                return Ok(c.token.token.clone());
            }
        }
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.source.fetch().await {
            Ok(token) => {
                let now = OffsetDateTime::now_utc();
                let ahead =
                    ((token.expires_on - now) / 4_i32).clamp(Duration::ZERO, MAX_REFRESH_AHEAD);
                let value = token.token.clone();
                *state = Some(Cached {
                    refresh_at: token.expires_on - ahead,
                    token,
                });
                Ok(value)
            }
            Err(e) => match state.as_mut() {
                // Refreshing early failed but the old token still works: keep using it, and
                // try again shortly rather than on every request.
                Some(c) if now < c.token.expires_on => {
                    tracing::warn!(source = self.source.name(), error = %e, "token refresh failed; the current token is still valid");
                    c.refresh_at = (now + RETRY_FAILED_REFRESH).min(c.token.expires_on);
                    Ok(c.token.token.clone())
                }
                _ => Err(format!("{}: {e}", self.source.name())),
            },
        }
    }

    /// Drops the cached token when it is `token` and it has expired or is due for refresh
    /// (or `service_says_expired`); returns whether it was dropped.
    async fn invalidate_if_stale(&self, token: &str, service_says_expired: bool) -> bool {
        let mut state = self.state.lock().await;
        let now = OffsetDateTime::now_utc();
        let stale = match state.as_ref() {
            Some(c) if c.token.token.expose() == token => {
                service_says_expired || now >= c.refresh_at
            }
            // Another request refreshed it meanwhile: a retry sends the new token.
            Some(_) => true,
            None => true,
        };
        if stale
            && state
                .as_ref()
                .is_some_and(|c| c.token.token.expose() == token)
        {
            *state = None;
        }
        stale
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiToken(_) => f.write_str("Credential::ApiToken([secret elided])"),
            Credential::Bearer(_) => f.write_str("Credential::Bearer([secret elided])"),
            Credential::Provider(_) => f.write_str("Credential::Provider(..)"),
            Credential::Entra(c) => write!(f, "Credential::Entra({})", c.source_name()),
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

    /// Hands out `t1`, `t2`, … each valid `lifetime`, after `delay`; fails while `fail` is set.
    struct Counting {
        n: std::sync::atomic::AtomicU64,
        lifetime: Duration,
        delay: std::time::Duration,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Counting {
        fn new(lifetime: Duration) -> Counting {
            Counting {
                n: AtomicU64::new(0),
                lifetime,
                delay: std::time::Duration::from_millis(20),
                fail: Arc::new(false.into()),
            }
        }
    }

    impl TokenSource for Counting {
        fn fetch(&self) -> AccessTokenFuture<'_> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                if self.fail.load(Ordering::SeqCst) {
                    return Err("the authority is down".into());
                }
                let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
                Ok(AccessToken {
                    token: Secret::new(format!("t{n}")),
                    expires_on: OffsetDateTime::now_utc() + self.lifetime,
                })
            })
        }
        fn name(&self) -> &str {
            "counting"
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch_and_the_token_is_reused() {
        let cache = Arc::new(TokenCache::new(Counting::new(Duration::hours(1))));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let c = cache.clone();
                tokio::spawn(async move { c.token().await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "t1");
        }
        for _ in 0..100 {
            assert_eq!(cache.token().await.unwrap().expose(), "t1");
        }
        assert_eq!(cache.fetches(), 1);
        assert_eq!(
            format!("{cache:?}"),
            "TokenCache { source: \"counting\", fetches: 1, .. }"
        );
    }

    #[tokio::test]
    async fn a_token_is_refreshed_a_quarter_of_its_lifetime_ahead_of_expiry() {
        // 400 ms tokens: refreshed 100 ms before they expire.
        let cache = TokenCache::new(Counting::new(Duration::milliseconds(400)));
        assert_eq!(cache.token().await.unwrap().expose(), "t1");
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        assert_eq!(cache.token().await.unwrap().expose(), "t1", "still fresh");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(
            cache.token().await.unwrap().expose(),
            "t2",
            "due for refresh"
        );
        assert_eq!(cache.fetches(), 2);
    }

    #[tokio::test]
    async fn a_failed_early_refresh_keeps_the_valid_token_and_an_expired_one_is_an_error() {
        let source = Counting::new(Duration::milliseconds(400));
        let fail = source.fail.clone();
        let cache = TokenCache::new(source);
        assert_eq!(cache.token().await.unwrap().expose(), "t1");
        tokio::time::sleep(std::time::Duration::from_millis(320)).await;
        fail.store(true, Ordering::SeqCst);
        assert_eq!(
            cache.token().await.unwrap().expose(),
            "t1",
            "kept while valid"
        );
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let e = cache.token().await.unwrap_err();
        assert!(e.contains("counting: the authority is down"), "{e}");
    }

    #[tokio::test]
    async fn a_401_drops_only_a_stale_token() {
        let cache = Arc::new(TokenCache::new(Counting::new(Duration::hours(1))));
        let c = Credential::Entra(cache.clone());
        let h = c.header_value().await.unwrap();
        assert_eq!(h.expose(), "Bearer t1");
        assert!(
            !c.unauthorized(&h, false).await,
            "a fresh token refused for another reason is not retried"
        );
        assert!(
            c.unauthorized(&h, true).await,
            "the service says it expired"
        );
        assert_eq!(c.header_value().await.unwrap().expose(), "Bearer t2");
        assert!(!Credential::bearer("x").unauthorized(&h, true).await);
    }
}
