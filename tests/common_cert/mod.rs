//! Helpers of the cert integration tests: run the real `iotc` binary and the real openssl CLI.
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
    fn from(out: Output) -> Run {
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
    std::fs::write(d.path().join("pw.txt"), "correct horse\n").expect("pw");
    d
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

/// Makes root (password-protected, pw.txt) and intermediate (no password) with the CLI.
pub fn make_cas(dir: &Path, key_type: &str) {
    iotc(
        dir,
        &[
            "cert",
            "root",
            "--name",
            "root",
            "--out",
            "c",
            "--key-type",
            key_type,
            "--password-file",
            "pw.txt",
        ],
    )
    .ok();
    iotc(
        dir,
        &[
            "cert",
            "intermediate",
            "--name",
            "inter",
            "--ca",
            "c/root",
            "--ca-password-file",
            "pw.txt",
            "--out",
            "c",
            "--key-type",
            key_type,
            "--no-password",
        ],
    )
    .ok();
}
