//! Microsoft Entra sign-in end to end: the Azure SDK identity crate's credentials, pointed at
//! the emulator's authority (`AZURE_AUTHORITY_HOST` + `--ca-file`), drive the real `iotc`
//! binary; the emulator's token endpoint counts what the client asked for.
//!
//! What is proven where: service-principal (client secret, certificate as PEM and as
//! PKCS#12) and workload-identity sign in for real against the authority; azure-cli runs a
//! stand-in `az` on PATH that prints what `az account get-access-token` prints (a token the
//! authority issued), which proves the choice is wired and the token is used, not that a real
//! `az login` works; managed-identity asks a stand-in of App Service's identity endpoint
//! (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`, on loopback) through our transport, which proves
//! the wiring and the request, not Azure's endpoints (IMDS is not reachable here).

use crate::common_central::Emu;
use crate::common_entra::{self as entra, App};
use serde_json::{json, Value};
use std::path::Path;

const SCOPE: &str = "https://apps.azureiotcentral.com/.default";

struct Setup {
    emu: Emu,
    http: reqwest::Client,
    authority: String,
}

fn setup() -> Setup {
    let emu = Emu::start();
    let ready = entra::ready(&emu.dir.path().join("emu"));
    let authority = ready["authorityHost"].as_str().unwrap().to_owned();
    assert_eq!(
        authority, emu.api_url,
        "the authority is on the API listener"
    );
    assert!(
        uuid_like(ready["tenantId"].as_str().unwrap()),
        "tenantId in the ready record: {ready}"
    );
    let http = entra::http(&emu.ca_pem);
    Setup {
        emu,
        http,
        authority,
    }
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

impl Setup {
    fn register(&self, name: &str, body: Value) -> App {
        self.emu.block_on(entra::register(
            &self.http,
            &self.emu.api_url,
            &self.emu.admin_token,
            name,
            body,
        ))
    }

    fn add_sp(&self, id: &str, app: &App, roles: Value) {
        self.emu.block_on(entra::add_user(
            &self.http,
            &self.emu.api_url,
            &self.emu.admin_token,
            id,
            entra::user("servicePrincipal", &app.tenant_id, &app.object_id, roles),
        ))
    }

    /// An app registration `name` that is the Operator user `user`, and a token the authority
    /// issued it (what `az` or an identity endpoint would hand over).
    fn operator_token(&self, name: &str, user: &str) -> (App, String) {
        let app = self.register(name, json!({}));
        self.add_sp(
            user,
            &app,
            json!([{"role": iotc::central::models::roles::OPERATOR}]),
        );
        let (status, v) = self.emu.block_on(entra::token_with_secret(
            &self.http,
            &self.authority,
            &app,
            SCOPE,
        ));
        assert_eq!(status, 200, "{v}");
        (app, v["access_token"].as_str().unwrap().to_owned())
    }

    /// The library's client signed in as `app`'s service principal with its client secret.
    fn entra_client(&self, app: &App) -> iotc::central::Client {
        let settings = iotc::central::EntraSettings {
            tenant_id: Some(app.tenant_id.clone()),
            client_id: Some(app.client_id.clone()),
            client_secret: Some(iotc::secret::Secret::new(app.client_secret.clone())),
            authority_host: Some(self.authority.clone()),
            extra_ca_pem: Some(self.emu.ca_pem.clone()),
            ..Default::default()
        };
        let credential = settings
            .credential(iotc::central::AuthMethod::ServicePrincipal)
            .unwrap();
        iotc::central::Client::new(&self.emu.api_url, credential, Some(self.emu.options())).unwrap()
    }

    fn view(&self, name: &str) -> Value {
        self.emu.block_on(entra::app_view(
            &self.http,
            &self.emu.api_url,
            &self.emu.admin_token,
            name,
        ))
    }

    /// `iotc` with no API token at all, the app and CA given, and the `AZURE_*` of `app`.
    fn iotc(&self, auth: &str, app: &App) -> assert_cmd::Command {
        let mut cmd = self.emu.bare_iotc();
        for v in [
            "AZURE_CLIENT_SECRET",
            "AZURE_CLIENT_CERTIFICATE_PATH",
            "AZURE_CLIENT_CERTIFICATE_PASSWORD",
            "AZURE_FEDERATED_TOKEN_FILE",
            "IOTC_AUTH",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("AZURE_TENANT_ID", &app.tenant_id)
            .env("AZURE_CLIENT_ID", &app.client_id)
            .env("AZURE_AUTHORITY_HOST", &self.authority)
            .args(["--app", &self.emu.api_url, "--ca-file"])
            .arg(&self.emu.ca_path)
            .args(["--auth", auth]);
        cmd
    }
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_service_principal_with_a_client_secret_drives_the_cli() {
    let s = setup();
    let app = s.register("pipeline", json!({}));
    // Not a user yet: signed in, but refused by the application.
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_SECRET", &app.client_secret)
        .args(["device", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403") && err.contains("not a user of this application"),
        "{err}"
    );

    s.add_sp(
        "pipeline-sp",
        &app,
        json!([{"role": iotc::central::models::roles::OPERATOR}]),
    );
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_SECRET", &app.client_secret)
        .args([
            "device",
            "create",
            "line-1-dev-1",
            "--display-name",
            "Line 1 device 1",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    let created: Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(created["id"], "line-1-dev-1");
    let listed = ok(s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_SECRET", &app.client_secret)
        .args(["device", "list"])
        .output()
        .unwrap());
    assert!(listed.contains("line-1-dev-1"), "{listed}");
    // An Operator may not manage users: the role of the service principal's user applies.
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_SECRET", &app.client_secret)
        .args(["user", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "an Operator cannot list users");
    // One token request per process, three processes so far that got a token.
    let v = s.view("pipeline");
    assert_eq!(v["tokensIssued"], 4, "{v}");

    // A wrong secret: the authority's refusal, named, and no secret in the output.
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_SECRET", "not-the-secret")
        .args(["device", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AADSTS7000215"), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
}

#[test]
fn a_service_principal_with_a_certificate_drives_the_cli_as_pem_and_as_pkcs12() {
    let s = setup();
    let (cert_der, pem, key_der) = entra::sp_certificate();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem.as_bytes());
    let app = s.register("cert-app", json!({"certificate": b64}));
    s.add_sp(
        "cert-sp",
        &app,
        json!([{"role": iotc::central::models::roles::ADMINISTRATOR}]),
    );
    let dir = tempfile::tempdir().unwrap();
    let pem_path = dir.path().join("sp.pem");
    std::fs::write(&pem_path, &pem).unwrap();
    let listed = ok(s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &pem_path)
        .args(["role", "list"])
        .output()
        .unwrap());
    assert!(listed.contains("Administrator"), "{listed}");

    // The same certificate as a PKCS#12 file with a password, from the cert module's writer.
    let (key, _) = iotc::cert::PrivateKey::from_pkcs8_der(&key_der).unwrap();
    let cert_pem = pem[..pem.find("-----BEGIN PRIVATE KEY").unwrap()].to_owned();
    let issued = iotc::cert::Issued {
        cert_der: cert_der.clone(),
        cert_pem: cert_pem.clone(),
        key: Some(key),
        chain_pem: cert_pem,
    };
    let pfx = iotc::cert::pkcs12(&issued, "sp", "pfx-password").unwrap();
    let pfx_path = dir.path().join("sp.pfx");
    std::fs::write(&pfx_path, pfx).unwrap();
    ok(s.iotc("service-principal", &app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &pfx_path)
        .env("AZURE_CLIENT_CERTIFICATE_PASSWORD", "pfx-password")
        .args(["role", "list"])
        .output()
        .unwrap());
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &pfx_path)
        .env("AZURE_CLIENT_CERTIFICATE_PASSWORD", "wrong")
        .args(["role", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("AZURE_CLIENT_CERTIFICATE_PASSWORD"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A certificate that is not the registered one: the authority says which thumbprint.
    let (_, other_pem, _) = entra::sp_certificate();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_pem).unwrap();
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &other)
        .args(["role", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AADSTS700027"));

    // An EC certificate is refused before anything is sent.
    let ec = iotc::cert::Authority::new_root(&iotc::cert::CaOptions::default()).unwrap();
    let ec_path = dir.path().join("ec.pem");
    std::fs::write(
        &ec_path,
        format!(
            "{}{}",
            ec.cert_pem(),
            ec.issued().key.as_ref().unwrap().pkcs8_pem().expose()
        ),
    )
    .unwrap();
    let out = s
        .iotc("service-principal", &app)
        .env("AZURE_CLIENT_CERTIFICATE_PATH", &ec_path)
        .args(["role", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not RSA"));
}

#[test]
fn workload_identity_signs_in_with_the_federated_token_file() {
    let s = setup();
    let (cert_der, pem, key_der) = entra::sp_certificate();
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem.as_bytes());
    let app = s.register("workload", json!({"certificate": b64}));
    s.add_sp(
        "workload-sp",
        &app,
        json!([{"role": iotc::central::models::roles::OPERATOR}]),
    );
    // The federated token a Kubernetes webhook would project: here a client assertion the
    // authority trusts, signed by the registered certificate.
    let cert = iotc::central::ClientCertificate::from_der(&cert_der, &key_der).unwrap();
    let token_endpoint = format!("{}/{}/oauth2/v2.0/token", s.authority, app.tenant_id);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    std::fs::write(
        &file,
        cert.assertion(&app.client_id, &token_endpoint).unwrap(),
    )
    .unwrap();
    let out = s
        .iotc("workload-identity", &app)
        .env("AZURE_FEDERATED_TOKEN_FILE", &file)
        .args(["device", "list"])
        .output()
        .unwrap();
    ok(out);
    assert_eq!(s.view("workload")["tokensIssued"], 1);
    // Without the file: a clear error naming the variable.
    let out = s
        .iotc("workload-identity", &app)
        .args(["device", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AZURE_FEDERATED_TOKEN_FILE"));
}

/// A stand-in `az` that prints `az account get-access-token --output json` output and
/// records its arguments.
fn fake_az(dir: &Path, token: &str, expires_on: i64) {
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\ncat <<'EOF'\n{{\"accessToken\": \"{token}\", \"expiresOn\": \"2099-01-01 00:00:00.000000\", \"expires_on\": {expires_on}, \"subscription\": \"00000000-0000-0000-0000-000000000000\", \"tenant\": \"00000000-0000-0000-0000-000000000000\", \"tokenType\": \"Bearer\"}}\nEOF\n",
        dir.join("az-args").display()
    );
    let path = dir.join("az");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn azure_cli_runs_az_for_the_iot_central_scope_and_sends_its_token() {
    let s = setup();
    let (app, token) = s.operator_token("operator-account", "operator");
    let bin = tempfile::tempdir().unwrap();
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3000;
    fake_az(bin.path(), &token, expires);
    let path = format!(
        "{}:{}",
        bin.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut cmd = s.iotc("azure-cli", &app);
    cmd.env("PATH", &path).args(["device", "list"]);
    ok(cmd.output().unwrap());
    let args = std::fs::read_to_string(bin.path().join("az-args")).unwrap();
    assert_eq!(args.lines().count(), 1, "az ran once: {args}");
    assert!(
        args.contains("account get-access-token")
            && args.contains("--scope https://apps.azureiotcentral.com/.default"),
        "{args}"
    );
    // No `az` on PATH: the error says what to install or run.
    let empty = tempfile::tempdir().unwrap();
    let out = s
        .iotc("azure-cli", &app)
        .env("PATH", format!("{}:/usr/bin:/bin", empty.path().display()))
        .args(["device", "list"])
        .output()
        .unwrap();
    if !Path::new("/usr/bin/az").exists() && !Path::new("/bin/az").exists() {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("az") && err.contains("azure-cli"), "{err}");
    }
}

#[test]
fn a_thousand_calls_make_exactly_one_token_request() {
    let s = setup();
    // A two-minute token: the identity crate's own cache would refresh it on every call
    // (it refreshes five minutes ahead), so only the client's cache can make this pass.
    let app = s.register("busy", json!({"tokenLifetimeSeconds": 120}));
    s.add_sp(
        "busy-sp",
        &app,
        json!([{"role": iotc::central::models::roles::OPERATOR}]),
    );
    let client = s.entra_client(&app);
    use futures::StreamExt;
    let results: Vec<_> = s.emu.block_on(
        futures::stream::iter(0..1000)
            .map(|_| {
                let c = client.clone();
                async move { c.list_roles().next_page().await }
            })
            // Sixteen at a time: the first sixteen race for the first token.
            .buffer_unordered(16)
            .collect(),
    );
    let failed = results.iter().filter(|r| !matches!(r, Some(Ok(_)))).count();
    assert_eq!(failed, 0, "every call succeeds");
    let v = s.view("busy");
    assert_eq!(v["tokenRequests"], 1, "{v}");
    assert_eq!(v["tokensIssued"], 1, "{v}");
}

#[test]
fn calls_that_race_a_refresh_share_it_and_none_fails() {
    let s = setup();
    // A four-second token is refreshed a quarter of its life (one second) ahead of expiry:
    // three seconds after the first fetch, with sixteen calls in flight.
    let app = s.register("racing", json!({"tokenLifetimeSeconds": 4}));
    s.add_sp(
        "racing-sp",
        &app,
        json!([{"role": iotc::central::models::roles::OPERATOR}]),
    );
    let client = s.entra_client(&app);
    // 4.5 s of calls: the first token (t ≈ 0) and its refresh (t ≈ 3 s) fall in it, the
    // second refresh (t ≈ 6 s) does not.
    let start = std::time::Instant::now();
    let until = start + std::time::Duration::from_millis(4500);
    let after_refresh = start + std::time::Duration::from_millis(3500);
    let (calls, late, failures) = s.emu.block_on(async {
        let workers = (0..16).map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                let (mut calls, mut late, mut failures) = (0u32, 0u32, Vec::new());
                loop {
                    let now = std::time::Instant::now();
                    if now >= until {
                        break;
                    }
                    calls += 1;
                    late += u32::from(now >= after_refresh);
                    match c.list_roles().next_page().await {
                        Some(Ok(_)) => {}
                        other => failures.push(format!("{other:?}")),
                    }
                }
                (calls, late, failures)
            })
        });
        let mut total = (0u32, 0u32, Vec::new());
        for w in futures::future::join_all(workers).await {
            let (calls, late, failures) = w.unwrap();
            total.0 += calls;
            total.1 += late;
            total.2.extend(failures);
        }
        total
    });
    assert!(failures.is_empty(), "calls failed: {failures:?}");
    let v = s.view("racing");
    assert_eq!(
        v["tokenRequests"], 2,
        "one fetch and one shared refresh for {calls} calls: {v}"
    );
    assert!(
        late > 0,
        "calls ran after the refresh too: {late} of {calls}"
    );
}

/// Hands out the tokens of a list, one per fetch, each claiming an hour of life.
struct Scripted {
    tokens: std::sync::Mutex<Vec<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl iotc::central::TokenSource for Scripted {
    fn fetch(&self) -> iotc::central::credential::AccessTokenFuture<'_> {
        Box::pin(async move {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let t = self.tokens.lock().unwrap().remove(0);
            Ok(iotc::central::AccessToken {
                token: iotc::secret::Secret::new(t),
                expires_on: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
            })
        })
    }
    fn name(&self) -> &str {
        "scripted"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_the_service_calls_expired_is_replaced_once_and_the_call_succeeds() {
    let e = crate::common_emulator::Emu::start().await;
    let ready = entra::ready(e.dir.path());
    let tenant = ready["tenantId"].as_str().unwrap().to_owned();
    let issuer = format!("{}/{tenant}/v2.0", ready["authorityHost"].as_str().unwrap());
    let oid = "3c9a4a4e-5d0c-4f0a-9a4b-1d2e3f405060";
    entra::add_user(
        &e.http,
        &e.url,
        &e.token,
        "sp",
        entra::user(
            "servicePrincipal",
            &tenant,
            oid,
            json!([{"role": iotc::central::models::roles::OPERATOR}]),
        ),
    )
    .await;
    let (key, kid) = entra::authority_key(e.dir.path());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut expired = entra::claims(&issuer, &tenant, oid);
    expired["exp"] = json!(now - 300);
    expired["nbf"] = json!(now - 900);
    let good = entra::claims(&issuer, &tenant, oid);
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    // The client believes the first token has an hour left; the service says it expired
    // (clocks disagree): one fresh token, one retry.
    let source = Scripted {
        tokens: std::sync::Mutex::new(vec![
            entra::sign(&key, &kid, &expired),
            entra::sign(&key, &kid, &good),
            entra::sign(&key, &kid, &expired),
        ]),
        fetches: fetches.clone(),
    };
    let credential = iotc::central::Credential::Entra(std::sync::Arc::new(
        iotc::central::TokenCache::new(source),
    ));
    let ca = std::fs::read(e.emu.as_ref().unwrap().info().ca_cert.clone()).unwrap();
    let options = iotc::central::ClientOptions::default()
        .with_ca_pem(ca)
        .with_rate_limit(0);
    let client = iotc::central::Client::new(&e.url, credential, Some(options)).unwrap();
    let page = client.list_roles().next_page().await;
    assert!(matches!(page, Some(Ok(_))), "{page:?}");
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(client.stats().attempts, 2);
    // Later calls reuse the fresh token.
    client.list_roles().next_page().await.unwrap().unwrap();
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A one-shot stand-in for App Service's managed-identity endpoint on loopback: answers the
/// first request with `token` and hands back the request line and headers it got.
fn msi_endpoint(token: String) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/msi/token", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3000;
        let body = json!({"access_token": token, "expires_on": expires.to_string(),
            "token_type": "Bearer", "resource": "https://apps.azureiotcentral.com"})
        .to_string();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        head
    });
    (url, handle)
}

#[test]
fn managed_identity_asks_the_local_identity_endpoint_for_the_iot_central_resource() {
    let s = setup();
    let (app, token) = s.operator_token("vm-identity", "vm");
    let (url, server) = msi_endpoint(token.clone());
    let out = s
        .iotc("managed-identity", &app)
        .env_remove("AZURE_CLIENT_ID")
        .env("IDENTITY_ENDPOINT", &url)
        .env("IDENTITY_HEADER", "local-identity-secret")
        .args(["device", "list"])
        .output()
        .unwrap();
    ok(out);
    let head = server.join().unwrap().to_ascii_lowercase();
    assert!(
        head.starts_with(
            "get /msi/token?api-version=2019-08-01&resource=https%3a%2f%2fapps.azureiotcentral.com"
        ),
        "{head}"
    );
    assert!(
        head.contains("x-identity-header: local-identity-secret"),
        "{head}"
    );
}
