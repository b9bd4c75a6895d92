//! Per-device credential bundles: the folder a device leaves the line with.
//!
//! `<out>/<deviceId>/` holds `<deviceId>_cert.pem`, `<deviceId>_key.pem` (mode 0600),
//! `<deviceId>_fullchain.pem` and optionally `<deviceId>.pfx` for an X.509 device, or
//! `<deviceId>_device_key.txt` (0600) for a symmetric-key device, or only the certificate and
//! the chain for a device that made its own key (a CSR batch), plus `bundle.json` with what
//! the device needs to connect (idScope, registrationId, assignedHub once DPS assigned one,
//! deviceId) and the SHA-256 of every file, so anyone can check later that the bundle is whole.
//!
//! A bundle appears whole or not at all: it is written in a hidden temporary folder next to
//! its final place, made durable, and only then renamed into place (and the rename made
//! durable). [`write()`] fsyncs every file and folder itself; a batch uses [`stage`] +
//! [`DiskSync`] + [`Staged::place`] instead, where one file-system sync covers every bundle
//! staged meanwhile (group commit), which is what lets a line write hundreds of bundles a
//! second on a disk where each flush costs a round trip to the device. Writing a bundle that
//! already exists with the same content is a no-op (that is how a resumed batch finishes a
//! device whose rename happened just before a crash); a different bundle in the same place is
//! refused, never overwritten.

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The name of the JSON description inside a bundle folder.
pub const BUNDLE_JSON: &str = "bundle.json";
/// Temporary bundle folders start with this.
const TMP_PREFIX: &str = ".tmp-bundle-";

/// A device's credential.
#[derive(Debug, Clone)]
pub enum Credential {
    /// Certificate and private key.
    X509 {
        /// The device certificate (PEM).
        cert_pem: String,
        /// The private key (PKCS#8 PEM, possibly encrypted).
        key_pem: Secret,
        /// Leaf + intermediates (PEM), what the device presents in TLS.
        fullchain_pem: String,
        /// Optional PKCS#12 of key + chain.
        pfx: Option<Vec<u8>>,
    },
    /// A symmetric key derived from the group key.
    SymmetricKey {
        /// The device key (base64).
        device_key: Secret,
    },
    /// A certificate for a key the device made and keeps (a CSR batch): no key here.
    Certificate {
        /// The device certificate (PEM).
        cert_pem: String,
        /// Leaf + intermediates (PEM).
        fullchain_pem: String,
        /// SHA-256 of the CSR it answers, lowercase hex.
        csr_sha256: String,
    },
}

/// What goes into a bundle.
#[derive(Debug, Clone)]
pub struct BundleContents {
    /// The IoT Central device id.
    pub device_id: String,
    /// The DPS registration id.
    pub registration_id: String,
    /// The DPS ID scope.
    pub id_scope: String,
    /// The hub DPS assigned (none when the device registers itself later).
    pub assigned_hub: Option<String>,
    /// The DPS endpoint the device should use.
    pub dps_endpoint: Option<String>,
    /// SHA-1 thumbprint of the device certificate, as IoT Central shows it.
    pub cert_sha1_thumbprint: Option<String>,
    /// The credential.
    pub credential: Credential,
}

/// One file of a bundle, as `bundle.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// File name inside the bundle folder.
    pub name: String,
    /// SHA-256 of its content, lowercase hex.
    pub sha256: String,
}

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleJson {
    /// The IoT Central device id.
    pub device_id: String,
    /// The DPS registration id.
    pub registration_id: String,
    /// The DPS ID scope.
    pub id_scope: String,
    /// The hub DPS assigned (absent when the device registers itself later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    /// The DPS endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dps_endpoint: Option<String>,
    /// `x509` or `symmetricKey`.
    pub attestation: String,
    /// SHA-1 thumbprint of the device certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha1_thumbprint: Option<String>,
    /// A device that made its own key: SHA-256 of the CSR its certificate answers (lowercase
    /// hex); the bundle then holds no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csr_sha256: Option<String>,
    /// The files, by role (`cert`, `key`, `fullchain`, `pfx`, `deviceKey`).
    pub files: BTreeMap<String, FileEntry>,
}

