//! Devices: CRUD with etags and organizations, credentials, individual attestation, and the
//! list with paging and (preview) filter/orderby.
//!
//! The device status of the service's UI follows from the two flags the API shows:
//! waiting for approval / registered = `provisioned: false` (enabled false / true),
//! provisioned = `provisioned: true` (set only by a DPS registration), blocked =
//! `enabled: false`.

use super::resource::{self, Change, ListEnv, Reach, Resource, Upsert};
use super::{
    apply_patch, check_etag, json_body, no_content, no_params, ok, patch_body, valid_id, AppState,
    Ctx, ListOptions, ListParams,
};
use crate::central::models::{
    Attestation, Device, DeviceCredentials, DeviceTemplate, X509CertificateInfo,
};
use crate::emulator::app::{derive_keys, new_etag};
use crate::emulator::auth::{Access, Area, Principal};
use crate::emulator::certs;
use crate::emulator::error::{ApiError, ApiResult};
use crate::emulator::query::{DeviceKind, Expr, Field};
use crate::emulator::records::DeviceRecord;
use crate::emulator::store::{self, kind};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::Extension;
use base64::Engine;
use rusqlite::Connection;
use std::borrow::Cow;
use std::collections::HashMap;

const LABEL: &str = "device";

/// The wire form for the request's api-version (`type` is a preview field).
pub(super) fn wire(d: &Device, preview: bool) -> Device {
    let mut d = d.clone();
    if !preview {
        d.device_type = None;
    }
    d
}

/// The device kind each device template makes, read once for a list whose filter tests
/// `type` (templates are few; devices are many).
#[derive(Debug, Default)]
pub(super) struct TemplateKinds(HashMap<String, DeviceKind>);

impl TemplateKinds {
    /// Reads every template's `@type`.
    pub fn load(c: &Connection) -> ApiResult<TemplateKinds> {
        let mut map = HashMap::new();
        store::scan(
            c,
            kind::DEVICE_TEMPLATE,
            store::Order::Created,
            None,
            |_, body| {
                let t: DeviceTemplate = serde_json::from_str(body)?;
                if let Some(id) = t.id {
                    map.insert(id, DeviceKind::of_template_types(&t.types));
                }
                Ok(true)
            },
        )?;
        Ok(TemplateKinds(map))
    }

    /// The kind of a device: Edge by its own `type`, otherwise what its template makes.
    pub fn of(&self, d: &Device) -> DeviceKind {
        match DeviceKind::of_device(d) {
            DeviceKind::Plain => d
                .template
                .as_deref()
                .and_then(|t| self.0.get(t).copied())
                .unwrap_or(DeviceKind::Plain),
            k => k,
        }
    }
}

/// Whether a filter tests the field `type` anywhere.
fn tests_type(e: &Expr) -> bool {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => tests_type(a) || tests_type(b),
        Expr::Cmp(f, _, _) | Expr::Contains(f, _) => *f == Field::Type,
        Expr::All => false,
    }
}

/// Checks that every organization exists and that there is at most one.
pub(super) fn check_orgs(c: &Connection, orgs: &[String], max_one: bool) -> ApiResult<()> {
    if max_one && orgs.len() > 1 {
        return Err(ApiError::invalid_body(
            "a device belongs to at most one organization today",
        ));
    }
    for o in orgs {
        if !store::exists(c, kind::ORGANIZATION, o)? {
            return Err(ApiError::bad_request(
                "InvalidOrganization",
                format!("organization {o:?} does not exist"),
            ));
        }
    }
    Ok(())
}

fn check_template(t: &str) -> ApiResult<()> {
    let ok = t.starts_with("dtmi:")
        && t.len() <= 2048
        && t.rsplit_once(';').is_some_and(|(head, v)| {
            head.len() > 5 && !v.is_empty() && v.chars().all(|c| c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "InvalidTemplate",
            format!("template {t:?} is not a DTMI (dtmi:<path>;<version>)"),
        ))
    }
}

