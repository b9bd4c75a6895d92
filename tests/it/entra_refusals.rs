//! Every refusal of the emulator's Entra authority and of its bearer-token checks, as direct
//! HTTP calls: hand-built tokens signed with the authority's own key (read from the data
//! folder, so each check is reached on its own, past the signature), with a stranger's key,
//! tampered, for another audience, tenant or time, and for a principal that is no user; and
//! the token endpoint's answers to bad clients, secrets, scopes, grants and assertions.

use crate::common_emulator::Emu;
use crate::common_entra::{self as entra, App};
use base64::Engine;
use iotc::central::models::roles;
use serde_json::{json, Value};

const SCOPE: &str = "https://apps.azureiotcentral.com/.default";

struct Fx {
    e: Emu,
    authority: String,
    tenant: String,
    issuer: String,
    app: App,
}

async fn fixture() -> Fx {
    let e = Emu::start().await;
    let ready = entra::ready(e.dir.path());
    let authority = ready["authorityHost"].as_str().unwrap().to_owned();
    let tenant = ready["tenantId"].as_str().unwrap().to_owned();
    let app = entra::register(&e.http, &e.url, &e.token, "sp", json!({})).await;
    entra::add_user(
        &e.http,
        &e.url,
        &e.token,
        "sp-admin",
        entra::user(
            "servicePrincipal",
            &tenant,
            &app.object_id,
            json!([{"role": roles::ADMINISTRATOR}]),
        ),
    )
    .await;
    Fx {
        issuer: format!("{authority}/{tenant}/v2.0"),
        e,
        authority,
        tenant,
        app,
    }
}

impl Fx {
    async fn get_roles(&self, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.e
            .call_as(Some(&format!("Bearer {token}")), "GET", "/roles", None)
            .await
    }

    async fn token_form(&self, form: &[(&str, &str)]) -> (u16, Value) {
        self.token_form_at(&self.tenant, form).await
    }

    async fn token_form_at(&self, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .e
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.authority))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(entra::form(form))
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap())
    }
}

