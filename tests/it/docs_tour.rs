//! The README's tour and the runnable blocks of `docs/*.md` run exactly as written.
//!
//! A newcomer types the README's commands as they stand; when a flag is renamed or a step
//! is missing, the docs fail them before the tool does. So the blocks are run here literally,
//! and this rule decides which:
//!
//! - `README.md`: every ```` ```sh ```` block, in order, in one shell (each block carries on from
//!   the one before), except the blocks of the section "## Set up on a fresh machine": those
//!   build and test this very checkout with cargo, which the test suite running this test
//!   already does.
//! - `docs/*.md`: the ```` ```sh ```` blocks whose fence line comes right after a line
//!   `<!-- runnable -->`, in order, one shell per file. Before them the shell does what the
//!   README teaches to point the client at an emulator ([`EMULATOR_PREAMBLE`]).
//!
//! Each shell is `bash` with `set -euo pipefail`, so every command must exit 0 (a block that
//! expects another exit code says so in shell: `cmd || test $? -eq 1`). It runs in a new
//! temporary folder, with `PATH` starting at the folder of the `iotc` binary cargo built for
//! this test, `HOME` and `IOTC_CONFIG` inside that folder, and no other variable of the test's
//! environment (no `IOTC_*` leaks in). It is its own process group, killed at the end, so an
//! emulator that a block starts in the background never outlives the test.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// What the shell runs before the runnable blocks of a `docs/*.md` page: an emulator of its
/// own and a default profile for it, the two steps of the README's tour.
const EMULATOR_PREAMBLE: &str = "iotc emulator --data-dir emu > /dev/null &\n\
                                 iotc config set docs --emulator emu --default\n";

/// The README section whose blocks are not run.
const SETUP_SECTION: &str = "## Set up on a fresh machine";

/// The line that marks the next block of a `docs/*.md` page as runnable.
const RUNNABLE: &str = "<!-- runnable -->";

/// A ```` ```sh ```` block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// The `## ` heading the block is under ("" before the first one).
    section: String,
    /// Whether the line before the fence is [`RUNNABLE`].
    marked: bool,
    /// The block's text.
    text: String,
    /// Line number of its fence (1-based).
    line: usize,
}

fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut previous = "";
    let mut lines = markdown.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.starts_with("## ") {
            section = line.trim_end().to_owned();
        }
        if line.trim_end() == "```sh" {
            let mut text = String::new();
            for (_, body) in lines.by_ref() {
                if body.trim_end() == "```" {
                    break;
                }
                text.push_str(body);
                text.push('\n');
            }
            blocks.push(Block {
                section: section.clone(),
                marked: previous.trim() == RUNNABLE,
                text,
                line: n + 1,
            });
            previous = "";
            continue;
        }
        if !line.trim().is_empty() {
            previous = line;
        }
    }
    blocks
}

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README blocks that run (by the rule above), and the ones that do not.
fn readme_blocks() -> (Vec<Block>, Vec<Block>) {
    sh_blocks(&repo_file("README.md"))
        .into_iter()
        .partition(|b| b.section != SETUP_SECTION)
}

/// What a shell run left: its exit code (None: killed at the deadline) and its output.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    dir: tempfile::TempDir,
}

impl Run {
    fn explain(&self, name: &str) -> String {
        let tail = |s: &str| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "{name}: exit {:?}\n--- stdout (end) ---\n{}\n--- stderr with the trace (end) ---\n{}",
            self.code,
            tail(&self.stdout),
            tail(&self.stderr)
        )
    }
}

