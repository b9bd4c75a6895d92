//! `iotc demo`: the whole story on one machine, in one command.
//!
//! It starts the embedded emulator in-process (IoT Central + DPS over HTTPS, and DPS over
//! MQTT on a free port, state in a folder), onboards an X.509 enrollment group through an
//! intermediate CA with real proof of possession, registers one device, then provisions a
//! batch from a CSV manifest with the crash-safe journal, and prints where everything is. Nothing needs a cloud account or a
//! network beyond loopback. The folder is kept so the user can look at the bundles, and the
//! commands to repeat each step by hand are printed at the end.
//!
//! It lives in the CLI because it is the one piece that uses the workflow and the emulator
//! together: the workflow never names the emulator, and the demo's printing and exit code
//! are the command line's business.

use super::output::print_json;
use super::{CliResult, EXIT_OK, EXIT_PARTIAL};
use crate::central::{Client, ClientOptions, Credential};
use crate::emulator::{Emulator, EmulatorConfig};
use crate::ids::{IdScope, RegistrationId};
use crate::workflow::bundle::{BundleJson, BUNDLE_JSON};
use crate::workflow::journal::{Attestation, BatchMeta, Journal};
use crate::workflow::manifest::Source;
use crate::workflow::onboard::{self, CaSpec, Outcome, Step};
use crate::workflow::provision::{run_and_report, BatchOptions};
use crate::workflow::report::now_rfc3339;
use crate::workflow::services::{RealServices, X509Issuer};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// The group the demo creates.
pub const DEMO_GROUP: &str = "demo-line";

fn print_step(json: bool, s: &Step) {
    if json {
        return;
    }
    let outcome = match s.outcome {
        Outcome::Created => "created",
        Outcome::Reused => "reused",
        Outcome::Done => "done",
    };
    println!("  {:<20} {:<8} {}", s.step, outcome, s.detail);
}

