//! Helpers of the cert integration tests: run the real `iotc` binary and the real openssl CLI,
//! make the usual CAs and leaves with the binary, and odd certificates with openssl.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The result of a command: exit code, stdout, stderr.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The result of a finished command.
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Panics with both streams unless the exit code is 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs `iotc ARGS` in `dir`, with no password variables inherited.
pub fn iotc(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(args)
        .current_dir(dir)
        .env_remove("IOTC_KEY_PASSWORD")
        .env_remove("IOTC_CA_PASSWORD")
        .output()
        .expect("run iotc");
    Run::from(out)
}

/// Runs `openssl ARGS` in `dir`.
pub fn openssl(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed for these tests");
    Run::from(out)
}

/// A fresh temporary folder holding a password file `pw.txt` ("correct horse").
pub fn workdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    write_secret(&d.path().join("pw.txt"), "correct horse\n");
    d
}

/// Writes a secret file as a careful user does: 0600 (iotc warns about any looser mode).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).expect("secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// All file names below `dir`, sorted (to prove nothing was written).
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p.clone());
                }
                out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Asserts a failed run: exit code 2 and a one-line `error:` containing `needle`.
#[track_caller]
pub fn assert_refused(r: &Run, needle: &str) {
    assert_eq!(
        r.code, 2,
        "expected exit 2; stdout:\n{}\nstderr:\n{}",
        r.stdout, r.stderr
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line of error, got:\n{}",
        r.stderr
    );
    assert!(lines[0].starts_with("error: "), "{}", r.stderr);
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in {:?}",
        lines[0]
    );
}

/// The words of a command line without quoting (for argument lists with no spaces in them).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// Runs iotc and asserts refusal with nothing written below `dir`.
#[track_caller]
pub fn refused(dir: &Path, args: &[&str], needle: &str) {
    let before = listing(dir);
    let r = iotc(dir, args);
    assert_refused(&r, needle);
    assert_eq!(
        listing(dir),
        before,
        "files changed after a refused {args:?}"
    );
}

/// Runs `iotc cert ARGS --out OUT EXTRA`, adding `--no-password` unless `extra` names a
/// `--password-file`; the run must succeed.
#[track_caller]
fn make<'a>(dir: &Path, mut args: Vec<&'a str>, out: &'a str, extra: &[&'a str]) -> Run {
    args.extend(["--out", out]);
    if !extra.contains(&"--password-file") {
        args.push("--no-password");
    }
    args.extend_from_slice(extra);
    iotc(dir, &args).ok()
}

/// `iotc cert root --name NAME --out OUT` (+ `--no-password` or EXTRA's password file).
#[track_caller]
pub fn root(dir: &Path, name: &str, out: &str, extra: &[&str]) -> Run {
    make(dir, vec!["cert", "root", "--name", name], out, extra)
}

/// `iotc cert intermediate --name NAME --ca CA --out OUT` (+ `--no-password` or EXTRA's).
#[track_caller]
pub fn intermediate(dir: &Path, name: &str, ca: &str, out: &str, extra: &[&str]) -> Run {
    make(
        dir,
        vec!["cert", "intermediate", "--name", name, "--ca", ca],
        out,
        extra,
    )
}

/// `iotc cert device ID --ca CA --out OUT` (+ `--no-password` or EXTRA's); an empty ID leaves
/// the choice of devices to EXTRA (`--count`, `--ids`).
#[track_caller]
pub fn device(dir: &Path, id: &str, ca: &str, out: &str, extra: &[&str]) -> Run {
    let mut args = vec!["cert", "device"];
    if !id.is_empty() {
        args.push(id);
    }
    args.extend(["--ca", ca]);
    make(dir, args, out, extra)
}

/// `iotc cert verification CODE --ca CA --out OUT` (+ `--no-password` or EXTRA's).
#[track_caller]
pub fn verification(dir: &Path, code: &str, ca: &str, out: &str, extra: &[&str]) -> Run {
    make(
        dir,
        vec!["cert", "verification", code, "--ca", ca],
        out,
        extra,
    )
}

