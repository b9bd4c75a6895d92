//! DPS X.509 registration over real TLS on loopback, against the real emulator, with
//! certificates from our cert module (and, for leaves our module will not make, from the
//! openssl CLI): every acceptance and every refusal of issues 4 and 11.

use crate::common_cert;
use crate::common_dps;

use common_cert::{leaf_ext, ossl_cert_cn};
use common_dps::*;
use iotc::cert::{CaOptions, LeafOptions, WriteOptions};
use iotc::dps::{DpsError, EnrollmentStatus};
use time::{Duration, OffsetDateTime};

fn refusal(e: DpsError) -> String {
    match e {
        DpsError::Service {
            status: 401,
            error_code: Some(401002),
            message: Some(m),
            tracking_id: Some(_),
            ..
        } => m,
        other => panic!("expected a 401 DPS refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_signed_device_registers_and_exists_in_central_once() {
    let env = start().await;
    let root = root();
    env.verified_group("factory-a", &root).await;
    let dev = device(&root, "dev-root-1");
    let client = env.device_client(&dev);
    let payload = serde_json::json!({"modelId": "dtmi:com:example:Thermostat;1"});
    let first = client
        .register(&rid("dev-root-1"), Some(payload.clone()))
        .await
        .unwrap();
    assert_eq!(first.status, Some(EnrollmentStatus::Assigned));
    assert_eq!(first.device_id.as_deref(), Some("dev-root-1"));
    assert_eq!(first.registration_id.as_deref(), Some("dev-root-1"));
    assert!(first
        .assigned_hub
        .as_deref()
        .is_some_and(|h| h.ends_with(".azure-devices.net")));
    assert_eq!(
        first.substatus.as_ref().map(|s| s.as_str()),
        Some("initialAssignment")
    );
    assert!(first.created_date_time_utc.is_some());
    let x509 = first.x509.clone().unwrap();
    assert_signed_through(&x509, "factory-a", root.cert_der());
    let leaf = x509.certificate_info.unwrap();
    assert_eq!(
        leaf.sha1_thumbprint,
        iotc::cert::sha1_thumbprint(&dev.cert_der)
    );
    assert!(leaf.subject_name.contains("dev-root-1"));

    // IoT Central sees it: provisioned, template from the payload's modelId.
    let d = env.central.get_device("dev-root-1").await.unwrap();
    assert_eq!(d.provisioned, Some(true));
    assert_eq!(d.template.as_deref(), Some("dtmi:com:example:Thermostat;1"));

    // Registering again returns the same device, created once.
    let second = client
        .register(&rid("dev-root-1"), Some(payload))
        .await
        .unwrap();
    assert_eq!(second.device_id, first.device_id);
    assert_eq!(second.created_date_time_utc, first.created_date_time_utc);
    let all = env
        .central
        .list_devices(&Default::default())
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .filter(|d| d.id.as_deref() == Some("dev-root-1"))
            .count(),
        1
    );

    // The status lookup answers the stored state.
    let looked = client.status_lookup(&rid("dev-root-1")).await.unwrap();
    assert_eq!(looked.device_id.as_deref(), Some("dev-root-1"));
    assert_eq!(looked.status, Some(EnrollmentStatus::Assigned));
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_signed_device_needs_its_chain_in_the_handshake() {
    let env = start().await;
    let root = root();
    let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
    env.verified_group("factory-b", &root).await;
    let dev = device(&inter, "dev-int-1");

    // Leaf + intermediate in the handshake: accepted, through the root's group.
    let ok = env
        .x509_client(
            vec![dev.cert_der.clone(), inter.cert_der().to_vec()],
            &key_der(&dev),
        )
        .register(&rid("dev-int-1"), None)
        .await
        .unwrap();
    let x = ok.x509.unwrap();
    assert_signed_through(&x, "factory-b", root.cert_der());

    // The leaf alone: told that the chain is incomplete, with the missing issuer named.
    let msg = refusal(
        env.x509_client(vec![dev.cert_der.clone()], &key_der(&dev))
            .register(&rid("dev-int-1"), None)
            .await
            .unwrap_err(),
    );
    assert!(
        msg.starts_with(&format!(
            "the chain is incomplete: the leaf's issuer \"{}\" is not in the presented chain",
            inter.subject()
        )),
        "{msg}"
    );
    assert!(
        msg.contains("present the full chain (leaf + intermediates"),
        "{msg}"
    );
    // A deeper chain cut in the middle names the certificate whose issuer is missing.
    let tall = iotc::cert::Authority::new_root(&CaOptions {
        cn: Some("tall root".into()),
        path_len: Some(2),
        ..CaOptions::default()
    })
    .unwrap();
    env.verified_group("factory-tall", &tall).await;
    let mid = tall
        .issue_intermediate(&CaOptions {
            cn: Some("mid CA".into()),
            path_len: Some(1),
            ..CaOptions::default()
        })
        .unwrap();
    let low = mid
        .issue_intermediate(&CaOptions {
            cn: Some("low CA".into()),
            ..CaOptions::default()
        })
        .unwrap();
    let deep = device(&low, "dev-int-3");
    let msg = refusal(
        env.x509_client(
            vec![deep.cert_der.clone(), low.cert_der().to_vec()],
            &key_der(&deep),
        )
        .register(&rid("dev-int-3"), None)
        .await
        .unwrap_err(),
    );
    assert!(
        msg.starts_with("the chain is incomplete: the issuer of \"CN=low CA\" \"CN=mid CA\""),
        "{msg}"
    );
    // Complete, it registers.
    env.x509_client(
        vec![
            deep.cert_der.clone(),
            low.cert_der().to_vec(),
            mid.cert_der().to_vec(),
        ],
        &key_der(&deep),
    )
    .register(&rid("dev-int-3"), None)
    .await
    .unwrap();
    // A root no group holds is foreign, not incomplete.
    let stranger = iotc::cert::Authority::new_root(&CaOptions {
        cn: Some("stranger root".into()),
        ..CaOptions::default()
    })
    .unwrap();
    let lost = device(&stranger, "dev-lost");
    let msg = refusal(
        env.device_client(&lost)
            .register(&rid("dev-lost"), None)
            .await
            .unwrap_err(),
    );
    assert!(msg.starts_with("the chain is incomplete"), "{msg}");
    let msg = refusal(
        env.x509_client(
            vec![lost.cert_der.clone(), stranger.cert_der().to_vec()],
            &key_der(&lost),
        )
        .register(&rid("dev-lost"), None)
        .await
        .unwrap_err(),
    );
    assert!(msg.starts_with("foreign CA"), "{msg}");
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_intermediate_is_the_most_specific_group() {
    let env = start().await;
    let root = root();
    let inter = root.issue_intermediate(&CaOptions::default()).unwrap();
    env.verified_group("by-root", &root).await;
    env.verified_group("by-intermediate", &inter).await;
    let dev = device(&inter, "dev-int-2");
    let r = env
        .device_client(&dev)
        .register(&rid("dev-int-2"), None)
        .await
        .unwrap();
    let x = r.x509.unwrap();
    assert_signed_through(&x, "by-intermediate", inter.cert_der());
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unverified_ca_is_refused_until_proof_of_possession() {
    let env = start().await;
    let root = root();
    env.x509_group("pending", false).await;
    env.upload("pending", &root).await;
    let dev = device(&root, "dev-pop-1");
    let client = env.device_client(&dev);
    let msg = refusal(client.register(&rid("dev-pop-1"), None).await.unwrap_err());
    assert!(msg.starts_with("unverified CA"), "{msg}");
    assert!(msg.contains("pending"), "{msg}");
    assert!(env.central.get_device("dev-pop-1").await.is_err());

    env.prove("pending", &root).await;
    let r = client.register(&rid("dev-pop-1"), None).await.unwrap();
    assert_eq!(r.device_id.as_deref(), Some("dev-pop-1"));
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_ca_expired_and_cn_mismatch_are_refused_each_with_its_message() {
    let env = start().await;
    let root = root();
    env.verified_group("factory-c", &root).await;

    // Foreign CA, even one with the same subject name.
    let foreign = iotc::cert::Authority::new_root(&CaOptions::default()).unwrap();
    let dev = device(&foreign, "dev-foreign");
    let msg = refusal(
        env.device_client(&dev)
            .register(&rid("dev-foreign"), None)
            .await
            .unwrap_err(),
    );
    assert!(msg.starts_with("foreign CA"), "{msg}");

    // Expired device certificate.
    let now = OffsetDateTime::now_utc();
    let old = root
        .issue_device(
            &rid("dev-expired"),
            &LeafOptions {
                not_before: Some(now - Duration::days(10)),
                not_after: Some(now - Duration::days(1)),
                ..LeafOptions::default()
            },
        )
        .unwrap();
    let msg = refusal(
        env.device_client(&old)
            .register(&rid("dev-expired"), None)
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("expired"), "{msg}");

    // Not yet valid.
    let early = root
        .issue_device(
            &rid("dev-early"),
            &LeafOptions {
                not_before: Some(now + Duration::days(2)),
                not_after: Some(now + Duration::days(20)),
                ..LeafOptions::default()
            },
        )
        .unwrap();
    let msg = refusal(
        env.device_client(&early)
            .register(&rid("dev-early"), None)
            .await
            .unwrap_err(),
    );
    assert!(msg.contains("not yet valid"), "{msg}");

    // CN is not the registration id.
    let dev = device(&root, "dev-cn-a");
    let msg = refusal(
        env.device_client(&dev)
            .register(&rid("dev-cn-b"), None)
            .await
            .unwrap_err(),
    );
    assert!(msg.starts_with("CN mismatch"), "{msg}");
    assert!(
        msg.contains("dev-cn-a") && msg.contains("dev-cn-b"),
        "{msg}"
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_device_is_refused_400209_and_a_disabled_group_ends_disabled() {
    let env = start().await;
    let root = root();
    env.verified_group("factory-d", &root).await;
    let dev = device(&root, "dev-d-1");
    let client = env.device_client(&dev);
    client.register(&rid("dev-d-1"), None).await.unwrap();

    // Block the device in IoT Central.
    env.central
        .update_device("dev-d-1", &serde_json::json!({"enabled": false}))
        .await
        .unwrap();
    // IoT Central answers a blocked device 401 with sub-code 400209 (troubleshoot-connection.md).
    match client.register(&rid("dev-d-1"), None).await.unwrap_err() {
        DpsError::Service {
            status: 401,
            error_code: Some(400_209),
            message: Some(m),
            ..
        } => assert!(m.contains("Device is blocked"), "{m}"),
        other => panic!("{other:?}"),
    }

    // Disable the group: a new device of the group is refused too.
    env.central
        .update_enrollment_group("factory-d", &serde_json::json!({"enabled": false}))
        .await
        .unwrap();
    let dev2 = device(&root, "dev-d-2");
    match env
        .device_client(&dev2)
        .register(&rid("dev-d-2"), None)
        .await
        .unwrap_err()
    {
        DpsError::RegistrationFailed {
            status: EnrollmentStatus::Disabled,
            error_message: Some(m),
            ..
        } => assert!(
            m.contains("enrollment group \"factory-d\" is disabled"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(env.central.get_device("dev-d-2").await.is_err());
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_group_makes_an_edge_device_and_no_certificate_is_refused() {
    let env = start().await;
    let root = root();
    env.x509_group("edge", true).await;
    env.upload("edge", &root).await;
    env.prove("edge", &root).await;
    let dev = device(&root, "gateway-1");
    env.device_client(&dev)
        .register(&rid("gateway-1"), None)
        .await
        .unwrap();
    // `type` is a 2022-10-31-preview field.
    let preview = iotc::central::Client::new(
        &env.emu.info().api_url,
        iotc::central::Credential::ApiToken(env.emu.info().admin_token.clone()),
        Some(iotc::central::ClientOptions {
            extra_ca_pem: Some(env.ca_pem.clone()),
            api_version: "2022-10-31-preview".into(),
            ..Default::default()
        }),
    )
    .unwrap();
    let d = preview.get_device("gateway-1").await.unwrap();
    assert_eq!(d.device_type, Some(vec!["iotEdge".to_owned()]));
    assert_eq!(d.provisioned, Some(true));

    // No client certificate and no SAS: refused, with a message saying what to send.
    let http = reqwest::Client::builder()
        .tls_certs_only(vec![reqwest::Certificate::from_pem(&env.ca_pem).unwrap()])
        .build()
        .unwrap();
    let resp = http
        .put(format!(
            "{}/{}/registrations/gateway-1/register?api-version=2021-10-01",
            env.emu.info().dps_endpoint,
            env.emu.info().id_scope
        ))
        .json(&serde_json::json!({"registrationId": "gateway-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("no credentials"));
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn individual_x509_attestation_registers_without_a_group() {
    let env = start().await;
    let lone_ca = root();
    let dev = device(&lone_ca, "solo-1");
    env.central
        .create_device("solo-1", &iotc::central::models::Device::default())
        .await
        .unwrap();
    env.central
        .set_device_attestation(
            "solo-1",
            &iotc::central::models::Attestation::X509 {
                x509: iotc::central::models::X509 {
                    client_certificates: Some(iotc::central::models::X509Certificates {
                        primary: iotc::central::models::X509Certificate {
                            certificate: Some(iotc::cert::certificate_string(&dev.cert_pem)),
                            info: None,
                        },
                        secondary: None,
                    }),
                },
            },
        )
        .await
        .unwrap();
    let r = env
        .device_client(&dev)
        .register(&rid("solo-1"), None)
        .await
        .unwrap();
    let x = r.x509.unwrap();
    assert_eq!(x.enrollment_group_id, None);
    assert_eq!(
        x.certificate_info.unwrap().sha1_thumbprint,
        iotc::cert::sha1_thumbprint(&dev.cert_der)
    );
    // Another certificate from the same CA is not that device's.
    let other = device(&lone_ca, "solo-1");
    let err = env
        .device_client(&other)
        .register(&rid("solo-1"), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("foreign CA"), "{err}");
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_survive_an_emulator_restart() {
    let env = start().await;
    let root = root();
    env.verified_group("durable", &root).await;
    let dev = device(&root, "durable-1");
    let first = env
        .device_client(&dev)
        .register(&rid("durable-1"), None)
        .await
        .unwrap();
    let env = env.restart().await;
    let client = env.device_client(&dev);
    let looked = client.status_lookup(&rid("durable-1")).await.unwrap();
    assert_eq!(looked.created_date_time_utc, first.created_date_time_utc);
    let again = client.register(&rid("durable-1"), None).await.unwrap();
    assert_eq!(again.device_id.as_deref(), Some("durable-1"));
    assert_eq!(again.created_date_time_utc, first.created_date_time_utc);
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaves_that_are_not_device_certificates_are_refused_naming_each_reason() {
    let env = start().await;
    let root = root();
    env.verified_group("factory-p", &root).await;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    iotc::cert::write_bundle(d, "root", root.issued(), &WriteOptions::default()).unwrap();
    let pem = |name: &str, part: &str| std::fs::read(d.join(format!("{name}_{part}.pem"))).unwrap();
    // (registration id, CN, extensions, what the refusal must say)
    let cases = [
        (
            "dev-srv",
            "dev-srv",
            leaf_ext(false, "digitalSignature", "serverAuth"),
            "extendedKeyUsage lacks clientAuth: CN=dev-srv has extendedKeyUsage serverAuth",
        ),
        (
            "dev-noeku",
            "dev-noeku",
            leaf_ext(false, "digitalSignature", ""),
            "CN=dev-noeku has no extendedKeyUsage extension",
        ),
        (
            "dev-ca",
            "dev-ca",
            leaf_ext(true, "digitalSignature,keyCertSign", "clientAuth"),
            "CA:TRUE on a device certificate: CN=dev-ca",
        ),
        (
            "dev-ka",
            "dev-ka",
            leaf_ext(false, "keyAgreement", "clientAuth"),
            "keyUsage lacks digitalSignature: CN=dev-ka has keyUsage keyAgreement",
        ),
        (
            "dev-sp",
            "dev 01",
            leaf_ext(false, "digitalSignature", "clientAuth"),
            "CN not a valid registration id: \"dev 01\": character ' ' is not allowed",
        ),
    ];
    for (id, cn, ext, needle) in &cases {
        ossl_cert_cn(d, id, cn, Some("root"), ext);
        let msg = refusal(
            env.pem_client(&pem(id, "cert"), &pem(id, "key"))
                .register(&rid(id), None)
                .await
                .unwrap_err(),
        );
        assert!(msg.starts_with("not a device certificate: "), "{id}: {msg}");
        assert!(msg.contains(needle), "{id}: {needle:?} not in {msg:?}");
        assert!(
            env.central.get_device(id).await.is_err(),
            "{id} was created"
        );
    }
    // Same CA, same tool, the device profile: it registers, so only the purpose was wrong.
    ossl_cert_cn(
        d,
        "dev-good",
        "dev-good",
        Some("root"),
        &leaf_ext(false, "digitalSignature", "clientAuth"),
    );
    env.pem_client(&pem("dev-good", "cert"), &pem("dev-good", "key"))
        .register(&rid("dev-good"), None)
        .await
        .unwrap();

    // An individual enrollment holds its device to the same rules.
    ossl_cert_cn(
        d,
        "solo-srv",
        "solo-srv",
        None,
        &leaf_ext(false, "digitalSignature", "serverAuth"),
    );
    env.central
        .create_device("solo-srv", &iotc::central::models::Device::default())
        .await
        .unwrap();
    env.central
        .set_device_attestation(
            "solo-srv",
            &iotc::central::models::Attestation::X509 {
                x509: iotc::central::models::X509 {
                    client_certificates: Some(iotc::central::models::X509Certificates {
                        primary: iotc::central::models::X509Certificate {
                            certificate: Some(iotc::cert::certificate_string(
                                &String::from_utf8(pem("solo-srv", "cert")).unwrap(),
                            )),
                            info: None,
                        },
                        secondary: None,
                    }),
                },
            },
        )
        .await
        .unwrap();
    let msg = refusal(
        env.pem_client(&pem("solo-srv", "cert"), &pem("solo-srv", "key"))
            .register(&rid("solo-srv"), None)
            .await
            .unwrap_err(),
    );
    assert!(
        msg.starts_with("not a device certificate: extendedKeyUsage lacks clientAuth"),
        "{msg}"
    );
    env.emu.shutdown().await;
}
