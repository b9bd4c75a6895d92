//! Who may do what: organizations (a hierarchy), the built-in roles, users and API tokens.
//!
//! Organizations form a tree: a parent must exist, a move may not create a cycle, and an
//! organization still used by a child, a device, a device group, a user or a token cannot be
//! deleted. Users and tokens are bound to the organizations of their role assignments; one
//! application-wide assignment makes them application-level (only application-wide
//! administrators see them).

use super::resource::{Change, Reach, Resource, Upsert};
use super::{json_body, list_params, no_params, ok, page_of, valid_id, AppState, Ctx, ListOptions};
use crate::central::models::{
    ApiToken, DeviceGroup, Organization, Role, RoleAssignment, User, UserKind,
};
use crate::emulator::auth::{self, Access, Area, Principal, BUILT_IN_ROLES};
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::records::{DeviceRecord, TokenRecord};
use crate::emulator::store::{self, kind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use rusqlite::Connection;
use std::borrow::Cow;

// ---- organizations ----

fn org_upsert(
    c: &Connection,
    p: &Principal,
    id: &str,
    body: Organization,
) -> ApiResult<Organization> {
    p.require_area(Area::Organizations, Access::Write)?;
    let existing: Option<Organization> = store::get(c, kind::ORGANIZATION, id)?;
    if existing.is_some() {
        p.require(Area::Organizations, Access::Write, &[id.to_owned()])?;
    }
    if let Some(parent) = &body.parent {
        if parent == id {
            return Err(ApiError::bad_request(
                "InvalidParent",
                "an organization cannot be its own parent",
            ));
        }
        let parents = auth::org_parents(c)?;
        if !parents.contains_key(parent) {
            return Err(ApiError::bad_request(
                "InvalidParent",
                format!("parent organization {parent:?} does not exist"),
            ));
        }
        if auth::subtree(&parents, id).contains(parent) {
            return Err(ApiError::bad_request(
                "InvalidParent",
                format!("making {parent:?} the parent of {id:?} would create a cycle"),
            ));
        }
        p.require(
            Area::Organizations,
            Access::Write,
            std::slice::from_ref(parent),
        )?;
    } else {
        // A top-level organization is an application-level change.
        p.require(Area::Organizations, Access::Write, &[])?;
    }
    let o = Organization {
        id: Some(id.to_owned()),
        display_name: Some(body.display_name.unwrap_or_else(|| id.to_owned())),
        parent: body.parent,
    };
    store::put(c, kind::ORGANIZATION, id, &o)?;
    Ok(o)
}

/// Organizations: a tree; a parent must exist and a move may not create a cycle.
pub(super) struct Organizations;

impl Resource for Organizations {
    const PATH: &'static str = "organizations";
    const KIND: &'static str = kind::ORGANIZATION;
    const LABEL: &'static str = "organization";
    const AREA: Area = Area::Organizations;
    const REACH: Reach = Reach::Organizations;
    type Record = Organization;
    type Wire = Organization;

    fn orgs(o: &Organization) -> Cow<'_, [String]> {
        Cow::Owned(vec![o.id.clone().unwrap_or_default()])
    }

    fn to_wire(_: &AppState, _: &Ctx, o: &Organization) -> Organization {
        o.clone()
    }

    /// An organization still used by a child, a device, a device group, a user or a token
    /// cannot be deleted.
    fn check_delete(c: &Connection, id: &str, _: &Organization) -> ApiResult<()> {
        let mut uses = Vec::new();
        let orgs: Vec<Organization> = store::list(c, kind::ORGANIZATION)?;
        let children = orgs
            .iter()
            .filter(|o| o.parent.as_deref() == Some(id))
            .count();
        if children > 0 {
            uses.push(format!("{children} child organization(s)"));
        }
        let devices: Vec<DeviceRecord> = store::list(c, kind::DEVICE)?;
        let n = devices
            .iter()
            .filter(|d| d.orgs().iter().any(|o| o == id))
            .count();
        if n > 0 {
            uses.push(format!("{n} device(s)"));
        }
        let groups: Vec<DeviceGroup> = store::list(c, kind::DEVICE_GROUP)?;
        let n = groups
            .iter()
            .filter(|g| {
                g.organizations
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o == id)
            })
            .count();
        if n > 0 {
            uses.push(format!("{n} device group(s)"));
        }
        let names =
            |roles: &[RoleAssignment]| roles.iter().any(|r| r.organization.as_deref() == Some(id));
        let users: Vec<User> = store::list(c, kind::USER)?;
        let n = users.iter().filter(|u| names(&u.roles)).count();
        if n > 0 {
            uses.push(format!("{n} user(s)"));
        }
        let tokens: Vec<TokenRecord> = store::list(c, kind::API_TOKEN)?;
        let n = tokens.iter().filter(|t| names(&t.roles)).count();
        if n > 0 {
            uses.push(format!("{n} API token(s)"));
        }
        if uses.is_empty() {
            Ok(())
        } else {
            Err(ApiError::conflict(format!(
                "organization {id:?} is still in use by {}; move or delete them first",
                uses.join(", ")
            )))
        }
    }
}

