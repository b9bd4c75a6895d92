//! TLS client authentication with a device key that stays in a PKCS#11 token.
//!
//! rustls asks a [`rustls::sign::SigningKey`] to pick a scheme among those the server
//! offers and then to sign the handshake transcript; this one forwards both to the token
//! through [`crate::pkcs11::TokenKey`], so a station can register devices whose keys it can
//! never read. ECDSA keys sign with their curve's hash (what TLS 1.3 requires); RSA keys
//! prefer PSS (the only RSA scheme of TLS 1.3) and fall back to PKCS#1 v1.5 for a TLS 1.2
//! server that offers nothing else.

use std::sync::Arc;

use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::pkcs11::{Scheme, TokenKey, TokenKeyType};

/// A token key as rustls sees it.
#[derive(Debug)]
pub(crate) struct TokenSigningKey(pub(crate) Arc<TokenKey>);

#[derive(Debug)]
struct TokenSigner {
    key: Arc<TokenKey>,
    tls: SignatureScheme,
    scheme: Scheme,
}

/// The schemes of a key type, in the order we prefer them.
fn schemes(key_type: TokenKeyType) -> &'static [(SignatureScheme, Scheme)] {
    match key_type {
        TokenKeyType::EcP256 => &[(SignatureScheme::ECDSA_NISTP256_SHA256, Scheme::EcdsaSha256)],
        TokenKeyType::EcP384 => &[(SignatureScheme::ECDSA_NISTP384_SHA384, Scheme::EcdsaSha384)],
        TokenKeyType::Rsa { .. } => &[
            (SignatureScheme::RSA_PSS_SHA256, Scheme::RsaPssSha256),
            (SignatureScheme::RSA_PSS_SHA384, Scheme::RsaPssSha384),
            (SignatureScheme::RSA_PSS_SHA512, Scheme::RsaPssSha512),
            (SignatureScheme::RSA_PKCS1_SHA256, Scheme::RsaPkcs1Sha256),
            (SignatureScheme::RSA_PKCS1_SHA384, Scheme::RsaPkcs1Sha384),
            (SignatureScheme::RSA_PKCS1_SHA512, Scheme::RsaPkcs1Sha512),
        ],
    }
}

impl SigningKey for TokenSigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let chosen = schemes(self.0.key_type())
            .iter()
            .find(|(tls, _)| offered.contains(tls));
        if chosen.is_none() {
            tracing::warn!(
                key = %self.0.uri().describe(),
                ?offered,
                "the server offers no signature scheme this token key can make"
            );
        }
        chosen.map(|(tls, scheme)| {
            Box::new(TokenSigner {
                key: self.0.clone(),
                tls: *tls,
                scheme: *scheme,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.key_type() {
            TokenKeyType::EcP256 | TokenKeyType::EcP384 => SignatureAlgorithm::ECDSA,
            TokenKeyType::Rsa { .. } => SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key.sign(self.scheme, message).map_err(|e| {
            tracing::warn!("TLS client signature in the token failed: {e}");
            rustls::Error::General(format!("token signature failed: {e}"))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.tls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec_keys_use_their_curve_and_rsa_prefers_pss() {
        assert_eq!(
            schemes(TokenKeyType::EcP256),
            &[(SignatureScheme::ECDSA_NISTP256_SHA256, Scheme::EcdsaSha256)]
        );
        assert_eq!(
            schemes(TokenKeyType::EcP384)[0].0,
            SignatureScheme::ECDSA_NISTP384_SHA384
        );
        let rsa = schemes(TokenKeyType::Rsa { bits: 2048 });
        assert_eq!(rsa[0].0, SignatureScheme::RSA_PSS_SHA256);
        assert!(rsa
            .iter()
            .any(|(s, _)| *s == SignatureScheme::RSA_PKCS1_SHA256));
    }
}
