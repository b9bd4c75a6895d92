//! The DPS device protocol of the emulator, seen from the wire: api-versions, the
//! assigning/assigned polls with Retry-After, the status lookup, DPS's error shape, fault
//! injection, proof of key possession in the TLS handshake, and the `iotc dps register` CLI.

use crate::common_dps;

use common_dps::*;
use iotc::dps::{derive_device_key, sas};
use iotc::emulator::stats::counter;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn http(env: &Env) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only(vec![reqwest::Certificate::from_pem(&env.ca_pem).unwrap()])
        .build()
        .unwrap()
}

async fn sas_setup(env: &Env, id: &str) -> String {
    let gk = env.sas_group("proto").await;
    let key = derive_device_key(gk.expose(), id).unwrap();
    sas::sas_token(&env.emu.info().id_scope, id, &key, now() + 600)
        .unwrap()
        .expose()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_versions_polls_and_status_lookup() {
    let env = start().await;
    let token = sas_setup(&env, "proto-1").await;
    let base = format!(
        "{}/{}/registrations/proto-1",
        env.emu.info().dps_endpoint,
        env.emu.info().id_scope
    );
    let c = http(&env);

    // Before any registration the lookup is a 404 in DPS's shape.
    let r = c
        .post(format!("{base}?api-version=2021-10-01"))
        .header("Authorization", &token)
        .json(&serde_json::json!({"registrationId": "proto-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-ms-error-code"], "404201");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], 404201);
    assert!(body["trackingId"].is_string() && body["timestampUtc"].is_string());

    // Unsupported and missing api-version.
    for q in ["?api-version=2018-11-01", ""] {
        let r = c
            .put(format!("{base}/register{q}"))
            .header("Authorization", &token)
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["message"].as_str().unwrap().contains("api-version"));
    }

    // Three polls answer assigning, the fourth assigned; every version the SDKs send works.
    let mut s = env.emu.settings().get();
    s.dps_assigning_polls = 3;
    s.dps_retry_after_seconds = 2;
    env.emu.settings().set(s).unwrap();
    for v in ["2019-03-31", "2021-06-01", "2021-10-01"] {
        let r = c
            .put(format!("{base}/register?api-version={v}"))
            .header("Authorization", &token)
            .json(&serde_json::json!({"registrationId": "proto-1", "payload": {"modelId": "dtmi:x:y;1"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{v}");
        assert_eq!(r.headers()["retry-after"], "2");
        assert!(r.headers().contains_key("location"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], "assigning");
        let op = body["operationId"].as_str().unwrap().to_owned();
        for i in 0..3 {
            let r = c
                .get(format!("{base}/operations/{op}?api-version={v}"))
                .header("Authorization", &token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202, "poll {i}");
            assert_eq!(r.headers()["retry-after"], "2");
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["status"], "assigning");
        }
        let r = c
            .get(format!("{base}/operations/{op}?api-version={v}"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["status"], "assigned");
        let st = &body["registrationState"];
        assert_eq!(st["deviceId"], "proto-1");
        assert_eq!(st["status"], "assigned");
        assert_eq!(st["substatus"], "initialAssignment");
        assert_eq!(st["symmetricKey"]["enrollmentGroupId"], "proto");
        assert!(st["assignedHub"].is_string() && st["createdDateTimeUtc"].is_string());
        assert_eq!(st["payload"]["modelId"], "dtmi:x:y;1");
        // Polling a finished operation again answers the same state.
        let again: serde_json::Value = c
            .get(format!("{base}/operations/{op}?api-version={v}"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(again["status"], "assigned");
        assert_eq!(again["registrationState"]["deviceId"], "proto-1");
        assert_eq!(again["operationId"], op.as_str());

        // Someone else's operation id is not found.
        let r = c
            .get(format!("{base}/operations/4.0.nope?api-version={v}"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    let r = c
        .post(format!("{base}?api-version=2021-10-01"))
        .header("Authorization", &token)
        .json(&serde_json::json!({"registrationId": "proto-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["deviceId"], "proto-1");

    // A wrong method is answered in DPS's shape too.
    let r = c
        .get(format!("{base}/register?api-version=2021-10-01"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], 405000);

    // Wrong scope; body registrationId not the path's.
    let r = c
        .put(format!(
            "{}/0neFFFFFFFF/registrations/proto-1/register?api-version=2021-10-01",
            env.emu.info().dps_endpoint
        ))
        .header("Authorization", &token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .put(format!("{base}/register?api-version=2021-10-01"))
        .header("Authorization", &token)
        .json(&serde_json::json!({"registrationId": "proto-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gets_through_injected_503s_429s_and_dropped_connections() {
    let env = start().await;
    let token = sas_setup(&env, "fault-1").await;
    let base = format!(
        "{}/{}/registrations/fault-1",
        env.emu.info().dps_endpoint,
        env.emu.info().id_scope
    );
    let mut s = env.emu.settings().get();
    s.faults.error_rate = 1.0;
    env.emu.settings().set(s.clone()).unwrap();
    let r = http(&env)
        .put(format!("{base}/register?api-version=2021-10-01"))
        .header("Authorization", &token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["errorCode"].is_number() && body["message"].is_string());

    s.faults.error_rate = 0.0;
    s.faults.drop_rate = 1.0;
    env.emu.settings().set(s.clone()).unwrap();
    assert!(http(&env)
        .put(format!("{base}/register?api-version=2021-10-01"))
        .header("Authorization", &token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .is_err());

    // A mix of 503, 429 and dropped connections: the client still gets every device through.
    s.faults.seed = 11;
    s.faults.error_rate = 0.2;
    s.faults.throttle_rate = 0.1;
    s.faults.throttle_burst = 1;
    s.faults.drop_rate = 0.1;
    env.emu.settings().set(s).unwrap();
    let gk = env.sas_group("faulty").await;
    for i in 0..4 {
        let id = format!("fault-dev-{i}");
        let key = derive_device_key(gk.expose(), &id).unwrap();
        let mut opts = env.options();
        opts.max_retries = 12;
        let client = iotc::dps::Client::new(
            env.id_scope(),
            iotc::dps::Attestation::SymmetricKey(key),
            opts,
        )
        .unwrap();
        let r = client.register(&rid(&id), None).await.unwrap();
        assert_eq!(r.device_id.as_deref(), Some(id.as_str()));
    }
    env.emu.shutdown().await;
}

/// Presents `cert` with whatever key it was given, without checking that they belong
/// together (rustls's own `CertifiedKey` checks would refuse a mismatched pair).
#[derive(Debug)]
struct Presents(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for Presents {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

/// A TLS client configuration that trusts the emulator's CA and presents `cert` (DER) signed
/// for with the PKCS#8 key `key`.
fn presenting(env: &Env, cert: &[u8], key: &[u8]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_vec().into()))
        .unwrap();
    let ck = rustls::sign::CertifiedKey::new(vec![cert.to_vec().into()], signing);
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&env.ca_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(Arc::new(Presents(Arc::new(ck)))),
    )
}

/// One HTTP/1.1 request over a TLS connection made with `config`; the answer's head.
async fn exchange(
    config: Arc<rustls::ClientConfig>,
    endpoint: &str,
    request: &str,
) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = endpoint.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    tls.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The TLS alert the server sent, if `e` is one.
fn alert_received(e: &std::io::Error) -> Option<rustls::AlertDescription> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(a) => Some(*a),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_must_prove_the_leaf_key() {
    let env = start().await;
    let root = root();
    env.verified_group("pop-tls", &root).await;
    let dev = device(&root, "stolen-1");
    let thief = device(&root, "thief-key");
    let info = env.emu.info().clone();
    let body = r#"{"registrationId":"stolen-1"}"#;
    let request = format!(
        "PUT /{}/registrations/stolen-1/register?api-version=2021-10-01 HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        info.id_scope,
        body.len()
    );

    // The device's certificate with another key: the server refuses the handshake (the
    // CertificateVerify signature does not match the certificate), with the alert for it.
    let stolen = presenting(&env, &dev.cert_der, &key_der(&thief));
    let err = exchange(stolen, &info.dps_endpoint, &request)
        .await
        .expect_err("a certificate without its key was accepted");
    assert_eq!(
        alert_received(&err),
        Some(rustls::AlertDescription::DecryptError),
        "the refusal is the TLS handshake's: {err:?}"
    );
    assert!(env
        .central
        .get_device("stolen-1")
        .await
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        env.emu
            .stats()
            .unwrap()
            .get(counter::DPS_REGISTRATIONS, "stolen-1"),
        0
    );

    // Positive control: the very same client configuration with the certificate's own key
    // gets through the handshake and registers.
    let own = presenting(&env, &dev.cert_der, &key_der(&dev));
    let head = exchange(own, &info.dps_endpoint, &request).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    assert_eq!(
        env.emu
            .stats()
            .unwrap()
            .get(counter::DPS_REGISTRATIONS, "stolen-1"),
        1
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_waits_each_retry_after_and_no_longer_than_the_cap() {
    let env = start().await;
    let gk = env.sas_group("wait").await;
    // The 202 and each of the 2 assigning polls carry Retry-After: 3 waits before `assigned`.
    let waits = 3;
    let timed = |id: &'static str, retry_after: u32, cap: Duration| {
        let mut s = env.emu.settings().get();
        s.dps_assigning_polls = waits - 1;
        s.dps_retry_after_seconds = retry_after;
        env.emu.settings().set(s).unwrap();
        let mut opts = env.options();
        opts.max_retry_after = cap;
        // A client that ignored Retry-After would poll this fast and be caught.
        opts.default_poll_interval = Duration::from_millis(10);
        let key = derive_device_key(gk.expose(), id).unwrap();
        let client = iotc::dps::Client::new(
            env.id_scope(),
            iotc::dps::Attestation::SymmetricKey(key),
            opts,
        )
        .unwrap();
        async move {
            let t = Instant::now();
            let r = client.register(&rid(id), None).await.unwrap();
            assert_eq!(r.device_id.as_deref(), Some(id));
            t.elapsed()
        }
    };
    // Retry-After 1 s under a 30 s cap: at least 3 × 1 s.
    let took = timed("wait-1", 1, Duration::from_secs(30)).await;
    eprintln!("Retry-After 1 s, 3 waits: {took:?}");
    assert!(
        took >= Duration::from_secs(waits.into()),
        "Retry-After was not waited: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "waited too long: {took:?}");
    // Retry-After 3 s under a 250 ms cap: the cap, 3 × 250 ms, not 3 × 3 s.
    let took = timed("wait-2", 3, Duration::from_millis(250)).await;
    eprintln!("Retry-After 3 s capped at 250 ms, 3 waits: {took:?}");
    assert!(took >= Duration::from_millis(750), "{took:?}");
    assert!(
        took < Duration::from_secs(9),
        "the cap was not applied: {took:?}"
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_with_an_encrypted_key_and_a_derived_group_key() {
    let env = start().await;
    let root = root();
    let inter = root
        .issue_intermediate(&iotc::cert::CaOptions::default())
        .unwrap();
    env.verified_group("cli-group", &root).await;
    let dev = device(&inter, "cli-dev-1");
    let dir = env.dir.path().join("bundle");
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw.txt");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let written = iotc::cert::write_bundle(
        &dir,
        "cli-dev-1",
        &dev,
        &iotc::cert::WriteOptions {
            password: Some(iotc::secret::Secret::new("correct horse")),
            pfx: true,
            ..Default::default()
        },
    )
    .unwrap();
    // The CLI below is given the files write_bundle says it wrote.
    assert_eq!(
        written.fullchain.as_deref(),
        Some(dir.join("cli-dev-1_fullchain.pem").as_path())
    );
    assert_eq!(
        written.key.as_deref(),
        Some(dir.join("cli-dev-1_key.pem").as_path())
    );
    assert_eq!(
        written.pfx.as_deref(),
        Some(dir.join("cli-dev-1.pfx").as_path())
    );
    let info = env.emu.info().clone();
    let bin = env!("CARGO_BIN_EXE_iotc");
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let info = info.clone();
        move || {
            std::process::Command::new(bin)
                .args(["--output", "json", "--ca-file"])
                .arg(&info.ca_cert)
                .args(["dps", "register", "--id-scope", &info.id_scope])
                .args([
                    "--registration-id",
                    "cli-dev-1",
                    "--endpoint",
                    &info.dps_endpoint,
                ])
                .arg("--cert")
                .arg(dir.join("cli-dev-1_fullchain.pem"))
                .arg("--key")
                .arg(dir.join("cli-dev-1_key.pem"))
                .arg("--key-password-file")
                .arg(dir.join("pw.txt"))
                .args(["--payload", r#"{"modelId":"dtmi:cli:test;1"}"#])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deviceId"], "cli-dev-1");
    assert_eq!(v["x509"]["enrollmentGroupId"], "cli-group");

    // The same device from its PKCS#12 file (key + chain inside).
    let out = tokio::task::spawn_blocking({
        let dir = dir.clone();
        let info = info.clone();
        move || {
            std::process::Command::new(bin)
                .args(["--output", "json", "--ca-file"])
                .arg(&info.ca_cert)
                .args(["dps", "register", "--id-scope", &info.id_scope])
                .args([
                    "--registration-id",
                    "cli-dev-1",
                    "--endpoint",
                    &info.dps_endpoint,
                ])
                .arg("--pfx")
                .arg(dir.join("cli-dev-1.pfx"))
                .arg("--key-password-file")
                .arg(dir.join("pw.txt"))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["deviceId"], "cli-dev-1");

    // Symmetric key through a group key file, table output; then a refusal exits 2.
    let gk = env.sas_group("cli-sas").await;
    let gkf = dir.join("group.key");
    std::fs::write(&gkf, gk.expose()).unwrap();
    let wrong = dir.join("wrong.key");
    std::fs::write(&wrong, "AAAAAAAAAAAAAAAAAAAAAA==").unwrap();
    let out = tokio::task::spawn_blocking({
        let info = info.clone();
        move || {
            let ok = std::process::Command::new(bin)
                .arg("--ca-file")
                .arg(&info.ca_cert)
                .args(["dps", "register", "--id-scope", &info.id_scope])
                .args([
                    "--registration-id",
                    "cli-sas-1",
                    "--endpoint",
                    &info.dps_endpoint,
                ])
                .arg("--group-key-file")
                .arg(&gkf)
                .output()
                .unwrap();
            let bad = std::process::Command::new(bin)
                .arg("--ca-file")
                .arg(&info.ca_cert)
                .args(["dps", "register", "--id-scope", &info.id_scope])
                .args([
                    "--registration-id",
                    "cli-sas-1",
                    "--endpoint",
                    &info.dps_endpoint,
                ])
                .arg("--symmetric-key-file")
                .arg(&wrong)
                .output()
                .unwrap();
            (ok, bad)
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.0.stdout);
    assert!(
        out.0.status.success(),
        "{}",
        String::from_utf8_lossy(&out.0.stderr)
    );
    assert!(
        stdout.contains("cli-sas-1") && stdout.contains("cli-sas"),
        "{stdout}"
    );
    assert_eq!(out.1.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.1.stderr);
    assert!(
        err.contains("HTTP 401") && err.contains("401002") && err.contains("trackingId"),
        "{err}"
    );
    assert!(!err.contains(gk.expose()));
    env.emu.shutdown().await;
}
