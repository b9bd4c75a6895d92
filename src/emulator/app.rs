//! Facts of the emulated application (its id, DPS ID scope, the SAS enrollment-group keys
//! its per-device keys derive from) and the store operations the DPS listener needs.
//!
//! The facts are made once, when the data folder is new, and kept in the database. The
//! administrator token is re-issued at every start (only its hash is stored, so the previous
//! value cannot be recovered to print it again).

use super::error::{ApiError, ApiResult};
use super::records::{DeviceRecord, GroupRecord};
use super::store::{self, kind, Store};
use crate::central::models::{roles, Device, RoleAssignment, SymmetricKey};
use crate::secret::Secret;
use base64::Engine;
use hmac::{Hmac, Mac};

/// Id of the administrator token the emulator issues for itself.
pub const ADMIN_TOKEN_ID: &str = "emulator-admin";

/// Facts of the application.
#[derive(Debug, Clone)]
pub struct AppFacts {
    /// Application id (the `sr` of its API tokens).
    pub app_id: String,
    /// DPS ID scope.
    pub id_scope: String,
    /// Keys of the application's SAS enrollment group for IoT devices.
    pub sas_keys: SymmetricKey,
    /// Keys of the application's SAS enrollment group for IoT Edge devices.
    pub sas_edge_keys: SymmetricKey,
    /// The key that signs the `$skiptoken` of list pages (so a client cannot forge a
    /// position; kept across restarts so a `nextLink` outlives one).
    pub page_key: Secret,
}

/// A new random key of `n` bytes, base64.
pub fn random_key(n: usize) -> Secret {
    let mut b = vec![0u8; n];
    rand::fill(&mut b[..]);
    Secret::new(base64::engine::general_purpose::STANDARD.encode(&b))
}

/// A new pair of 64-byte keys, as DPS generates them.
pub fn random_keys() -> SymmetricKey {
    SymmetricKey {
        primary_key: random_key(64),
        secondary_key: random_key(64),
    }
}

/// `base64(HMAC-SHA256(base64decode(group_key), registration_id))`: a device key derived
/// from a group key. `None` when the group key is not base64.
pub fn derive_key(group_key_b64: &str, registration_id: &str) -> Option<Secret> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(group_key_b64)
        .ok()?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).ok()?;
    mac.update(registration_id.as_bytes());
    Some(Secret::new(
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()),
    ))
}

/// Derived device keys from a pair of group keys.
pub fn derive_keys(group: &SymmetricKey, registration_id: &str) -> Option<SymmetricKey> {
    Some(SymmetricKey {
        primary_key: derive_key(group.primary_key.expose(), registration_id)?,
        secondary_key: derive_key(group.secondary_key.expose(), registration_id)?,
    })
}

/// Loads the facts, making them on first start.
pub fn init(store: &Store) -> ApiResult<AppFacts> {
    store.write(|c| {
        let get_or = |key: &str, make: &dyn Fn() -> String| -> ApiResult<String> {
            match store::meta_get(c, key)? {
                Some(v) => Ok(v),
                None => {
                    let v = make();
                    store::meta_set(c, key, &v)?;
                    Ok(v)
                }
            }
        };
        let app_id = get_or("appId", &|| uuid::Uuid::new_v4().to_string())?;
        let id_scope = get_or("idScope", &|| {
            let mut b = [0u8; 4];
            rand::fill(&mut b);
            format!(
                "0ne{}",
                b.iter().map(|x| format!("{x:02X}")).collect::<String>()
            )
        })?;
        let keys = |k: &str| -> ApiResult<SymmetricKey> {
            let v = get_or(k, &|| {
                serde_json::to_string(&random_keys()).unwrap_or_default()
            })?;
            serde_json::from_str(&v).map_err(ApiError::from)
        };
        Ok(AppFacts {
            app_id,
            id_scope,
            sas_keys: keys("sasKeys")?,
            sas_edge_keys: keys("sasEdgeKeys")?,
            page_key: Secret::new(get_or("pageKey", &|| random_key(32).expose().to_owned())?),
        })
    })
}

/// Issues a new administrator token valid for one year (the old one stops working).
pub fn rotate_admin_token(store: &Store, facts: &AppFacts) -> ApiResult<Secret> {
    let t = super::auth::make_token(
        &facts.app_id,
        ADMIN_TOKEN_ID,
        vec![RoleAssignment {
            role: roles::ADMINISTRATOR.to_owned(),
            organization: None,
        }],
        time::OffsetDateTime::now_utc() + time::Duration::days(365),
    );
    store.write(|c| store::put(c, kind::API_TOKEN, ADMIN_TOKEN_ID, &t.record))?;
    Ok(t.value)
}

/// Every enrollment group (with generated keys and certificate DER), for DPS.
pub fn enrollment_groups(store: &Store) -> ApiResult<Vec<GroupRecord>> {
    store.read(|c| store::list(c, kind::ENROLLMENT_GROUP))
}

/// One device, for DPS.
pub fn device(store: &Store, id: &str) -> ApiResult<Option<DeviceRecord>> {
    store.read(|c| store::get(c, kind::DEVICE, id))
}

/// Marks a device provisioned after a DPS registration, creating it when it does not exist
/// (with `template` when given, and `type: ["iotEdge"]` for edge devices). An existing
/// device keeps its fields; a template is only set when it had none. Returns the device.
pub fn provision_device(
    store: &Store,
    id: &str,
    template: Option<&str>,
    edge: bool,
) -> ApiResult<Device> {
    crate::ids::DeviceId::new(id).map_err(|e| ApiError::bad_request("InvalidId", e.to_string()))?;
    store.write(|c| {
        let mut rec: DeviceRecord = match store::get(c, kind::DEVICE, id)? {
            Some(r) => r,
            None => DeviceRecord {
                device: Device {
                    id: Some(id.to_owned()),
                    display_name: Some(id.to_owned()),
                    enabled: Some(true),
                    simulated: Some(false),
                    provisioned: Some(false),
                    device_type: edge.then(|| vec!["iotEdge".to_owned()]),
                    ..Device::default()
                },
                attestation: None,
            },
        };
        if rec.device.template.is_none() {
            rec.device.template = template.map(str::to_owned);
        }
        rec.device.provisioned = Some(true);
        rec.device.etag = Some(new_etag());
        store::put(c, kind::DEVICE, id, &rec)?;
        Ok(rec.device)
    })
}

/// A new opaque etag.
pub fn new_etag() -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD
        .encode(format!("\"{}\"", uuid::Uuid::new_v4()).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_key_matches_the_dps_documentation_vector() {
        let k = derive_key(
            "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
        )
        .unwrap();
        assert_eq!(k.expose(), "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    }

    #[test]
    fn facts_persist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db");
        let a = init(&Store::open(&p).unwrap()).unwrap();
        let b = init(&Store::open(&p).unwrap()).unwrap();
        assert_eq!(a.id_scope, b.id_scope);
        assert_eq!(a.sas_keys, b.sas_keys);
        assert!(a.id_scope.starts_with("0ne") && a.id_scope.len() == 11);
    }
}
