//! `iotc cert ...`: make, sign, inspect and verify certificates from the command line.
//!
//! Thin over [`crate::cert`]: this file parses flags, resolves passwords (only from a file or
//! an environment variable, never a built-in default), checks every input before writing
//! anything, runs bulk device generation on all cores with a progress bar, and prints results.
//! Bad input ends with a one-line reason and exit code 2, and nothing is written.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{ArgGroup, Args, Subcommand};
use rayon::prelude::*;
use time::OffsetDateTime;

use super::output::OutputFormat;
use super::{CliError, CliResult, EXIT_OK, EXIT_PARTIAL};

mod bench;
use crate::cert::{
    self, bundle_paths, check_bundle_name, check_purpose, inspect, read_certs, verify_chain,
    write_bundle, Authority, CaOptions, CertInfo, ChainError, Issued, KeyType, LeafOptions,
    Purpose, WriteOptions, WrittenFiles,
};
use crate::ids::RegistrationId;
use crate::pkcs11::KeyUri;
use crate::secret::Secret;

/// Environment variable holding the password of new private keys and PFX files.
pub const KEY_PASSWORD_ENV: &str = "IOTC_KEY_PASSWORD";
/// Environment variable holding the password of an encrypted CA key.
pub const CA_PASSWORD_ENV: &str = "IOTC_CA_PASSWORD";

/// The passwords paragraph of the help of every command that makes a key.
macro_rules! password_help {
    () => {
        "Passwords: new keys are encrypted (PKCS#8, PBKDF2-SHA256 + AES-256-CBC) with the \
password read from --password-file FILE (first line) or from the IOTC_KEY_PASSWORD environment \
variable; --no-password writes an unencrypted key. There is no default password: one of the \
three is required. An encrypted CA key is opened with --ca-password-file FILE or IOTC_CA_PASSWORD."
    };
}

/// The token paragraph of the help of every command that signs with a CA.
macro_rules! token_help {
    () => {
        "CA keys in a PKCS#11 token (an HSM): when PREFIX_key.uri sits next to PREFIX_cert.pem, its one \
line is the key's RFC 7512 URI (pkcs11:token=LABEL;object=LABEL) and the token signs; --ca-key URI \
names the key directly. The module comes from ?module-path=... in the URI or IOTC_PKCS11_MODULE, the \
PIN from ?pin-source=file:PATH or IOTC_PKCS11_PIN (pin-value is refused: a PIN never goes on the \
command line)."
    };
}

