//! Test helpers for Microsoft Entra sign-in: app registrations at the emulator's authority,
//! service-principal and AD-group users, the authority's counters, and hand-built tokens
//! signed with the authority's own key (read from the data folder) or with a stranger's.
#![allow(dead_code)]

use base64::Engine;
use serde_json::{json, Value};
use std::path::Path;

/// An app registration as the admin call answers it.
#[derive(Debug, Clone)]
pub struct App {
    pub tenant_id: String,
    pub client_id: String,
    pub object_id: String,
    pub client_secret: String,
}

/// A blocking HTTP client trusting the emulator's CA.
pub fn http(ca_pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_merge([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .build()
        .unwrap()
}

/// The ready record of the emulator whose data folder is `dir`.
pub fn ready(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("emulator.json")).unwrap()).unwrap()
}

/// `PUT /emulator/entra/applications/{name}` with the admin token.
pub async fn register(
    http: &reqwest::Client,
    api_url: &str,
    admin: &str,
    name: &str,
    body: Value,
) -> App {
    let resp = http
        .put(format!("{api_url}/emulator/entra/applications/{name}"))
        .header("authorization", admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "register {name}: {v}");
    App {
        tenant_id: v["tenantId"].as_str().unwrap().to_owned(),
        client_id: v["clientId"].as_str().unwrap().to_owned(),
        object_id: v["objectId"].as_str().unwrap().to_owned(),
        client_secret: v["clientSecret"].as_str().unwrap().to_owned(),
    }
}

/// `GET /emulator/entra/applications/{name}`: the registration with its counters.
pub async fn app_view(http: &reqwest::Client, api_url: &str, admin: &str, name: &str) -> Value {
    let resp = http
        .get(format!("{api_url}/emulator/entra/applications/{name}"))
        .header("authorization", admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// The body of a user of type `kind` (`servicePrincipal` or `adGroup`) with these roles.
pub fn user(kind: &str, tenant: &str, object_id: &str, roles: Value) -> Value {
    json!({"type": kind, "tenantId": tenant, "objectId": object_id, "roles": roles})
}

/// Adds the user `id` (a body made by [`user`]).
pub async fn add_user(http: &reqwest::Client, api_url: &str, admin: &str, id: &str, body: Value) {
    let resp = http
        .put(format!("{api_url}/api/users/{id}?api-version=2022-07-31"))
        .header("authorization", admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(status, 200, "user {id}: {}", resp.text().await.unwrap());
}

/// A token from the authority's token endpoint with the client secret, for `scope`.
pub async fn token_with_secret(
    http: &reqwest::Client,
    authority: &str,
    app: &App,
    scope: &str,
) -> (u16, Value) {
    let resp = http
        .post(format!("{authority}/{}/oauth2/v2.0/token", app.tenant_id))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app.client_id.as_str()),
            ("client_secret", app.client_secret.as_str()),
            ("scope", scope),
        ]))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// A form body (`application/x-www-form-urlencoded`).
pub fn form(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The authority's signing key (PKCS#1 DER, what jsonwebtoken signs with) and its `kid`.
pub fn authority_key(data_dir: &Path) -> (jsonwebtoken::EncodingKey, String) {
    let pem = std::fs::read(data_dir.join("entra_signing_key.pem")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
    let cert = std::fs::read(data_dir.join("entra_signing_cert.pem")).unwrap();
    let der = iotc::cert::parse_pem_certs(&cert).unwrap().remove(0);
    let kid = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha1::Sha1 as sha1::Digest>::digest(&der));
    (key, kid)
}

/// A fresh RSA key that is not the authority's (PKCS#1 DER via its PKCS#8 PEM).
pub fn stranger_key() -> jsonwebtoken::EncodingKey {
    let kp = iotc::cert::KeyType::Rsa2048.generate().unwrap();
    jsonwebtoken::EncodingKey::from_rsa_pem(kp.serialize_pem().as_bytes()).unwrap()
}

/// Signs `claims` with RS256 and this `kid`.
pub fn sign(key: &jsonwebtoken::EncodingKey, kid: &str, claims: &Value) -> String {
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// The claims of a good IoT Central token of the authority for `oid`, valid now.
pub fn claims(issuer: &str, tenant: &str, oid: &str) -> Value {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    json!({
        "aud": "https://apps.azureiotcentral.com",
        "iss": issuer,
        "tid": tenant,
        "oid": oid,
        "sub": oid,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "ver": "2.0",
    })
}

/// An RSA-2048 certificate for a service principal, from the cert module: the certificate
/// (DER), a PEM holding it and its key, and the key (PKCS#8 DER).
pub fn sp_certificate() -> (Vec<u8>, String, Vec<u8>) {
    let root = iotc::cert::Authority::new_root(&iotc::cert::CaOptions {
        cn: Some("factory-pipeline".into()),
        key_type: iotc::cert::KeyType::Rsa2048,
        ..Default::default()
    })
    .unwrap();
    let key = root.issued().key.clone().unwrap();
    let pem = format!("{}{}", root.cert_pem(), key.pkcs8_pem().expose());
    (root.cert_der().to_vec(), pem, key.pkcs8_der().to_vec())
}
