//! How a device proves who it is to DPS: an X.509 identity (leaf + chain presented in the TLS
//! handshake, with the leaf's private key) or a symmetric key (a SAS token per request).
//!
//! Keys are read from PEM (PKCS#8, encrypted PKCS#8 with a password, SEC1 or PKCS#1) or from a
//! PKCS#12 file; they are held as DER in a zeroized buffer and never printed. A device key can
//! also stay in a PKCS#11 token ([`X509Identity::from_token`]): the TLS handshake is then
//! signed in the token and this process never holds the key.

use std::sync::Arc;

use crate::pkcs11::{KeyUri, Pkcs11Error, TokenKey};
use crate::secret::Secret;
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use zeroize::Zeroizing;

/// Why an identity could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate file holds no CERTIFICATE block, or one is malformed.
    #[error("no usable certificate in the certificate PEM: {0}")]
    ReadCertificates(String),
    /// The key file holds no private key, or it is malformed.
    #[error("no usable private key in the key PEM: {0}")]
    ReadKey(String),
    /// The key is encrypted and no password was given.
    #[error("the private key is encrypted: give its password (--key-password-file)")]
    PasswordNeeded,
    /// The password does not decrypt the key.
    #[error("could not decrypt the private key (wrong password?)")]
    DecryptKey,
    /// The PKCS#12 file could not be read with this password.
    #[error("could not read the PKCS#12 file (wrong password or not PKCS#12): {0}")]
    ReadPkcs12(String),
    /// The PKCS#12 file has no private key with a certificate.
    #[error("the PKCS#12 file holds no private key with its certificate chain")]
    Pkcs12Empty,
    /// The key does not belong to the leaf certificate.
    #[error("the private key does not match the certificate {0:?}")]
    KeyMismatch(String),
    /// The key in the PKCS#11 token could not be used.
    #[error(transparent)]
    Token(#[from] Pkcs11Error),
}

#[derive(Clone)]
enum KeyFormat {
    Pkcs8,
    Sec1,
    Pkcs1,
}

/// Where the leaf's private key is.
#[derive(Clone)]
enum DeviceKey {
    /// In memory, as DER.
    File {
        der: Zeroizing<Vec<u8>>,
        format: KeyFormat,
    },
    /// In a PKCS#11 token.
    Token(Arc<TokenKey>),
}

/// A device's X.509 identity: the leaf certificate first, then the intermediates it
/// presents, and the leaf's private key.
#[derive(Clone)]
pub struct X509Identity {
    chain: Vec<Vec<u8>>,
    key: DeviceKey,
}

impl std::fmt::Debug for X509Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match &self.key {
            DeviceKey::File { .. } => "[secret elided]".to_owned(),
            DeviceKey::Token(k) => format!("[in token: {}]", k.uri()),
        };
        f.debug_struct("X509Identity")
            .field("subject", &self.leaf_subject())
            .field("chain_len", &self.chain.len())
            .field("key", &key)
            .finish()
    }
}

impl X509Identity {
    /// From a certificate PEM (leaf first, then the chain; a `_fullchain.pem` is ideal) and a
    /// key PEM. `password` decrypts an `ENCRYPTED PRIVATE KEY`.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        password: Option<&str>,
    ) -> Result<X509Identity, IdentityError> {
        let chain = parse_certs(cert_pem)?;
        let (der, format) = parse_key(key_pem, password)?;
        let id = X509Identity {
            chain,
            key: DeviceKey::File { der, format },
        };
        id.check_key()?;
        Ok(id)
    }

    /// From a certificate PEM (leaf first, then the chain) and the PKCS#11 token key `uri`
    /// names. The key is checked against the leaf with a signature made in the token, which
    /// also proves the login before any connection is made.
    pub fn from_token(cert_pem: &[u8], uri: &KeyUri) -> Result<X509Identity, IdentityError> {
        let chain = parse_certs(cert_pem)?;
        let key = TokenKey::open(uri)?;
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0])
            .map_err(|e| IdentityError::ReadCertificates(e.to_string()))?;
        let subject = leaf.subject().to_string();
        key.check_public_key(&leaf.public_key().subject_public_key.data, &subject)?;
        Ok(X509Identity {
            chain,
            key: DeviceKey::Token(Arc::new(key)),
        })
    }

    /// From DER parts: the chain (leaf first) and a PKCS#8 private key.
    pub fn from_der(
        chain: Vec<Vec<u8>>,
        pkcs8_key: Vec<u8>,
    ) -> Result<X509Identity, IdentityError> {
        if chain.is_empty() {
            return Err(IdentityError::ReadCertificates("empty chain".into()));
        }
        let id = X509Identity {
            chain,
            key: DeviceKey::File {
                der: Zeroizing::new(pkcs8_key),
                format: KeyFormat::Pkcs8,
            },
        };
        id.check_key()?;
        Ok(id)
    }

    /// From a PKCS#12 (`.pfx`) file: its private key and the certificate chain stored with it.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<X509Identity, IdentityError> {
        let store = p12_keystore::KeyStore::from_pkcs12(
            der,
            password,
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )
        .map_err(|e| IdentityError::ReadPkcs12(e.to_string()))?;
        let (_, kc) = store
            .private_key_chain()
            .ok_or(IdentityError::Pkcs12Empty)?;
        if kc.certs().is_empty() {
            return Err(IdentityError::Pkcs12Empty);
        }
        let mut chain: Vec<Vec<u8>> = kc.certs().iter().map(|c| c.as_der().to_vec()).collect();
        // Put the certificate of the key first, whatever order the file used.
        let key = kc.key().as_der().to_vec();
        if let Some(pos) = chain.iter().position(|c| key_matches(c, &key)) {
            let leaf = chain.remove(pos);
            chain.insert(0, leaf);
        }
        X509Identity::from_der(chain, key)
    }

    /// The leaf certificate (DER).
    pub fn leaf_der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// Leaf first, then the certificates presented above it (DER).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The leaf's subject common name, if it has one.
    pub fn common_name(&self) -> Option<String> {
        let (_, cert) = x509_parser::parse_x509_certificate(self.leaf_der()).ok()?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok().map(str::to_owned));
        cn
    }

    fn leaf_subject(&self) -> String {
        x509_parser::parse_x509_certificate(self.leaf_der())
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_else(|_| "<unparsable>".into())
    }

    pub(crate) fn rustls_chain(&self) -> Vec<CertificateDer<'static>> {
        self.chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect()
    }

    /// The key as DER, when it is not in a token.
    pub(crate) fn rustls_key(&self) -> Option<PrivateKeyDer<'static>> {
        let DeviceKey::File { der, format } = &self.key else {
            return None;
        };
        let der = der.to_vec();
        Some(match format {
            KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der)),
            KeyFormat::Sec1 => PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(der)),
            KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(der)),
        })
    }

    /// The key as a rustls signing key that signs in the token, when it is in one.
    pub(crate) fn token_signing_key(&self) -> Option<Arc<dyn rustls::sign::SigningKey>> {
        match &self.key {
            DeviceKey::Token(k) => Some(Arc::new(super::token::TokenSigningKey(k.clone()))),
            DeviceKey::File { .. } => None,
        }
    }

    /// Checks that the key belongs to the leaf's public key (a mixed-up key file would
    /// otherwise surface as an opaque TLS failure).
    fn check_key(&self) -> Result<(), IdentityError> {
        let Some(key) = self.rustls_key() else {
            return Ok(());
        };
        match spki_matches(self.leaf_der(), key) {
            Ok(true) => Ok(()),
            Ok(false) => Err(IdentityError::KeyMismatch(self.leaf_subject())),
            Err(e) => Err(e),
        }
    }
}