/// Certificate commands.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a self-signed root CA (CA:TRUE pathlen 1, keyCertSign + cRLSign).
    #[command(
        after_help = concat!("Example:\n  iotc cert root --name root --out certs --password-file pw.txt --pfx\n  \
        iotc cert root --name test-root --cn \"Contoso test root\" --key-type ec-p384 --out certs --no-password\n\n\
        iotc cert root --name line-1 --key-store 'pkcs11:token=line-1;object=line-1-root' --out certs\n\n\
        Writes certs/root_cert.pem, certs/root_key.pem (0600), certs/root_fullchain.pem and, with --pfx, certs/root.pfx.\n\
        With --key-store URI the key is generated inside the PKCS#11 token (sensitive, not extractable):\n\
        only NAME_cert.pem, NAME_fullchain.pem and NAME_key.uri (the URI, no PIN) are written.", "\n\n", password_help!(), "\n\n", token_help!())
    )]
    Root(RootArgs),
    /// Make an intermediate CA signed by a CA (CA:TRUE pathlen 0, validity clamped to the issuer).
    #[command(
        after_help = concat!("Example:\n  iotc cert intermediate --name inter --ca certs/root --out certs --no-password\n\n\
        iotc cert intermediate --name line-1-ca --ca certs/root --key-store 'pkcs11:token=line-1;object=line-1-ca' --out certs\n\n\
        --ca certs/root reads certs/root_cert.pem and certs/root_key.pem or certs/root_key.uri (+ certs/root_fullchain.pem).\n\
        --key-store URI generates the new CA's key inside the token and writes NAME_key.uri instead of a key file.", "\n\n", password_help!(), "\n\n", token_help!())
    )]
    Intermediate(IntermediateArgs),
    /// Make device certificates (CN = registration id, clientAuth): one, or a batch on all cores.
    #[command(
        after_help = concat!("Examples:\n  iotc cert device sensor-0001 --ca certs/inter --out certs --no-password\n  \
        iotc cert device --count 10000 --prefix sensor- --ca certs/inter --out certs/devices --no-password\n  \
        iotc cert device --ids ids.txt --ca certs/root --out certs/devices --password-file pw.txt --pfx\n\n\
        A registration id is at most 64 letters, digits and - . _ : ending in a letter, digit or -;\n\
        an invalid id is refused, never rewritten. --count N numbers the ids from --start, zero-padded\n\
        to the digits of the last one (--count 1000: PREFIX0001..PREFIX1000); --ids FILE reads one id\n\
        per line (blank lines and # comments skipped). Each device gets <id>_cert.pem, <id>_key.pem,\n\
        <id>_fullchain.pem (device + intermediates: what it presents in TLS) and optionally <id>.pfx.\n\
        Exit code 1 when a batch finished with failed devices.\n\
        A single device's key can be generated inside a token with --key-store URI (writes <id>_key.uri;\n\
        `iotc dps register --key <id>_key.uri` then signs the TLS handshake in the token).", "\n\n", password_help!(), "\n\n", token_help!())
    )]
    Device(DeviceArgs),
    /// Make a verification (proof-of-possession) certificate: CN = the code, signed by that CA.
    #[command(
        after_help = concat!("Example:\n  iotc cert verification 1A2B3C4D5E --ca certs/inter --out certs --no-password\n  \
        iotc cert base64 certs/verification_cert.pem   # the string for the verify API\n\n\
        The CA may be a root or an intermediate: sign with the CA you uploaded.", "\n\n", password_help!(), "\n\n", token_help!())
    )]
    Verification(VerificationArgs),
    /// Sign a device's certificate signing request (the key stays on the device).
    #[command(
        after_help = concat!("Example:\n  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dev.key \\\n      \
        -subj /CN=dev-01 -out dev.csr\n  iotc cert sign-csr dev.csr --ca certs/inter --out certs\n\n\
        The CSR signature is checked and its CN must be a valid registration id. Writes <CN>_cert.pem and\n\
        <CN>_fullchain.pem.\n\n", token_help!())
    )]
    SignCsr(SignCsrArgs),
    /// Show subject, issuer, serial, validity, key type, extensions and thumbprints.
    #[command(
        after_help = "Example:\n  iotc cert inspect certs/dev-01_cert.pem\n  iotc --output json cert inspect certs/dev-01_fullchain.pem\n\n\
        Thumbprints are uppercase hex without colons: SHA-1 (what IoT Central and DPS show) and SHA-256.\n\
        JSON (--output json or --json): an array, one object per certificate in the file."
    )]
    Inspect(InspectArgs),
    /// Validate a certificate: its chain up to a trusted CA and its purpose; each failure is named.
    #[command(
        after_help = "Examples:\n  iotc cert verify certs/dev-01_fullchain.pem --ca-cert certs/root_cert.pem\n  \
        iotc cert verify certs/dev-01_cert.pem --ca-cert certs/root_cert.pem --untrusted certs/inter_cert.pem\n  \
        iotc cert verify certs/dev-01_cert.pem --ca-cert certs/inter_cert.pem   # a verified intermediate\n  \
        iotc cert verify certs/verification_cert.pem --ca-cert certs/inter_cert.pem --purpose verification\n  \
        iotc --output json cert verify certs/inter_cert.pem --ca-cert certs/root_cert.pem\n\n\
        The first certificate of FILE is the leaf; the others (and --untrusted) may be used as intermediates.\n\
        Purpose: without --purpose, a certificate with basicConstraints CA:TRUE is checked as `ca` and any\n\
        other as `device` (give --purpose verification for a proof-of-possession certificate).\n\
        Chain reasons: certificate expired, not yet valid, unknown/wrong issuer, issuer not a CA (no CA:TRUE\n\
        or no keyCertSign), bad signature, path length exceeded.\n\
        Purpose reasons: CA:TRUE on a device/verification certificate, extendedKeyUsage lacks clientAuth,\n\
        keyUsage lacks digitalSignature, no common name, CN not a valid registration id (the rule it\n\
        breaks is named), CN not a verification code, not a CA.\n\
        Every failure is listed; exit code 2. JSON (--output json): {file, valid, purpose, purposeSource,\n\
        path, failures: [{reason, message}]} on stdout, the error line on stderr."
    )]
    Verify(VerifyArgs),
    /// Print the certificate string IoT Central's certificate APIs expect (base64 of the PEM file).
    #[command(
        name = "base64",
        after_help = "Example:\n  iotc cert base64 certs/root_cert.pem\n\n\
        Replaces the docs' convert.js: prints base64 of the PEM file's bytes, the form the docs send\n\
        in enrollmentGroups/{id}/certificates/{entry} and .../verify. A DER file is encoded as DER.\n\
        JSON (--output json): {\"file\": ..., \"certificate\": \"<the string>\"}."
    )]
    Base64(Base64Args),
    /// Measure certificate throughput (in memory, written to disk, encrypted) against the openssl CLI.
    #[command(
        after_help = "Example:\n  iotc cert bench --count 10000 --key-type ec-p256\n  \
        iotc cert bench --count 2000 --key-type rsa-2048 --openssl-count 50\n\n\
        iotc cert bench --hsm-ca certs/line-1-ca --count 5000 --signatures 5000 --openssl-count 200\n\n\
        Build with --release for meaningful figures. Writes into a temporary folder and removes it.\n\
        --hsm-ca measures a CA whose key is in a PKCS#11 token (its module and PIN as for every token CA);\n\
        the openssl comparison needs libp11's engine (Debian: libengine-pkcs11-openssl)."
    )]
    Bench(BenchArgs),
}

