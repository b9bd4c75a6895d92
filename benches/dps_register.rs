//! Benchmark: DPS X.509 registrations per second against the in-process emulator, each
//! registration by a fresh client (a new TLS connection with the device's certificate chain,
//! then PUT register and the operation poll on it).
//!
//! Run: `cargo bench --bench dps_register` (env: `DPS_BENCH_N` devices, default 2000;
//! `DPS_BENCH_CONCURRENCY`, comma-separated list, default `1,8,32`; `DPS_BENCH_INTERMEDIATE=1`
//! to sign devices with an intermediate and present it in the handshake).
//! Certificates are made before the clock starts; the emulator and the clients share the
//! machine. Prints one line per concurrency level. A failed registration fails the run (under
//! `cargo test` too), and at the end DPS's own count must show every device registered once.

mod common;

use common::{bench_dir, env_or, full_run};
use futures::StreamExt;
use iotc::central::models::{
    EnrollmentGroup, EnrollmentGroupType, GroupAttestation, SigningX509Certificate,
};
use iotc::central::{CertificateEntry, Client as Central, ClientOptions, Credential};
use iotc::cert::{Authority, CaOptions, LeafOptions};
use iotc::dps::{Attestation, Client, X509Identity};
use iotc::emulator::{Emulator, EmulatorConfig};
use std::time::{Duration, Instant};

fn main() {
    let full = full_run();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(full));
}

async fn run(full: bool) {
    let n: usize = env_or("DPS_BENCH_N", if full { 2000 } else { 20 });
    let levels: Vec<usize> = std::env::var("DPS_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,8,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let with_intermediate = std::env::var("DPS_BENCH_INTERMEDIATE").is_ok_and(|v| v == "1");

    let dir = bench_dir();
    let mut config = EmulatorConfig::new(dir.path()).rate_limit(None);
    config.settings.dps_assigning_polls = 0;
    config.settings.dps_retry_after_seconds = 0;
    let emu = Emulator::start(config).await.expect("emulator");
    let info = emu.info().clone();
    let ca_pem = std::fs::read(&info.ca_cert).expect("ca");
    let central = Central::new(
        &info.api_url,
        Credential::ApiToken(info.admin_token.clone()),
        Some(ClientOptions {
            extra_ca_pem: Some(ca_pem.clone()),
            ..ClientOptions::default()
        }),
    )
    .expect("central");
    let root = Authority::new_root(&CaOptions::default()).expect("root");
    let inter = root
        .issue_intermediate(&CaOptions::default())
        .expect("intermediate");
    central
        .create_enrollment_group(
            "bench",
            &EnrollmentGroup {
                id: None,
                display_name: "bench".into(),
                enabled: Some(true),
                group_type: EnrollmentGroupType::Iot,
                attestation: GroupAttestation::X509 { x509: None },
                etag: None,
                id_scope: None,
            },
        )
        .await
        .expect("group");
    central
        .set_enrollment_group_certificate(
            "bench",
            CertificateEntry::Primary,
            &SigningX509Certificate {
                verified: true,
                certificate: Some(iotc::cert::certificate_string(root.cert_pem())),
                info: None,
                etag: None,
            },
        )
        .await
        .expect("certificate");

    let issuer = if with_intermediate { &inter } else { &root };
    let total: usize = n * levels.len();
    let t = Instant::now();
    let identities: Vec<(String, X509Identity)> = (0..total)
        .map(|i| {
            let id = format!("bench-{i:06}");
            let dev = issuer
                .issue_device(&id.parse().expect("id"), &LeafOptions::default())
                .expect("device");
            let key = dev.key.as_ref().expect("key").pkcs8_der().to_vec();
            let mut chain = vec![dev.cert_der.clone()];
            if with_intermediate {
                chain.push(inter.cert_der().to_vec());
            }
            (id, X509Identity::from_der(chain, key).expect("identity"))
        })
        .collect();
    eprintln!(
        "made {total} device certificates in {:.1} s (not timed below)",
        t.elapsed().as_secs_f64()
    );

    let scope: iotc::ids::IdScope = info.id_scope.parse().expect("scope");
    let mut it = identities.into_iter();
    for c in levels {
        let batch: Vec<_> = it.by_ref().take(n).collect();
        let opts = iotc::dps::ClientOptions {
            endpoint: info.dps_endpoint.clone(),
            ca_pem: Some(ca_pem.clone()),
            deadline: Duration::from_secs(60),
            ..Default::default()
        };
        let start = Instant::now();
        let results: Vec<Result<(), String>> = futures::stream::iter(batch)
            .map(|(id, identity)| {
                let opts = opts.clone();
                let scope = scope.clone();
                async move {
                    let client = Client::new(scope, Attestation::X509(identity), opts)
                        .map_err(|e| e.to_string())?;
                    let r = client
                        .register(
                            &id.parse()
                                .map_err(|e: iotc::ids::InvalidId| e.to_string())?,
                            None,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                    if r.device_id.as_deref() == Some(id.as_str()) {
                        Ok(())
                    } else {
                        Err(format!("{id}: assigned {:?}", r.device_id))
                    }
                }
            })
            .buffer_unordered(c)
            .collect()
            .await;
        let secs = start.elapsed().as_secs_f64();
        let failed = results.iter().filter(|r| r.is_err()).count();
        println!(
            "dps x509 register{}: concurrency {c:>3}: {} devices in {secs:.2} s = {:.0} registrations/s ({failed} failed)",
            if with_intermediate { " (intermediate in chain)" } else { "" },
            results.len(),
            results.len() as f64 / secs,
        );
        // A figure with failed registrations in it measures failures: the run fails instead.
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            panic!(
                "{failed} of {} registrations failed; the first: {e}",
                results.len()
            );
        }
    }
    // DPS's own count: every device registered exactly once, none twice or lost.
    let registered = emu
        .stats()
        .expect("stats")
        .of(iotc::emulator::stats::counter::DPS_REGISTRATIONS);
    assert_eq!(registered.len(), total, "every device registered");
    assert!(
        registered.values().all(|&n| n == 1),
        "a device was registered more than once"
    );
    emu.shutdown().await;
}
