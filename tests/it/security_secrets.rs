//! Security matrix, part 2: secrets stay out of every output and log of the real binary,
//! even with `RUST_LOG=trace`, and every file holding one is 0600.
//!
//! Three real runs, each with `RUST_LOG=trace` and stdout + stderr collected:
//! - `iotc demo` (embedded emulator, X.509 group through an intermediate CA, proof of
//!   possession, a 3-device batch): searched for every private key it wrote (the EC scalar,
//!   in hex and base64 at each alignment) and for the emulator's admin token signature.
//! - `iotc emulator` (its own process, logging at trace) plus `iotc onboard symmetric-key`
//!   for 3 devices through DPS: searched for the group's primary and secondary keys, every
//!   derived device key, the admin token and any SAS signature (`sig=`).
//! - `iotc emulator` plus `iotc --auth service-principal` signing in at its Entra authority
//!   with a client secret, then with a certificate: searched for the secret, the
//!   certificate's RSA private exponent and any JWT (access token, client assertion).
//!
//! The emulator's one-line ready record on stdout carries the admin token by design (it is
//! how a script gets it); that line is the only place allowed to hold it.

use base64::Engine;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn iotc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iotc"));
    c.env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env_remove("IOTC_PROFILE")
        .env_remove("IOTC_APP_URL")
        .env_remove("IOTC_API_TOKEN");
    c
}

fn files_named(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files_named(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

/// The private scalar of an unencrypted PEM key (EC `priv`, RSA `privateExponent`), read by
/// the openssl CLI.
fn private_scalar(key_pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["pkey", "-noout", "-text", "-in"])
        .arg(key_pem)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "openssl pkey {}", key_pem.display());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut hex = String::new();
    let mut in_priv = false;
    for line in text.lines() {
        if line.starts_with("priv:") || line.starts_with("privateExponent:") {
            in_priv = true;
            continue;
        }
        if in_priv {
            if !line.starts_with(' ') {
                break;
            }
            hex.extend(line.trim().split(':').filter(|s| !s.is_empty()));
        }
    }
    let mut bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    // openssl prints a leading 00 when the top bit is set.
    while bytes.len() > 32 && bytes[0] == 0 {
        bytes.remove(0);
    }
    assert!(
        bytes.len() >= 32,
        "a private scalar in {}",
        key_pem.display()
    );
    bytes
}

/// Every text form a leaked secret could take in a log: hex (both cases), and base64 at the
/// three byte alignments (the middle of a longer base64 blob, such as a PEM body).
fn forms(secret: &[u8]) -> Vec<String> {
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let mut v = vec![hex.clone(), hex.to_uppercase()];
    for skip in 0..3 {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&secret[skip..]);
        // Drop the last 4 characters, which depend on the bytes that follow.
        v.push(b64[..b64.len().saturating_sub(4)].to_owned());
    }
    v.retain(|s| s.len() >= 16);
    v
}

/// stdout + stderr of a run that must have succeeded (else the end of it, in the panic).
fn succeeded(out: &std::process::Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}:\n{}",
        &text[text.len().saturating_sub(3000)..]
    );
    text
}

fn assert_absent(haystack: &str, name: &str, needles: &[String]) {
    for n in needles {
        assert!(
            !haystack.contains(n.as_str()),
            "{name} appears in the output ({} chars long, first 8: {}...)",
            n.len(),
            &n[..8]
        );
    }
}

fn assert_0600(p: &Path) {
    let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", p.display());
}

#[test]
fn demo_at_trace_level_prints_no_private_key_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = iotc()
        .args(["demo", "--devices", "3", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let text = succeeded(&out, "demo failed");
    // The trace log is really on: the search is over a real log, not an empty string.
    assert!(
        text.contains("TRACE"),
        "RUST_LOG=trace produced no trace lines"
    );
    assert!(
        text.len() > 10_000,
        "suspiciously short log: {} bytes",
        text.len()
    );

    let mut keys = Vec::new();
    files_named(&data, "_key.pem", &mut keys);
    // root CA, intermediate CA, the emulator's CA, the first device, 3 batch devices, the
    // emulator's Entra signing key.
    assert!(keys.len() >= 8, "key files: {keys:?}");
    for k in &keys {
        assert_0600(k);
        assert_absent(&text, &k.display().to_string(), &forms(&private_scalar(k)));
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "a PEM private key block in the output"
    );

    let ready = data.join("emulator").join("emulator.json");
    assert_0600(&ready);
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).unwrap()).unwrap();
    let token = info["adminToken"].as_str().unwrap();
    let sig = token
        .split("sig=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    assert_absent(
        &text,
        "the admin token",
        &[token.to_owned(), sig.to_owned()],
    );
    assert!(!text.contains("sig="), "a SAS signature in the output");
}

