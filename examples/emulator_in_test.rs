//! Start the emulator inside a test, register a device over DPS, shut it down.
//!
//! This is how the project's own integration tests use the emulator, and how a Rust user can
//! test code that talks to IoT Central or DPS without a cloud account: an in-process
//! [`Emulator`] on loopback (port 0), with its own CA for TLS and a fresh admin token, then
//! the ordinary library clients pointed at it. Needs the `emulator` feature (a default one).
//!
//! ```sh
//! cargo run --example emulator_in_test       # once, printing what DPS assigned
//! cargo test --example emulator_in_test      # the same flow as a #[test]
//! ```

use iotc::central::{Client, ClientOptions, Credential};
use iotc::cert::{Authority, CaOptions, LeafOptions};
use iotc::dps::{self, Attestation, Registration, X509Identity};
use iotc::emulator::{Emulator, EmulatorConfig};
use iotc::ids::{IdScope, RegistrationId};
use iotc::workflow::onboard::ensure_x509_group;
use std::path::Path;
use std::time::Duration;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Starts an emulator in `data_dir`, makes a verified X.509 group for a fresh root CA,
/// registers `registration_id` with a certificate from that CA, and stops the emulator.
async fn register_on_emulator(
    data_dir: &Path,
    registration_id: &RegistrationId,
) -> Result<Registration, Error> {
    // No rate limit: a test should not wait for the real service's 20 requests/s.
    let emulator = Emulator::start(EmulatorConfig::new(data_dir).rate_limit(None)).await?;
    let info = emulator.info().clone();
    let ca_pem = std::fs::read(&info.ca_cert)?;

    let central = Client::new(
        &info.api_url,
        Credential::api_token(info.admin_token.expose()),
        Some(ClientOptions::default().with_ca_pem(ca_pem.clone())),
    )?;
    let root = Authority::new_root(&CaOptions::default())?;
    // Creates the group, uploads the CA and proves possession of its key.
    ensure_x509_group(&central, "test-line", &root, false, &mut Vec::new()).await?;

    let device = root.issue_device(registration_id, &LeafOptions::default())?;
    let key = device.key.as_ref().ok_or("an issued device has its key")?;
    let identity = X509Identity::from_der(device.chain_der()?, key.pkcs8_der().to_vec())?;
    let options = dps::ClientOptions {
        endpoint: info.dps_endpoint.clone(),
        ca_pem: Some(ca_pem),
        default_poll_interval: Duration::from_millis(100),
        ..dps::ClientOptions::default()
    };
    let registration = dps::register(
        IdScope::new(info.id_scope.clone())?,
        registration_id,
        Attestation::X509(identity),
        options,
        None,
    )
    .await;
    // Shut down before looking at the result, so a failed registration stops it too.
    emulator.shutdown().await;
    Ok(registration?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let id = RegistrationId::new("example-device-01")?;
    let r = register_on_emulator(dir.path(), &id).await?;
    println!(
        "{id}: {:?} on {} as {}",
        r.status,
        r.assigned_hub.as_deref().unwrap_or("-"),
        r.device_id.as_deref().unwrap_or("-")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotc::dps::EnrollmentStatus;

    #[tokio::test]
    async fn a_device_registers_on_an_in_process_emulator() {
        let dir = tempfile::tempdir().unwrap();
        let id = RegistrationId::new("test-device-01").unwrap();
        let r = register_on_emulator(dir.path(), &id).await.unwrap();
        assert_eq!(r.status, Some(EnrollmentStatus::Assigned));
        assert_eq!(r.device_id.as_deref(), Some("test-device-01"));
        assert!(r.assigned_hub.is_some_and(|h| !h.is_empty()));
    }
}
