//! PKCS#11 tokens: private keys that sign without ever leaving an HSM.
//!
//! A factory line keeps its signing CA key in an HSM, and a station may register devices whose
//! keys sit in a token it cannot read. This module is the one place that talks PKCS#11 (through
//! the `cryptoki` crate): it loads the module named by a [`KeyUri`] (or `IOTC_PKCS11_MODULE`),
//! finds the token and logs in with the PIN from `pin-source=file:` or `IOTC_PKCS11_PIN`, finds
//! or generates the key (sensitive, never extractable), and signs. [`crate::cert`] wraps a
//! [`TokenKey`] as an rcgen signing key for CAs, [`crate::dps`] as a rustls signing key for
//! TLS client authentication; neither knows how PKCS#11 works.
//!
//! Signing hashes locally and asks the token for the bare mechanism (`CKM_ECDSA`,
//! `CKM_RSA_PKCS` over a DigestInfo, `CKM_RSA_PKCS_PSS`), the set every token implements; the
//! token's raw `r || s` becomes the DER `Ecdsa-Sig-Value` X.509 and TLS want.
//!
//! Sessions: a PKCS#11 session runs one operation at a time, and a batch signs from several
//! worker threads. Each key keeps a small pool: a worker takes an idle session or opens one,
//! signs, and puts it back, so N workers end up with N sessions, opened once each, and no
//! worker waits for another's signature. The login is the token's, shared by every session
//! of the process, and lasts while a session is open. The PIN lives in a [`Secret`] and
//! reaches only `C_Login`; no error, log line or `Debug` output carries it.

mod uri;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest;

pub use uri::{KeyUri, SCHEME};

use crate::secret::Secret;

/// Environment variable naming the PKCS#11 module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "IOTC_PKCS11_MODULE";
/// Environment variable holding the token PIN when the URI has no `pin-source`.
pub const PIN_ENV: &str = "IOTC_PKCS11_PIN";