/// Writing or checking a bundle failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file operation failed.
    #[error("bundle {path}: {op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A different bundle already exists for this device.
    #[error("bundle {0} already exists with different content; refusing to overwrite it")]
    Conflict(PathBuf),
    /// The bundle on disk is incomplete or altered.
    #[error("bundle {path} is damaged: {reason}")]
    Damaged {
        /// The bundle folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The device id cannot name a folder.
    #[error("device id {0:?} cannot be used as a folder name")]
    BadName(String),
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The folder of a device's bundle.
pub fn bundle_dir(out: &Path, device_id: &str) -> PathBuf {
    out.join(device_id)
}

/// The files of a bundle: (role, file name, content, private).
fn files_of(c: &BundleContents) -> Vec<(&'static str, String, Vec<u8>, bool)> {
    let id = &c.device_id;
    match &c.credential {
        Credential::X509 {
            cert_pem,
            key_pem,
            fullchain_pem,
            pfx,
        } => {
            let mut v = vec![
                (
                    "cert",
                    format!("{id}_cert.pem"),
                    cert_pem.as_bytes().to_vec(),
                    false,
                ),
                (
                    "key",
                    format!("{id}_key.pem"),
                    key_pem.expose().as_bytes().to_vec(),
                    true,
                ),
                (
                    "fullchain",
                    format!("{id}_fullchain.pem"),
                    fullchain_pem.as_bytes().to_vec(),
                    false,
                ),
            ];
            if let Some(pfx) = pfx {
                v.push(("pfx", format!("{id}.pfx"), pfx.clone(), true));
            }
            v
        }
        Credential::Certificate {
            cert_pem,
            fullchain_pem,
            ..
        } => vec![
            (
                "cert",
                format!("{id}_cert.pem"),
                cert_pem.as_bytes().to_vec(),
                false,
            ),
            (
                "fullchain",
                format!("{id}_fullchain.pem"),
                fullchain_pem.as_bytes().to_vec(),
                false,
            ),
        ],
        Credential::SymmetricKey { device_key } => vec![(
            "deviceKey",
            format!("{id}_device_key.txt"),
            format!("{}\n", device_key.expose()).into_bytes(),
            true,
        )],
    }
}

/// The `bundle.json` for these contents.
pub fn describe(c: &BundleContents) -> BundleJson {
    let files = files_of(c)
        .into_iter()
        .map(|(role, name, data, _)| {
            (
                role.to_owned(),
                FileEntry {
                    name,
                    sha256: hex_sha256(&data),
                },
            )
        })
        .collect();
    BundleJson {
        device_id: c.device_id.clone(),
        registration_id: c.registration_id.clone(),
        id_scope: c.id_scope.clone(),
        assigned_hub: c.assigned_hub.clone(),
        dps_endpoint: c.dps_endpoint.clone(),
        attestation: match c.credential {
            Credential::X509 { .. } | Credential::Certificate { .. } => "x509".into(),
            Credential::SymmetricKey { .. } => "symmetricKey".into(),
        },
        cert_sha1_thumbprint: c.cert_sha1_thumbprint.clone(),
        csr_sha256: match &c.credential {
            Credential::Certificate { csr_sha256, .. } => Some(csr_sha256.clone()),
            _ => None,
        },
        files,
    }
}

fn write_file(path: &Path, data: &[u8], private: bool, fsync: bool) -> Result<(), BundleError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = options.open(path).map_err(io("create", path))?;
    f.write_all(data).map_err(io("write", path))?;
    if fsync {
        f.sync_all().map_err(io("fsync", path))?;
    }
    Ok(())
}

fn sync_dir(path: &Path) -> Result<(), BundleError> {
    #[cfg(unix)]
    std::fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", path))?;
    Ok(())
}

/// What [`write()`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The bundle was written now.
    New,
    /// An identical bundle was already there.
    AlreadyThere,
}

/// Whether two descriptions are the same bundle. A PKCS#12 file and an encrypted key are
/// encrypted with random salts, so they differ each time they are made: they are left out of
/// the comparison (an encrypted key only when a certificate, which binds the key, is compared).
fn same_credential(a: &BundleJson, b: &BundleJson, key_encrypted: bool) -> bool {
    let strip = |j: &BundleJson| {
        let mut j = j.clone();
        j.files.remove("pfx");
        if key_encrypted && j.files.contains_key("cert") {
            j.files.remove("key");
        }
        j
    };
    strip(a) == strip(b)
}

fn key_encrypted(contents: &BundleContents) -> bool {
    matches!(&contents.credential, Credential::X509 { key_pem, .. }
        if key_pem.expose().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"))
}

/// A bundle written in full in its hidden temporary folder, not yet in place. Dropping it
/// without [`Staged::place`] removes the temporary folder.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    placed: bool,
}

