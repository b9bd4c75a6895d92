//! Reading certificates: PEM parsing, thumbprints, the IoT Central certificate string, and
//! [`inspect`], which lists everything a person checks (subject, issuer, serial, validity,
//! key type, every extension, SHA-1 and SHA-256 thumbprints).

use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use sha1::Digest;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::profile::rfc3339;
use super::{CertError, KeyType};

/// Every CERTIFICATE block of PEM text, as DER (other blocks, e.g. keys, are skipped).
/// Empty input, corrupt base64 or no certificate at all is an error.
pub fn parse_pem_certs(text: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    let mut out = Vec::new();
    for item in CertificateDer::pem_slice_iter(text) {
        let der = item.map_err(|e| CertError::ParsePem {
            what: "PEM text".into(),
            reason: e.to_string(),
        })?;
        out.push(der.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(CertError::ParsePem {
            what: "PEM text".into(),
            reason: if text.iter().all(|b| b.is_ascii_whitespace()) {
                "it is empty".into()
            } else {
                "no CERTIFICATE block found".into()
            },
        });
    }
    Ok(out)
}

/// Reads certificates from file contents that may be PEM (any number of blocks) or a single
/// DER certificate.
pub fn read_certs(bytes: &[u8]) -> Result<Vec<Vec<u8>>, CertError> {
    if bytes.first() == Some(&0x30) {
        parse_cert(bytes)?;
        return Ok(vec![bytes.to_vec()]);
    }
    parse_pem_certs(bytes)
}

fn hex_upper(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// SHA-1 thumbprint (what IoT Central and the DPS portal show): 40 uppercase hex, no colons.
pub fn sha1_thumbprint(der: &[u8]) -> String {
    hex_upper(&sha1::Sha1::digest(der))
}

/// SHA-256 thumbprint (what IoT Hub shows): 64 uppercase hex, no colons.
pub fn sha256_thumbprint(der: &[u8]) -> String {
    hex_upper(&sha2::Sha256::digest(der))
}

/// The certificate string the IoT Central certificate APIs take: base64 of the PEM file
/// text, exactly what the docs' `convert.js` computes (`readFileSync(f).toString('base64')`).
pub fn certificate_string(pem_text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pem_text.as_bytes())
}

/// Decodes a certificate string: base64 of PEM text (what we send) or base64 of DER (what
/// some clients send). Returns the first (leaf) certificate, DER.
pub fn decode_certificate_string(s: &str) -> Result<Vec<u8>, CertError> {
    let bad = |reason: String| CertError::CertificateString { reason };
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(bad("it is empty".into()));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let der = if bytes.first() == Some(&0x30) {
        bytes
    } else {
        parse_pem_certs(&bytes)
            .map_err(|e| bad(format!("neither DER nor PEM: {e}")))?
            .into_iter()
            .next()
            .ok_or_else(|| bad("no certificate".into()))?
    };
    parse_cert(&der).map_err(|e| bad(e.to_string()))?;
    Ok(der)
}

/// Parses one DER certificate (trailing bytes are an error).
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, CertError> {
    match X509Certificate::from_der(der) {
        Ok(([], c)) => Ok(c),
        Ok(_) => Err(CertError::ParseCertificate {
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(CertError::ParseCertificate {
            reason: e.to_string(),
        }),
    }
}

/// `CN=...` style subject text.
pub(crate) fn subject_of(c: &X509Certificate<'_>) -> String {
    c.subject().to_string()
}

/// One extension of a certificate, in words.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionInfo {
    /// Short name (`basicConstraints`, `keyUsage`, ...) or the OID.
    pub name: String,
    /// Dotted OID.
    pub oid: String,
    /// Whether it is marked critical.
    pub critical: bool,
    /// Its value in words (`CA:TRUE, pathlen:1`, `digitalSignature, keyEncipherment`, ...).
    pub value: String,
}

/// What [`inspect`] tells about a certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// Subject, e.g. `CN=dev-01`.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// The subject CN, when there is one.
    pub common_name: Option<String>,
    /// Serial number, uppercase hex.
    pub serial: String,
    /// notBefore, RFC 3339.
    pub not_before: String,
    /// notAfter, RFC 3339.
    pub not_after: String,
    /// `ec-p256`, `rsa-2048`, ... or a description of an unsupported key.
    pub key_type: String,
    /// Signature algorithm (`ecdsa-with-SHA256`, ...).
    pub signature_algorithm: String,
    /// Whether basicConstraints says CA:TRUE.
    pub is_ca: bool,
    /// Whether subject == issuer.
    pub self_issued: bool,
    /// Every extension, in certificate order.
    pub extensions: Vec<ExtensionInfo>,
    /// SHA-1 thumbprint, 40 uppercase hex.
    pub sha1_thumbprint: String,
    /// SHA-256 thumbprint, 64 uppercase hex.
    pub sha256_thumbprint: String,
}

fn oid_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_owned)
        .unwrap_or_else(|_| oid.to_id_string())
}

