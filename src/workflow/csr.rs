//! CSR batches: devices that make their key on the chip and hand over only a certificate
//! signing request. Where each device's CSR comes from, and the check of all of them.
//!
//! A device's CSR is the file its manifest row names in the `csr` column (a relative path is
//! relative to the manifest's folder), else `<deviceId>.csr` in the `--csr-dir` folder; PEM or
//! DER. Like the manifest, every CSR of the batch is checked before anything is sent
//! ([`check_all`]): each file must be a CSR whose signature verifies, whose key the device
//! profile allows and whose one CN is the device id exactly, and must not ask to be a CA (see
//! [`crate::cert::DeviceCsr`]). Every bad file is reported, with its path, the manifest line
//! and the reason, in one error. What the CSRs ask for that the device profile decides
//! instead (SANs, EKUs, subject attributes other than the CN) is counted, so the caller can
//! say it is not copied.

use super::manifest::{DeviceSpec, ManifestError, ProblemList, ScanError, Source};
use crate::cert::DeviceCsr;
use crate::ids::RegistrationId;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// The file name of a device's CSR in a `--csr-dir` folder: `<deviceId>.csr`.
pub const CSR_EXTENSION: &str = "csr";

/// Where the CSRs of a batch are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrFiles {
    dir: Option<PathBuf>,
    manifest_dir: PathBuf,
}

/// One CSR that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrProblem {
    /// The device.
    pub device_id: String,
    /// Its manifest line (0 when the devices are not from a manifest).
    pub line: u64,
    /// The CSR file, when the device has one.
    pub file: Option<PathBuf>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for CsrProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}: {}", file.display(), self.reason)?,
            None => write!(f, "{}", self.reason)?,
        }
        match self.line {
            0 => write!(f, " (device {})", self.device_id),
            line => write!(f, " (manifest line {line}, device {})", self.device_id),
        }
    }
}

/// The CSRs of a batch cannot be used; nothing was done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Some CSRs are bad or missing.
    #[error("{} of {checked} CSR(s) cannot be used, nothing was done:\n{}", problems.len(), ProblemList(problems))]
    Invalid {
        /// How many devices were checked.
        checked: u64,
        /// Every problem, in batch order.
        problems: Vec<CsrProblem>,
    },
    /// The folder of CSRs could not be listed.
    #[error("cannot list the CSR folder {path}")]
    ListDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The folder holds no `<deviceId>.csr` file.
    #[error("the CSR folder {0} holds no <deviceId>.csr file")]
    EmptyDir(PathBuf),
    /// The manifest could not be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// What [`check_all`] found in a batch whose CSRs are all usable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrSummary {
    /// CSRs checked (one per device).
    pub devices: u64,
    /// What the CSRs ask for that the device profile decides instead, and in how many CSRs.
    pub not_copied: BTreeMap<String, u64>,
}

impl CsrFiles {
    /// CSRs named by the manifest at `manifest` (its `csr` column) or, for rows without one
    /// and for devices not from a manifest, `<deviceId>.csr` in `dir`.
    pub fn new(dir: Option<PathBuf>, manifest: Option<&Path>) -> CsrFiles {
        let manifest_dir = manifest
            .and_then(Path::parent)
            .map(Path::to_owned)
            .unwrap_or_default();
        CsrFiles { dir, manifest_dir }
    }

    /// The CSR file of a device, or why it has none.
    pub fn path_of(&self, spec: &DeviceSpec) -> Result<PathBuf, String> {
        match (&spec.csr, &self.dir) {
            (Some(cell), _) if cell.is_absolute() => Ok(cell.clone()),
            (Some(cell), _) => Ok(self.manifest_dir.join(cell)),
            (None, Some(dir)) => Ok(dir.join(format!("{}.{CSR_EXTENSION}", spec.device_id))),
            (None, None) => Err("no CSR: its csr cell is empty and no --csr-dir is given".into()),
        }
    }

    /// Reads and checks the CSR of a device: CN = its id.
    pub fn load(&self, spec: &DeviceSpec) -> Result<DeviceCsr, CsrProblem> {
        let problem = |file: Option<PathBuf>, reason: String| CsrProblem {
            device_id: spec.device_id.to_string(),
            line: spec.line,
            file,
            reason,
        };
        let path = self.path_of(spec).map_err(|r| problem(None, r))?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return Err(problem(Some(path), format!("cannot read it: {e}"))),
        };
        DeviceCsr::for_device(&bytes, &spec.device_id).map_err(|e| {
            let reason = match e {
                crate::cert::CertError::Csr { reason } => reason,
                other => other.to_string(),
            };
            problem(Some(path), reason)
        })
    }
}

