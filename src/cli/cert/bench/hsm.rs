//! `iotc cert bench --hsm-ca PREFIX`: what keeping the CA key in a PKCS#11 token costs.
//!
//! Each figure beside its comparison: device bundles signed through the token next to the
//! same bundles signed with a file key of the same type (the target is at least half the
//! file-key rate); bare signatures through the token with one session per worker, with one
//! session shared by all workers (what the session pool buys), on one thread, and with a file
//! key; and the openssl CLI signing through the same token (libp11's `pkcs11` engine), one
//! process per signature, as a shell loop would (the target is 100 times fewer per second).

use std::path::Path;

use rayon::prelude::*;
use rcgen::SigningKey;

use super::{in_memory, measure, pool, run_sh, to_disk, Figure};
use crate::cert::{Authority, CaOptions, LeafOptions, WriteOptions};
use crate::cli::{CliError, CliResult, EXIT_OK};
use crate::pkcs11::{TokenKey, MODULE_ENV, PIN_ENV};

/// Where Debian's libengine-pkcs11-openssl puts the engine.
const ENGINES: [&str; 2] = [
    "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
    "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
];

fn fail(msg: impl Into<String>) -> CliError {
    msg.into().into()
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct HsmReport {
    ca: String,
    key_uri: String,
    cores: usize,
    figures: Vec<Figure>,
    /// Token-CA / file-CA rate of device certificates in memory.
    token_vs_file_in_memory: f64,
    /// Best token-CA bundle rate / best file-CA bundle rate (target >= 0.5).
    token_vs_file_bundles: f64,
    /// Token signatures per second (session per worker) / openssl CLI signatures per second
    /// (target >= 100).
    token_vs_openssl_signatures: Option<f64>,
    /// Sessions the pool had open after the per-worker measurement.
    sessions_open: usize,
    /// Sessions open after the shared-session measurement (1).
    sessions_open_shared: usize,
}

/// A message the size of a device certificate's TBSCertificate.
const MESSAGE: [u8; 600] = [0x5a; 600];

fn token_signatures(key: &TokenKey, n: u64, threads: usize) -> Result<(), CliError> {
    let scheme = key.key_type().certificate_scheme();
    pool(threads)?.install(|| {
        (0..n).into_par_iter().try_for_each(|_| {
            let sig = key
                .sign(scheme, &MESSAGE)
                .map_err(|e| fail(e.to_string()))?;
            std::hint::black_box(sig);
            Ok(())
        })
    })
}

/// The openssl CLI signing `n` times through the token, one process each.
fn openssl_signatures(key: &TokenKey, dir: &Path, n: u64) -> Result<Option<()>, CliError> {
    let Some(engine) = ENGINES.iter().find(|p| Path::new(p).exists()) else {
        eprintln!("openssl through the token: skipped (no pkcs11 engine: apt-get install libengine-pkcs11-openssl)");
        return Ok(None);
    };
    let uri = key.uri();
    let module = match uri.module_path() {
        Some(m) => m.to_owned(),
        None => std::env::var_os(MODULE_ENV)
            .map(Into::into)
            .ok_or_else(|| fail(format!("no module for openssl: set {MODULE_ENV}")))?,
    };
    // libp11 reads the whole PIN file, so no newline; the file is the bench's, 0600.
    let pin = match uri.pin_source() {
        Some(p) => std::fs::read_to_string(p)?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => std::env::var(PIN_ENV)
            .map_err(|_| fail(format!("no PIN for openssl: set {PIN_ENV}")))?,
    };
    let pin_file = dir.join("pin");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&pin_file)?;
        f.write_all(pin.as_bytes())?;
    }
    std::fs::write(
        dir.join("openssl.cnf"),
        format!(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = p11\n\
             [p11]\nengine_id = pkcs11\ndynamic_path = {engine}\nMODULE_PATH = {}\ninit = 0\n",
            module.display()
        ),
    )?;
    std::fs::write(dir.join("tbs.bin"), MESSAGE)?;
    let engine_uri = uri.with_pin_source(&pin_file).without_module();
    let script = format!(
        "export OPENSSL_CONF=openssl.cnf; i=1; while [ $i -le {n} ]; do \
         openssl dgst -sha256 -engine pkcs11 -keyform engine -sign '{engine_uri}' -out sig.bin tbs.bin \
         2>/dev/null || exit 1; i=$((i+1)); done"
    );
    run_sh(dir, &script)?;
    std::fs::remove_file(&pin_file)?;
    // The signature openssl made must be a real one.
    if std::fs::metadata(dir.join("sig.bin"))?.len() == 0 {
        return Err(fail("openssl wrote an empty signature"));
    }
    Ok(Some(()))
}

