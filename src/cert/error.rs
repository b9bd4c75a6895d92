//! The errors of the cert module, one enum per boundary.
//!
//! [`CertError`] covers making, loading and writing certificates; [`ChainError`] covers
//! verification (the chain, and the purpose of the certificate), where the reason (expired,
//! wrong issuer, issuer not a CA, extendedKeyUsage lacks clientAuth, ...) *is* the answer the
//! caller wants; [`ChainError::code`] names each reason for scripts. Every message names the certificate or file concerned and fits on one
//! line; no message ever contains key material or a password.

use std::path::PathBuf;

use super::key::KeyType;
use super::purpose::Purpose;

/// Why making, loading or writing a certificate failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Key generation failed in the crypto library.
    #[error("could not generate a {key_type} key: {reason}")]
    GenerateKey {
        /// The requested key type.
        key_type: KeyType,
        /// The library's reason.
        reason: String,
    },
    /// Signing a certificate failed.
    #[error("could not sign the certificate for {subject}: {reason}")]
    Sign {
        /// The subject of the certificate being issued.
        subject: String,
        /// The library's reason.
        reason: String,
    },
    /// A common name (or verification code) is unusable.
    #[error("invalid common name {cn:?}: {reason}")]
    InvalidName {
        /// The refused name.
        cn: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A registration id breaks the DPS rule (it is refused, never rewritten).
    #[error(transparent)]
    InvalidRegistrationId(#[from] crate::ids::InvalidId),
    /// The validity period asked for is impossible.
    #[error("invalid validity: {reason}")]
    Validity {
        /// What is wrong with it.
        reason: String,
    },
    /// Text that should hold PEM certificates holds none, or a corrupt block.
    #[error("could not read certificates from {what}: {reason}")]
    ParsePem {
        /// Which input (a file name or "input").
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// DER bytes are not a certificate.
    #[error("not a valid X.509 certificate: {reason}")]
    ParseCertificate {
        /// The parser's reason.
        reason: String,
    },
    /// A private key could not be read.
    #[error("could not read the private key: {reason}")]
    ParseKey {
        /// What is wrong (never the key itself).
        reason: String,
    },
    /// The private key is encrypted and no password was given.
    #[error("the private key is encrypted: a password is required")]
    PasswordRequired,
    /// Decrypting the private key failed: wrong password (or a corrupt key).
    #[error("could not decrypt the private key: wrong password or corrupt key")]
    DecryptKey,
    /// Encrypting a private key failed.
    #[error("could not encrypt the private key: {reason}")]
    EncryptKey {
        /// The library's reason.
        reason: String,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate {subject}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// A certificate used as a CA cannot sign certificates.
    #[error("{subject} cannot act as a CA: {reason}")]
    NotACa {
        /// The certificate's subject.
        subject: String,
        /// Which requirement it fails (CA:TRUE, keyCertSign).
        reason: String,
    },
    /// The CA has expired.
    #[error("the CA {subject} expired on {not_after}")]
    CaExpired {
        /// The CA's subject.
        subject: String,
        /// Its notAfter (RFC 3339).
        not_after: String,
    },
    /// The CA is not valid yet.
    #[error("the CA {subject} is not valid before {not_before}")]
    CaNotYetValid {
        /// The CA's subject.
        subject: String,
        /// Its notBefore (RFC 3339).
        not_before: String,
    },
    /// The CA's path length constraint forbids another CA below it.
    #[error("the CA {subject} has pathlen {path_len} and cannot issue an intermediate CA with pathlen {wanted}")]
    PathLen {
        /// The CA's subject.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u8,
        /// The pathlen asked for the new CA.
        wanted: u8,
    },
    /// A certificate signing request was refused.
    #[error("certificate signing request refused: {reason}")]
    Csr {
        /// Why.
        reason: String,
    },
    /// Building the PKCS#12 file failed.
    #[error("could not build the PKCS#12 file: {reason}")]
    Pkcs12 {
        /// The library's reason.
        reason: String,
    },
    /// The certificate string is not base64 of a PEM or DER certificate.
    #[error("invalid certificate string: {reason}")]
    CertificateString {
        /// What is wrong.
        reason: String,
    },
    /// A bundle name cannot be used as a file name.
    #[error("invalid bundle name {name:?}: {reason}")]
    InvalidBundleName {
        /// The refused name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A PKCS#12 file or an encrypted key was asked for without a password.
    #[error("{what} needs a password")]
    PasswordNeeded {
        /// What needs it.
        what: String,
    },
    /// An output file exists and overwriting was not allowed.
    #[error("{} already exists; refusing to overwrite it (use --force)", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },
    /// Reading a file failed.
    #[error("could not read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so the reason stays on one line).
        error: std::io::Error,
    },
    /// A PKCS#11 token refused or failed (module, token, PIN, key, signature).
    #[error(transparent)]
    Token(#[from] crate::pkcs11::Pkcs11Error),
    /// Both a key file and a key URI sit next to a CA certificate.
    #[error("both {} and {} exist: a CA key is in a file or in a token, not both; remove the stale one", pem.display(), uri.display())]
    AmbiguousKey {
        /// `PREFIX_key.pem`.
        pem: PathBuf,
        /// `PREFIX_key.uri`.
        uri: PathBuf,
    },
    /// Writing a file failed.
    #[error("could not write {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so the reason stays on one line).
        error: std::io::Error,
    },
}

/// Why a certificate is not valid: its chain, or its fitness for a [`Purpose`]. Each variant
/// names the certificate concerned.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A certificate could not be parsed.
    #[error("not a valid X.509 certificate ({what}): {reason}")]
    Parse {
        /// Which certificate (leaf, untrusted #n, anchor #n).
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// A certificate has expired.
    #[error("certificate expired: {subject} was valid until {not_after}")]
    Expired {
        /// The expired certificate.
        subject: String,
        /// Its notAfter (RFC 3339).
        not_after: String,
    },
    /// A certificate is not valid yet.
    #[error("certificate not yet valid: {subject} is valid from {not_before}")]
    NotYetValid {
        /// The certificate.
        subject: String,
        /// Its notBefore (RFC 3339).
        not_before: String,
    },
    /// No given certificate has the issuer's name.
    #[error("unknown issuer: {subject} was issued by {issuer}, which is not among the given CA or chain certificates")]
    UnknownIssuer {
        /// The certificate whose issuer is missing.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// A certificate with the issuer's name exists but holds a different key (another CA with
    /// the same name).
    #[error("wrong issuer: {subject} names {issuer} as issuer, but the given certificate of that name has a different key")]
    WrongIssuer {
        /// The certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
    },
    /// The issuer is not a CA (no CA:TRUE or no keyCertSign).
    #[error("issuer not a CA: {subject} {reason}")]
    IssuerNotCa {
        /// The issuer certificate.
        subject: String,
        /// What it lacks.
        reason: String,
    },
    /// The signature does not verify with the issuer's key.
    #[error("bad signature: the signature of {subject} does not verify with the key of {issuer}")]
    BadSignature {
        /// The certificate whose signature fails.
        subject: String,
        /// The issuer whose key was used.
        issuer: String,
    },
    /// A CA's pathLenConstraint is exceeded.
    #[error("path length exceeded: {subject} allows {path_len} intermediate CA(s) below it, the chain has {found}")]
    PathLenExceeded {
        /// The constraining CA.
        subject: String,
        /// Its pathLenConstraint.
        path_len: u32,
        /// How many CAs the chain puts below it.
        found: u32,
    },
    /// The chain is longer than any sane chain (a loop).
    #[error("chain too long: more than {max} certificates above {subject}")]
    TooLong {
        /// The leaf.
        subject: String,
        /// The limit.
        max: usize,
    },
    /// A device or verification certificate says CA:TRUE.
    #[error("CA:TRUE on a {purpose} certificate: {subject} has basicConstraints CA:TRUE, but a {purpose} certificate is an end entity (CA:FALSE)")]
    CaOnEndEntity {
        /// The certificate.
        subject: String,
        /// The purpose it was checked for.
        purpose: Purpose,
    },
    /// A device certificate whose extendedKeyUsage does not allow TLS client authentication.
    #[error("extendedKeyUsage lacks clientAuth: {subject} has {found}; a device authenticates to DPS as a TLS client and needs clientAuth (1.3.6.1.5.5.7.3.2)")]
    NoClientAuth {
        /// The certificate.
        subject: String,
        /// What it has instead ("extendedKeyUsage serverAuth", "no extendedKeyUsage").
        found: String,
    },
    /// A device certificate whose keyUsage does not allow signatures.
    #[error("keyUsage lacks digitalSignature: {subject} has keyUsage {found}; the device key signs the TLS handshake and needs digitalSignature")]
    NoDigitalSignature {
        /// The certificate.
        subject: String,
        /// The keyUsage bits it has.
        found: String,
    },
    /// A device or verification certificate without a subject CN.
    #[error("no common name: {subject} has no CN, but a {purpose} certificate's CN is its {}", purpose.cn_role())]
    NoCommonName {
        /// The certificate.
        subject: String,
        /// The purpose it was checked for.
        purpose: Purpose,
    },
    /// A device certificate whose CN cannot be a registration id (DPS takes the CN as the
    /// registration id, so such a device can never register).
    #[error("CN not a valid registration id: {cn:?}: {reason}")]
    CnNotRegistrationId {
        /// The CN.
        cn: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A verification certificate whose CN cannot be a verification code.
    #[error("CN not a verification code: {cn:?}: {reason}")]
    CnNotVerificationCode {
        /// The CN.
        cn: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A certificate checked as a CA cannot issue certificates.
    #[error("not a CA: {subject} {reason}")]
    NotCa {
        /// The certificate.
        subject: String,
        /// What it lacks (CA:TRUE, keyCertSign).
        reason: String,
    },
}

impl ChainError {
    /// A stable camelCase name of the reason, for `--output json` and scripts
    /// (`expired`, `unknownIssuer`, `noClientAuth`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            ChainError::Parse { .. } => "parse",
            ChainError::Expired { .. } => "expired",
            ChainError::NotYetValid { .. } => "notYetValid",
            ChainError::UnknownIssuer { .. } => "unknownIssuer",
            ChainError::WrongIssuer { .. } => "wrongIssuer",
            ChainError::IssuerNotCa { .. } => "issuerNotCa",
            ChainError::BadSignature { .. } => "badSignature",
            ChainError::PathLenExceeded { .. } => "pathLenExceeded",
            ChainError::TooLong { .. } => "tooLong",
            ChainError::CaOnEndEntity { .. } => "caOnEndEntity",
            ChainError::NoClientAuth { .. } => "noClientAuth",
            ChainError::NoDigitalSignature { .. } => "noDigitalSignature",
            ChainError::NoCommonName { .. } => "noCommonName",
            ChainError::CnNotRegistrationId { .. } => "cnNotRegistrationId",
            ChainError::CnNotVerificationCode { .. } => "cnNotVerificationCode",
            ChainError::NotCa { .. } => "notCa",
        }
    }
}