/// DER of the named curves' OIDs, as CKA_EC_PARAMS holds them.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Why a token operation failed. Every message names the token or key concerned and says
/// what to do; none contains a PIN.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Pkcs11Error {
    /// The URI is not a PKCS#11 URI iotc can use.
    #[error("invalid PKCS#11 URI: {reason}")]
    InvalidUri {
        /// What is wrong with it.
        reason: String,
    },
    /// The URI carries `pin-value`.
    #[error("invalid PKCS#11 URI: pin-value is refused (a PIN never goes on a command line or into a .uri file); use pin-source=file:PATH or set {PIN_ENV}")]
    PinInUri,
    /// No module was named.
    #[error(
        "no PKCS#11 module: add ?module-path=/path/to/module.so to the URI or set {MODULE_ENV}"
    )]
    NoModule,
    /// The module could not be loaded or initialized.
    #[error("PKCS#11 module {} could not be loaded: {reason}", path.display())]
    ModuleLoad {
        /// The module's path.
        path: PathBuf,
        /// The loader's or module's reason.
        reason: String,
    },
    /// No token matches the URI.
    #[error("token not found: no token matches {wanted} (tokens present: {available})")]
    TokenNotFound {
        /// What the URI asked for.
        wanted: String,
        /// The labels of the tokens present.
        available: String,
    },
    /// More than one token matches the URI.
    #[error("{count} tokens match {wanted}; name one by token=, serial= or slot-id=")]
    AmbiguousToken {
        /// What the URI asked for.
        wanted: String,
        /// How many matched.
        count: usize,
    },
    /// The token needs a login and no PIN was given.
    #[error(
        "token {token:?} needs its user PIN: add ?pin-source=file:PATH to the URI or set {PIN_ENV}"
    )]
    PinMissing {
        /// The token's label.
        token: String,
    },
    /// The PIN file could not be read.
    #[error("could not read the PIN file {}: {reason}", path.display())]
    PinFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The token refused the PIN.
    #[error("wrong PIN for token {token:?} (the token counts failed logins and may lock)")]
    WrongPin {
        /// The token's label.
        token: String,
    },
    /// The token's user PIN is locked.
    #[error("the user PIN of token {token:?} is locked; unlock it with the token's SO tools")]
    PinLocked {
        /// The token's label.
        token: String,
    },
    /// No private key matches.
    #[error("object missing: no private key {key}{others}")]
    ObjectMissing {
        /// The key asked for.
        key: String,
        /// The private keys the token does hold, as a hint.
        others: String,
    },
    /// More than one private key matches.
    #[error("{count} private keys match {key}; add id= to the URI")]
    AmbiguousObject {
        /// The key asked for.
        key: String,
        /// How many matched.
        count: usize,
    },
    /// A new key's label is taken.
    #[error("the token already holds an object {key}; refusing to make a second key with that label (pick another object=)")]
    ObjectExists {
        /// The key asked for.
        key: String,
    },
    /// The key (or the key to make) is of a type iotc does not sign with, or the token cannot
    /// make it.
    #[error("key type unsupported: {key} is {found}; iotc signs with EC P-256, EC P-384 and RSA 2048/3072/4096")]
    UnsupportedKeyType {
        /// The key concerned.
        key: String,
        /// What it is (or what the token said).
        found: String,
    },
    /// The key cannot sign (CKA_SIGN false).
    #[error("{key} is not allowed to sign (CKA_SIGN is false)")]
    CannotSign {
        /// The key concerned.
        key: String,
    },
    /// The token could not store a new key: it is full (`CKR_DEVICE_MEMORY`), or its store
    /// failed to take the object (`CKR_FUNCTION_FAILED`, what SoftHSM answers when its
    /// storage is full).
    #[error("token full: token {token:?} could not store the new key ({code}); delete unused objects, free its storage or use another token")]
    TokenFull {
        /// The token's label.
        token: String,
        /// The PKCS#11 code the module answered.
        code: &'static str,
    },
    /// The token is write-protected.
    #[error("token {token:?} is write-protected: it cannot store a new key")]
    WriteProtected {
        /// The token's label.
        token: String,
    },
    /// The token key does not belong to the certificate it is meant to sign for.
    #[error("the token key {key} does not match the certificate {subject}")]
    KeyMismatch {
        /// The key concerned.
        key: String,
        /// The certificate's subject.
        subject: String,
    },
    /// A signature scheme the key cannot make was asked for.
    #[error("{key} cannot sign with {scheme:?}")]
    SchemeMismatch {
        /// The key concerned.
        key: String,
        /// The scheme asked for.
        scheme: Scheme,
    },
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {operation} failed on {what}: {reason}")]
    Token {
        /// What iotc was doing.
        operation: &'static str,
        /// The token or key concerned.
        what: String,
        /// The module's reason (CKR_... code).
        reason: String,
    },
}

/// A module error as its PKCS#11 name, `C_Sign: CKR_KEY_HANDLE_INVALID` (cryptoki's own
/// text is a paragraph of the specification).
fn reason(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, function) => {
            let mut code = String::from("CKR");
            for c in format!("{rv:?}").chars() {
                if c.is_ascii_uppercase() {
                    code.push('_');
                }
                code.push(c.to_ascii_uppercase());
            }
            format!("C_{function:?}: {code}")
        }
        other => other.to_string(),
    }
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// The kind of a token key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKeyType {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// RSA with a modulus of `bits` bits.
    Rsa {
        /// Modulus size.
        bits: u32,
    },
}

impl TokenKeyType {
    /// The scheme certificates are signed with: ECDSA with the curve's hash, RSA PKCS#1 v1.5
    /// with SHA-256 (the profiles of DESIGN.md).
    pub fn certificate_scheme(self) -> Scheme {
        match self {
            TokenKeyType::EcP256 => Scheme::EcdsaSha256,
            TokenKeyType::EcP384 => Scheme::EcdsaSha384,
            TokenKeyType::Rsa { .. } => Scheme::RsaPkcs1Sha256,
        }
    }
}

