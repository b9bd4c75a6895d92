//! One shape for every stored IoT Central resource: list, get, put, merge-patch and delete.
//!
//! The resources differ in a handful of rules (what a PUT checks, what a PATCH keeps, what
//! blocks a delete) and agree on everything else: the order of the checks (query
//! parameters, authorization, id, body), one store transaction per request, etags on PATCH,
//! 404 for a missing id, organization reach on every read and write, and the wire form for
//! the request's api-version. That common part lives here once; each resource is a
//! declaration, a [`Resource`] (and, when it can be written, [`Upsert`]) impl next to its
//! own rules, mounted by [`crud`] or [`read_delete`]. Adding a resource is a type and a line
//! in the router, not another copy of five handlers.

use super::devices::TemplateKinds;
use super::{
    apply_patch, check_etag, if_match, json_body, list_params, no_content, no_params, ok,
    patch_body, ApiVersion, AppState, Ctx, ListOptions, ListParams, PageBuilder,
};
use crate::emulator::auth::{Access, Area, Principal};
use crate::emulator::error::ApiResult;
use crate::emulator::store;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, MethodRouter};
use axum::{Extension, Router};
use rusqlite::Connection;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::borrow::Cow;

/// Who may see a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// Bound to organizations ([`Resource::orgs`]): a caller scoped to organizations sees
    /// only those in its reach.
    Organizations,
    /// Application level: any role that may read them sees all; a change needs an
    /// application-wide role.
    Application,
}

/// A stored resource under `/api/{PATH}` and `/api/{PATH}/{id}`: where it lives, what
/// guards it, and how a stored record is served.
pub(super) trait Resource: Send + Sync + 'static {
    /// The path segment under `/api` (`deviceGroups`).
    const PATH: &'static str;
    /// The store kind ([`crate::emulator::store::kind`]).
    const KIND: &'static str;
    /// What error messages call one (`device group`).
    const LABEL: &'static str;
    /// The RBAC area that guards it.
    const AREA: Area;
    /// Whether organizations scope it.
    const REACH: Reach;
    /// The list options it takes on 2022-10-31-preview.
    const LIST: ListOptions = ListOptions::NONE;
    /// The list options it takes on 2022-06-30-preview (OData names).
    const LIST_ODATA: ListOptions = ListOptions::NONE;

    /// What the store keeps.
    type Record: Serialize + DeserializeOwned + Send + 'static;
    /// What the API serves (a `central::models` type).
    type Wire: Serialize + DeserializeOwned + Send + 'static;

    /// The organizations a record is bound to (empty: application level).
    fn orgs(_rec: &Self::Record) -> Cow<'_, [String]> {
        Cow::Borrowed(&[])
    }

    /// The served form of a record for this request.
    fn to_wire(st: &AppState, ctx: &Ctx, rec: &Self::Record) -> Self::Wire;

    /// Checks the query of the item operations (only `api-version` by default).
    fn item_params(ctx: &Ctx) -> ApiResult<()> {
        no_params(ctx)
    }

    /// Refuses list options the emulator does not support for this resource, before the
    /// general list options are read.
    fn list_check(_ctx: &Ctx) -> ApiResult<()> {
        Ok(())
    }

    /// What the filter of a list needs from the store besides the records (read once per
    /// page; nothing by default).
    fn list_env(_c: &Connection, _params: &ListParams) -> ApiResult<ListEnv> {
        Ok(ListEnv::default())
    }

    /// Whether a record passes the list's filter (only resources that take one override it).
    fn list_filter(_env: &ListEnv, _params: &ListParams, _rec: &Self::Record) -> bool {
        true
    }

    /// Authorization checked before a change is parsed (none by default: the transaction
    /// checks it).
    fn before_change(_p: &Principal) -> ApiResult<()> {
        Ok(())
    }

    /// What stops a delete (a resource still in use), checked in the delete transaction.
    fn check_delete(_c: &Connection, _id: &str, _rec: &Self::Record) -> ApiResult<()> {
        Ok(())
    }
}

/// What a list filter reads besides the record (see [`Resource::list_env`]).
#[derive(Debug, Default)]
pub(super) struct ListEnv {
    /// The device kind each device template makes (for the filter field `type`).
    pub kinds: Option<TemplateKinds>,
}

/// The list options a resource takes on an api-version.
pub(super) fn list_options<R: Resource>(v: ApiVersion) -> ListOptions {
    match v {
        ApiVersion::Ga => ListOptions::NONE,
        ApiVersion::Preview0630 => R::LIST_ODATA,
        ApiVersion::Preview1031 => R::LIST,
    }
}

/// What a write needs to know besides the body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Change<'a> {
    /// The `If-Match` header (`None` on the PUT a PATCH makes).
    pub if_match: Option<&'a str>,
    /// Whether the request uses the preview api-version.
    pub preview: bool,
}

/// A resource that PUT creates or replaces and PATCH merges into.
pub(super) trait Upsert: Resource {
    /// Whether PATCH checks an etag (body `etag` or `If-Match`) against [`Upsert::etag`].
    const ETAGS: bool = false;

    /// Validates the id of a PUT (a `crate::ids` newtype, as a 400 `InvalidId`).
    fn valid_id(id: &str) -> ApiResult<()>;

    /// Creates or replaces the resource in the write transaction; checks every rule.
    fn upsert(
        c: &Connection,
        p: &Principal,
        id: &str,
        body: Self::Wire,
        change: Change<'_>,
    ) -> ApiResult<Self::Record>;

