//! Helpers of the PKCS#11 tests: a real SoftHSM2 token per test, the real `iotc` binary,
//! and the independent referees (`pkcs11-tool` from OpenSC, the openssl CLI).
//!
//! Every test gets its own folder with its own `softhsm2.conf` and token directory, and
//! every PKCS#11 call happens in a child process (`iotc`, `softhsm2-util`, `pkcs11-tool`) that
//! is given `SOFTHSM2_CONF` in its environment. SoftHSM reads that variable once, at
//! C_Initialize, and a test binary is one process for all its tests: loading the module into
//! the test process would give every test the first test's token folder. Driving the real
//! binary also tests what a user runs.
//!
//! It builds on `common_cert` (a test file using it declares both modules).
//!
//! Without SoftHSM2 installed the tests fail in CI (`CI` set: `.ci/run` installs `softhsm2`
//! and `opensc`) and are skipped with a message elsewhere.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[allow(unused_imports)] // each test file uses some of them
pub use crate::common_cert::{assert_refused, ossl_csr, Run};

/// The user PIN of every test token.
pub const PIN: &str = "86421357";
/// The security officer PIN of every test token.
pub const SO_PIN: &str = "97531246";

const MODULES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

impl Run {
    /// Panics unless the command failed with exit code 2 and a one-line error holding `want`.
    #[track_caller]
    pub fn fails_with(self, want: &str) -> Run {
        assert_refused(&self, want);
        self
    }
}

/// A SoftHSM2 installation with a folder (and token store) of this test's own.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub module: PathBuf,
    conf: PathBuf,
}

/// The SoftHSM2 module, or `None` (after saying why) outside CI when it is not installed.
pub fn softhsm() -> Option<SoftHsm> {
    let Some(module) = MODULES.iter().map(PathBuf::from).find(|p| p.exists()) else {
        let msg = "SoftHSM2 is not installed (no libsofthsm2.so): the PKCS#11 tests need \
                   `apt-get install -y softhsm2 opensc`";
        if std::env::var_os("CI").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    };
    for tool in ["softhsm2-util", "pkcs11-tool"] {
        let found = Command::new(tool).arg("--help").output().is_ok();
        assert!(
            found,
            "{tool} is missing: `apt-get install -y softhsm2 opensc`"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens).expect("token dir");
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .expect("softhsm2.conf");
    std::fs::write(dir.path().join("pin.txt"), format!("{PIN}\n")).expect("pin file");
    Some(SoftHsm { dir, module, conf })
}

impl SoftHsm {
    /// The test's folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The folder that holds SoftHSM's token files.
    pub fn token_dir(&self) -> PathBuf {
        self.path().join("tokens")
    }

    /// `softhsm2.conf` of this test.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// Initializes a new token `label` with [`PIN`] and [`SO_PIN`].
    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--so-pin",
                SO_PIN,
                "--pin",
                PIN,
            ])
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("softhsm2-util");
        Run::from(out).ok();
    }

    /// `iotc` in the test folder, with the module and PIN in its environment.
    pub fn iotc_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iotc"));
        c.args(args)
            .current_dir(self.path())
            .env("SOFTHSM2_CONF", &self.conf)
            .env("IOTC_PKCS11_MODULE", &self.module)
            .env("IOTC_PKCS11_PIN", PIN)
            .env_remove("IOTC_KEY_PASSWORD")
            .env_remove("IOTC_CA_PASSWORD");
        c
    }

    /// Runs `iotc ARGS` (see [`iotc_cmd`](Self::iotc_cmd)).
    pub fn iotc(&self, args: &[&str]) -> Run {
        Run::from(self.iotc_cmd(args).output().expect("run iotc"))
    }

    /// Runs `iotc ARGS` with the environment changed by `f`.
    pub fn iotc_with(&self, args: &[&str], f: impl FnOnce(&mut Command)) -> Run {
        let mut c = self.iotc_cmd(args);
        f(&mut c);
        Run::from(c.output().expect("run iotc"))
    }

    /// Runs `pkcs11-tool --module MODULE ARGS` against this test's tokens.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Run {
        let out = Command::new("pkcs11-tool")
            .arg("--module")
            .arg(&self.module)
            .args(args)
            .current_dir(self.path())
            .env("SOFTHSM2_CONF", &self.conf)
            .output()
            .expect("pkcs11-tool");
        Run::from(out)
    }

    /// Makes a key pair in token `token` with pkcs11-tool (`key_type` as pkcs11-tool spells
    /// it: `EC:prime256v1`, `rsa:1024`, ...).
    pub fn keypairgen(&self, token: &str, label: &str, key_type: &str) {
        self.pkcs11_tool(&[
            "--token-label",
            token,
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--label",
            label,
        ])
        .ok();
    }

    /// The private-key section of `pkcs11-tool --list-objects` for the key labelled `label`.
    pub fn private_key_listing(&self, token: &str, label: &str) -> String {
        let out = self
            .pkcs11_tool(&[
                "--token-label",
                token,
                "--login",
                "--pin",
                PIN,
                "--list-objects",
                "--type",
                "privkey",
            ])
            .ok()
            .stdout;
        let mut sections = out.split("Private Key Object");
        sections
            .find(|s| {
                s.lines()
                    .any(|l| l.trim() == format!("label:      {label}"))
            })
            .unwrap_or_else(|| panic!("no private key {label:?} in:\n{out}"))
            .to_owned()
    }

    /// Runs `openssl ARGS` in the test folder.
    pub fn openssl(&self, args: &[&str]) -> Run {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("openssl must be installed for these tests");
        Run::from(out)
    }

    /// `openssl verify` of `leaf` up to `root`, with `untrusted` intermediates.
    #[track_caller]
    pub fn openssl_verify(&self, root: &str, untrusted: Option<&str>, leaf: &str) {
        let mut args = vec!["verify", "-x509_strict", "-CAfile", root];
        if let Some(u) = untrusted {
            args.extend(["-untrusted", u]);
        }
        args.push(leaf);
        let run = self.openssl(&args).ok();
        assert!(run.stdout.contains(": OK"), "{}", run.stdout);
    }

    /// Whether `path` (relative to the test folder) exists.
    pub fn exists(&self, path: &str) -> bool {
        self.path().join(path).exists()
    }

    /// The text of `path` (relative to the test folder).
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.path().join(path))
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
    }
}

/// The comma-separated items of a `pkcs11-tool --list-objects` line (`Access:`, `Usage:`).
pub fn listing_items(listing: &str, field: &str) -> Vec<String> {
    let line = listing
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} line in\n{listing}"));
    line.split(',').map(|i| i.trim().to_owned()).collect()
}

/// Asserts that a token key is what a CA key must be: CKA_SENSITIVE true, CKA_EXTRACTABLE
/// false (pkcs11-tool prints `sensitive` and `extractable` for the two attributes), and
/// usable for signing only.
#[track_caller]
pub fn assert_non_extractable(listing: &str) {
    let access = listing_items(listing, "Access:");
    assert!(access.iter().any(|i| i == "sensitive"), "{access:?}");
    assert!(!access.iter().any(|i| i == "extractable"), "{access:?}");
    assert!(
        access.iter().any(|i| i == "never extractable"),
        "{access:?}"
    );
    assert_eq!(listing_items(listing, "Usage:"), ["sign"], "{listing}");
}
