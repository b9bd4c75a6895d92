//! The integration tests, in one binary: one module per topic, shared helpers in the
//! `common_*` modules. One binary links the crate once instead of once per file.

mod common_central;
mod common_cert;
mod common_dps;
mod common_emulator;
mod common_entra;
mod common_hsm;
mod common_workflow;

mod central_cli;
mod central_docs;
mod central_library;
mod central_next_link;
mod central_resilience;
mod cert_cli_errors;
mod cert_cli_help;
mod cert_json;
mod cert_openssl;
mod cert_webpki;
mod cli_config;
mod cli_pipe;
mod cli_progress;
mod docs_tour;
mod dps_cli;
mod dps_identity;
mod dps_protocol;
mod dps_sas;
mod dps_x509;
mod emulator_api;
mod emulator_conformance;
mod emulator_fleet;
mod emulator_lists;
mod emulator_ops;
mod emulator_rbac;
mod entra_refusals;
mod entra_signin;
mod hsm_cert;
mod hsm_dps;
mod hsm_workflow;
mod reliability_faults;
mod security_dps;
mod security_rbac;
mod security_secrets;
mod workflow_batch;
mod workflow_manifest;
mod workflow_onboard;
