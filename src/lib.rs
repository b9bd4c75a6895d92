//! iotc: X.509 enrollment and device provisioning for Azure IoT Central and its Device
//! Provisioning Service, plus a local emulator of both.
//!
//! The modules follow the flow of the work: [`cert`] makes and checks certificates,
//! [`central`] talks to the IoT Central REST API, [`dps`] registers devices, [`workflow`]
//! strings them together for onboarding and factory batches, and [`emulator`] runs a local
//! IoT Central + DPS that all of it is tested against; [`pkcs11`] signs with keys held in a
//! PKCS#11 token (CA keys for `cert`, device keys for `dps`). Dependencies run one way:
//! `cli -> workflow -> {central, dps, cert} -> pkcs11`; the emulator reuses the wire models of
//! `central` and `dps` and the `cert` module.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod central;
pub mod cert;
pub mod cli;
pub mod dps;
pub mod emulator;
pub mod ids;
pub mod pkcs11;
pub mod secret;
pub mod workflow;
