//! A string that must never reach a log, an error message or `Debug` output.
//!
//! Private keys, group keys, API tokens and SAS tokens travel through the code as [`Secret`],
//! so a stray `{:?}` or `tracing` field prints `[secret elided]` instead of the value. The
//! value is still serialized as a plain string, because the wire formats need it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// A secret string: serializes transparently, never prints, zeroed on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the one place that must use it (a header, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[secret elided]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Why a secret file gave no secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be read.
    #[error("could not read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// The file's first line is empty.
    #[error("{} is empty (the first line is the secret)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Reads the first line of a secret file (a password, token, key or PIN); an empty first line
/// is refused. The file's text is wiped from memory once the line is taken. A file that its
/// group or others may read is still used, with a warning that names the `chmod` to run (the
/// secret may already have leaked; refusing it would stop a line for a fix of one command).
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        SecretFileError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })?);
    if let Some(mode) = loose_mode(path) {
        tracing::warn!(
            "{} can be read by its group or others (mode {mode:03o}): it holds a secret, \
             run chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(Secret::new(line))
}

/// The permission bits of `path` when its group or others may read or write it.
#[cfg(unix)]
pub fn loose_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o066 != 0).then_some(mode)
}

/// The permission bits of `path` when its group or others may read or write it.
#[cfg(not(unix))]
pub fn loose_mode(_path: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn secret_files_take_the_first_line_and_name_a_loose_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw.txt");
        std::fs::write(&p, "hunter2\r\nsecond line\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "hunter2");
        assert_eq!(loose_mode(&p), None);
        for (mode, loose) in [(0o640, true), (0o604, true), (0o620, true), (0o400, false)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(loose_mode(&p), loose.then_some(mode), "mode {mode:o}");
        }
        std::fs::write(&p, "\nsecond line\n").unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(matches!(e, SecretFileError::Empty { .. }), "{e}");
        let e = read_secret_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("could not read"), "{e}");
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "[secret elided]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"hunter2\"");
    }
}
