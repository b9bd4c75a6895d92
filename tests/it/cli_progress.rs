//! The progress bars of long work, seen the way a user sees them: the real binary on a
//! terminal (a pseudo-terminal made by util-linux `script`), since a bar is drawn only when
//! stderr is a terminal. Bulk certificates (`iotc cert device --count`) and a factory batch
//! (`iotc provision`) both show position, total, rate and ETA while they run, and still end
//! with their summary.

use crate::common_workflow;

use common_workflow::Emu;
use std::process::Command;

/// Runs `cmd` on a pseudo-terminal and returns everything it drew there.
fn on_a_terminal(cmd: Command) -> String {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let line: Vec<String> = std::iter::once(program)
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
        .collect();
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    let out = script
        .output()
        .expect("util-linux `script` runs (.ci/run installs bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    assert!(out.status.success(), "{text}");
    text
}

/// The bar lines: `<pos>/<total> devices`, with a rate and an ETA.
fn bar_lines(text: &str, total: u64) -> Vec<&str> {
    let needle = format!("/{total} devices");
    text.lines()
        .filter(|l| l.contains(&needle) && l.contains("/s") && l.to_lowercase().contains("eta"))
        .collect()
}

#[test]
fn bulk_certificates_draw_a_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let iotc = env!("CARGO_BIN_EXE_iotc");
    let ok = Command::new(iotc)
        .args(["cert", "root", "--name", "ca", "--out", "."])
        .arg("--no-password")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(ok.status.success());
    let mut cmd = Command::new(iotc);
    cmd.args(["cert", "device", "--count", "4000", "--prefix", "d-"])
        .args(["--ca", "ca", "--out", "out", "--no-password"])
        .current_dir(dir.path());
    let text = on_a_terminal(cmd);
    assert!(!bar_lines(&text, 4000).is_empty(), "no bar drawn:\n{text}");
    assert!(text.contains("wrote 4000 device bundle(s)"), "{text}");
}

#[test]
fn a_factory_batch_draws_a_bar_on_a_terminal() {
    let emu = Emu::start(None);
    emu.cmd()
        .args(["onboard", "x509", "--group", "line-p", "--ca", "pki/root"])
        .arg("--no-password")
        .assert()
        .success();
    // Every request delayed, so the batch lasts long enough for several frames.
    emu.settings(serde_json::json!({"dpsAssigningPolls": 0, "dpsRetryAfterSeconds": 0, "faults": {"latencyMs": 100}}));
    let mut cmd = emu.iotc();
    cmd.args(["provision", "--count", "24", "--prefix", "p-"])
        .args([
            "--journal",
            "p.journal",
            "--out",
            "out",
            "--group",
            "line-p",
        ])
        .args(["--ca", "pki/root", "--no-password", "--concurrency", "4"]);
    let text = on_a_terminal(cmd);
    assert!(!bar_lines(&text, 24).is_empty(), "no bar drawn:\n{text}");
    assert!(text.contains("24 of 24"), "{text}");
}
