//! Profiles and where each connection value comes from, through the real binary: `config set`
//! stores only what it was given, `config set --emulator` points every command at a running
//! emulator in one step, and the secrets of `onboard`/`provision` come from files, with errors
//! that say which flag or variable to give.

#![cfg(unix)]

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

/// The binary with nothing of the test's environment but `PATH`: no `IOTC_*` variable, and
/// its config file and home in `dir`.
fn iotc(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iotc"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("IOTC_CONFIG", dir.join("config.json"))
        .current_dir(dir)
        .timeout(Duration::from_secs(300));
    c
}

fn config_file(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// `iotc emulator` as its own process; killed (by its pid) when dropped.
struct EmulatorProcess {
    child: std::process::Child,
    ready: Value,
}

impl EmulatorProcess {
    fn start(data_dir: &Path) -> EmulatorProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
            .args(["emulator", "--data-dir"])
            .arg(data_dir)
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready = serde_json::from_str(&line).expect("the ready line");
        EmulatorProcess { child, ready }
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn config_set_stores_only_what_it_was_given_never_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    iotc(dir.path())
        .args(["config", "set", "other", "--app", "myapp"])
        .env("IOTC_APP_URL", "https://127.0.0.1:8443")
        .env(
            "IOTC_API_TOKEN",
            "SharedAccessSignature sr=emulator&sig=ADMIN&skn=a&se=1",
        )
        .env("IOTC_CA_FILE", "/tmp/emu/ca_cert.pem")
        .env("IOTC_DPS_ENDPOINT", "https://127.0.0.1:8444")
        .env("IOTC_ID_SCOPE", "0neEMULATOR")
        .assert()
        .success();
    let file = config_file(dir.path());
    assert_eq!(
        file["profiles"]["other"],
        serde_json::json!({"app": "myapp"}),
        "{file}"
    );
}

#[test]
fn config_set_reads_the_token_from_a_file_and_stores_the_dps_values() {
    let dir = tempfile::tempdir().unwrap();
    let token = "SharedAccessSignature sr=myapp&sig=SECRETSIG&skn=line&se=1";
    std::fs::write(dir.path().join("token.txt"), format!("{token}\nignored\n")).unwrap();
    iotc(dir.path())
        .args([
            "config",
            "set",
            "prod",
            "--app",
            "myapp",
            "--token-file",
            "token.txt",
        ])
        .args([
            "--dps-endpoint",
            "https://dps.example",
            "--id-scope",
            "0ne00000001",
        ])
        .assert()
        .success();
    let file = config_file(dir.path());
    assert_eq!(
        file["profiles"]["prod"],
        serde_json::json!({"app": "myapp", "token": token, "dpsEndpoint": "https://dps.example",
                           "idScope": "0ne00000001"}),
        "the token is the file's first line"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("config.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a file holding a token is private");
    }
    let shown = iotc(dir.path())
        .args(["config", "show", "prod", "--output", "json"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["token"], "[set]");
    assert_eq!(shown["dpsEndpoint"], "https://dps.example");
    assert_eq!(shown["idScope"], "0ne00000001");
    let listed = iotc(dir.path()).args(["config", "list"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("https://dps.example") && !listed.contains("SECRETSIG"),
        "{listed}"
    );

    // A token is never a flag's value; the error says what to use instead.
    iotc(dir.path())
        .args(["config", "set", "prod", "--token", token])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--token-file"));
}

#[test]
fn config_set_emulator_waits_for_the_emulator_and_skips_a_stale_ready_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("emu");
    // A ready record left by an earlier run: its port is closed and its token rotated away.
    EmulatorProcess::start(&data).stop();
    let stale: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("emulator.json")).unwrap())
            .unwrap();

    let waiting = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["config", "set", "local", "--emulator"])
        .arg(&data)
        .args(["--default", "--wait", "120"])
        .env_clear()
        .env("HOME", dir.path())
        .env("IOTC_CONFIG", dir.path().join("config.json"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let emu = EmulatorProcess::start(&data);
    let out = waiting.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = config_file(dir.path());
    let local = &file["profiles"]["local"];
    assert_eq!(file["default"], "local");
    for (key, field) in [
        ("app", "apiUrl"),
        ("token", "adminToken"),
        ("caFile", "caCert"),
        ("dpsEndpoint", "dpsEndpoint"),
        ("idScope", "idScope"),
    ] {
        assert_eq!(
            local[key], emu.ready[field],
            "{key} from the running emulator"
        );
    }
    assert_ne!(local["token"], stale["adminToken"], "not the stale record");

    // Nothing else is needed: the application, token, CA, DPS endpoint and ID scope all come
    // from the profile (with the global DPS endpoint the devices could not register).
    iotc(dir.path())
        .args([
            "onboard",
            "symmetric-key",
            "--group",
            "sk-1",
            "--count",
            "2",
        ])
        .args(["--prefix", "sk-", "--out", "bundles", "--no-progress"])
        .assert()
        .success();
    let bundle: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("bundles/sk-1/bundle.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(bundle["dpsEndpoint"], emu.ready["dpsEndpoint"]);
    assert_eq!(bundle["idScope"], emu.ready["idScope"]);
}

#[test]
fn config_set_emulator_gives_up_after_its_wait_and_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let set = ["config", "set", "local", "--emulator", "nowhere"];
    iotc(dir.path())
        .args(set)
        .args(["--wait", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "no running emulator in nowhere after 1 s",
        ))
        .stderr(predicate::str::contains("does not exist"))
        .stderr(predicate::str::contains("iotc emulator --data-dir nowhere"));
    assert!(!dir.path().join("config.json").exists(), "nothing saved");
    iotc(dir.path())
        .args(set)
        .args(["--app", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("do not also give --app"));
}

/// An emulator, a default profile for it, and CA keys encrypted with `pw.txt`.
fn emulator_with_encrypted_ca(dir: &Path) -> EmulatorProcess {
    let emu = EmulatorProcess::start(&dir.join("emu"));
    iotc(dir)
        .args(["config", "set", "local", "--emulator", "emu"])
        .assert()
        .success();
    std::fs::write(dir.join("pw.txt"), "a long passphrase\n").unwrap();
    iotc(dir)
        .args(["cert", "root", "--name", "root", "--out", "pki"])
        .args(["--password-file", "pw.txt"])
        .assert()
        .success();
    emu
}

/// One device `PREFIX1` of group line1, signed by that root CA, its bundle key unencrypted:
/// `iotc onboard x509 …` or, with a journal, `iotc provision …`.
fn one_device(d: &Path, prefix: &str, journal: Option<&str>) -> Command {
    let mut c = iotc(d);
    match journal {
        None => c.args(["onboard", "x509"]),
        Some(j) => c.args(["provision", "--journal", j, "--out", "bundles"]),
    };
    c.args([
        "--group", "line1", "--ca", "pki/root", "--count", "1", "--prefix", prefix,
    ])
    .args(["--no-password", "--no-progress"]);
    c
}

#[test]
fn onboard_and_provision_open_an_encrypted_ca_with_ca_password_file_and_say_so_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _emu = emulator_with_encrypted_ca(d);
    let hint = "the private key is encrypted: a password is required \
                (give --ca-password-file FILE or set IOTC_CA_PASSWORD)";
    let file = ["--ca-password-file", "pw.txt"];
    one_device(d, "ca-", None)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(hint));
    one_device(d, "ca-", None).args(file).assert().success();
    one_device(d, "pr-", Some("j1"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains(hint));
    one_device(d, "pr-", Some("j2"))
        .args(file)
        .assert()
        .success();
    // The environment variable works as well as the file.
    one_device(d, "pe-", Some("j3"))
        .env("IOTC_CA_PASSWORD", "a long passphrase")
        .assert()
        .success();
    for id in ["ca-1", "pr-1", "pe-1"] {
        let bundle = d.join("bundles").join(id).join("bundle.json");
        assert!(bundle.is_file(), "{}", bundle.display());
    }
}

#[test]
fn a_bundle_pfx_takes_its_password_from_pfx_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let _emu = emulator_with_encrypted_ca(d);
    std::fs::write(d.join("pfx.txt"), "pfx passphrase\n").unwrap();
    one_device(d, "px-", None)
        .args([
            "--ca-password-file",
            "pw.txt",
            "--pfx-password-file",
            "pfx.txt",
        ])
        .assert()
        .success();
    let pfx = d.join("bundles/px-1/px-1.pfx");
    assert!(pfx.is_file(), "{} missing", pfx.display());
    let openssl = |pass: &str| {
        std::process::Command::new("openssl")
            .args(["pkcs12", "-noout", "-passin", pass, "-in"])
            .arg(&pfx)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        openssl("pass:pfx passphrase"),
        "openssl opens it with the file's password"
    );
    assert!(!openssl("pass:wrong"), "and not with another");
}
