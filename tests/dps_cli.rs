//! `iotc dps derive-key` and `iotc dps register` argument handling, through the real binary.

use assert_cmd::Command;
use predicates::prelude::*;

const GROUP_KEY: &str =
    "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";

#[test]
fn derive_key_gives_the_published_vector() {
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["dps", "derive-key", "--group-key", GROUP_KEY])
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
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args([
            "dps",
            "derive-key",
            "--group-key",
            "not base64!!",
            "--registration-id",
            "dev-1",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("group key is not valid base64"))
        .stderr(predicate::str::contains("not base64!!").not());
    Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args([
            "dps",
            "derive-key",
            "--group-key",
            GROUP_KEY,
            "--registration-id",
            "dev 1",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("registration id"));
}

#[test]
fn register_needs_exactly_one_credential() {
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
        .args(["--symmetric-key", "AAAA", "--group-key", GROUP_KEY])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[test]
fn register_reports_an_unreachable_endpoint_without_leaking_the_key() {
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
        .args([
            "--group-key",
            GROUP_KEY,
            "--endpoint",
            "https://127.0.0.1:1",
            "--deadline",
            "2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("failed to get an answer"))
        .stderr(predicate::str::contains(GROUP_KEY).not())
        .stderr(predicate::str::contains("SharedAccessSignature").not());
}