/// Validity options.
#[derive(Debug, Clone, Args)]
pub struct ValidityArgs {
    /// Validity in days from now (defaults: root 3650, intermediate 1825, device 365, verification 30).
    #[arg(long, value_name = "N")]
    pub days: Option<u32>,
    /// Explicit notBefore (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_before: Option<OffsetDateTime>,
    /// Explicit notAfter (RFC 3339); overrides --days.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub not_after: Option<OffsetDateTime>,
}

/// Options of commands that write a new key.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("password").args(["no_password", "password_file"]).multiple(false)))]
pub struct OutputArgs {
    /// Output folder (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Key type.
    #[arg(long, value_name = "TYPE", default_value = "ec-p256")]
    pub key_type: KeyType,
    /// Write the private key unencrypted (still mode 0600).
    #[arg(long)]
    pub no_password: bool,
    /// File whose first line is the password for the key and the PFX (or set IOTC_KEY_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Also write NAME.pfx (PKCS#12 with key, certificate and chain; needs a password).
    #[arg(long)]
    pub pfx: bool,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// PBKDF2 iterations of the encrypted key.
    #[arg(long, value_name = "N", default_value_t = cert::DEFAULT_KDF_ITERATIONS)]
    pub kdf_iterations: u32,
    /// Print the result as JSON (the same as the global --output json).
    #[arg(long)]
    pub json: bool,
}

/// The signing CA.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// The CA: PREFIX_cert.pem and PREFIX_key.pem or PREFIX_key.uri (+ PREFIX_fullchain.pem
    /// when present).
    #[arg(long, value_name = "PREFIX")]
    pub ca: PathBuf,
    /// File whose first line is the CA key's password (or set IOTC_CA_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// The CA key in a PKCS#11 token (RFC 7512 URI), overriding PREFIX_key.pem / PREFIX_key.uri.
    #[arg(long, value_name = "URI", conflicts_with = "ca_password_file")]
    pub ca_key: Option<String>,
}

/// `iotc cert root`.
#[derive(Debug, Args)]
pub struct RootArgs {
    /// Bundle name: files are NAME_cert.pem, NAME_key.pem, ...
    #[arg(long)]
    pub name: String,
    /// Subject CN (default: the name).
    #[arg(long)]
    pub cn: Option<String>,
    /// pathLenConstraint (default 1: one level of intermediates).
    #[arg(long, value_name = "N")]
    pub path_len: Option<u8>,
    /// Generate the key inside this PKCS#11 token object (RFC 7512 URI) instead of a file.
    #[arg(long, value_name = "URI")]
    pub key_store: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `iotc cert intermediate`.
#[derive(Debug, Args)]
pub struct IntermediateArgs {
    /// Bundle name.
    #[arg(long)]
    pub name: String,
    /// Subject CN (default: the name).
    #[arg(long)]
    pub cn: Option<String>,
    /// pathLenConstraint (default 0: only end-entity certificates below it).
    #[arg(long, value_name = "N")]
    pub path_len: Option<u8>,
    /// Generate the key inside this PKCS#11 token object (RFC 7512 URI) instead of a file.
    #[arg(long, value_name = "URI")]
    pub key_store: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ca: CaArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `iotc cert device`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["registration_id", "count", "ids"]).required(true)))]
pub struct DeviceArgs {
    /// The registration id (= device id = CN) of a single device.
    pub registration_id: Option<String>,
    /// Make N devices named PREFIX + a zero-padded number.
    #[arg(long, value_name = "N", requires = "prefix")]
    pub count: Option<u64>,
    /// Prefix of the generated registration ids (with --count).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// First number of --count (default 1).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub start: u64,
    /// File of registration ids, one per line.
    #[arg(long, value_name = "FILE")]
    pub ids: Option<PathBuf>,
    /// Worker threads for a batch (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Generate the (single) device's key inside this PKCS#11 token object (RFC 7512 URI).
    #[arg(long, value_name = "URI", conflicts_with_all = ["count", "ids"])]
    pub key_store: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ca: CaArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `iotc cert verification`.
#[derive(Debug, Args)]
pub struct VerificationArgs {
    /// The verification code IoT Central (or DPS) generated.
    pub code: String,
    /// Bundle name.
    #[arg(long, default_value = "verification")]
    pub name: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ca: CaArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub validity: ValidityArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
}

/// `iotc cert sign-csr`.
#[derive(Debug, Args)]
pub struct SignCsrArgs {
    /// The CSR (PEM or DER).
    pub csr_file: PathBuf,
    /// Bundle name (default: the CSR's CN).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub ca: CaArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub validity: ValidityArgs,
    /// Output folder (created when missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON (the same as the global --output json).
    #[arg(long)]
    pub json: bool,
}

/// `iotc cert inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A certificate file: PEM (every certificate in it) or DER.
    pub file: PathBuf,
    /// Print JSON, an array with one object per certificate (the same as --output json).
    #[arg(long)]
    pub json: bool,
}

