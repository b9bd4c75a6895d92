//! `iotc cert bench`: certificate throughput, measured the way a factory line uses it.
//!
//! One run measures, for the chosen key type and N devices: rcgen's own keygen + sign (the
//! floor), `Authority::issue_device` in memory on one thread and on all cores, complete
//! device bundles written to disk without a password on one thread and on all cores, the file
//! system floor (the same files written without any cryptography), bundles with encrypted
//! keys, and a shell loop of the openssl CLI doing the same work (key + CSR + sign) one at a
//! time and with `xargs -P`. Each line reports wall time, rate, and the CPU
//! time spent (ours, or the openssl children's), so a figure taken on a busy machine can still
//! be judged. Peak memory (VmHWM) is printed at the end: run two sizes to see it stay flat.
//! With `--hsm-ca PREFIX` it measures a CA whose key is in a PKCS#11 token instead ([`hsm`]).

mod hsm;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::BenchArgs;
use crate::cert::{
    write_bundle, Authority, CaOptions, KeyType, LeafOptions, PrivateKey, WriteOptions,
};
use crate::cli::{CliError, CliResult, EXIT_OK};
use crate::ids::RegistrationId;
use crate::secret::Secret;

/// One measured line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Figure {
    what: String,
    items: u64,
    threads: usize,
    seconds: f64,
    per_second: f64,
    cpu_seconds: f64,
    cpu_micros_per_item: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    key_type: String,
    cores: usize,
    load_average_before: String,
    figures: Vec<Figure>,
    iotc_vs_rcgen_one_thread: f64,
    peak_rss_kib: u64,
}

fn fail(msg: impl Into<String>) -> CliError {
    msg.into().into()
}

/// (own CPU seconds, waited-for children CPU seconds) from /proc/self/stat.
fn cpu_times() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the ")" of the command name: state is field 3; utime 14, stime 15,
    // cutime 16, cstime 17 (1-based), in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i - 3).copied().unwrap_or(0.0) / tick;
    (get(14) + get(15), get(16) + get(17))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub(super) fn measure<F: FnOnce() -> Result<(), CliError>>(
    what: &str,
    items: u64,
    threads: usize,
    children: bool,
    f: F,
) -> Result<Figure, CliError> {
    let (own0, kids0) = cpu_times();
    let t = Instant::now();
    f()?;
    let seconds = t.elapsed().as_secs_f64();
    let (own1, kids1) = cpu_times();
    let cpu = if children { kids1 - kids0 } else { own1 - own0 };
    let fig = Figure {
        what: what.to_owned(),
        items,
        threads,
        seconds,
        per_second: items as f64 / seconds.max(1e-9),
        cpu_seconds: cpu,
        cpu_micros_per_item: cpu * 1e6 / items.max(1) as f64,
    };
    eprintln!(
        "{:<52} {:>7} items {:>2} thr {:>8.2} s {:>9.0}/s  cpu {:>7.2} s ({:.0} µs/item)",
        fig.what,
        fig.items,
        fig.threads,
        fig.seconds,
        fig.per_second,
        fig.cpu_seconds,
        fig.cpu_micros_per_item
    );
    Ok(fig)
}

pub(super) fn pool(threads: usize) -> Result<rayon::ThreadPool, CliError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| fail(format!("could not start worker threads: {e}")))
}

fn id(i: u64) -> Result<RegistrationId, CliError> {
    Ok(RegistrationId::new(format!("bench-{i:07}"))?)
}

/// rcgen alone: generate a key, sign a minimal certificate with the CA key. The floor.
fn rcgen_floor(ca: &Authority, key_type: KeyType, n: u64) -> Result<(), CliError> {
    let ca_key = ca
        .issued()
        .key
        .as_ref()
        .ok_or_else(|| fail("CA without key"))?;
    let (_, kp) = PrivateKey::from_pkcs8_der(ca_key.pkcs8_der())?;
    let issuer = rcgen::Issuer::from_ca_cert_der(&ca.cert_der().into(), kp)
        .map_err(|e| fail(e.to_string()))?;
    for i in 0..n {
        let key = key_type.generate()?;
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, id(i)?.as_str());
        let cert = p
            .signed_by(&key, &issuer)
            .map_err(|e| fail(e.to_string()))?;
        std::hint::black_box((cert.der().len(), key.serialize_der().len()));
    }
    Ok(())
}

