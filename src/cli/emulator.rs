//! `iotc emulator`: runs the local IoT Central + DPS emulator until SIGINT/SIGTERM.
//!
//! When both listeners are up it prints one JSON line on stdout (the same object it writes to
//! `<data-dir>/emulator.json`) so a script can read the URLs, the ID scope, the admin token
//! and the CA path; everything else goes to stderr.

use super::CliResult;
use crate::emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `iotc emulator`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  iotc emulator --data-dir /tmp/emu --api-listen 127.0.0.1:0 --rate-limit off\n  \
        iotc emulator --data-dir /tmp/emu --dps-mqtt-listen 127.0.0.1:0\n    \
        (DPS over MQTT too; the ready line's dpsMqttHost says where)"
)]
pub struct EmulatorArgs {
    /// Folder of the database, the CA and emulator.json (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address of the IoT Central API listener (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub api_listen: SocketAddr,
    /// Address of the DPS listener (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub dps_listen: SocketAddr,
    /// Also serve DPS over MQTT 3.1.1 (TLS) on this address (port 0: any free port); its
    /// host:port is the ready line's `dpsMqttHost`. Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub dps_mqtt_listen: Option<SocketAddr>,
    /// Requests per second per application, or `off`.
    #[arg(long, default_value = "20", value_parser = parse_rate_limit)]
    pub rate_limit: RateLimit,
}

/// A rate limit flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit(pub Option<u32>);

fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(RateLimit(None));
    }
    match s.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!(
            "{s:?} is not a rate limit: give a positive number of requests per second or `off`"
        )),
        Ok(n) => Ok(RateLimit(Some(n))),
    }
}

/// Runs the emulator until SIGINT/SIGTERM.
pub fn run(args: EmulatorArgs) -> CliResult {
    let rt = super::runtime()?;
    rt.block_on(async move {
        let mut config = EmulatorConfig::new(args.data_dir)
            .api_listen(args.api_listen)
            .dps_listen(args.dps_listen)
            .rate_limit(args.rate_limit.0);
        if let Some(addr) = args.dps_mqtt_listen {
            config = config.dps_mqtt_listen(addr);
        }
        let emu = Emulator::start(config).await?;
        let stop = stop_signal()?;
        println!("{}", serde_json::to_string(emu.info())?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        stop.await;
        eprintln!("iotc emulator: shutting down");
        emu.shutdown().await;
        Ok(super::EXIT_OK)
    })
}

/// Takes SIGINT and SIGTERM over now, before the ready line is printed (a script that stops
/// the emulator as soon as it reads the line must not meet the default action, which exits
/// without the shutdown), and returns the wait for either.
fn stop_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_values() {
        assert_eq!(parse_rate_limit("off"), Ok(RateLimit(None)));
        assert_eq!(parse_rate_limit("20"), Ok(RateLimit(Some(20))));
        assert!(parse_rate_limit("0").is_err());
        assert!(parse_rate_limit("fast").is_err());
    }
}
