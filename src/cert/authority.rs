//! Certificate authorities: make a root, issue intermediates and leaves, load a CA from files.
//!
//! An [`Authority`] is a CA certificate with its private key and the chain of intermediates
//! above it (the root is never part of a chain: a device presents leaf + intermediates and the
//! service holds the root). Everything it issues comes back as an [`Issued`]: certificate,
//! key (when we generated it) and the chain PEM a device presents in TLS.

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
use time::OffsetDateTime;

use super::inspect::{parse_cert, subject_of};
use super::key::pem_encode;
use super::profile::{self, check_cn, params, rfc3339, validity, CaOptions, LeafOptions, Profile};
use super::{parse_pem_certs, CertError, DeviceCsr, KeyType, PrivateKey};
use crate::ids::RegistrationId;

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
    issuer: Issuer<'static, KeyPair>,
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
            .field("key", &"[secret elided]")
            .finish()
    }
}

fn sign_err(subject: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |e| CertError::Sign {
        subject: subject.to_owned(),
        reason: e.to_string(),
    }
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
        let cn = opts.cn.as_deref().unwrap_or("iotc root CA");
        check_cn(cn)?;
        let v = validity(
            opts.days,
            profile::ROOT_DAYS,
            opts.not_before,
            opts.not_after,
            None,
        )?;
        let kp = opts.key_type.generate()?;
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
        let kp = opts.key_type.generate()?;
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

    /// Signs a certificate signing request (PEM or DER) with the device profile. The CSR is
    /// checked as [`DeviceCsr::parse`] says (signature, key type, one valid CN, no CA request);
    /// the key stays with the requester (`Issued::key` is `None`).
    pub fn sign_csr(&self, csr: &[u8], opts: &LeafOptions) -> Result<Issued, CertError> {
        self.sign_device_csr(&DeviceCsr::parse(csr)?, opts)
    }

    /// Signs a checked CSR with the device profile: CN = its CN, its public key, nothing else
    /// of what it asks for ([`DeviceCsr::not_copied`]).
    pub fn sign_device_csr(
        &self,
        csr: &DeviceCsr,
        opts: &LeafOptions,
    ) -> Result<Issued, CertError> {
        let v = self.leaf_validity(opts, profile::DEVICE_DAYS)?;
        let id = csr.id().as_str();
        let p = params(Profile::Device, id, csr.key_type(), v);
        let cert = p
            .signed_by(&csr.spki()?, &self.issuer)
            .map_err(sign_err(id))?;
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
        let certs = parse_pem_certs(cert_pem.as_bytes())?;
        let cert_der = certs
            .into_iter()
            .next()
            .ok_or_else(|| CertError::ParsePem {
                what: "CA certificate".into(),
                reason: "no CERTIFICATE block".into(),
            })?;
        let (key, kp) = PrivateKey::from_pem(key_pem, password)?;
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
        Self::assemble(cert_der, kp, key.key_type(), above)
    }

    /// Loads `PREFIX_cert.pem` and `PREFIX_key.pem` (+ `PREFIX_fullchain.pem` when present).
    pub fn load(prefix: &Path, password: Option<&str>) -> Result<Authority, CertError> {
        let read = |path: PathBuf| {
            std::fs::read_to_string(&path).map_err(|error| CertError::Read { path, error })
        };
        let cert = read(prefixed(prefix, "_cert.pem"))?;
        let key = read(prefixed(prefix, "_key.pem"))?;
        let chain_path = prefixed(prefix, "_fullchain.pem");
        let chain = if chain_path.exists() {
            Some(read(chain_path)?)
        } else {
            None
        };
        Self::from_pem(&cert, key.as_str(), password, chain.as_deref())
    }

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
        kp: KeyPair,
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
        let key = PrivateKey::from_key_pair(issuer.key(), key_type);
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
                key: Some(key),
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
