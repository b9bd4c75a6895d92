//! Device groups (with their query parsed on write and evaluated on read) and device
//! templates (stored as given; the emulator does not interpret DTDL).

use super::devices::{check_orgs, wire};
use super::{
    apply_patch, check_etag, if_match, json_body, list_params, no_content, no_params, ok, paginate,
    patch_body, valid_id, AppState, Ctx, ListOptions,
};
use crate::central::models::{Device, DeviceGroup, DeviceTemplate};
use crate::emulator::app::new_etag;
use crate::emulator::auth::{Access, Area, Principal};
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::query;
use crate::emulator::records::DeviceRecord;
use crate::emulator::store::{self, kind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use rusqlite::Connection;

const LABEL: &str = "device group";

fn orgs_of(g: &DeviceGroup) -> &[String] {
    g.organizations.as_deref().unwrap_or_default()
}

fn load(c: &Connection, p: &Principal, id: &str, access: Access) -> ApiResult<DeviceGroup> {
    p.require_area(Area::DeviceGroups, access)?;
    let g: DeviceGroup = store::require(c, kind::DEVICE_GROUP, LABEL, id)?;
    p.require(Area::DeviceGroups, access, orgs_of(&g))?;
    Ok(g)
}

fn upsert(
    c: &Connection,
    p: &Principal,
    id: &str,
    body: DeviceGroup,
    if_match: Option<&str>,
) -> ApiResult<DeviceGroup> {
    p.require_area(Area::DeviceGroups, Access::Write)?;
    if body.display_name.trim().is_empty() {
        return Err(ApiError::invalid_body("displayName must not be empty"));
    }
    query::parse_group_query(&body.filter).map_err(|m| {
        ApiError::bad_request("InvalidFilter", format!("invalid device group filter: {m}"))
    })?;
    let existing: Option<DeviceGroup> = store::get(c, kind::DEVICE_GROUP, id)?;
    match &existing {
        Some(ex) => {
            p.require(Area::DeviceGroups, Access::Write, orgs_of(ex))?;
            check_etag(
                body.etag.as_deref(),
                if_match,
                ex.etag.as_deref(),
                LABEL,
                id,
            )?;
        }
        None if body.etag.is_some() || if_match.is_some_and(|m| m.trim() != "*") => {
            return Err(ApiError::stale_etag(LABEL, id))
        }
        None => {}
    }
    let orgs = match body.organizations.clone() {
        Some(o) => o,
        None => p.default_org(Area::DeviceGroups).into_iter().collect(),
    };
    check_orgs(c, &orgs, false)?;
    p.require(Area::DeviceGroups, Access::Write, &orgs)?;
    let g = DeviceGroup {
        id: Some(id.to_owned()),
        display_name: body.display_name,
        filter: body.filter,
        description: body.description,
        etag: Some(new_etag()),
        organizations: (!orgs.is_empty()).then_some(orgs),
    };
    store::put(c, kind::DEVICE_GROUP, id, &g)?;
    Ok(g)
}

pub(super) async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    if ctx.preview && (ctx.param("filter").is_some() || ctx.param("orderby").is_some()) {
        return Err(ApiError::not_supported(
            "filter and orderby on device groups",
        ));
    }
    let params = list_params(
        &ctx,
        ListOptions {
            maxpagesize: true,
            ..ListOptions::default()
        },
    )?;
    p.require_area(Area::DeviceGroups, Access::Read)?;
    let all: Vec<DeviceGroup> = st.store.read(|c| store::list(c, kind::DEVICE_GROUP))?;
    let items: Vec<DeviceGroup> = all
        .into_iter()
        .filter(|g| p.reaches(Area::DeviceGroups, Access::Read, orgs_of(g)))
        .collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
}

pub(super) async fn get(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    Ok(ok(st.store.read(|c| load(c, &p, &id, Access::Read))?))
}

pub(super) async fn put(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    valid_id(crate::ids::DeviceGroupId::new(id.as_str()))?;
    let g: DeviceGroup = json_body(&body)?;
    let im = if_match(&headers);
    Ok(ok(st
        .store
        .write(|c| upsert(c, &p, &id, g, im.as_deref()))?))
}

pub(super) async fn patch(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let patch = patch_body(&body)?;
    let im = if_match(&headers);
    let g = st.store.write(|c| {
        let cur = load(c, &p, &id, Access::Write)?;
        let given = patch.get("etag").and_then(|v| v.as_str());
        check_etag(given, im.as_deref(), cur.etag.as_deref(), LABEL, &id)?;
        let mut merged: DeviceGroup = apply_patch(&cur, &patch)?;
        merged.etag = None;
        upsert(c, &p, &id, merged, None)
    })?;
    Ok(ok(g))
}

pub(super) async fn delete(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    st.store.write(|c| {
        load(c, &p, &id, Access::Write)?;
        store::delete(c, kind::DEVICE_GROUP, &id)
    })?;
    Ok(no_content())
}

