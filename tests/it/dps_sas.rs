//! DPS symmetric-key registration against the real emulator over TLS: keys derived from an
//! enrollment group, the device's IoT Central credentials and its individual attestation;
//! raw, `%2f` and `%2F` resource encodings; tampered, expired and misdirected tokens.

use crate::common_dps;

use base64::Engine as _;
use common_dps::*;
use iotc::dps::{derive_device_key, sas, DpsError};
use iotc::emulator::stats::counter;
use iotc::secret::Secret;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_derived_key_registers() {
    let env = start().await;
    let group_key = env.sas_group("sas-line-1").await;
    let key = derive_device_key(group_key.expose(), "sensor-1").unwrap();
    let r = env
        .sas_client(key)
        .register(&rid("sensor-1"), None)
        .await
        .unwrap();
    assert_eq!(r.device_id.as_deref(), Some("sensor-1"));
    assert_eq!(
        r.symmetric_key.unwrap().enrollment_group_id.as_deref(),
        Some("sas-line-1")
    );
    assert!(r.x509.is_none());
    let d = env.central.get_device("sensor-1").await.unwrap();
    assert_eq!(d.provisioned, Some(true));

    // The group key itself is not a device key.
    let err = env
        .sas_client(group_key)
        .register(&rid("sensor-1"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, DpsError::Service { status: 401, .. }),
        "{err}"
    );
    // Nor is the key of another device.
    let other = derive_device_key(env.sas_group("sas-line-2").await.expose(), "sensor-2").unwrap();
    let err = env
        .sas_client(other)
        .register(&rid("sensor-1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match any key"), "{err}");
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_credentials_and_individual_key_register() {
    let env = start().await;
    // A device created in IoT Central: its credentials' key works.
    env.central
        .create_device(
            "thermo-1",
            &iotc::central::models::Device {
                display_name: Some("Thermostat 1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let creds = env
        .central
        .get_device_credentials("thermo-1")
        .await
        .unwrap();
    assert_eq!(creds.id_scope, env.emu.info().id_scope);
    let key = creds.symmetric_key.unwrap().primary_key;
    let r = env
        .sas_client(key)
        .register(&rid("thermo-1"), None)
        .await
        .unwrap();
    assert_eq!(r.device_id.as_deref(), Some("thermo-1"));
    let d = env.central.get_device("thermo-1").await.unwrap();
    assert_eq!(d.provisioned, Some(true));
    assert_eq!(d.display_name.as_deref(), Some("Thermostat 1"));

    // An individual attestation with keys of our own.
    let own = Secret::new(base64::engine::general_purpose::STANDARD.encode([42u8; 32]));
    env.central
        .set_device_attestation(
            "thermo-1",
            &iotc::central::models::Attestation::SymmetricKey {
                symmetric_key: iotc::central::models::SymmetricKey {
                    primary_key: own.clone(),
                    secondary_key: Secret::new(
                        base64::engine::general_purpose::STANDARD.encode([43u8; 32]),
                    ),
                },
            },
        )
        .await
        .unwrap();
    let r = env
        .sas_client(own)
        .register(&rid("thermo-1"), None)
        .await
        .unwrap();
    assert_eq!(r.device_id.as_deref(), Some("thermo-1"));
    assert_eq!(r.symmetric_key.unwrap().enrollment_group_id, None);
    env.emu.shutdown().await;
}

/// PUT register with a hand-made Authorization header; returns status and body.
async fn put_with(env: &Env, id: &str, auth: &str) -> (u16, serde_json::Value) {
    let http = reqwest::Client::builder()
        .tls_certs_only(vec![reqwest::Certificate::from_pem(&env.ca_pem).unwrap()])
        .build()
        .unwrap();
    let resp = http
        .put(format!(
            "{}/{}/registrations/{id}/register?api-version=2021-06-01",
            env.emu.info().dps_endpoint,
            env.emu.info().id_scope
        ))
        .header("Authorization", auth)
        .json(&serde_json::json!({"registrationId": id}))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_sr_encodings_are_accepted_and_bad_tokens_refused() {
    let env = start().await;
    let group_key = env.sas_group("sas-enc").await;
    let key = derive_device_key(group_key.expose(), "enc-1").unwrap();
    let scope = env.emu.info().id_scope.clone();
    let se = now() + 600;
    for sr in [
        format!("{scope}/registrations/enc-1"),
        format!("{scope}%2fregistrations%2fenc-1"),
        format!("{scope}%2Fregistrations%2Fenc-1"),
    ] {
        let tok = sas::sign_with_resource(&sr, &key, se).unwrap();
        let (status, body) = put_with(&env, "enc-1", tok.expose()).await;
        assert_eq!(status, 202, "{sr}: {body}");
        assert_eq!(body["status"], "assigning");
        assert!(body["operationId"].as_str().is_some_and(|s| !s.is_empty()));
    }

    // Tampered: one character of the signature changed.
    let good = sas::sas_token(&scope, "enc-1", &key, se).unwrap();
    let sig_at = good.expose().find("sig=").unwrap() + 4;
    let mut bad = good.expose().to_owned();
    let c = if &bad[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad.replace_range(sig_at..sig_at + 1, c);
    let (status, body) = put_with(&env, "enc-1", &bad).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["errorCode"], 401002);
    assert!(body["trackingId"].as_str().is_some());
    // Tampered: a later expiry than the one signed.
    let later = good
        .expose()
        .replace(&format!("se={se}"), &format!("se={}", se + 1));
    let (status, body) = put_with(&env, "enc-1", &later).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("does not match"));

    // Expired.
    let old = sas::sas_token(&scope, "enc-1", &key, now() - 5).unwrap();
    let (status, body) = put_with(&env, "enc-1", old.expose()).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // A token for another registration id, sent for this one.
    let other = sas::sas_token(&scope, "enc-2", &key, se).unwrap();
    let (status, body) = put_with(&env, "enc-1", other.expose()).await;
    assert_eq!(status, 401);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("does not match the request"),
        "{body}"
    );

    // Wrong key name.
    let owner = good.expose().replace("skn=registration", "skn=iothubowner");
    let (status, body) = put_with(&env, "enc-1", &owner).await;
    assert_eq!(status, 401);
    assert!(
        body["message"].as_str().unwrap().contains("registration"),
        "{body}"
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_symmetric_key_group_ends_disabled() {
    let env = start().await;
    let group_key = env.sas_group("sas-off").await;
    env.central
        .update_enrollment_group("sas-off", &serde_json::json!({"enabled": false}))
        .await
        .unwrap();
    let key = derive_device_key(group_key.expose(), "off-1").unwrap();
    let err = env
        .sas_client(key)
        .register(&rid("off-1"), None)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("enrollment group \"sas-off\" is disabled"),
        "{err}"
    );
    env.emu.shutdown().await;
}

/// `base64(HMAC-SHA256(base64decode(key), data))` computed by the openssl CLI: a referee that
/// shares no code with `iotc::dps::sas`.
fn openssl_hmac(key_b64: &str, data: &str) -> String {
    use std::io::Write;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-mac", "HMAC", "-macopt"])
        .arg(format!("hexkey:{hex}"))
        .arg("-binary")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(data.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl dgst failed");
    assert_eq!(out.stdout.len(), 32, "an HMAC-SHA256");
    base64::engine::general_purpose::STANDARD.encode(out.stdout)
}

/// The fields of a `SharedAccessSignature k=v&k=v` header, read without `iotc::dps::sas`.
fn sas_fields(header: &str) -> std::collections::BTreeMap<String, String> {
    let rest = header
        .strip_prefix("SharedAccessSignature ")
        .unwrap_or_else(|| panic!("not a SAS token: {header:?}"));
    rest.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Percent-encodes a base64 signature the way the documentation's samples do (`+`, `/`, `=`).
fn url_encode_sig(sig: &str) -> String {
    sig.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_sas_tokens_are_what_openssl_signs_over_the_documented_string() {
    let env = start().await;
    let group_key = env.sas_group("sas-ref").await;
    let key = derive_device_key(group_key.expose(), "ref-1").unwrap();
    // The real client, through a proxy that keeps the Authorization headers it forwards.
    let proxy =
        crate::common_central::proxy::Proxy::spawn(&env.emu.info().dps_endpoint, &env.ca_pem).await;
    let mut opts = env.options();
    opts.endpoint = proxy.url.clone();
    opts.ca_pem = Some(proxy.ca_pem.clone());
    let client = iotc::dps::Client::new(
        env.id_scope(),
        iotc::dps::Attestation::SymmetricKey(key.clone()),
        opts,
    )
    .unwrap();
    let before = now();
    let r = client.register(&rid("ref-1"), None).await.unwrap();
    assert_eq!(r.device_id.as_deref(), Some("ref-1"));
    let tokens = proxy.authorizations();
    assert!(
        tokens.len() >= 2,
        "register and poll both signed: {tokens:?}"
    );
    let scope = &env.emu.info().id_scope;
    for t in &tokens {
        let f = sas_fields(t);
        // sr is `{idScope}/registrations/{registrationId}`, URL-encoded (DESIGN.md, API-NOTES).
        assert_eq!(f["sr"], format!("{scope}%2fregistrations%2fref-1"), "{t}");
        assert_eq!(f["skn"], "registration", "{t}");
        let se: u64 = f["se"].parse().unwrap();
        assert!(se > before && se <= now() + 3600 + 5, "expiry {se}: {t}");
        // The signature is HMAC-SHA256 over `{sr}\n{se}`, as openssl computes it.
        let expected = openssl_hmac(key.expose(), &format!("{}\n{}", f["sr"], f["se"]));
        let sig = percent_encoding::percent_decode_str(&f["sig"])
            .decode_utf8()
            .unwrap();
        assert_eq!(sig, expected, "{t}");
    }
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_accepts_a_token_made_from_the_published_key_vector_and_openssl() {
    let env = start().await;
    // The group key and device key of the DPS symmetric-key documentation's derivation example
    // ("Derive a device key"), the group key supplied to IoT Central as-is.
    let group_key =
        "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==";
    let id = "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6";
    let device_key = "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=";
    assert_eq!(
        openssl_hmac(group_key, id),
        device_key,
        "the published vector"
    );
    env.central
        .create_enrollment_group(
            "sas-doc",
            &iotc::central::models::EnrollmentGroup {
                id: None,
                display_name: "sas-doc".into(),
                enabled: Some(true),
                group_type: iotc::central::models::EnrollmentGroupType::Iot,
                attestation: iotc::central::models::GroupAttestation::SymmetricKey {
                    symmetric_key: Some(iotc::central::models::SymmetricKey {
                        primary_key: Secret::new(group_key),
                        secondary_key: Secret::new(
                            base64::engine::general_purpose::STANDARD.encode([5u8; 64]),
                        ),
                    }),
                },
                etag: None,
                id_scope: None,
            },
        )
        .await
        .unwrap();
    // The token, assembled here from the documented string-to-sign and signed by openssl.
    let scope = &env.emu.info().id_scope;
    let sr = format!("{scope}%2fregistrations%2f{id}");
    let se = now() + 600;
    let token = |signed_se: u64| {
        let sig = openssl_hmac(device_key, &format!("{sr}\n{signed_se}"));
        format!(
            "SharedAccessSignature sr={sr}&sig={}&se={se}&skn=registration",
            url_encode_sig(&sig)
        )
    };
    // A signature over another string-to-sign (one second later) is refused...
    let (status, body) = put_with(&env, id, &token(se + 1)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        env.emu.stats().unwrap().get(counter::DPS_REGISTRATIONS, id),
        0
    );
    // ...and the right one registers the device.
    let (status, body) = put_with(&env, id, &token(se)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        env.emu.stats().unwrap().get(counter::DPS_REGISTRATIONS, id),
        1
    );
    env.emu.shutdown().await;
}
