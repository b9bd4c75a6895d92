//! The key a CA signs with: a key file or a PKCS#11 token object, behind one rcgen
//! `SigningKey`.
//!
//! Every place a CA signs (intermediates, devices, verification certificates, CSRs) goes
//! through [`CaKey`], so a CA whose key lives in an HSM works everywhere a file CA does. A
//! token signature that fails surfaces in rcgen only as `RemoteKeyError`, which carries no
//! reason; the reason is kept per thread (rcgen signs on the caller's thread) and put back
//! into the [`CertError`] by [`sign_error`].

use std::cell::RefCell;
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm, SigningKey};

use super::{CertError, KeyType};
use crate::pkcs11::{Pkcs11Error, TokenKey, TokenKeyType};

thread_local! {
    static LAST_TOKEN_ERROR: RefCell<Option<Pkcs11Error>> = const { RefCell::new(None) };
}

/// A CA's signing key.
pub(crate) enum CaKey {
    /// A key read from a PKCS#8 file.
    File(KeyPair),
    /// A key inside a PKCS#11 token.
    Token {
        key: Arc<TokenKey>,
        /// The subjectPublicKey bits (EC point or DER RSAPublicKey).
        public: Vec<u8>,
        alg: &'static SignatureAlgorithm,
    },
}

impl CaKey {
    pub(crate) fn token(key: TokenKey, public: Vec<u8>, key_type: KeyType) -> CaKey {
        CaKey::Token {
            key: Arc::new(key),
            public,
            alg: key_type.signature_algorithm(),
        }
    }

    pub(crate) fn token_key(&self) -> Option<&Arc<TokenKey>> {
        match self {
            CaKey::File(_) => None,
            CaKey::Token { key, .. } => Some(key),
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::File(kp) => kp.der_bytes(),
            CaKey::Token { public, .. } => public,
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            CaKey::File(kp) => kp.algorithm(),
            CaKey::Token { alg, .. } => alg,
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::File(kp) => kp.sign(msg),
            CaKey::Token { key, .. } => {
                key.sign(key.key_type().certificate_scheme(), msg)
                    .map_err(|e| {
                        LAST_TOKEN_ERROR.with(|last| *last.borrow_mut() = Some(e));
                        rcgen::Error::RemoteKeyError
                    })
            }
        }
    }
}

/// The error of a failed signature: the token's own reason when a token key failed.
pub(crate) fn sign_error(subject: &str, e: rcgen::Error) -> CertError {
    if matches!(e, rcgen::Error::RemoteKeyError) {
        if let Some(token) = LAST_TOKEN_ERROR.with(|last| last.borrow_mut().take()) {
            return CertError::Token(token);
        }
    }
    CertError::Sign {
        subject: subject.to_owned(),
        reason: e.to_string(),
    }
}

/// The certificate key type of a token key.
pub(crate) fn key_type_of(t: TokenKeyType) -> Option<KeyType> {
    match t {
        TokenKeyType::EcP256 => Some(KeyType::EcP256),
        TokenKeyType::EcP384 => Some(KeyType::EcP384),
        TokenKeyType::Rsa { bits: 2048 } => Some(KeyType::Rsa2048),
        TokenKeyType::Rsa { bits: 3072 } => Some(KeyType::Rsa3072),
        TokenKeyType::Rsa { bits: 4096 } => Some(KeyType::Rsa4096),
        TokenKeyType::Rsa { .. } => None,
    }
}

/// The token key type that makes a key of this type.
pub(crate) fn token_type_of(k: KeyType) -> TokenKeyType {
    match k {
        KeyType::EcP256 => TokenKeyType::EcP256,
        KeyType::EcP384 => TokenKeyType::EcP384,
        KeyType::Rsa2048 => TokenKeyType::Rsa { bits: 2048 },
        KeyType::Rsa3072 => TokenKeyType::Rsa { bits: 3072 },
        KeyType::Rsa4096 => TokenKeyType::Rsa { bits: 4096 },
    }
}
