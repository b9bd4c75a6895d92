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
//! of the process, and lasts while a session is open. The PIN lives in a [`Secret`](crate::secret::Secret) and
//! reaches only `C_Login`; no error, log line or `Debug` output carries it.

mod error;
mod session;
mod uri;

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use sha2::Digest;

pub use error::Pkcs11Error;
pub use uri::{KeyUri, SCHEME};

use error::{reason, rv};
use session::{lock, Token};

/// Environment variable naming the PKCS#11 module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "IOTC_PKCS11_MODULE";
/// Environment variable holding the token PIN when the URI has no `pin-source`.
pub const PIN_ENV: &str = "IOTC_PKCS11_PIN";

/// DER of the named curves' OIDs, as CKA_EC_PARAMS holds them.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

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
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
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
