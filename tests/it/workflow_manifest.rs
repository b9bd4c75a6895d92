//! Bad manifests, through the real binary: every problem is listed with its line number,
//! the exit code is 2, and nothing is done (no journal, no bundle folder, no request: the
//! application URL points at a port where nothing listens).

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::Path;

fn provision(dir: &Path, manifest_text: &str) -> assert_cmd::assert::Assert {
    let manifest = dir.join("m.csv");
    std::fs::write(&manifest, manifest_text).unwrap();
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["provision", "--manifest"])
        .arg(&manifest)
        .arg("--journal")
        .arg(dir.join("j.sqlite"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--group", "g1", "--app", "https://127.0.0.1:9"])
        .env("IOTC_API_TOKEN", "SharedAccessSignature sr=x")
        .env_remove("IOTC_PROFILE")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir)
        .timeout(std::time::Duration::from_secs(30))
        .assert()
}

#[test]
fn every_problem_of_a_bad_manifest_is_listed_and_nothing_is_done() {
    let dir = tempfile::tempdir().unwrap();
    provision(
        dir.path(),
        "deviceId,displayName,colour,simulated\n\
         ok-1,A,red,true\n\
         bad id,B,red,false\n\
         OK-1,C,red,true\n\
         ok-4,D,red,perhaps\n\
         ok-5,E\n",
    )
    .code(2)
    .stderr(predicate::str::contains("5 problem(s), nothing was done"))
    .stderr(predicate::str::contains(
        "line 1: unknown column \"colour\"",
    ))
    .stderr(predicate::str::contains("line 3: deviceId"))
    .stderr(predicate::str::contains(
        "line 4: duplicate deviceId \"OK-1\" (first on line 2",
    ))
    .stderr(predicate::str::contains("line 5: simulated: \"perhaps\""))
    .stderr(predicate::str::contains("line 6: 2 field(s)"));
    assert!(!dir.path().join("j.sqlite").exists(), "no journal");
    assert!(!dir.path().join("out").exists(), "no bundle folder");
}

#[test]
fn a_manifest_without_device_id_or_rows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    provision(dir.path(), "displayName\nx\n")
        .code(2)
        .stderr(predicate::str::contains(
            "required column \"deviceId\" is missing",
        ));
    provision(dir.path(), "deviceId\n")
        .code(2)
        .stderr(predicate::str::contains("no device"));
    provision(dir.path(), "")
        .code(2)
        .stderr(predicate::str::contains("line 1: the file is empty"));
    assert!(!dir.path().join("j.sqlite").exists());
}

#[test]
fn resume_needs_a_journal_and_a_new_batch_refuses_an_existing_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotc"));
    cmd.args(["provision", "--resume", "--journal"])
        .arg(dir.path().join("none.sqlite"))
        .args(["--out", "o", "--group", "g1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no journal at"));
    std::fs::write(dir.path().join("j.sqlite"), b"").unwrap();
    provision(dir.path(), "deviceId\nd1\n")
        .code(2)
        .stderr(predicate::str::contains("pass --resume"));
}
