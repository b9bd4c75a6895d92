//! DPS registrations and their operations.
//!
//! A registration's state (`DeviceRegistrationResult`) is kept in the emulator's database
//! (kind `dpsRegistration`), so the status lookup and a second registration survive a
//! restart and keep the first `createdDateTimeUtc`. Operations are short-lived: they live in
//! memory with the number of `assigning` polls left until they are answered `assigned` (or for
//! 15 minutes when never polled); after that, or after a restart, an operation is answered from
//! the stored registration when it was that registration's last operation. Memory stays flat
//! however many devices register.

use super::super::error::ApiResult;
use super::super::stats;
use super::super::store::{self, Store};
use super::attest::{rfc3339, Method};
use crate::central::models::Device;
use crate::dps::wire::{
    AssignedDeviceSubstatus, DeviceRegistrationResult, EnrollmentStatus,
    SymmetricKeyRegistrationResult, X509RegistrationResult,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Store kind of registration records.
pub const KIND: &str = "dpsRegistration";

/// How long a finished operation can still be polled.
const OP_TTL: Duration = Duration::from_secs(15 * 60);

/// What an operation ends with.
#[derive(Debug, Clone)]
pub enum OpResult {
    /// Assigned, with the registration state.
    Assigned(Box<DeviceRegistrationResult>),
    /// The enrollment is disabled or the device blocked.
    Disabled {
        /// The registration id.
        registration_id: String,
        /// Why.
        message: String,
    },
}

/// What a poll answers.
#[derive(Debug, Clone)]
pub enum Poll {
    /// Still assigning.
    Assigning,
    /// Finished.
    Done(OpResult),
}

struct Op {
    registration_id: String,
    polls_left: u32,
    result: OpResult,
    created: Instant,
}

/// A registration as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistrationRecord {
    state: DeviceRegistrationResult,
    /// The operation that assigned it last.
    #[serde(default)]
    last_operation_id: String,
}

/// A new operation id, shaped like the service's: `4.<hex>.<uuid>`.
pub fn new_operation_id() -> String {
    format!("4.{:016x}.{}", rand::random::<u64>(), uuid::Uuid::new_v4())
}

/// The operations in flight, and access to the stored registrations.
pub struct Registry {
    store: Arc<Store>,
    ops: Mutex<HashMap<String, Op>>,
}

impl Registry {
    /// A registry over the emulator's store.
    pub fn new(store: Arc<Store>) -> Self {
        Registry {
            store,
            ops: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Op>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts operation `id` that answers `assigning` for `polls` polls, then `result`.
    pub fn start(&self, id: &str, registration_id: &str, polls: u32, result: OpResult) {
        let mut ops = self.lock();
        if ops.len() % 1024 == 1023 {
            ops.retain(|_, op| op.created.elapsed() < OP_TTL);
        }
        ops.insert(
            id.to_owned(),
            Op {
                registration_id: registration_id.to_owned(),
                polls_left: polls,
                result,
                created: Instant::now(),
            },
        );
    }

    /// One poll of `operation_id` for `registration_id`. `None` when unknown.
    pub fn poll(&self, operation_id: &str, registration_id: &str) -> Option<Poll> {
        {
            let mut ops = self.lock();
            if let Some(op) = ops.get_mut(operation_id) {
                if op.registration_id != registration_id {
                    return None;
                }
                if op.polls_left > 0 {
                    op.polls_left -= 1;
                    return Some(Poll::Assigning);
                }
                // An assigned operation is answered from the store from now on (see below),
                // so the map only holds operations still in flight.
                return match ops.remove(operation_id) {
                    Some(Op {
                        result: OpResult::Assigned(state),
                        ..
                    }) => Some(Poll::Done(OpResult::Assigned(state))),
                    Some(op) => {
                        let result = op.result.clone();
                        ops.insert(operation_id.to_owned(), op);
                        Some(Poll::Done(result))
                    }
                    None => None,
                };
            }
        }
        // A finished operation, or one from before a restart: the stored registration answers
        // for its last operation.
        let rec: Option<RegistrationRecord> = self
            .store
            .read(|c| store::get(c, KIND, registration_id))
            .ok()
            .flatten();
        match rec {
            Some(r) if r.last_operation_id == operation_id => {
                Some(Poll::Done(OpResult::Assigned(Box::new(r.state))))
            }
            _ => None,
        }
    }
}

/// Stores the registration state of an assigned device and returns it. A second
/// registration keeps the first `createdDateTimeUtc`.
pub fn record_assignment(
    store: &Store,
    operation_id: &str,
    registration_id: &str,
    device: &Device,
    hub: &str,
    method: &Method,
    payload: Option<serde_json::Value>,
) -> ApiResult<DeviceRegistrationResult> {
    let now = rfc3339(time::OffsetDateTime::now_utc());
    let (x509, symmetric_key) = match method {
        Method::X509 {
            group_id,
            certificate,
            signing,
        } => (
            Some(X509RegistrationResult {
                certificate_info: Some(certificate.clone()),
                enrollment_group_id: Some(group_id.clone()),
                signing_certificate_info: Some(signing.clone()),
            }),
            None,
        ),
        Method::X509Individual { certificate } => (
            Some(X509RegistrationResult {
                certificate_info: Some(certificate.clone()),
                enrollment_group_id: None,
                signing_certificate_info: None,
            }),
            None,
        ),
        Method::SymmetricKey { group_id } => (
            None,
            Some(SymmetricKeyRegistrationResult {
                enrollment_group_id: group_id.clone(),
            }),
        ),
    };
    store.write(|c| {
        stats::bump(c, stats::counter::DPS_REGISTRATIONS, registration_id)?;
        let previous: Option<RegistrationRecord> = store::get(c, KIND, registration_id)?;
        let created = previous
            .and_then(|p| p.state.created_date_time_utc)
            .unwrap_or_else(|| now.clone());
        let state = DeviceRegistrationResult {
            tpm: None,
            x509,
            symmetric_key,
            registration_id: Some(registration_id.to_owned()),
            created_date_time_utc: Some(created),
            assigned_hub: Some(hub.to_owned()),
            device_id: device.id.clone(),
            status: Some(EnrollmentStatus::Assigned),
            substatus: Some(AssignedDeviceSubstatus::InitialAssignment),
            error_code: None,
            error_message: None,
            last_updated_date_time_utc: Some(now),
            etag: Some(crate::emulator::app::new_etag()),
            payload,
        };
        store::put(
            c,
            KIND,
            registration_id,
            &RegistrationRecord {
                state: state.clone(),
                last_operation_id: operation_id.to_owned(),
            },
        )?;
        Ok(state)
    })
}

/// The stored registration state of `registration_id`, if it was ever assigned.
pub fn lookup(store: &Store, registration_id: &str) -> ApiResult<Option<DeviceRegistrationResult>> {
    store.read(|c| Ok(store::get::<RegistrationRecord>(c, KIND, registration_id)?.map(|r| r.state)))
}
