//! `iotc emulator`: runs the local IoT Central + DPS emulator until SIGINT/SIGTERM.
//!
//! When both listeners are up it prints one JSON line on stdout (the same object it writes to
//! `<data-dir>/emulator.json`) so a script can read the URLs, the ID scope, the admin token
//! and the CA path; everything else goes to stderr.

use super::CliResult;
use crate::emulator::tls::TlsName;
use crate::emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Arguments of `iotc emulator`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  iotc emulator --data-dir /tmp/emu --api-listen 127.0.0.1:0 --rate-limit off

  # A bench host that devices on the LAN reach by name and by address: listen on every
  # interface, and put both names in the server certificate (the devices trust caCert).
  iotc emulator --data-dir /srv/emu --api-listen 0.0.0.0:8443 --dps-listen 0.0.0.0:8444 \\
      --tls-name bench-host.lan --tls-name 192.0.2.10")]
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
    /// Requests per second per application, or `off`.
    #[arg(long, default_value = "20", value_parser = parse_rate_limit)]
    pub rate_limit: RateLimit,
    /// A DNS name or IP address the server certificate of both listeners holds besides
    /// localhost and 127.0.0.1 (repeatable): how devices on the LAN reach this host.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<TlsName>,
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
        let config = EmulatorConfig::new(args.data_dir)
            .api_listen(args.api_listen)
            .dps_listen(args.dps_listen)
            .rate_limit(args.rate_limit.0)
            .tls_names(args.tls_names);
        let emu = Emulator::start(config).await?;
        // Listen for the signals before the ready line: a caller may stop the emulator as
        // soon as it has read that line, and a signal that arrives before the handler is in
        // place would kill the process without a clean shutdown.
        let stop = shutdown_signal()?;
        println!("{}", serde_json::to_string(emu.info())?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        stop.await;
        eprintln!("iotc emulator: shutting down");
        emu.shutdown().await;
        Ok(super::EXIT_OK)
    })
}

/// Installs the SIGINT/SIGTERM handlers now and returns the wait for the first signal.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
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
