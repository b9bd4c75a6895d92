//! Authentication and authorization of API callers.
//!
//! API tokens look like the service's: `SharedAccessSignature sr=<appId>&sig=<sig>&skn=<tokenId>&se=<ms>`.
//! The signature is 32 random bytes; only its SHA-256 is stored, and a presented token is
//! checked by comparing hashes in constant time, then the expiry. Unknown, expired, revoked
//! and forged tokens all get 401 without saying which.
//!
//! Entra bearer tokens are checked by the emulator's authority (`entra::bearer`) and act as
//! the users they name, with those users' roles.
//!
//! Authorization follows the built-in roles: each role grants read or read/write per area,
//! and a role assignment with an `organization` reaches that organization and its
//! descendants only. A caller may do something when one of its assignments both grants the
//! access and reaches every organization of the resource; resources bound to no organization
//! are reached only by application-wide assignments.

use super::error::{ApiError, ApiResult};
use super::records::TokenRecord;
use super::store::{self, kind};
use crate::central::models::{roles, Organization, RoleAssignment};
use base64::Engine;
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use subtle::ConstantTimeEq;

/// What a role lets its holder touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Devices, their attestation and credentials.
    Devices,
    /// Device groups.
    DeviceGroups,
    /// Device templates.
    DeviceTemplates,
    /// Enrollment groups and their certificates.
    EnrollmentGroups,
    /// Organizations.
    Organizations,
    /// Users.
    Users,
    /// API tokens.
    ApiTokens,
    /// Roles (read only).
    Roles,
}

/// Read or write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// GET.
    Read,
    /// PUT, PATCH, POST, DELETE.
    Write,
}

/// The built-in roles: (id, display name).
pub const BUILT_IN_ROLES: &[(&str, &str)] = &[
    (roles::ADMINISTRATOR, "Administrator"),
    (roles::OPERATOR, "Operator"),
    (roles::BUILDER, "Builder"),
    (roles::ORG_ADMIN, "Org Admin"),
    (roles::ORG_OPERATOR, "Org Operator"),
    (roles::ORG_VIEWER, "Org Viewer"),
];

/// Whether `role` grants `access` on `area`.
pub fn role_allows(role: &str, area: Area, access: Access) -> bool {
    use Access::*;
    use Area::*;
    match role {
        roles::ADMINISTRATOR | roles::ORG_ADMIN => true,
        roles::BUILDER => match area {
            Devices | DeviceGroups | DeviceTemplates | EnrollmentGroups => true,
            Organizations | Roles => access == Read,
            Users | ApiTokens => false,
        },
        roles::OPERATOR | roles::ORG_OPERATOR => match area {
            Devices | DeviceGroups => true,
            DeviceTemplates | EnrollmentGroups | Organizations | Roles => access == Read,
            Users | ApiTokens => false,
        },
        roles::ORG_VIEWER => match area {
            Users | ApiTokens => false,
            _ => access == Read,
        },
        _ => false,
    }
}

/// One role assignment of the caller, with the organizations it reaches.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Role id.
    pub role: String,
    /// `None`: the whole application; otherwise the organization and its descendants.
    pub reach: Option<HashSet<String>>,
    /// The organization the assignment names.
    pub organization: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The token id.
    pub token_id: String,
    /// The caller's grants.
    pub grants: Vec<Grant>,
}

