//! DPS over MQTT against the real emulator on loopback: our client (`Transport::Mqtt`), raw
//! packets as the SDKs send them (TLS 1.2, clean session off, QoS 1, a poll whose payload is
//! not JSON, SAS with and without `skn`), one registry behind MQTT and HTTPS, the refusals,
//! and a listener that survives bad clients.

use crate::common_dps::*;
use crate::common_mqtt::{self, Raw, Read, Tls};

use iotc::cert::CaOptions;
use iotc::dps::{Client, DpsError, EnrollmentStatus};
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;

fn refusal(e: DpsError) -> String {
    match e {
        DpsError::Service {
            status: 401,
            error_code: Some(401002),
            message: Some(m),
            ..
        } => m,
        other => panic!("expected a 401 DPS refusal, got {other:?}"),
    }
}

fn mqtt_device_client(env: &Env, dev: &iotc::cert::Issued) -> Client {
    let key = dev.key.as_ref().unwrap().pkcs8_pem();
    let id =
        iotc::dps::X509Identity::from_pem(dev.chain_pem.as_bytes(), key.expose().as_bytes(), None)
            .unwrap();
    Client::new(
        env.id_scope(),
        iotc::dps::Attestation::X509(id),
        env.mqtt_options(),
    )
    .unwrap()
}

/// A plain-TLS MQTT connection of `rid` to the emulator, CONNECTed with `password` and
/// subscribed to the answers.
async fn sas_session(env: &Env, rid: &str, password: &str) -> Raw {
    let mut raw = Raw::connect(&env.mqtt_host(), Tls::plain(&env.ca_pem)).await;
    raw.register_session(env.id_scope().as_str(), rid, password)
        .await;
    raw
}

