//! DPS symmetric-key registration against the real emulator over TLS: keys derived from an
//! enrollment group, the device's IoT Central credentials and its individual attestation;
//! raw, `%2f` and `%2F` resource encodings; tampered, expired and misdirected tokens.

use crate::common_dps;

use base64::Engine as _;
use common_dps::*;
use iotc::dps::{derive_device_key, sas, DpsError};
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
