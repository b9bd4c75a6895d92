//! Bearer tokens on the IoT Central API: checked fully, then mapped to the application's users.
//!
//! A token is accepted only when its RS256 signature verifies against the authority's key
//! (named by `kid`), its audience is IoT Central (`https://apps.azureiotcentral.com`), its
//! issuer and `tid` are this authority's tenant, and `nbf` ≤ now ≤ `exp` within a minute of
//! clock skew. Anything else is 401, with a `WWW-Authenticate: Bearer error="invalid_token"`
//! that says why (an expired token says "expired", which tells a client a fresh token helps).
//!
//! A valid token acts as the IoT Central users it names: the `servicePrincipal` user with its
//! tenant and `oid`, and the `adGroup` users of its tenant whose object id is in its `groups`.
//! Their role assignments together are the caller's grants. A valid token that names no user
//! is refused with 403: the service's documentation says a bearer token "grants the caller the
//! same permissions the user or service principal has in the IoT Central application", and
//! says nothing of callers that are not users; 403 (authenticated, not authorized) is the
//! emulator's assumption, written down in docs/emulator.md.

use super::{Authority, IOT_CENTRAL_RESOURCE};
use crate::central::models::{User, UserKind};
use crate::emulator::auth::{grants, org_parents, Principal};
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::store::{self, kind};
use rusqlite::Connection;
use serde::Deserialize;

/// Seconds of clock skew allowed on `nbf` and `exp`.
pub const CLOCK_SKEW_SECONDS: u64 = 60;

#[derive(Debug, Deserialize)]
struct Claims {
    tid: Option<String>,
    oid: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
}

fn refuse(description: &str, message: String) -> ApiError {
    let mut e = ApiError::unauthorized(message);
    e.www_authenticate = Some(format!(
        "Bearer error=\"invalid_token\", error_description=\"{description}\""
    ));
    e
}

impl Authority {
    /// Authenticates a bearer token (without the `Bearer ` prefix) as the users it names.
    pub fn authenticate(&self, c: &Connection, token: &str) -> ApiResult<Principal> {
        use jsonwebtoken::errors::ErrorKind;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refuse("malformed", "the bearer token is not a JWT".to_owned()))?;
        if header.alg != jsonwebtoken::Algorithm::RS256 {
            return Err(refuse(
                "unsupported algorithm",
                format!(
                    "the bearer token is signed with {:?}; Entra tokens are RS256",
                    header.alg
                ),
            ));
        }
        if header.kid.as_deref() != Some(self.kid()) {
            return Err(refuse(
                "unknown signing key",
                "the bearer token is not signed by a key of the emulator's Entra authority"
                    .to_owned(),
            ));
        }
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.leeway = CLOCK_SKEW_SECONDS;
        v.validate_nbf = true;
        v.set_audience(&[IOT_CENTRAL_RESOURCE, &format!("{IOT_CENTRAL_RESOURCE}/")]);
        v.set_issuer(&[self.issuer()]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud"]);
        let claims: Claims = jsonwebtoken::decode(token, &self.decoding, &v)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => refuse(
                    "the token is expired",
                    "the bearer token has expired; get a new one".to_owned(),
                ),
                ErrorKind::ImmatureSignature => refuse(
                    "the token is not yet valid",
                    "the bearer token is not valid yet (nbf is in the future)".to_owned(),
                ),
                ErrorKind::InvalidAudience => refuse(
                    "invalid audience",
                    format!("the bearer token is not for IoT Central: its audience must be {IOT_CENTRAL_RESOURCE} (scope {IOT_CENTRAL_RESOURCE}/.default)"),
                ),
                ErrorKind::InvalidIssuer => refuse(
                    "invalid issuer",
                    format!("the bearer token was not issued by this application's tenant (issuer {})", self.issuer()),
                ),
                ErrorKind::InvalidSignature => refuse(
                    "invalid signature",
                    "the bearer token's signature does not verify".to_owned(),
                ),
                _ => refuse("invalid token", format!("the bearer token is not valid: {e}")),
            })?
            .claims;
        if !claims
            .tid
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(self.tenant_id()))
        {
            return Err(refuse(
                "invalid tenant",
                "the bearer token is for another tenant than the application's".to_owned(),
            ));
        }
        let oid = claims
            .oid
            .as_deref()
            .filter(|o| uuid::Uuid::parse_str(o).is_ok())
            .ok_or_else(|| {
                refuse(
                    "no oid",
                    "the bearer token has no object id (oid)".to_owned(),
                )
            })?;
        let tenant = self.tenant_id();
        // Only the users that can match: object id = oid or one of the groups.
        let ids: Vec<&str> = std::iter::once(oid)
            .chain(claims.groups.iter().map(String::as_str))
            .collect();
        let users: Vec<User> = store::list_matching(c, kind::USER, "objectId", &ids)?;
        let roles: Vec<_> = users
            .iter()
            .filter(|u| match &u.kind {
                UserKind::ServicePrincipal {
                    tenant_id,
                    object_id,
                } => tenant_id.eq_ignore_ascii_case(tenant) && object_id.eq_ignore_ascii_case(oid),
                UserKind::AdGroup {
                    tenant_id,
                    object_id,
                } => {
                    tenant_id.eq_ignore_ascii_case(tenant)
                        && claims
                            .groups
                            .iter()
                            .any(|g| g.eq_ignore_ascii_case(object_id))
                }
                _ => false,
            })
            .flat_map(|u| u.roles.iter().cloned())
            .collect();
        if roles.is_empty() {
            return Err(ApiError::forbidden(format!(
                "the caller (object id {oid} in tenant {tenant}) is not a user of this \
                 application: add it as a user of type servicePrincipal, or one of its groups \
                 as a user of type adGroup"
            )));
        }
        let parents = org_parents(c)?;
        Ok(Principal {
            token_id: format!("entra:{oid}"),
            grants: grants(&parents, &roles),
        })
    }
}