/// The same register over HTTPS, `auth` as its Authorization header.
async fn https_register(
    http: &reqwest::Client,
    env: &Env,
    rid: &str,
    auth: &str,
) -> reqwest::Response {
    http.put(format!(
        "{}/{}/registrations/{rid}/register?api-version=2021-10-01",
        env.emu.info().dps_endpoint,
        env.id_scope()
    ))
    .header("Authorization", auth)
    .json(&serde_json::json!({ "registrationId": rid }))
    .send()
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_via_root_and_intermediate_over_mqtt_is_the_https_registration() {
    let env = start().await;
    let root = root();
    env.verified_group("mq-root", &root).await;
    let dev = device(&root, "mq-root-1");
    let over_mqtt = mqtt_device_client(&env, &dev)
        .register(&rid("mq-root-1"), None)
        .await
        .unwrap();
    assert_eq!(over_mqtt.status, Some(EnrollmentStatus::Assigned));
    assert_eq!(over_mqtt.device_id.as_deref(), Some("mq-root-1"));
    let x509 = over_mqtt.x509.clone().unwrap();
    assert_eq!(x509.enrollment_group_id.as_deref(), Some("mq-root"));
    assert_eq!(
        x509.certificate_info.unwrap().sha1_thumbprint,
        iotc::cert::sha1_thumbprint(&dev.cert_der)
    );
    // One registry: HTTPS sees the registration MQTT made, and registering again over HTTPS
    // is the same registration (its creation time is kept).
    let https = env.device_client(&dev);
    let looked_up = https.status_lookup(&rid("mq-root-1")).await.unwrap();
    assert_eq!(looked_up.etag, over_mqtt.etag);
    // An MQTT-transport client looks up over HTTPS too (its HTTPS client made on first use).
    let looked_up = mqtt_device_client(&env, &dev)
        .status_lookup(&rid("mq-root-1"))
        .await
        .unwrap();
    assert_eq!(looked_up.etag, over_mqtt.etag);
    let again = https.register(&rid("mq-root-1"), None).await.unwrap();
    assert_eq!(again.created_date_time_utc, over_mqtt.created_date_time_utc);
    assert_ne!(again.etag, over_mqtt.etag);

    // Through an intermediate: the device presents leaf + intermediate, the group holds the root.
    let root2 = iotc::cert::Authority::new_root(&CaOptions::default()).unwrap();
    let inter = root2.issue_intermediate(&CaOptions::default()).unwrap();
    env.verified_group("mq-inter", &root2).await;
    let dev2 = device(&inter, "mq-inter-1");
    assert_eq!(
        iotc::dps::identity::parse_certs(dev2.chain_pem.as_bytes())
            .unwrap()
            .len(),
        2
    );
    let r = mqtt_device_client(&env, &dev2)
        .register(
            &rid("mq-inter-1"),
            Some(serde_json::json!({"modelId": "dtmi:a:b;1"})),
        )
        .await
        .unwrap();
    let x509 = r.x509.unwrap();
    assert_signed_through(&x509, "mq-inter", root2.cert_der());
    // The custom payload comes back in the registration state, as over HTTPS.
    assert_eq!(
        r.payload,
        Some(serde_json::json!({"modelId": "dtmi:a:b;1"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_refusals_over_mqtt_carry_the_https_messages() {
    let env = start().await;
    let unverified = root();
    env.x509_group("mq-pending", false).await;
    env.upload("mq-pending", &unverified).await;
    let e = mqtt_device_client(&env, &device(&unverified, "mq-u-1"))
        .register(&rid("mq-u-1"), None)
        .await
        .unwrap_err();
    assert!(refusal(e).contains("unverified CA"));

    let verified = root();
    env.verified_group("mq-ok", &verified).await;
    // The certificate is dev-a's, the registration id (user name, client id) dev-b.
    let dev = device(&verified, "mq-cn-a");
    let e = mqtt_device_client(&env, &dev)
        .register(&rid("mq-cn-b"), None)
        .await
        .unwrap_err();
    assert!(refusal(e).contains("CN mismatch"));

    // No credential at all: a TLS connection without a certificate and no password.
    let mut raw = sas_session(&env, "mq-none", "").await;
    raw.send(common_mqtt::register(1, r#"{"registrationId":"mq-none"}"#))
        .await;
    let a = raw.answer().await;
    assert_eq!(common_mqtt::status(&a), 401);
    assert_eq!(common_mqtt::json(&a)["errorCode"], 401002);
    // The refusal tells an MQTT device where its SAS token goes.
    let message = common_mqtt::json(&a)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("no credentials"), "{message}");
    assert!(message.contains("the MQTT password"), "{message}");
    // A refused credential ends the connection: the device may still unsubscribe (the SDKs
    // do, and wait for the UNSUBACK), but the next request closes it.
    let mut unsub =
        rumqttc::mqttbytes::v4::Unsubscribe::new(iotc::dps::wire::mqtt::RESPONSE_FILTER);
    unsub.pkid = 2;
    raw.send(Packet::Unsubscribe(unsub)).await;
    loop {
        match raw.read().await {
            Read::Packet(Packet::PubAck(_)) => continue,
            Read::Packet(Packet::UnsubAck(u)) => {
                assert_eq!(u.pkid, 2);
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    // Subscribed again, so that an answer to the next request would be seen.
    raw.send(common_mqtt::subscribe(3)).await;
    assert!(matches!(raw.read().await, Read::Packet(Packet::SubAck(_))));
    raw.send(common_mqtt::register(4, r#"{"registrationId":"mq-none"}"#))
        .await;
    loop {
        match raw.read().await {
            Read::Closed => break,
            Read::Packet(p) => assert!(matches!(p, Packet::PubAck(_)), "{p:?}"),
        }
    }
    // Left alone, a refused connection is closed after a moment.
    let mut raw = sas_session(&env, "mq-none", "").await;
    raw.send(common_mqtt::register(1, "")).await;
    assert_eq!(common_mqtt::status(&raw.answer().await), 401);
    let started = std::time::Instant::now();
    assert_eq!(raw.read().await, Read::Closed);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_with_and_without_skn_over_both_transports() {
    let env = start().await;
    let group_key = env.sas_group("mq-sas").await;
    let scope = env.id_scope();
    let token = |id: &str| {
        let key = iotc::dps::derive_device_key(group_key.expose(), id).unwrap();
        let t = iotc::dps::sas_token(scope.as_str(), id, &key, 4_000_000_000).unwrap();
        t.expose().to_owned()
    };

    // Our client, over MQTT (its token carries skn=registration).
    let key = iotc::dps::derive_device_key(group_key.expose(), "mq-sas-1").unwrap();
    let client = Client::new(
        scope.clone(),
        iotc::dps::Attestation::SymmetricKey(key),
        env.mqtt_options(),
    )
    .unwrap();
    let r = client.register(&rid("mq-sas-1"), None).await.unwrap();
    assert_eq!(
        r.symmetric_key.unwrap().enrollment_group_id.as_deref(),
        Some("mq-sas")
    );

    // MQTT, a token without skn (what the C SDK and the FreeRTOS middleware send), the poll's
    // payload a blank, as the Node SDK sends it.
    let without = token("mq-sas-2").replace("&skn=registration", "");
    assert!(!without.contains("skn"));
    let mut raw = sas_session(&env, "mq-sas-2", &without).await;
    raw.send(common_mqtt::register(5, r#"{"registrationId":"mq-sas-2"}"#))
        .await;
    let a = raw.answer().await;
    assert_eq!(common_mqtt::status(&a), 202, "{}", a.topic);
    assert!(a.topic.ends_with("?$rid=5&retry-after=0"), "{}", a.topic);
    let op = common_mqtt::json(&a)["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut rid_n = 6;
    let state = loop {
        raw.send(common_mqtt::poll(rid_n, &op)).await;
        let a = raw.answer().await;
        assert!(a.topic.contains(&format!("?$rid={rid_n}")), "{}", a.topic);
        rid_n += 1;
        match common_mqtt::status(&a) {
            202 => continue,
            200 => break common_mqtt::json(&a),
            s => panic!("{s}: {:?}", a.payload),
        }
    };
    assert_eq!(state["status"], "assigned");
    assert_eq!(state["registrationState"]["deviceId"], "mq-sas-2");

    // One registry: an operation started over MQTT is polled over HTTPS, and is still
    // `assigning` there for the one poll the settings ask for.
    let mut raw = sas_session(&env, "mq-sas-5", &token("mq-sas-5")).await;
    raw.send(common_mqtt::register(1, "")).await;
    let a = raw.answer().await;
    assert_eq!(common_mqtt::status(&a), 202);
    let op = common_mqtt::json(&a)["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    let http = crate::common_emulator::client_for(&env.ca_pem);
    let poll_url = format!(
        "{}/{}/registrations/mq-sas-5/operations/{op}?api-version=2021-10-01",
        env.emu.info().dps_endpoint,
        scope
    );
    for want in [202, 200] {
        let resp = http
            .get(&poll_url)
            .header("Authorization", token("mq-sas-5"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }

    // HTTPS, a token without skn.
    let without = token("mq-sas-3").replace("&skn=registration", "");
    let resp = https_register(&http, &env, "mq-sas-3", &without).await;
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);

    // A wrong key is refused on both, with the same message.
    let wrong = token("mq-sas-4").replace("sig=", "sig=AAAA");
    let mut raw = sas_session(&env, "mq-sas-4", &wrong).await;
    raw.send(common_mqtt::register(1, "")).await;
    let a = raw.answer().await;
    assert_eq!(common_mqtt::status(&a), 401);
    let mqtt_message = common_mqtt::json(&a)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = https_register(&http, &env, "mq-sas-4", &wrong).await;
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["message"].as_str().unwrap(), mqtt_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_clean_session_off_and_qos1() {
    let env = start().await;
    let root = root();
    env.verified_group("mq-tls12", &root).await;
    let dev = device(&root, "mq-tls12-1");
    let mut raw = Raw::connect(
        &env.mqtt_host(),
        Tls {
            ca_pem: &env.ca_pem,
            identity: Some((vec![dev.cert_der.clone()], key_der(&dev))),
            tls12_only: true,
            // The HTTP listeners' ALPN list must not refuse a device that offers "mqtt".
            offer_alpn_mqtt: true,
        },
    )
    .await;
    assert_eq!(
        raw.tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    raw.send(common_mqtt::connect(
        env.id_scope().as_str(),
        "mq-tls12-1",
        "",
        false,
    ))
    .await;
    match raw.read().await {
        Read::Packet(Packet::ConnAck(a)) => {
            assert_eq!(a.code, rumqttc::ConnectReturnCode::Success);
            assert!(
                !a.session_present,
                "clean session off, still no session kept"
            );
        }
        other => panic!("{other:?}"),
    }
    raw.send(common_mqtt::subscribe(9)).await;
    match raw.read().await {
        Read::Packet(Packet::SubAck(s)) => {
            assert_eq!(s.pkid, 9);
            assert_eq!(
                s.return_codes,
                vec![rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            );
        }
        other => panic!("{other:?}"),
    }
    raw.send(common_mqtt::register(
        2,
        r#"{"registrationId":"mq-tls12-1"}"#,
    ))
    .await;
    // QoS 1: the publish is acknowledged, then answered at QoS 1.
    match raw.read().await {
        Read::Packet(Packet::PubAck(a)) => assert_eq!(a.pkid, 2),
        other => panic!("{other:?}"),
    }
    let a = raw.answer().await;
    assert_eq!(a.qos, QoS::AtLeastOnce);
    assert_ne!(a.pkid, 0);
    assert_eq!(common_mqtt::status(&a), 202);
    raw.send(Packet::PubAck(rumqttc::PubAck::new(a.pkid))).await;
    let op = common_mqtt::json(&a)["operationId"]
        .as_str()
        .unwrap()
        .to_owned();
    for (n, want) in [(3, 202), (4, 200)] {
        raw.send(common_mqtt::poll(n, &op)).await;
        let a = raw.answer().await;
        assert_eq!(common_mqtt::status(&a), want);
    }
}

/// Bad input ends the connection that sent it, never the listener: a session opened before
/// the bad clients still registers afterwards, and so does a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_clients_end_their_own_connection_only() {
    let env = start().await;
    let group_key = env.sas_group("mq-robust").await;
    let scope = env.id_scope();
    let password = |id: &str| {
        let key = iotc::dps::derive_device_key(group_key.expose(), id).unwrap();
        iotc::dps::sas_token(scope.as_str(), id, &key, 4_000_000_000)
            .unwrap()
            .expose()
            .to_owned()
    };
    let tls = || Tls::plain(&env.ca_pem);
    let mut survivor = Raw::connect(&env.mqtt_host(), tls()).await;
    survivor
        .register_session(scope.as_str(), "mq-survivor", &password("mq-survivor"))
        .await;

    let connect = common_mqtt::encode(&common_mqtt::connect(
        scope.as_str(),
        "mq-bad",
        &password("mq-bad"),
        true,
    ));
    let oversized = common_mqtt::encode(&Packet::Publish(Publish::new(
        format!("{}?$rid=1", iotc::dps::wire::mqtt::REGISTER_TOPIC),
        QoS::AtMostOnce,
        vec![b' '; 70 * 1024],
    )));
    let wrong_topic = common_mqtt::encode(&Packet::Publish(Publish::new(
        "devices/mq-bad/messages/events/",
        QoS::AtMostOnce,
        b"{}".to_vec(),
    )));
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("an HTTP request", false, b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("garbage", false, vec![0x00, 0x00, 0xde, 0xad]),
        (
            "publish before connect",
            false,
            common_mqtt::encode(&common_mqtt::register(1, "{}")),
        ),
        ("oversized packet", true, oversized),
        ("wrong topic", true, wrong_topic),
        (
            "a CONNECT whose client id is not the registration id",
            false,
            {
                let mut c = rumqttc::mqttbytes::v4::Connect::new("someone-else");
                c.set_login(
                    format!("{scope}/registrations/mq-bad/api-version=2019-03-31"),
                    password("mq-bad"),
                );
                common_mqtt::encode(&Packet::Connect(c))
            },
        ),
    ];
    for (what, after_connect, bytes) in cases {
        let started = std::time::Instant::now();
        let mut bad = Raw::connect(&env.mqtt_host(), tls()).await;
        if after_connect {
            bad.send_bytes(&connect).await;
            assert!(
                matches!(bad.read().await, Read::Packet(Packet::ConnAck(_))),
                "{what}"
            );
        }
        bad.send_bytes(&bytes).await;
        loop {
            match bad.read().await {
                Read::Closed => break,
                // The one answer MQTT gives before closing: CONNACK refused.
                Read::Packet(Packet::ConnAck(a)) => {
                    assert_ne!(a.code, rumqttc::ConnectReturnCode::Success, "{what}")
                }
                Read::Packet(p) => panic!("{what}: {p:?}"),
            }
        }
        // Ended by the bad input itself, not by the listener's 10 s CONNECT timeout.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{what}: {:?}",
            started.elapsed()
        );
    }

    survivor
        .send(common_mqtt::register(
            1,
            r#"{"registrationId":"mq-survivor"}"#,
        ))
        .await;
    assert_eq!(common_mqtt::status(&survivor.answer().await), 202);
    let key = iotc::dps::derive_device_key(group_key.expose(), "mq-after").unwrap();
    let r = Client::new(
        scope.clone(),
        iotc::dps::Attestation::SymmetricKey(key),
        env.mqtt_options(),
    )
    .unwrap()
    .register(&rid("mq-after"), None)
    .await
    .unwrap();
    assert_eq!(r.device_id.as_deref(), Some("mq-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refusals_are_typed_errors_of_the_client() {
    let env = start().await;
    let key =
        iotc::dps::derive_device_key(env.sas_group("mq-cr").await.expose(), "mq-cr-1").unwrap();
    let client = Client::new(
        "0ne99999999".parse().unwrap(),
        iotc::dps::Attestation::SymmetricKey(key),
        env.mqtt_options(),
    )
    .unwrap();
    match client.register(&rid("mq-cr-1"), None).await.unwrap_err() {
        DpsError::MqttConnectRefused { reason, .. } => {
            assert!(reason.contains("bad user name or password (4)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// Throttling and server errors over MQTT are retried like over HTTPS, on the same
/// connection, honouring retry-after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_registrations_are_retried_over_mqtt() {
    let env = start().await;
    let key =
        iotc::dps::derive_device_key(env.sas_group("mq-429").await.expose(), "mq-429-1").unwrap();
    let mut settings = env.emu.settings().get();
    settings.faults.throttle_rate = 1.0;
    settings.faults.throttle_burst = 2;
    env.emu.settings().set(settings.clone()).unwrap();
    let client = Client::new(
        env.id_scope(),
        iotc::dps::Attestation::SymmetricKey(key.clone()),
        iotc::dps::ClientOptions {
            max_retries: 0,
            ..env.mqtt_options()
        },
    )
    .unwrap();
    match client.register(&rid("mq-429-1"), None).await.unwrap_err() {
        DpsError::Service {
            status: 429,
            error_code: Some(429001),
            retry_after: Some(_),
            ..
        } => {}
        other => panic!("{other:?}"),
    }
    settings.faults.throttle_rate = 0.5;
    env.emu.settings().set(settings).unwrap();
    let client = Client::new(
        env.id_scope(),
        iotc::dps::Attestation::SymmetricKey(key),
        iotc::dps::ClientOptions {
            max_retries: 20,
            max_retry_after: std::time::Duration::from_millis(10),
            ..env.mqtt_options()
        },
    )
    .unwrap();
    let r = client.register(&rid("mq-429-1"), None).await.unwrap();
    assert_eq!(r.device_id.as_deref(), Some("mq-429-1"));
}

/// `iotc dps register --transport mqtt` prints what `--transport https` prints, for an
/// X.509 device and a SAS device; HTTP-only flags are refused with MQTT's missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_registers_over_mqtt_with_the_https_output() {
    let env = start().await;
    let root = root();
    env.verified_group("cli-mq", &root).await;
    let group_key = env.sas_group("cli-mq-sas").await;
    let files = tempfile::tempdir().unwrap();
    // `--cert FULLCHAIN --key KEY` of a device `cn` signed by the root, written to files.
    let x509_args = |cn: &str| -> [String; 4] {
        let w = iotc::cert::write_bundle(
            files.path(),
            cn,
            &device(&root, cn),
            &iotc::cert::WriteOptions::default(),
        )
        .unwrap();
        [
            "--cert".to_owned(),
            w.fullchain.as_ref().unwrap().display().to_string(),
            "--key".to_owned(),
            w.key.as_ref().unwrap().display().to_string(),
        ]
    };
    let group_file = files.path().join("group.key");
    std::fs::write(&group_file, format!("{}\n", group_key.expose())).unwrap();
    let info = env.emu.info();
    let args = |rid: &str, credential: &[String], transport: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--ca-file",
            &info.ca_cert.display().to_string(),
            "dps",
            "register",
            "--id-scope",
            &info.id_scope,
            "--registration-id",
            rid,
            "--endpoint",
            &info.dps_endpoint,
            "--deadline",
            "20",
        ]
        .map(str::to_owned)
        .to_vec();
        a.extend(credential.iter().cloned());
        a.extend(transport.iter().map(|s| s.to_string()));
        a
    };
    let x509 = x509_args("cli-mq-1");
    let sas = [
        "--group-key-file".to_owned(),
        group_file.display().to_string(),
    ];
    let mqtt_host = env.mqtt_host();
    let mqtt = ["--transport", "mqtt", "--mqtt-host", mqtt_host.as_str()];
    for (rid, credential) in [("cli-mq-1", &x509[..]), ("cli-mq-2", &sas[..])] {
        let mut tables = Vec::new();
        for transport in [&["--transport", "https"][..], &mqtt[..]] {
            let out = run_iotc(args(rid, credential, transport)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{transport:?}: {stderr}");
            tables.push(String::from_utf8(out.stdout).unwrap());
        }
        assert_eq!(tables[0], tables[1], "{rid}");
        assert!(
            tables[1].contains(rid) && tables[1].contains("assigned"),
            "{}",
            tables[1]
        );
    }
    // Over MQTT the HTTPS endpoint is not contacted at all: a dead one does not matter.
    let mut dead_endpoint = args("cli-mq-5", &sas, &mqtt);
    let at = dead_endpoint
        .iter()
        .position(|a| a == "--endpoint")
        .unwrap();
    dead_endpoint[at + 1] = "https://127.0.0.1:1".into();
    let out = run_iotc(dead_endpoint).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refusal over MQTT reads as over HTTPS: the service's code and message, exit 2.
    let wrong_cn = x509_args("cli-mq-other");
    let out = run_iotc(args("cli-mq-3", &wrong_cn, &mqtt)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("HTTP 401, errorCode 401002"), "{stderr}");
    assert!(stderr.contains("CN mismatch"), "{stderr}");
    // --mqtt-host without --transport mqtt is a usage error, not a silent https register.
    let out = run_iotc(args("cli-mq-4", &sas, &["--mqtt-host", mqtt_host.as_str()])).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--transport mqtt"), "{stderr}");
    assert!(env.central.get_device("cli-mq-4").await.is_err());

    // A profile made from the emulator's emulator.json knows its dpsMqttHost: no flag needed.
    let config = files.path().join("config.json");
    // `iotc ARGS` with that config file, which must succeed; its stdout.
    let with_config = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_iotc"));
        c.env("IOTC_CONFIG", &config).args(args);
        async move {
            let out = tokio::task::spawn_blocking(move || c.output().unwrap())
                .await
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{stderr}");
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let data_dir = env.dir.path().display().to_string();
    with_config(&["config", "set", "local", "--emulator", &data_dir]).await;
    let group = group_file.display().to_string();
    let stdout = with_config(&[
        "--profile",
        "local",
        "dps",
        "register",
        "--registration-id",
        "cli-mq-6",
        "--group-key-file",
        &group,
        "--transport",
        "mqtt",
    ])
    .await;
    assert!(stdout.contains("cli-mq-6"));
}

/// `iotc emulator --dps-mqtt-listen` serves MQTT and says where in the ready line and in
/// emulator.json; without the flag there is no such field (and no MQTT listener).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ready_line_names_the_mqtt_host_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (child, ready) = crate::common_emulator::spawn_binary(
        dir.path(),
        &["--dps-mqtt-listen", "127.0.0.1:0", "--rate-limit", "off"],
    )
    .await;
    let host = ready["dpsMqttHost"]
        .as_str()
        .expect("dpsMqttHost")
        .to_owned();
    assert!(host.starts_with("127.0.0.1:"), "{host}");
    assert!(!ready["dpsEndpoint"].as_str().unwrap().ends_with(&host[9..]));
    // It speaks MQTT: a CONNECT with a user name of another scope is refused with CONNACK 4.
    let ca = std::fs::read(ready["caCert"].as_str().unwrap()).unwrap();
    let mut raw = Raw::connect(&host, Tls::plain(&ca)).await;
    raw.send(common_mqtt::connect("0ne99999999", "dev-1", "", true))
        .await;
    match raw.read().await {
        Read::Packet(Packet::ConnAck(a)) => {
            assert_eq!(a.code, rumqttc::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("{other:?}"),
    }
    crate::common_emulator::stop_binary(child).await;

    let plain = iotc::emulator::Emulator::start(
        iotc::emulator::EmulatorConfig::new(dir.path().join("plain")).rate_limit(None),
    )
    .await
    .unwrap();
    let json = serde_json::to_value(plain.info()).unwrap();
    assert!(json.get("dpsMqttHost").is_none(), "{json}");
    plain.shutdown().await;
}