pub(super) fn in_memory(
    ca: &Authority,
    opts: &LeafOptions,
    n: u64,
    threads: usize,
) -> Result<(), CliError> {
    pool(threads)?.install(|| {
        (0..n)
            .into_par_iter()
            .try_for_each(|i| -> Result<(), CliError> {
                let issued = ca.issue_device(&id(i)?, opts)?;
                let key = issued.key.as_ref().map(|k| k.pkcs8_pem());
                std::hint::black_box((issued.chain_pem.len(), key));
                Ok(())
            })
    })
}

/// Device bundles written to `dir`. With `crypto` false, one certificate made before the clock
/// starts is written under every name: the same three files through the same `write_bundle`
/// (same sizes, same atomic placement) without any cryptography, the file system's floor; no
/// bundle rate can beat it on that folder's file system.
pub(super) fn to_disk(
    ca: &Authority,
    opts: &LeafOptions,
    w: &WriteOptions,
    dir: &Path,
    n: u64,
    threads: usize,
    crypto: bool,
) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    let fixed = if crypto {
        None
    } else {
        Some(ca.issue_device(&id(0)?, opts)?)
    };
    pool(threads)?.install(|| {
        (0..n)
            .into_par_iter()
            .try_for_each(|i| -> Result<(), CliError> {
                let rid = id(i)?;
                let made;
                let issued = match &fixed {
                    Some(issued) => issued,
                    None => {
                        made = ca.issue_device(&rid, opts)?;
                        &made
                    }
                };
                write_bundle(dir, rid.as_str(), issued, w)?;
                Ok(())
            })
    })
}

const OPENSSL_EXT: &str =
    "[dev]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// The openssl CLI doing the same work per device: new key + CSR, then sign with the CA.
fn openssl_script(key_type: KeyType) -> String {
    let newkey = match key_type {
        KeyType::EcP256 => "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
        KeyType::EcP384 => "-newkey ec -pkeyopt ec_paramgen_curve:P-384",
        KeyType::Rsa2048 => "-newkey rsa:2048",
        KeyType::Rsa3072 => "-newkey rsa:3072",
        KeyType::Rsa4096 => "-newkey rsa:4096",
    };
    format!(
        "one() {{ openssl req -new {newkey} -nodes -keyout \"d$1_key.pem\" -subj \"/CN=d$1\" -out \"d$1.csr\" 2>/dev/null && \
         openssl x509 -req -in \"d$1.csr\" -CA ca_cert.pem -CAkey ca_key.pem -days 365 -extfile ext.cnf -extensions dev \
         -out \"d$1_cert.pem\" 2>/dev/null; }}\n"
    )
}

pub(super) fn run_sh(dir: &Path, script: &str) -> Result<(), CliError> {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .map_err(|e| fail(format!("could not run sh: {e}")))?;
    if !status.success() {
        return Err(fail(format!("the openssl shell loop failed ({status})")));
    }
    Ok(())
}

