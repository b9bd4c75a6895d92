//! Writing a certificate bundle to disk: PEM, encrypted PKCS#8, PKCS#12 — atomically.
//!
//! A bundle is `<name>_cert.pem`, `<name>_key.pem` (PKCS#8, mode 0600, encrypted unless no
//! password is given), `<name>_fullchain.pem` (leaf + intermediates, nothing else) and, on
//! request, `<name>.pfx` (key + leaf + chain, PBES2/AES-256 with HMAC-SHA256 MAC, the OpenSSL 3
//! default format). A CA whose key stays in a PKCS#11 token has no key file: its
//! `<name>_key.uri` holds the key's URI instead (no PIN; not a secret). Every file is first written in full where nobody sees it (an anonymous
//! `O_TMPFILE` inode on Linux, else a temporary file in the target folder) and only then given
//! its name (`linkat`, or a rename), so a failure never leaves a half-written file. Existing
//! files are refused unless `force` is set (and without `force` the naming step itself refuses
//! to clobber a file that appeared meanwhile).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::key::DEFAULT_KDF_ITERATIONS;
use super::{parse_pem_certs, CertError, Issued};
use crate::secret::Secret;

/// How to write a bundle.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Password for the key file and the PFX; `None` writes an unencrypted key (and no PFX).
    pub password: Option<Secret>,
    /// Also write `<name>.pfx` (needs a password).
    pub pfx: bool,
    /// Overwrite existing files.
    pub force: bool,
    /// PBKDF2 iterations for the encrypted key.
    pub kdf_iterations: u32,
    /// Write `<name>_fullchain.pem`.
    pub fullchain: bool,
    /// Write `<name>_key.uri` with this URI: the key is in a PKCS#11 token.
    pub key_uri: Option<crate::pkcs11::KeyUri>,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            password: None,
            pfx: false,
            force: false,
            kdf_iterations: DEFAULT_KDF_ITERATIONS,
            fullchain: true,
            key_uri: None,
        }
    }
}

/// The files a bundle was written to.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WrittenFiles {
    /// `<name>_cert.pem`.
    pub cert: PathBuf,
    /// `<name>_key.pem`, when the bundle has a key.
    pub key: Option<PathBuf>,
    /// `<name>_fullchain.pem`.
    pub fullchain: Option<PathBuf>,
    /// `<name>.pfx`.
    pub pfx: Option<PathBuf>,
    /// `<name>_key.uri`, when the key is in a token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_uri: Option<PathBuf>,
}

/// Checks that `name` is usable as a file-name stem.
pub fn check_bundle_name(name: &str) -> Result<(), CertError> {
    let bad = |reason: &str| CertError::InvalidBundleName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() {
        return Err(bad("must not be empty"));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\\') {
        return Err(bad("must be a plain file name, not a path"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(bad("contains a control character"));
    }
    Ok(())
}

/// The file paths of bundle `name` in `dir`: (cert, key, fullchain, pfx, key URI).
pub fn bundle_paths(dir: &Path, name: &str) -> [PathBuf; 5] {
    [
        dir.join(format!("{name}_cert.pem")),
        dir.join(format!("{name}_key.pem")),
        dir.join(format!("{name}_fullchain.pem")),
        dir.join(format!("{name}.pfx")),
        dir.join(format!("{name}_key.uri")),
    ]
}

/// Builds a PKCS#12 file: the key with the leaf and the rest of `chain_pem`, `password`.
pub fn pkcs12(issued: &Issued, friendly_name: &str, password: &str) -> Result<Vec<u8>, CertError> {
    let err = |e: &dyn std::fmt::Display| CertError::Pkcs12 {
        reason: e.to_string(),
    };
    let key = issued.key.as_ref().ok_or_else(|| CertError::Pkcs12 {
        reason: "no private key (a signed CSR has none)".into(),
    })?;
    let mut certs =
        vec![p12_keystore::Certificate::from_der(&issued.cert_der).map_err(|e| err(&e))?];
    for der in parse_pem_certs(issued.chain_pem.as_bytes())? {
        if der != issued.cert_der {
            certs.push(p12_keystore::Certificate::from_der(&der).map_err(|e| err(&e))?);
        }
    }
    let pk = p12_keystore::PrivateKey::from_der(key.pkcs8_der()).map_err(|e| err(&e))?;
    let local_id = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(
        &issued.cert_der,
    ))
    .to_vec();
    let chain = p12_keystore::PrivateKeyChain::new(local_id, pk, certs);
    let mut ks = p12_keystore::KeyStore::new();
    ks.add_entry(
        friendly_name,
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    ks.writer(password).write().map_err(|e| err(&e))
}

/// A file written in full but not yet visible under its name.
enum Staged {
    /// An anonymous inode (Linux `O_TMPFILE`), linked into place with `linkat`: one directory
    /// operation per file and no temporary name; the inode vanishes if the process dies first.
    #[cfg(target_os = "linux")]
    Anonymous { file: std::fs::File, dest: PathBuf },
    /// A named temporary file (`.iotc-*.tmp`) renamed into place: everywhere else, and for
    /// `force` (which must replace an existing file).
    Named {
        tmp: tempfile::NamedTempFile,
        dest: PathBuf,
    },
}

impl Staged {
    fn dest(&self) -> &Path {
        match self {
            #[cfg(target_os = "linux")]
            Staged::Anonymous { dest, .. } => dest,
            Staged::Named { dest, .. } => dest,
        }
    }

    /// Makes the file visible under its name; without `force` an existing file is never
    /// replaced (`AlreadyExists`).
    fn place(self, force: bool) -> std::io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Staged::Anonymous { file, dest } => anonymous::link(&file, &dest),
            Staged::Named { tmp, dest } => {
                let placed = if force {
                    tmp.persist(&dest)
                } else {
                    tmp.persist_noclobber(&dest)
                };
                placed.map(|_| ()).map_err(|e| e.error)
            }
        }
    }
}