    /// The current etag of a record.
    fn etag(_rec: &Self::Record) -> Option<&str> {
        None
    }

    /// What a merge patch applies to (the served form by default), or why this patch is
    /// refused.
    fn patch_base(
        st: &AppState,
        ctx: &Ctx,
        rec: &Self::Record,
        _patch: &serde_json::Value,
    ) -> ApiResult<Self::Wire> {
        Ok(Self::to_wire(st, ctx, rec))
    }

    /// Adjusts the merged body before it is written back with [`Upsert::upsert`].
    fn patched(merged: Self::Wire, _patch: &serde_json::Value, _rec: &Self::Record) -> Self::Wire {
        merged
    }
}

/// Reads one record for `access`: the area, then 404, then the organization reach.
pub(super) fn load<R: Resource>(
    c: &Connection,
    p: &Principal,
    id: &str,
    access: Access,
) -> ApiResult<R::Record> {
    require_area::<R>(p, access)?;
    let rec: R::Record = store::require(c, R::KIND, R::LABEL, id)?;
    if R::REACH == Reach::Organizations {
        p.require(R::AREA, access, &R::orgs(&rec))?;
    }
    Ok(rec)
}

/// Whether the caller's roles allow `access` to this kind of resource at all (for an
/// application-level one: application-wide).
fn require_area<R: Resource>(p: &Principal, access: Access) -> ApiResult<()> {
    match R::REACH {
        Reach::Organizations => p.require_area(R::AREA, access),
        Reach::Application => p.require_app(R::AREA, access),
    }
}

/// `GET /api/{PATH}` and `GET, DELETE /api/{PATH}/{id}`, for a resource whose writes are
/// its own (API tokens: made once by a PUT routed by hand, never patched, so PATCH is 405).
pub(super) fn read_delete<R: Resource>(router: Router<AppState>) -> Router<AppState> {
    mount::<R>(router, get(get_item::<R>).delete(delete_item::<R>))
}

/// Every operation: `GET /api/{PATH}` and `GET, PUT, PATCH, DELETE /api/{PATH}/{id}`.
pub(super) fn crud<R: Upsert>(router: Router<AppState>) -> Router<AppState> {
    mount::<R>(
        router,
        get(get_item::<R>)
            .put(put_item::<R>)
            .patch(patch_item::<R>)
            .delete(delete_item::<R>),
    )
}

fn mount<R: Resource>(router: Router<AppState>, item: MethodRouter<AppState>) -> Router<AppState> {
    router
        .route(&format!("/api/{}", R::PATH), get(list_items::<R>))
        .route(&format!("/api/{}/{{id}}", R::PATH), item)
}

async fn list_items<R: Resource>(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
) -> ApiResult<Response> {
    R::list_check(&ctx)?;
    let params = list_params(&st, &ctx, list_options::<R>(ctx.version))?;
    require_area::<R>(&p, Access::Read)?;
    let page = st.store.read(|c| {
        let env = R::list_env(c, &params)?;
        let mut page = PageBuilder::new(&params);
        store::scan(
            c,
            R::KIND,
            params.order,
            params.after.as_ref(),
            |at, body| {
                let rec: R::Record = serde_json::from_str(body)?;
                let visible = R::REACH == Reach::Application
                    || p.reaches(R::AREA, Access::Read, &R::orgs(&rec));
                if !visible || !R::list_filter(&env, &params, &rec) {
                    return Ok(true);
                }
                Ok(page.push(at, R::to_wire(&st, &ctx, &rec)))
            },
        )?;
        Ok(page)
    })?;
    Ok(ok(page.finish(&st, &ctx)))
}

async fn get_item<R: Resource>(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    R::item_params(&ctx)?;
    let rec = st.store.read(|c| load::<R>(c, &p, &id, Access::Read))?;
    Ok(ok(R::to_wire(&st, &ctx, &rec)))
}

async fn put_item<R: Upsert>(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    R::item_params(&ctx)?;
    R::before_change(&p)?;
    R::valid_id(&id)?;
    let body: R::Wire = json_body(&body)?;
    let im = if_match(&headers);
    let change = Change {
        if_match: im.as_deref(),
        preview: ctx.preview,
    };
    let rec = st.store.write(|c| R::upsert(c, &p, &id, body, change))?;
    Ok(ok(R::to_wire(&st, &ctx, &rec)))
}

async fn patch_item<R: Upsert>(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    headers: http::HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    R::item_params(&ctx)?;
    R::before_change(&p)?;
    let patch = patch_body(&body)?;
    let im = if_match(&headers);
    let rec = st.store.write(|c| {
        let cur = load::<R>(c, &p, &id, Access::Write)?;
        if R::ETAGS {
            let given = patch.get("etag").and_then(|v| v.as_str());
            check_etag(given, im.as_deref(), R::etag(&cur), R::LABEL, &id)?;
        }
        let base = R::patch_base(&st, &ctx, &cur, &patch)?;
        let merged = R::patched(apply_patch(&base, &patch)?, &patch, &cur);
        let change = Change {
            if_match: None,
            preview: ctx.preview,
        };
        R::upsert(c, &p, &id, merged, change)
    })?;
    Ok(ok(R::to_wire(&st, &ctx, &rec)))
}

async fn delete_item<R: Resource>(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    R::item_params(&ctx)?;
    R::before_change(&p)?;
    st.store.write(|c| {
        let rec = load::<R>(c, &p, &id, Access::Write)?;
        R::check_delete(c, &id, &rec)?;
        store::delete(c, R::KIND, &id)
    })?;
    Ok(no_content())
}
