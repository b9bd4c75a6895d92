//! The official Node DPS device SDK over MQTT (`azure-iot-provisioning-device-mqtt` with
//! `azure-iot-security-x509` / `-symmetric-key`, pinned versions from npm) against the
//! emulator's MQTT listener: X.509 through a root and through an intermediate, SAS, TLS 1.2,
//! and every refusal, each with the service's error code and the emulator's message.
//!
//! The SDK is installed by this test (npm, into the CI cache folder: `$IOTC_CI_CACHE`, else
//! `~/.cache/iotc-ci`), never globally; `node` and `npm` must be on the PATH (`.ci/run`
//! installs them when missing). The script the SDK runs in is `tests/it/node/dps_register.js`.

use crate::common_dps::*;
use iotc::cert::{CaOptions, LeafOptions};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The SDK packages, pinned: a new version is a deliberate change of this file.
const PACKAGE_JSON: &str = r#"{
  "private": true,
  "description": "iotc test dependency: the official Node DPS device SDK (tests/it/dps_mqtt_node.rs)",
  "dependencies": {
    "azure-iot-provisioning-device": "1.9.1",
    "azure-iot-provisioning-device-mqtt": "1.8.1",
    "azure-iot-security-x509": "1.7.12",
    "azure-iot-security-symmetric-key": "1.8.2"
  }
}
"#;

/// The folder holding `node_modules` with the SDK, installed once per machine.
fn sdk() -> &'static Path {
    static SDK: OnceLock<PathBuf> = OnceLock::new();
    SDK.get_or_init(|| {
        let cache = std::env::var_os("IOTC_CI_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/iotc-ci")
            });
        let dir = cache.join("node-dps-sdk");
        std::fs::create_dir_all(&dir).unwrap();
        let marker = dir.join("node_modules/.iotc-installed");
        if std::fs::read_to_string(&marker).ok().as_deref() == Some(PACKAGE_JSON) {
            return dir;
        }
        std::fs::write(dir.join("package.json"), PACKAGE_JSON).unwrap();
        let out = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--ignore-scripts"])
            .arg("--no-package-lock")
            .current_dir(&dir)
            .output()
            .expect("npm is on the PATH (.ci/run installs node and npm when missing)");
        assert!(
            out.status.success(),
            "npm install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&marker, PACKAGE_JSON).unwrap();
        dir
    })
}

/// Runs the SDK on `cases`; one outcome per case.
fn run_sdk(env: &Env, cases: &[Value], node_options: Option<&str>) -> Vec<Value> {
    use std::io::Write;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/node/dps_register.js");
    let mut cmd = std::process::Command::new("node");
    cmd.arg(script)
        .env("NODE_PATH", sdk().join("node_modules"))
        .env("NODE_EXTRA_CA_CERTS", &env.emu.info().ca_cert)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    match node_options {
        Some(o) => cmd.env("NODE_OPTIONS", o),
        None => cmd.env_remove("NODE_OPTIONS"),
    };
    let mut child = cmd.spawn().expect("node is on the PATH");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(cases.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let outcomes: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
    assert_eq!(outcomes.len(), cases.len());
    outcomes
}

/// Writes a device's certificate (its chain, or the leaf alone) and key where the SDK reads
/// them, under a name of its own.
fn files(dir: &Path, dev: &iotc::cert::Issued, chain: bool) -> (PathBuf, PathBuf) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let cert = dir.join(format!("device-{n}_cert.pem"));
    let key = dir.join(format!("device-{n}_key.pem"));
    let pem = if chain { &dev.chain_pem } else { &dev.cert_pem };
    std::fs::write(&cert, pem).unwrap();
    std::fs::write(&key, dev.key.as_ref().unwrap().pkcs8_pem().expose()).unwrap();
    (cert, key)
}

fn x509_case(env: &Env, rid: &str, (cert, key): (PathBuf, PathBuf)) -> Value {
    json!({
        "transport": "mqtt", "host": env.mqtt_host(), "idScope": env.id_scope().as_str(),
        "registrationId": rid, "certFile": cert, "keyFile": key,
    })
}

fn sas_case(env: &Env, rid: &str, key: &str) -> Value {
    json!({
        "transport": "mqtt", "host": env.mqtt_host(), "idScope": env.id_scope().as_str(),
        "registrationId": rid, "symmetricKey": key,
    })
}