struct Emulator {
    child: std::process::Child,
    ready: serde_json::Value,
    stderr: std::thread::JoinHandle<String>,
}

impl Emulator {
    /// Stops it (SIGTERM, as an operator would) and returns everything it logged.
    fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.stderr.join().unwrap()
    }
}

fn start_emulator(data: &Path) -> Emulator {
    let mut child = iotc()
        .args(["emulator", "--rate-limit", "off", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).expect("ready line");
    let mut err = child.stderr.take().unwrap();
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).unwrap();
        s
    });
    Emulator {
        child,
        ready,
        stderr,
    }
}

#[test]
fn symmetric_key_onboarding_at_trace_level_prints_no_group_key_device_key_sas_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let emu = start_emulator(&dir.path().join("emu"));
    let url = emu.ready["apiUrl"].as_str().unwrap().to_owned();
    let token = emu.ready["adminToken"].as_str().unwrap().to_owned();
    let token_file = dir.path().join("token.txt");
    std::fs::write(&token_file, &token).unwrap();
    let ca = emu.ready["caCert"].as_str().unwrap().to_owned();
    let scope = emu.ready["idScope"].as_str().unwrap().to_owned();
    let dps = emu.ready["dpsEndpoint"].as_str().unwrap().to_owned();
    let out_dir = dir.path().join("bundles");
    let run = iotc()
        .args([
            "onboard",
            "symmetric-key",
            "--group",
            "sk-trace",
            "--count",
            "3",
            "--prefix",
            "trace-",
            "--no-progress",
        ])
        .args([
            "--app",
            &url,
            "--token-file",
            token_file.to_str().unwrap(),
            "--ca-file",
            &ca,
            "--id-scope",
            &scope,
            "--dps-endpoint",
            &dps,
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let client_text = succeeded(&run, "onboard failed");

    // The group's keys, read back through the API (the admin may see them).
    let ca_pem = std::fs::read(&ca).unwrap();
    let group: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap()])
            .build()
            .unwrap();
        http.get(format!(
            "{url}/api/enrollmentGroups/sk-trace?api-version=2022-07-31"
        ))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
    });
    let keys = &group["attestation"]["symmetricKey"];
    let primary = keys["primaryKey"]
        .as_str()
        .expect("group primary key")
        .to_owned();
    let secondary = keys["secondaryKey"]
        .as_str()
        .expect("group secondary key")
        .to_owned();

    let emu_text = emu.stop();

    for (who, text) in [("client", &client_text), ("emulator", &emu_text)] {
        assert!(
            text.contains("TRACE"),
            "{who}: RUST_LOG=trace produced no trace lines"
        );
        assert_absent(
            text,
            "the group primary key",
            std::slice::from_ref(&primary),
        );
        assert_absent(
            text,
            "the group secondary key",
            std::slice::from_ref(&secondary),
        );
        for i in 1..=3 {
            let id = format!("trace-{i}");
            let dev = iotc::dps::derive_device_key(&primary, &id).unwrap();
            assert_absent(
                text,
                &format!("the device key of {id}"),
                &[dev.expose().to_owned()],
            );
        }
        let sig = token
            .split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert_absent(text, "the admin token", &[token.clone(), sig.to_owned()]);
        assert!(
            !text.contains("sig="),
            "{who}: a SAS signature in the output"
        );
        assert!(
            !text.contains("PRIVATE KEY"),
            "{who}: a PEM private key block"
        );
    }
    // Every file of the bundle folder that holds a secret (a device key, the group key) is
    // 0600, and each device's key is in one.
    let mut files = Vec::new();
    files_named(&out_dir, "", &mut files);
    let device_keys: Vec<String> = (1..=3)
        .map(|i| {
            iotc::dps::derive_device_key(&primary, &format!("trace-{i}"))
                .unwrap()
                .expose()
                .to_owned()
        })
        .collect();
    let mut holding = 0;
    for f in &files {
        let Ok(t) = std::fs::read_to_string(f) else {
            continue;
        };
        if device_keys.iter().any(|k| t.contains(k.as_str())) || t.contains(&primary) {
            assert_0600(f);
            holding += 1;
        }
    }
    assert!(
        holding >= 3,
        "each device key is in a bundle file: {files:?}"
    );
}

