//! Who may do what: organizations (a hierarchy), the built-in roles, users and API tokens.
//!
//! Organizations form a tree: a parent must exist, a move may not create a cycle, and an
//! organization still used by a child, a device, a device group, a user or a token cannot be
//! deleted. Users and tokens are bound to the organizations of their role assignments; one
//! application-wide assignment makes them application-level (only application-wide
//! administrators see them).

use super::{
    apply_patch, json_body, list_params, no_content, no_params, ok, paginate, patch_body, valid_id,
    AppState, Ctx, ListOptions,
};
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

// ---- organizations ----

fn org_load(c: &Connection, p: &Principal, id: &str, access: Access) -> ApiResult<Organization> {
    p.require_area(Area::Organizations, access)?;
    let o: Organization = store::require(c, kind::ORGANIZATION, "organization", id)?;
    p.require(Area::Organizations, access, &[id.to_owned()])?;
    Ok(o)
}

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

pub(super) async fn list_orgs(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    let params = list_params(&ctx, ListOptions::default())?;
    p.require_area(Area::Organizations, Access::Read)?;
    let all: Vec<Organization> = st.store.read(|c| store::list(c, kind::ORGANIZATION))?;
    let items: Vec<Organization> = all
        .into_iter()
        .filter(|o| {
            let id = o.id.clone().unwrap_or_default();
            p.reaches(Area::Organizations, Access::Read, &[id])
        })
        .collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
}

pub(super) async fn get_org(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    Ok(ok(st.store.read(|c| org_load(c, &p, &id, Access::Read))?))
}

pub(super) async fn put_org(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    valid_id(crate::ids::OrganizationId::new(id.as_str()))?;
    let o: Organization = json_body(&body)?;
    Ok(ok(st.store.write(|c| org_upsert(c, &p, &id, o))?))
}

pub(super) async fn patch_org(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let patch = patch_body(&body)?;
    let o = st.store.write(|c| {
        let cur = org_load(c, &p, &id, Access::Write)?;
        let merged: Organization = apply_patch(&cur, &patch)?;
        org_upsert(c, &p, &id, merged)
    })?;
    Ok(ok(o))
}

pub(super) async fn delete_org(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    st.store.write(|c| {
        org_load(c, &p, &id, Access::Write)?;
        let mut uses = Vec::new();
        let orgs: Vec<Organization> = store::list(c, kind::ORGANIZATION)?;
        let children = orgs
            .iter()
            .filter(|o| o.parent.as_deref() == Some(&id))
            .count();
        if children > 0 {
            uses.push(format!("{children} child organization(s)"));
        }
        let devices: Vec<DeviceRecord> = store::list(c, kind::DEVICE)?;
        let n = devices.iter().filter(|d| d.orgs().contains(&id)).count();
        if n > 0 {
            uses.push(format!("{n} device(s)"));
        }
        let groups: Vec<DeviceGroup> = store::list(c, kind::DEVICE_GROUP)?;
        let n = groups
            .iter()
            .filter(|g| g.organizations.as_deref().unwrap_or_default().contains(&id))
            .count();
        if n > 0 {
            uses.push(format!("{n} device group(s)"));
        }
        let names =
            |roles: &[RoleAssignment]| roles.iter().any(|r| r.organization.as_deref() == Some(&id));
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
        if !uses.is_empty() {
            return Err(ApiError::conflict(format!(
                "organization {id:?} is still in use by {}; move or delete them first",
                uses.join(", ")
            )));
        }
        store::delete(c, kind::ORGANIZATION, &id)
    })?;
    Ok(no_content())
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
    let params = list_params(&ctx, ListOptions::default())?;
    p.require_area(Area::Roles, Access::Read)?;
    let items: Vec<Role> = BUILT_IN_ROLES.iter().map(|(i, n)| role(i, n)).collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
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

fn user_load(c: &Connection, p: &Principal, id: &str, access: Access) -> ApiResult<User> {
    p.require_area(Area::Users, access)?;
    let u: User = store::require(c, kind::USER, "user", id)?;
    p.require(Area::Users, access, &orgs_of_roles(&u.roles))?;
    Ok(u)
}

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

pub(super) async fn list_users(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    let params = list_params(
        &ctx,
        ListOptions {
            maxpagesize: true,
            ..ListOptions::default()
        },
    )?;
    p.require_area(Area::Users, Access::Read)?;
    let all: Vec<User> = st.store.read(|c| store::list(c, kind::USER))?;
    let items: Vec<User> = all
        .into_iter()
        .filter(|u| p.reaches(Area::Users, Access::Read, &orgs_of_roles(&u.roles)))
        .collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
}

pub(super) async fn get_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    Ok(ok(st
        .store
        .read(|c| user_load(c, &p, &id, Access::Read))?))
}

pub(super) async fn put_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    valid_id(crate::ids::UserId::new(id.as_str()))?;
    let u: User = json_body(&body)?;
    Ok(ok(st.store.write(|c| user_upsert(c, &p, &id, u))?))
}

pub(super) async fn patch_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let patch = patch_body(&body)?;
    let u = st.store.write(|c| {
        let cur = user_load(c, &p, &id, Access::Write)?;
        let merged: User = apply_patch(&cur, &patch)?;
        user_upsert(c, &p, &id, merged)
    })?;
    Ok(ok(u))
}

pub(super) async fn delete_user(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    st.store.write(|c| {
        user_load(c, &p, &id, Access::Write)?;
        store::delete(c, kind::USER, &id)
    })?;
    Ok(no_content())
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

fn token_load(c: &Connection, p: &Principal, id: &str, access: Access) -> ApiResult<TokenRecord> {
    p.require_area(Area::ApiTokens, access)?;
    let t: TokenRecord = store::require(c, kind::API_TOKEN, "API token", id)?;
    p.require(Area::ApiTokens, access, &orgs_of_roles(&t.roles))?;
    Ok(t)
}

pub(super) async fn list_tokens(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    let params = list_params(&ctx, ListOptions::default())?;
    p.require_area(Area::ApiTokens, Access::Read)?;
    let all: Vec<TokenRecord> = st.store.read(|c| store::list(c, kind::API_TOKEN))?;
    let items: Vec<ApiToken> = all
        .iter()
        .filter(|t| p.reaches(Area::ApiTokens, Access::Read, &orgs_of_roles(&t.roles)))
        .map(token_wire)
        .collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
}

pub(super) async fn get_token(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let t = st.store.read(|c| token_load(c, &p, &id, Access::Read))?;
    Ok(ok(token_wire(&t)))
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

pub(super) async fn delete_token(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    st.store.write(|c| {
        token_load(c, &p, &id, Access::Write)?;
        store::delete(c, kind::API_TOKEN, &id)
    })?;
    Ok(no_content())
}
