//! Retries, pacing and the idempotency rules against the emulator's rate limit and fault
//! injection, and against a proxy that loses answers after the emulator did the work.
//!
//! What must hold: no call is lost (every idempotent call ends in success and the data is all
//! there), and no non-idempotent call reaches the service twice.

use crate::common_central;

use common_central::proxy::Proxy;
use common_central::Emu;
use iotc::central::models::{
    ApiToken, Device, EnrollmentGroup, EnrollmentGroupType, GroupAttestation, RoleAssignment,
    SigningX509Certificate, X509VerificationCertificate,
};
use iotc::central::{CertificateEntry, Client, ClientOptions, Credential, ListOptions};
use iotc::emulator::stats::counter;
use serde_json::json;

fn device(i: usize) -> Device {
    Device {
        display_name: Some(format!("Device {i}")),
        enabled: Some(true),
        ..Default::default()
    }
}

async fn create_many(c: &Client, prefix: &str, n: usize) {
    use futures::StreamExt;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let c = c.clone();
            let id = format!("{prefix}-{i:03}");
            async move { c.create_device(&id, &device(i)).await.map(|_| id) }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        if let Err(e) = r {
            panic!("a call was lost: {e}");
        }
    }
}

/// Every device id, sorted, as listed (a device listed twice would show twice).
async fn ids(c: &Client) -> Vec<String> {
    let mut ids: Vec<String> = c
        .list_devices(&ListOptions::default())
        .collect_all()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.id)
        .collect();
    ids.sort();
    ids
}

/// `{prefix}-000` .. `{prefix}-{n-1}`.
fn made(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

#[test]
fn the_rate_limit_is_met_by_retries_and_avoided_by_pacing() {
    let emu = Emu::start_with(Some(20));
    // No pacing: the emulator's 20 requests/s limit answers 429 + Retry-After; every call is
    // retried until it succeeds.
    let unpaced = emu.client();
    emu.block_on(create_many(&unpaced, "u", 60));
    let u = unpaced.stats();
    assert!(u.throttled > 0, "{u:?}");
    assert_eq!(u.attempts, 60 + u.retries, "{u:?}");
    // Every retry answered a 429, which the service sends before doing any work, and the
    // emulator refused exactly as many requests as the client saw refused.
    assert_eq!(u.retries, u.throttled, "{u:?}");
    assert_eq!(
        emu.stats().total(counter::RATE_LIMITED),
        u.throttled,
        "{u:?}"
    );

    // Default pacing (20 requests/s): the same work meets (almost) no 429.
    let paced = emu.client_with(ClientOptions {
        rate_limit: ClientOptions::default().rate_limit,
        ..emu.options()
    });
    emu.block_on(async {
        // let the emulator's bucket refill after the first run
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        create_many(&paced, "p", 60).await;
    });
    let p = paced.stats();
    eprintln!("rate limit 20/s, 60 creates each: unpaced {u:?}, paced {p:?}");
    assert!(
        p.throttled * 4 <= u.throttled,
        "pacing should avoid most 429s: paced {p:?}, unpaced {u:?}"
    );
    assert_eq!(
        emu.stats().total(counter::RATE_LIMITED),
        u.throttled + p.throttled,
        "{p:?}"
    );
    let all = emu.block_on(ids(&emu.client()));
    let mut want = made("p", 60);
    want.extend(made("u", 60));
    assert_eq!(all, want, "every create landed, none lost");
}

#[test]
fn injected_faults_are_retried_and_no_call_is_lost() {
    let emu = Emu::start();
    emu.set(
        json!({"faults": {"seed": 7, "errorRate": 0.15, "throttleRate": 0.1,
                              "throttleBurst": 2, "dropRate": 0.1}}),
    );
    let c = emu.client();
    emu.block_on(async {
        create_many(&c, "f", 60).await;
        // reads and updates under the same faults
        for i in (0..60).step_by(6) {
            let id = format!("f-{i:03}");
            c.update_device(&id, &json!({"displayName": format!("Renamed {i}")}))
                .await
                .unwrap();
            let d = c.get_device(&id).await.unwrap();
            assert_eq!(d.display_name, Some(format!("Renamed {i}")));
        }
        let listed = c
            .list_devices(&ListOptions::default().max_page_size(7))
            .collect_all()
            .await
            .unwrap();
        assert_eq!(listed.len(), 60);
        // deletes: an unknown outcome followed by 404 counts as done
        for i in 0..10 {
            c.delete_device(&format!("f-{i:03}")).await.unwrap();
        }
    });
    let s = c.stats();
    eprintln!(
        "faults (15% 503, 10% 429 bursts of 2, 10% drops), 60 creates + 30 calls + list: {s:?}"
    );
    assert!(
        s.retries > 0 && s.throttled > 0,
        "faults were injected: {s:?}"
    );
    emu.set(json!({"faults": {"errorRate": 0.0, "throttleRate": 0.0, "dropRate": 0.0}}));
    let left = emu.block_on(ids(&emu.client()));
    assert_eq!(
        left,
        made("f", 60)[10..],
        "every create landed, every delete too"
    );
}

fn x509_group() -> EnrollmentGroup {
    EnrollmentGroup {
        id: None,
        display_name: "Line".into(),
        enabled: Some(true),
        group_type: EnrollmentGroupType::Iot,
        attestation: GroupAttestation::X509 { x509: None },
        etag: None,
        id_scope: None,
    }
}

#[test]
fn generate_verification_code_is_resent_only_when_it_cannot_have_run() {
    let emu = Emu::start();
    let ca = common_central::root_ca();
    let c = emu.client();
    emu.block_on(async {
        c.create_enrollment_group("line", &x509_group())
            .await
            .unwrap();
        let cert = SigningX509Certificate {
            certificate: Some(iotc::cert::certificate_string(ca.cert_pem())),
            ..Default::default()
        };
        c.set_enrollment_group_certificate("line", CertificateEntry::Primary, &cert)
            .await
            .unwrap();
    });

    // 429s are refusals before any work: resent until the code comes back.
    emu.set(json!({"faults": {"seed": 3, "throttleRate": 0.5, "throttleBurst": 1}}));
    let throttled = emu.client();
    emu.block_on(async {
        for _ in 0..6 {
            throttled
                .generate_verification_code("line", CertificateEntry::Primary)
                .await
                .expect("429 is retried");
        }
    });
    let s = throttled.stats();
    assert!(s.throttled > 0 && s.retries == s.throttled, "{s:?}");

    // 503s and dropped connections may come after the work: never resent.
    emu.set(json!({"faults": {"seed": 5, "throttleRate": 0.0, "errorRate": 0.3, "dropRate": 0.3}}));
    let faulty = emu.client();
    let (mut ok, mut unknown) = (0, 0);
    emu.block_on(async {
        for _ in 0..20 {
            match faulty
                .generate_verification_code("line", CertificateEntry::Primary)
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.outcome_unknown(), "{e}");
                    unknown += 1;
                }
            }
        }
    });
    let s = faulty.stats();
    assert_eq!(s.attempts, 20, "no attempt was repeated: {s:?}");
    assert_eq!(s.retries, 0);
    assert!(ok > 0 && unknown > 0, "ok {ok}, unknown {unknown}");
}