/// `iotc cert verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The certificate to check (PEM or DER); further certificates in it serve as chain.
    pub file: PathBuf,
    /// Trusted CA certificate(s), PEM: a root or a (verified) intermediate.
    #[arg(long, value_name = "PEM")]
    pub ca_cert: PathBuf,
    /// Intermediate certificates, PEM.
    #[arg(long, value_name = "PEM")]
    pub untrusted: Option<PathBuf>,
    /// Check at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub at: Option<OffsetDateTime>,
    /// What the certificate must be good for (default: `ca` for a CA:TRUE certificate, else
    /// `device`).
    #[arg(long, value_enum, value_name = "PURPOSE")]
    pub purpose: Option<Purpose>,
}

/// `--purpose` values, with the rules each one checks in `--help`.
impl clap::ValueEnum for Purpose {
    fn value_variants<'a>() -> &'a [Self] {
        &Purpose::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            Purpose::Device => "DPS client certificate: CA:FALSE, extendedKeyUsage clientAuth, keyUsage (if any) digitalSignature, CN a valid registration id",
            Purpose::Ca => "a CA: CA:TRUE, keyUsage (if any) keyCertSign",
            Purpose::Verification => "proof of possession: CA:FALSE, CN a verification code",
            Purpose::Any => "the chain only",
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

/// `iotc cert base64`.
#[derive(Debug, Args)]
pub struct Base64Args {
    /// The certificate file (PEM or DER).
    pub file: PathBuf,
}

/// `iotc cert bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Device bundles per measurement.
    #[arg(long, default_value_t = 10_000)]
    pub count: u64,
    /// Key type of the device keys.
    #[arg(long, default_value = "ec-p256")]
    pub key_type: KeyType,
    /// Devices for the (slow) encrypted-key measurement (default: count / 10).
    #[arg(long)]
    pub encrypted_count: Option<u64>,
    /// Devices for the openssl CLI shell loop (0 skips it).
    #[arg(long, default_value_t = 200)]
    pub openssl_count: u64,
    /// Folder for the temporary output (default: the system temp folder).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the written bundles in place instead of deleting them at the end (the path is
    /// printed). On ext4 without a journal, deleting many files slows every file creation
    /// for the next minutes, which would skew a benchmark run right after this one.
    #[arg(long)]
    pub keep: bool,
    /// Measure this CA, whose key is in a PKCS#11 token (PREFIX_key.uri), against a file key:
    /// device bundles, bare signatures (per-worker sessions, one shared session, one thread)
    /// and the openssl CLI signing through the same token (--openssl-count times).
    #[arg(long, value_name = "PREFIX")]
    pub hsm_ca: Option<PathBuf>,
    /// Signatures per signing measurement (with --hsm-ca).
    #[arg(long, value_name = "N", default_value_t = 5_000)]
    pub signatures: u64,
    /// Print the figures as JSON (the same as the global --output json).
    #[arg(long)]
    pub json: bool,
}

fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z): {e}"))
}

fn fail(msg: impl Into<String>) -> CliError {
    msg.into().into()
}

/// Reads the first line of a secret file (a password, token or key) with
/// [`crate::secret::read_secret_file`], its error naming what the file was for.
pub(crate) fn read_password_file(path: &Path, what: &str) -> Result<Secret, CliError> {
    crate::secret::read_secret_file(path).map_err(|e| fail(format!("{what} file: {e}")))
}

/// The password for new keys: file, environment, or explicitly none.
fn key_password(out: &OutputArgs) -> Result<Option<Secret>, CliError> {
    if out.no_password {
        if out.pfx {
            return Err(fail("--pfx needs a password: give --password-file FILE or IOTC_KEY_PASSWORD instead of --no-password"));
        }
        return Ok(None);
    }
    new_key_password(
        out.password_file.as_deref(),
        "--password-file",
        "the new private key",
    )
}

/// The password that encrypts new private keys: the first line of `file`, else
/// IOTC_KEY_PASSWORD; without either the command is refused (the caller has already
/// handled `--no-password`). Shared by `iotc cert` and the bundle-writing workflow commands.
pub(crate) fn new_key_password(
    file: Option<&Path>,
    file_flag: &str,
    what: &str,
) -> Result<Option<Secret>, CliError> {
    match password_from(file, KEY_PASSWORD_ENV, "password")? {
        Some(p) => Ok(Some(p)),
        None => Err(fail(format!(
            "no password for {what}: give {file_flag} FILE, set {KEY_PASSWORD_ENV}, or pass --no-password"
        ))),
    }
}

/// What to add to a failure to open a CA key: which flag or variable gives the password, when
/// the want of one is the reason.
pub(crate) fn ca_password_hint(e: &cert::CertError) -> &'static str {
    match e {
        cert::CertError::PasswordRequired => {
            " (give --ca-password-file FILE or set IOTC_CA_PASSWORD)"
        }
        _ => "",
    }
}

/// A password that may be absent: the first line of `file`, else the environment variable
/// `env`, else none. Shared by every command that opens an existing key or writes a PFX.
pub(crate) fn password_from(
    file: Option<&Path>,
    env: &str,
    what: &str,
) -> Result<Option<Secret>, CliError> {
    if let Some(f) = file {
        return read_password_file(f, what).map(Some);
    }
    Ok(std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(Secret::new))
}

