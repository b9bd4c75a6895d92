//! The `iotc` binary's IoT Central commands against the real emulator over TLS on loopback:
//! every command, table and JSON output, profiles, error rendering and exit codes.

use crate::common_central;

use common_central::{root_ca, Emu};
use iotc::emulator::stats::counter;
use predicates::prelude::*;
use serde_json::Value;
use std::path::Path;

fn json_of(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Runs `iotc ARGS --output json` against the emulator and parses stdout.
fn j(emu: &Emu, args: &[&str]) -> Value {
    let out = emu
        .iotc()
        .args(args)
        .args(["--output", "json"])
        .output()
        .unwrap();
    json_of(&out)
}

/// Runs `iotc ARGS` (table output) and returns stdout.
fn t(emu: &Emu, args: &[&str]) -> String {
    let out = emu.iotc().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "iotc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(v: &Value) -> Vec<String> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            x["id"]
                .as_str()
                .or(x["@id"].as_str())
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn org_role_user_and_api_token_commands() {
    let emu = Emu::start();
    // org
    let o = j(
        &emu,
        &["org", "create", "seattle", "--display-name", "Seattle"],
    );
    assert_eq!(o["id"], "seattle");
    j(
        &emu,
        &[
            "org",
            "create",
            "redmond",
            "--display-name",
            "Redmond",
            "--parent",
            "seattle",
        ],
    );
    assert_eq!(j(&emu, &["org", "get", "redmond"])["parent"], "seattle");
    let table = t(&emu, &["org", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(
        table.contains("redmond") && table.contains("Seattle"),
        "{table}"
    );
    let up = j(
        &emu,
        &["org", "update", "redmond", "--display-name", "Redmond WA"],
    );
    assert_eq!(up["displayName"], "Redmond WA");
    assert!(t(&emu, &["org", "delete", "redmond"]).contains("deleted"));
    assert_eq!(ids(&j(&emu, &["org", "list"])), vec!["seattle"]);

    // role
    let roles = j(&emu, &["role", "list"]);
    assert!(roles["value"].as_array().unwrap().len() >= 3);
    assert_eq!(
        j(&emu, &["role", "get", "operator"])["id"],
        "ae2c9854-393b-4f97-8c42-479d70ce626e"
    );

    // user: email, service principal, AD group
    let u = j(
        &emu,
        &[
            "user",
            "create",
            "alice",
            "--email",
            "alice@contoso.com",
            "--role",
            "operator",
        ],
    );
    assert_eq!(u["type"], "email");
    let sp = j(
        &emu,
        &[
            "user",
            "create",
            "ci-bot",
            "--tenant-id",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "--object-id",
            "a8f1fe36-3ea5-4f2a-8ad8-1a2e0f3b6a2b",
            "--role",
            "org-admin",
            "--org",
            "seattle",
        ],
    );
    assert_eq!(sp["type"], "servicePrincipal");
    assert_eq!(sp["roles"][0]["organization"], "seattle");
    let g = j(
        &emu,
        &[
            "user",
            "create",
            "ops",
            "--tenant-id",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "--object-id",
            "0b0d9a8e-5b0a-4e39-8bd5-2f4b1f0b1c2d",
            "--ad-group",
            "--role",
            "builder",
        ],
    );
    assert_eq!(g["type"], "adGroup");
    assert_eq!(
        j(&emu, &["user", "get", "alice"])["email"],
        "alice@contoso.com"
    );
    let up = j(
        &emu,
        &[
            "user", "update", "alice", "--role", "builder", "--org", "seattle",
        ],
    );
    assert_eq!(
        up["roles"][0]["role"],
        "344138e9-8de4-4497-8c54-5237e96d6aaf"
    );
    let table = t(&emu, &["user", "list", "--max-page-size", "1"]);
    assert!(table.contains("Builder@seattle"), "{table}");
    assert!(
        table.contains("servicePrincipal") && table.contains("adGroup"),
        "{table}"
    );
    t(&emu, &["user", "delete", "ops"]);
    assert_eq!(
        j(&emu, &["user", "list"])["value"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // api-token: the value is shown once, and works
    let tok = j(
        &emu,
        &["api-token", "create", "line-1", "--role", "operator"],
    );
    let value = tok["token"].as_str().unwrap().to_owned();
    assert!(value.starts_with("SharedAccessSignature "));
    let listed = j(&emu, &["api-token", "list"]);
    assert!(listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("token").is_none()));
    assert!(ids(&listed).contains(&"line-1".to_owned()));
    assert!(j(&emu, &["api-token", "get", "line-1"])
        .get("token")
        .is_none());
    emu.iotc()
        .env("IOTC_API_TOKEN", &value)
        .args(["device", "list"])
        .assert()
        .success();
    let table = t(
        &emu,
        &["api-token", "create", "line-2", "--role", "operator"],
    );
    assert!(table.contains("token: SharedAccessSignature "), "{table}");
    t(&emu, &["api-token", "delete", "line-1"]);
    emu.iotc()
        .env("IOTC_API_TOKEN", &value)
        .args(["device", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("HTTP 401"));
}

#[test]
fn device_commands() {
    let emu = Emu::start();
    let ca = root_ca();
    let leaf = ca
        .issue_device(
            &iotc::ids::RegistrationId::new("cam-1").unwrap(),
            &Default::default(),
        )
        .unwrap();
    let cert = write(emu.dir.path(), "cam-1_cert.pem", &leaf.cert_pem);
    j(
        &emu,
        &["org", "create", "seattle", "--display-name", "Seattle"],
    );
    let d = j(
        &emu,
        &[
            "device",
            "create",
            "therm-1",
            "--display-name",
            "Thermostat 1",
            "--simulated",
            "--org",
            "seattle",
        ],
    );
    assert_eq!(d["simulated"], true);
    assert_eq!(d["enabled"], true);
    assert_eq!(d["organizations"][0], "seattle");
    for i in 2..=4 {
        j(
            &emu,
            &[
                "device",
                "create",
                &format!("therm-{i}"),
                "--display-name",
                &format!("Thermostat {i}"),
            ],
        );
    }
    j(
        &emu,
        &[
            "device",
            "create",
            "cam-1",
            "--display-name",
            "Camera",
            "--disabled",
        ],
    );
    assert_eq!(j(&emu, &["device", "get", "cam-1"])["enabled"], false);
    let up = j(
        &emu,
        &[
            "device",
            "update",
            "cam-1",
            "--enabled",
            "true",
            "--display-name",
            "Camera 1",
        ],
    );
    assert_eq!(up["enabled"], true);
    assert_eq!(up["displayName"], "Camera 1");

    // list: all pages, and the preview query options
    assert_eq!(
        ids(&j(&emu, &["device", "list", "--max-page-size", "2"])).len(),
        5
    );
    let sorted = j(
        &emu,
        &[
            "device",
            "list",
            "--filter",
            "contains(displayName, 'Thermostat')",
            "--orderby",
            "displayName desc",
            "--max-page-size",
            "3",
        ],
    );
    assert_eq!(
        ids(&sorted),
        vec!["therm-4", "therm-3", "therm-2", "therm-1"]
    );
    let table = t(&emu, &["device", "list"]);
    assert!(
        table.lines().next().unwrap().contains("PROVISIONED"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 6, "{table}");

    // credentials
    let creds = j(&emu, &["device", "credentials", "therm-1"]);
    assert!(!creds["idScope"].as_str().unwrap().is_empty());
    assert!(t(&emu, &["device", "credentials", "therm-1"]).contains("idScope"));

    // attestation: generated symmetric keys, explicit keys, X.509, TPM, delete
    let a = j(
        &emu,
        &["device", "attestation", "set", "therm-1", "--symmetric-key"],
    );
    assert_eq!(a["type"], "symmetricKey");
    let key = a["symmetricKey"]["primaryKey"].as_str().unwrap().to_owned();
    assert_eq!(
        j(&emu, &["device", "attestation", "get", "therm-1"])["symmetricKey"]["primaryKey"],
        key.as_str()
    );
    let k = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let k_file = write(emu.dir.path(), "k.txt", &format!("{k}\n"));
    let a = j(
        &emu,
        &[
            "device",
            "attestation",
            "set",
            "therm-2",
            "--symmetric-key",
            "--primary-key-file",
            &k_file,
            "--secondary-key-file",
            &k_file,
        ],
    );
    assert_eq!(a["symmetricKey"]["secondaryKey"], k);
    let a = j(
        &emu,
        &["device", "attestation", "set", "cam-1", "--cert", &cert],
    );
    assert_eq!(
        a["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"],
        iotc::cert::sha1_thumbprint(&leaf.cert_der).as_str()
    );
    let table = t(&emu, &["device", "attestation", "get", "cam-1"]);
    assert!(
        table.contains(&iotc::cert::sha1_thumbprint(&leaf.cert_der)),
        "{table}"
    );
    t(&emu, &["device", "attestation", "delete", "cam-1"]);
    emu.iotc()
        .args(["device", "attestation", "get", "cam-1"])
        .assert()
        .code(2);
    emu.iotc()
        .args([
            "device",
            "attestation",
            "set",
            "cam-1",
            "--symmetric-key",
            "--primary-key-file",
            &write(emu.dir.path(), "short.txt", "short"),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("base64"));

    t(&emu, &["device", "delete", "therm-4"]);
    emu.iotc()
        .args(["device", "get", "therm-4"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("Devices_Get failed: HTTP 404"));
}

#[test]
fn device_group_and_template_commands() {
    let emu = Emu::start();
    emu.block_on(async {
        let template = iotc::central::models::DeviceTemplate {
            id: None,
            types: vec!["ModelDefinition".into(), "DeviceModel".into()],
            etag: None,
            display_name: Some("Thermostat".into()),
            description: None,
            capability_model: serde_json::json!({"@id": "dtmi:contoso:Thermostat;1",
                "@type": "Interface", "contents": [], "@context": "dtmi:dtdl:context;2"}),
        };
        emu.client()
            .create_device_template("dtmi:contoso:Thermostat;1", &template)
            .await
            .unwrap();
    });
    assert_eq!(
        ids(&j(&emu, &["device-template", "list"])),
        vec!["dtmi:contoso:Thermostat;1"]
    );
    assert!(t(&emu, &["device-template", "list", "--max-page-size", "5"]).contains("Thermostat"));
    assert_eq!(
        j(
            &emu,
            &["device-template", "get", "dtmi:contoso:Thermostat;1"]
        )["displayName"],
        "Thermostat"
    );
    for i in 0..4 {
        let mut args = vec![
            "device".to_owned(),
            "create".into(),
            format!("d-{i}"),
            "--display-name".into(),
            format!("D {i}"),
            "--template".into(),
            "dtmi:contoso:Thermostat;1".into(),
        ];
        if i % 2 == 0 {
            args.push("--simulated".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        j(&emu, &args);
    }
    let g = j(
        &emu,
        &[
            "device-group",
            "create",
            "sim",
            "--display-name",
            "Simulated",
            "--filter",
            "SELECT * FROM devices WHERE $simulated = true",
            "--description",
            "even",
        ],
    );
    assert_eq!(g["id"], "sim");
    assert_eq!(
        j(&emu, &["device-group", "get", "sim"])["description"],
        "even"
    );
    let up = j(
        &emu,
        &[
            "device-group",
            "update",
            "sim",
            "--display-name",
            "Simulated ones",
        ],
    );
    assert_eq!(up["displayName"], "Simulated ones");
    assert_eq!(ids(&j(&emu, &["device-group", "list"])), vec!["sim"]);
    let mut members = ids(&j(
        &emu,
        &["device-group", "devices", "sim", "--max-page-size", "1"],
    ));
    members.sort();
    assert_eq!(members, vec!["d-0", "d-2"]);
    assert!(t(&emu, &["device-group", "devices", "sim"]).contains("d-2"));
    t(&emu, &["device-group", "delete", "sim"]);
    assert!(ids(&j(&emu, &["device-group", "list"])).is_empty());
    emu.iotc()
        .args(["device-group", "update", "sim"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("nothing to update"));
}

#[test]
fn enrollment_group_commands_and_proof_of_possession() {
    let emu = Emu::start();
    let ca = root_ca();
    let ca_file = write(emu.dir.path(), "root_cert.pem", ca.cert_pem());
    let g = j(
        &emu,
        &[
            "enrollment-group",
            "create",
            "line-1",
            "--display-name",
            "Line 1",
            "--attestation",
            "x509",
        ],
    );
    assert_eq!(g["type"], "iot");
    assert_eq!(g["attestation"]["type"], "x509");
    let k = j(
        &emu,
        &[
            "enrollment-group",
            "create",
            "gw",
            "--display-name",
            "Gateways",
            "--attestation",
            "symmetric-key",
            "--type",
            "iot-edge",
            "--disabled",
        ],
    );
    assert_eq!(k["type"], "iotEdge");
    assert_eq!(k["enabled"], false);
    assert!(k["attestation"]["symmetricKey"]["primaryKey"].is_string());
    let up = j(
        &emu,
        &["enrollment-group", "update", "gw", "--enabled", "true"],
    );
    assert_eq!(up["enabled"], true);
    assert_eq!(ids(&j(&emu, &["enrollment-group", "list"])).len(), 2);
    assert_eq!(
        j(&emu, &["enrollment-group", "get", "gw"])["displayName"],
        "Gateways"
    );

    let c = j(
        &emu,
        &[
            "enrollment-group",
            "cert",
            "set",
            "line-1",
            "--entry",
            "primary",
            "--cert",
            &ca_file,
        ],
    );
    assert_eq!(c["verified"], false);
    let thumb = iotc::cert::sha1_thumbprint(ca.cert_der());
    assert_eq!(c["info"]["sha1Thumbprint"], thumb.as_str());
    let table = t(
        &emu,
        &[
            "enrollment-group",
            "cert",
            "get",
            "line-1",
            "--entry",
            "primary",
        ],
    );
    assert!(table.contains(&thumb) && table.contains("no"), "{table}");
    let table = t(&emu, &["enrollment-group", "list"]);
    assert!(table.contains(&format!("unverified {thumb}")), "{table}");

    let code = j(
        &emu,
        &[
            "enrollment-group",
            "verification-code",
            "line-1",
            "--entry",
            "primary",
        ],
    )["verificationCode"]
        .as_str()
        .unwrap()
        .to_owned();
    let proof = ca.issue_verification(&code, &Default::default()).unwrap();
    let proof_file = write(emu.dir.path(), "verification_cert.pem", &proof.cert_pem);
    let out = t(
        &emu,
        &[
            "enrollment-group",
            "verify",
            "line-1",
            "--entry",
            "primary",
            "--cert",
            &proof_file,
        ],
    );
    assert!(out.contains("verified"), "{out}");
    assert_eq!(
        j(&emu, &["enrollment-group", "cert", "get", "line-1"])["verified"],
        true
    );

    // secondary, self-attested, then removed
    let other = root_ca();
    let other_file = write(emu.dir.path(), "other_cert.pem", other.cert_pem());
    let c = j(
        &emu,
        &[
            "enrollment-group",
            "cert",
            "set",
            "line-1",
            "--entry",
            "secondary",
            "--cert",
            &other_file,
            "--verified",
        ],
    );
    assert_eq!(c["verified"], true);
    t(
        &emu,
        &[
            "enrollment-group",
            "cert",
            "delete",
            "line-1",
            "--entry",
            "secondary",
        ],
    );
    emu.iotc()
        .args([
            "enrollment-group",
            "cert",
            "get",
            "line-1",
            "--entry",
            "secondary",
        ])
        .assert()
        .code(2);
    // a key file is not a certificate
    let not_cert = write(
        emu.dir.path(),
        "key.pem",
        "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
    );
    emu.iotc()
        .args([
            "enrollment-group",
            "cert",
            "set",
            "line-1",
            "--cert",
            &not_cert,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no CERTIFICATE"));
    t(&emu, &["enrollment-group", "delete", "gw"]);
    assert_eq!(ids(&j(&emu, &["enrollment-group", "list"])), vec!["line-1"]);
}

#[test]
fn errors_print_one_line_with_the_request_id_and_exit_2() {
    let emu = Emu::start();
    let out = emu
        .iotc()
        .args(["device", "get", "missing"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("error: Devices_Get failed: HTTP 404 "),
        "{err}"
    );
    assert!(lines[0].contains("(requestId "), "{err}");
    assert!(out.stdout.is_empty());

    // the service's 400 for an invalid id pattern is kept as is
    emu.iotc()
        .args(["org", "update", "Bad_Org", "--display-name", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "Organizations_Update failed: HTTP",
        ));
    // ids are checked before anything is sent
    emu.iotc()
        .args(["org", "create", "Bad_Org", "--display-name", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid organization id"));
    // missing settings
    emu.bare_iotc()
        .args(["device", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no application"));
    emu.bare_iotc()
        .args(["device", "list", "--app", &emu.api_url])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no credential"));
    // an untrusted server is a TLS error, not a retry loop
    emu.iotc()
        .env_remove("IOTC_CA_FILE")
        .args(["device", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("could not reach the service"));
    // a bad token
    emu.iotc()
        .env(
            "IOTC_API_TOKEN",
            "SharedAccessSignature sr=x&sig=y&skn=z&se=1",
        )
        .args(["role", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("HTTP 401"));
    // usage errors exit 2 as well
    emu.iotc()
        .args(["device", "create", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--display-name"));
}

#[test]
fn profiles_hold_the_connection_settings() {
    let emu = Emu::start();
    let config = emu.dir.path().join("config.json");
    let token_file = emu.dir.path().join("token.txt");
    std::fs::write(&token_file, &emu.admin_token).unwrap();
    emu.bare_iotc()
        .args(["config", "set", "local", "--app", &emu.api_url])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&emu.ca_path)
        .assert()
        .success();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a config holding a token is private");
    }
    // the first profile is the default: no flags needed
    emu.bare_iotc()
        .args(["org", "create", "seattle", "--display-name", "Seattle"])
        .assert()
        .success();
    let listed = emu.bare_iotc().args(["config", "list"]).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(
        listed.contains("local *") && listed.contains("set"),
        "{listed}"
    );
    assert!(!listed.contains(&emu.admin_token));
    let shown = emu
        .bare_iotc()
        .args(["config", "show", "local", "--output", "json"])
        .output()
        .unwrap();
    let shown = json_of(&shown);
    assert_eq!(shown["token"], "[set]");
    assert_eq!(shown["app"], emu.api_url.as_str());

    // a second profile without token; --profile selects, flags override
    emu.bare_iotc()
        .args(["config", "set", "broken", "--app", "https://127.0.0.1:9"])
        .assert()
        .success();
    emu.bare_iotc()
        .args(["--profile", "local", "org", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("seattle"));
    emu.bare_iotc()
        .args(["--profile", "nope", "org", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no profile \"nope\""));
    emu.bare_iotc()
        .args(["config", "use", "broken"])
        .assert()
        .success();
    emu.bare_iotc()
        .args(["org", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no credential"));
    emu.bare_iotc()
        .args(["org", "list", "--profile", "broken", "--app", &emu.api_url])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca-file")
        .arg(&emu.ca_path)
        .assert()
        .success();
    emu.bare_iotc()
        .args(["config", "delete", "broken"])
        .assert()
        .success();
    let path = emu.bare_iotc().args(["config", "path"]).output().unwrap();
    assert_eq!(
        String::from_utf8(path.stdout).unwrap().trim(),
        config.to_str().unwrap()
    );
    let file: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(file["profiles"].get("broken").is_none());
    assert!(file["default"].is_null());
}

#[test]
fn completions_and_help_examples() {
    let emu = Emu::start();
    emu.bare_iotc()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("enrollment-group"));
    for args in [
        &["org", "create", "--help"][..],
        &["device", "attestation", "set", "--help"],
        &["enrollment-group", "verify", "--help"],
        &["api-token", "create", "--help"],
        &["config", "set", "--help"],
    ] {
        emu.bare_iotc()
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}

#[test]
fn a_cli_run_rides_out_throttling_and_faults() {
    let emu = Emu::start_with(Some(5));
    emu.set(serde_json::json!({"faults": {"seed": 11, "errorRate": 0.2, "dropRate": 0.2}}));
    for i in 0..6 {
        j(
            &emu,
            &["device", "create", &format!("r-{i}"), "--display-name", "R"],
        );
    }
    // The list's six pages come faster than the 2 requests/s now allowed: the rate limit
    // answers 429 + Retry-After, which the run waits out.
    emu.set(serde_json::json!({"rateLimit": 2}));
    let listed = j(&emu, &["device", "list", "--max-page-size", "1"]);
    assert_eq!(
        ids(&listed),
        (0..6).map(|i| format!("r-{i}")).collect::<Vec<_>>()
    );
    // What the run rode out, as the emulator counted it: 503s, dropped connections and the
    // rate limit's 429s all happened.
    let stats = emu.stats();
    eprintln!(
        "faults {:?}, rate-limited {}",
        stats.of(counter::FAULTS),
        stats.total(counter::RATE_LIMITED)
    );
    assert!(stats.get(counter::FAULTS, "api.503") > 0, "{stats:?}");
    assert!(stats.get(counter::FAULTS, "api.drop") > 0, "{stats:?}");
    assert!(stats.get(counter::RATE_LIMITED, "api") > 0, "{stats:?}");
}

/// The usage line of the parse error of `iotc ARGS` (split at spaces), and the whole stderr.
fn usage_error(emu: &Emu, args: &str) -> (String, String) {
    let out = emu
        .iotc()
        .env("IOTC_ID_SCOPE", "0ne00000001")
        .env("IOTC_DPS_ENDPOINT", &emu.api_url)
        .args(args.split_whitespace())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let usage = stderr
        .lines()
        .find(|l| l.starts_with("Usage: "))
        .unwrap_or_else(|| panic!("no usage line in {stderr}"))
        .to_owned();
    (usage, stderr)
}

#[test]
fn usage_errors_name_what_is_missing_not_the_environment() {
    // Regression: with IOTC_APP_URL, IOTC_API_TOKEN and IOTC_CA_FILE exported (as every user
    // of the emulator has them), the usage line of a parse error listed
    // `--app <APP> --token <TOKEN> --ca-file <CA_FILE>` as if the command required them.
    let emu = Emu::start();
    let (usage, stderr) = usage_error(&emu, "device attestation set");
    assert_eq!(usage, "Usage: iotc device attestation set <ID>", "{stderr}");
    assert!(
        stderr.contains("required arguments were not provided"),
        "{stderr}"
    );
    assert!(stderr.contains("<ID>"), "{stderr}");

    let (usage, stderr) = usage_error(&emu, "device attestation set d1 --primary-key-file k.txt");
    assert!(
        stderr.contains("--symmetric-key"),
        "names what is missing: {stderr}"
    );
    assert_eq!(
        usage, "Usage: iotc device attestation set --symmetric-key --primary-key-file <FILE> <ID>",
        "{stderr}"
    );

    // Every command, not only this one: a conflict, a subcommand elsewhere, and the workflow
    // commands' own environment variables (IOTC_ID_SCOPE, IOTC_DPS_ENDPOINT).
    let (usage, stderr) = usage_error(&emu, "device attestation set d1 --cert a.pem --tpm k");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert_eq!(
        usage, "Usage: iotc device attestation set --cert <CERT> <ID>",
        "{stderr}"
    );
    let (usage, stderr) = usage_error(&emu, "org create seattle");
    assert!(stderr.contains("--display-name"), "{stderr}");
    assert!(!usage.contains("--app"), "{stderr}");
    let (usage, stderr) = usage_error(&emu, "provision --group g --out o");
    assert!(stderr.contains("--journal"), "{stderr}");
    for env_backed in [
        "--app",
        "--token",
        "--ca-file",
        "--id-scope",
        "--dps-endpoint",
    ] {
        assert!(!usage.contains(env_backed), "{env_backed} in {usage}");
    }
    // A value typed on the command line still shows.
    let (usage, _) = usage_error(&emu, "device attestation set --app x");
    assert!(usage.contains("--app <URL>"), "{usage}");

    // The help says why --primary-key-file needs --symmetric-key.
    let help = emu
        .bare_iotc()
        .args(["device", "attestation", "set", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let primary = help
        .split("--primary-key-file <FILE>")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        primary.contains("Needs --symmetric-key"),
        "--primary-key-file help says what it needs: {primary}"
    );
}

/// SHA-1 thumbprint as openssl computes it (uppercase hex, no colons).
fn openssl_sha1(cert: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha1", "-in", cert])
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_uppercase()
}

#[test]
fn device_attestation_update_sends_a_typed_merge_patch() {
    let emu = Emu::start();
    let ca = root_ca();
    let mut certs = Vec::new();
    for name in ["cam-1", "cam-1-next"] {
        let leaf = ca
            .issue_device(
                &iotc::ids::RegistrationId::new(name).unwrap(),
                &Default::default(),
            )
            .unwrap();
        certs.push(write(
            emu.dir.path(),
            &format!("{name}_cert.pem"),
            &leaf.cert_pem,
        ));
    }
    for id in ["sk-1", "cam-1", "tpm-1", "bare-1"] {
        j(&emu, &["device", "create", id, "--display-name", id]);
    }
    let k1 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    let k2 = "HxwdGhsYGRYXFBUSExAREA4PDA0KCwgJBgcEBQIDAAE=";
    let k1_file = write(emu.dir.path(), "k1.txt", k1);
    let k2_file = write(emu.dir.path(), "k2.txt", k2);

    // Symmetric keys: one key changes, the other stays (merge-patch semantics).
    j(
        &emu,
        &[
            "device",
            "attestation",
            "set",
            "sk-1",
            "--symmetric-key",
            "--primary-key-file",
            &k1_file,
            "--secondary-key-file",
            &k1_file,
        ],
    );
    let a = j(
        &emu,
        &[
            "device",
            "attestation",
            "update",
            "sk-1",
            "--secondary-key-file",
            &k2_file,
        ],
    );
    assert_eq!(a["type"], "symmetricKey");
    assert_eq!(a["symmetricKey"]["primaryKey"], k1);
    assert_eq!(a["symmetricKey"]["secondaryKey"], k2);
    let got = j(&emu, &["device", "attestation", "get", "sk-1"]);
    assert_eq!(got, a, "the change is stored");
    emu.iotc()
        .args([
            "device",
            "attestation",
            "update",
            "sk-1",
            "--primary-key-file",
            &write(emu.dir.path(), "short.txt", "short"),
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "--primary-key-file is not valid base64",
        ));

    // X.509: add a secondary certificate, then remove it; the primary stays.
    j(
        &emu,
        &["device", "attestation", "set", "cam-1", "--cert", &certs[0]],
    );
    let a = j(
        &emu,
        &[
            "device",
            "attestation",
            "update",
            "cam-1",
            "--secondary-cert",
            &certs[1],
        ],
    );
    let client_certs = &a["x509"]["clientCertificates"];
    assert_eq!(
        client_certs["primary"]["info"]["sha1Thumbprint"],
        openssl_sha1(&certs[0]).as_str()
    );
    assert_eq!(
        client_certs["secondary"]["info"]["sha1Thumbprint"],
        openssl_sha1(&certs[1]).as_str()
    );
    let table = t(&emu, &["device", "attestation", "get", "cam-1"]);
    assert!(table.contains("x509 secondary"), "{table}");
    let a = j(
        &emu,
        &[
            "device",
            "attestation",
            "update",
            "cam-1",
            "--remove-secondary-cert",
        ],
    );
    assert!(
        a["x509"]["clientCertificates"].get("secondary").is_none(),
        "{a}"
    );
    assert_eq!(
        a["x509"]["clientCertificates"]["primary"]["info"]["sha1Thumbprint"],
        openssl_sha1(&certs[0]).as_str()
    );

    // A key on an X.509 attestation: the typed patch makes it a symmetric-key one with one
    // key, which the service refuses; nothing changes.
    emu.iotc()
        .args([
            "device",
            "attestation",
            "update",
            "cam-1",
            "--primary-key-file",
            &k1_file,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("secondaryKey"));
    assert_eq!(
        j(&emu, &["device", "attestation", "get", "cam-1"])["type"],
        "x509"
    );

    // TPM.
    j(
        &emu,
        &["device", "attestation", "set", "tpm-1", "--tpm", k1],
    );
    let a = j(
        &emu,
        &["device", "attestation", "update", "tpm-1", "--tpm", k2],
    );
    assert_eq!(a["tpm"]["endorsementKey"], k2);

    // A device without an attestation: 404; no change given, or two kinds: usage errors.
    emu.iotc()
        .args(["device", "attestation", "update", "bare-1", "--tpm", k1])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("404"));
    emu.iotc()
        .args(["device", "attestation", "update", "sk-1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "required arguments were not provided",
        ));
    emu.iotc()
        .args([
            "device",
            "attestation",
            "update",
            "sk-1",
            "--cert",
            &certs[0],
            "--tpm",
            k1,
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));

    // The emulator refuses a patch whose member does not fit the attestation's type (merged
    // in and ignored, it would have answered 200 for nothing).
    let c = emu.client();
    let err =
        emu.block_on(c.update_device_attestation(
            "sk-1",
            &serde_json::json!({"tpm": {"endorsementKey": k1}}),
        ))
        .unwrap_err();
    assert!(err.to_string().contains("400"), "{err}");
    assert_eq!(
        j(&emu, &["device", "attestation", "get", "sk-1"])["symmetricKey"]["secondaryKey"],
        k2
    );
}

#[test]
fn create_checks_the_id_before_anything_is_sent() {
    let emu = Emu::start();
    let cases: [(&[&str], &str); 5] = [
        (
            &["org", "create", "Bad_Org", "--display-name", "x"],
            "organization id",
        ),
        (
            &[
                "user",
                "create",
                "bad user",
                "--email",
                "a@contoso.com",
                "--role",
                "operator",
            ],
            "user id",
        ),
        (
            &["device", "create", "bad dev", "--display-name", "x"],
            "device id",
        ),
        (
            &[
                "device-group",
                "create",
                "bad group",
                "--display-name",
                "x",
                "--filter",
                "SELECT * FROM devices",
            ],
            "device group id",
        ),
        (
            &[
                "enrollment-group",
                "create",
                "bad_group",
                "--display-name",
                "x",
                "--attestation",
                "x509",
            ],
            "enrollment group id",
        ),
    ];
    for (args, kind) in cases {
        let out = emu.iotc().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid {kind}")),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("failed: HTTP"),
            "{args:?} was refused by the service, not before sending: {stderr}"
        );
    }
}