/// Anonymous files: `open(dir, O_TMPFILE)`, write, then `linkat` through `/proc/self/fd`
/// (the unprivileged form documented in open(2)). Used when the folder's file system and the
/// kernel support it; anything else falls back to named temporary files.
#[cfg(target_os = "linux")]
mod anonymous {
    use std::path::Path;
    use std::sync::OnceLock;

    use rustix::fs::{AtFlags, Mode, OFlags, CWD};
    use rustix::io::Errno;

    /// Whether `/proc/self/fd` can name our files (it is missing in some sandboxes).
    fn proc_available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
    }

    /// An unnamed file in `dir` with `mode` (less umask), or `None` when unsupported there.
    pub(super) fn create(dir: &Path, mode: u32) -> std::io::Result<Option<std::fs::File>> {
        if !proc_available() {
            return Ok(None);
        }
        let flags = OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, dir, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            // Kernels or file systems without O_TMPFILE answer one of these.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives `file` the name `dest`; fails with `AlreadyExists` when `dest` exists.
    pub(super) fn link(file: &std::fs::File, dest: &Path) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let source = format!("/proc/self/fd/{}", file.as_raw_fd());
        rustix::fs::linkat(CWD, source.as_str(), CWD, dest, AtFlags::SYMLINK_FOLLOW)
            .map_err(Into::into)
    }
}

