//! Shared set-up of the DPS tests: a real emulator on loopback (in-process), an IoT Central
//! client for it, enrollment groups made through its API, and DPS clients that speak TLS to
//! its DPS listener with certificates from our cert module.
#![allow(dead_code)]

use iotc::central::enrollment_groups::CertificateEntry;
use iotc::central::models::{
    EnrollmentGroup, EnrollmentGroupType, GroupAttestation, SigningX509Certificate,
    X509VerificationCertificate,
};
use iotc::central::{Client as Central, ClientOptions as CentralOptions, Credential};
use iotc::cert::{Authority, CaOptions, Issued, LeafOptions};
use iotc::dps::{Attestation, Client, ClientOptions, X509Identity};
use iotc::emulator::{Emulator, EmulatorConfig};
use std::time::Duration;

pub struct Env {
    pub emu: Emulator,
    pub central: Central,
    pub ca_pem: Vec<u8>,
    pub dir: tempfile::TempDir,
}

/// Starts an emulator with no rate limit, one `assigning` poll and `Retry-After: 0`, serving
/// DPS over HTTPS and over MQTT.
pub async fn start() -> Env {
    start_in(tempfile::tempdir().unwrap()).await
}

/// The same, on the data folder `dir` (which may hold an earlier emulator's state).
async fn start_in(dir: tempfile::TempDir) -> Env {
    let mut config = EmulatorConfig::new(dir.path())
        .rate_limit(None)
        .dps_mqtt_listen(([127, 0, 0, 1], 0).into());
    config.settings.dps_assigning_polls = 1;
    config.settings.dps_retry_after_seconds = 0;
    let emu = Emulator::start(config).await.unwrap();
    let ca_pem = std::fs::read(&emu.info().ca_cert).unwrap();
    let central = Central::new(
        &emu.info().api_url,
        Credential::ApiToken(emu.info().admin_token.clone()),
        Some(CentralOptions {
            extra_ca_pem: Some(ca_pem.clone()),
            ..CentralOptions::default()
        }),
    )
    .unwrap();
    Env {
        emu,
        central,
        ca_pem,
        dir,
    }
}

impl Env {
    /// Stops the emulator and starts a new one on the same data folder.
    pub async fn restart(self) -> Env {
        self.emu.shutdown().await;
        start_in(self.dir).await
    }

    pub fn id_scope(&self) -> iotc::ids::IdScope {
        self.emu.info().id_scope.parse().unwrap()
    }

    pub fn options(&self) -> ClientOptions {
        ClientOptions {
            endpoint: self.emu.info().dps_endpoint.clone(),
            ca_pem: Some(self.ca_pem.clone()),
            deadline: Duration::from_secs(30),
            ..ClientOptions::default()
        }
    }

    /// `host:port` of the emulator's DPS over MQTT.
    pub fn mqtt_host(&self) -> String {
        self.emu
            .info()
            .dps_mqtt_host
            .clone()
            .expect("MQTT listener on")
    }

    /// Client options that register over MQTT.
    pub fn mqtt_options(&self) -> ClientOptions {
        ClientOptions {
            transport: iotc::dps::Transport::Mqtt,
            mqtt_host: Some(self.mqtt_host()),
            ..self.options()
        }
    }

    /// A DPS client presenting `chain` (leaf first, DER) with `key` (PKCS#8 DER).
    pub fn x509_client(&self, chain: Vec<Vec<u8>>, key: &[u8]) -> Client {
        let id = X509Identity::from_der(chain, key.to_vec()).unwrap();
        Client::new(self.id_scope(), Attestation::X509(id), self.options()).unwrap()
    }

    /// A DPS client for a device certificate, presenting its `chain_pem` (leaf + intermediates).
    pub fn device_client(&self, dev: &Issued) -> Client {
        let key = dev.key.as_ref().unwrap().pkcs8_pem();
        let id = X509Identity::from_pem(dev.chain_pem.as_bytes(), key.expose().as_bytes(), None)
            .unwrap();
        Client::new(self.id_scope(), Attestation::X509(id), self.options()).unwrap()
    }

    /// A DPS client presenting the PEM certificates of `chain_pem` with the PEM key `key_pem`
    /// (files made by openssl, for example).
    pub fn pem_client(&self, chain_pem: &[u8], key_pem: &[u8]) -> Client {
        let id = X509Identity::from_pem(chain_pem, key_pem, None).unwrap();
        Client::new(self.id_scope(), Attestation::X509(id), self.options()).unwrap()
    }

