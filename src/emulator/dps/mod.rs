//! The emulator's DPS listener (placeholder: helper "dps" replaces this module).
//!
//! Until then every request answers 501 `NotSupportedByEmulator`, so the listener address in
//! the ready record is real and a client gets a clear answer.

use super::settings::SettingsHandle;
use super::store::Store;
use std::sync::Arc;

/// What the DPS listener gets from the emulator.
#[derive(Debug, Clone)]
pub struct DpsContext {
    /// The emulator's database (enrollment groups, devices: see `emulator::app`).
    pub store: Arc<Store>,
    /// The shared behaviour settings (rate limit, faults, `dpsAssigningPolls`).
    pub settings: Arc<SettingsHandle>,
    /// The application's ID scope.
    pub id_scope: String,
    /// Base URL of this listener.
    pub dps_endpoint: String,
}

/// Serves DPS on `listener` with the emulator's TLS configuration (client certificates are
/// requested, not required; see [`super::tls::PeerCertificates`]) until `shutdown`.
pub async fn serve(
    ctx: DpsContext,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let _ = ctx;
    let app = axum::Router::new().fallback(|| async {
        (
            http::StatusCode::NOT_IMPLEMENTED,
            [("x-ms-error-code", "NotSupportedByEmulator")],
            axum::Json(serde_json::json!({
                "errorCode": 501000,
                "message": "DPS is not implemented in this build of the emulator yet",
            })),
        )
    });
    super::tls::serve(listener, tls, app, shutdown).await;
}