/// The devices of a `--csr-dir` folder used alone: one per `<deviceId>.csr` file, in name
/// order. A file whose name is not a valid device id, and two names that differ only in case
/// (DPS ids are case-insensitive), are problems.
pub fn devices_in(dir: &Path) -> Result<Vec<RegistrationId>, CsrError> {
    let list_err = |source| CsrError::ListDir {
        path: dir.to_owned(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list_err)? {
        let path = entry.map_err(list_err)?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(CSR_EXTENSION) && path.is_file() {
            names.push(path);
        }
    }
    names.sort();
    let mut ids = Vec::with_capacity(names.len());
    let mut problems = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in &names {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let problem = |reason: String| CsrProblem {
            device_id: stem.clone(),
            line: 0,
            file: Some(path.clone()),
            reason,
        };
        match RegistrationId::new(stem.clone()) {
            Err(e) => problems.push(problem(format!("its name is not a device id: {e}"))),
            Ok(id) => match seen.insert(stem.to_ascii_lowercase(), path.clone()) {
                Some(first) => problems.push(problem(format!(
                    "same device id as {} (ids are case-insensitive)",
                    first.display()
                ))),
                None => ids.push(id),
            },
        }
    }
    if names.is_empty() {
        return Err(CsrError::EmptyDir(dir.to_owned()));
    }
    if !problems.is_empty() {
        return Err(CsrError::Invalid {
            checked: names.len() as u64,
            problems,
        });
    }
    Ok(ids)
}

/// Checks the CSR of every device of a validated source; every problem, or a summary.
pub fn check_all(source: &Source, files: &CsrFiles) -> Result<CsrSummary, CsrError> {
    let mut summary = CsrSummary::default();
    let mut problems = Vec::new();
    source
        .for_each(|spec| {
            summary.devices += 1;
            match files.load(&spec) {
                Ok(csr) => {
                    for what in csr.not_copied() {
                        *summary.not_copied.entry(what.clone()).or_default() += 1;
                    }
                }
                Err(p) => problems.push(p),
            }
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|e| match e {
            ScanError::Manifest(e) => CsrError::Manifest(e),
            ScanError::Sink(never) => match never {},
        })?;
    if !problems.is_empty() {
        return Err(CsrError::Invalid {
            checked: summary.devices,
            problems,
        });
    }
    Ok(summary)
}

/// For [`Journal::plan_with_csrs`](super::journal::Journal::plan_with_csrs): a device's CSR as
/// DER with its SHA-256, read again and checked again (the files were checked by
/// [`check_all`]; one that changed since is refused here).
pub fn read_for_plan(files: &CsrFiles, spec: &DeviceSpec) -> Result<(Vec<u8>, String), String> {
    files
        .load(spec)
        .map(|csr| (csr.der().to_vec(), csr.sha256_hex()))
        .map_err(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_csr(dir: &Path, name: &str, cn: &str) {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.subject_alt_names = vec![rcgen::SanType::DnsName("x.example".try_into().unwrap())];
        let csr = p.serialize_request(&kp).unwrap();
        std::fs::write(dir.join(name), csr.pem().unwrap()).unwrap();
    }

    #[test]
    fn every_bad_csr_is_reported_with_its_file_line_and_reason() {
        let d = tempfile::tempdir().unwrap();
        let csrs = d.path().join("csrs");
        std::fs::create_dir(&csrs).unwrap();
        write_csr(&csrs, "a-1.csr", "a-1");
        write_csr(&csrs, "a-2.csr", "A-2"); // CN differs in case
        std::fs::write(csrs.join("a-3.csr"), b"not a csr").unwrap();
        write_csr(&csrs, "other.csr", "a-5"); // named by the manifest, CN right
        let manifest = d.path().join("m.csv");
        std::fs::write(
            &manifest,
            "deviceId,csr\na-1,\na-2,\na-3,\na-4,\na-5,csrs/other.csr\n",
        )
        .unwrap();
        let source = Source::Csv(manifest.clone());
        source.validate().unwrap();
        let files = CsrFiles::new(Some(csrs.clone()), Some(&manifest));
        let Err(CsrError::Invalid { checked, problems }) = check_all(&source, &files) else {
            panic!("expected problems");
        };
        assert_eq!(checked, 5);
        let lines: Vec<u64> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [3, 4, 5], "{problems:#?}");
        assert!(problems[0].reason.contains("not the device id"));
        assert!(problems[1].reason.contains("not a valid CSR"));
        assert!(problems[2].reason.contains("cannot read"));
        let text = CsrError::Invalid { checked, problems }.to_string();
        assert!(text.contains("3 of 5 CSR(s)"), "{text}");
        assert!(text.contains("a-3.csr: not a valid CSR"), "{text}");
        assert!(text.contains("(manifest line 5, device a-4)"), "{text}");
        // With the bad ones gone, the SANs they ask for are counted as not copied.
        let source = Source::Ids(vec!["a-1".parse().unwrap()]);
        let summary = check_all(&source, &CsrFiles::new(Some(csrs.clone()), None)).unwrap();
        assert_eq!(summary.devices, 1);
        assert_eq!(summary.not_copied.get("subjectAltName"), Some(&1));
        // Without --csr-dir, an empty cell is a problem of its line.
        let files = CsrFiles::new(None, Some(&manifest));
        let Err(CsrError::Invalid { problems, .. }) = check_all(&Source::Csv(manifest), &files)
        else {
            panic!("expected problems");
        };
        assert!(problems[0].reason.contains("no --csr-dir"), "{problems:?}");
    }

    #[test]
    fn a_csr_folder_alone_names_the_devices() {
        let d = tempfile::tempdir().unwrap();
        write_csr(d.path(), "b-2.csr", "b-2");
        write_csr(d.path(), "b-1.csr", "b-1");
        std::fs::write(d.path().join("notes.txt"), "ignored").unwrap();
        let ids = devices_in(d.path()).unwrap();
        assert_eq!(ids, ["b-1".parse().unwrap(), "b-2".parse().unwrap()]);
        write_csr(d.path(), "B-1.csr", "B-1");
        write_csr(d.path(), "bad id.csr", "x");
        let Err(CsrError::Invalid { problems, .. }) = devices_in(d.path()) else {
            panic!("expected problems");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            devices_in(empty.path()),
            Err(CsrError::EmptyDir(_))
        ));
    }
}