/// Creates or replaces a device in one transaction.
fn upsert(
    c: &Connection,
    p: &Principal,
    id: &str,
    body: Device,
    if_match: Option<&str>,
    preview: bool,
) -> ApiResult<DeviceRecord> {
    p.require_area(Area::Devices, Access::Write)?;
    let existing: Option<DeviceRecord> = store::get(c, kind::DEVICE, id)?;
    if let Some(ex) = &existing {
        p.require(Area::Devices, Access::Write, ex.orgs())?;
        check_etag(
            body.etag.as_deref(),
            if_match,
            ex.device.etag.as_deref(),
            LABEL,
            id,
        )?;
    } else if body.etag.is_some() || if_match.is_some_and(|m| m.trim() != "*") {
        return Err(ApiError::stale_etag(LABEL, id));
    }
    let orgs = match body.organizations.clone() {
        Some(o) => o,
        None => p.default_org(Area::Devices).into_iter().collect(),
    };
    check_orgs(c, &orgs, true)?;
    p.require(Area::Devices, Access::Write, &orgs)?;
    if let Some(t) = &body.template {
        check_template(t)?;
    }
    let device_type = match (&body.device_type, preview) {
        (Some(t), true) => {
            if t.iter().any(|x| x != "iotEdge") {
                return Err(ApiError::invalid_body("type may only contain \"iotEdge\""));
            }
            if t.is_empty() {
                None
            } else {
                Some(t.clone())
            }
        }
        (Some(_), false) => {
            return Err(ApiError::invalid_body(
                "type needs api-version 2022-10-31-preview",
            ))
        }
        (None, _) => existing.as_ref().and_then(|e| e.device.device_type.clone()),
    };
    if let Some(ex) = &existing {
        if preview && body.device_type.is_some() && ex.device.device_type != device_type {
            return Err(ApiError::invalid_body(
                "a device's type cannot change after it is created",
            ));
        }
    }
    let device = Device {
        id: Some(id.to_owned()),
        etag: Some(new_etag()),
        display_name: Some(body.display_name.unwrap_or_else(|| id.to_owned())),
        template: body.template,
        enabled: Some(body.enabled.unwrap_or(true)),
        provisioned: Some(
            existing
                .as_ref()
                .and_then(|e| e.device.provisioned)
                .unwrap_or(false),
        ),
        simulated: Some(body.simulated.unwrap_or(false)),
        organizations: (!orgs.is_empty()).then_some(orgs),
        device_type,
    };
    let rec = DeviceRecord {
        device,
        attestation: existing.and_then(|e| e.attestation),
    };
    store::put(c, kind::DEVICE, id, &rec)?;
    Ok(rec)
}

fn load(c: &Connection, p: &Principal, id: &str, access: Access) -> ApiResult<DeviceRecord> {
    resource::load::<Devices>(c, p, id, access)
}

fn no_params_except_expand(ctx: &Ctx) -> ApiResult<()> {
    if ctx.preview && ctx.param("expand").is_some() {
        return Err(ApiError::not_supported("expand"));
    }
    no_params(ctx)
}

/// Devices: etags, at most one organization, a DTMI template, `type` on the preview, and
/// the list with paging, `filter` and `orderby` (by display name).
pub(super) struct Devices;

impl Resource for Devices {
    const PATH: &'static str = "devices";
    const KIND: &'static str = kind::DEVICE;
    const LABEL: &'static str = LABEL;
    const AREA: Area = Area::Devices;
    const REACH: Reach = Reach::Organizations;
    const LIST: ListOptions = ListOptions::ALL;
    const LIST_ODATA: ListOptions = ListOptions::ALL;
    type Record = DeviceRecord;
    type Wire = Device;