impl fmt::Display for TokenKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKeyType::EcP256 => f.write_str("an EC P-256 key"),
            TokenKeyType::EcP384 => f.write_str("an EC P-384 key"),
            TokenKeyType::Rsa { bits } => write!(f, "an RSA {bits}-bit key"),
        }
    }
}

/// A signature scheme a token key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// ECDSA with SHA-256 (DER signature).
    EcdsaSha256,
    /// ECDSA with SHA-384 (DER signature).
    EcdsaSha384,
    /// RSA PKCS#1 v1.5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSA PKCS#1 v1.5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSA PKCS#1 v1.5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSA-PSS with SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
    /// RSA-PSS with SHA-384, MGF1-SHA-384, 48-byte salt.
    RsaPssSha384,
    /// RSA-PSS with SHA-512, MGF1-SHA-512, 64-byte salt.
    RsaPssSha512,
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, msg: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => sha2::Sha256::digest(msg).to_vec(),
            Hash::Sha384 => sha2::Sha384::digest(msg).to_vec(),
            Hash::Sha512 => sha2::Sha512::digest(msg).to_vec(),
        }
    }

    /// The DER DigestInfo prefix of PKCS#1 v1.5 (RFC 8017 section 9.2, note 1).
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }

    fn pss(self) -> PkcsPssParams {
        let (hash_alg, mgf, len) = match self {
            Hash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32u64),
            Hash::Sha384 => (MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48),
            Hash::Sha512 => (MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64),
        };
        PkcsPssParams {
            hash_alg,
            mgf,
            s_len: len.into(),
        }
    }
}

impl Scheme {
    fn hash(self) -> Hash {
        match self {
            Scheme::EcdsaSha256 | Scheme::RsaPkcs1Sha256 | Scheme::RsaPssSha256 => Hash::Sha256,
            Scheme::EcdsaSha384 | Scheme::RsaPkcs1Sha384 | Scheme::RsaPssSha384 => Hash::Sha384,
            Scheme::RsaPkcs1Sha512 | Scheme::RsaPssSha512 => Hash::Sha512,
        }
    }

    fn fits(self, kind: TokenKeyType) -> bool {
        match self {
            Scheme::EcdsaSha256 => kind == TokenKeyType::EcP256,
            Scheme::EcdsaSha384 => kind == TokenKeyType::EcP384,
            _ => matches!(kind, TokenKeyType::Rsa { .. }),
        }
    }
}

