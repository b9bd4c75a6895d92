//! Where sessions come from: the module (loaded and initialized once per process), the token
//! the URI names, the login, and the pool of sessions each key signs through.
//!
//! A PKCS#11 session runs one operation at a time. A worker takes an idle session or opens
//! one while fewer than the cap are open, and puts it back after its signature; so N workers
//! end up with N sessions, each opened (and logged in) once. The login belongs to the token
//! and lasts while one of the process's sessions is open; the pool keeps them open.

use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

use super::error::{reason, rv};
use super::{KeyUri, Pkcs11Error, MODULE_ENV, PIN_ENV};
use crate::secret::Secret;

/// The module for a URI: `module-path=`, else `IOTC_PKCS11_MODULE`. Each module is loaded and
/// initialized once per process (C_Initialize may run only once) and never finalized.
pub(super) fn module(uri: &KeyUri) -> Result<(Pkcs11, PathBuf), Pkcs11Error> {
    static MODULES: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
    let path = match uri.module_path() {
        Some(p) => p.to_owned(),
        None => match std::env::var_os(MODULE_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => return Err(Pkcs11Error::NoModule),
        },
    };
    let mut loaded = lock(MODULES.get_or_init(Mutex::default));
    if let Some((_, ctx)) = loaded.iter().find(|(p, _)| *p == path) {
        return Ok((ctx.clone(), path));
    }
    let load_err = |reason: String| Pkcs11Error::ModuleLoad {
        path: path.clone(),
        reason,
    };
    if !path.exists() {
        return Err(load_err("no such file".into()));
    }
    let ctx = Pkcs11::new(&path).map_err(|e| load_err(e.to_string()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(e) if rv(&e) == Some(RvError::CryptokiAlreadyInitialized) => {}
        Err(e) => return Err(load_err(reason(&e))),
    }
    tracing::debug!(module = %path.display(), "PKCS#11 module loaded");
    loaded.push((path.clone(), ctx.clone()));
    Ok((ctx, path))
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The PIN for a URI: the first line of `pin-source`, else `IOTC_PKCS11_PIN`, else none.
fn pin_for(uri: &KeyUri) -> Result<Option<Secret>, Pkcs11Error> {
    if let Some(path) = uri.pin_source() {
        return crate::secret::read_secret_file(path)
            .map(Some)
            .map_err(|e| Pkcs11Error::PinFile {
                path: path.to_owned(),
                reason: match e {
                    crate::secret::SecretFileError::Read { reason, .. } => reason,
                    crate::secret::SecretFileError::Empty { .. } => "the file is empty".into(),
                },
            });
    }
    Ok(std::env::var(PIN_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new))
}

/// One token of one module: where sessions come from.
pub(super) struct Token {
    ctx: Pkcs11,
    slot: Slot,
    pub(super) label: String,
    pin: Option<Secret>,
    login_required: bool,
    pub(super) pool: Mutex<PoolState>,
    freed: Condvar,
}

pub(super) struct PoolState {
    pub(super) idle: Vec<Session>,
    pub(super) open: usize,
    pub(super) max: usize,
}

/// Sessions a key opens at most by default: more than any worker pool iotc runs.
const DEFAULT_MAX_SESSIONS: usize = 64;

impl Token {
    pub(super) fn open(uri: &KeyUri) -> Result<Token, Pkcs11Error> {
        let (ctx, path) = module(uri)?;
        let what = format!("module {}", path.display());
        let slots = ctx
            .get_slots_with_initialized_token()
            .map_err(|e| Pkcs11Error::Token {
                operation: "C_GetSlotList",
                what: what.clone(),
                reason: reason(&e),
            })?;
        let mut found = Vec::new();
        let mut labels = Vec::new();
        for slot in slots {
            let Ok(info) = ctx.get_token_info(slot) else {
                continue;
            };
            labels.push(format!("{:?}", info.label()));
            let matches = uri.token().is_none_or(|t| t == info.label())
                && uri.serial().is_none_or(|s| s == info.serial_number())
                && uri
                    .manufacturer()
                    .is_none_or(|m| m == info.manufacturer_id())
                && uri.model().is_none_or(|m| m == info.model())
                && uri.slot_id().is_none_or(|id| id == slot.id());
            if matches {
                found.push((slot, info));
            }
        }
        let wanted = match (uri.token(), uri.serial(), uri.slot_id()) {
            (Some(t), _, _) => format!("token={t}"),
            (None, Some(s), _) => format!("serial={s}"),
            (None, None, Some(id)) => format!("slot-id={id}"),
            _ => "the URI".to_owned(),
        };
        if found.len() > 1 {
            return Err(Pkcs11Error::AmbiguousToken {
                wanted,
                count: found.len(),
            });
        }
        let Some((slot, info)) = found.pop() else {
            return Err(Pkcs11Error::TokenNotFound {
                wanted: format!("{wanted} in {what}"),
                available: if labels.is_empty() {
                    "none".into()
                } else {
                    labels.join(", ")
                },
            });
        };
        let label = info.label().to_owned();
        let login_required = info.login_required();
        let pin = pin_for(uri)?;
        if login_required && pin.is_none() && !info.protected_authentication_path() {
            return Err(Pkcs11Error::PinMissing { token: label });
        }
        Ok(Token {
            ctx,
            slot,
            label,
            pin,
            login_required,
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                max: DEFAULT_MAX_SESSIONS,
            }),
            freed: Condvar::new(),
        })
    }

    pub(super) fn failed(&self, operation: &'static str, e: &CkError) -> Pkcs11Error {
        Pkcs11Error::Token {
            operation,
            what: format!("token {:?}", self.label),
            reason: reason(e),
        }
    }

    fn login(&self, s: &Session) -> Result<(), Pkcs11Error> {
        if !self.login_required {
            return Ok(());
        }
        let pin = self
            .pin
            .as_ref()
            .map(|p| AuthPin::from(p.expose().to_owned()));
        match s.login(UserType::User, pin.as_ref()) {
            Ok(()) => Ok(()),
            Err(e) => match rv(&e) {
                Some(RvError::UserAlreadyLoggedIn) => Ok(()),
                Some(RvError::PinIncorrect)
                | Some(RvError::PinInvalid)
                | Some(RvError::PinLenRange) => Err(Pkcs11Error::WrongPin {
                    token: self.label.clone(),
                }),
                Some(RvError::PinLocked) => Err(Pkcs11Error::PinLocked {
                    token: self.label.clone(),
                }),
                _ => Err(self.failed("C_Login", &e)),
            },
        }
    }

    pub(super) fn open_session(&self, read_write: bool) -> Result<Session, Pkcs11Error> {
        let s = if read_write {
            self.ctx.open_rw_session(self.slot)
        } else {
            self.ctx.open_ro_session(self.slot)
        }
        .map_err(|e| self.failed("C_OpenSession", &e))?;
        self.login(&s)?;
        Ok(s)
    }

    /// An idle session, a new one while fewer than `max` are open, else the next one freed.
    pub(super) fn session(&self) -> Result<Pooled<'_>, Pkcs11Error> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(s) = pool.idle.pop() {
                return Ok(Pooled {
                    token: self,
                    session: Some(s),
                });
            }
            if pool.open < pool.max {
                pool.open += 1;
                drop(pool);
                return match self.open_session(false) {
                    Ok(s) => {
                        tracing::debug!(token = %self.label, "PKCS#11 session opened");
                        Ok(Pooled {
                            token: self,
                            session: Some(s),
                        })
                    }
                    Err(e) => {
                        lock(&self.pool).open -= 1;
                        self.freed.notify_one();
                        Err(e)
                    }
                };
            }
            pool = self
                .freed
                .wait(pool)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A session borrowed from the pool; back to it on drop unless it failed.
pub(super) struct Pooled<'a> {
    token: &'a Token,
    session: Option<Session>,
}

impl Pooled<'_> {
    pub(super) fn get(&self) -> &Session {
        // Only `discard` takes the session, and it consumes the guard.
        self.session.as_ref().expect("pooled session present")
    }

    /// Closes the session instead of returning it: after an error its state is unknown.
    pub(super) fn discard(mut self) {
        self.session.take();
        lock(&self.token.pool).open -= 1;
        self.token.freed.notify_one();
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let mut pool = lock(&self.token.pool);
            if pool.open > pool.max {
                pool.open -= 1;
                drop(s);
            } else {
                pool.idle.push(s);
            }
            self.token.freed.notify_one();
        }
    }
}