fn stage(
    dir: &Path,
    dest: PathBuf,
    data: &[u8],
    secret: bool,
    force: bool,
) -> Result<Staged, CertError> {
    let werr = |error| CertError::Write {
        path: dest.clone(),
        error,
    };
    // The mode is set at creation (0600 for keys and PFX, 0644 for certificates, less umask).
    let mode = if secret { 0o600 } else { 0o644 };
    #[cfg(target_os = "linux")]
    if !force {
        if let Some(mut file) = anonymous::create(dir, mode).map_err(werr)? {
            file.write_all(data).map_err(werr)?;
            return Ok(Staged::Anonymous { file, dest });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = force;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".iotc-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut tmp = builder.tempfile_in(dir).map_err(werr)?;
    tmp.write_all(data).map_err(werr)?;
    Ok(Staged::Named { tmp, dest })
}

/// Writes the bundle `name` into `dir` (which must exist) and returns the paths.
///
/// ```
/// use iotc::cert::{write_bundle, Authority, CaOptions, WriteOptions};
/// let dir = tempfile::tempdir()?;
/// let root = Authority::new_root(&CaOptions::default())?;
/// let files = write_bundle(dir.path(), "root", root.issued(), &WriteOptions::default())?;
/// assert!(files.cert.ends_with("root_cert.pem"));
/// // A second write without `force` is refused and changes nothing.
/// assert!(write_bundle(dir.path(), "root", root.issued(), &WriteOptions::default()).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_bundle(
    dir: &Path,
    name: &str,
    issued: &Issued,
    opts: &WriteOptions,
) -> Result<WrittenFiles, CertError> {
    check_bundle_name(name)?;
    let [cert_path, key_path, chain_path, pfx_path, uri_path] = bundle_paths(dir, name);
    if opts.pfx && opts.password.is_none() {
        return Err(CertError::PasswordNeeded {
            what: "a PKCS#12 (.pfx) file".into(),
        });
    }
    let mut plan: Vec<(PathBuf, Vec<u8>, bool)> = Vec::with_capacity(4);
    plan.push((
        cert_path.clone(),
        issued.cert_pem.as_bytes().to_vec(),
        false,
    ));
    let mut files = WrittenFiles {
        cert: cert_path,
        ..Default::default()
    };
    if let Some(key) = &issued.key {
        let pem = match &opts.password {
            Some(pw) => key.encrypted_pkcs8_pem(pw.expose(), opts.kdf_iterations)?,
            None => key.pkcs8_pem(),
        };
        plan.push((key_path.clone(), pem.expose().as_bytes().to_vec(), true));
        files.key = Some(key_path);
    }
    if let Some(uri) = &opts.key_uri {
        plan.push((uri_path.clone(), format!("{uri}\n").into_bytes(), false));
        files.key_uri = Some(uri_path);
    }
    if opts.fullchain {
        plan.push((
            chain_path.clone(),
            issued.chain_pem.as_bytes().to_vec(),
            false,
        ));
        files.fullchain = Some(chain_path);
    }
    if opts.pfx {
        let pw = opts
            .password
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        let der = pkcs12(issued, name, pw)?;
        plan.push((pfx_path.clone(), der, true));
        files.pfx = Some(pfx_path);
    }
    if !opts.force {
        if let Some((p, _, _)) = plan.iter().find(|(p, _, _)| p.exists()) {
            return Err(CertError::AlreadyExists { path: p.clone() });
        }
    }
    let mut staged = Vec::with_capacity(plan.len());
    for (dest, data, secret) in plan {
        staged.push(stage(dir, dest, &data, secret, opts.force)?);
    }
    // Rename into place; on failure remove what this call already placed.
    let mut placed: Vec<PathBuf> = Vec::new();
    for s in staged {
        let dest = s.dest().to_path_buf();
        if let Err(error) = s.place(opts.force) {
            for p in &placed {
                let _ = std::fs::remove_file(p);
            }
            if error.kind() == std::io::ErrorKind::AlreadyExists {
                return Err(CertError::AlreadyExists { path: dest });
            }
            return Err(CertError::Write { path: dest, error });
        }
        placed.push(dest);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{Authority, CaOptions};

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_bundle_is_placed_whole_with_its_modes_and_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let root = Authority::new_root(&CaOptions::default()).unwrap();
        let files = write_bundle(dir.path(), "r", root.issued(), &WriteOptions::default()).unwrap();
        assert_eq!(
            names(dir.path()),
            ["r_cert.pem", "r_fullchain.pem", "r_key.pem"]
        );
        assert_eq!(
            std::fs::read_to_string(&files.cert).unwrap(),
            root.issued().cert_pem
        );
        let key = std::fs::read_to_string(files.key.as_ref().unwrap()).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            // Less the umask, which may only take bits away.
            assert_eq!(mode(files.key.as_ref().unwrap()) & !0o600, 0);
            assert_eq!(mode(&files.cert) & !0o644, 0);
            assert_ne!(mode(&files.cert) & 0o600, 0);
        }
    }

    #[test]
    fn an_existing_file_is_refused_and_kept_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::new_root(&CaOptions::default()).unwrap();
        let second = Authority::new_root(&CaOptions::default()).unwrap();
        let opts = WriteOptions::default();
        let files = write_bundle(dir.path(), "r", first.issued(), &opts).unwrap();
        let err = write_bundle(dir.path(), "r", second.issued(), &opts).unwrap_err();
        assert!(matches!(err, CertError::AlreadyExists { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&files.cert).unwrap(),
            first.issued().cert_pem
        );
        let forced = WriteOptions {
            force: true,
            ..WriteOptions::default()
        };
        write_bundle(dir.path(), "r", second.issued(), &forced).unwrap();
        assert_eq!(
            std::fs::read_to_string(&files.cert).unwrap(),
            second.issued().cert_pem
        );
        #[cfg(unix)]
        assert_eq!(mode(files.key.as_ref().unwrap()) & !0o600, 0);
        assert_eq!(
            names(dir.path()),
            ["r_cert.pem", "r_fullchain.pem", "r_key.pem"]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn anonymous_files_refuse_an_existing_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("taken.pem");
        std::fs::write(&dest, "mine").unwrap();
        let Some(mut file) = anonymous::create(dir.path(), 0o600).unwrap() else {
            // This file system has no O_TMPFILE: write_bundle uses named files there.
            return;
        };
        file.write_all(b"theirs").unwrap();
        let err = anonymous::link(&file, &dest).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "mine");
        let fresh = dir.path().join("fresh.pem");
        anonymous::link(&file, &fresh).unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "theirs");
        assert_eq!(names(dir.path()), ["fresh.pem", "taken.pem"]);
    }
}