    pub fn sas_client(&self, device_key: iotc::secret::Secret) -> Client {
        Client::new(
            self.id_scope(),
            Attestation::SymmetricKey(device_key),
            self.options(),
        )
        .unwrap()
    }

    /// Creates an x509 group (iot or iotEdge).
    pub async fn x509_group(&self, id: &str, edge: bool) {
        self.central
            .create_enrollment_group(
                id,
                &EnrollmentGroup {
                    id: None,
                    display_name: id.to_owned(),
                    enabled: Some(true),
                    group_type: if edge {
                        EnrollmentGroupType::IotEdge
                    } else {
                        EnrollmentGroupType::Iot
                    },
                    attestation: GroupAttestation::X509 { x509: None },
                    etag: None,
                    id_scope: None,
                },
            )
            .await
            .unwrap();
    }

    /// Uploads `ca` as the group's primary certificate, unverified.
    pub async fn upload(&self, group: &str, ca: &Authority) {
        self.central
            .set_enrollment_group_certificate(
                group,
                CertificateEntry::Primary,
                &SigningX509Certificate {
                    verified: false,
                    certificate: Some(iotc::cert::certificate_string(ca.cert_pem())),
                    info: None,
                    etag: None,
                },
            )
            .await
            .unwrap();
    }

    /// Proof of possession of `ca` on the group's primary certificate.
    pub async fn prove(&self, group: &str, ca: &Authority) {
        let code = self
            .central
            .generate_verification_code(group, CertificateEntry::Primary)
            .await
            .unwrap()
            .verification_code;
        let v = ca
            .issue_verification(&code, &LeafOptions::default())
            .unwrap();
        self.central
            .verify_enrollment_group_certificate(
                group,
                CertificateEntry::Primary,
                &X509VerificationCertificate {
                    certificate: iotc::cert::certificate_string(&v.cert_pem),
                },
            )
            .await
            .unwrap();
    }

    /// A group whose primary certificate is `ca`, verified by proof of possession.
    pub async fn verified_group(&self, id: &str, ca: &Authority) {
        self.x509_group(id, false).await;
        self.upload(id, ca).await;
        self.prove(id, ca).await;
    }

    /// A symmetric-key group; returns its primary key.
    pub async fn sas_group(&self, id: &str) -> iotc::secret::Secret {
        let g = self
            .central
            .create_enrollment_group(
                id,
                &EnrollmentGroup {
                    id: None,
                    display_name: id.to_owned(),
                    enabled: Some(true),
                    group_type: EnrollmentGroupType::Iot,
                    attestation: GroupAttestation::SymmetricKey {
                        symmetric_key: None,
                    },
                    etag: None,
                    id_scope: None,
                },
            )
            .await
            .unwrap();
        match g.attestation {
            GroupAttestation::SymmetricKey {
                symmetric_key: Some(k),
            } => k.primary_key,
            other => panic!("no keys in {other:?}"),
        }
    }
}

pub fn root() -> Authority {
    Authority::new_root(&CaOptions::default()).unwrap()
}

pub fn device(ca: &Authority, id: &str) -> Issued {
    ca.issue_device(&id.parse().unwrap(), &LeafOptions::default())
        .unwrap()
}

pub fn key_der(dev: &Issued) -> Vec<u8> {
    dev.key.as_ref().unwrap().pkcs8_der().to_vec()
}

pub fn rid(id: &str) -> iotc::ids::RegistrationId {
    id.parse().unwrap()
}

/// Runs the real binary off the async workers (the emulator in this process keeps serving).
pub async fn run_iotc(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_iotc"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Checks that an X.509 registration went through enrollment group `group`, whose CA (the
/// certificate `ca_der`) signed the device's chain.
pub fn assert_signed_through(
    x509: &iotc::dps::wire::X509RegistrationResult,
    group: &str,
    ca_der: &[u8],
) {
    assert_eq!(x509.enrollment_group_id.as_deref(), Some(group));
    assert_eq!(
        x509.signing_certificate_info
            .as_ref()
            .expect("signingCertificateInfo")
            .sha1_thumbprint,
        iotc::cert::sha1_thumbprint(ca_der)
    );
}