/// The module for a URI: `module-path=`, else `IOTC_PKCS11_MODULE`. Each module is loaded and
/// initialized once per process (C_Initialize may run only once) and never finalized.
fn module(uri: &KeyUri) -> Result<(Pkcs11, PathBuf), Pkcs11Error> {
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The PIN for a URI: the first line of `pin-source`, else `IOTC_PKCS11_PIN`, else none.
fn pin_for(uri: &KeyUri) -> Result<Option<Secret>, Pkcs11Error> {
    if let Some(path) = uri.pin_source() {
        let text = std::fs::read_to_string(path).map_err(|e| Pkcs11Error::PinFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let text = Secret::new(text);
        let line = text
            .expose()
            .lines()
            .next()
            .unwrap_or("")
            .trim_end_matches('\r');
        if line.is_empty() {
            return Err(Pkcs11Error::PinFile {
                path: path.to_owned(),
                reason: "the file is empty".into(),
            });
        }
        return Ok(Some(Secret::new(line)));
    }
    Ok(std::env::var(PIN_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new))
}

/// One token of one module: where sessions come from.
struct Token {
    ctx: Pkcs11,
    slot: Slot,
    label: String,
    pin: Option<Secret>,
    login_required: bool,
    pool: Mutex<PoolState>,
    freed: Condvar,
}

struct PoolState {
    idle: Vec<Session>,
    open: usize,
    max: usize,
}

/// Sessions a key opens at most by default: more than any worker pool iotc runs.
const DEFAULT_MAX_SESSIONS: usize = 64;

impl Token {
    fn open(uri: &KeyUri) -> Result<Token, Pkcs11Error> {
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

    fn failed(&self, operation: &'static str, e: &CkError) -> Pkcs11Error {
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

    fn open_session(&self, read_write: bool) -> Result<Session, Pkcs11Error> {
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
    fn session(&self) -> Result<Pooled<'_>, Pkcs11Error> {
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
struct Pooled<'a> {
    token: &'a Token,
    session: Option<Session>,
}

impl Pooled<'_> {
    fn get(&self) -> &Session {
        // Only `discard` takes the session, and it consumes the guard.
        self.session.as_ref().expect("pooled session present")
    }

    /// Closes the session instead of returning it: after an error its state is unknown.
    fn discard(mut self) {
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

/// A private key in a token: finds itself once, signs from any thread.
pub struct TokenKey {
    token: Token,
    /// Found once; found again if the token invalidated it (a logout when the last
    /// session closed).
    handle: Mutex<ObjectHandle>,
    key_type: TokenKeyType,
    uri: KeyUri,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("uri", &self.uri.to_string())
            .field("key_type", &self.key_type)
            .finish()
    }
}

fn key_template(uri: &KeyUri, class: ObjectClass) -> Vec<Attribute> {
    let mut t = vec![Attribute::Class(class)];
    if let Some(label) = uri.object() {
        t.push(Attribute::Label(label.as_bytes().to_vec()));
    }
    if let Some(id) = uri.id() {
        t.push(Attribute::Id(id.to_vec()));
    }
    t
}

fn labels_of(s: &Session, class: ObjectClass) -> Vec<String> {
    let Ok(handles) = s.find_objects(&[Attribute::Class(class)]) else {
        return Vec::new();
    };
    handles
        .into_iter()
        .filter_map(
            |h| match s.get_attributes(h, &[AttributeType::Label]).ok()?.pop()? {
                Attribute::Label(l) => Some(format!("{:?}", String::from_utf8_lossy(&l))),
                _ => None,
            },
        )
        .collect()
}

impl TokenKey {
    /// Opens the private key the URI names: loads the module, finds the token, logs in,
    /// finds exactly one private key and reads its type.
    pub fn open(uri: &KeyUri) -> Result<TokenKey, Pkcs11Error> {
        let token = Token::open(uri)?;
        let s = token.session()?;
        let key = uri.describe();
        let handles = s
            .get()
            .find_objects(&key_template(uri, ObjectClass::PRIVATE_KEY))
            .map_err(|e| token.failed("C_FindObjects", &e))?;
        let handle = match handles.as_slice() {
            [h] => *h,
            [] => {
                let others = labels_of(s.get(), ObjectClass::PRIVATE_KEY);
                return Err(Pkcs11Error::ObjectMissing {
                    key,
                    others: if others.is_empty() {
                        " (the token holds no private key the login can see)".into()
                    } else {
                        format!(" (private keys in the token: {})", others.join(", "))
                    },
                });
            }
            many => {
                return Err(Pkcs11Error::AmbiguousObject {
                    key,
                    count: many.len(),
                })
            }
        };
        let key_type = read_key_type(s.get(), handle, &key)?;
        let can_sign = matches!(
            s.get()
                .get_attributes(handle, &[AttributeType::Sign])
                .ok()
                .and_then(|mut a| a.pop()),
            Some(Attribute::Sign(true)) | None
        );
        if !can_sign {
            return Err(Pkcs11Error::CannotSign { key });
        }
        drop(s);
        Ok(TokenKey {
            token,
            handle: Mutex::new(handle),
            key_type,
            uri: uri.clone(),
        })
    }

    /// Generates a key pair inside the token under the URI's `object=` label: the private
    /// key is a token object, private, sensitive and not extractable, and may sign only
    /// (no decrypt, unwrap or derive). Returns the key and
    /// its public key as rcgen and X.509 want it (the uncompressed EC point, or the DER
    /// RSAPublicKey). Refuses a label already in use.
    pub fn generate(
        uri: &KeyUri,
        key_type: TokenKeyType,
    ) -> Result<(TokenKey, Vec<u8>), Pkcs11Error> {
        let label = uri.object().ok_or_else(|| Pkcs11Error::InvalidUri {
            reason: "name the new key with object=LABEL".into(),
        })?;
        let key = uri.describe();
        let token = Token::open(uri)?;
        // A pooled session first: it stays open afterwards, and with it the login, without
        // which the token forgets the handles of private objects.
        let keep = token.session()?;
        let s = token.open_session(true)?;
        let mut taken = s
            .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
            .map_err(|e| token.failed("C_FindObjects", &e))?;
        if let Some(id) = uri.id() {
            taken.extend(
                s.find_objects(&[Attribute::Id(id.to_vec())])
                    .map_err(|e| token.failed("C_FindObjects", &e))?,
            );
        }
        if !taken.is_empty() {
            return Err(Pkcs11Error::ObjectExists { key });
        }
        let id = match uri.id() {
            Some(id) => id.to_vec(),
            None => {
                let mut id = vec![0u8; 16];
                rand::RngCore::fill_bytes(&mut rand::rng(), &mut id);
                id
            }
        };
        let common = |extra: Vec<Attribute>| {
            let mut t = vec![
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
            ];
            t.extend(extra);
            t
        };
        // Both halves: token objects under the label and id. The public half only verifies;
        // the private half is private, sensitive, never extractable, and only signs.
        let public_base = [
            Attribute::Verify(true),
            Attribute::Private(false),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
        ];
        let private = common(vec![
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
        ]);
        let (mechanism, public) = match key_type {
            TokenKeyType::EcP256 | TokenKeyType::EcP384 => {
                let params = if key_type == TokenKeyType::EcP256 {
                    P256_PARAMS
                } else {
                    P384_PARAMS
                };
                let mut attrs = vec![Attribute::EcParams(params.to_vec())];
                attrs.extend(public_base);
                (Mechanism::EccKeyPairGen, common(attrs))
            }
            TokenKeyType::Rsa { bits } => {
                let mut attrs = vec![
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ];
                attrs.extend(public_base);
                (Mechanism::RsaPkcsKeyPairGen, common(attrs))
            }
        };
        let (pub_handle, handle) =
            s.generate_key_pair(&mechanism, &public, &private)
                .map_err(|e| match rv(&e) {
                    Some(RvError::DeviceMemory) => Pkcs11Error::TokenFull {
                        token: token.label.clone(),
                        code: "CKR_DEVICE_MEMORY",
                    },
                    // SoftHSM's answer when its object store cannot take another file.
                    Some(RvError::FunctionFailed) => Pkcs11Error::TokenFull {
                        token: token.label.clone(),
                        code: "CKR_FUNCTION_FAILED",
                    },
                    Some(RvError::TokenWriteProtected) => Pkcs11Error::WriteProtected {
                        token: token.label.clone(),
                    },
                    Some(
                        RvError::MechanismInvalid
                        | RvError::CurveNotSupported
                        | RvError::KeySizeRange
                        | RvError::DomainParamsInvalid
                        | RvError::TemplateInconsistent,
                    ) => Pkcs11Error::UnsupportedKeyType {
                        key: key.clone(),
                        found: format!("{key_type}, which the token cannot make ({})", reason(&e)),
                    },
                    _ => token.failed("C_GenerateKeyPair", &e),
                })?;
        let public = read_public_key(&s, pub_handle, key_type, &key)?;
        tracing::info!(key = %key, "generated {key_type} inside the token");
        drop(s);
        drop(keep);
        Ok((
            TokenKey {
                token,
                handle: Mutex::new(handle),
                key_type,
                uri: uri.clone(),
            },
            public,
        ))
    }

    /// The key's type.
    pub fn key_type(&self) -> TokenKeyType {
        self.key_type
    }

    /// The URI that names the key (no PIN).
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token.label
    }

    /// Caps the sessions this key keeps open (1 makes every signature wait for the one
    /// session: the measurement of what the pool buys).
    pub fn set_max_sessions(&self, max: usize) {
        let mut pool = lock(&self.token.pool);
        pool.max = max.max(1);
        // Idle sessions beyond the cap close now; busy ones close when they come back.
        while pool.open > pool.max && pool.idle.pop().is_some() {
            pool.open -= 1;
        }
    }

    /// How many sessions are open now.
    pub fn sessions_open(&self) -> usize {
        lock(&self.token.pool).open
    }

    /// Signs `msg` (hashing it here) with `scheme`. ECDSA signatures come back DER-encoded.
    pub fn sign(&self, scheme: Scheme, msg: &[u8]) -> Result<Vec<u8>, Pkcs11Error> {
        if !scheme.fits(self.key_type) {
            return Err(Pkcs11Error::SchemeMismatch {
                key: self.uri.describe(),
                scheme,
            });
        }
        let hash = scheme.hash();
        let digest = hash.digest(msg);
        let mut retried = false;
        loop {
            let s = self.token.session()?;
            let handle = *lock(&self.handle);
            let result = match scheme {
                Scheme::EcdsaSha256 | Scheme::EcdsaSha384 => s
                    .get()
                    .sign(&Mechanism::Ecdsa, handle, &digest)
                    .map(|raw| ecdsa_der(&raw)),
                Scheme::RsaPkcs1Sha256 | Scheme::RsaPkcs1Sha384 | Scheme::RsaPkcs1Sha512 => {
                    let mut info = hash.digest_info_prefix().to_vec();
                    info.extend_from_slice(&digest);
                    s.get().sign(&Mechanism::RsaPkcs, handle, &info).map(Ok)
                }
                Scheme::RsaPssSha256 | Scheme::RsaPssSha384 | Scheme::RsaPssSha512 => s
                    .get()
                    .sign(&Mechanism::RsaPkcsPss(hash.pss()), handle, &digest)
                    .map(Ok),
            };
            let failed = |reason: String| Pkcs11Error::Token {
                operation: "C_Sign",
                what: self.uri.describe(),
                reason,
            };
            match result {
                Ok(sig) => return sig.map_err(failed),
                Err(e) if rv(&e) == Some(RvError::ObjectHandleInvalid) && !retried => {
                    retried = true;
                    let found = s
                        .get()
                        .find_objects(&key_template(&self.uri, ObjectClass::PRIVATE_KEY))
                        .map_err(|e| failed(reason(&e)))?;
                    match found.as_slice() {
                        [h] => *lock(&self.handle) = *h,
                        _ => return Err(failed(reason(&e))),
                    }
                }
                Err(e) => {
                    s.discard();
                    return Err(failed(reason(&e)));
                }
            }
        }
    }

    /// Checks that this key is the private half of `public_key` (the subjectPublicKey bits
    /// of a certificate): signs a challenge in the token and verifies it here. Also proves
    /// the login and the signing path before a batch starts.
    pub fn check_public_key(&self, public_key: &[u8], subject: &str) -> Result<(), Pkcs11Error> {
        use aws_lc_rs::signature::{self, UnparsedPublicKey};
        let scheme = self.key_type.certificate_scheme();
        let challenge = b"iotc: does this token key belong to the certificate?";
        let sig = self.sign(scheme, challenge)?;
        let alg: &dyn signature::VerificationAlgorithm = match scheme {
            Scheme::EcdsaSha256 => &signature::ECDSA_P256_SHA256_ASN1,
            Scheme::EcdsaSha384 => &signature::ECDSA_P384_SHA384_ASN1,
            _ => &signature::RSA_PKCS1_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(alg, public_key)
            .verify(challenge, &sig)
            .map_err(|_| Pkcs11Error::KeyMismatch {
                key: self.uri.describe(),
                subject: subject.to_owned(),
            })
    }
}

fn read_key_type(
    s: &Session,
    handle: ObjectHandle,
    key: &str,
) -> Result<TokenKeyType, Pkcs11Error> {
    let failed = |e: CkError| Pkcs11Error::Token {
        operation: "C_GetAttributeValue",
        what: key.to_owned(),
        reason: reason(&e),
    };
    let attrs = s
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(failed)?;
    let unsupported = |found: String| Pkcs11Error::UnsupportedKeyType {
        key: key.to_owned(),
        found,
    };
    match attrs.first() {
        Some(Attribute::KeyType(kt)) if *kt == KeyType::EC => {
            let params = s
                .get_attributes(handle, &[AttributeType::EcParams])
                .map_err(failed)?;
            match params.first() {
                Some(Attribute::EcParams(p)) if p.as_slice() == P256_PARAMS => {
                    Ok(TokenKeyType::EcP256)
                }
                Some(Attribute::EcParams(p)) if p.as_slice() == P384_PARAMS => {
                    Ok(TokenKeyType::EcP384)
                }
                Some(Attribute::EcParams(p)) => Err(unsupported(format!(
                    "an EC key on another curve (CKA_EC_PARAMS {})",
                    p.iter().map(|b| format!("{b:02x}")).collect::<String>()
                ))),
                _ => Err(unsupported("an EC key without curve parameters".into())),
            }
        }
        Some(Attribute::KeyType(kt)) if *kt == KeyType::RSA => {
            let m = s
                .get_attributes(handle, &[AttributeType::Modulus])
                .map_err(failed)?;
            let bits = match m.first() {
                Some(Attribute::Modulus(n)) => {
                    let n = strip_zeros(n);
                    (n.len() * 8) as u32 - n.first().map_or(8, |b| b.leading_zeros())
                }
                _ => {
                    return Err(unsupported(
                        "an RSA key whose modulus cannot be read".into(),
                    ))
                }
            };
            if matches!(bits, 2048 | 3072 | 4096) {
                Ok(TokenKeyType::Rsa { bits })
            } else {
                Err(unsupported(format!("an RSA {bits}-bit key")))
            }
        }
        Some(Attribute::KeyType(kt)) => Err(unsupported(format!("a {kt} key"))),
        _ => Err(unsupported("a key of unknown type".into())),
    }
}

fn read_public_key(
    s: &Session,
    handle: ObjectHandle,
    key_type: TokenKeyType,
    key: &str,
) -> Result<Vec<u8>, Pkcs11Error> {
    use pkcs8::der::asn1::{OctetStringRef, SequenceOf, UintRef};
    use pkcs8::der::{Decode, Encode};
    let failed = |reason: String| Pkcs11Error::Token {
        operation: "C_GetAttributeValue (public key)",
        what: key.to_owned(),
        reason,
    };
    match key_type {
        TokenKeyType::EcP256 | TokenKeyType::EcP384 => {
            let attrs = s
                .get_attributes(handle, &[AttributeType::EcPoint])
                .map_err(|e| failed(reason(&e)))?;
            let Some(Attribute::EcPoint(point)) = attrs.into_iter().next() else {
                return Err(failed("no CKA_EC_POINT".into()));
            };
            // PKCS#11 says DER OCTET STRING; some tokens hand back the bare point.
            match OctetStringRef::from_der(&point) {
                Ok(os) => Ok(os.as_bytes().to_vec()),
                Err(_) => Ok(point),
            }
        }
        TokenKeyType::Rsa { .. } => {
            let attrs = s
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| failed(reason(&e)))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            let (Some(n), Some(e)) = (n, e) else {
                return Err(failed("no CKA_MODULUS / CKA_PUBLIC_EXPONENT".into()));
            };
            // RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }
            let der = (|| {
                let mut seq = SequenceOf::<UintRef<'_>, 2>::new();
                seq.add(UintRef::new(&n)?)?;
                seq.add(UintRef::new(&e)?)?;
                seq.to_der()
            })();
            der.map_err(|e| failed(e.to_string()))
        }
    }
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[first..]
}

/// `r || s` (what CKM_ECDSA returns) as the DER `Ecdsa-Sig-Value` X.509 and TLS carry.
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    use pkcs8::der::asn1::{SequenceOf, UintRef};
    use pkcs8::der::Encode;
    if raw.is_empty() || raw.len() % 2 != 0 {
        return Err(format!(
            "the token returned a {}-byte ECDSA signature (expected r || s)",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let der = (|| {
        let mut seq = SequenceOf::<UintRef<'_>, 2>::new();
        seq.add(UintRef::new(r)?)?;
        seq.add(UintRef::new(s)?)?;
        seq.to_der()
    })();
    der.map_err(|e| e.to_string())
}

/// Whether `s` names a token key (`pkcs11:...`) rather than a file.
pub fn is_uri(s: &str) -> bool {
    s.trim_start().starts_with(SCHEME)
}

/// Reads a `.uri` file: one PKCS#11 URI (surrounding whitespace and `#` comment lines
/// ignored).
pub fn read_uri_file(path: &Path) -> Result<KeyUri, Pkcs11Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Pkcs11Error::InvalidUri {
        reason: format!("could not read {}: {e}", path.display()),
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| Pkcs11Error::InvalidUri {
            reason: format!("{} holds no URI", path.display()),
        })?;
    line.parse().map_err(|e| match e {
        Pkcs11Error::InvalidUri { reason } => Pkcs11Error::InvalidUri {
            reason: format!("{}: {reason}", path.display()),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_raw_signatures_become_der() {
        // Leading zero bytes are stripped, a high bit gets a 0x00 pad.
        let mut raw = vec![0u8; 64];
        raw[0] = 0x00;
        raw[1] = 0x7f;
        raw[32] = 0x80;
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 31, 0x7f]);
        let s_at = 2 + 2 + 31;
        assert_eq!(&der[s_at..s_at + 3], &[0x02, 33, 0x00]);
        assert!(ecdsa_der(&[1, 2, 3]).is_err());
        assert!(ecdsa_der(&[]).is_err());
    }

    #[test]
    fn schemes_fit_their_keys() {
        assert!(Scheme::EcdsaSha256.fits(TokenKeyType::EcP256));
        assert!(!Scheme::EcdsaSha256.fits(TokenKeyType::EcP384));
        assert!(!Scheme::RsaPssSha256.fits(TokenKeyType::EcP256));
        assert!(Scheme::RsaPssSha256.fits(TokenKeyType::Rsa { bits: 2048 }));
        assert_eq!(Hash::Sha256.digest_info_prefix().len() + 32, 51);
        assert_eq!(Hash::Sha384.digest_info_prefix().len() + 48, 67);
        assert_eq!(Hash::Sha512.digest_info_prefix().len() + 64, 83);
    }

    #[test]
    fn a_missing_module_is_named() {
        let uri: KeyUri = "pkcs11:token=t;object=k?module-path=/nonexistent/libnothing.so"
            .parse()
            .unwrap();
        let err = TokenKey::open(&uri).unwrap_err();
        assert!(matches!(err, Pkcs11Error::ModuleLoad { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/libnothing.so"),
            "{err}"
        );
    }
}