fn ca_password(ca: &CaArgs) -> Result<Option<Secret>, CliError> {
    password_from(
        ca.ca_password_file.as_deref(),
        CA_PASSWORD_ENV,
        "CA password",
    )
}

/// A URI flag, parsed here rather than by clap: clap's error would repeat the raw value, and
/// with it a `pin-value` the parser refuses.
pub(crate) fn key_uri_arg(flag: &str, value: Option<&str>) -> Result<Option<KeyUri>, CliError> {
    value
        .map(|v| v.parse().map_err(|e| fail(format!("{flag}: {e}"))))
        .transpose()
}

fn load_ca(ca: &CaArgs) -> Result<Authority, CliError> {
    let loaded = match key_uri_arg("--ca-key", ca.ca_key.as_deref())? {
        Some(uri) => Authority::load_with_key_uri(&ca.ca, &uri),
        None => {
            let pw = ca_password(ca)?;
            Authority::load(&ca.ca, pw.as_ref().map(Secret::expose))
        }
    };
    let authority = loaded.map_err(|e| {
        fail(format!(
            "CA {}: {e}{}",
            ca.ca.display(),
            ca_password_hint(&e)
        ))
    })?;
    authority
        .ensure_can_issue()
        .map_err(|e| fail(format!("CA {}: {e}", ca.ca.display())))?;
    Ok(authority)
}

/// The password of a new key, or none when `--key-store` keeps the key in a token (where
/// password and PFX flags have nothing to act on, so they are refused rather than ignored).
fn password_unless_in_token(
    out: &OutputArgs,
    key_store: Option<&KeyUri>,
) -> Result<Option<Secret>, CliError> {
    if key_store.is_none() {
        return key_password(out);
    }
    if out.password_file.is_some() || out.no_password || out.pfx {
        return Err(fail(
            "--key-store keeps the key in the token, so there is no key file: \
             --password-file, --no-password and --pfx do not apply",
        ));
    }
    Ok(None)
}

fn write_options(out: &OutputArgs, password: Option<Secret>) -> WriteOptions {
    WriteOptions {
        password,
        pfx: out.pfx,
        force: out.force,
        kdf_iterations: out.kdf_iterations,
        ..Default::default()
    }
}

fn ensure_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("could not create {}: {e}", dir.display())))
}