#[test]
fn a_lost_answer_never_repeats_a_non_idempotent_call() {
    let emu = Emu::start();
    let proxy = Proxy::start(&emu);
    let ca = common_central::root_ca();
    let c = Client::new(
        &proxy.url,
        Credential::api_token(emu.admin_token.clone()),
        Some(emu.options().with_ca_pem(proxy.ca_pem.clone())),
    )
    .unwrap();
    emu.block_on(async {
        c.create_enrollment_group("line", &x509_group())
            .await
            .unwrap();
        let cert = SigningX509Certificate {
            certificate: Some(iotc::cert::certificate_string(ca.cert_pem())),
            ..Default::default()
        };
        c.set_enrollment_group_certificate("line", CertificateEntry::Primary, &cert)
            .await
            .unwrap();

        // generateVerificationCode: the emulator made a code, the answer was lost. The client
        // must not ask again behind the caller's back.
        proxy.lose_next_answer("POST", "/generateVerificationCode");
        let e = c
            .generate_verification_code("line", CertificateEntry::Primary)
            .await
            .unwrap_err();
        assert!(e.outcome_unknown(), "{e}");
        assert_eq!(proxy.count("POST", "/generateVerificationCode"), 1);

        // The caller asks again on purpose, proves possession; the verify answer is lost too,
        // and the client reads the certificate back instead of resending.
        let code = c
            .generate_verification_code("line", CertificateEntry::Primary)
            .await
            .unwrap()
            .verification_code;
        let proof = ca.issue_verification(&code, &Default::default()).unwrap();
        proxy.lose_next_answer("POST", "/verify");
        c.verify_enrollment_group_certificate(
            "line",
            CertificateEntry::Primary,
            &X509VerificationCertificate {
                certificate: iotc::cert::certificate_string(&proof.cert_pem),
            },
        )
        .await
        .expect("verified, learned by reading the certificate back");
        assert_eq!(proxy.count("POST", "/verify"), 1);
        assert_eq!(proxy.count("GET", "/certificates/primary"), 1);

        // An API token's value comes once: a lost answer is reported, never re-minted.
        proxy.lose_next_answer("PUT", "/apiTokens/line-token");
        let req = ApiToken {
            id: None,
            roles: vec![RoleAssignment {
                role: iotc::central::models::roles::OPERATOR.into(),
                organization: None,
            }],
            token: None,
            expiry: None,
        };
        let e = c.create_api_token("line-token", &req).await.unwrap_err();
        assert!(e.outcome_unknown(), "{e}");
        assert_eq!(proxy.count("PUT", "/apiTokens/line-token"), 1);

        // Idempotent calls are simply resent.
        proxy.lose_next_answer("PUT", "/devices/d1");
        c.create_device("d1", &device(1)).await.unwrap();
        assert_eq!(proxy.count("PUT", "/devices/d1"), 2);

        // A DELETE whose answer was lost: the resend meets 404, which means done.
        proxy.lose_next_answer("DELETE", "/devices/d1");
        c.delete_device("d1").await.unwrap();
        assert_eq!(proxy.count("DELETE", "/devices/d1"), 2);
        assert!(c.get_device("d1").await.unwrap_err().is_not_found());
    });
}