impl Staged {
    /// Renames the temporary folder into place. The rename itself is durable only after the
    /// next sync of the folder (`DiskSync::flush`, or fsync of `out`).
    pub fn place(mut self) -> Result<(), BundleError> {
        std::fs::rename(&self.tmp, &self.dest).map_err(io("rename", &self.dest))?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// What [`stage`] found or made.
#[derive(Debug)]
pub enum Prepared {
    /// The bundle is in its temporary folder.
    Staged(Staged),
    /// An identical bundle was already in place.
    AlreadyThere,
}

/// Writes the bundle's files into a hidden temporary folder next to `out/<deviceId>/`.
///
/// With `fsync_each` every file and the folder are fsynced before this returns; without it
/// the caller must make them durable (a [`DiskSync::flush`]) before [`Staged::place`].
/// An identical bundle already in place is [`Prepared::AlreadyThere`]; a different one is
/// refused ([`BundleError::Conflict`]).
pub fn stage(
    out: &Path,
    contents: &BundleContents,
    fsync_each: bool,
) -> Result<Prepared, BundleError> {
    let id = &contents.device_id;
    if id.is_empty() || id.starts_with('.') || id.contains(['/', '\\']) {
        return Err(BundleError::BadName(id.clone()));
    }
    let dest = bundle_dir(out, id);
    let json = describe(contents);
    if dest.exists() {
        return match check(&dest) {
            Ok(existing) if same_credential(&existing, &json, key_encrypted(contents)) => {
                Ok(Prepared::AlreadyThere)
            }
            _ => Err(BundleError::Conflict(dest)),
        };
    }
    std::fs::create_dir_all(out).map_err(io("create folder", out))?;
    let tmp = out.join(format!(
        "{TMP_PREFIX}{id}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir(&tmp).map_err(io("create folder", &tmp))?;
    // From here on, dropping `staged` removes the temporary folder.
    let staged = Staged {
        tmp,
        dest,
        placed: false,
    };
    for (_, name, data, private) in files_of(contents) {
        write_file(&staged.tmp.join(name), &data, private, fsync_each)?;
    }
    let text = serde_json::to_vec_pretty(&json).map_err(|e| BundleError::Io {
        op: "serialize",
        path: staged.tmp.clone(),
        source: std::io::Error::other(e),
    })?;
    write_file(&staged.tmp.join(BUNDLE_JSON), &text, false, fsync_each)?;
    if fsync_each {
        sync_dir(&staged.tmp)?;
    }
    Ok(Prepared::Staged(staged))
}

/// Writes a device's bundle atomically and durably into `out/<deviceId>/`, fsyncing each file
/// and folder itself (a batch groups that work with [`stage`] and [`DiskSync`]).
pub fn write(out: &Path, contents: &BundleContents) -> Result<Written, BundleError> {
    match stage(out, contents, true)? {
        Prepared::AlreadyThere => Ok(Written::AlreadyThere),
        Prepared::Staged(staged) => {
            staged.place()?;
            sync_dir(out)?;
            Ok(Written::New)
        }
    }
}

/// Group flush for bundle folders: [`DiskSync::flush`] returns once a sync of the whole file
/// system holding `out`, started after the call, has finished, so everything written before
/// the call is on disk. Callers that arrive together share one sync (on Linux, `syncfs`;
/// elsewhere an fsync of `out`, with the files fsynced by [`stage`] itself: see
/// [`DiskSync::needs_fsync_each`]).
#[derive(Debug, Clone)]
pub struct DiskSync {
    tx: tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Sender<Result<(), String>>>,
    out: PathBuf,
}

impl DiskSync {
    /// Starts the syncing task for the file system of `out` (which need not exist yet). Must
    /// be called inside a Tokio runtime.
    pub fn spawn(out: &Path) -> DiskSync {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<
            tokio::sync::oneshot::Sender<Result<(), String>>,
        >();
        let dir = out.to_path_buf();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(more) = rx.try_recv() {
                    waiters.push(more);
                }
                let dir = dir.clone();
                let result = tokio::task::spawn_blocking(move || sync_file_system(&dir))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                for w in waiters {
                    let _ = w.send(result.clone());
                }
            }
        });
        DiskSync {
            tx,
            out: out.to_path_buf(),
        }
    }

    /// Whether [`stage`] must fsync each file itself (platforms without `syncfs`).
    pub fn needs_fsync_each() -> bool {
        !cfg!(target_os = "linux")
    }

    /// Waits until everything written before this call is durable.
    pub async fn flush(&self) -> Result<(), BundleError> {
        let err = |reason: String| BundleError::Io {
            op: "sync",
            path: self.out.clone(),
            source: std::io::Error::other(reason),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(tx)
            .map_err(|_| err("the sync task has stopped".into()))?;
        rx.await
            .map_err(|_| err("the sync task has stopped".into()))?
            .map_err(err)
    }
}

/// One durable point for everything written so far on the file system of `dir`.
fn sync_file_system(dir: &Path) -> std::io::Result<()> {
    let handle = std::fs::File::open(dir)?;
    #[cfg(target_os = "linux")]
    {
        // syncfs reports writeback errors of the file system since Linux 5.8.
        rustix::fs::syncfs(&handle)?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    handle.sync_all()
}

/// Checks that a bundle folder is whole: `bundle.json` parses and every file it lists is
/// there with the recorded SHA-256 (and private files are not readable by others).
pub fn check(dir: &Path) -> Result<BundleJson, BundleError> {
    let damaged = |reason: String| BundleError::Damaged {
        path: dir.to_owned(),
        reason,
    };
    let json_path = dir.join(BUNDLE_JSON);
    let text = std::fs::read(&json_path).map_err(|e| damaged(format!("{BUNDLE_JSON}: {e}")))?;
    let json: BundleJson =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("{BUNDLE_JSON}: {e}")))?;
    if json.files.is_empty() {
        return Err(damaged("no credential file listed".into()));
    }
    for (role, entry) in &json.files {
        let path = dir.join(&entry.name);
        let data = std::fs::read(&path).map_err(|e| damaged(format!("{}: {e}", entry.name)))?;
        if hex_sha256(&data) != entry.sha256 {
            return Err(damaged(format!(
                "{} does not match its SHA-256",
                entry.name
            )));
        }
        #[cfg(unix)]
        if matches!(role.as_str(), "key" | "pfx" | "deviceKey") {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .map_err(|e| damaged(format!("{}: {e}", entry.name)))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(damaged(format!(
                    "{} is readable by others (mode {:o})",
                    entry.name,
                    mode & 0o777
                )));
            }
        }
        #[cfg(not(unix))]
        let _ = role;
    }
    Ok(json)
}