    fn orgs(rec: &DeviceRecord) -> Cow<'_, [String]> {
        Cow::Borrowed(rec.orgs())
    }

    fn to_wire(_: &AppState, ctx: &Ctx, rec: &DeviceRecord) -> Device {
        wire(&rec.device, ctx.preview)
    }

    fn item_params(ctx: &Ctx) -> ApiResult<()> {
        no_params_except_expand(ctx)
    }

    fn list_check(ctx: &Ctx) -> ApiResult<()> {
        if ctx.preview && ctx.param("expand").is_some() {
            return Err(ApiError::not_supported("expand"));
        }
        Ok(())
    }

    fn list_env(c: &Connection, params: &ListParams) -> ApiResult<ListEnv> {
        let kinds = match &params.filter {
            Some(f) if tests_type(f) => Some(TemplateKinds::load(c)?),
            _ => None,
        };
        Ok(ListEnv { kinds })
    }

    fn list_filter(env: &ListEnv, params: &ListParams, rec: &DeviceRecord) -> bool {
        let kind = match &env.kinds {
            Some(k) => k.of(&rec.device),
            None => DeviceKind::of_device(&rec.device),
        };
        params.admits(&rec.device, kind)
    }
}

impl Upsert for Devices {
    const ETAGS: bool = true;

    fn valid_id(id: &str) -> ApiResult<()> {
        valid_id(crate::ids::DeviceId::new(id)).map(drop)
    }

    fn upsert(
        c: &Connection,
        p: &Principal,
        id: &str,
        body: Device,
        change: Change<'_>,
    ) -> ApiResult<DeviceRecord> {
        upsert(c, p, id, body, change.if_match, change.preview)
    }

    fn etag(rec: &DeviceRecord) -> Option<&str> {
        rec.device.etag.as_deref()
    }

    /// The etag stays the current one (checked already), and `type` is only written when
    /// the patch names it.
    fn patched(mut merged: Device, patch: &serde_json::Value, rec: &DeviceRecord) -> Device {
        merged.etag = rec.device.etag.clone();
        if patch.get("type").is_none() {
            merged.device_type = None;
        }
        merged
    }
}

/// The credentials of a device: the id scope and, unless it has individual x509 or tpm
/// attestation, symmetric keys (its own, or derived from the application's SAS group).
pub(super) async fn credentials(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let rec = st.store.read(|c| load(c, &p, &id, Access::Write))?;
    let id_scope = st.facts.id_scope.clone();
    let creds = match rec.attestation {
        Some(Attestation::SymmetricKey { symmetric_key }) => DeviceCredentials {
            id_scope,
            symmetric_key: Some(symmetric_key),
            x509: None,
            tpm: None,
        },
        Some(Attestation::X509 { x509 }) => DeviceCredentials {
            id_scope,
            symmetric_key: None,
            x509: Some(x509),
            tpm: None,
        },
        Some(Attestation::Tpm { tpm }) => DeviceCredentials {
            id_scope,
            symmetric_key: None,
            x509: None,
            tpm: Some(tpm),
        },
        None => {
            let edge = rec
                .device
                .device_type
                .as_ref()
                .is_some_and(|t| t.iter().any(|x| x == "iotEdge"));
            let group = if edge {
                &st.facts.sas_edge_keys
            } else {
                &st.facts.sas_keys
            };
            DeviceCredentials {
                id_scope,
                symmetric_key: Some(
                    derive_keys(group, &id).ok_or_else(|| ApiError::internal("bad SAS key"))?,
                ),
                x509: None,
                tpm: None,
            }
        }
    };
    Ok(ok(creds))
}

pub(super) fn check_key(name: &str, k: &str) -> ApiResult<()> {
    let n = base64::engine::general_purpose::STANDARD
        .decode(k)
        .map_err(|_| ApiError::invalid_body(format!("{name} is not base64")))?
        .len();
    if !(16..=64).contains(&n) {
        return Err(ApiError::invalid_body(format!(
            "{name} must decode to 16 to 64 bytes, got {n}"
        )));
    }
    Ok(())
}