#[test]
fn retry_after_is_honoured_instead_of_hammering() {
    // One request per second: each call after the first is throttled once, waits the
    // Retry-After the emulator sends, and then gets through. Backing off on our own 50 ms
    // schedule instead would be throttled several times per call.
    let emu = Emu::start_with(Some(1));
    let c = emu.client();
    emu.block_on(async {
        c.create_device("slow", &device(0)).await.unwrap();
        for _ in 0..3 {
            c.get_device("slow").await.unwrap();
        }
    });
    let s = c.stats();
    eprintln!("rate limit 1/s, 4 calls: {s:?}");
    assert!(s.throttled >= 1, "{s:?}");
    assert!(s.throttled <= 4, "Retry-After was not honoured: {s:?}");
}

#[test]
fn per_request_timeouts_end_slow_calls() {
    let emu = Emu::start();
    emu.set(json!({"faults": {"latencyMs": 1500}}));
    let mut options = emu
        .options()
        .with_timeout(std::time::Duration::from_millis(300));
    options.retry.max_retries = 1;
    let c = emu.client_with(options);
    emu.block_on(async {
        let e = c.get_device("x").await.unwrap_err();
        assert!(matches!(e, iotc::central::Error::Timeout { .. }), "{e}");
        assert!(e.is_retryable() && e.outcome_unknown());
        assert_eq!(c.stats().attempts, 2, "an idempotent GET is retried once");
        let e = c
            .generate_verification_code("nope", CertificateEntry::Primary)
            .await
            .unwrap_err();
        assert!(matches!(e, iotc::central::Error::Timeout { .. }), "{e}");
        assert_eq!(c.stats().attempts, 3, "a timed-out POST is not resent");
    });
}

#[test]
fn credentials_are_sent_in_the_forms_iot_central_expects() {
    let emu = Emu::start();
    let proxy = Proxy::start(&emu);
    let options = emu.options().with_ca_pem(proxy.ca_pem.clone());
    let api = Client::new(
        &proxy.url,
        Credential::api_token(emu.admin_token.clone()),
        Some(options.clone()),
    )
    .unwrap();
    let bearer = Client::new(
        &proxy.url,
        Credential::bearer("eyJ0eXAiOiJKV1QifQ.e30.sig"),
        Some(options.with_max_retries(0)),
    )
    .unwrap();
    emu.block_on(async {
        api.list_roles().collect_all().await.unwrap();
        // the emulator accepts only its own API tokens, so the bearer call is refused
        let e = bearer.list_roles().collect_all().await.unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
    });
    let seen = proxy.authorizations();
    assert_eq!(
        seen[0], emu.admin_token,
        "an API token goes raw, no Bearer prefix"
    );
    assert!(seen[0].starts_with("SharedAccessSignature "));
    assert_eq!(seen[1], "Bearer eyJ0eXAiOiJKV1QifQ.e30.sig");

    // a token provider (the plug-in point for azure_identity) is asked before every request
    struct Counting(std::sync::atomic::AtomicU32);
    impl iotc::central::TokenProvider for Counting {
        fn token(&self) -> iotc::central::credential::TokenFuture<'_> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(iotc::secret::Secret::new(format!("token-{n}"))) })
        }
    }
    let provided = Client::new(
        &proxy.url,
        Credential::Provider(std::sync::Arc::new(Counting(0.into()))),
        Some(
            emu.options()
                .with_ca_pem(proxy.ca_pem.clone())
                .with_max_retries(0),
        ),
    )
    .unwrap();
    emu.block_on(async {
        for _ in 0..2 {
            let e = provided.list_roles().collect_all().await.unwrap_err();
            assert_eq!(e.status(), Some(401), "{e}");
        }
    });
    let seen = proxy.authorizations();
    assert_eq!(&seen[2..], ["Bearer token-0", "Bearer token-1"]);
}
