//! `iotc rollover stage|promote|retire`, `iotc renew` and `iotc revoke`: the command-line
//! faces of the lifecycle flows of [`crate::workflow`] (rollover, renew, revoke).
//!
//! Each command prints its plan before it changes anything (`--dry-run` prints only the
//! plan), takes the CA through the same `--ca PREFIX` loading path as `provision`, and
//! exits 0 when everything is done, 1 when some device is not (rerun to go on), 2 on error.

use super::workflow::{
    batch_options, dps_options, exit_code_of, id_scope, load_ca, stop_on_ctrl_c, DpsTarget,
    EngineArgs, RunArgs,
};
use super::{config, output, CliError, CliResult, GlobalArgs, EXIT_OK, EXIT_PARTIAL};
use crate::cert::{Authority, Reason};
use crate::ids::EnrollmentGroupId;
use crate::workflow::journal::{Attestation, Journal, JournalWriter};
use crate::workflow::ledger::{self, RenewState};
use crate::workflow::renew::{self, RenewSource};
use crate::workflow::revoke::{self, CrlFile};
use crate::workflow::rollover::{self, Plan};
use crate::workflow::services::{CentralBlocker, RealServices};
use std::path::{Path, PathBuf};

/// The phases of a CA rollover.
#[derive(Debug, clap::Subcommand)]
pub enum RolloverCommand {
    /// Phase 1: put the new CA into the group's free slot (secondary) and prove possession of
    /// its key. Devices of the old and of the new CA both register afterwards.
    #[command(
        after_help = "Example:\n  iotc rollover stage --group line-1 --ca pki/line-2025 --ca-password-file pw.txt\n\n\
Refused unless one slot holds the current, verified CA and the other is free (or holds the new CA)."
    )]
    Stage(StageArgs),
    /// Phase 2: make the new CA primary and the old one secondary, without a moment in which
    /// either CA's devices cannot register (a bridge group holds the old CA meanwhile).
    #[command(
        after_help = "Example:\n  iotc rollover promote --group line-1 --ca pki/line-2025 --old-ca pki/line-2020 --ca-password-file pw.txt\n\n\
The service never returns a certificate's content, so both CA files are needed: each upload is \
proved with its key (or self-attested with --verified-upload). Refused unless primary = old and \
secondary = new, both verified, or a promote of the same CAs was interrupted."
    )]
    Promote(PromoteArgs),
    /// Phase 3: remove the old CA from the group. Refused while a journal given with
    /// --journal holds devices whose certificate does not chain to the new CA (renew them
    /// first), unless --force.
    #[command(
        after_help = "Example:\n  iotc rollover retire --group line-1 --ca pki/line-2025 --journal line1.journal\n\n\
Only the new CA's certificate is read (no key, no password). After retire, devices of the old \
CA are refused by DPS."
    )]
    Retire(RetireArgs),
}

/// What every phase takes.
#[derive(Debug, clap::Args)]
pub struct PhaseArgs {
    /// The x509 enrollment group.
    #[arg(long)]
    pub group: EnrollmentGroupId,
    /// The new CA: PREFIX_cert.pem and PREFIX_key.pem (root or intermediate).
    #[arg(long, value_name = "PREFIX")]
    pub ca: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `iotc rollover stage`.
#[derive(Debug, clap::Args)]
pub struct StageArgs {
    /// Group, new CA, dry run.
    #[command(flatten)]
    pub phase: PhaseArgs,
    /// File whose first line is the password of the CA key [else IOTC_CA_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Upload the new CA as verified instead of proving possession of its key.
    #[arg(long)]
    pub verified_upload: bool,
}

/// Arguments of `iotc rollover promote`.
#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    /// Group, new CA, dry run.
    #[command(flatten)]
    pub phase: PhaseArgs,
    /// The old CA (the group's primary now): PREFIX_cert.pem and PREFIX_key.pem.
    #[arg(long, value_name = "PREFIX")]
    pub old_ca: PathBuf,
    /// File whose first line is the password of both CA keys [else IOTC_CA_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Upload the CAs as verified instead of proving possession of their keys.
    #[arg(long)]
    pub verified_upload: bool,
}

