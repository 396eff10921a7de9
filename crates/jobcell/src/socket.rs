//! Where the CLI reaches the daemon: `--socket` and `--timeout`, shared by every queue command.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use jobcell_api::{Client, DEFAULT_SOCKET};

#[derive(Args, Debug, Clone)]
pub struct SocketArg {
    /// The daemon's API socket (default: $JOBCELL_SOCKET, else /run/jobcell/api.sock).
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Wait at most SECS for the daemon to accept, and SECS for its answer (default:
    /// $JOBCELL_TIMEOUT, else 10 s to connect and 60 s for the answer, 600 s for a submit
    /// file's cluster).
    #[arg(long, value_name = "SECS", global = true, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds greater than 0"))
}

impl SocketArg {
    /// `--timeout`, else `$JOBCELL_TIMEOUT`; None: the defaults.
    pub fn timeout(&self) -> anyhow::Result<Option<Duration>> {
        if let Some(t) = self.timeout {
            return Ok(Some(t));
        }
        match std::env::var("JOBCELL_TIMEOUT") {
            Ok(v) => parse_timeout(&v)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("JOBCELL_TIMEOUT: {e}")),
            Err(_) => Ok(None),
        }
    }

    pub fn client(&self) -> anyhow::Result<Client> {
        let p = self
            .socket
            .clone()
            .or_else(|| std::env::var_os("JOBCELL_SOCKET").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        let c = Client::new(&p);
        Ok(match self.timeout()? {
            Some(t) => c.with_timeouts(t, t),
            None => c,
        })
    }
}
