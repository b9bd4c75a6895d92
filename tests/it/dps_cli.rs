//! `iotc dps derive-key` and `iotc dps register` through the real binary: argument handling,
//! and registrations against the real emulator over TLS on loopback.

use crate::common_dps;
use common_dps::run_iotc;

use assert_cmd::Command;
use predicates::prelude::*;

const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

/// A 0600 file holding `text` (secrets come from files, never from a flag's value); the
/// folder lives as long as the returned guard.
fn secret_file(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret.txt");
    crate::common_cert::write_secret(&f, &format!("{text}\n"));
    (dir, f)
}

#[test]
fn derive_key_gives_the_published_vector() {
    let (_d, group) = secret_file(GROUP_KEY);
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["dps", "derive-key", "--group-key-file"])
        .arg(&group)
        .args(["--registration-id", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"])
        .assert()
        .success()
        .stdout("Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=\n");
}

#[test]
fn derive_key_from_file_and_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("group.key");
    std::fs::write(&f, format!("{GROUP_KEY}\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["--output", "json", "dps", "derive-key", "--group-key-file"])
        .arg(&f)
        .args(["--registration-id", "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["deviceKey"],
        "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc="
    );
    assert_eq!(v["registrationId"], "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6");
}

#[test]
fn derive_key_refuses_bad_input() {
    let (_d, bad) = secret_file("not base64!!");
    let (_e, group) = secret_file(GROUP_KEY);
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["dps", "derive-key", "--group-key-file"])
        .arg(&bad)
        .args(["--registration-id", "dev-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("group key is not valid base64"))
        .stderr(predicate::str::contains("not base64!!").not());
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["dps", "derive-key", "--group-key-file"])
        .arg(&group)
        .args(["--registration-id", "dev 1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("registration id"));
}

#[test]
fn register_needs_exactly_one_credential() {
    let (_d, group) = secret_file(GROUP_KEY);
    let (_e, device) = secret_file("AAAA");
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args([
            "dps",
            "register",
            "--id-scope",
            "0ne0000000A",
            "--registration-id",
            "dev-1",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("required"));
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args([
            "dps",
            "register",
            "--id-scope",
            "0ne0000000A",
            "--registration-id",
            "dev-1",
        ])
        .arg("--symmetric-key-file")
        .arg(&device)
        .arg("--group-key-file")
        .arg(&group)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn register_reports_an_unreachable_endpoint_without_leaking_the_key() {
    let (_d, group) = secret_file(GROUP_KEY);
    // Port 1 on loopback: nothing listens there.
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args([
            "dps",
            "register",
            "--id-scope",
            "0ne0000000A",
            "--registration-id",
            "dev-1",
        ])
        .arg("--group-key-file")
        .arg(&group)
        .args(["--endpoint", "https://127.0.0.1:1", "--deadline", "2"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("failed to get an answer"))
        .stderr(predicate::str::contains(GROUP_KEY).not())
        .stderr(predicate::str::contains("SharedAccessSignature").not());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_with_the_leaf_alone_is_told_the_chain_is_incomplete() {
    let env = common_dps::start().await;
    let root = common_dps::root();
    env.verified_group("cli-group", &root).await;
    let inter = root
        .issue_intermediate(&iotc::cert::CaOptions::default())
        .unwrap();
    let dev = common_dps::device(&inter, "cli-dev-1");
    let files = tempfile::tempdir().unwrap();
    let written = iotc::cert::write_bundle(
        files.path(),
        "cli-dev-1",
        &dev,
        &iotc::cert::WriteOptions::default(),
    )
    .unwrap();
    let info = env.emu.info();
    let register = |cert: &std::path::Path, output: &str| -> Vec<String> {
        [
            "--ca-file",
            &info.ca_cert.display().to_string(),
            "--output",
            output,
            "dps",
            "register",
            "--id-scope",
            &info.id_scope,
            "--registration-id",
            "cli-dev-1",
            "--cert",
            &cert.display().to_string(),
            "--key",
            &written.key.as_ref().unwrap().display().to_string(),
            "--endpoint",
            &info.dps_endpoint,
            "--deadline",
            "20",
        ]
        .map(str::to_owned)
        .to_vec()
    };
    // The leaf alone: the service's refusal, surfaced whole, exit 2, nothing on stdout.
    let out = run_iotc(register(&written.cert, "table")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("HTTP 401, errorCode 401002"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the chain is incomplete: the leaf's issuer \"{}\" is not in the presented chain",
            inter.subject()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("present the full chain (leaf + intermediates"),
        "{stderr}"
    );
    assert!(stderr.contains("trackingId"), "{stderr}");
    assert!(env.central.get_device("cli-dev-1").await.is_err());
    // The full chain registers; --output json answers one JSON document.
    let out = run_iotc(register(written.fullchain.as_ref().unwrap(), "json")).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deviceId"], "cli-dev-1");
    assert_eq!(v["status"], "assigned");
    env.emu.shutdown().await;
}
