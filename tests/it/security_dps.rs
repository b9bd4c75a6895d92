//! Security matrix, DPS gaps: the refusals the DPS helper's tests (`dps_x509`, `dps_sas`,
//! `dps_protocol`) do not already prove. A CA taken out of its enrollment group (revoked)
//! stops registering the devices it signed, even devices that registered before; a deleted
//! group registers nothing; a device certificate signed by a CA with the same subject name as
//! the verified one, but another key, is refused.

use crate::common_dps;

use common_dps::*;
use iotc::central::enrollment_groups::CertificateEntry;
use iotc::dps::DpsError;

fn is_refusal(e: &DpsError) -> bool {
    matches!(e, DpsError::Service { status: 401, .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_ca_no_longer_registers_its_devices() {
    let env = start().await;
    let root = root();
    env.verified_group("revoke-me", &root).await;
    let dev = device(&root, "dev-revoked");
    let client = env.device_client(&dev);
    client
        .register(&rid("dev-revoked"), None)
        .await
        .expect("registers while the CA is in the group");

    env.central
        .delete_enrollment_group_certificate("revoke-me", CertificateEntry::Primary)
        .await
        .unwrap();
    let e = client
        .register(&rid("dev-revoked"), None)
        .await
        .unwrap_err();
    assert!(
        is_refusal(&e),
        "a device of a revoked CA must be refused, got {e:?}"
    );
    let fresh = device(&root, "dev-revoked-2");
    let e = env
        .device_client(&fresh)
        .register(&rid("dev-revoked-2"), None)
        .await
        .unwrap_err();
    assert!(is_refusal(&e), "{e:?}");
    assert!(
        env.central.get_device("dev-revoked-2").await.is_err(),
        "no device made"
    );
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_registers_nothing() {
    let env = start().await;
    let root = root();
    env.verified_group("gone", &root).await;
    env.central.delete_enrollment_group("gone").await.unwrap();
    let dev = device(&root, "dev-gone");
    let e = env
        .device_client(&dev)
        .register(&rid("dev-gone"), None)
        .await
        .unwrap_err();
    assert!(is_refusal(&e), "{e:?}");
    assert!(env.central.get_device("dev-gone").await.is_err());
    env.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_ca_with_the_same_subject_is_refused() {
    let env = start().await;
    let real = root();
    env.verified_group("named", &real).await;
    let impostor = root();
    assert_eq!(
        real.subject(),
        impostor.subject(),
        "same subject name, another key"
    );
    assert_ne!(real.cert_der(), impostor.cert_der());
    let dev = device(&impostor, "dev-impostor");
    let e = env
        .device_client(&dev)
        .register(&rid("dev-impostor"), None)
        .await
        .unwrap_err();
    assert!(is_refusal(&e), "{e:?}");
    assert!(env.central.get_device("dev-impostor").await.is_err());
    env.emu.shutdown().await;
}
