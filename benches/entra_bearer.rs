//! Benchmark: what Microsoft Entra sign-in costs per IoT Central call, client and emulator
//! together. The same call (`GET /roles`, one page) through iotc's client, once with the
//! emulator's admin API token and once as a service principal signed in at the emulator's
//! Entra authority (client secret, token cached by the client). The bearer side pays the JWT
//! check (RS256 against the authority's key, audience, issuer, tenant, lifetime) and the
//! mapping of `oid` to the application's users on every request, so it is measured with a few
//! users and with many in the directory. The emulator's token-endpoint counter is printed too:
//! one token request for the whole run is what the client's cache promises.
//!
//! Run: `cargo bench --bench entra_bearer` (env: `ENTRA_BENCH_N` calls per measurement,
//! default 4000; `ENTRA_BENCH_CONCURRENCY`, comma-separated, default `1,16`;
//! `ENTRA_BENCH_USERS`, comma-separated counts of other users in the directory, default
//! `10,1000`). The other users are written straight into the store (what is measured is the
//! calls, not the writes). Prints one line per measurement.

mod common;

use common::{bench_dir, env_or, full_run};
use futures::StreamExt;
use iotc::central::models::{roles, RoleAssignment, User, UserKind};
use iotc::central::{AuthMethod, Client, ClientOptions, Credential, EntraSettings};
use iotc::emulator::store::{self, kind};
use iotc::emulator::{Emulator, EmulatorConfig};
use iotc::secret::Secret;
use std::time::Instant;

fn main() {
    let full = full_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(full));
}

fn list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

async fn run(full: bool) {
    let n: usize = env_or("ENTRA_BENCH_N", if full { 4000 } else { 50 });
    let levels = list("ENTRA_BENCH_CONCURRENCY", "1,16");
    let users = list("ENTRA_BENCH_USERS", if full { "10,1000" } else { "10" });
    println!("Entra bearer benchmark: {n} calls (GET /roles) per measurement, rate limit off");
    for &others in &users {
        let dir = bench_dir();
        let emu = Emulator::start(EmulatorConfig::new(dir.path()).rate_limit(None))
            .await
            .expect("emulator");
        let info = emu.info().clone();
        let ca_pem = std::fs::read(&info.ca_cert).expect("ca");
        let options = ClientOptions {
            rate_limit: None,
            ..ClientOptions::default()
        }
        .with_ca_pem(ca_pem.clone());
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).expect("pem")])
            .build()
            .expect("client");

        let app: serde_json::Value = http
            .put(format!(
                "{}/emulator/entra/applications/bench",
                info.api_url
            ))
            .header("Authorization", info.admin_token.expose())
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("registration");
        let field = |k: &str| app[k].as_str().expect(k).to_owned();
        let user = |tenant: &str, oid: &str| User {
            id: None,
            kind: UserKind::ServicePrincipal {
                tenant_id: tenant.to_owned(),
                object_id: oid.to_owned(),
            },
            roles: vec![RoleAssignment {
                role: roles::OPERATOR.into(),
                organization: None,
            }],
        };
        emu.store()
            .write(|c| {
                store::put(
                    c,
                    kind::USER,
                    "bench-sp",
                    &user(&field("tenantId"), &field("objectId")),
                )?;
                for i in 0..others {
                    let oid = uuid::Uuid::new_v4().to_string();
                    store::put(
                        c,
                        kind::USER,
                        &format!("other-{i}"),
                        &user(&info.tenant_id, &oid),
                    )?;
                }
                Ok(())
            })
            .expect("users");

        let api_token = Credential::api_token(info.admin_token.expose());
        let entra = EntraSettings {
            tenant_id: Some(field("tenantId")),
            client_id: Some(field("clientId")),
            client_secret: Some(Secret::new(field("clientSecret"))),
            authority_host: Some(info.authority_host.clone()),
            extra_ca_pem: Some(ca_pem.clone()),
            ..EntraSettings::default()
        }
        .credential(AuthMethod::ServicePrincipal)
        .expect("credential");
        for &c in &levels {
            for (what, credential) in [("API token", &api_token), ("Entra bearer", &entra)] {
                let client = Client::new(&info.api_url, credential.clone(), Some(options.clone()))
                    .expect("client");
                // One call first, so the bearer side's token fetch is not in the timing.
                assert!(matches!(client.list_roles().next_page().await, Some(Ok(_))));
                let start = Instant::now();
                let ok = futures::stream::iter(0..n)
                    .map(|_| {
                        let client = client.clone();
                        async move { matches!(client.list_roles().next_page().await, Some(Ok(_))) }
                    })
                    .buffer_unordered(c)
                    .filter(|ok| futures::future::ready(*ok))
                    .count()
                    .await;
                let secs = start.elapsed().as_secs_f64();
                assert_eq!(ok, n, "every call succeeded");
                println!(
                    "{what:<12} {:>5} users, concurrency {c:>3}: {:>8.0} calls/s ({n} in {secs:.2} s)",
                    others + 1,
                    n as f64 / secs
                );
            }
        }
        let view: serde_json::Value = http
            .get(format!(
                "{}/emulator/entra/applications/bench",
                info.api_url
            ))
            .header("Authorization", info.admin_token.expose())
            .send()
            .await
            .expect("view")
            .json()
            .await
            .expect("view body");
        println!(
            "token-endpoint requests for all the bearer calls above: {}",
            view["tokenRequests"]
        );
        emu.shutdown().await;
    }
}