/// A refusal of the SDK: its error class and the service's message.
fn refused(outcome: &Value) -> (String, String) {
    assert_eq!(outcome["ok"], false, "{outcome}");
    let message = outcome["result"]["message"]
        .as_str()
        .or_else(|| outcome["result"]["registrationState"]["errorMessage"].as_str())
        .unwrap_or_else(|| outcome["message"].as_str().unwrap_or_default())
        .to_owned();
    (
        outcome["name"].as_str().unwrap_or_default().to_owned(),
        message,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_sdk_registers_over_mqtt_and_reads_every_refusal() {
    let env = start().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = root();
    env.verified_group("node-root", &ca).await;
    let root2 = iotc::cert::Authority::new_root(&CaOptions::default()).unwrap();
    let inter = root2.issue_intermediate(&CaOptions::default()).unwrap();
    env.verified_group("node-inter", &root2).await;
    let pending = root();
    env.x509_group("node-pending", false).await;
    env.upload("node-pending", &pending).await;
    let foreign = root();
    let group_key = env.sas_group("node-sas").await;
    let device_key = |id: &str| {
        iotc::dps::derive_device_key(group_key.expose(), id)
            .unwrap()
            .expose()
            .to_owned()
    };
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_device(
            &rid("node-expired"),
            &LeafOptions {
                not_before: Some(now - time::Duration::days(10)),
                not_after: Some(now - time::Duration::days(1)),
                ..LeafOptions::default()
            },
        )
        .unwrap();
    let other_key = iotc::dps::derive_device_key(group_key.expose(), "someone-else").unwrap();

    // An X.509 device of `issuer` registering as `rid`, its chain whole or its leaf alone.
    let x509 = |rid: &str, dev: &iotc::cert::Issued, chain: bool| {
        x509_case(&env, rid, files(dir.path(), dev, chain))
    };
    let cases = vec![
        x509("node-root-1", &device(&ca, "node-root-1"), true),
        x509("node-inter-1", &device(&inter, "node-inter-1"), true),
        sas_case(&env, "node-sas-1", &device_key("node-sas-1")),
        // Refusals.
        x509("node-u-1", &device(&pending, "node-u-1"), true),
        x509("node-f-1", &device(&foreign, "node-f-1"), true),
        x509("node-cn-b", &device(&ca, "node-cn-a"), true),
        x509("node-inc-1", &device(&inter, "node-inc-1"), false),
        x509("node-expired", &expired, true),
        sas_case(&env, "node-sas-2", other_key.expose()),
        json!({
            "transport": "mqtt", "host": env.mqtt_host(), "idScope": "0ne99999999",
            "registrationId": "node-sas-3", "symmetricKey": device_key("node-sas-3"),
        }),
    ];
    let out = run_sdk(&env, &cases, None);

    let ok = |o: &Value, id: &str, group: &str| {
        assert_eq!(o["ok"], true, "{o}");
        let r = &o["result"];
        assert_eq!(r["deviceId"], id, "{o}");
        assert_eq!(r["status"], "assigned");
        assert!(r["assignedHub"]
            .as_str()
            .unwrap()
            .ends_with(".azure-devices.net"));
        let g = r["x509"]["enrollmentGroupId"]
            .as_str()
            .or(r["symmetricKey"]["enrollmentGroupId"].as_str());
        assert_eq!(g, Some(group), "{o}");
    };
    ok(&out[0], "node-root-1", "node-root");
    ok(&out[1], "node-inter-1", "node-inter");
    ok(&out[2], "node-sas-1", "node-sas");
    // One registry: what the SDK registered over MQTT is the registration HTTPS reports.
    let https = env.device_client(&device(&ca, "node-root-1"));
    let state = https.status_lookup(&rid("node-root-1")).await.unwrap();
    assert_eq!(state.etag.as_deref(), out[0]["result"]["etag"].as_str());

    for (o, error_class, message) in [
        (&out[3], "UnauthorizedError", "unverified CA"),
        (&out[4], "UnauthorizedError", "foreign CA"),
        (&out[5], "UnauthorizedError", "CN mismatch"),
        (&out[6], "UnauthorizedError", "the chain is incomplete"),
        (&out[7], "UnauthorizedError", "expired"),
        (&out[8], "UnauthorizedError", "signature does not match"),
    ] {
        let (name, m) = refused(o);
        assert_eq!(name, error_class, "{o}");
        assert!(m.contains(message), "{message:?} not in {o}");
        assert_eq!(o["result"]["errorCode"], 401002, "{o}");
    }
    // A user name with another ID scope: the CONNACK refusal, as the SDK reports it.
    let (_, m) = refused(&out[9]);
    assert!(m.contains("Bad username or password"), "{}", out[9]);

    // A disabled enrollment: the SDK reads the `disabled` end of the operation.
    env.central
        .update_enrollment_group("node-sas", &serde_json::json!({"enabled": false}))
        .await
        .unwrap();
    // TLS 1.2 only, as older device stacks speak it.
    let out = run_sdk(
        &env,
        &[
            sas_case(&env, "node-sas-4", &device_key("node-sas-4")),
            x509("node-tls12", &device(&ca, "node-tls12"), true),
        ],
        Some("--tls-max-v1.2"),
    );
    let (name, m) = refused(&out[0]);
    assert_eq!(name, "SyntaxError", "{}", out[0]);
    assert!(m.contains("is disabled"), "{}", out[0]);
    assert_eq!(out[0]["result"]["status"], "disabled");
    ok(&out[1], "node-tls12", "node-root");
}