/// Refuses (without --force) when any file of the bundle exists, before anything is made.
fn check_free(dir: &Path, name: &str, force: bool) -> Result<(), CliError> {
    check_bundle_name(name)?;
    if !force {
        if let Some(p) = bundle_paths(dir, name).iter().find(|p| p.exists()) {
            return Err(fail(format!(
                "{} already exists; refusing to overwrite it (use --force)",
                p.display()
            )));
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedReport<'a> {
    subject: String,
    issuer: String,
    not_after: String,
    sha1_thumbprint: String,
    sha256_thumbprint: String,
    files: &'a WrittenFiles,
    /// The PKCS#11 URI of a key generated in a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_uri: Option<String>,
}

fn report(issued: &Issued, files: &WrittenFiles, encrypted: bool, json: bool) -> CliResult {
    let info = inspect(&issued.cert_der)?;
    let key_uri = match &files.key_uri {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| fail(format!("could not read {}: {e}", p.display())))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    if json {
        super::output::print_json(&IssuedReport {
            subject: info.subject,
            issuer: info.issuer,
            not_after: info.not_after,
            sha1_thumbprint: info.sha1_thumbprint,
            sha256_thumbprint: info.sha256_thumbprint,
            files,
            key_uri,
        })?;
        return Ok(EXIT_OK);
    }
    println!("subject:    {}", info.subject);
    println!("issuer:     {}", info.issuer);
    println!("not after:  {}", info.not_after);
    println!("SHA-1:      {}", info.sha1_thumbprint);
    println!("SHA-256:    {}", info.sha256_thumbprint);
    println!("certificate {}", files.cert.display());
    if let Some(k) = &files.key {
        let how = if encrypted {
            "encrypted PKCS#8"
        } else {
            "UNENCRYPTED PKCS#8"
        };
        println!("key         {} ({how}, mode 0600)", k.display());
    }
    if let (Some(p), Some(uri)) = (&files.key_uri, &key_uri) {
        println!("key         in the token, never extractable: {uri}");
        println!("key uri     {}", p.display());
    }
    if let Some(c) = &files.fullchain {
        println!("chain       {}", c.display());
    }
    if let Some(p) = &files.pfx {
        println!("pkcs12      {}", p.display());
    }
    Ok(EXIT_OK)
}

fn ca_options(
    cn: Option<String>,
    name: &str,
    path_len: Option<u8>,
    v: &ValidityArgs,
    key_type: KeyType,
) -> CaOptions {
    CaOptions {
        cn: Some(cn.unwrap_or_else(|| name.to_owned())),
        key_type,
        days: v.days,
        not_before: v.not_before,
        not_after: v.not_after,
        path_len,
    }
}

fn leaf_options(v: &ValidityArgs, key_type: KeyType) -> LeafOptions {
    LeafOptions {
        key_type,
        days: v.days,
        not_before: v.not_before,
        not_after: v.not_after,
    }
}

fn run_root(a: RootArgs) -> CliResult {
    let key_store = key_uri_arg("--key-store", a.key_store.as_deref())?;
    let pw = password_unless_in_token(&a.output, key_store.as_ref())?;
    check_free(&a.output.out, &a.name, a.output.force)?;
    let opts = ca_options(a.cn, &a.name, a.path_len, &a.validity, a.output.key_type);
    let root = match &key_store {
        Some(uri) => {
            // The folder first: a key made in the token and then not written down would be
            // left there with no certificate.
            ensure_dir(&a.output.out)?;
            Authority::new_root_in_token(&opts, uri)
        }
        None => Authority::new_root(&opts),
    }?;
    ensure_dir(&a.output.out)?;
    write_ca(&a.output, &a.name, &root, pw)
}

/// Writes a new CA's bundle: its certificate, chain, and key file or key URI.
fn write_ca(out: &OutputArgs, name: &str, ca: &Authority, pw: Option<Secret>) -> CliResult {
    let encrypted = pw.is_some();
    let mut opts = write_options(out, pw);
    opts.key_uri = ca.key_uri().cloned();
    let files = write_bundle(&out.out, name, ca.issued(), &opts)?;
    report(ca.issued(), &files, encrypted, out.json)
}

fn run_intermediate(a: IntermediateArgs) -> CliResult {
    let key_store = key_uri_arg("--key-store", a.key_store.as_deref())?;
    let pw = password_unless_in_token(&a.output, key_store.as_ref())?;
    check_free(&a.output.out, &a.name, a.output.force)?;
    let ca = load_ca(&a.ca)?;
    let opts = ca_options(a.cn, &a.name, a.path_len, &a.validity, a.output.key_type);
    let inter = match &key_store {
        Some(uri) => {
            ensure_dir(&a.output.out)?;
            ca.issue_intermediate_in_token(&opts, uri)
        }
        None => ca.issue_intermediate(&opts),
    }?;
    ensure_dir(&a.output.out)?;
    write_ca(&a.output, &a.name, &inter, pw)
}

fn run_verification(a: VerificationArgs) -> CliResult {
    let pw = key_password(&a.output)?;
    check_free(&a.output.out, &a.name, a.output.force)?;
    let ca = load_ca(&a.ca)?;
    let issued = ca.issue_verification(&a.code, &leaf_options(&a.validity, a.output.key_type))?;
    ensure_dir(&a.output.out)?;
    let encrypted = pw.is_some();
    let files = write_bundle(
        &a.output.out,
        &a.name,
        &issued,
        &write_options(&a.output, pw),
    )?;
    report(&issued, &files, encrypted, a.output.json)
}

fn run_sign_csr(a: SignCsrArgs) -> CliResult {
    let csr = std::fs::read(&a.csr_file)
        .map_err(|e| fail(format!("could not read {}: {e}", a.csr_file.display())))?;
    let ca = load_ca(&a.ca)?;
    let issued = ca
        .sign_csr(&csr, &leaf_options(&a.validity, KeyType::default()))
        .map_err(|e| fail(format!("{}: {e}", a.csr_file.display())))?;
    let name = match a.name {
        Some(n) => n,
        None => inspect(&issued.cert_der)?.common_name.unwrap_or_default(),
    };
    check_free(&a.out, &name, a.force)?;
    ensure_dir(&a.out)?;
    let opts = WriteOptions {
        force: a.force,
        ..Default::default()
    };
    let files = write_bundle(&a.out, &name, &issued, &opts)?;
    report(&issued, &files, false, a.json)
}

/// The registration ids of a device command, validated, before anything is made.
enum IdSource {
    List(Vec<RegistrationId>),
    Range {
        prefix: String,
        start: u64,
        count: u64,
        width: usize,
    },
}

impl IdSource {
    fn len(&self) -> u64 {
        match self {
            IdSource::List(v) => v.len() as u64,
            IdSource::Range { count, .. } => *count,
        }
    }

    fn range_id(prefix: &str, n: u64, width: usize) -> String {
        format!("{prefix}{n:0width$}")
    }

    fn get(&self, i: u64) -> Result<RegistrationId, crate::ids::InvalidId> {
        match self {
            IdSource::List(v) => Ok(v[i as usize].clone()),
            IdSource::Range {
                prefix,
                start,
                width,
                ..
            } => RegistrationId::new(Self::range_id(prefix, start + i, *width)),
        }
    }
}

fn device_ids(a: &DeviceArgs) -> Result<IdSource, CliError> {
    if let Some(id) = &a.registration_id {
        return Ok(IdSource::List(vec![RegistrationId::new(id.clone())?]));
    }
    if let Some(count) = a.count {
        let prefix = a.prefix.clone().unwrap_or_default();
        if count == 0 {
            return Err(fail("--count must be at least 1"));
        }
        let last = a
            .start
            .checked_add(count - 1)
            .ok_or_else(|| fail("--start + --count is too large"))?;
        let width = last.to_string().len();
        RegistrationId::new(IdSource::range_id(&prefix, a.start, width))?;
        RegistrationId::new(IdSource::range_id(&prefix, last, width))?;
        return Ok(IdSource::Range {
            prefix,
            start: a.start,
            count,
            width,
        });
    }
    let path = a
        .ids
        .as_ref()
        .ok_or_else(|| fail("give REGISTRATION_ID, --count N --prefix P, or --ids FILE"))?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("could not read {}: {e}", path.display())))?;
    let mut ids = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let id = RegistrationId::new(line)
            .map_err(|e| fail(format!("{}:{}: {e}", path.display(), n + 1)))?;
        // DPS compares registration ids case-insensitively; so do the file names on some systems.
        if !seen.insert(line.to_ascii_lowercase()) {
            return Err(fail(format!(
                "{}:{}: duplicate registration id {line:?}",
                path.display(),
                n + 1
            )));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(fail(format!(
            "{} holds no registration ids",
            path.display()
        )));
    }
    Ok(IdSource::List(ids))
}