/// The devices of a group: those the caller can read, in the group's organizations (when it
/// has any), matching its query.
pub(super) async fn devices(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let params = list_params(
        &ctx,
        ListOptions {
            maxpagesize: true,
            ..ListOptions::default()
        },
    )?;
    let (g, all) = st.store.read(|c| {
        let g = load(c, &p, &id, Access::Read)?;
        p.require_area(Area::Devices, Access::Read)?;
        let all: Vec<DeviceRecord> = store::list(c, kind::DEVICE)?;
        Ok((g, all))
    })?;
    let q = query::parse_group_query(&g.filter)
        .map_err(|m| ApiError::internal(format!("stored group query no longer parses: {m}")))?;
    let group_orgs = orgs_of(&g);
    let items: Vec<Device> = all
        .into_iter()
        .filter(|r| p.reaches(Area::Devices, Access::Read, r.orgs()))
        .filter(|r| group_orgs.is_empty() || r.orgs().iter().any(|o| group_orgs.contains(o)))
        .filter(|r| q.matches(&r.device))
        .map(|r| wire(&r.device, ctx.preview))
        .collect();
    Ok(ok(paginate(&st, &ctx, &params, items)))
}

fn check_dtmi(id: &str) -> ApiResult<()> {
    let ok = id.starts_with("dtmi:")
        && id.rsplit_once(';').is_some_and(|(h, v)| {
            h.len() > 5 && !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())
        })
        && id.len() <= 2048;
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidId",
            format!("device template id {id:?} is not a DTMI (dtmi:<path>;<version>)"),
        ))
    }
}

fn template_wire(id: &str, mut t: DeviceTemplate) -> DeviceTemplate {
    t.id = Some(id.to_owned());
    t
}

pub(super) async fn list_templates(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    if ctx.preview && (ctx.param("filter").is_some() || ctx.param("orderby").is_some()) {
        return Err(ApiError::not_supported(
            "filter and orderby on device templates",
        ));
    }
    let params = list_params(
        &ctx,
        ListOptions {
            maxpagesize: true,
            ..ListOptions::default()
        },
    )?;
    p.require_app(Area::DeviceTemplates, Access::Read)?;
    let all: Vec<DeviceTemplate> = st.store.read(|c| store::list(c, kind::DEVICE_TEMPLATE))?;
    Ok(ok(paginate(&st, &ctx, &params, all)))
}

pub(super) async fn get_template(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    p.require_app(Area::DeviceTemplates, Access::Read)?;
    let t: DeviceTemplate = st
        .store
        .read(|c| store::require(c, kind::DEVICE_TEMPLATE, "device template", &id))?;
    Ok(ok(t))
}

fn put_template_tx(
    c: &Connection,
    id: &str,
    body: DeviceTemplate,
    if_match: Option<&str>,
) -> ApiResult<DeviceTemplate> {
    if body.types.is_empty() {
        return Err(ApiError::invalid_body("@type must name at least one type"));
    }
    if !body.capability_model.is_object() {
        return Err(ApiError::invalid_body(
            "capabilityModel must be a JSON object",
        ));
    }
    let existing: Option<DeviceTemplate> = store::get(c, kind::DEVICE_TEMPLATE, id)?;
    match &existing {
        Some(ex) => check_etag(
            body.etag.as_deref(),
            if_match,
            ex.etag.as_deref(),
            "device template",
            id,
        )?,
        None if body.etag.is_some() => return Err(ApiError::stale_etag("device template", id)),
        None => {}
    }
    let mut t = template_wire(id, body);
    t.etag = Some(new_etag());
    store::put(c, kind::DEVICE_TEMPLATE, id, &t)?;
    Ok(t)
}

pub(super) async fn put_template(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    p.require_app(Area::DeviceTemplates, Access::Write)?;
    check_dtmi(&id)?;
    let t: DeviceTemplate = json_body(&body)?;
    let im = if_match(&headers);
    Ok(ok(st
        .store
        .write(|c| put_template_tx(c, &id, t, im.as_deref()))?))
}

pub(super) async fn patch_template(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    p.require_app(Area::DeviceTemplates, Access::Write)?;
    let patch = patch_body(&body)?;
    let im = if_match(&headers);
    let t = st.store.write(|c| {
        let cur: DeviceTemplate = store::require(c, kind::DEVICE_TEMPLATE, "device template", &id)?;
        let given = patch.get("etag").and_then(|v| v.as_str());
        check_etag(
            given,
            im.as_deref(),
            cur.etag.as_deref(),
            "device template",
            &id,
        )?;
        let mut merged: DeviceTemplate = apply_patch(&cur, &patch)?;
        merged.etag = cur.etag.clone();
        put_template_tx(c, &id, merged, None)
    })?;
    Ok(ok(t))
}

pub(super) async fn delete_template(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    p.require_app(Area::DeviceTemplates, Access::Write)?;
    st.store.write(|c| {
        let devices: Vec<DeviceRecord> = store::list(c, kind::DEVICE)?;
        if devices
            .iter()
            .any(|d| d.device.template.as_deref() == Some(id.as_str()))
        {
            return Err(ApiError::conflict(format!(
                "device template {id:?} is used by devices; change or delete them first"
            )));
        }
        if !store::delete(c, kind::DEVICE_TEMPLATE, &id)? {
            return Err(ApiError::not_found("device template", &id));
        }
        Ok(())
    })?;
    Ok(no_content())
}