fn general_name(g: &GeneralName<'_>) -> String {
    match g {
        GeneralName::DNSName(s) => format!("DNS:{s}"),
        GeneralName::RFC822Name(s) => format!("email:{s}"),
        GeneralName::URI(s) => format!("URI:{s}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!("IP:{}", std::net::Ipv4Addr::from([b[0], b[1], b[2], b[3]])),
            16 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                format!("IP:{}", std::net::Ipv6Addr::from(a))
            }
            _ => format!("IP:{}", hex_upper(b)),
        },
        other => format!("{other:?}"),
    }
}

/// The keyUsage bits that are set, by their RFC 5280 names, comma-separated.
pub(crate) fn key_usage_names(ku: &x509_parser::extensions::KeyUsage) -> String {
    [
        (ku.digital_signature(), "digitalSignature"),
        (ku.non_repudiation(), "nonRepudiation"),
        (ku.key_encipherment(), "keyEncipherment"),
        (ku.data_encipherment(), "dataEncipherment"),
        (ku.key_agreement(), "keyAgreement"),
        (ku.key_cert_sign(), "keyCertSign"),
        (ku.crl_sign(), "cRLSign"),
        (ku.encipher_only(), "encipherOnly"),
        (ku.decipher_only(), "decipherOnly"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join(", ")
}

/// The extendedKeyUsage purposes, by name (unknown ones as dotted OIDs), comma-separated.
pub(crate) fn eku_names(eku: &x509_parser::extensions::ExtendedKeyUsage<'_>) -> String {
    let mut v = Vec::new();
    for (on, n) in [
        (eku.any, "anyExtendedKeyUsage"),
        (eku.server_auth, "serverAuth"),
        (eku.client_auth, "clientAuth"),
        (eku.code_signing, "codeSigning"),
        (eku.email_protection, "emailProtection"),
        (eku.time_stamping, "timeStamping"),
        (eku.ocsp_signing, "OCSPSigning"),
    ] {
        if on {
            v.push(n.to_owned());
        }
    }
    v.extend(eku.other.iter().map(|o| o.to_id_string()));
    v.join(", ")
}

fn extension_value(ext: &x509_parser::extensions::X509Extension<'_>) -> String {
    match ext.parsed_extension() {
        ParsedExtension::BasicConstraints(bc) => match (bc.ca, bc.path_len_constraint) {
            (true, Some(n)) => format!("CA:TRUE, pathlen:{n}"),
            (true, None) => "CA:TRUE".into(),
            (false, _) => "CA:FALSE".into(),
        },
        ParsedExtension::KeyUsage(ku) => key_usage_names(ku),
        ParsedExtension::ExtendedKeyUsage(eku) => eku_names(eku),
        ParsedExtension::SubjectKeyIdentifier(k) => hex_upper(k.0),
        ParsedExtension::AuthorityKeyIdentifier(a) => match &a.key_identifier {
            Some(k) => format!("keyid:{}", hex_upper(k.0)),
            None => "(no key identifier)".into(),
        },
        ParsedExtension::SubjectAlternativeName(san) => san
            .general_names
            .iter()
            .map(general_name)
            .collect::<Vec<_>>()
            .join(", "),
        _ => format!("(DER) {}", hex_upper(ext.value)),
    }
}

/// Describes a certificate (DER).
pub fn inspect(der: &[u8]) -> Result<CertInfo, CertError> {
    let c = parse_cert(der)?;
    let spki = c.public_key();
    let key_type = match KeyType::from_spki(spki.raw) {
        Some(k) => k.as_str().to_owned(),
        None => oid_name(&spki.algorithm.algorithm),
    };
    let is_ca = matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    let common_name = c
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let info = CertInfo {
        subject: subject_of(&c),
        issuer: c.issuer().to_string(),
        common_name,
        serial: hex_upper(c.raw_serial()),
        not_before: rfc3339(c.validity().not_before.to_datetime()),
        not_after: rfc3339(c.validity().not_after.to_datetime()),
        key_type,
        signature_algorithm: oid_name(&c.signature_algorithm.algorithm),
        is_ca,
        self_issued: c.subject().as_raw() == c.issuer().as_raw(),
        extensions: c
            .extensions()
            .iter()
            .map(|e| ExtensionInfo {
                name: oid_name(&e.oid),
                oid: e.oid.to_id_string(),
                critical: e.critical,
                value: extension_value(e),
            })
            .collect(),
        sha1_thumbprint: sha1_thumbprint(der),
        sha256_thumbprint: sha256_thumbprint(der),
    };
    Ok(info)
}
