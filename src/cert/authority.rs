//! Certificate authorities: make a root, issue intermediates and leaves, load a CA from files.
//!
//! An [`Authority`] is a CA certificate with its private key and the chain of intermediates
//! above it (the root is never part of a chain: a device presents leaf + intermediates and the
//! service holds the root). Everything it issues comes back as an [`Issued`]: certificate,
//! key (when we generated it) and the chain PEM a device presents in TLS.
//!
//! The CA key is a file key or a PKCS#11 token key ([`CaKey`]); which one is decided once,
//! when the CA is made or loaded: `PREFIX_key.uri` next to `PREFIX_cert.pem` says the key is
//! in a token, and every command that loads a CA goes through [`Authority::load`].

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, Issuer, SanType};
use time::OffsetDateTime;

use super::inspect::{parse_cert, subject_of};
use super::key::pem_encode;
use super::profile::{self, check_cn, params, rfc3339, validity, CaOptions, LeafOptions, Profile};
use super::signer::{self, CaKey};
use super::{parse_pem_certs, CertError, KeyType, PrivateKey};
use crate::ids::RegistrationId;
use crate::pkcs11::{KeyUri, TokenKey};

/// A freshly issued certificate (and its key, when this tool generated it).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, when we made it (`None` for a signed CSR).
    pub key: Option<PrivateKey>,
    /// Leaf + intermediates above it (root excluded): what a device presents in TLS.
    pub chain_pem: String,
}

impl Issued {
    /// SHA-1 thumbprint of the certificate (40 uppercase hex digits).
    pub fn sha1_thumbprint(&self) -> String {
        super::sha1_thumbprint(&self.cert_der)
    }

    /// SHA-256 thumbprint of the certificate (64 uppercase hex digits).
    pub fn sha256_thumbprint(&self) -> String {
        super::sha256_thumbprint(&self.cert_der)
    }

    /// Every certificate of `chain_pem` as DER, leaf first.
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>, CertError> {
        parse_pem_certs(self.chain_pem.as_bytes())
    }
}

/// A CA (root or intermediate): its certificate, its key, its chain up to (excluding) the root.
pub struct Authority {
    issuer: Issuer<'static, CaKey>,
    issued: Issued,
    /// This CA and the intermediates above it, root excluded (empty for a root).
    chain_der: Vec<Vec<u8>>,
    chain_above_pem: String,
    subject: String,
    key_type: KeyType,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    path_len: Option<u32>,
    self_signed: bool,
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("subject", &self.subject)
            .field("key_type", &self.key_type)
            .field("not_after", &rfc3339(self.not_after))
            .field("path_len", &self.path_len)
            .field("key_uri", &self.key_uri())
            .field("key", &"[secret elided]")
            .finish()
    }
}

fn sign_err(subject: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |e| signer::sign_error(subject, e)
}