/// Runs the token benchmark with the CA at `prefix` (its key in a token).
pub(super) fn run(a: &super::BenchArgs, prefix: &Path, base: &Path, cores: usize) -> CliResult {
    let ca = Authority::load(prefix, None)
        .map_err(|e| fail(format!("--hsm-ca {}: {e}", prefix.display())))?;
    let key = ca.token_key().ok_or_else(|| {
        fail(format!(
            "--hsm-ca {}: no {}_key.uri: this CA's key is not in a token",
            prefix.display(),
            prefix.display()
        ))
    })?;
    let n = a.count.max(1);
    let s = a.signatures.max(1);
    let file_ca = Authority::new_root(&CaOptions {
        cn: Some("bench file root".into()),
        key_type: ca.key_type(),
        ..Default::default()
    })?;
    let file_key = ca.key_type().generate()?;
    let leaf = LeafOptions {
        key_type: a.key_type,
        ..Default::default()
    };
    let plain = WriteOptions::default();
    eprintln!(
        "iotc cert bench --hsm-ca: CA {} ({}, key {}), devices {}, N = {n}, {s} signatures, {cores} cores",
        ca.subject(),
        ca.key_type(),
        key.uri(),
        a.key_type
    );
    let mut figs = vec![
        measure(
            "device certificates in memory, CA key in the token",
            n,
            cores,
            false,
            || in_memory(&ca, &leaf, n, cores),
        )?,
        measure(
            "device certificates in memory, CA key in a file",
            n,
            cores,
            false,
            || in_memory(&file_ca, &leaf, n, cores),
        )?,
        // Token, file, file, token: a file system slows down as a run fills it, so each
        // side gets one early and one late turn and the ratio takes each side's best.
        measure(
            "device bundles, CA key in the token (1st)",
            n,
            cores,
            false,
            || to_disk(&ca, &leaf, &plain, &base.join("token1"), n, cores, true),
        )?,
        measure(
            "device bundles, CA key in a file (1st)",
            n,
            cores,
            false,
            || to_disk(&file_ca, &leaf, &plain, &base.join("file1"), n, cores, true),
        )?,
        measure(
            "device bundles, CA key in a file (2nd)",
            n,
            cores,
            false,
            || to_disk(&file_ca, &leaf, &plain, &base.join("file2"), n, cores, true),
        )?,
        measure(
            "device bundles, CA key in the token (2nd)",
            n,
            cores,
            false,
            || to_disk(&ca, &leaf, &plain, &base.join("token2"), n, cores, true),
        )?,
        measure(
            "token signatures, one session per worker",
            s,
            cores,
            false,
            || token_signatures(key, s, cores),
        )?,
    ];
    let sessions_open = key.sessions_open();
    key.set_max_sessions(1);
    figs.push(measure(
        "token signatures, one session shared by all workers",
        s,
        cores,
        false,
        || token_signatures(key, s, cores),
    )?);
    let sessions_open_shared = key.sessions_open();
    figs.push(measure(
        "token signatures, one thread",
        s,
        1,
        false,
        || token_signatures(key, s, 1),
    )?);
    figs.push(measure(
        "file key signatures, one thread",
        s,
        1,
        false,
        || {
            for _ in 0..s {
                let sig = file_key.sign(&MESSAGE).map_err(|e| fail(e.to_string()))?;
                std::hint::black_box(sig);
            }
            Ok(())
        },
    )?);
    let mut vs_openssl = None;
    if a.openssl_count > 0 {
        let m = a.openssl_count;
        let odir = base.join("openssl-token");
        std::fs::create_dir_all(&odir)?;
        let mut ran = None;
        let fig = measure(
            "openssl CLI loop signing through the token (pkcs11 engine)",
            m,
            1,
            true,
            || {
                ran = openssl_signatures(key, &odir, m)?;
                Ok(())
            },
        )?;
        if ran.is_some() {
            vs_openssl = Some(figs[6].per_second / fig.per_second.max(1e-9));
            figs.push(fig);
        }
    }
    let report = HsmReport {
        ca: ca.subject().to_owned(),
        key_uri: key.uri().to_string(),
        cores,
        token_vs_file_in_memory: figs[0].per_second / figs[1].per_second.max(1e-9),
        token_vs_file_bundles: figs[2].per_second.max(figs[5].per_second)
            / figs[3].per_second.max(figs[4].per_second).max(1e-9),
        token_vs_openssl_signatures: vs_openssl,
        sessions_open,
        sessions_open_shared,
        figures: figs,
    };
    eprintln!(
        "token CA / file CA: in memory {:.2}, bundles on disk {:.2} (target >= 0.5); token signatures / openssl CLI = {}; {} sessions were open",
        report.token_vs_file_in_memory,
        report.token_vs_file_bundles,
        report
            .token_vs_openssl_signatures
            .map(|r| format!("{r:.0}x (target >= 100x)"))
            .unwrap_or_else(|| "not measured".into()),
        report.sessions_open
    );
    if a.json {
        crate::cli::output::print_json(&report)?;
    }
    Ok(EXIT_OK)
}
