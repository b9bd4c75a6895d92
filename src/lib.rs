//! iotc: X.509 enrollment and device provisioning for Azure IoT Central and its Device
//! Provisioning Service, plus a local emulator of both.
//!
//! The modules follow the flow of the work: [`cert`] makes and checks certificates,
//! [`central`] talks to the IoT Central REST API, [`dps`] registers devices,
//! [`workflow`] strings them together for onboarding and factory batches, and [`pkcs11`] signs
//! with keys held in a PKCS#11 token (CA keys for `cert`, device keys for `dps`). Those are the
//! library; they build with `default-features = false` and need no server and no command-line
//! parser. The `emulator` feature adds `emulator`, a local IoT Central + DPS that all of it is
//! tested against; the `cli` feature adds `cli`, the `iotc` command line (with `iotc demo`,
//! the one place that uses the workflow and the emulator together). Dependencies run one way:
//! `cli -> workflow -> {central, dps, cert} -> pkcs11`; the emulator reuses the wire models of
//! `central` and `dps` and the `cert` module, and nothing below the CLI names it.
//! `docs/architecture.md` draws the map and says where new work goes.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod central;
pub mod cert;
#[cfg(feature = "cli")]
pub mod cli;
pub mod dps;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod ids;
pub mod pkcs11;
pub mod secret;
pub mod workflow;

/// The dependency arrows of `docs/architecture.md`, checked on the source text so that a
/// wrong-way `use` fails here under every feature set, not only when a feature is off.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// The module paths `text` names below `crate::` or `iotc::`, each as its first segment:
    /// `crate::workflow::report` gives `workflow`; `crate::{cert, dps}` gives both.
    fn named_layers(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for root in ["crate::", "iotc::"] {
            for (at, _) in text.match_indices(root) {
                let rest = &text[at + root.len()..];
                let group = match rest.strip_prefix('{') {
                    Some(inner) => &inner[..inner.find('}').unwrap_or(inner.len())],
                    None => rest,
                };
                for item in group.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.push(name);
                    }
                }
            }
        }
        out
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// Every `(file, layer)` where a file under `src/` names a layer its own layer may not:
    /// `cli` anywhere outside `src/cli` and the crate root, `emulator` in the library layers.
    fn wrong_way(root: &Path) -> Vec<(String, String)> {
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let mut found = Vec::new();
        for file in files {
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let library = ["src/cert/", "src/central/", "src/dps/", "src/workflow/"]
                .iter()
                .any(|l| rel.starts_with(l))
                || rel == "src/ids.rs"
                || rel == "src/secret.rs";
            // The crate root only declares the modules (and holds this test's own samples).
            let top = rel == "src/main.rs" || rel == "src/lib.rs";
            let forbidden: &[&str] = if rel.starts_with("src/cli/") || top {
                &[]
            } else if library {
                &["cli", "emulator"]
            } else {
                &["cli"]
            };
            let text = std::fs::read_to_string(&file).unwrap();
            let mut named = named_layers(&text);
            named.sort();
            named.dedup();
            for layer in named
                .into_iter()
                .filter(|n| forbidden.contains(&n.as_str()))
            {
                found.push((rel.clone(), layer));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn finds_layers_in_paths_and_groups() {
        assert_eq!(named_layers("use crate::workflow::report;"), ["workflow"]);
        assert_eq!(
            named_layers("use crate::{cert, emulator::Emulator};"),
            ["cert", "emulator"]
        );
        assert_eq!(named_layers("iotc::cli::main()"), ["cli"]);
        assert!(named_layers("use super::client;").is_empty());
    }

    #[test]
    fn dependencies_only_run_down() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let found = wrong_way(root);
        assert!(
            found.is_empty(),
            "wrong-way dependencies (see docs/architecture.md): {found:?}"
        );
    }
}