/// Arguments of `iotc rollover retire`.
#[derive(Debug, clap::Args)]
pub struct RetireArgs {
    /// Group, new CA, dry run.
    #[command(flatten)]
    pub phase: PhaseArgs,
    /// A batch journal whose devices must all chain to the new CA first (repeatable).
    #[arg(long, value_name = "FILE")]
    pub journal: Vec<PathBuf>,
    /// Retire even though devices of the journals would be locked out.
    #[arg(long)]
    pub force: bool,
}

/// Arguments of `iotc renew`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
iotc renew --journal line1.journal --out bundles --ca pki/line --ca-password-file pw.txt --key-password-file pw.txt\n  \
iotc renew --journal line1.journal --out bundles --ca pki/line-2025 --ca-password-file pw.txt --expiring-within 30 --no-password\n  \
iotc renew --journal line1.journal --out bundles --ca pki/line --ca-password-file pw.txt --csr-dir csrs\n\n\
A round's bundles go to OUT/renewal-N/<deviceId>/, beside the old ones (never overwritten). \
An unfinished round is resumed by running the command again (with the same --ca).")]
pub struct RenewArgs {
    /// The batch's journal (from `iotc provision`); the renewal is recorded in it.
    #[arg(long)]
    pub journal: PathBuf,
    /// Folder in which the round's bundle folder renewal-N is made.
    #[arg(long)]
    pub out: PathBuf,
    /// The CA that signs the new certificates: PREFIX_cert.pem with PREFIX_key.pem, or
    /// PREFIX_key.uri when the key is in a PKCS#11 token.
    #[arg(long, value_name = "PREFIX")]
    pub ca: PathBuf,
    /// The CA key in a PKCS#11 token (RFC 7512 URI), overriding PREFIX_key.pem / .uri.
    #[arg(long, value_name = "URI")]
    pub ca_key: Option<String>,
    /// File whose first line is the password of the CA key [else IOTC_CA_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Renew only the devices whose certificate expires within this many days.
    #[arg(long, value_name = "DAYS")]
    pub expiring_within: Option<u32>,
    /// The devices keep their keys: sign `DIR/<deviceId>.csr` (or `.pem`) instead of making keys;
    /// the devices then register themselves with their new certificate.
    #[arg(long, value_name = "DIR")]
    pub csr_dir: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// DPS settings.
    #[command(flatten)]
    pub dps: DpsTarget,
    /// Batch settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Arguments of `iotc revoke`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
iotc revoke --journal line1.journal --reason keyCompromise\n  \
iotc revoke --journal line1.journal --ca pki/line --issuer-ca pki/root --ca-password-file pw.txt --out revocation\n\n\
Blocks every device of the journal in IoT Central (enabled: false), once each, paced; rerun to \
resume. With --ca (the station's CA, while its key is at hand) it writes a CRL of the devices' \
certificates; with --issuer-ca (the CA above it) a CRL of the station's CA. Then it says what \
the group still trusts and which rollover commands end it.")]
pub struct RevokeArgs {
    /// The lost station's batch journal.
    #[arg(long)]
    pub journal: PathBuf,
    /// Reason of the CRL entries: keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation or unspecified.
    #[arg(long, default_value = "keyCompromise")]
    pub reason: Reason,
    /// The station's CA (its key signs the devices' CRL).
    #[arg(long, value_name = "PREFIX")]
    pub ca: Option<PathBuf>,
    /// The CA above the station's CA (its key signs the CRL of the station's CA).
    #[arg(long, value_name = "PREFIX")]
    pub issuer_ca: Option<PathBuf>,
    /// File whose first line is the password of the CA keys [else IOTC_CA_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Folder of the CRLs and the report (default: the journal's folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Concurrency, attempts, progress.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// Runs a rollover phase.
pub fn run_rollover(cmd: RolloverCommand, global: &GlobalArgs) -> CliResult {
    super::runtime()?.block_on(rollover(cmd, global))
}

/// Runs `iotc renew`.
pub fn run_renew(args: RenewArgs, global: &GlobalArgs) -> CliResult {
    super::runtime()?.block_on(renew(args, global))
}

/// Runs `iotc revoke`.
pub fn run_revoke(args: RevokeArgs, global: &GlobalArgs) -> CliResult {
    super::runtime()?.block_on(revoke(args, global))
}

fn sha1(ca: &Authority) -> String {
    crate::cert::sha1_thumbprint(ca.cert_der())
}

/// Reads only the certificate of a CA (retire needs no key).
fn ca_cert(prefix: &Path) -> Result<Vec<u8>, CliError> {
    let path = crate::cert::prefixed_path(prefix, "_cert.pem");
    let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    crate::cert::parse_pem_certs(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()).into())
}

fn print_phase_plan(plan: &Plan, global: &GlobalArgs, dry_run: bool) -> Result<(), CliError> {
    if global.output == output::OutputFormat::Json {
        return Ok(());
    }
    let show = |s: &Option<rollover::Slot>| match s {
        None => "empty".to_owned(),
        Some(s) => format!(
            "SHA-1 {} ({})",
            s.sha1,
            if s.verified { "verified" } else { "unverified" }
        ),
    };
    println!(
        "{} {}: primary {}, secondary {}",
        plan.phase,
        plan.from.group,
        show(&plan.from.primary),
        show(&plan.from.secondary)
    );
    if let Some(note) = &plan.note {
        println!("nothing to do: {note}");
    }
    for (i, a) in plan.actions.iter().enumerate() {
        println!("  {}. {}", i + 1, a.describe());
    }
    if dry_run {
        println!("dry run: nothing was done");
    }
    Ok(())
}

async fn rollover(cmd: RolloverCommand, global: &GlobalArgs) -> CliResult {
    let client = config::client(global)?;
    let (phase, new, old, plan) = match &cmd {
        RolloverCommand::Stage(a) => {
            let new = load_ca(&a.phase.ca, None, a.ca_password_file.as_deref())?;
            let slots = rollover::read_slots(&client, a.phase.group.as_str()).await?;
            let plan = rollover::plan_stage(&slots, &sha1(&new), a.verified_upload)?;
            (&a.phase, Some(new), None, plan)
        }
        RolloverCommand::Promote(a) => {
            let new = load_ca(&a.phase.ca, None, a.ca_password_file.as_deref())?;
            let old = load_ca(&a.old_ca, None, a.ca_password_file.as_deref())?;
            let slots = rollover::read_slots(&client, a.phase.group.as_str()).await?;
            let plan = rollover::plan_promote(&slots, &sha1(&new), &sha1(&old), a.verified_upload)?;
            (&a.phase, Some(new), Some(old), plan)
        }
        RolloverCommand::Retire(a) => {
            let new_der = ca_cert(&a.phase.ca)?;
            let mut stranded = Vec::new();
            for path in &a.journal {
                let j = Journal::open(path)?;
                if j.meta().group_id != a.phase.group.as_str() {
                    return Err(format!(
                        "journal {} belongs to group {}, not {}",
                        path.display(),
                        j.meta().group_id,
                        a.phase.group
                    )
                    .into());
                }
                stranded.extend(rollover::not_chaining_to(
                    &ledger::current_certs(&j)?,
                    &new_der,
                ));
            }
            let slots = rollover::read_slots(&client, a.phase.group.as_str()).await?;
            let plan = rollover::plan_retire(
                &slots,
                &crate::cert::sha1_thumbprint(&new_der),
                &stranded,
                a.force,
            )?;
            (&a.phase, None, None, plan)
        }
    };
    print_phase_plan(&plan, global, phase.dry_run)?;
    let mut done = Vec::new();
    if !phase.dry_run {
        for action in &plan.actions {
            let step = rollover::perform(
                &client,
                action,
                plan.from.group_type,
                new.as_ref(),
                old.as_ref(),
            )
            .await?;
            if global.output != output::OutputFormat::Json {
                println!("done: {}", action.describe());
                if let Some(s) = step {
                    println!("      {}", s.detail);
                }
            }
            done.push(action.describe());
        }
    }
    if global.output == output::OutputFormat::Json {
        output::print_json(&serde_json::json!({
            "plan": plan, "dryRun": phase.dry_run, "done": done,
        }))?;
    }
    Ok(EXIT_OK)
}

fn open_x509_journal(path: &Path) -> Result<Journal, CliError> {
    let j = Journal::open(path)?;
    if j.meta().attestation != Attestation::X509 {
        return Err(format!(
            "journal {} is a symmetric-key batch: there are no certificates to renew",
            path.display()
        )
        .into());
    }
    Ok(j)
}

async fn renew(args: RenewArgs, global: &GlobalArgs) -> CliResult {
    let mut journal = open_x509_journal(&args.journal)?;
    if journal.meta().csr && args.csr_dir.is_none() {
        return Err(format!(
            "journal {} is a CSR batch: its devices hold their own keys, which the station must              not make; renew them from new CSRs with --csr-dir DIR",
            args.journal.display()
        )
        .into());
    }
    let ca = load_ca(
        &args.ca,
        args.ca_key.as_deref(),
        args.ca_password_file.as_deref(),
    )?;
    let issuer = crate::cert::sha256_thumbprint(ca.cert_der());
    if let Some(dir) = &args.csr_dir {
        if !dir.is_dir() {
            return Err(format!("--csr-dir {} is not a folder", dir.display()).into());
        }
    }
    if !args.dry_run {
        ledger::migrate(&mut journal)?;
    }
    let open = if args.dry_run {
        ledger::open_round(&journal).unwrap_or(None)
    } else {
        ledger::open_round(&journal)?
    };
    if let Some(r) = &open {
        if r.issuer != issuer {
            return Err(format!(
                "renewal round {} is not finished and is signed by {} (SHA-256 {}); finish it with \
                 that CA as --ca before starting another",
                r.round, r.issuer_subject, r.issuer
            )
            .into());
        }
        if r.csr_dir != args.csr_dir {
            return Err(format!(
                "renewal round {} is not finished and was planned {}; rerun it the same way",
                r.round,
                match &r.csr_dir {
                    Some(d) => format!("with --csr-dir {}", d.display()),
                    None => "without --csr-dir".into(),
                }
            )
            .into());
        }
    }
    let (ids, resuming) = match &open {
        Some(r) => (
            ledger::round_renewals(&journal, r.round)?
                .into_iter()
                .filter(|x| x.state != RenewState::BundleWritten)
                .map(|x| x.device_id)
                .collect::<Vec<_>>(),
            true,
        ),
        None => (renew::select(&journal, args.expiring_within)?, false),
    };
    let group = journal.meta().group_id.clone();
    let json = global.output == output::OutputFormat::Json;
    if !json {
        println!(
            "renew: {} {} device(s) of {} (group {group}), signed by {}{}",
            if resuming {
                "resuming, left:"
            } else {
                "would renew"
            },
            ids.len(),
            args.journal.display(),
            ca.subject(),
            match &args.csr_dir {
                Some(d) => format!(
                    ", from the devices' CSRs in {} (no DPS registration)",
                    d.display()
                ),
                None => ", new keys made here, each device re-registered with DPS".into(),
            }
        );
        for id in ids.iter().take(20) {
            println!("  {id}");
        }
        if ids.len() > 20 {
            println!("  … and {} more", ids.len() - 20);
        }
    }
    if args.dry_run {
        if json {
            output::print_json(
                &serde_json::json!({"dryRun": true, "resume": resuming, "devices": ids}),
            )?;
        } else {
            println!("dry run: nothing was done");
        }
        return Ok(EXIT_OK);
    }
    let round = match open {
        Some(r) => r,
        None if ids.is_empty() => {
            if !json {
                println!("nothing to renew");
            }
            return Ok(EXIT_OK);
        }
        None => ledger::plan_round(
            &mut journal,
            &ledger::Round {
                round: 0,
                issuer,
                issuer_subject: ca.subject().to_owned(),
                created_at: crate::workflow::report::now_rfc3339(),
                expiring_within: args.expiring_within,
                csr_dir: args.csr_dir.clone(),
                out_dir: args.out.clone(),
            },
            &ids,
        )?,
    };
    let dir = renew::round_dir(&args.out, round.round);
    if dir.join(crate::workflow::bundle::BUNDLE_JSON).exists() {
        return Err(format!(
            "{} is a device's bundle folder: give another --out for the renewal",
            dir.display()
        )
        .into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let key_password = match &args.csr_dir {
        Some(_) => None,
        None => args.run.key_password()?,
    };
    let dps = args.dps.resolve(global)?;
    let scope = id_scope(global, &dps, &group).await?;
    let services = RealServices::new(config::client(global)?, dps_options(&dps)?, scope.clone());
    let opts = batch_options(&args.run, &dir, &scope, &dps, !json, key_password)?;
    let number = round.round;
    let writer = JournalWriter::spawn(journal);
    let source = RenewSource {
        ca: std::sync::Arc::new(ca),
        leaf: Default::default(),
        csr_dir: round.csr_dir.clone(),
    };
    let stats = renew::run_round(
        writer.clone(),
        &round,
        services,
        source,
        opts,
        stop_on_ctrl_c(),
    )
    .await?;
    let rows = writer
        .read(move |j| ledger::round_renewals(j, number))
        .await?;
    let lines: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "deviceId": r.device_id,
                "state": r.state,
                "outcome": if r.state == RenewState::BundleWritten {
                    if stats.finished.contains(&r.device_id) { "renewed" } else { "skipped" }
                } else if r.error.is_some() { "failed" } else { "pending" },
                "reason": r.error.as_ref().filter(|_| r.state != RenewState::BundleWritten),
                "reregistered": r.holds_key == Some(true) && r.state == RenewState::BundleWritten,
            })
        })
        .collect();
    let done = rows
        .iter()
        .filter(|r| r.state == RenewState::BundleWritten)
        .count();
    let report = serde_json::json!({
        "round": round, "bundles": dir, "total": rows.len(), "renewed": done,
        "renewedThisRun": stats.completed, "failedThisRun": stats.failed,
        "interrupted": stats.interrupted, "devices": lines,
    });
    write_json(&dir.join("report.json"), &report)?;
    if json {
        output::print_json(&report)?;
    } else {
        println!(
            "round {}: {done} of {} device(s) renewed ({} this run, {} failed); bundles in {}",
            round.round,
            rows.len(),
            stats.completed,
            stats.failed,
            dir.display()
        );
        for r in rows
            .iter()
            .filter(|r| r.error.is_some() && r.state != RenewState::BundleWritten)
            .take(20)
        {
            println!(
                "  failed: {} ({})",
                r.device_id,
                r.error.as_deref().unwrap_or_default()
            );
        }
    }
    Ok(exit_code_of(done == rows.len()))
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, format!("{text}\n"))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