impl Upsert for Organizations {
    fn valid_id(id: &str) -> ApiResult<()> {
        valid_id(crate::ids::OrganizationId::new(id)).map(drop)
    }

    fn upsert(
        c: &Connection,
        p: &Principal,
        id: &str,
        body: Organization,
        _: Change<'_>,
    ) -> ApiResult<Organization> {
        org_upsert(c, p, id, body)
    }
}

// ---- roles ----

fn role(id: &str, name: &str) -> Role {
    Role {
        id: Some(id.to_owned()),
        display_name: Some(name.to_owned()),
    }
}

pub(super) async fn list_roles(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    let params = list_params(&st, &ctx, ListOptions::NONE)?;
    p.require_area(Area::Roles, Access::Read)?;
    let items: Vec<Role> = BUILT_IN_ROLES.iter().map(|(i, n)| role(i, n)).collect();
    Ok(ok(page_of(&st, &ctx, &params, items)))
}

pub(super) async fn get_role(
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    p.require_area(Area::Roles, Access::Read)?;
    let (i, n) = BUILT_IN_ROLES
        .iter()
        .find(|(i, _)| *i == id)
        .ok_or_else(|| ApiError::not_found("role", &id))?;
    Ok(ok(role(i, n)))
}

// ---- users and tokens: shared role checks ----

