//! The errors of the PKCS#11 module: one enum, every variant named after what went wrong
//! (module, token, PIN, object, key type, room), each message naming the token or key and
//! saying what to do. No message holds a PIN: none is ever formatted into one.

use std::path::PathBuf;

use cryptoki::error::{Error as CkError, RvError};

use super::{Scheme, MODULE_ENV, PIN_ENV};

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
pub(super) fn reason(e: &CkError) -> String {
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

pub(super) fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}
