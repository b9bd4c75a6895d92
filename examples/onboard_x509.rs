//! Onboard an X.509 enrollment group with proof of possession: the library side of
//! `iotc onboard x509`.
//!
//! It makes (or reuses) a root CA and an intermediate in a folder, creates the enrollment
//! group, uploads the intermediate unverified, asks for a verification code, signs a
//! verification certificate (CN = the code) with the intermediate's key and posts it, so the
//! group's CA ends `verified: true` by proof of possession, never by self-attestation.
//! Every step checks first and is skipped when already done: a rerun changes nothing.
//!
//! Against an IoT Central application (the token from the environment, never an argument):
//!
//! ```sh
//! export IOTC_APP_URL=https://myapp.azureiotcentral.com
//! export IOTC_API_TOKEN='SharedAccessSignature sr=...'
//! cargo run --example onboard_x509 -- line-1 ./pki
//! ```
//!
//! With `IOTC_APP_URL` unset it starts the embedded emulator (the `emulator` feature, on by
//! default) with its data in `<folder>/emulator` and onboards against that:
//! `cargo run --example onboard_x509`. The CA keys are written unencrypted (mode 0600) unless
//! `IOTC_CA_PASSWORD` is set.

use iotc::central::{CertificateEntry, Client, ClientOptions, Credential};
use iotc::ids::EnrollmentGroupId;
use iotc::secret::Secret;
use iotc::workflow::onboard::{ensure_ca, ensure_x509_group, CaSpec, Step};
use std::path::{Path, PathBuf};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Makes (or reuses) `dir/root` and `dir/intermediate`, then makes `group` an X.509 group
/// whose primary CA is the intermediate, verified by proof of possession. Returns the steps
/// taken and whether the group's CA is verified afterwards.
async fn onboard(
    client: &Client,
    group: &EnrollmentGroupId,
    dir: &Path,
    password: Option<Secret>,
) -> Result<(Vec<Step>, bool), Error> {
    let mut steps = Vec::new();
    let cas = ensure_ca(
        &CaSpec {
            root: dir.join("root"),
            intermediate: Some(dir.join("intermediate")),
            password,
            name: group.to_string(),
            root_key: None,
            intermediate_key: None,
        },
        &mut steps,
    )?;
    // `false`: upload unverified and prove possession, rather than self-attest.
    ensure_x509_group(client, group.as_str(), cas.signing(), false, &mut steps).await?;
    let ca = client
        .get_enrollment_group_certificate(group.as_str(), CertificateEntry::Primary)
        .await?;
    Ok((steps, ca.verified))
}

/// The application to onboard against: the one the environment names, or a fresh emulator.
struct Target {
    client: Client,
    #[cfg(feature = "emulator")]
    emulator: Option<iotc::emulator::Emulator>,
}

impl Target {
    async fn from_env(scratch: &Path) -> Result<Target, Error> {
        if let Ok(url) = std::env::var("IOTC_APP_URL") {
            let token = std::env::var("IOTC_API_TOKEN")
                .map_err(|_| "IOTC_APP_URL is set: set IOTC_API_TOKEN to an API token too")?;
            let mut options = ClientOptions::default();
            if let Ok(ca_file) = std::env::var("IOTC_CA_FILE") {
                options = options.with_ca_pem(std::fs::read(ca_file)?);
            }
            let client = Client::new(&url, Credential::api_token(token), Some(options))?;
            return Ok(Target {
                client,
                #[cfg(feature = "emulator")]
                emulator: None,
            });
        }
        Self::emulator(scratch).await
    }

    #[cfg(feature = "emulator")]
    async fn emulator(scratch: &Path) -> Result<Target, Error> {
        use iotc::emulator::{Emulator, EmulatorConfig};
        let emulator = Emulator::start(EmulatorConfig::new(scratch.join("emulator"))).await?;
        let info = emulator.info();
        println!(
            "no IOTC_APP_URL: onboarding against an emulator at {}",
            info.api_url
        );
        let client = Client::new(
            &info.api_url,
            Credential::api_token(info.admin_token.expose()),
            Some(ClientOptions::default().with_ca_pem(std::fs::read(&info.ca_cert)?)),
        )?;
        Ok(Target {
            client,
            emulator: Some(emulator),
        })
    }

    #[cfg(not(feature = "emulator"))]
    async fn emulator(_: &Path) -> Result<Target, Error> {
        Err("set IOTC_APP_URL and IOTC_API_TOKEN (this build has no emulator feature)".into())
    }

    async fn close(self) {
        #[cfg(feature = "emulator")]
        if let Some(e) = self.emulator {
            e.shutdown().await;
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let group = EnrollmentGroupId::new(args.next().unwrap_or_else(|| "example-line".into()))?;
    let dir = match args.next() {
        Some(d) => PathBuf::from(d),
        None => tempfile::Builder::new()
            .prefix("iotc-onboard-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&dir)?;
    let password = std::env::var("IOTC_CA_PASSWORD").ok().map(Secret::new);

    let target = Target::from_env(&dir).await?;
    let result = onboard(&target.client, &group, &dir, password).await;
    target.close().await;
    let (steps, verified) = result?;
    for s in &steps {
        println!("  {:<20} {:<8?} {}", s.step, s.outcome, s.detail);
    }
    println!(
        "group {group}: primary CA verified = {verified}; CA files in {}",
        dir.display()
    );
    Ok(())
}

#[cfg(all(test, feature = "emulator"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_group_ends_verified_by_proof_of_possession_and_a_rerun_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::emulator(dir.path()).await.unwrap();
        let group = EnrollmentGroupId::new("example-line").unwrap();

        let (steps, verified) = onboard(&target.client, &group, dir.path(), None)
            .await
            .unwrap();
        assert!(verified);
        assert!(
            steps.iter().any(|s| s.step == "proof of possession"),
            "{steps:?}"
        );

        let (again, verified) = onboard(&target.client, &group, dir.path(), None)
            .await
            .unwrap();
        assert!(verified);
        assert!(
            again.iter().all(|s| s.step != "proof of possession"),
            "{again:?}"
        );
        target.close().await;
    }
}