fn aadsts(v: &Value) -> String {
    v["error_description"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_checks_bearer_tokens_fully() {
    let fx = fixture().await;
    let (key, kid) = entra::authority_key(fx.e.dir.path());
    let good = entra::claims(&fx.issuer, &fx.tenant, &fx.app.object_id);
    let (s, _, v) = fx.get_roles(&entra::sign(&key, &kid, &good)).await;
    assert_eq!(s, 200, "the control token is accepted: {v}");

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = |c: &Value| entra::sign(&key, &kid, c);
    let mut tampered = signed(&good);
    // Flip one character of the payload: same signature, other claims.
    let dot = tampered.find('.').unwrap() + 5;
    let c = if &tampered[dot..dot + 1] == "A" {
        "B"
    } else {
        "A"
    };
    tampered.replace_range(dot..dot + 1, c);
    let mut bad_sig = signed(&good);
    let last = bad_sig.len() - 3;
    let c = if &bad_sig[last..last + 1] == "A" {
        "B"
    } else {
        "A"
    };
    bad_sig.replace_range(last..last + 1, c);
    let other_tenant = "11111111-2222-3333-4444-555555555555";
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(b"guess").unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("tampered payload", tampered, "signature"),
        ("tampered signature", bad_sig, "signature"),
        (
            "foreign key, the authority's kid",
            entra::sign(&entra::stranger_key(), &kid, &good),
            "signature",
        ),
        (
            "foreign key, its own kid",
            entra::sign(&entra::stranger_key(), "stranger", &good),
            "not signed by a key",
        ),
        ("HS256 with a guessed secret", hs256, "RS256"),
        ("not a JWT", "abc.def".into(), "not a JWT"),
        (
            "wrong audience",
            signed(&with(json!({"aud": "https://management.azure.com"}))),
            "not for IoT Central",
        ),
        (
            "expired beyond the skew",
            signed(&with(
                json!({"exp": now - 120, "nbf": now - 600, "iat": now - 600}),
            )),
            "expired",
        ),
        (
            "not yet valid",
            signed(&with(json!({"nbf": now + 600, "exp": now + 1200}))),
            "not valid yet",
        ),
        (
            "another issuer",
            signed(&with(
                json!({"iss": format!("{}/{other_tenant}/v2.0", fx.authority)}),
            )),
            "issued by",
        ),
        (
            "another tenant",
            signed(&with(json!({"tid": other_tenant}))),
            "another tenant",
        ),
        (
            "no expiry",
            signed(&{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "not valid",
        ),
    ];
    for (what, token, says) in cases {
        let (s, h, v) = fx.get_roles(&token).await;
        assert_eq!(s, 401, "{what}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{what}: {msg}");
        let www = h
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            www.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {www:?}"
        );
        if what.starts_with("expired") {
            assert!(www.contains("expired"), "{www}");
        }
    }
    // Within the skew an expired token still works (clocks differ a little).
    let (s, _, _) = fx.get_roles(&signed(&with(json!({"exp": now - 20})))).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_of_a_principal_that_is_no_user_gets_403() {
    let fx = fixture().await;
    let stranger = entra::register(&fx.e.http, &fx.e.url, &fx.e.token, "stranger", json!({})).await;
    let (s, v) = entra::token_with_secret(&fx.e.http, &fx.authority, &stranger, SCOPE).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = fx.get_roles(v["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "Forbidden");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&stranger.object_id));
    // A token the authority issued for another resource reaches the API and is refused there.
    let (s, v) = entra::token_with_secret(
        &fx.e.http,
        &fx.authority,
        &fx.app,
        "https://management.azure.com/.default",
    )
    .await;
    assert_eq!(s, 200, "any resource's .default scope gets a token: {v}");
    let (s, _, v) = fx.get_roles(v["access_token"].as_str().unwrap()).await;
    assert_eq!(s, 401, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_tokens_carry_entra_claims_and_verify_against_the_published_jwks() {
    let fx = fixture().await;
    let group = "0b9d7c4e-1c1a-4c9f-9a51-2f3a8f6b7d10";
    let member = entra::register(
        &fx.e.http,
        &fx.e.url,
        &fx.e.token,
        "member",
        json!({"groups": [group]}),
    )
    .await;
    let (s, v) = entra::token_with_secret(&fx.e.http, &fx.authority, &member, SCOPE).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let token = v["access_token"].as_str().unwrap();
    // An independent check: the token verifies against the key the OpenID configuration's
    // jwks_uri publishes, with the issuer it names.
    let conf: Value =
        fx.e.http
            .get(format!(
                "{}/{}/v2.0/.well-known/openid-configuration",
                fx.authority, fx.tenant
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        conf["token_endpoint"],
        format!("{}/{}/oauth2/v2.0/token", fx.authority, fx.tenant)
    );
    let jwks: jsonwebtoken::jwk::JwkSet =
        fx.e.http
            .get(conf["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    let jwk = jwks
        .find(header.kid.as_deref().unwrap())
        .expect("kid published");
    assert_eq!(
        jwk.common.x509_sha1_fingerprint.as_deref(),
        header.kid.as_deref()
    );
    let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    val.set_audience(&["https://apps.azureiotcentral.com"]);
    val.set_issuer(&[conf["issuer"].as_str().unwrap()]);
    let claims: Value = jsonwebtoken::decode(
        token,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &val,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["tid"], fx.tenant.as_str());
    assert_eq!(claims["oid"], member.object_id.as_str());
    assert_eq!(claims["appid"], member.client_id.as_str());
    assert_eq!(claims["azp"], member.client_id.as_str());
    assert_eq!(claims["groups"], json!([group]));
    for c in ["iat", "nbf", "exp"] {
        assert!(claims[c].is_i64(), "{c}");
    }
    // The group is not a user yet: 403. As an adGroup user (an org-scoped Org Viewer), the
    // app acts through the group.
    let (s, _, _) = fx.get_roles(token).await;
    assert_eq!(s, 403);
    let (s, _) =
        fx.e.call("PUT", "/organizations/north", Some(json!({})))
            .await;
    assert_eq!(s, 200);
    entra::add_user(
        &fx.e.http,
        &fx.e.url,
        &fx.e.token,
        "line-operators",
        entra::user(
            "adGroup",
            &fx.tenant,
            group,
            json!([{"role": roles::ORG_VIEWER, "organization": "north"}]),
        ),
    )
    .await;
    let (s, _, _) = fx.get_roles(token).await;
    assert_eq!(s, 200);
    let (s, _, _) =
        fx.e.call_as(Some(&format!("Bearer {token}")), "GET", "/users", None)
            .await;
    assert_eq!(s, 403, "an Org Viewer may not read users");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_refuses_like_entra() {
    let fx = fixture().await;
    let fx = &fx;
    let app = &fx.app;
    let base = |extra: &[(&'static str, String)]| {
        let mut f: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", app.client_id.clone()),
            ("scope", SCOPE.into()),
        ];
        f.extend(extra.iter().cloned());
        f
    };
    let send = |f: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        fx.token_form(&pairs).await
    };
    let secret = ("client_secret", app.client_secret.clone());
    type Form = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Form, u16, &str, &str)> = vec![
        (
            "wrong secret",
            base(&[("client_secret", "nope".into())]),
            401,
            "invalid_client",
            "AADSTS7000215",
        ),
        (
            "no credential",
            base(&[]),
            401,
            "invalid_client",
            "AADSTS7000218",
        ),
        (
            "unknown client",
            vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", "7a1c1a5e-0000-4000-8000-000000000000".into()),
                ("scope", SCOPE.into()),
                secret.clone(),
            ],
            400,
            "unauthorized_client",
            "AADSTS700016",
        ),
        (
            "scope without .default",
            vec![
                ("grant_type", "client_credentials".into()),
                ("client_id", app.client_id.clone()),
                (
                    "scope",
                    "https://apps.azureiotcentral.com/user_impersonation".into(),
                ),
                secret.clone(),
            ],
            400,
            "invalid_scope",
            "AADSTS1002012",
        ),
        (
            "device code grant",
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:device_code".into(),
                ),
                ("client_id", app.client_id.clone()),
                ("device_code", "x".into()),
            ],
            400,
            "unsupported_grant_type",
            "only client_credentials",
        ),
        (
            "password grant",
            vec![
                ("grant_type", "password".into()),
                ("client_id", app.client_id.clone()),
                ("username", "u".into()),
                ("password", "p".into()),
            ],
            400,
            "unsupported_grant_type",
            "AADSTS70003",
        ),
        (
            "no grant type",
            vec![("client_id", app.client_id.clone())],
            400,
            "invalid_request",
            "grant_type",
        ),
    ];
    for (what, form, status, error, says) in cases {
        let (s, v) = send(form).await;
        assert_eq!(s, status, "{what}: {v}");
        assert_eq!(v["error"], error, "{what}: {v}");
        assert!(aadsts(&v).contains(says), "{what}: {v}");
        assert!(
            v["error_codes"].is_array() && v["trace_id"].is_string(),
            "{what}: {v}"
        );
        assert!(
            !v.to_string().contains(&app.client_secret),
            "{what} leaks the secret"
        );
    }
    let (s, v) = fx
        .token_form_at(
            "common",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app.client_id),
                ("scope", SCOPE),
                ("client_secret", &app.client_secret),
            ],
        )
        .await;
    assert_eq!(s, 400);
    assert!(aadsts(&v).contains("AADSTS90002"), "{v}");
    for (m, path) in [("GET", "authorize"), ("POST", "devicecode")] {
        let r =
            fx.e.http
                .request(
                    reqwest::Method::from_bytes(m.as_bytes()).unwrap(),
                    format!("{}/{}/oauth2/v2.0/{path}", fx.authority, fx.tenant),
                )
                .send()
                .await
                .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(aadsts(&v).contains("not supported"), "{path}: {v}");
    }
    // The counter saw every request that named the client, the issued ones apart.
    let v = entra::app_view(&fx.e.http, &fx.e.url, &fx.e.token, "sp").await;
    assert_eq!(v["tokensIssued"], 0, "{v}");
    assert_eq!(v["tokenRequests"], 5, "{v}");
}

/// A client assertion signed by `key` with `alg`, the thumbprint header of that algorithm.
fn assertion(
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    cert_der: &[u8],
    claims: &Value,
) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut h = jsonwebtoken::Header::new(alg);
    if alg == jsonwebtoken::Algorithm::PS256 {
        h.x5t_s256 = Some(b64.encode(<sha2::Sha256 as sha2::Digest>::digest(cert_der)));
    } else {
        h.x5t = Some(b64.encode(<sha1::Sha1 as sha1::Digest>::digest(cert_der)));
    }
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_assertions_rs256_and_ps256_with_float_times_and_their_refusals() {
    let fx = fixture().await;
    let (cert_der, pem, key_der) = entra::sp_certificate();
    let b64 = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    // DER works as well as PEM.
    let der_b64 = base64::engine::general_purpose::STANDARD.encode(&cert_der);
    let app = entra::register(
        &fx.e.http,
        &fx.e.url,
        &fx.e.token,
        "certs",
        json!({"certificate": der_b64}),
    )
    .await;
    let app2 = entra::register(
        &fx.e.http,
        &fx.e.url,
        &fx.e.token,
        "certs-pem",
        json!({"certificate": b64}),
    )
    .await;
    assert_ne!(app.client_id, app2.client_id);
    let key_pem = iotc::cert::PrivateKey::from_pkcs8_der(&key_der)
        .unwrap()
        .0
        .pkcs8_pem();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key_pem.expose().as_bytes()).unwrap();
    let endpoint = format!("{}/{}/oauth2/v2.0/token", fx.authority, fx.tenant);
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64 + 0.25;
    // As MSAL sends them: float times.
    let good = json!({"aud": endpoint, "iss": app.client_id, "sub": app.client_id,
        "jti": "1", "iat": now, "nbf": now, "exp": now + 600.0});
    let send = |a: String| {
        let client_id = app.client_id.clone();
        let fx = &fx;
        async move {
            fx.token_form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &client_id),
                ("scope", SCOPE),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", &a),
            ])
            .await
        }
    };
    use jsonwebtoken::Algorithm::{PS256, RS256};
    for alg in [RS256, PS256] {
        let (s, v) = send(assertion(&key, alg, &cert_der, &good)).await;
        assert_eq!(s, 200, "{alg:?}: {v}");
    }
    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let mut no_thumbprint = jsonwebtoken::Header::new(RS256);
    no_thumbprint.x5t_s256 = Some("x".into());
    let cases = vec![
        (
            "another key, same thumbprint",
            assertion(&entra::stranger_key(), RS256, &cert_der, &good),
            "AADSTS700027",
        ),
        (
            "another certificate",
            assertion(&key, RS256, &entra::sp_certificate().0, &good),
            "AADSTS700027",
        ),
        (
            "RS256 with only x5t#S256",
            jsonwebtoken::encode(&no_thumbprint, &good, &key).unwrap(),
            "AADSTS700027",
        ),
        (
            "wrong audience",
            assertion(
                &key,
                RS256,
                &cert_der,
                &with(json!({"aud": "https://login.microsoftonline.com/x/oauth2/v2.0/token"})),
            ),
            "audience",
        ),
        (
            "issuer is not the client",
            assertion(&key, RS256, &cert_der, &with(json!({"iss": "someone"}))),
            "iss and sub claims",
        ),
        (
            "expired",
            assertion(
                &key,
                RS256,
                &cert_der,
                &with(json!({"exp": now - 900.0, "nbf": now - 1200.0})),
            ),
            "AADSTS700024",
        ),
        (
            "no exp",
            assertion(&key, RS256, &cert_der, &{
                let mut c = good.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            }),
            "exp",
        ),
    ];
    for (what, a, says) in cases {
        let (s, v) = send(a).await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(v["error"], "invalid_client", "{what}");
        assert!(aadsts(&v).contains(says), "{what}: {v}");
    }
    // An EC certificate cannot be registered.
    let ec = iotc::cert::Authority::new_root(&iotc::cert::CaOptions::default()).unwrap();
    let (s, _, v) = fx
        .e
        .raw(
            Some(&fx.e.token),
            "PUT",
            &format!("{}/emulator/entra/applications/ec", fx.e.url),
            Some(json!({"certificate": base64::engine::general_purpose::STANDARD.encode(ec.cert_der())}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("not RSA"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_need_the_admin_and_the_signing_key_survives_a_restart() {
    let fx = fixture().await;
    let viewer =
        fx.e.token_with("viewer", json!([{"role": roles::OPERATOR}]))
            .await;
    let url = format!("{}/emulator/entra/applications/x", fx.e.url);
    let (s, _, _) =
        fx.e.raw(Some(&viewer), "PUT", &url, Some("{}".into()), None)
            .await;
    assert_eq!(s, 403);
    let (s, _, _) = fx.e.raw(None, "PUT", &url, Some("{}".into()), None).await;
    assert_eq!(s, 401);
    let (s, _, v) =
        fx.e.raw(
            Some(&fx.e.token),
            "PUT",
            &url,
            Some(json!({"groups": ["not-a-guid"]}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, _, _) =
        fx.e.raw(
            Some(&fx.e.token),
            "PUT",
            &url,
            Some(json!({"secret": "mine"}).to_string()),
            None,
        )
        .await;
    assert_eq!(s, 400, "unknown fields are refused");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(fx.e.dir.path().join("entra_signing_key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    let (s, v) = entra::token_with_secret(&fx.e.http, &fx.authority, &fx.app, SCOPE).await;
    assert_eq!(s, 200);
    let token = v["access_token"].as_str().unwrap().to_owned();
    let tenant = fx.tenant.clone();
    let app = fx.app.clone();
    let (_, kid_before) = entra::authority_key(fx.e.dir.path());
    let e = fx.e.restart().await;
    let ready = entra::ready(e.dir.path());
    assert_eq!(
        ready["tenantId"],
        tenant.as_str(),
        "the tenant survives a restart"
    );
    let authority = ready["authorityHost"].as_str().unwrap().to_owned();
    let issuer = format!("{authority}/{tenant}/v2.0");
    // The old token names the old port in its issuer: refused, but for the issuer, not the
    // signature. A token with today's issuer, signed before the restart by the same key, passes.
    let (s, _, v) = e
        .call_as(Some(&format!("Bearer {token}")), "GET", "/roles", None)
        .await;
    assert_eq!(s, 401);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("issued by"),
        "{v}"
    );
    let (key, kid) = entra::authority_key(e.dir.path());
    assert_eq!(kid, kid_before, "the same signing key after the restart");
    let t = entra::sign(&key, &kid, &entra::claims(&issuer, &tenant, &app.object_id));
    let (s, _, _) = e
        .call_as(Some(&format!("Bearer {t}")), "GET", "/roles", None)
        .await;
    assert_eq!(s, 200);
    // The client secret made before the restart still signs in.
    let (s, _) = entra::token_with_secret(&e.http, &authority, &app, SCOPE).await;
    assert_eq!(s, 200);
}