/// `PREFIX` + `suffix`, e.g. `certs/root` + `_cert.pem`.
pub(crate) fn prefixed(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Authority {
    /// Makes a self-signed root CA (critical CA:TRUE pathlen 1, keyCertSign + cRLSign, SKID).
    ///
    /// ```
    /// use iotc::cert::{Authority, CaOptions};
    /// let root = Authority::new_root(&CaOptions { cn: Some("My root".into()), ..Default::default() })?;
    /// assert!(root.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    /// # Ok::<(), iotc::cert::CertError>(())
    /// ```
    pub fn new_root(opts: &CaOptions) -> Result<Authority, CertError> {
        Self::make_root(opts, None)
    }

    /// Makes a self-signed root CA whose key is generated inside the PKCS#11 token `uri`
    /// names (sensitive, not extractable); the key never leaves the token.
    pub fn new_root_in_token(opts: &CaOptions, uri: &KeyUri) -> Result<Authority, CertError> {
        Self::make_root(opts, Some(uri))
    }

    /// A new key: in the token when `uri` is given, else in memory.
    fn new_ca_key(key_type: super::KeyType, uri: Option<&KeyUri>) -> Result<CaKey, CertError> {
        match uri {
            None => Ok(CaKey::File(key_type.generate()?)),
            Some(uri) => {
                let (key, public) = TokenKey::generate(uri, signer::token_type_of(key_type))?;
                Ok(CaKey::token(key, public, key_type))
            }
        }
    }

    fn make_root(opts: &CaOptions, uri: Option<&KeyUri>) -> Result<Authority, CertError> {
        let cn = opts.cn.as_deref().unwrap_or("iotc root CA");
        check_cn(cn)?;
        let v = validity(
            opts.days,
            profile::ROOT_DAYS,
            opts.not_before,
            opts.not_after,
            None,
        )?;
        let kp = Self::new_ca_key(opts.key_type, uri)?;
        let p = params(
            Profile::Root {
                path_len: opts.path_len.unwrap_or(1),
            },
            cn,
            opts.key_type,
            v,
        );
        let cert = p.self_signed(&kp).map_err(sign_err(cn))?;
        Self::assemble(cert.der().to_vec(), kp, opts.key_type, Vec::new())
    }

    /// Issues an intermediate CA below this one (pathlen 0 by default; validity clamped to
    /// this CA's notAfter).
    pub fn issue_intermediate(&self, opts: &CaOptions) -> Result<Authority, CertError> {
        self.make_intermediate(opts, None)
    }

    /// Issues an intermediate CA whose key is generated inside the PKCS#11 token `uri` names.
    pub fn issue_intermediate_in_token(
        &self,
        opts: &CaOptions,
        uri: &KeyUri,
    ) -> Result<Authority, CertError> {
        self.make_intermediate(opts, Some(uri))
    }

    fn make_intermediate(
        &self,
        opts: &CaOptions,
        uri: Option<&KeyUri>,
    ) -> Result<Authority, CertError> {
        self.ensure_can_issue()?;
        let cn = opts.cn.as_deref().unwrap_or("iotc intermediate CA");
        check_cn(cn)?;
        let wanted = opts.path_len.unwrap_or(0);
        if let Some(pl) = self.path_len {
            if u32::from(wanted) >= pl {
                return Err(CertError::PathLen {
                    subject: self.subject.clone(),
                    path_len: u8::try_from(pl).unwrap_or(u8::MAX),
                    wanted,
                });
            }
        }
        let v = validity(
            opts.days,
            profile::INTERMEDIATE_DAYS,
            opts.not_before,
            opts.not_after,
            Some(self.not_after),
        )?;
        let kp = Self::new_ca_key(opts.key_type, uri)?;
        let p = params(
            Profile::Intermediate { path_len: wanted },
            cn,
            opts.key_type,
            v,
        );
        let cert = p.signed_by(&kp, &self.issuer).map_err(sign_err(cn))?;
        Self::assemble(
            cert.der().to_vec(),
            kp,
            opts.key_type,
            self.chain_der.clone(),
        )
    }

    /// Issues a device certificate: CN = the registration id, clientAuth, new key.
    ///
    /// ```
    /// use iotc::cert::{Authority, CaOptions, LeafOptions};
    /// use iotc::ids::RegistrationId;
    /// let root = Authority::new_root(&CaOptions::default())?;
    /// let dev = root.issue_device(&RegistrationId::new("dev:01")?, &LeafOptions::default())?;
    /// assert!(dev.key.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn issue_device(
        &self,
        id: &RegistrationId,
        opts: &LeafOptions,
    ) -> Result<Issued, CertError> {
        let v = self.leaf_validity(opts, profile::DEVICE_DAYS)?;
        self.issue_with_new_key(Profile::Device, id.as_str(), opts.key_type, v, Vec::new())
    }

    /// Issues a device certificate for a key generated inside the PKCS#11 token `uri` names
    /// (sensitive, not extractable): the device's key never exists outside the token, and
    /// `Issued::key` is `None`. `opts.key_type` is the type of the key made.
    pub fn issue_device_in_token(
        &self,
        id: &RegistrationId,
        opts: &LeafOptions,
        uri: &KeyUri,
    ) -> Result<Issued, CertError> {
        let v = self.leaf_validity(opts, profile::DEVICE_DAYS)?;
        let key = Self::new_ca_key(opts.key_type, Some(uri))?;
        let p = params(Profile::Device, id.as_str(), opts.key_type, v);
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(sign_err(id.as_str()))?;
        Ok(self.leaf(cert.der().to_vec(), None))
    }

    /// Issues a verification (proof-of-possession) certificate: CN = the code.
    pub fn issue_verification(&self, code: &str, opts: &LeafOptions) -> Result<Issued, CertError> {
        check_cn(code)?;
        if let Some(c) = code.chars().find(|c| c.is_whitespace()) {
            return Err(CertError::InvalidName {
                cn: code.to_owned(),
                reason: format!("a verification code has no whitespace (found {c:?})"),
            });
        }
        let v = self.leaf_validity(opts, profile::VERIFICATION_DAYS)?;
        self.issue_with_new_key(Profile::Verification, code, opts.key_type, v, Vec::new())
    }

    /// Issues a TLS server certificate (serverAuth) for these DNS names and IP addresses.
    pub fn issue_server(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
        opts: &LeafOptions,
    ) -> Result<Issued, CertError> {
        let cn = dns_names.first().copied().unwrap_or("iotc server");
        check_cn(cn)?;
        let mut sans = Vec::new();
        for name in dns_names {
            let ia5 = (*name)
                .to_owned()
                .try_into()
                .map_err(|_| CertError::InvalidName {
                    cn: (*name).to_owned(),
                    reason: "not a valid DNS name".into(),
                })?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let v = self.leaf_validity(opts, profile::DEVICE_DAYS)?;
        self.issue_with_new_key(Profile::Server, cn, opts.key_type, v, sans)
    }

    /// Signs a certificate signing request (PEM or DER) with the device profile. The CSR's
    /// signature is checked and its CN must be a valid registration id; the key stays with
    /// the requester (`Issued::key` is `None`).
    pub fn sign_csr(&self, csr: &[u8], opts: &LeafOptions) -> Result<Issued, CertError> {
        let req = super::csr::read_csr(csr)?;
        let v = self.leaf_validity(opts, profile::DEVICE_DAYS)?;
        let p = params(Profile::Device, req.id.as_str(), req.key_type, v);
        let cert = p
            .signed_by(&req.spki, &self.issuer)
            .map_err(sign_err(req.id.as_str()))?;
        Ok(self.leaf(cert.der().to_vec(), None))
    }

    /// Builds an authority from PEM text: the CA certificate, its PKCS#8 key (encrypted keys
    /// need `password`) and optionally its chain (intermediates above it; a root in it is
    /// ignored). Refuses a certificate that is not a CA, lacks keyCertSign, or whose key
    /// does not match.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        password: Option<&str>,
        chain_pem: Option<&str>,
    ) -> Result<Authority, CertError> {
        let cert_der = first_cert(cert_pem)?;
        let (key, kp) = PrivateKey::from_pem(key_pem, password)?;
        let above = chain_above(&cert_der, chain_pem)?;
        Self::assemble(cert_der, CaKey::File(kp), key.key_type(), above)
    }

    /// Builds an authority from its certificate PEM and the token key `uri` names (plus its
    /// chain, as [`from_pem`](Self::from_pem)). The key is checked against the certificate
    /// with a signature made in the token, which also proves the login works.
    pub fn from_token(
        cert_pem: &str,
        uri: &KeyUri,
        chain_pem: Option<&str>,
    ) -> Result<Authority, CertError> {
        let cert_der = first_cert(cert_pem)?;
        let c = parse_cert(&cert_der)?;
        let subject = subject_of(&c);
        let public = c.public_key().subject_public_key.data.to_vec();
        let cert_type = KeyType::from_spki(c.public_key().raw);
        drop(c);
        let key = TokenKey::open(uri)?;
        let token_type = signer::key_type_of(key.key_type());
        let key_type = match (cert_type, token_type) {
            (Some(a), Some(b)) if a == b => a,
            _ => {
                return Err(CertError::Token(crate::pkcs11::Pkcs11Error::KeyMismatch {
                    key: uri.describe(),
                    subject,
                }))
            }
        };
        key.check_public_key(&public, &subject)?;
        let above = chain_above(&cert_der, chain_pem)?;
        Self::assemble(
            cert_der,
            CaKey::token(key, public, key_type),
            key_type,
            above,
        )
    }

    /// Loads `PREFIX_cert.pem` and its key (+ `PREFIX_fullchain.pem` when present): the key
    /// is in a token when `PREFIX_key.uri` exists (its one line is the key's PKCS#11 URI),
    /// else in `PREFIX_key.pem` (encrypted keys need `password`). Both at once is refused.
    pub fn load(prefix: &Path, password: Option<&str>) -> Result<Authority, CertError> {
        let uri_path = prefixed(prefix, "_key.uri");
        let pem_path = prefixed(prefix, "_key.pem");
        if uri_path.exists() {
            if pem_path.exists() {
                return Err(CertError::AmbiguousKey {
                    pem: pem_path,
                    uri: uri_path,
                });
            }
            let uri = crate::pkcs11::read_uri_file(&uri_path)?;
            return Self::load_with_key_uri(prefix, &uri);
        }
        let (cert, chain) = read_cert_and_chain(prefix)?;
        let key = read_text(pem_path)?;
        Self::from_pem(&cert, key.as_str(), password, chain.as_deref())
    }

    /// Loads `PREFIX_cert.pem` (+ `PREFIX_fullchain.pem`) with the token key `uri` names,
    /// whatever key file sits next to it (`--ca-key URI`).
    pub fn load_with_key_uri(prefix: &Path, uri: &KeyUri) -> Result<Authority, CertError> {
        let (cert, chain) = read_cert_and_chain(prefix)?;
        Self::from_token(&cert, uri, chain.as_deref())
    }

    /// The PKCS#11 URI of the CA key when it lives in a token (no PIN in it).
    pub fn key_uri(&self) -> Option<&KeyUri> {
        self.issuer.key().token_key().map(|k| k.uri())
    }

    /// The token key itself, when the CA key lives in a token (e.g. to cap its sessions).
    pub fn token_key(&self) -> Option<&TokenKey> {
        self.issuer.key().token_key().map(|k| k.as_ref())
    }
}

