//! `jobcell wait` (like condor_wait), `jobcell submit --wait` (like `sbatch --wait`) and
//! `jobcell output -f` (like `condor_tail -f`). None of them polls: each waits in a long-poll
//! (`GET /v1/jobs/{id}/wait`) or a stream (`GET /v1/jobs/{id}/stdout?follow=1`) that the
//! daemon answers when the job ends.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use jobcell_api::types::{JobInfo, OutputStream, State};
use jobcell_api::{Client, ClientError};

use crate::socket::SocketArg;

/// What `wait` exits with when its `--timeout` passes, as timeout(1) does.
pub const EXIT_TIMED_OUT: i32 = 124;

/// The longest one long-poll asks the daemon to hold: a lost daemon is noticed within this.
const POLL_WITHIN: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct WaitArgs {
    /// The daemon's API socket (default: $JOBCELL_SOCKET, else /run/jobcell/api.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Give up after SECS: exit 124.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub timeout: Option<Duration>,
    /// A held job counts as ended (a failure).
    #[arg(long)]
    pub held_ends: bool,
    /// Say nothing; only the exit status tells.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The jobs: a job id, CLUSTER.PROC, or CLUSTER. (every job of a cluster).
    #[arg(value_name = "ID|C.P|C.", required = true)]
    pub ids: Vec<String>,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v).ok())
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}

pub fn wait(a: WaitArgs) -> anyhow::Result<i32> {
    let client = SocketArg {
        socket: a.socket.clone(),
        timeout: None,
    }
    .client()?;
    let ids = resolve(&client, &a.ids)?;
    let deadline = a.timeout.map(|t| Instant::now() + t);
    wait_for(&client, &ids, a.held_ends, deadline, a.quiet)
}

/// Job ids for `ID`, `C.P` and `C.`, in the order given.
fn resolve(client: &Client, sels: &[String]) -> anyhow::Result<Vec<u64>> {
    let mut ids = Vec::new();
    // Cluster forms need every job's cluster and proc: the queue and the history.
    let mut all: Option<Vec<JobInfo>> = None;
    for sel in sels {
        if let Ok(id) = sel.parse::<u64>() {
            ids.push(id);
            continue;
        }
        let bad = || {
            anyhow::anyhow!("'{sel}' is not a job id, CLUSTER.PROC or CLUSTER. (e.g. 12, 7.0, 7.)")
        };
        let (c, p) = sel.split_once('.').ok_or_else(bad)?;
        let c: u64 = c.parse().map_err(|_| bad())?;
        let p: Option<u64> = if p.is_empty() {
            None
        } else {
            Some(p.parse().map_err(|_| bad())?)
        };
        if all.is_none() {
            let mut v = client.queue()?;
            let known: std::collections::HashSet<u64> = v.iter().map(|j| j.id).collect();
            v.extend(
                client
                    .history(100_000)?
                    .into_iter()
                    .filter(|h| !known.contains(&h.id)),
            );
            all = Some(v);
        }
        let before = ids.len();
        ids.extend(
            all.iter()
                .flatten()
                .filter(|j| j.cluster == c && p.is_none_or(|p| j.proc == p))
                .map(|j| j.id),
        );
        anyhow::ensure!(ids.len() > before, "no job {sel}");
    }
    Ok(ids)
}

/// Blocks until every job in `ids` has ended; the exit status: 0 if all completed with 0,
/// else the first failure's (in the order given), or 124 when `deadline` passes first.
pub fn wait_for(
    client: &Client,
    ids: &[u64],
    held_ends: bool,
    deadline: Option<Instant>,
    quiet: bool,
) -> anyhow::Result<i32> {
    let mut first_failure = None;
    for &id in ids {
        let job = loop {
            let within = deadline
                .map(|d| d.saturating_duration_since(Instant::now()).min(POLL_WITHIN))
                .unwrap_or(POLL_WITHIN);
            let j = ask_again_while_lost(|| client.wait_end(id, held_ends, within), client)?;
            if has_ended(j.state, held_ends) {
                break j;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                eprintln!(
                    "jobcell: job {id} has not ended within the timeout (it is {})",
                    j.state.as_str()
                );
                return Ok(EXIT_TIMED_OUT);
            }
        };
        let code = exit_status(&job);
        if !quiet {
            println!("{}", describe(&job));
        }
        if code != 0 && first_failure.is_none() {
            first_failure = Some(code);
        }
    }
    Ok(first_failure.unwrap_or(0))
}