async fn revoke(args: RevokeArgs, global: &GlobalArgs) -> CliResult {
    let mut journal = Journal::open(&args.journal)?;
    let group = journal.meta().group_id.clone();
    let ca = match &args.ca {
        Some(p) => Some(load_ca(p, None, args.ca_password_file.as_deref())?),
        None => None,
    };
    let issuer_ca = match &args.issuer_ca {
        Some(p) => Some(load_ca(p, None, args.ca_password_file.as_deref())?),
        None => None,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        args.journal
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let stem = args
        .journal
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let certs = ledger::issued_certs(&journal)?;
    // The station's CA: the given one, else the certificate above the leaves in the chains.
    let chain_above: Vec<Vec<u8>> = certs
        .iter()
        .find_map(|c| {
            let v = crate::cert::parse_pem_certs(c.chain_pem.as_deref()?.as_bytes()).ok()?;
            (v.len() > 1).then(|| v[1..].to_vec())
        })
        .unwrap_or_default();
    let station_der = ca
        .as_ref()
        .map(|c| c.cert_der().to_vec())
        .or_else(|| chain_above.first().cloned());
    if issuer_ca.is_some() && station_der.is_none() {
        return Err(
            "--issuer-ca signs the CRL of the station's CA, but the journal's chains do not \
             hold it (its devices are signed by a root): give the station's CA with --ca"
                .into(),
        );
    }
    let station = station_der.as_deref().map(crate::cert::sha1_thumbprint);
    let mut above: Vec<String> = chain_above
        .iter()
        .skip(usize::from(ca.is_none()))
        .filter(|d| Some(d.as_slice()) != station_der.as_deref())
        .map(|d| crate::cert::sha1_thumbprint(d))
        .collect();
    if let Some(i) = &issuer_ca {
        above.push(sha1(i));
    }
    let client = config::client(global)?;
    let trust = match rollover::read_slots(&client, &group).await {
        Ok(slots) => revoke::trust(&slots, station.as_deref(), &above),
        Err(e) => revoke::Trust {
            still_accepts_stolen_ca: true,
            message: format!("cannot read what group {group} trusts: {e}"),
        },
    };
    let json = global.output == output::OutputFormat::Json;
    let planned = ledger::revocation_reason(&journal)?;
    let total = journal.counts()?.total;
    if !json {
        println!(
            "revoke: block {total} device(s) of {} (group {group}) in IoT Central{}",
            args.journal.display(),
            if planned.is_some() { ", resuming" } else { "" }
        );
        match &ca {
            Some(c) => println!(
                "  CRL of the devices' certificates, signed by {}",
                c.subject()
            ),
            None => println!(
                "  no CRL of the devices: give --ca (the station's CA) while its key is at hand"
            ),
        }
        match &issuer_ca {
            Some(c) => println!("  CRL of the station's CA, signed by {}", c.subject()),
            None => println!("  no CRL of the station's CA: give --issuer-ca (the CA above it)"),
        }
        println!("  {}", trust.message);
    }
    if args.dry_run {
        if json {
            output::print_json(
                &serde_json::json!({"dryRun": true, "devices": total, "trust": trust}),
            )?;
        } else {
            println!("dry run: nothing was done");
        }
        return Ok(EXIT_OK);
    }
    ledger::migrate(&mut journal)?;
    let reason_text = ledger::plan_revocation(&mut journal, args.reason.as_str())?;
    let reason: Reason = reason_text.parse().unwrap_or(args.reason);
    std::fs::create_dir_all(&out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut crls: Vec<CrlFile> = Vec::new();
    let mut serials: std::collections::HashMap<String, Vec<String>> = Default::default();
    if let Some(c) = &ca {
        let signed = revoke::serials_signed_by(&certs, c);
        for (id, s) in &signed {
            serials.entry(id.clone()).or_default().push(revoke::hex(s));
        }
        let list: Vec<Vec<u8>> = signed.into_iter().map(|(_, s)| s).collect();
        crls.push(
            revoke::write_crl(
                c,
                &list,
                reason,
                &out.join(format!("{stem}-devices.crl.pem")),
                "the devices' certificates",
            )
            .map_err(|e| e.message)?,
        );
    }
    if let (Some(i), Some(st)) = (&issuer_ca, &station_der) {
        crate::cert::verify_signed_by(st, i.cert_der())
            .map_err(|_| format!("--issuer-ca {} did not sign the station's CA", i.subject()))?;
        crls.push(
            revoke::write_crl(
                i,
                &[crate::cert::serial_of(st)?],
                Reason::CaCompromise,
                &out.join(format!("{stem}-ca.crl.pem")),
                "the station's CA",
            )
            .map_err(|e| e.message)?,
        );
    }
    let engine = args.engine.options(!json);
    let writer = JournalWriter::spawn(journal);
    let stats = revoke::run_revocation(
        writer.clone(),
        CentralBlocker(client),
        &engine,
        stop_on_ctrl_c(),
    )
    .await?;
    let rows = writer.read(ledger::all_revocations).await?;
    let lines = revoke::device_lines(&rows, &stats.finished, &serials);
    let blocked = lines
        .iter()
        .filter(|l| l.outcome == "blocked" || l.outcome == "absent")
        .count();
    let report_path = out.join(format!("{stem}-revocation.json"));
    let report = serde_json::json!({
        "group": group, "journal": args.journal, "reason": reason.as_str(),
        "total": lines.len(), "done": blocked, "blockedThisRun": stats.completed,
        "failedThisRun": stats.failed, "interrupted": stats.interrupted,
        "crls": crls, "trust": trust, "devices": lines,
    });
    write_json(&report_path, &report)?;
    if json {
        output::print_json(&report)?;
    } else {
        println!(
            "{blocked} of {} device(s) blocked ({} this run, {} failed); report {}",
            lines.len(),
            stats.completed,
            stats.failed,
            report_path.display()
        );
        for c in &crls {
            println!(
                "CRL of {} ({} entries): {}",
                c.revokes,
                c.entries,
                c.path.display()
            );
        }
        for l in lines.iter().filter(|l| l.outcome == "failed").take(20) {
            println!(
                "  failed: {} ({})",
                l.device_id,
                l.reason.as_deref().unwrap_or_default()
            );
        }
        println!("{}", trust.message);
    }
    Ok(if blocked == lines.len() {
        EXIT_OK
    } else {
        EXIT_PARTIAL
    })
}
