//! CA rollover of an enrollment group against the emulator: the whole stage → promote →
//! retire with devices of the old and of the new CA registering with DPS after every single
//! state change (and the old CA's refused after retire), then the real `iotc rollover`
//! binary: plans, dry runs, reruns that do nothing, and refusals of a phase started from the
//! wrong state, each changing nothing.

use crate::common_workflow::Emu;
use iotc::cert::{Authority, CaOptions, LeafOptions};
use iotc::workflow::rollover::{self, Action};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Registers a brand-new device of `ca` with DPS; Ok when DPS assigned it.
fn register(emu: &Emu, ca: &Authority) -> Result<(), String> {
    let id = format!("rd-{}", NEXT.fetch_add(1, Ordering::SeqCst));
    let dev = ca
        .issue_device(&id.parse().unwrap(), &LeafOptions::default())
        .unwrap();
    let key = dev.key.as_ref().unwrap().pkcs8_pem();
    let identity =
        iotc::dps::X509Identity::from_pem(dev.chain_pem.as_bytes(), key.expose().as_bytes(), None)
            .unwrap();
    let client = iotc::dps::Client::new(
        emu.info.id_scope.parse().unwrap(),
        iotc::dps::Attestation::X509(identity),
        iotc::dps::ClientOptions {
            endpoint: emu.info.dps_endpoint.clone(),
            ca_pem: Some(std::fs::read(&emu.info.ca_cert).unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    emu.rt
        .block_on(client.register(&id.parse().unwrap(), None))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn cas(emu: &Emu) -> (Authority, Authority) {
    emu.cmd()
        .args([
            "onboard",
            "x509",
            "--group",
            "line",
            "--ca",
            "pki/old",
            "--no-password",
        ])
        .assert()
        .success();
    let old = Authority::load(&emu.path("pki/old"), None).unwrap();
    let new = Authority::new_root(&CaOptions {
        cn: Some("line 2026 root CA".into()),
        ..CaOptions::default()
    })
    .unwrap();
    iotc::cert::write_bundle(
        &emu.path("pki"),
        "new",
        new.issued(),
        &iotc::cert::WriteOptions::default(),
    )
    .unwrap();
    (old, new)
}

/// Runs a phase's plan action by action; after each, registers a new device of each CA and
/// checks DPS's answer against what that moment must accept.
fn run_checked(
    emu: &Emu,
    plan: &rollover::Plan,
    old: &Authority,
    new: &Authority,
    expect: impl Fn(usize, &Action) -> (bool, bool),
) {
    let client = emu.client();
    for (i, action) in plan.actions.iter().enumerate() {
        emu.rt
            .block_on(rollover::perform(
                &client,
                action,
                plan.from.group_type,
                Some(new),
                Some(old),
            ))
            .unwrap_or_else(|e| panic!("{}: {e}", action.describe()));
        let (want_old, want_new) = expect(i, action);
        let (got_old, got_new) = (register(emu, old), register(emu, new));
        assert_eq!(
            got_old.is_ok(),
            want_old,
            "after {:?} the old CA's device: {got_old:?}",
            action.describe()
        );
        assert_eq!(
            got_new.is_ok(),
            want_new,
            "after {:?} the new CA's device: {got_new:?}",
            action.describe()
        );
    }
}

fn slots(emu: &Emu) -> rollover::Slots {
    emu.rt
        .block_on(rollover::read_slots(&emu.client(), "line"))
        .unwrap()
}

fn sha1(ca: &Authority) -> String {
    iotc::cert::sha1_thumbprint(ca.cert_der())
}

#[test]
fn both_cas_register_after_every_call_of_stage_and_promote_and_only_the_new_after_retire() {
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    let (old, new) = cas(&emu);
    assert!(register(&emu, &old).is_ok());
    assert!(
        register(&emu, &new).is_err(),
        "the new CA is not trusted yet"
    );

    // Stage: the new CA's devices register once its proof of possession is done.
    let plan = rollover::plan_stage(&slots(&emu), &sha1(&new), false).unwrap();
    assert_eq!(plan.actions.len(), 2, "{plan:?}");
    run_checked(&emu, &plan, &old, &new, |_, a| {
        (true, matches!(a, Action::Prove { .. }))
    });

    // Promote: both CAs' devices register after every one of its calls.
    let plan = rollover::plan_promote(&slots(&emu), &sha1(&new), &sha1(&old), false).unwrap();
    assert_eq!(plan.actions.len(), 8, "{plan:?}");
    run_checked(&emu, &plan, &old, &new, |_, _| (true, true));
    let s = slots(&emu);
    assert_eq!(s.primary.as_ref().unwrap().sha1, sha1(&new));
    assert_eq!(s.secondary.as_ref().unwrap().sha1, sha1(&old));
    assert!(s.primary.unwrap().verified && s.secondary.unwrap().verified);
    assert!(s.bridge.is_none(), "the bridge group is gone");

    // Retire: the old CA's devices are refused from then on.
    let plan = rollover::plan_retire(&slots(&emu), &sha1(&new), &[], false).unwrap();
    run_checked(&emu, &plan, &old, &new, |_, _| (false, true));
    let e = register(&emu, &old).unwrap_err();
    assert!(e.contains("HTTP 401"), "{e}");
}

#[test]
fn the_cli_prints_plans_reruns_do_nothing_and_every_wrong_start_is_refused_unchanged() {
    let emu = Emu::start(None);
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0}));
    let (old, new) = cas(&emu);
    let phase = |args: &[&str]| {
        let mut c = emu.cmd();
        c.arg("rollover").args(args).args(["--group", "line"]);
        c.output().unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let refused = |args: &[&str], says: &str| {
        let before = slots(&emu);
        let o = phase(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
        assert_eq!(slots(&emu), before, "{args:?} changed nothing");
    };
    let promote = ["promote", "--ca", "pki/new", "--old-ca", "pki/old"];
    refused(&promote, "stage` first");
    refused(&["retire", "--ca", "pki/new"], "neither slot");

    // A dry run prints the plan and changes nothing.
    let before = slots(&emu);
    let o = phase(&["stage", "--ca", "pki/new", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("put the new CA into the secondary slot"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("dry run: nothing was done"),
        "{}",
        text(&o)
    );
    assert_eq!(slots(&emu), before);

    let o = phase(&["stage", "--ca", "pki/new"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("done: prove possession"), "{}", text(&o));
    let o = phase(&["stage", "--ca", "pki/new"]);
    assert!(
        text(&o).contains("nothing to do"),
        "a rerun does nothing: {}",
        text(&o)
    );
    refused(&["stage", "--ca", "pki/old"], "primary already");
    refused(&["retire", "--ca", "pki/new"], "promote` first");

    let o = phase(&promote);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("done: delete bridge group line-rollover"),
        "{}",
        text(&o)
    );
    let o = phase(&promote);
    assert!(text(&o).contains("promoted already"), "{}", text(&o));
    refused(
        &["stage", "--ca", "pki/new"],
        "next phase is `iotc rollover retire`",
    );

    // A journal whose devices chain only to the old CA holds retire back; --force overrides.
    emu.cmd()
        .args([
            "provision",
            "--count",
            "3",
            "--prefix",
            "od-",
            "--journal",
            "old.journal",
        ])
        .args([
            "--out",
            "out",
            "--group",
            "line",
            "--ca",
            "pki/old",
            "--no-password",
            "--no-progress",
        ])
        .assert()
        .success();
    refused(
        &["retire", "--ca", "pki/new", "--journal", "old.journal"],
        "3 device(s) of the journal(s)",
    );
    let o = phase(&[
        "retire",
        "--ca",
        "pki/new",
        "--journal",
        "old.journal",
        "--force",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let s = slots(&emu);
    assert!(s.secondary.is_none() && s.primary.unwrap().sha1 == sha1(&new));
    let o = phase(&["retire", "--ca", "pki/new"]);
    assert!(text(&o).contains("retired already"), "{}", text(&o));
    refused(&promote, "rollover is complete");
    assert!(register(&emu, &old).is_err());
}