/// A wait changes nothing: asked again, with a pause, while the daemon restarts or the
/// connection breaks, for as long as the connect timeout.
fn ask_again_while_lost<T>(
    mut ask: impl FnMut() -> Result<T, ClientError>,
    client: &Client,
) -> Result<T, ClientError> {
    let mut lost_since: Option<Instant> = None;
    let mut pause = Duration::from_millis(200);
    loop {
        match ask() {
            Err(e) if e.is_lost_connection() => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= client.connect_timeout() {
                    return Err(e);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            r => return r,
        }
    }
}

/// Whether a job in `state` is over (the daemon's rule, see `GET /v1/jobs/{id}/wait`).
fn has_ended(state: State, held_ends: bool) -> bool {
    matches!(state, State::Completed | State::Failed | State::Removed)
        || (held_ends && state == State::Held)
}

/// 0 for a job that completed with 0; its own exit code if not 0, 128+signal if a signal
/// ended it; 1 if it was removed, held or failed without a code.
fn exit_status(j: &JobInfo) -> i32 {
    match (j.state, j.exit_code, j.signal) {
        (State::Completed | State::Failed, Some(c), _) if c != 0 => c,
        (State::Completed, Some(0), _) => 0,
        (State::Completed | State::Failed, None, Some(s)) => 128 + s,
        _ => 1,
    }
}

fn describe(j: &JobInfo) -> String {
    let how = match (j.exit_code, j.signal) {
        (Some(c), _) => format!(", exit code {c}"),
        (None, Some(s)) => format!(", signal {s}"),
        _ => String::new(),
    };
    let why = j
        .reason
        .as_deref()
        .or(j.hold_reason.as_deref())
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    format!("Job {} {}{how}{why}", j.id, j.state.as_str())
}

/// `jobcell output -f`: the job's stdout (or stderr) as it is written, until the job ends.
pub fn follow(sock: &SocketArg, id: u64, which: OutputStream) -> anyhow::Result<i32> {
    let client = sock.client()?;
    let stdout = std::io::stdout();
    let mut sink = KeepError {
        inner: stdout.lock(),
        err: None,
    };
    match client.follow(id, which, 0, &mut sink) {
        Ok(_) => Ok(0),
        // A write to stdout failed: its own error (a closed pipe ends quietly in main).
        Err(_) if sink.err.is_some() => Err(sink.err.take().expect("kept").into()),
        Err(e) => Err(e.into()),
    }
}

/// A writer that keeps its first error, so the caller can tell stdout's failure from the
/// daemon's.
struct KeepError<W> {
    inner: W,
    err: Option<std::io::Error>,
}

impl<W: Write> Write for KeepError<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| self.keep(e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| self.keep(e))
    }
}

impl<W> KeepError<W> {
    fn keep(&mut self, e: &std::io::Error) {
        if self.err.is_none() {
            self.err = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: State, exit_code: Option<i32>, signal: Option<i32>) -> JobInfo {
        let mut j: JobInfo = serde_json::from_value(serde_json::json!({
            "id": 1, "cluster": 1, "proc": 0, "owner": 0, "user": "nobody", "state": "queued",
            "priority": 0, "cpus": 1.0, "memory": 1, "command": [], "submitted_at": 0.0,
            "attempt": 0
        }))
        .expect("a job");
        j.state = state;
        j.exit_code = exit_code;
        j.signal = signal;
        j
    }

    #[test]
    fn exit_status_is_the_jobs_code_or_a_failures_one() {
        assert_eq!(exit_status(&job(State::Completed, Some(0), None)), 0);
        assert_eq!(exit_status(&job(State::Completed, Some(7), None)), 7);
        assert_eq!(exit_status(&job(State::Completed, None, Some(9))), 137);
        assert_eq!(exit_status(&job(State::Failed, None, None)), 1);
        assert_eq!(exit_status(&job(State::Removed, Some(0), None)), 1);
        assert_eq!(exit_status(&job(State::Held, None, None)), 1);
        assert!(has_ended(State::Held, true) && !has_ended(State::Held, false));
        assert!(!has_ended(State::Running, true));
    }
}
