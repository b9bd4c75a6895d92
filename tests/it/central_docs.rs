//! docs/cli.md's command reference is generated from the clap definitions, and must stay
//! current; every IoT Central command has an example in its help.
//!
//! Regenerate with `IOTC_UPDATE_DOCS=1 cargo test --test it central_docs`.

use clap::CommandFactory;

const MARKER: &str = "<!-- generated from clap below this line: IOTC_UPDATE_DOCS=1 cargo test --test it central_docs -->";
const AREAS: &[&str] = &[
    "org",
    "role",
    "user",
    "api-token",
    "device",
    "device-group",
    "enrollment-group",
    "device-template",
    "config",
];

const GLOBALS: &[&str] = &["app", "token_file", "ca_file", "output", "profile", "auth"];

/// Env values are hidden (they depend on the shell running the test); below the root, the
/// global options are hidden too: they are documented once, with the root command.
fn prepare(cmd: clap::Command, root: bool) -> clap::Command {
    let cmd = cmd.mut_args(|a| {
        let global = GLOBALS.contains(&a.get_id().as_str());
        a.hide_env_values(true).hide(global && !root)
    });
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    names
        .into_iter()
        .fold(cmd, |cmd, n| cmd.mut_subcommand(n, |c| prepare(c, false)))
}

fn walk(cmd: &mut clap::Command, path: &str, out: &mut String, leaves: &mut Vec<(String, bool)>) {
    let help = cmd.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    out.push_str(&format!(
        "\n### `{path}`\n\n```text\n{}\n```\n",
        help.join("\n")
    ));
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .map(|s| s.get_name().to_owned())
        .collect();
    if subs.is_empty() {
        let has_example = cmd
            .get_after_help()
            .map(|h| h.to_string().contains("Example"))
            .unwrap_or(false);
        leaves.push((path.to_owned(), has_example));
    }
    for s in subs {
        let sub = cmd.find_subcommand_mut(&s).expect("subcommand");
        walk(sub, &format!("{path} {s}"), out, leaves);
    }
}

fn reference() -> (String, Vec<(String, bool)>) {
    let mut root = iotc::cli::Cli::command().term_width(100);
    root.build();
    let mut root = prepare(root, false);
    let mut out = String::new();
    // only the global options, so other areas' command lists do not leak in here
    let mut globals = <iotc::cli::GlobalArgs as clap::Args>::augment_args(
        clap::Command::new("iotc")
            .about("Options shared by every command that talks to IoT Central")
            .override_usage("iotc [GLOBAL OPTIONS] <COMMAND> ...")
            .disable_help_flag(true)
            .term_width(100),
    );
    globals = globals.mut_args(|a| a.hide_env_values(true));
    let help = globals.render_long_help().to_string();
    let help: Vec<&str> = help.lines().map(str::trim_end).collect();
    out.push_str(&format!(
        "\n## `iotc` (global options)\n\n```text\n{}\n```\n",
        help.join("\n")
    ));
    let mut leaves = Vec::new();
    for area in AREAS {
        out.push_str(&format!("\n## iotc {area}\n"));
        let cmd = root.find_subcommand_mut(area).expect("area exists");
        walk(cmd, &format!("iotc {area}"), &mut out, &mut leaves);
    }
    (out, leaves)
}

#[test]
fn every_iot_central_command_has_an_example() {
    let (_, leaves) = reference();
    assert!(leaves.len() > 40, "{}", leaves.len());
    let missing: Vec<_> = leaves
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| p)
        .collect();
    assert!(missing.is_empty(), "no example in: {missing:?}");
}

#[test]
fn docs_cli_md_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cli.md");
    let text = std::fs::read_to_string(&path).expect("docs/cli.md");
    let (head, _) = text
        .split_once(MARKER)
        .expect("docs/cli.md has the generated-reference marker");
    let (generated, _) = reference();
    let want = format!("{head}{MARKER}\n{generated}");
    if std::env::var_os("IOTC_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    assert!(
        text == want,
        "docs/cli.md is stale: run IOTC_UPDATE_DOCS=1 cargo test --test it central_docs"
    );
}