/// Runs the demo; returns the exit code (0 when every device registered).
pub async fn run(data_dir: Option<PathBuf>, devices: u64, json: bool) -> CliResult {
    let started = std::time::Instant::now();
    let root = match data_dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("iotc-demo-")
            .tempdir()?
            .keep(),
    };
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };
    say(format!("iotc demo — everything goes to {}", root.display()));

    // 1. The emulator, in-process.
    let emulator = Emulator::start(
        EmulatorConfig::new(root.join("emulator")).dps_mqtt_listen(([127, 0, 0, 1], 0).into()),
    )
    .await?;
    let info = emulator.info().clone();
    say(format!(
        "\n1. emulator up: IoT Central API {}  DPS {} (MQTT {})  ID scope {}",
        info.api_url,
        info.dps_endpoint,
        info.dps_mqtt_host.as_deref().unwrap_or("off"),
        info.id_scope
    ));
    let ca_pem = std::fs::read(&info.ca_cert)?;
    let client = Client::new(
        &info.api_url,
        Credential::api_token(info.admin_token.expose()),
        Some(ClientOptions::default().with_ca_pem(ca_pem.clone())),
    )?;
    let id_scope = IdScope::new(info.id_scope.clone())?;
    let dps = crate::dps::ClientOptions {
        endpoint: info.dps_endpoint.clone(),
        ca_pem: Some(ca_pem),
        default_poll_interval: std::time::Duration::from_millis(200),
        ..crate::dps::ClientOptions::default()
    };

    // 2. X.509 onboarding through an intermediate CA.
    say(
        "\n2. onboarding an X.509 enrollment group (root -> intermediate, proof of possession)"
            .into(),
    );
    let mut steps = Vec::new();
    let cas = onboard::ensure_ca(
        &CaSpec {
            root: root.join("certs/root"),
            intermediate: Some(root.join("certs/intermediate")),
            password: None,
            name: DEMO_GROUP.into(),
            root_key: None,
            intermediate_key: None,
        },
        &mut steps,
    )?;
    onboard::ensure_x509_group(&client, DEMO_GROUP, cas.signing(), false, &mut steps).await?;
    for s in &steps {
        print_step(json, s);
    }
    let signing = Arc::new(cas.into_signing());
    let services = RealServices::new(client.clone(), dps.clone(), id_scope.clone());
    let out = root.join("bundles");
    std::fs::create_dir_all(&out)?;
    let options = BatchOptions {
        concurrency: 32,
        out_dir: out.clone(),
        id_scope: info.id_scope.clone(),
        dps_endpoint: Some(info.dps_endpoint.clone()),
        progress: !json,
        ..BatchOptions::default()
    };

    let first = Source::Ids(vec![RegistrationId::new("demo-device-0001")?]);
    let mut j = Journal::create(&root.join("onboard.journal"), meta("onboard", 1))?;
    j.plan_from(&first, false)?;
    let one = run_and_report(
        j,
        services.clone(),
        X509Issuer::new(signing.clone(), Default::default()),
        options.clone(),
        None,
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    match one.failures.first() {
        None => say(format!(
            "  {:<20} {:<8} demo-device-0001 registered on {}; bundle {}",
            "first device",
            "done",
            std::fs::read_to_string(out.join("demo-device-0001").join(BUNDLE_JSON))
                .ok()
                .and_then(|t| serde_json::from_str::<BundleJson>(&t).ok())
                .and_then(|b| b.assigned_hub)
                .unwrap_or_default(),
            out.join("demo-device-0001").display()
        )),
        Some(f) => say(format!(
            "  {:<20} {:<8} demo-device-0001: {}",
            "first device", "FAILED", f.reason
        )),
    }

    // 3. A factory batch from a manifest.
    let manifest = root.join("manifest.csv");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&manifest)?);
        writeln!(f, "deviceId,displayName,simulated")?;
        for i in 1..=devices {
            writeln!(f, "line-{i:05},Line device {i},false")?;
        }
        f.flush()?;
    }
    let source = Source::Csv(manifest.clone());
    let summary = source.validate()?;
    say(format!(
        "\n3. factory batch: {} devices from {} (each: key + certificate, IoT Central device, DPS registration, bundle)",
        summary.devices,
        manifest.display()
    ));
    let journal_path = root.join("batch.journal");
    let mut j = Journal::create(&journal_path, meta(&source.describe(), summary.devices))?;
    j.plan_from(&source, false)?;
    let report_path = root.join("report.json");
    let report = run_and_report(
        j,
        services,
        X509Issuer::new(signing, Default::default()),
        options,
        Some(&report_path),
        Arc::new(AtomicBool::new(false)),
    )
    .await?;
    emulator.shutdown().await;

    if json {
        print_json(&serde_json::json!({
            "dataDir": root, "apiUrl": info.api_url, "dpsEndpoint": info.dps_endpoint,
            "idScope": info.id_scope, "steps": steps, "firstDevice": one, "batch": report,
        }))?;
    } else {
        print!("  {}", report.summary(10));
        println!(
            "\ndone in {:.1}s. Look at:\n  bundles      {}\n  report       {}\n  journal      {}\n  CA files     {}\n  emulator     {} (restart it with: iotc emulator --data-dir {})",
            started.elapsed().as_secs_f64(),
            out.display(),
            report_path.display(),
            journal_path.display(),
            root.join("certs").display(),
            root.join("emulator").display(),
            root.join("emulator").display(),
        );
        println!(
            "  check a device certificate chain with openssl:\n    openssl verify -CAfile {} -untrusted {} {}",
            root.join("certs/root_cert.pem").display(),
            root.join("certs/intermediate_cert.pem").display(),
            out.join("line-00001/line-00001_cert.pem").display()
        );
    }
    use crate::workflow::report::Outcome as BatchOutcome;
    let ok = one.outcome() == BatchOutcome::Complete && report.outcome() == BatchOutcome::Complete;
    Ok(if ok { EXIT_OK } else { EXIT_PARTIAL })
}

fn meta(source: &str, devices: u64) -> BatchMeta {
    BatchMeta {
        group_id: DEMO_GROUP.into(),
        attestation: Attestation::X509,
        source: source.into(),
        devices,
        created_at: now_rfc3339(),
        issuer: None,
        csr: false,
    }
}