fn read_text(path: PathBuf) -> Result<String, CertError> {
    std::fs::read_to_string(&path).map_err(|error| CertError::Read { path, error })
}

/// `PREFIX_cert.pem` and, when present, `PREFIX_fullchain.pem`.
fn read_cert_and_chain(prefix: &Path) -> Result<(String, Option<String>), CertError> {
    let cert = read_text(prefixed(prefix, "_cert.pem"))?;
    let chain_path = prefixed(prefix, "_fullchain.pem");
    let chain = if chain_path.exists() {
        Some(read_text(chain_path)?)
    } else {
        None
    };
    Ok((cert, chain))
}

fn first_cert(cert_pem: &str) -> Result<Vec<u8>, CertError> {
    parse_pem_certs(cert_pem.as_bytes())?
        .into_iter()
        .next()
        .ok_or_else(|| CertError::ParsePem {
            what: "CA certificate".into(),
            reason: "no CERTIFICATE block".into(),
        })
}

/// The intermediates of `chain_pem` above `cert_der` (itself and any root left out).
fn chain_above(cert_der: &[u8], chain_pem: Option<&str>) -> Result<Vec<Vec<u8>>, CertError> {
    let mut above = Vec::new();
    if let Some(chain) = chain_pem {
        for der in parse_pem_certs(chain.as_bytes())? {
            if der == cert_der {
                continue;
            }
            let c = parse_cert(&der)?;
            if c.subject().as_raw() == c.issuer().as_raw() {
                continue; // a root: never part of a presented chain
            }
            above.push(der);
        }
    }
    Ok(above)
}

