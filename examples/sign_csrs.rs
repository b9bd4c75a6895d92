//! Sign every certificate signing request in a folder with a CA: the custody level where
//! devices make their own keys and the station only signs.
//!
//! ```sh
//! cargo run --example sign_csrs -- <csr-folder> <ca-prefix> <out-folder>
//! # e.g. after `iotc cert root --name root --out pki --no-password`:
//! cargo run --example sign_csrs -- csrs pki/root signed
//! ```
//!
//! Every `*.csr` and `*.pem` file of the folder is read as a CSR (PEM or DER). Its signature
//! is checked and its CN must be a valid registration id; the certificate (device profile)
//! and the full chain are written as `<out>/<stem>_cert.pem` and `<stem>_fullchain.pem`. No
//! private key is ever seen. A CSR that fails is reported and the others go on; the exit
//! status is 1 when any failed. The CA key's password comes from `IOTC_CA_PASSWORD` (unset:
//! an unencrypted key). Only the `cert` module is used, so this runs with
//! `--no-default-features` too.

use iotc::cert::{write_bundle, Authority, LeafOptions, WriteOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What became of one CSR file.
#[derive(Debug)]
struct Signed {
    file: PathBuf,
    /// The certificate written and its SHA-1 thumbprint, or why not.
    result: Result<(PathBuf, String), String>,
}

/// Signs every CSR file of `dir` (in name order) with `ca` into `out`.
fn sign_all(dir: &Path, ca: &Authority, out: &Path) -> Result<Vec<Signed>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| {
        p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("csr" | "pem"))
    });
    files.sort();
    std::fs::create_dir_all(out)?;
    let sign = |file: &Path| -> Result<(PathBuf, String), String> {
        let csr = std::fs::read(file).map_err(|e| e.to_string())?;
        let issued = ca
            .sign_csr(&csr, &LeafOptions::default())
            .map_err(|e| e.to_string())?;
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or("the file name is not UTF-8")?;
        let written = write_bundle(out, stem, &issued, &WriteOptions::default())
            .map_err(|e| e.to_string())?;
        Ok((written.cert, issued.sha1_thumbprint()))
    };
    Ok(files
        .into_iter()
        .map(|file| Signed {
            result: sign(&file),
            file,
        })
        .collect())
}

fn main() -> Result<ExitCode, Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, ca, out] = args.as_slice() else {
        eprintln!("usage: sign_csrs <csr-folder> <ca-prefix> <out-folder>  (CA key password: IOTC_CA_PASSWORD)");
        return Ok(ExitCode::from(2));
    };
    let password = std::env::var("IOTC_CA_PASSWORD").ok();
    let ca = Authority::load(Path::new(ca), password.as_deref())?;
    let results = sign_all(Path::new(dir), &ca, Path::new(out))?;
    let mut failed = 0;
    for s in &results {
        match &s.result {
            Ok((cert, sha1)) => println!(
                "signed  {} -> {} ({sha1})",
                s.file.display(),
                cert.display()
            ),
            Err(why) => {
                failed += 1;
                println!("FAILED  {}: {why}", s.file.display());
            }
        }
    }
    println!("{} signed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotc::cert::CaOptions;

    fn csr(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn every_valid_csr_is_signed_and_chains_to_the_ca_and_a_bad_one_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, out) = (tmp.path().join("csrs"), tmp.path().join("signed"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("dev-001.csr"), csr("dev-001")).unwrap();
        std::fs::write(dir.join("dev-002.pem"), csr("dev-002")).unwrap();
        // A CN that is not a registration id (a space) is refused, not rewritten.
        std::fs::write(dir.join("bad.csr"), csr("not valid")).unwrap();
        std::fs::write(dir.join("notes.txt"), "not a CSR, not read").unwrap();
        let ca = Authority::new_root(&CaOptions::default()).unwrap();

        let results = sign_all(&dir, &ca, &out).unwrap();

        let names: Vec<_> = results
            .iter()
            .map(|s| s.file.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["bad.csr", "dev-001.csr", "dev-002.pem"]);
        assert!(results[0].result.is_err(), "{:?}", results[0]);
        assert!(!out.join("bad_cert.pem").exists());
        // The referee is the openssl CLI, not our own verifier.
        let ca_file = tmp.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        for (s, cn) in results[1..].iter().zip(["dev-001", "dev-002"]) {
            let (cert, _) = s.result.as_ref().unwrap();
            let openssl = |args: &[&std::ffi::OsStr]| {
                let o = std::process::Command::new("openssl")
                    .args(args)
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8(o.stdout).unwrap()
            };
            let verified = openssl(&[
                "verify".as_ref(),
                "-CAfile".as_ref(),
                ca_file.as_os_str(),
                cert.as_os_str(),
            ]);
            assert!(verified.trim_end().ends_with(": OK"), "{verified}");
            let subject = openssl(&[
                "x509".as_ref(),
                "-noout".as_ref(),
                "-subject".as_ref(),
                "-in".as_ref(),
                cert.as_os_str(),
            ]);
            assert_eq!(subject.trim(), format!("subject=CN = {cn}"));
        }
    }
}