/// Whether `key`'s public key is the certificate's. `Ok(true)` too when the provider cannot
/// tell (TLS will then).
fn spki_matches(cert_der: &[u8], key: PrivateKeyDer<'static>) -> Result<bool, IdentityError> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| IdentityError::ReadKey(e.to_string()))?;
    let Some(key_spki) = signing.public_key() else {
        return Ok(true);
    };
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| IdentityError::ReadCertificates(e.to_string()))?;
    Ok(cert.public_key().raw == key_spki.as_ref())
}

fn key_matches(cert_der: &[u8], pkcs8: &[u8]) -> bool {
    matches!(
        spki_matches(
            cert_der,
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()))
        ),
        Ok(true)
    )
}

/// Every CERTIFICATE block of a PEM text, as DER, in order.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, IdentityError> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| IdentityError::ReadCertificates(e.to_string()))?;
        out.push(cert.to_vec());
    }
    if out.is_empty() {
        return Err(IdentityError::ReadCertificates(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(out)
}

fn parse_key(
    pem: &[u8],
    password: Option<&str>,
) -> Result<(Zeroizing<Vec<u8>>, KeyFormat), IdentityError> {
    let text =
        std::str::from_utf8(pem).map_err(|_| IdentityError::ReadKey("not UTF-8 PEM".into()))?;
    // Find the first private-key block, whatever else the file holds.
    let labels = [
        ("ENCRYPTED PRIVATE KEY", None),
        ("PRIVATE KEY", Some(KeyFormat::Pkcs8)),
        ("EC PRIVATE KEY", Some(KeyFormat::Sec1)),
        ("RSA PRIVATE KEY", Some(KeyFormat::Pkcs1)),
    ];
    for (label, format) in labels {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let Some(start) = text.find(&begin) else {
            continue;
        };
        let Some(stop) = text[start..].find(&end) else {
            return Err(IdentityError::ReadKey(format!(
                "unterminated {label} block"
            )));
        };
        let block = &text[start..start + stop + end.len()];
        let (_, doc) = pkcs8::der::SecretDocument::from_pem(block)
            .map_err(|e| IdentityError::ReadKey(e.to_string()))?;
        return match format {
            Some(f) => Ok((Zeroizing::new(doc.as_bytes().to_vec()), f)),
            None => {
                let password = password.ok_or(IdentityError::PasswordNeeded)?;
                let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
                    .map_err(|e| IdentityError::ReadKey(e.to_string()))?;
                let plain = info
                    .decrypt(password.as_bytes())
                    .map_err(|_| IdentityError::DecryptKey)?;
                Ok((Zeroizing::new(plain.as_bytes().to_vec()), KeyFormat::Pkcs8))
            }
        };
    }
    Err(IdentityError::ReadKey("no private key block found".into()))
}

/// How the device attests.
#[derive(Clone, Debug)]
pub enum Attestation {
    /// X.509: the chain and key go into the TLS handshake.
    X509(X509Identity),
    /// Symmetric key: the device's own key (base64); a SAS token is signed per request.
    SymmetricKey(Secret),
}

/// SHA-1 thumbprint of a DER certificate: 40 uppercase hex digits (what DPS and IoT Central
/// show).
pub fn sha1_hex(der: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Reads an IoT Central certificate string (base64 of a PEM file, or base64 of DER) into the
/// DER of its first certificate. `None` when it is neither.
pub fn decode_certificate_string(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim().as_bytes())
        .ok()?;
    if bytes.starts_with(b"-----BEGIN") || bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        parse_certs(&bytes).ok()?.into_iter().next()
    } else {
        Some(bytes)
    }
}