/// Validates an attestation and fills in certificate thumbprints.
fn normalize_attestation(a: Attestation) -> ApiResult<Attestation> {
    match a {
        Attestation::SymmetricKey { symmetric_key } => {
            check_key(
                "symmetricKey.primaryKey",
                symmetric_key.primary_key.expose(),
            )?;
            check_key(
                "symmetricKey.secondaryKey",
                symmetric_key.secondary_key.expose(),
            )?;
            Ok(Attestation::SymmetricKey { symmetric_key })
        }
        Attestation::X509 { mut x509 } => {
            let certs = x509.client_certificates.as_mut().ok_or_else(|| {
                ApiError::invalid_body("x509 attestation needs x509.clientCertificates.primary")
            })?;
            for (name, entry) in [
                ("primary", Some(&mut certs.primary)),
                ("secondary", certs.secondary.as_mut()),
            ] {
                let Some(entry) = entry else { continue };
                let s = entry.certificate.as_deref().ok_or_else(|| {
                    ApiError::invalid_body(format!(
                        "x509.clientCertificates.{name}.certificate is required"
                    ))
                })?;
                let der = certs::decode_certificate_string(s).map_err(|m| {
                    ApiError::bad_request(
                        "InvalidCertificate",
                        format!("x509.clientCertificates.{name}.certificate: {m}"),
                    )
                })?;
                entry.info = Some(X509CertificateInfo {
                    sha1_thumbprint: certs::sha1_thumbprint(&der),
                });
            }
            Ok(Attestation::X509 { x509 })
        }
        Attestation::Tpm { tpm } => {
            if base64::engine::general_purpose::STANDARD
                .decode(tpm.endorsement_key.trim())
                .map(|k| k.is_empty())
                .unwrap_or(true)
            {
                return Err(ApiError::invalid_body(
                    "tpm.endorsementKey must be non-empty base64",
                ));
            }
            Ok(Attestation::Tpm { tpm })
        }
    }
}

fn put_attestation_tx(
    c: &Connection,
    p: &Principal,
    id: &str,
    a: Attestation,
) -> ApiResult<Attestation> {
    let mut rec = load(c, p, id, Access::Write)?;
    let a = normalize_attestation(a)?;
    rec.attestation = Some(a.clone());
    rec.device.etag = Some(new_etag());
    store::put(c, kind::DEVICE, id, &rec)?;
    Ok(a)
}

pub(super) async fn get_attestation(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let rec = st.store.read(|c| load(c, &p, &id, Access::Write))?;
    let a = rec
        .attestation
        .ok_or_else(|| ApiError::not_found("individual attestation of device", &id))?;
    Ok(ok(a))
}

pub(super) async fn put_attestation(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let a: Attestation = json_body(&body)?;
    let a = st.store.write(|c| put_attestation_tx(c, &p, &id, a))?;
    Ok(ok(a))
}

pub(super) async fn patch_attestation(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    let patch = patch_body(&body)?;
    let a = st.store.write(|c| {
        let rec = load(c, &p, &id, Access::Write)?;
        let current = rec
            .attestation
            .ok_or_else(|| ApiError::not_found("individual attestation of device", &id))?;
        let merged: Attestation = apply_patch(&current, &patch)?;
        check_patch_fits(&patch, &merged)?;
        put_attestation_tx(c, &p, &id, merged)
    })?;
    Ok(ok(a))
}

/// Refuses a patch that sets the member of another kind of attestation than the one it
/// leaves (`{"tpm": …}` on a symmetric-key attestation): merged in and then ignored, it would
/// answer 200 for a change that did nothing. Changing the kind takes a `type` in the patch;
/// the members of the former kind are then dropped.
fn check_patch_fits(patch: &serde_json::Value, merged: &Attestation) -> ApiResult<()> {
    let kind = match merged {
        Attestation::SymmetricKey { .. } => "symmetricKey",
        Attestation::X509 { .. } => "x509",
        Attestation::Tpm { .. } => "tpm",
    };
    for member in ["symmetricKey", "x509", "tpm"] {
        if member != kind && patch.get(member).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_body(format!(
                "the patch sets {member} but the attestation is of type {kind}; \
                 give \"type\": \"{member}\" to change its kind"
            )));
        }
    }
    Ok(())
}

pub(super) async fn delete_attestation(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    Extension(ctx): Extension<Ctx>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    no_params(&ctx)?;
    st.store.write(|c| {
        let mut rec = load(c, &p, &id, Access::Write)?;
        if rec.attestation.take().is_none() {
            return Err(ApiError::not_found("individual attestation of device", &id));
        }
        rec.device.etag = Some(new_etag());
        store::put(c, kind::DEVICE, &id, &rec)
    })?;
    Ok(no_content())
}