/// Runs the benchmark.
pub fn run(a: BenchArgs) -> CliResult {
    let kt = a.key_type;
    let n = a.count.max(1);
    let n_enc = a.encrypted_count.unwrap_or((n / 10).max(1));
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    tmp.disable_cleanup(a.keep);
    let base: PathBuf = tmp.path().to_path_buf();
    if let Some(prefix) = &a.hsm_ca {
        let result = hsm::run(&a, prefix, &base, cores);
        if a.keep {
            eprintln!("kept the written files in {}", base.display());
        }
        return result;
    }
    eprintln!(
        "iotc cert bench: {kt}, N = {n}, {cores} cores, load average {load}, folder {}",
        base.display()
    );

    let ca = Authority::new_root(&CaOptions {
        cn: Some("bench root".into()),
        key_type: kt,
        ..Default::default()
    })?;
    let leaf = LeafOptions {
        key_type: kt,
        ..Default::default()
    };
    let plain = WriteOptions::default();
    let encrypted = WriteOptions {
        password: Some(Secret::new("bench-password")),
        ..Default::default()
    };

    let enc_label = format!(
        "iotc bundles, encrypted key (PBKDF2 {})",
        crate::cert::DEFAULT_KDF_ITERATIONS
    );
    let mut figs = vec![
        measure(
            "rcgen keygen + sign (floor), in memory",
            n,
            1,
            false,
            || rcgen_floor(&ca, kt, n),
        )?,
        measure(
            "iotc issue_device (cert+key+chain PEM), in memory",
            n,
            1,
            false,
            || in_memory(&ca, &leaf, n, 1),
        )?,
        measure("iotc issue_device, in memory", n, cores, false, || {
            in_memory(&ca, &leaf, n, cores)
        })?,
        measure(
            "iotc device bundles on disk, no password",
            n,
            1,
            false,
            || to_disk(&ca, &leaf, &plain, &base.join("plain1"), n, 1, true),
        )?,
        measure(
            "iotc device bundles on disk, no password",
            n,
            cores,
            false,
            || to_disk(&ca, &leaf, &plain, &base.join("plainN"), n, cores, true),
        )?,
        measure(
            "file system floor: same 3 files per bundle, no crypto",
            n,
            cores,
            false,
            || to_disk(&ca, &leaf, &plain, &base.join("floor"), n, cores, false),
        )?,
        measure(&enc_label, n_enc, cores, false, || {
            to_disk(
                &ca,
                &leaf,
                &encrypted,
                &base.join("enc"),
                n_enc,
                cores,
                true,
            )
        })?,
    ];
    if a.openssl_count > 0 {
        let m = a.openssl_count;
        let odir = base.join("openssl");
        std::fs::create_dir_all(&odir)?;
        std::fs::write(odir.join("ca_cert.pem"), ca.cert_pem())?;
        let key = ca
            .issued()
            .key
            .as_ref()
            .ok_or_else(|| fail("CA without key"))?;
        std::fs::write(odir.join("ca_key.pem"), key.pkcs8_pem().expose())?;
        std::fs::write(odir.join("ext.cnf"), OPENSSL_EXT)?;
        let f = openssl_script(kt);
        let seq = format!("{f}i=1; while [ $i -le {m} ]; do one $i || exit 1; i=$((i+1)); done");
        figs.push(measure(
            "openssl CLI shell loop (key + CSR + sign)",
            m,
            1,
            true,
            || run_sh(&odir, &seq),
        )?);
        let par = format!(
            "i=1; while [ $i -le {m} ]; do echo p$i; i=$((i+1)); done | xargs -P {cores} -I{{}} sh -c '{}; one {{}}'",
            f.trim_end()
        );
        figs.push(measure(
            "openssl CLI, xargs -P (key + CSR + sign)",
            m,
            cores,
            true,
            || run_sh(&odir, &par),
        )?);
        // The openssl output must be real certificates.
        let sample = std::fs::read(odir.join("d1_cert.pem"))?;
        crate::cert::parse_pem_certs(&sample)?;
    }

    let ratio = figs[1].seconds / figs[0].seconds.max(1e-9);
    let report = Report {
        key_type: kt.to_string(),
        cores,
        load_average_before: load,
        figures: figs,
        iotc_vs_rcgen_one_thread: ratio,
        peak_rss_kib: peak_rss_kib(),
    };
    eprintln!(
        "iotc in-memory one-thread time / rcgen floor = {:.2}x; peak RSS {} KiB",
        report.iotc_vs_rcgen_one_thread, report.peak_rss_kib
    );
    if a.json {
        crate::cli::output::print_json(&report)?;
    }
    if a.keep {
        eprintln!("kept the written files in {}", base.display());
    }
    drop(tmp);
    Ok(EXIT_OK)
}
