//! HTCondor's job event log (the submit file's `log`): the daemon appends the events HTCondor
//! writes (submitted, executing, terminated, held, released, aborted) in HTCondor's text form,
//! so tools that read user logs by eye or by their three-digit codes keep working.
//!
//! The log is a path the user chose, so it is opened with the job user's filesystem identity
//! (fsuid, fsgid and groups, on one writer thread: see [`crate::sys::as_user`]): the daemon
//! never writes where the user could not. Writes happen after the state change is committed,
//! on their own thread so a slow or hung file system never stalls the queue; an event whose
//! daemon dies between the commit and the write is lost (the queue's own event table has it).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{Receiver, Sender};

use jobcell_sandbox::identity::Identity;
use jobcell_spec::UserSpec;
use tracing::warn;

/// Where one job's events go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub path: String,
    pub user: UserSpec,
    pub cluster: u64,
    pub proc: u64,
}

/// One event, as HTCondor names them.
#[derive(Debug, Clone)]
pub enum Event {
    Submitted,
    Executing,
    Terminated {
        exit_code: Option<i32>,
        signal: Option<i32>,
        report: Option<serde_json::Value>,
        cpus: f64,
        memory: u64,
    },
    Held(String),
    Released,
    Aborted(String),
    /// Stopped and queued again (a node policy preempted it).
    Evicted(String),
}

pub struct Msg {
    pub target: Target,
    pub event: Event,
    pub time: f64,
}

fn stamp(t: f64) -> String {
    let secs = t as libc::time_t;
    // SAFETY: tm is a plain C struct (its one pointer may be null), valid all zero.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the thread-safe variant.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

fn usage(us: u64) -> String {
    let s = us / 1_000_000;
    format!(
        "{} {:02}:{:02}:{:02}",
        s / 86400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60
    )
}

/// The event's text, HTCondor style, ending with its `...` line.
pub fn format(m: &Msg, host: &str) -> String {
    let head = |code: &str, what: &str| {
        format!(
            "{code} ({:03}.{:03}.000) {} {what}\n",
            m.target.cluster,
            m.target.proc,
            stamp(m.time)
        )
    };
    let mut s = match &m.event {
        Event::Submitted => head("000", &format!("Job submitted from host: <{host}>")),
        Event::Executing => head("001", &format!("Job executing on host: <{host}>")),
        Event::Terminated {
            exit_code,
            signal,
            report,
            cpus,
            memory,
        } => {
            let mut s = head("005", "Job terminated.");
            match (exit_code, signal) {
                (_, Some(sig)) => {
                    s += &format!("\t(0) Abnormal termination (signal {sig})\n\t(0) No core file\n")
                }
                (c, None) => {
                    s += &format!(
                        "\t(1) Normal termination (return value {})\n",
                        c.unwrap_or(-1)
                    )
                }
            }
            let r = report.as_ref();
            let u = r.and_then(|r| r["cpu_user_us"].as_u64()).unwrap_or(0);
            let sy = r.and_then(|r| r["cpu_system_us"].as_u64()).unwrap_or(0);
            let run = format!("\t\tUsr {}, Sys {}", usage(u), usage(sy));
            s += &format!("{run}  -  Run Remote Usage\n{run}  -  Total Remote Usage\n");
            let peak_mb = r
                .and_then(|r| r["usage"]["memory_peak"].as_u64())
                .map(|b| b.div_ceil(1 << 20).to_string())
                .unwrap_or_default();
            s += "\tPartitionable Resources :    Usage  Request Allocated\n";
            s += &format!(
                "\t   Cpus                 : {:>8} {:>8} {:>9}\n",
                "", cpus, cpus
            );
            s += &format!(
                "\t   Memory (MB)          : {:>8} {:>8} {:>9}\n",
                peak_mb,
                memory >> 20,
                memory >> 20
            );
            s
        }
        Event::Held(reason) => head("012", "Job was held.") + &format!("\t{reason}\n"),
        Event::Released => head("013", "Job was released.") + "\tvia jobcell release\n",
        Event::Aborted(reason) => head("009", "Job was aborted.") + &format!("\t{reason}\n"),
        Event::Evicted(reason) => {
            head("004", "Job was evicted.")
                + "\t(0) Job was not checkpointed.\n"
                + &format!("\t{reason}\n")
        }
    };
    s.push_str("...\n");
    s
}

/// Start the writer thread; send it messages after each commit.
pub fn start() -> std::io::Result<Sender<Msg>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("userlog".into())
        .spawn(move || writer(rx))?;
    Ok(tx)
}

fn writer(rx: Receiver<Msg>) {
    let host = crate::sys::hostname();
    let mut ids: HashMap<String, Option<Identity>> = HashMap::new();
    while let Ok(m) = rx.recv() {
        let key = m.target.user.to_string();
        let id = ids
            .entry(key)
            .or_insert_with(|| Identity::resolve(&m.target.user).ok())
            .clone();
        let Some(id) = id else {
            warn!(
                "user log {}: user '{}' does not exist; event dropped",
                m.target.path, m.target.user
            );
            continue;
        };
        let text = format(&m, &host);
        let r = crate::sys::as_user(id.uid, id.gid, &id.groups, || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o644)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(&m.target.path)?;
            if !f.metadata()?.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            // One write per event: concurrent writers (jobs of a cluster share a log) do not
            // interleave within an event.
            f.write_all(text.as_bytes())
        });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => warn!(
                "user log {} (as {}): {e}; event dropped",
                m.target.path, id.name
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_htcondor() {
        let t = Target {
            path: "/x".into(),
            user: UserSpec::Uid(1),
            cluster: 12,
            proc: 3,
        };
        let m = Msg {
            target: t.clone(),
            event: Event::Submitted,
            time: 0.0,
        };
        let s = format(&m, "node1");
        assert!(s.starts_with("000 (012.003.000) "), "{s}");
        assert!(
            s.ends_with("Job submitted from host: <node1>\n...\n"),
            "{s}"
        );
        let m = Msg {
            target: t,
            event: Event::Terminated {
                exit_code: Some(3),
                signal: None,
                report: Some(
                    serde_json::json!({"cpu_user_us": 61_000_000u64, "usage": {"memory_peak": 3u64 << 20}}),
                ),
                cpus: 1.0,
                memory: 64 << 20,
            },
            time: 0.0,
        };
        let s = format(&m, "n");
        assert!(s.contains("(1) Normal termination (return value 3)"), "{s}");
        assert!(s.contains("Usr 0 00:01:01, Sys 0 00:00:00"), "{s}");
        assert!(
            s.contains("Memory (MB)          :        3       64        64"),
            "{s}"
        );
    }
}