/// Makes root (password-protected, pw.txt) and intermediate (no password) with the CLI.
pub fn make_cas(dir: &Path, key_type: &str) {
    root(
        dir,
        "root",
        "c",
        &["--key-type", key_type, "--password-file", "pw.txt"],
    );
    intermediate(
        dir,
        "inter",
        "c/root",
        "c",
        &["--ca-password-file", "pw.txt", "--key-type", key_type],
    );
}

/// The extensions of a CA made with openssl.
pub const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\n\
    keyUsage=critical,keyCertSign,cRLSign\n\
    subjectKeyIdentifier=hash";

/// The extension lines of an end-entity made with openssl: basicConstraints CA:FALSE (CA:TRUE
/// when `ca`), then keyUsage `ku` and extendedKeyUsage `eku` unless empty.
pub fn leaf_ext(ca: bool, ku: &str, eku: &str) -> String {
    let mut ext = format!(
        "basicConstraints=critical,CA:{}\n",
        if ca { "TRUE" } else { "FALSE" }
    );
    if !ku.is_empty() {
        ext.push_str(&format!("keyUsage=critical,{ku}\n"));
    }
    if !eku.is_empty() {
        ext.push_str(&format!("extendedKeyUsage={eku}\n"));
    }
    ext
}

/// Makes `<name>_key.pem` (PKCS#8, unencrypted) + `<name>_cert.pem` with openssl, CN = `name`
/// and the extension lines `ext`: self-signed when `issuer` is None, else signed by
/// `<issuer>_cert.pem` / `<issuer>_key.pem` in `dir`.
pub fn ossl_cert(dir: &Path, name: &str, issuer: Option<&str>, ext: &str) {
    ossl_cert_cn(dir, name, name, issuer, ext)
}

/// `openssl req` arguments making a fresh EC P-256 key `key` (PKCS#8, unencrypted) for CN `cn`.
fn ossl_newkey(key: &str, subj: &str) -> [String; 9] {
    [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        key,
        "-subj",
        subj,
    ]
    .map(str::to_owned)
}

/// Makes an EC P-256 key `key` and a certificate signing request `csr` for CN `cn` with
/// openssl.
pub fn ossl_csr(dir: &Path, key: &str, cn: &str, csr: &str) {
    let mut args = vec!["req".to_owned(), "-new".to_owned()];
    args.extend(ossl_newkey(key, &format!("/CN={cn}")));
    args.extend(["-out".to_owned(), csr.to_owned()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &args).ok();
}

/// [`ossl_cert`] with a CN other than the file name.
pub fn ossl_cert_cn(dir: &Path, name: &str, cn: &str, issuer: Option<&str>, ext: &str) {
    let extfile = format!("{name}.ext");
    std::fs::write(dir.join(&extfile), format!("[x]\n{ext}\n")).unwrap();
    let key = format!("{name}_key.pem");
    let cert = format!("{name}_cert.pem");
    match issuer {
        None => {
            let newkey = ossl_newkey(&key, &format!("/CN={cn}"));
            let mut args = vec!["req", "-x509"];
            args.extend(newkey.iter().map(String::as_str));
            args.extend([
                "-out",
                &cert,
                "-days",
                "30",
                "-extensions",
                "x",
                "-config",
                &extfile,
            ]);
            openssl(dir, &args).ok();
        }
        Some(i) => {
            let csr = format!("{name}.csr");
            ossl_csr(dir, &key, cn, &csr);
            let (ca_cert, ca_key) = (format!("{i}_cert.pem"), format!("{i}_key.pem"));
            let mut args = words("x509 -req -CAcreateserial -days 30 -extensions x");
            args.extend([
                "-in", &csr, "-CA", &ca_cert, "-CAkey", &ca_key, "-extfile", &extfile, "-out",
                &cert,
            ]);
            openssl(dir, &args).ok();
        }
    }
}