impl Principal {
    fn grants_for(&self, area: Area, access: Access) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(move |g| role_allows(&g.role, area, access))
    }

    /// Whether the caller may do `access` on `area` at all (before looking at organizations).
    pub fn require_area(&self, area: Area, access: Access) -> ApiResult<()> {
        if self.grants_for(area, access).next().is_some() {
            Ok(())
        } else {
            Err(forbidden(area, access))
        }
    }

    /// Whether the caller may do `access` on an application-level resource (templates,
    /// enrollment groups): reading needs the permission, writing an application-wide one.
    pub fn require_app(&self, area: Area, access: Access) -> ApiResult<()> {
        let ok = match access {
            Access::Read => self.grants_for(area, access).next().is_some(),
            Access::Write => self.grants_for(area, access).any(|g| g.reach.is_none()),
        };
        if ok {
            Ok(())
        } else if self.grants_for(area, access).next().is_some() {
            Err(ApiError::forbidden(format!(
                "changing {} needs an application-wide role; the caller's roles are limited to organizations",
                area_name(area)
            )))
        } else {
            Err(forbidden(area, access))
        }
    }

    /// Whether the caller reaches a resource bound to `orgs` (empty: application level).
    pub fn reaches(&self, area: Area, access: Access, orgs: &[String]) -> bool {
        self.grants_for(area, access).any(|g| match &g.reach {
            None => true,
            Some(set) => !orgs.is_empty() && orgs.iter().all(|o| set.contains(o)),
        })
    }

    /// [`Principal::reaches`] or 403.
    pub fn require(&self, area: Area, access: Access, orgs: &[String]) -> ApiResult<()> {
        if self.reaches(area, access, orgs) {
            Ok(())
        } else if self.grants_for(area, access).next().is_some() {
            Err(ApiError::forbidden(format!(
                "the caller's roles do not reach the organization of this {}",
                area_name(area).trim_end_matches('s')
            )))
        } else {
            Err(forbidden(area, access))
        }
    }

    /// Whether every grant of the caller is limited to organizations.
    pub fn is_org_scoped(&self) -> bool {
        self.grants.iter().all(|g| g.reach.is_some())
    }

    /// The organization new resources of `area` land in when the caller names none: the
    /// first organization of a scoped grant allowing writes.
    pub fn default_org(&self, area: Area) -> Option<String> {
        if self.is_org_scoped() {
            self.grants_for(area, Access::Write)
                .find_map(|g| g.organization.clone())
        } else {
            None
        }
    }
}

fn area_name(area: Area) -> &'static str {
    match area {
        Area::Devices => "devices",
        Area::DeviceGroups => "device groups",
        Area::DeviceTemplates => "device templates",
        Area::EnrollmentGroups => "enrollment groups",
        Area::Organizations => "organizations",
        Area::Users => "users",
        Area::ApiTokens => "API tokens",
        Area::Roles => "roles",
    }
}

fn forbidden(area: Area, access: Access) -> ApiError {
    let verb = match access {
        Access::Read => "read",
        Access::Write => "change",
    };
    ApiError::forbidden(format!(
        "the caller's roles do not allow it to {verb} {}",
        area_name(area)
    ))
}

/// Parent links of every organization.
pub fn org_parents(c: &Connection) -> ApiResult<HashMap<String, Option<String>>> {
    let orgs: Vec<Organization> = store::list(c, kind::ORGANIZATION)?;
    Ok(orgs
        .into_iter()
        .filter_map(|o| o.id.map(|id| (id, o.parent)))
        .collect())
}

/// `root` and all its descendants.
pub fn subtree(parents: &HashMap<String, Option<String>>, root: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for id in parents.keys() {
        let mut cur = Some(id.clone());
        let mut hops = 0;
        while let Some(c) = cur {
            if c == root {
                out.insert(id.clone());
                break;
            }
            hops += 1;
            if hops > parents.len() {
                break;
            }
            cur = parents.get(&c).cloned().flatten();
        }
    }
    out.insert(root.to_owned());
    out
}

/// Builds the grants of a set of role assignments.
pub fn grants(parents: &HashMap<String, Option<String>>, roles: &[RoleAssignment]) -> Vec<Grant> {
    roles
        .iter()
        .map(|r| Grant {
            role: r.role.clone(),
            reach: r.organization.as_deref().map(|o| subtree(parents, o)),
            organization: r.organization.clone(),
        })
        .collect()
}

/// A freshly made token: its record (to store) and its value (to return once).
pub struct NewToken {
    /// What the store keeps.
    pub record: TokenRecord,
    /// `SharedAccessSignature sr=...`.
    pub value: crate::secret::Secret,
}