fn run_device(a: DeviceArgs) -> CliResult {
    let key_store = key_uri_arg("--key-store", a.key_store.as_deref())?;
    let pw = password_unless_in_token(&a.output, key_store.as_ref())?;
    let ids = device_ids(&a)?;
    let n = ids.len();
    // Existing files are refused before anything is made.
    if !a.output.force {
        for i in 0..n {
            check_free(&a.output.out, ids.get(i)?.as_str(), false)?;
        }
    }
    let ca = load_ca(&a.ca)?;
    let leaf = leaf_options(&a.validity, a.output.key_type);
    let encrypted = pw.is_some();
    let wopts = write_options(&a.output, pw);
    ensure_dir(&a.output.out)?;
    // An absolute folder spares a getcwd per file in the batch.
    let out_dir = std::path::absolute(&a.output.out).unwrap_or_else(|_| a.output.out.clone());
    if n == 1 && a.registration_id.is_some() {
        let id = ids.get(0)?;
        if let Some(uri) = &key_store {
            let issued = ca.issue_device_in_token(&id, &leaf, uri)?;
            let wopts = WriteOptions {
                key_uri: Some(uri.clone()),
                ..wopts
            };
            let files = write_bundle(&a.output.out, id.as_str(), &issued, &wopts)?;
            return report(&issued, &files, false, a.output.json);
        }
        let issued = ca.issue_device(&id, &leaf)?;
        let files = write_bundle(&a.output.out, id.as_str(), &issued, &wopts)?;
        return report(&issued, &files, encrypted, a.output.json);
    }
    let threads = a.threads.unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| fail(format!("could not start worker threads: {e}")))?;
    let bar = progress_bar(n);
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let failures: Vec<(String, String)> = pool.install(|| {
        (0..n)
            .into_par_iter()
            .filter_map(|i| {
                let id = match ids.get(i) {
                    Ok(id) => id,
                    Err(e) => return Some((format!("#{i}"), e.to_string())),
                };
                let result = ca
                    .issue_device(&id, &leaf)
                    .and_then(|issued| write_bundle(&out_dir, id.as_str(), &issued, &wopts));
                bar.inc(1);
                match result {
                    Ok(_) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Err(e) => Some((id.as_str().to_owned(), e.to_string())),
                }
            })
            .collect()
    });
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let ok = done.load(Ordering::Relaxed);
    let rate = ok as f64 / secs.max(1e-9);
    if a.output.json {
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Batch<'a> {
            written: usize,
            failed: Vec<Failure<'a>>,
            out: &'a Path,
            seconds: f64,
        }
        #[derive(serde::Serialize)]
        struct Failure<'a> {
            id: &'a str,
            error: &'a str,
        }
        super::output::print_json(&Batch {
            written: ok,
            failed: failures
                .iter()
                .map(|(id, e)| Failure { id, error: e })
                .collect(),
            out: &a.output.out,
            seconds: secs,
        })?;
    } else {
        println!(
            "wrote {ok} device bundle(s) to {} in {secs:.2} s ({rate:.0}/s, {} key type, key {})",
            a.output.out.display(),
            a.output.key_type,
            if encrypted {
                "encrypted"
            } else {
                "UNENCRYPTED"
            }
        );
        for (id, e) in failures.iter().take(20) {
            eprintln!("failed: {id}: {e}");
        }
    }
    if failures.is_empty() {
        Ok(EXIT_OK)
    } else {
        eprintln!("{} of {n} device(s) failed", failures.len());
        Ok(EXIT_PARTIAL)
    }
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
fn progress_bar(n: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(Some(n), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} devices  {per_sec}  eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn read_file(path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| fail(format!("could not read {}: {e}", path.display())))
}

fn certs_of(path: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    read_certs(&read_file(path)?).map_err(|e| fail(format!("{}: {e}", path.display())))
}

fn print_info(info: &CertInfo) {
    println!("subject:      {}", info.subject);
    println!("issuer:       {}", info.issuer);
    println!("serial:       {}", info.serial);
    println!("not before:   {}", info.not_before);
    println!("not after:    {}", info.not_after);
    println!("key type:     {}", info.key_type);
    println!("signature:    {}", info.signature_algorithm);
    println!("SHA-1:        {}", info.sha1_thumbprint);
    println!("SHA-256:      {}", info.sha256_thumbprint);
    println!("extensions:");
    for e in &info.extensions {
        let crit = if e.critical { " (critical)" } else { "" };
        println!("  {}{crit}: {}", e.name, e.value);
    }
}

