//! The emulator's IoT Central API over real TLS: the ready record, authentication,
//! api-version, the error body, devices with etags, enrollment groups with real proof of
//! possession, and the refusals (malformed input is always a 4xx with a message).

use crate::common_emulator;

use base64::Engine;
use common_emulator::{Emu, GA, PREVIEW};
use iotc::cert::{certificate_string, Authority, CaOptions, LeafOptions};
use serde_json::json;

#[tokio::test]
async fn ready_record_is_written_and_works() {
    let e = Emu::start().await;
    let text = std::fs::read_to_string(e.dir.path().join("emulator.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys.len(), 7, "{v}");
    for k in [
        "apiUrl",
        "dpsEndpoint",
        "idScope",
        "adminToken",
        "caCert",
        "authorityHost",
        "tenantId",
    ] {
        assert!(v[k].is_string(), "{k} in {v}");
    }
    assert_eq!(v["apiUrl"], e.url);
    assert!(v["adminToken"]
        .as_str()
        .unwrap()
        .starts_with("SharedAccessSignature sr="));
    let ca = std::fs::read_to_string(v["caCert"].as_str().unwrap()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    // The server certificate names localhost too.
    let port = e.url.rsplit(':').next().unwrap();
    let (s, _, body) = e
        .raw(
            Some(&e.token),
            "GET",
            &format!("https://localhost:{port}/api/roles?api-version={GA}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["value"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let e = Emu::start().await;
    let (s, _, v) = e.call_as(None, "GET", "/devices", None).await;
    assert_eq!(s, 401);
    assert_eq!(v["error"]["code"], "Unauthorized");
    let forged = e.token.replace("sig=", "sig=X");
    let wrong_app = e.token.replacen("sr=", "sr=x", 1);
    let wrong_id = e.token.replace("skn=emulator-admin", "skn=nobody");
    let wrong_se = format!("{}1", e.token);
    for bad in [
        forged.as_str(),
        wrong_app.as_str(),
        wrong_id.as_str(),
        wrong_se.as_str(),
        "Bearer eyJhbGciOi",
        "SharedAccessSignature garbage",
        "Basic abc",
    ] {
        let (s, _, v) = e.call_as(Some(bad), "GET", "/devices", None).await;
        assert_eq!(s, 401, "{bad}: {v}");
    }
}

#[tokio::test]
async fn api_version_is_required_and_checked() {
    let e = Emu::start().await;
    let url = format!("{}/api/devices", e.url);
    let (s, _, v) = e.raw(Some(&e.token), "GET", &url, None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("MissingApiVersionParameter"))
    );
    let (s, _, v) = e
        .raw(
            Some(&e.token),
            "GET",
            &format!("{url}?api-version=1.0"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidApiVersionParameter"))
    );
    let (s, _) = e.call("GET", "/devices", None).await;
    assert_eq!(s, 200);
    let (s, _, _) = e
        .call_v(Some(&e.token), "GET", "/devices", PREVIEW, None)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn unsupported_paths_say_so() {
    let e = Emu::start().await;
    for path in [
        "/jobs",
        "/devices/d1/properties",
        "/fileUploads",
        "/scheduledJobs/x",
    ] {
        let (s, v) = e.call("GET", path, None).await;
        assert_eq!(s, 501, "{path}");
        assert_eq!(v["error"]["code"], "NotSupportedByEmulator");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not supported by the emulator"));
    }
    let (s, _, v) = e
        .raw(
            Some(&e.token),
            "GET",
            &format!("{}/nothing", e.url),
            None,
            None,
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = e.call("PATCH", "/apiTokens/x", Some(json!({}))).await;
    assert_eq!(s, 405, "{v}");
}

#[tokio::test]
async fn device_crud_with_etags() {
    let e = Emu::start().await;
    let body = json!({"displayName":"Thermostat 1","template":"dtmi:contoso:Thermostat;1","simulated":true,"enabled":true});
    let (s, d) = e.call("PUT", "/devices/therm-01", Some(body)).await;
    assert_eq!(s, 200, "{d}");
    assert_eq!(d["id"], "therm-01");
    assert_eq!(d["provisioned"], false);
    assert_eq!(d["simulated"], true);
    let etag = d["etag"].as_str().unwrap().to_owned();

    let (s, got) = e.call("GET", "/devices/therm-01", None).await;
    assert_eq!((s, &got), (200, &d));

    // Merge patch keeps the other fields and changes the etag.
    let (s, p) = e
        .call(
            "PATCH",
            "/devices/therm-01",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["enabled"], false);
    assert_eq!(p["displayName"], "Thermostat 1");
    assert_ne!(p["etag"], etag);

    // A stale etag is refused, in the body or in If-Match.
    let (s, v) = e
        .call(
            "PATCH",
            "/devices/therm-01",
            Some(json!({"enabled": true, "etag": etag})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("PreconditionFailed"))
    );
    let url = e.api("/devices/therm-01", GA);
    let (s, _, _) = e
        .raw(
            Some(&e.token),
            "PUT",
            &url,
            Some(json!({"displayName": "x"}).to_string()),
            Some(&[("If-Match", &etag)]),
        )
        .await;
    assert_eq!(s, 412);
    // The current etag works.
    let (s, v) = e
        .call(
            "PUT",
            "/devices/therm-01",
            Some(json!({"displayName": "renamed", "etag": p["etag"]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["displayName"], "renamed");

    let (s, v) = e.call("DELETE", "/devices/therm-01", None).await;
    assert_eq!((s, v), (204, serde_json::Value::Null));
    let (s, v) = e.call("GET", "/devices/therm-01", None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("NotFound")));
    let (s, _) = e.call("DELETE", "/devices/therm-01", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn malformed_device_input_is_a_4xx_with_a_message() {
    let e = Emu::start().await;
    let url = e.api("/devices/d1", GA);
    for body in [
        "{bad",
        "",
        "[]",
        "{\"enabled\":\"yes\"}",
        "{\"organizations\":\"x\"}",
        "null",
    ] {
        let (s, _, v) = e
            .raw(Some(&e.token), "PUT", &url, Some(body.to_owned()), None)
            .await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let long = "a".repeat(65);
    for (path, body) in [
        ("/devices/bad%20id", json!({})),
        (&*format!("/devices/{long}"), json!({})),
        ("/devices/d1", json!({"template": "not-a-dtmi"})),
        ("/devices/d1", json!({"organizations": ["nope"]})),
        ("/devices/d1", json!({"type": ["iotEdge"]})),
    ] {
        let (s, v) = e.call("PUT", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
    }
    let (s, v) = e.call("PATCH", "/devices/d1", Some(json!([1]))).await;
    assert!(s == 400 || s == 404, "{v}");
    let (s, _) = e.call("PUT", "/devices/d1", Some(json!({}))).await;
    assert_eq!(s, 200);
    let (s, v) = e.call("PATCH", "/devices/d1", Some(json!([1]))).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = e
        .call("PATCH", "/devices/d1", Some(json!({"enabled": 3})))
        .await;
    assert_eq!(s, 400, "{v}");
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn symmetric_key_group_gets_generated_64_byte_keys() {
    let e = Emu::start().await;
    let (s, g) = e
        .call(
            "PUT",
            "/enrollmentGroups/sas-group",
            Some(json!({"displayName":"My group","enabled":true,"type":"iot","attestation":{"type":"symmetricKey"}})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    for k in ["primaryKey", "secondaryKey"] {
        let key = g["attestation"]["symmetricKey"][k].as_str().unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap();
        assert_eq!(raw.len(), 64);
    }
    assert!(g["etag"].is_string());
    assert!(g.get("idScope").is_none());
    let (s, _, pv) = e
        .call_v(
            Some(&e.token),
            "GET",
            "/enrollmentGroups/sas-group",
            PREVIEW,
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(pv["idScope"].as_str().unwrap().starts_with("0ne"));
    // Certificates belong to x509 groups only.
    let (s, v) = e
        .call(
            "POST",
            "/enrollmentGroups/sas-group/certificates/primary/generateVerificationCode",
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Bad ids and bodies.
    for (path, body) in [
        (
            "/enrollmentGroups/has_underscore",
            json!({"displayName":"g","type":"iot","attestation":{"type":"symmetricKey"}}),
        ),
        (
            "/enrollmentGroups/g1",
            json!({"displayName":"g","type":"iot"}),
        ),
        (
            "/enrollmentGroups/g1",
            json!({"displayName":"g","type":"tpm","attestation":{"type":"symmetricKey"}}),
        ),
        (
            "/enrollmentGroups/g1",
            json!({"displayName":"g","type":"iot","attestation":{"type":"tpm"}}),
        ),
        (
            "/enrollmentGroups/g1",
            json!({"displayName":"g","type":"iot","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"short","secondaryKey":"short"}}}),
        ),
    ] {
        let (s, v) = e.call("PUT", path, Some(body.clone())).await;
        assert_eq!(s, 400, "{path} {body}: {v}");
    }
}

struct X509Setup {
    e: Emu,
    root: Authority,
}

async fn x509_group() -> X509Setup {
    let e = Emu::start().await;
    let (s, g) = e
        .call(
            "PUT",
            "/enrollmentGroups/x509-group",
            Some(json!({"displayName":"X","type":"iot","attestation":{"type":"x509"}})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(
        g["attestation"],
        json!({"type":"x509","x509":{"signingCertificates":{}}})
    );
    let root = Authority::new_root(&CaOptions::default()).unwrap();
    X509Setup { e, root }
}

#[tokio::test]
async fn x509_proof_of_possession_end_to_end() {
    let X509Setup { e, root } = x509_group().await;
    let base = "/enrollmentGroups/x509-group/certificates/primary";
    let (s, v) = e.call("GET", base, None).await;
    assert_eq!(s, 404, "{v}");
    let (s, c) = e
        .call(
            "PUT",
            base,
            Some(json!({"verified": false, "certificate": certificate_string(root.cert_pem())})),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["verified"], false);
    assert!(c.get("certificate").is_none());
    let thumb = c["info"]["sha1Thumbprint"].as_str().unwrap();
    assert_eq!(thumb, iotc::cert::sha1_thumbprint(root.cert_der()));
    assert_eq!(thumb.len(), 40);
    assert!(thumb
        .chars()
        .all(|ch| ch.is_ascii_digit() || ch.is_ascii_uppercase()));

    // verify before any code: refused.
    let proof = root
        .issue_verification("ABC", &LeafOptions::default())
        .unwrap();
    let (s, v) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": certificate_string(&proof.cert_pem)})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("VerificationCodeMissing"))
    );

    let (s, v) = e
        .call("POST", &format!("{base}/generateVerificationCode"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let code1 = v["verificationCode"].as_str().unwrap().to_owned();
    let (_, v) = e
        .call("POST", &format!("{base}/generateVerificationCode"), None)
        .await;
    let code = v["verificationCode"].as_str().unwrap().to_owned();
    assert_ne!(code, code1);

    // A stale code is refused.
    let stale = root
        .issue_verification(&code1, &LeafOptions::default())
        .unwrap();
    let (s, v) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": certificate_string(&stale.cert_pem)})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("VerificationCodeMismatch")),
        "{v}"
    );
    // The right code signed by another key is refused.
    let other = Authority::new_root(&CaOptions::default()).unwrap();
    let wrong_key = other
        .issue_verification(&code, &LeafOptions::default())
        .unwrap();
    let (s, v) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": certificate_string(&wrong_key.cert_pem)})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidVerificationCertificate")),
        "{v}"
    );
    // Garbage is refused.
    for bad in ["", "!!!", &b64(b"not a certificate")] {
        let (s, v) = e
            .call(
                "POST",
                &format!("{base}/verify"),
                Some(json!({"certificate": bad})),
            )
            .await;
        assert_eq!(s, 400, "{bad}: {v}");
    }
    let (s, _) = e.call("GET", base, None).await;
    assert_eq!(s, 200);
    let (_, c) = e.call("GET", base, None).await;
    assert_eq!(c["verified"], false);

    // The right certificate, as base64 of DER this time.
    let good = root
        .issue_verification(&code, &LeafOptions::default())
        .unwrap();
    let (s, v) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": b64(&good.cert_der)})),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (_, c) = e.call("GET", base, None).await;
    assert_eq!(c["verified"], true);
    // The code is spent.
    let (s, _) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": b64(&good.cert_der)})),
        )
        .await;
    assert_eq!(s, 400);
    let (_, g) = e.call("GET", "/enrollmentGroups/x509-group", None).await;
    assert_eq!(
        g["attestation"]["x509"]["signingCertificates"]["primary"]["verified"],
        true
    );
}

#[tokio::test]
async fn replacing_the_certificate_voids_the_code_and_etags_guard_it() {
    let X509Setup { e, root } = x509_group().await;
    let base = "/enrollmentGroups/x509-group/certificates/secondary";
    let (_, c) = e
        .call(
            "PUT",
            base,
            Some(json!({"certificate": b64(root.cert_der())})),
        )
        .await;
    let etag = c["etag"].as_str().unwrap().to_owned();
    let (_, v) = e
        .call("POST", &format!("{base}/generateVerificationCode"), None)
        .await;
    let code = v["verificationCode"].as_str().unwrap().to_owned();
    let (s, c2) = e
        .call(
            "PUT",
            base,
            Some(json!({"certificate": certificate_string(root.cert_pem()), "etag": etag})),
        )
        .await;
    assert_eq!(s, 200, "{c2}");
    let (s, _) = e
        .call(
            "PUT",
            base,
            Some(json!({"certificate": certificate_string(root.cert_pem()), "etag": etag})),
        )
        .await;
    assert_eq!(s, 412);
    let proof = root
        .issue_verification(&code, &LeafOptions::default())
        .unwrap();
    let (s, v) = e
        .call(
            "POST",
            &format!("{base}/verify"),
            Some(json!({"certificate": certificate_string(&proof.cert_pem)})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("VerificationCodeMissing"))
    );
    // Self-attested upload.
    let (_, c) = e
        .call(
            "PUT",
            base,
            Some(json!({"verified": true, "certificate": certificate_string(root.cert_pem())})),
        )
        .await;
    assert_eq!(c["verified"], true);
    let (s, _) = e.call("DELETE", base, None).await;
    assert_eq!(s, 204);
    let (s, _) = e.call("GET", base, None).await;
    assert_eq!(s, 404);
    let (s, v) = e
        .call(
            "GET",
            "/enrollmentGroups/x509-group/certificates/tertiary",
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = e
        .call("PUT", base, Some(json!({"certificate": b64(b"junk")})))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("InvalidCertificate"))
    );
    let (s, _) = e.call("PUT", base, Some(json!({"verified": false}))).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn enrollment_group_patch_and_delete() {
    let X509Setup { e, root } = x509_group().await;
    let (_, c) = e
        .call(
            "PUT",
            "/enrollmentGroups/x509-group/certificates/primary",
            Some(json!({"certificate": certificate_string(root.cert_pem())})),
        )
        .await;
    let (s, g) = e
        .call(
            "PATCH",
            "/enrollmentGroups/x509-group",
            Some(json!({"enabled": false, "type": "iotEdge"})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["enabled"], false);
    assert_eq!(g["type"], "iotEdge");
    assert_eq!(
        g["attestation"]["x509"]["signingCertificates"]["primary"]["info"],
        c["info"]
    );
    let (s, _) = e
        .call(
            "PATCH",
            "/enrollmentGroups/x509-group",
            Some(json!({"attestation": {"type": "symmetricKey"}})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = e.call("DELETE", "/enrollmentGroups/x509-group", None).await;
    assert_eq!(s, 204);
    let (s, _) = e.call("GET", "/enrollmentGroups/x509-group", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn hostile_input_never_gets_a_5xx_or_a_hang() {
    let e = Emu::start().await;
    e.call("PUT", "/devices/d1", Some(json!({}))).await;
    e.call(
        "PUT",
        "/enrollmentGroups/g1",
        Some(json!({"displayName":"g","type":"iot","attestation":{"type":"x509"}})),
    )
    .await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000));
    let huge = format!("{{\"displayName\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let bodies: Vec<String> = vec![
        "\u{0}\u{1}garbage".into(),
        deep,
        deep_obj,
        huge,
        "{\"displayName\": 5, \"type\": [], \"attestation\": \"x\", \"roles\": {}, \"filter\": 3}".into(),
        json!({"certificate": 5, "displayName": 7, "roles": "x", "type": 9, "filter": {}, "@type": 1, "parent": 3, "verified": "no", "attestation": 1, "email": 2}).to_string(),
        "1e999999".into(),
    ];
    let paths = [
        "/devices/d1",
        "/devices/d1/attestation",
        "/organizations/org1",
        "/users/u1",
        "/apiTokens/t1",
        "/deviceGroups/dg1",
        "/deviceTemplates/dtmi:a:b;1",
        "/enrollmentGroups/g1",
        "/enrollmentGroups/g1/certificates/primary",
        "/enrollmentGroups/g1/certificates/primary/verify",
    ];
    for path in paths {
        for method in ["PUT", "PATCH", "POST"] {
            for body in &bodies {
                let url = e.api(path, GA);
                let fut = e.raw(Some(&e.token), method, &url, Some(body.clone()), None);
                let (s, _, v) = tokio::time::timeout(std::time::Duration::from_secs(20), fut)
                    .await
                    .unwrap_or_else(|_| panic!("{method} {path} hung"));
                assert!(
                    (400..500).contains(&s),
                    "{method} {path} {}: {s} {v}",
                    &body[..body.len().min(40)]
                );
            }
        }
    }
    let long = "a".repeat(10_000);
    for path in [
        "/devices/%FF%FE",
        "/devices/..",
        "/devices/%2e%2e%2fapiTokens",
        "/users/%00",
        &*format!("/devices/{long}"),
        &*format!("/organizations/{long}"),
        "/enrollmentGroups/g1/certificates/%00/verify",
    ] {
        for method in ["GET", "PUT", "DELETE"] {
            let (s, _, v) = e
                .call_v(Some(&e.token), method, path, GA, Some(json!({})))
                .await;
            assert!((400..500).contains(&s), "{method} {path}: {s} {v}");
        }
    }
    let q = format!("/devices?filter={}", "(".repeat(3000));
    let (s, _, _) = e.call_v(Some(&e.token), "GET", &q, PREVIEW, None).await;
    assert_eq!(s, 400);
    let auth = format!("SharedAccessSignature sr={}", "x".repeat(6_000));
    let (s, _, _) = e.call_as(Some(&auth), "GET", "/devices", None).await;
    assert_eq!(s, 401);
}