/// Removes temporary folders a crash left in `out` (they never hold a finished bundle).
pub fn clean_temporaries(out: &Path) -> Result<usize, BundleError> {
    let entries = match std::fs::read_dir(out) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list", out)(e)),
    };
    let mut n = 0;
    for entry in entries {
        let entry = entry.map_err(io("list", out))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            std::fs::remove_dir_all(entry.path()).map_err(io("remove", &entry.path()))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x509(id: &str, key: &str) -> BundleContents {
        BundleContents {
            device_id: id.into(),
            registration_id: id.into(),
            id_scope: "0ne0000TEST".into(),
            assigned_hub: Some("hub.example".into()),
            dps_endpoint: Some("https://127.0.0.1:1".into()),
            cert_sha1_thumbprint: Some("AB".into()),
            credential: Credential::X509 {
                cert_pem: "CERT\n".into(),
                key_pem: Secret::new(key),
                fullchain_pem: "CERT\nCA\n".into(),
                pfx: Some(vec![1, 2, 3]),
            },
        }
    }

    #[test]
    fn a_bundle_is_written_whole_and_checks() {
        let out = tempfile::tempdir().unwrap();
        assert_eq!(
            write(out.path(), &x509("dev-1", "KEY")).unwrap(),
            Written::New
        );
        let dir = out.path().join("dev-1");
        let json = check(&dir).unwrap();
        assert_eq!(json.device_id, "dev-1");
        assert_eq!(json.id_scope, "0ne0000TEST");
        assert_eq!(json.attestation, "x509");
        assert_eq!(json.files["key"].name, "dev-1_key.pem");
        assert_eq!(
            std::fs::read_to_string(dir.join("dev-1_key.pem")).unwrap(),
            "KEY"
        );
        let raw: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(BUNDLE_JSON)).unwrap()).unwrap();
        for k in ["idScope", "registrationId", "assignedHub", "deviceId"] {
            assert!(raw.get(k).is_some(), "{k} in bundle.json");
        }
        assert!(
            !raw.to_string().contains("KEY\""),
            "no secret in bundle.json"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode("dev-1_key.pem"), 0o600);
            assert_eq!(mode("dev-1.pfx"), 0o600);
            assert_eq!(mode("dev-1_cert.pem"), 0o644);
        }
        // No temporary folder is left behind.
        let names: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("dev-1")]);
    }

    #[test]
    fn rewriting_is_a_no_op_and_a_different_bundle_is_refused() {
        let out = tempfile::tempdir().unwrap();
        write(out.path(), &x509("d", "KEY")).unwrap();
        assert_eq!(
            write(out.path(), &x509("d", "KEY")).unwrap(),
            Written::AlreadyThere
        );
        assert!(matches!(
            write(out.path(), &x509("d", "OTHER KEY")),
            Err(BundleError::Conflict(_))
        ));
        // A PKCS#12 is salted anew each time it is made: not a conflict on its own.
        let mut again = x509("d", "KEY");
        if let Credential::X509 { pfx, .. } = &mut again.credential {
            *pfx = Some(vec![9, 9, 9]);
        }
        assert_eq!(write(out.path(), &again).unwrap(), Written::AlreadyThere);
        assert_eq!(
            std::fs::read_to_string(out.path().join("d/d_key.pem")).unwrap(),
            "KEY"
        );
    }

    #[test]
    fn damage_is_detected() {
        let out = tempfile::tempdir().unwrap();
        write(out.path(), &x509("d", "KEY")).unwrap();
        let dir = out.path().join("d");
        std::fs::write(dir.join("d_cert.pem"), "tampered").unwrap();
        let e = check(&dir).unwrap_err().to_string();
        assert!(e.contains("d_cert.pem"), "{e}");
        // A damaged bundle is a conflict, not silently accepted.
        assert!(matches!(
            write(out.path(), &x509("d", "KEY")),
            Err(BundleError::Conflict(_))
        ));
        std::fs::remove_file(dir.join(BUNDLE_JSON)).unwrap();
        assert!(check(&dir).is_err());
    }

    #[test]
    fn symmetric_key_bundles_and_temporaries() {
        let out = tempfile::tempdir().unwrap();
        let c = BundleContents {
            credential: Credential::SymmetricKey {
                device_key: Secret::new("c2VjcmV0"),
            },
            cert_sha1_thumbprint: None,
            ..x509("s1", "")
        };
        write(out.path(), &c).unwrap();
        let json = check(&out.path().join("s1")).unwrap();
        assert_eq!(json.attestation, "symmetricKey");
        assert_eq!(
            std::fs::read_to_string(out.path().join("s1/s1_device_key.txt")).unwrap(),
            "c2VjcmV0\n"
        );
        std::fs::create_dir(out.path().join(".tmp-bundle-x-1-2")).unwrap();
        assert_eq!(clean_temporaries(out.path()).unwrap(), 1);
        assert!(out.path().join("s1").exists());
        assert!(matches!(
            write(out.path(), &x509("../evil", "K")),
            Err(BundleError::BadName(_))
        ));
    }

    #[tokio::test]
    async fn staged_bundles_appear_only_when_placed_and_vanish_when_dropped() {
        let out = tempfile::tempdir().unwrap();
        let disk = DiskSync::spawn(out.path());
        let a = match stage(out.path(), &x509("a1", "KEY-A"), false).unwrap() {
            Prepared::Staged(s) => s,
            Prepared::AlreadyThere => panic!("nothing was there"),
        };
        let b = match stage(out.path(), &x509("b1", "KEY-B"), false).unwrap() {
            Prepared::Staged(s) => s,
            Prepared::AlreadyThere => panic!("nothing was there"),
        };
        // Before placing, nothing is visible under the devices' names.
        assert!(!out.path().join("a1").exists());
        let (r1, r2) = tokio::join!(disk.flush(), disk.flush());
        r1.unwrap();
        r2.unwrap();
        a.place().unwrap();
        disk.flush().await.unwrap();
        check(&out.path().join("a1")).unwrap();
        // A staged bundle that is never placed leaves nothing behind.
        drop(b);
        let left: Vec<_> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["a1"]);
        // Staging the same bundle again finds it; a different one is refused.
        assert!(matches!(
            stage(out.path(), &x509("a1", "KEY-A"), false).unwrap(),
            Prepared::AlreadyThere
        ));
        assert!(matches!(
            stage(out.path(), &x509("a1", "OTHER"), false),
            Err(BundleError::Conflict(_))
        ));
    }
}