/// The organizations a set of role assignments binds its holder to; empty when one of them
/// is application-wide (then only application-wide callers reach it).
fn orgs_of_roles(roles: &[RoleAssignment]) -> Vec<String> {
    if roles.iter().any(|r| r.organization.is_none()) {
        Vec::new()
    } else {
        let mut v: Vec<String> = roles
            .iter()
            .filter_map(|r| r.organization.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn check_roles(c: &Connection, roles: &[RoleAssignment]) -> ApiResult<()> {
    if roles.is_empty() {
        return Err(ApiError::invalid_body(
            "roles must hold at least one role assignment",
        ));
    }
    for r in roles {
        if !BUILT_IN_ROLES.iter().any(|(i, _)| *i == r.role) {
            return Err(ApiError::bad_request(
                "InvalidRole",
                format!(
                    "role {:?} does not exist (custom roles are not supported by the emulator)",
                    r.role
                ),
            ));
        }
        if let Some(o) = &r.organization {
            if !store::exists(c, kind::ORGANIZATION, o)? {
                return Err(ApiError::bad_request(
                    "InvalidOrganization",
                    format!("organization {o:?} does not exist"),
                ));
            }
        }
    }
    Ok(())
}

// ---- users ----

fn user_upsert(c: &Connection, p: &Principal, id: &str, body: User) -> ApiResult<User> {
    p.require_area(Area::Users, Access::Write)?;
    check_roles(c, &body.roles)?;
    match &body.kind {
        UserKind::Email { email } => {
            let e = email.trim();
            let valid = e.len() <= 254
                && e.split_once('@').is_some_and(|(l, d)| {
                    !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
                })
                && !e.contains(char::is_whitespace);
            if !valid {
                return Err(ApiError::invalid_body(format!(
                    "{email:?} is not an email address"
                )));
            }
        }
        UserKind::ServicePrincipal {
            tenant_id,
            object_id,
        }
        | UserKind::AdGroup {
            tenant_id,
            object_id,
        } => {
            for (name, v) in [("tenantId", tenant_id), ("objectId", object_id)] {
                if uuid::Uuid::parse_str(v).is_err() {
                    return Err(ApiError::invalid_body(format!(
                        "{name} must be a GUID, got {v:?}"
                    )));
                }
            }
        }
    }
    let existing: Option<User> = store::get(c, kind::USER, id)?;
    if let Some(ex) = &existing {
        p.require(Area::Users, Access::Write, &orgs_of_roles(&ex.roles))?;
    }
    p.require(Area::Users, Access::Write, &orgs_of_roles(&body.roles))?;
    let others: Vec<User> = store::list(c, kind::USER)?;
    for o in others.iter().filter(|o| o.id.as_deref() != Some(id)) {
        let clash = match (&o.kind, &body.kind) {
            (UserKind::Email { email: a }, UserKind::Email { email: b }) => {
                a.eq_ignore_ascii_case(b)
            }
            (
                UserKind::ServicePrincipal {
                    tenant_id: t1,
                    object_id: o1,
                },
                UserKind::ServicePrincipal {
                    tenant_id: t2,
                    object_id: o2,
                },
            )
            | (
                UserKind::AdGroup {
                    tenant_id: t1,
                    object_id: o1,
                },
                UserKind::AdGroup {
                    tenant_id: t2,
                    object_id: o2,
                },
            ) => t1.eq_ignore_ascii_case(t2) && o1.eq_ignore_ascii_case(o2),
            _ => false,
        };
        if clash {
            return Err(ApiError::conflict(format!(
                "user {:?} already has this identity (email or tenant/object id)",
                o.id.as_deref().unwrap_or_default()
            )));
        }
    }
    if let Some(ex) = &existing {
        if std::mem::discriminant(&ex.kind) != std::mem::discriminant(&body.kind) {
            return Err(ApiError::invalid_body("a user's type cannot change"));
        }
    }
    let u = User {
        id: Some(id.to_owned()),
        kind: body.kind,
        roles: body.roles,
    };
    store::put(c, kind::USER, id, &u)?;
    Ok(u)
}

/// Users: bound to the organizations of their role assignments.
pub(super) struct Users;

impl Resource for Users {
    const PATH: &'static str = "users";
    const KIND: &'static str = kind::USER;
    const LABEL: &'static str = "user";
    const AREA: Area = Area::Users;
    const REACH: Reach = Reach::Organizations;
    const LIST: ListOptions = ListOptions::PAGE_SIZE;
    type Record = User;
    type Wire = User;

    fn orgs(u: &User) -> Cow<'_, [String]> {
        Cow::Owned(orgs_of_roles(&u.roles))
    }

    fn to_wire(_: &AppState, _: &Ctx, u: &User) -> User {
        u.clone()
    }
}

impl Upsert for Users {
    fn valid_id(id: &str) -> ApiResult<()> {
        valid_id(crate::ids::UserId::new(id)).map(drop)
    }

    fn upsert(
        c: &Connection,
        p: &Principal,
        id: &str,
        body: User,
        _: Change<'_>,
    ) -> ApiResult<User> {
        user_upsert(c, p, id, body)
    }
}

// ---- API tokens ----

fn token_wire(t: &TokenRecord) -> ApiToken {
    ApiToken {
        id: Some(t.id.clone()),
        roles: t.roles.clone(),
        token: None,
        expiry: Some(t.expiry.clone()),
    }
}

/// API tokens: made by PUT (the value is returned once), never changed, bound to the
/// organizations of their role assignments.
pub(super) struct ApiTokens;

impl Resource for ApiTokens {
    const PATH: &'static str = "apiTokens";
    const KIND: &'static str = kind::API_TOKEN;
    const LABEL: &'static str = "API token";
    const AREA: Area = Area::ApiTokens;
    const REACH: Reach = Reach::Organizations;
    type Record = TokenRecord;
    type Wire = ApiToken;

    fn orgs(t: &TokenRecord) -> Cow<'_, [String]> {
        Cow::Owned(orgs_of_roles(&t.roles))
    }

    fn to_wire(_: &AppState, _: &Ctx, t: &TokenRecord) -> ApiToken {
        token_wire(t)
    }
}

pub(super) async fn put_token(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    valid_id(crate::ids::TokenId::new(id.as_str()))?;
    let req: ApiToken = json_body(&body)?;
    if req.token.is_some() {
        return Err(ApiError::invalid_body("token is read-only"));
    }
    let now = time::OffsetDateTime::now_utc();
    let expiry = match &req.expiry {
        None => now + time::Duration::days(365),
        Some(s) => {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| {
                    ApiError::invalid_body(format!(
                        "expiry {s:?} is not an RFC 3339 date-time: {e}"
                    ))
                })?;
            if t <= now {
                return Err(ApiError::invalid_body("expiry must be in the future"));
            }
            if t > now + time::Duration::days(366) {
                return Err(ApiError::invalid_body(
                    "expiry must be at most one year away",
                ));
            }
            t
        }
    };
    let app_id = st.facts.app_id.clone();
    let made = st.store.write(|c| {
        p.require_area(Area::ApiTokens, Access::Write)?;
        check_roles(c, &req.roles)?;
        p.require(Area::ApiTokens, Access::Write, &orgs_of_roles(&req.roles))?;
        if store::exists(c, kind::API_TOKEN, &id)? {
            return Err(ApiError::conflict(format!(
                "API token {id:?} already exists; tokens cannot be changed, delete it and create a new one"
            )));
        }
        let made = auth::make_token(&app_id, &id, req.roles.clone(), expiry);
        store::put(c, kind::API_TOKEN, &id, &made.record)?;
        Ok(made)
    })?;
    let mut out = token_wire(&made.record);
    out.token = Some(made.value);
    Ok(ok(out))
}
