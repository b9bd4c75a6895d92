//! Device groups (with their query parsed on write and evaluated on read) and device
//! templates (stored as given; the emulator does not interpret DTDL).

use super::devices::{check_orgs, wire};
use super::resource::{self, Change, Reach, Resource, Upsert};
use super::{
    check_etag, list_params, ok, valid_id, ApiVersion, AppState, Ctx, ListOptions, PageBuilder,
};
use crate::central::models::{DeviceGroup, DeviceTemplate};
use crate::emulator::app::new_etag;
use crate::emulator::auth::{Access, Area, Principal};
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::query;
use crate::emulator::records::DeviceRecord;
use crate::emulator::store::{self, kind};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use rusqlite::Connection;
use std::borrow::Cow;

const LABEL: &str = "device group";

fn orgs_of(g: &DeviceGroup) -> &[String] {
    g.organizations.as_deref().unwrap_or_default()
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

/// Device groups: a query parsed on write (evaluated on read), etags, organizations.
pub(super) struct DeviceGroups;

impl Resource for DeviceGroups {
    const PATH: &'static str = "deviceGroups";
    const KIND: &'static str = kind::DEVICE_GROUP;
    const LABEL: &'static str = LABEL;
    const AREA: Area = Area::DeviceGroups;
    const REACH: Reach = Reach::Organizations;
    const LIST: ListOptions = ListOptions::PAGE_SIZE;
    const LIST_ODATA: ListOptions = ListOptions::PAGE_SIZE;
    type Record = DeviceGroup;
    type Wire = DeviceGroup;

    fn orgs(g: &DeviceGroup) -> Cow<'_, [String]> {
        Cow::Borrowed(orgs_of(g))
    }

    fn to_wire(_: &AppState, _: &Ctx, g: &DeviceGroup) -> DeviceGroup {
        g.clone()
    }

    fn list_check(ctx: &Ctx) -> ApiResult<()> {
        not_filtered(ctx, "filter and orderby on device groups")
    }
}

impl Upsert for DeviceGroups {
    const ETAGS: bool = true;

    fn valid_id(id: &str) -> ApiResult<()> {
        valid_id(crate::ids::DeviceGroupId::new(id)).map(drop)
    }

    fn upsert(
        c: &Connection,
        p: &Principal,
        id: &str,
        body: DeviceGroup,
        change: Change<'_>,
    ) -> ApiResult<DeviceGroup> {
        upsert(c, p, id, body, change.if_match)
    }

    fn etag(g: &DeviceGroup) -> Option<&str> {
        g.etag.as_deref()
    }

    fn patched(mut merged: DeviceGroup, _: &serde_json::Value, _: &DeviceGroup) -> DeviceGroup {
        merged.etag = None;
        merged
    }
}

/// A preview's filter and order on a list the spec gives them but the emulator does not
/// filter: refused as not supported (501), not ignored.
fn not_filtered(ctx: &Ctx, what: &str) -> ApiResult<()> {
    if let Some(n) = ctx.version.list_option_names() {
        if ctx.param(n.filter).is_some() || ctx.param(n.orderby).is_some() {
            return Err(ApiError::not_supported(what));
        }
    }
    Ok(())
}

/// The devices of a group: those the caller can read, in the group's organizations (when it
/// has any), matching its query; streamed a page at a time like every list.
pub(super) async fn devices(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let opts = match ctx.version {
        ApiVersion::Ga => ListOptions::NONE,
        ApiVersion::Preview0630 | ApiVersion::Preview1031 => ListOptions::PAGE_SIZE,
    };
    let params = list_params(&st, &ctx, opts)?;
    let page = st.store.read(|c| {
        let g = resource::load::<DeviceGroups>(c, &p, &id, Access::Read)?;
        p.require_area(Area::Devices, Access::Read)?;
        let q = query::parse_group_query(&g.filter)
            .map_err(|m| ApiError::internal(format!("stored group query no longer parses: {m}")))?;
        let group_orgs = orgs_of(&g);
        let mut page = PageBuilder::new(&params);
        store::scan(
            c,
            kind::DEVICE,
            params.order,
            params.after.as_ref(),
            |at, body| {
                let r: DeviceRecord = serde_json::from_str(body)?;
                let member = p.reaches(Area::Devices, Access::Read, r.orgs())
                    && (group_orgs.is_empty() || r.orgs().iter().any(|o| group_orgs.contains(o)))
                    && q.matches(&r.device);
                if !member {
                    return Ok(true);
                }
                Ok(page.push(at, wire(&r.device, ctx.preview)))
            },
        )?;
        Ok(page)
    })?;
    Ok(ok(page.finish(&st, &ctx)))
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
    let mut t = body;
    t.id = Some(id.to_owned());
    t.etag = Some(new_etag());
    store::put(c, kind::DEVICE_TEMPLATE, id, &t)?;
    Ok(t)
}

/// Device templates: stored as given (the emulator does not interpret DTDL); application
/// level; a template still used by a device cannot be deleted.
pub(super) struct DeviceTemplates;

impl Resource for DeviceTemplates {
    const PATH: &'static str = "deviceTemplates";
    const KIND: &'static str = kind::DEVICE_TEMPLATE;
    const LABEL: &'static str = "device template";
    const AREA: Area = Area::DeviceTemplates;
    const REACH: Reach = Reach::Application;
    const LIST: ListOptions = ListOptions::PAGE_SIZE;
    const LIST_ODATA: ListOptions = ListOptions::PAGE_SIZE;
    type Record = DeviceTemplate;
    type Wire = DeviceTemplate;

    fn to_wire(_: &AppState, _: &Ctx, t: &DeviceTemplate) -> DeviceTemplate {
        t.clone()
    }

    fn list_check(ctx: &Ctx) -> ApiResult<()> {
        not_filtered(ctx, "filter and orderby on device templates")
    }

    fn before_change(p: &Principal) -> ApiResult<()> {
        p.require_app(Area::DeviceTemplates, Access::Write)
    }

    fn check_delete(c: &Connection, id: &str, _: &DeviceTemplate) -> ApiResult<()> {
        let devices: Vec<DeviceRecord> = store::list(c, kind::DEVICE)?;
        if devices
            .iter()
            .any(|d| d.device.template.as_deref() == Some(id))
        {
            return Err(ApiError::conflict(format!(
                "device template {id:?} is used by devices; change or delete them first"
            )));
        }
        Ok(())
    }
}

impl Upsert for DeviceTemplates {
    const ETAGS: bool = true;

    fn valid_id(id: &str) -> ApiResult<()> {
        check_dtmi(id)
    }

    fn upsert(
        c: &Connection,
        _: &Principal,
        id: &str,
        body: DeviceTemplate,
        change: Change<'_>,
    ) -> ApiResult<DeviceTemplate> {
        put_template_tx(c, id, body, change.if_match)
    }

    fn etag(t: &DeviceTemplate) -> Option<&str> {
        t.etag.as_deref()
    }

    fn patched(
        mut merged: DeviceTemplate,
        _: &serde_json::Value,
        cur: &DeviceTemplate,
    ) -> DeviceTemplate {
        merged.etag = cur.etag.clone();
        merged
    }
}