/// Runs `script` the way the rule says, within `limit`.
fn run_script(script: &str, limit: Duration) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let home = dir.path().join("home");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_iotc"));
    let bin_dir = bin.parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    );
    let script_path = dir.path().join("blocks.sh");
    // The trace (-x) goes to stderr: a failure shows the command that failed.
    std::fs::write(&script_path, format!("set -euxo pipefail\n{script}")).unwrap();
    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut cmd = Command::new("bash");
    cmd.arg(&script_path)
        .current_dir(&work)
        .env_clear()
        .env("PATH", path)
        .env("HOME", &home)
        .env("IOTC_CONFIG", home.join("config.json"))
        .env("LANG", "C.UTF-8")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().expect("bash runs");
    let group = child.id();
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the blocks left running (the emulator) goes with the shell's process group.
    for signal in ["-TERM", "-KILL"] {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{group}")])
            .stderr(std::process::Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = child.wait();
    Run {
        code,
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
        dir,
    }
}

fn joined(blocks: &[Block]) -> String {
    blocks
        .iter()
        .map(|b| format!("# --- block at line {} ({})\n{}", b.line, b.section, b.text))
        .collect()
}

#[test]
fn the_blocks_left_out_of_the_readme_run_are_the_cargo_setup_and_only_those() {
    let (run, skipped) = readme_blocks();
    assert!(run.len() >= 4, "the tour has its blocks: {run:?}");
    assert!(!skipped.is_empty(), "the setup section exists");
    for b in &skipped {
        assert!(
            b.text.lines().any(|l| l.starts_with("cargo ")),
            "a block of {SETUP_SECTION} that is not a cargo command would never run: {b:?}"
        );
    }
    for b in &run {
        assert!(
            !b.text.lines().any(|l| l.starts_with("cargo ")),
            "a cargo command outside {SETUP_SECTION} would rebuild the checkout: {b:?}"
        );
    }
}

#[test]
fn the_readme_tour_runs_as_written() {
    let (blocks, _) = readme_blocks();
    let run = run_script(&joined(&blocks), Duration::from_secs(600));
    assert_eq!(run.code, Some(0), "{}", run.explain("README.md"));
    // It did what it says, not merely exit 0: the devices have their bundles and DPS answered.
    let work = run.dir.path().join("work");
    for id in ["dev-01", "dev-10", "sn-0001", "sn-0002"] {
        let bundle = work.join("bundles").join(id).join("bundle.json");
        assert!(bundle.is_file(), "{} missing", bundle.display());
    }
    assert!(
        run.stdout.contains("assigned"),
        "{}",
        run.explain("README.md")
    );
}

#[test]
fn the_runnable_blocks_of_the_docs_run_as_written() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    let mut ran = Vec::new();
    for page in pages {
        let name = format!("docs/{}", page.file_name().unwrap().to_string_lossy());
        let blocks: Vec<Block> = sh_blocks(&repo_file(&name))
            .into_iter()
            .filter(|b| b.marked)
            .collect();
        if blocks.is_empty() {
            continue;
        }
        let run = run_script(
            &format!("{EMULATOR_PREAMBLE}{}", joined(&blocks)),
            Duration::from_secs(600),
        );
        assert_eq!(run.code, Some(0), "{}", run.explain(&name));
        ran.push((name, blocks.len()));
    }
    let pages: Vec<&str> = ran.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        pages.contains(&"docs/cert.md") && pages.contains(&"docs/factory.md"),
        "the runnable pages ran: {ran:?}"
    );
}

#[test]
fn a_block_with_a_failing_command_fails_the_run() {
    // The runner itself must be able to fail: a flag the tool does not have, a failure early
    // in a block that ends well, and a failure hidden in a pipe each end the run with it.
    for (script, after) in [
        (
            "iotc cert root --name root --out certs --no-password --no-such-flag\n",
            "",
        ),
        ("iotc cert inspect missing.pem\necho AFTER\n", "AFTER"),
        ("iotc cert inspect missing.pem | cat\necho AFTER\n", "AFTER"),
    ] {
        let run = run_script(script, Duration::from_secs(60));
        assert!(run.code.is_some_and(|c| c != 0), "{}", run.explain(script));
        if !after.is_empty() {
            assert!(!run.stdout.contains(after), "{}", run.explain(script));
        }
    }
}

#[test]
fn an_emulator_started_by_the_blocks_does_not_outlive_them() {
    let run = run_script(
        &format!("{EMULATOR_PREAMBLE}cat emu/emulator.json > /dev/null\n"),
        Duration::from_secs(120),
    );
    assert_eq!(run.code, Some(0), "{}", run.explain("preamble"));
    let ready = std::fs::read_to_string(run.dir.path().join("work/emu/emulator.json")).unwrap();
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let addr = ready["apiUrl"]
        .as_str()
        .unwrap()
        .trim_start_matches("https://")
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the emulator at {addr} still runs"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