/// Makes a token for `token_id` valid until `expiry`.
pub fn make_token(
    app_id: &str,
    token_id: &str,
    roles: Vec<RoleAssignment>,
    expiry: time::OffsetDateTime,
) -> NewToken {
    let mut sig = [0u8; 32];
    rand::fill(&mut sig);
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig);
    let expiry_ms = (expiry.unix_timestamp_nanos() / 1_000_000) as i64;
    let value =
        format!("SharedAccessSignature sr={app_id}&sig={sig}&skn={token_id}&se={expiry_ms}");
    let expiry_text = expiry
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    NewToken {
        record: TokenRecord {
            id: token_id.to_owned(),
            roles,
            expiry: expiry_text,
            expiry_ms,
            sig_sha256: sha256_hex(sig.as_bytes()),
        },
        value: crate::secret::Secret::new(value),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Authenticates an `Authorization` header value: an API token against the stored tokens, a
/// bearer token against the Entra authority (`entra::bearer`).
pub fn authenticate(
    c: &Connection,
    app_id: &str,
    entra: &super::entra::Authority,
    header: Option<&str>,
) -> ApiResult<Principal> {
    let unauthorized = || {
        ApiError::unauthorized(
            "the Authorization header does not hold a valid, unexpired API token of this application",
        )
    };
    let header = header.map(str::trim).filter(|h| !h.is_empty()).ok_or_else(|| {
        ApiError::unauthorized("the request has no Authorization header; send an API token (SharedAccessSignature sr=...) or an Entra bearer token")
    })?;
    // Entra tokens with many group ids run to several kilobytes.
    if header.len() > 16 * 1024 {
        return Err(unauthorized());
    }
    if header
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
    {
        return entra.authenticate(c, header[7..].trim());
    }
    if header.len() > 4096 {
        return Err(unauthorized());
    }
    let rest = header
        .strip_prefix("SharedAccessSignature ")
        .ok_or_else(unauthorized)?;
    let mut sr = None;
    let mut sig = None;
    let mut skn = None;
    let mut se = None;
    for part in rest.split('&') {
        let (k, v) = part.split_once('=').ok_or_else(unauthorized)?;
        let slot = match k {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "skn" => &mut skn,
            "se" => &mut se,
            _ => return Err(unauthorized()),
        };
        if slot.replace(v).is_some() {
            return Err(unauthorized());
        }
    }
    let (Some(sr), Some(sig), Some(skn), Some(se)) = (sr, sig, skn, se) else {
        return Err(unauthorized());
    };
    if sr != app_id {
        return Err(unauthorized());
    }
    let se: i64 = se.parse().map_err(|_| unauthorized())?;
    let record: TokenRecord = store::get(c, kind::API_TOKEN, skn)?.ok_or_else(unauthorized)?;
    let presented = sha256_hex(sig.as_bytes());
    let same: bool = presented
        .as_bytes()
        .ct_eq(record.sig_sha256.as_bytes())
        .into();
    if !same || se != record.expiry_ms {
        return Err(unauthorized());
    }
    let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    if now_ms >= record.expiry_ms {
        return Err(unauthorized());
    }
    let parents = org_parents(c)?;
    Ok(Principal {
        token_id: record.id.clone(),
        grants: grants(&parents, &record.roles),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewer_cannot_write_and_admin_can() {
        assert!(!role_allows(
            roles::ORG_VIEWER,
            Area::Devices,
            Access::Write
        ));
        assert!(role_allows(roles::ORG_VIEWER, Area::Devices, Access::Read));
        assert!(role_allows(
            roles::ADMINISTRATOR,
            Area::Users,
            Access::Write
        ));
        assert!(!role_allows(roles::OPERATOR, Area::ApiTokens, Access::Read));
        assert!(!role_allows("unknown", Area::Devices, Access::Read));
    }

    #[test]
    fn subtree_follows_parents_and_survives_cycles() {
        let mut p = HashMap::new();
        p.insert("a".to_owned(), None);
        p.insert("b".to_owned(), Some("a".to_owned()));
        p.insert("c".to_owned(), Some("b".to_owned()));
        p.insert("x".to_owned(), Some("y".to_owned()));
        p.insert("y".to_owned(), Some("x".to_owned()));
        let s = subtree(&p, "b");
        assert!(s.contains("b") && s.contains("c") && !s.contains("a"));
        assert_eq!(subtree(&p, "a").len(), 3);
    }
}