/// Whether `text` holds a JWT (`eyJ…` header, a dot, an `eyJ…` payload): any access token or
/// client assertion would, whatever its claims.
fn has_jwt(text: &str) -> bool {
    let b64url = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    text.match_indices("eyJ").any(|(i, _)| {
        let rest = &text[i..];
        let header = rest.find(|c: char| !b64url(c)).unwrap_or(rest.len());
        header >= 10 && rest[header..].starts_with(".eyJ")
    })
}

/// Microsoft Entra sign-in at trace level: a service principal signs in with its client
/// secret, then with its certificate, against an emulator in its own process (logging at
/// trace). Neither the client's output nor the emulator's log holds the client secret, the
/// certificate's private key, or any JWT (the access tokens, the client assertion).
#[test]
fn entra_sign_in_at_trace_level_prints_no_client_secret_key_or_token() {
    use crate::common_entra as entra;
    let dir = tempfile::tempdir().unwrap();
    let emu = start_emulator(&dir.path().join("emu"));
    let url = emu.ready["apiUrl"].as_str().unwrap().to_owned();
    let admin = emu.ready["adminToken"].as_str().unwrap().to_owned();
    let ca = emu.ready["caCert"].as_str().unwrap().to_owned();
    let authority = emu.ready["authorityHost"].as_str().unwrap().to_owned();
    let http = entra::http(&std::fs::read(&ca).unwrap());
    let (cert_der, pem, _) = entra::sp_certificate();
    let sp_pem = dir.path().join("sp.pem");
    std::fs::write(&sp_pem, &pem).unwrap();
    std::fs::set_permissions(&sp_pem, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let app = rt.block_on(async {
        let body = serde_json::json!({
            "certificate": base64::engine::general_purpose::STANDARD.encode(&cert_der)
        });
        let app = entra::register(&http, &url, &admin, "trace-pipeline", body).await;
        let roles = serde_json::json!([{"role": iotc::central::models::roles::OPERATOR}]);
        let user = entra::user("servicePrincipal", &app.tenant_id, &app.object_id, roles);
        entra::add_user(&http, &url, &admin, "trace-pipeline", user).await;
        app
    });

    let mut client_text = String::new();
    for (what, var, value) in [
        ("secret", "AZURE_CLIENT_SECRET", app.client_secret.as_str()),
        (
            "certificate",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            sp_pem.to_str().unwrap(),
        ),
    ] {
        let mut cmd = iotc();
        for v in [
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IOTC_AUTH",
            "IOTC_BEARER_TOKEN",
        ] {
            cmd.env_remove(v);
        }
        let run = cmd
            .env("AZURE_TENANT_ID", &app.tenant_id)
            .env("AZURE_CLIENT_ID", &app.client_id)
            .env("AZURE_AUTHORITY_HOST", &authority)
            .env(var, value)
            .args([
                "--app",
                &url,
                "--ca-file",
                &ca,
                "--auth",
                "service-principal",
            ])
            .args(["device", "list"])
            .output()
            .unwrap();
        let text = succeeded(&run, &format!("sign-in with the {what} failed"));
        client_text.push_str(&text);
    }

    let emu_text = emu.stop();
    let key = private_scalar(&sp_pem);
    for (who, text) in [("client", &client_text), ("emulator", &emu_text)] {
        assert!(
            text.contains("TRACE"),
            "{who}: RUST_LOG=trace produced no trace lines"
        );
        assert_absent(
            text,
            "the client secret",
            std::slice::from_ref(&app.client_secret),
        );
        assert_absent(text, "the certificate's private key", &forms(&key));
        assert!(
            !has_jwt(text),
            "{who}: a JWT (token or assertion) in the output"
        );
    }
}

/// A password file its group or others can read still works, with one warning naming the
/// chmod to run; a 0600 file gets none. The secret itself is never printed.
#[test]
fn a_secret_file_others_can_read_is_named_with_the_chmod_to_run() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pw = dir.join("pw.txt");
    std::fs::write(&pw, "a long passphrase\n").unwrap();
    let root = |name: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_iotc"));
        c.env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .args([
                "cert",
                "root",
                "--name",
                name,
                "--out",
                "c",
                "--password-file",
            ])
            .arg(&pw)
            .current_dir(dir);
        c.output().unwrap()
    };
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = root("loose");
    let stderr = succeeded(&out, "cert root with a 0644 password file");
    assert!(
        stderr.contains("mode 644") && stderr.contains(&format!("chmod 600 {}", pw.display())),
        "no warning about the 0644 file: {stderr}"
    );
    assert!(!stderr.contains("a long passphrase"), "{stderr}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = root("tight");
    let stderr = succeeded(&out, "cert root with a 0600 password file");
    assert!(
        !stderr.contains("chmod"),
        "a warning about a 0600 file: {stderr}"
    );
}