fn run_inspect(a: InspectArgs) -> CliResult {
    let certs = certs_of(&a.file)?;
    let infos = certs
        .iter()
        .map(|d| inspect(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{}: {e}", a.file.display())))?;
    if a.json {
        super::output::print_json(&infos)?;
    } else {
        for (i, info) in infos.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_info(info);
        }
    }
    Ok(EXIT_OK)
}

/// One failed check of `iotc cert verify`, as JSON.
#[derive(serde::Serialize)]
struct VerifyFailure {
    reason: &'static str,
    message: String,
}

/// The JSON answer of `iotc cert verify`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyReport<'a> {
    file: &'a Path,
    valid: bool,
    purpose: &'static str,
    /// `flag` (--purpose) or `default` (from the certificate's basicConstraints).
    purpose_source: &'static str,
    /// Subjects from the leaf up to the trusted CA, when the chain holds.
    path: Option<Vec<String>>,
    failures: Vec<VerifyFailure>,
}

fn run_verify(a: VerifyArgs, json: bool) -> CliResult {
    let mut leaf_and_chain = certs_of(&a.file)?;
    let anchors = certs_of(&a.ca_cert)?;
    if let Some(u) = &a.untrusted {
        leaf_and_chain.extend(certs_of(u)?);
    }
    let leaf = leaf_and_chain.remove(0);
    let now = a.at.unwrap_or_else(OffsetDateTime::now_utc);
    let defaulted = a.purpose.is_none();
    let purpose = match a.purpose {
        Some(p) => p,
        None => Purpose::of(&leaf).map_err(|e| fail(format!("{}: {e}", a.file.display())))?,
    };
    let chain = verify_chain(&leaf, &leaf_and_chain, &anchors, now);
    let mut failures: Vec<ChainError> = chain.as_ref().err().cloned().into_iter().collect();
    let purpose_failures = check_purpose(&leaf, purpose);
    let purpose_failed = !purpose_failures.is_empty();
    failures.extend(purpose_failures);
    let path = chain.ok().map(|p| p.subjects);
    if json {
        super::output::print_json(&VerifyReport {
            file: &a.file,
            valid: failures.is_empty(),
            purpose: purpose.as_str(),
            purpose_source: if defaulted { "default" } else { "flag" },
            path: path.clone(),
            failures: failures
                .iter()
                .map(|e| VerifyFailure {
                    reason: e.code(),
                    message: e.to_string(),
                })
                .collect(),
        })?;
    }
    if !failures.is_empty() {
        let reasons: Vec<String> = failures.iter().map(ToString::to_string).collect();
        let hint = if defaulted && purpose_failed && purpose == Purpose::Device {
            " (checked as a device certificate, the default for a certificate without CA:TRUE; \
             a proof-of-possession certificate takes --purpose verification)"
        } else {
            ""
        };
        return Err(fail(format!(
            "{}: verification failed: {}{hint}",
            a.file.display(),
            reasons.join("; ")
        )));
    }
    if !json {
        let checked = match purpose {
            Purpose::Any => "purpose not checked".to_owned(),
            p => format!("purpose {p}"),
        };
        println!(
            "{}: OK ({}); {checked}",
            a.file.display(),
            path.unwrap_or_default().join(" <- ")
        );
    }
    Ok(EXIT_OK)
}

fn run_base64(a: Base64Args, json: bool) -> CliResult {
    let bytes = read_file(&a.file)?;
    // Refuse anything that is not a certificate, rather than encoding it.
    read_certs(&bytes).map_err(|e| fail(format!("{}: {e}", a.file.display())))?;
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    if json {
        super::output::print_json(&serde_json::json!({
            "file": a.file,
            "certificate": encoded,
        }))?;
    } else {
        println!("{encoded}");
    }
    Ok(EXIT_OK)
}

/// Runs a cert command. `format` is the global `--output`: JSON there is the same as each
/// command's own `--json`.
pub fn run(cmd: CertCommand, format: OutputFormat) -> CliResult {
    let json = format == OutputFormat::Json;
    match cmd {
        CertCommand::Root(mut a) => {
            a.output.json |= json;
            run_root(a)
        }
        CertCommand::Intermediate(mut a) => {
            a.output.json |= json;
            run_intermediate(a)
        }
        CertCommand::Device(mut a) => {
            a.output.json |= json;
            run_device(a)
        }
        CertCommand::Verification(mut a) => {
            a.output.json |= json;
            run_verification(a)
        }
        CertCommand::SignCsr(mut a) => {
            a.json |= json;
            run_sign_csr(a)
        }
        CertCommand::Inspect(mut a) => {
            a.json |= json;
            run_inspect(a)
        }
        CertCommand::Verify(a) => run_verify(a, json),
        CertCommand::Base64(a) => run_base64(a, json),
        CertCommand::Bench(mut a) => {
            a.json |= json;
            bench::run(a)
        }
    }
}