impl Authority {
    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.issued.cert_der
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.issued.cert_pem
    }

    /// The CA as an [`Issued`] (certificate, key, chain), e.g. to write it with
    /// [`write_bundle`](super::write_bundle).
    pub fn issued(&self) -> &Issued {
        &self.issued
    }

    /// This CA and the intermediates above it, DER, root excluded (empty for a root).
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain_der
    }

    /// The CA's subject, e.g. `CN=iotc root CA`.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The CA's key type.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The CA's notAfter.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Whether the CA is self-signed (a root).
    pub fn is_root(&self) -> bool {
        self.self_signed
    }

    fn assemble(
        cert_der: Vec<u8>,
        kp: CaKey,
        key_type: KeyType,
        above: Vec<Vec<u8>>,
    ) -> Result<Authority, CertError> {
        use rcgen::PublicKeyData;
        let c = parse_cert(&cert_der)?;
        let subject = subject_of(&c);
        if c.public_key().raw != kp.subject_public_key_info().as_slice() {
            return Err(CertError::KeyMismatch { subject });
        }
        let not_a_ca = |reason: &str| CertError::NotACa {
            subject: subject.clone(),
            reason: reason.to_owned(),
        };
        let bc = c
            .basic_constraints()
            .map_err(|_| not_a_ca("duplicate basicConstraints"))?
            .map(|e| e.value.clone());
        let path_len = match bc {
            Some(bc) if bc.ca => bc.path_len_constraint,
            _ => return Err(not_a_ca("basicConstraints has no CA:TRUE")),
        };
        if let Ok(Some(ku)) = c.key_usage() {
            if !ku.value.key_cert_sign() {
                return Err(not_a_ca("its keyUsage lacks keyCertSign"));
            }
        }
        let self_signed = c.subject().as_raw() == c.issuer().as_raw();
        let not_before = c.validity().not_before.to_datetime();
        let not_after = c.validity().not_after.to_datetime();
        drop(c);
        let issuer = Issuer::from_ca_cert_der(&cert_der.as_slice().into(), kp).map_err(|e| {
            CertError::ParseCertificate {
                reason: e.to_string(),
            }
        })?;
        // A token key has no bytes to hand out; `issued.key` stays empty.
        let key = match issuer.key() {
            CaKey::File(kp) => Some(PrivateKey::from_key_pair(kp, key_type)),
            CaKey::Token { .. } => None,
        };
        let mut chain_der = Vec::new();
        if !self_signed {
            chain_der.push(cert_der.clone());
            chain_der.extend(above);
        }
        let chain_above_pem: String = chain_der
            .iter()
            .map(|d| pem_encode("CERTIFICATE", d))
            .collect();
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        let own_chain = if self_signed {
            cert_pem.clone()
        } else {
            chain_above_pem.clone()
        };
        Ok(Authority {
            issuer,
            issued: Issued {
                cert_der,
                cert_pem,
                key,
                chain_pem: own_chain,
            },
            chain_der,
            chain_above_pem,
            subject,
            key_type,
            not_before,
            not_after,
            path_len,
            self_signed,
        })
    }

    /// Refuses to issue with a CA outside its validity period (every `issue_*` calls it; a
    /// batch calls it once up front).
    pub fn ensure_can_issue(&self) -> Result<(), CertError> {
        let now = OffsetDateTime::now_utc();
        if now > self.not_after {
            return Err(CertError::CaExpired {
                subject: self.subject.clone(),
                not_after: rfc3339(self.not_after),
            });
        }
        if now < self.not_before {
            return Err(CertError::CaNotYetValid {
                subject: self.subject.clone(),
                not_before: rfc3339(self.not_before),
            });
        }
        Ok(())
    }

    fn leaf_validity(
        &self,
        opts: &LeafOptions,
        default_days: u32,
    ) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
        self.ensure_can_issue()?;
        validity(
            opts.days,
            default_days,
            opts.not_before,
            opts.not_after,
            Some(self.not_after),
        )
    }

    fn issue_with_new_key(
        &self,
        profile: Profile,
        cn: &str,
        key_type: KeyType,
        v: (OffsetDateTime, OffsetDateTime),
        sans: Vec<SanType>,
    ) -> Result<Issued, CertError> {
        let kp = key_type.generate()?;
        let mut p: CertificateParams = params(profile, cn, key_type, v);
        p.subject_alt_names = sans;
        let cert = p.signed_by(&kp, &self.issuer).map_err(sign_err(cn))?;
        Ok(self.leaf(
            cert.der().to_vec(),
            Some(PrivateKey::from_key_pair(&kp, key_type)),
        ))
    }

    fn leaf(&self, cert_der: Vec<u8>, key: Option<PrivateKey>) -> Issued {
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        let mut chain_pem = String::with_capacity(cert_pem.len() + self.chain_above_pem.len());
        chain_pem.push_str(&cert_pem);
        chain_pem.push_str(&self.chain_above_pem);
        Issued {
            cert_der,
            cert_pem,
            key,
            chain_pem,
        }
    }
}
