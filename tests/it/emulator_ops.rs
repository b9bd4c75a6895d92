//! Running the emulator: durable state across a restart, the rate limit, the settings
//! endpoint and seeded fault injection, concurrent writers, and the real `iotc emulator`
//! binary (ready line, emulator.json, clean shutdown on SIGTERM).

use crate::common_emulator;

use common_emulator::{client_for, ready_line, spawn_binary, stop_binary, Emu, GA};
use serde_json::json;

#[tokio::test]
async fn restart_keeps_state_and_rotates_the_admin_token() {
    let e = Emu::start().await;
    e.call("PUT", "/organizations/seattle", Some(json!({})))
        .await;
    let (_, d) = e
        .call(
            "PUT",
            "/devices/keep-me",
            Some(json!({"organizations": ["seattle"]})),
        )
        .await;
    let (_, g) = e
        .call(
            "PUT",
            "/enrollmentGroups/grp",
            Some(json!({"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}})),
        )
        .await;
    let ops = e
        .token_with(
            "ops",
            json!([{"role": iotc::central::models::roles::OPERATOR}]),
        )
        .await;
    let (_, creds) = e.call("GET", "/devices/keep-me/credentials", None).await;
    let old_admin = e.token.clone();
    let ca_before = std::fs::read(e.emu.as_ref().unwrap().info().ca_cert.clone()).unwrap();

    let e = e.restart().await;
    assert_ne!(e.token, old_admin);
    let (s, _, _) = e.call_as(Some(&old_admin), "GET", "/devices", None).await;
    assert_eq!(s, 401, "the previous admin token is replaced");
    let (s, _, _) = e.call_as(Some(&ops), "GET", "/devices", None).await;
    assert_eq!(s, 200, "API tokens survive");
    let (_, d2) = e.call("GET", "/devices/keep-me", None).await;
    assert_eq!(d2, d);
    let (_, g2) = e.call("GET", "/enrollmentGroups/grp", None).await;
    assert_eq!(g2, g);
    let (_, creds2) = e.call("GET", "/devices/keep-me/credentials", None).await;
    assert_eq!(creds2, creds, "id scope and SAS keys survive");
    let ca_after = std::fs::read(e.emu.as_ref().unwrap().info().ca_cert.clone()).unwrap();
    assert_eq!(
        ca_before, ca_after,
        "the CA survives, so clients keep trusting it"
    );
}

#[tokio::test]
async fn rate_limit_answers_429_with_retry_after() {
    let e = Emu::start_with(|c| c.rate_limit(Some(5))).await;
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..12 {
        let (s, h, _) = e.call_as(Some(&e.token), "GET", "/roles", None).await;
        if s == 429 {
            retry_after = h.get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        }
        codes.push(s);
    }
    assert!(codes[..5].iter().all(|c| *c == 200), "{codes:?}");
    assert!(codes.contains(&429), "{codes:?}");
    let secs: u64 = retry_after.expect("Retry-After on 429").parse().unwrap();
    assert!((1..=2).contains(&secs));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, _, _) = e.call_as(Some(&e.token), "GET", "/roles", None).await;
    assert_eq!(s, 200, "tokens refill");
    // Settings are always reachable, and turn the limit off.
    let url = format!("{}/emulator/settings", e.url);
    let (s, _, v) = e
        .raw(
            Some(&e.token),
            "PUT",
            &url,
            Some(json!({"rateLimit": null}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    for _ in 0..30 {
        let (s, _, _) = e.call_as(Some(&e.token), "GET", "/roles", None).await;
        assert_eq!(s, 200);
    }
}

#[tokio::test]
async fn settings_endpoint_needs_the_admin_and_valid_values() {
    let e = Emu::start().await;
    let url = format!("{}/emulator/settings", e.url);
    let (s, _, v) = e.raw(Some(&e.token), "GET", &url, None, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["rateLimit"], serde_json::Value::Null);
    assert_eq!(v["dpsAssigningPolls"], 1);
    let (s, _, _) = e.raw(None, "GET", &url, None, None).await;
    assert_eq!(s, 401);
    let op = e
        .token_with(
            "op",
            json!([{"role": iotc::central::models::roles::OPERATOR}]),
        )
        .await;
    let (s, _, _) = e.raw(Some(&op), "PUT", &url, Some("{}".into()), None).await;
    assert_eq!(s, 403);
    for bad in [
        json!({"faults": {"errorRate": 1.5}}),
        json!({"rateLimit": 0}),
        json!({"rateLimit": "fast"}),
        json!({"unknown": true}),
        json!([1]),
    ] {
        let (s, _, v) = e
            .raw(Some(&e.token), "PUT", &url, Some(bad.to_string()), None)
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, _, v) = e
        .raw(
            Some(&e.token),
            "PUT",
            &url,
            Some(json!({"dpsAssigningPolls": 3, "rateLimit": 50}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        (v["dpsAssigningPolls"].as_u64(), v["rateLimit"].as_u64()),
        (Some(3), Some(50))
    );
    assert_eq!(
        e.emu.as_ref().unwrap().settings().get().dps_assigning_polls,
        3
    );
}

/// Runs `n` GETs and returns the status of each (0 for a dropped connection).
async fn statuses(e: &Emu, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let r = e
            .http
            .get(e.api("/roles", GA))
            .header("Authorization", &e.token)
            .send()
            .await;
        out.push(match r {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        });
    }
    out
}

#[tokio::test]
async fn seeded_fault_injection() {
    let e = Emu::start().await;
    let url = format!("{}/emulator/settings", e.url);
    let faults = json!({"faults": {"seed": 42, "errorRate": 0.2, "throttleRate": 0.1, "throttleBurst": 3, "dropRate": 0.1}});
    e.raw(Some(&e.token), "PUT", &url, Some(faults.to_string()), None)
        .await;
    let first = statuses(&e, 60).await;
    // The same seed gives the same sequence.
    e.raw(Some(&e.token), "PUT", &url, Some(faults.to_string()), None)
        .await;
    let second = statuses(&e, 60).await;
    assert_eq!(first, second);
    for code in [0u16, 200, 429, 503] {
        assert!(first.contains(&code), "{code} in {first:?}");
    }
    assert!(
        first.iter().all(|c| [0u16, 200, 429, 503].contains(c)),
        "{first:?}"
    );
    // A 429 burst lasts throttleBurst requests.
    let i = first.iter().position(|c| *c == 429).unwrap();
    assert!(first[i..i + 3].iter().all(|c| *c == 429), "{first:?}");
    // Injected 503s carry the error body and Retry-After.
    e.raw(
        Some(&e.token),
        "PUT",
        &url,
        Some(json!({"faults": {"errorRate": 1.0}}).to_string()),
        None,
    )
    .await;
    let (s, h, v) = e.call_as(Some(&e.token), "GET", "/roles", None).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["code"], "ServiceUnavailable");
    assert!(h.get("retry-after").is_some());
    // Latency.
    e.raw(
        Some(&e.token),
        "PUT",
        &url,
        Some(json!({"faults": {"errorRate": 0.0, "latencyMs": 300}}).to_string()),
        None,
    )
    .await;
    let t = std::time::Instant::now();
    let (s, _, _) = e.call_as(Some(&e.token), "GET", "/roles", None).await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn concurrent_writers_lose_nothing() {
    let e = std::sync::Arc::new(Emu::start().await);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let (s, v) = e
                    .call(
                        "PUT",
                        &format!("/devices/w{w}-{i}"),
                        Some(json!({"displayName": format!("{w}/{i}")})),
                    )
                    .await;
                assert_eq!(s, 200, "{v}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut n = 0;
    let mut next = Some(e.api("/devices", GA));
    while let Some(url) = next {
        let (s, _, v) = e.raw(Some(&e.token), "GET", &url, None, None).await;
        assert_eq!(s, 200);
        n += v["value"].as_array().unwrap().len();
        next = v["nextLink"].as_str().map(str::to_owned);
    }
    assert_eq!(n, 200);
}

#[tokio::test]
async fn the_binary_prints_the_ready_line_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ready) = spawn_binary(
        dir.path(),
        &["--api-listen", "127.0.0.1:0", "--rate-limit", "off"],
    )
    .await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("emulator.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the ready file holds a token: 0600");
        let mode = std::fs::metadata(dir.path().join("ca_key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
    let http = client_for(&std::fs::read(ready["caCert"].as_str().unwrap()).unwrap());
    let r = http
        .get(format!(
            "{}/api/devices?api-version={GA}",
            ready["apiUrl"].as_str().unwrap()
        ))
        .header("Authorization", ready["adminToken"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    stop_binary(child).await;

    // Bad flags are refused with exit code 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
        .args(["emulator", "--data-dir", "/tmp/x", "--rate-limit", "fast"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate limit"));
}

/// Modes of the files of an emulator data folder that hold secrets.
#[cfg(unix)]
fn secret_file_modes(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    [
        "emulator.db",
        "emulator.db-wal",
        "emulator.db-shm",
        "ca_key.pem",
        "emulator.json",
        "entra_signing_key.pem",
    ]
    .iter()
    .map(|f| {
        let meta = std::fs::metadata(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        (f.to_string(), meta.permissions().mode() & 0o777)
    })
    .collect()
}

/// Starts `iotc emulator` under `umask 000` (the most permissive), waits for its ready line,
/// stores a symmetric-key enrollment group (its keys land in the database in clear) and
/// returns the child, still running, so the `-wal` and `-shm` files exist.
#[cfg(unix)]
async fn emulator_with_group_keys(dir: &std::path::Path) -> std::process::Child {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" emulator --data-dir \"$1\" --rate-limit off")
        .arg(env!("CARGO_BIN_EXE_iotc"))
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ready = ready_line(&mut child).await;
    let http = client_for(&std::fs::read(ready["caCert"].as_str().unwrap()).unwrap());
    let r = http
        .put(format!(
            "{}/api/enrollmentGroups/keys?api-version={GA}",
            ready["apiUrl"].as_str().unwrap()
        ))
        .header("Authorization", ready["adminToken"].as_str().unwrap())
        .json(&json!({"displayName": "k", "type": "iot", "attestation": {"type": "symmetricKey"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    child
}

#[cfg(unix)]
fn stop(mut child: std::process::Child) {
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(child.wait().unwrap().success());
}

#[cfg(unix)]
#[tokio::test]
async fn every_file_holding_a_secret_is_0600_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("emu");
    let child = emulator_with_group_keys(&dir).await;
    let mut db = std::fs::read(dir.join("emulator.db")).unwrap();
    db.extend(std::fs::read(dir.join("emulator.db-wal")).unwrap());
    assert!(
        String::from_utf8_lossy(&db).contains("primaryKey"),
        "the group keys are in the database files in clear (hence 0600)"
    );
    for (file, mode) in secret_file_modes(&dir) {
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    let dir_mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "the data folder the emulator made");
    // Killed, as in a crash: the -wal and -shm files stay, with the committed keys in them.
    let mut child = child;
    child.kill().unwrap();
    child.wait().unwrap();

    // A data folder left so by an earlier version, every file 0644, is narrowed on start
    // (SQLite itself fixes only the sidecars it finds empty).
    for (f, _) in secret_file_modes(&dir) {
        assert!(
            std::fs::metadata(dir.join(&f)).unwrap().len() > 0,
            "{f} left whole"
        );
        std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let child = emulator_with_group_keys(&dir).await;
    for (file, mode) in secret_file_modes(&dir) {
        assert_eq!(mode, 0o600, "after a restart, {file} has mode {mode:o}");
    }
    stop(child);
}

/// Regression (schemathesis saw "connection closed without response"): a request refused
/// before its body is read (here a bad api-version) must not end the keep-alive connection. On
/// one HTTP/1.1 connection the refused request's headers go first, its body a moment later (as
/// a client writes them), then a second request: both must be answered.
#[tokio::test]
async fn a_refused_request_with_a_body_keeps_the_connection_usable() {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let e = Emu::start().await;
    let info = e.emu.as_ref().unwrap().info().clone();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(&info.ca_cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = url::Url::parse(&info.api_url).unwrap();
    let addr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(url.host_str().unwrap().to_owned()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let body = r#"{"displayName":"x"}"#;
    let request = |version: &str| {
        format!(
            "PATCH /api/deviceGroups/g0?api-version={version} HTTP/1.1\r\nHost: {addr}\r\n\
             Authorization: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            e.token,
            body.len()
        )
    };
    let refused = request("0");
    let (head, rest) = refused.split_at(refused.len() - body.len());
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // The server may already have closed the connection: what matters is the answers.
    let _ = tls
        .write_all((rest.to_owned() + &request(GA)).as_bytes())
        .await;
    let _ = tls.flush().await;
    let mut answers = String::new();
    let mut buf = [0u8; 4096];
    while answers.matches("HTTP/1.1 ").count() < 2 || !answers.ends_with('}') {
        match tokio::time::timeout(std::time::Duration::from_secs(10), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answers.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(_) => panic!("no answer within 10 s: {answers}"),
        }
    }
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .filter_map(|(at, _)| answers[at..].lines().next())
        .collect();
    assert_eq!(
        statuses,
        ["HTTP/1.1 400 Bad Request", "HTTP/1.1 404 Not Found"],
        "both requests answered on one connection: {answers}"
    );
}
