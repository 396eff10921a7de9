//! The API's request and response types (JSON on the wire; documented in docs/api.yaml).

use jobcell_spec::JobSpec;
use serde::{Deserialize, Serialize};

/// A job's state. Terminal: completed, failed, removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Held,
    /// Committed before the supervisor is spawned (never run twice: see core::recover).
    Starting,
    Running,
    Suspended,
    Completed,
    Failed,
    Removed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Held => "held",
            State::Starting => "starting",
            State::Running => "running",
            State::Suspended => "suspended",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Removed => "removed",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "queued" => State::Queued,
            "held" => State::Held,
            "starting" => State::Starting,
            "running" => State::Running,
            "suspended" => State::Suspended,
            "completed" => State::Completed,
            "failed" => State::Failed,
            "removed" => State::Removed,
            _ => return None,
        })
    }
    pub fn terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Removed)
    }
    /// A supervisor may be alive.
    pub fn active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Suspended)
    }
}

/// `POST /v1/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    pub spec: JobSpec,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub hold: bool,
    /// Submit this many identical jobs (HTCondor's `queue N`); default 1.
    #[serde(default)]
    pub count: Option<u32>,
    /// Where the job's stdout/stderr go (absolute; default: files in the job dir).
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
    /// A client-chosen key (at most 128 bytes) that makes the submission idempotent: resending
    /// a request with the same key (after a lost answer) returns the jobs made the first time.
    #[serde(default)]
    pub submit_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub ids: Vec<u64>,
    /// The cluster the jobs belong to (their ProcIds are 0, 1, ... in `ids` order).
    #[serde(default)]
    pub cluster: Option<u64>,
}

/// `POST /v1/clusters`: a new, empty cluster id of the caller's, to expand `$(Cluster)` with
/// before the jobs are sent (`POST /v1/clusters/{id}/jobs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResponse {
    pub cluster: u64,
}

/// What a submit file adds to a job beyond its [`JobSpec`]; stored with the job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobExtra {
    /// The job's working directory on the host (HTCondor's initialdir/`Iwd`), absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// The job's stdin (absolute; opened as the job's user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// HTCondor's user log (`log`): events are appended as the job's user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Absolute paths copied (as the job's user) into the job's scratch dir before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transfer_input: Vec<String>,
    /// The job runs in its scratch dir (HTCondor's file transfer) instead of `cwd`, and the
    /// files it makes or changes at the top of scratch are copied back to `cwd` at exit.
    #[serde(default)]
    pub transfer: bool,
    /// The job's ClassAd from the submit file: (name, value in ClassAd syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ad: Vec<(String, String)>,
    /// Wall-time limit in seconds (HTCondor's `allowed_job_duration`); the node's
    /// `[policy] allowed_job_duration` applies when this is not set, and caps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_job_duration: Option<f64>,
}

/// One job of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterJob {
    pub spec: JobSpec,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub hold: bool,
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
    #[serde(default)]
    pub extra: JobExtra,
}

/// `POST /v1/clusters/{id}/jobs`: every job of a submit file, queued all or nothing. Either
/// `jobs`, each in full, or the compact form: `common`, one job, and `procs`, what each job
/// changes in it (see [`crate::compact`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSubmitRequest {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<ClusterJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub common: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procs: Vec<crate::compact::ProcPatch>,
    #[serde(default)]
    pub submit_key: Option<String>,
}

/// One job as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: u64,
    /// HTCondor's ClusterId and ProcId (a quick submission is a cluster too).
    #[serde(default)]
    pub cluster: u64,
    #[serde(default)]
    pub proc: u64,
    pub owner: u32,
    pub user: String,
    pub state: State,
    pub priority: i32,
    pub cpus: f64,
    pub memory: u64,
    pub command: Vec<String>,
    pub submitted_at: f64,
    pub started_at: Option<f64>,
    pub ended_at: Option<f64>,
    pub hold_reason: Option<String>,
    pub reason: Option<String>,
    pub attempt: u32,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The launcher's report (docs/REPORT.md) for finished jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// HTCondor's JobBatchName (submit `batch_name`), when the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_name: Option<String>,
    /// Seconds the job spent suspended in its current (or last) run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suspended_s: f64,
    /// Since when it is suspended, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_at: Option<f64>,
    /// The owner's user name (`owner` is the uid); the CLI's `--json` fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_name: Option<String>,
}

impl JobInfo {
    /// A suspended job thawed at `t`: its suspension counts no longer as run time.
    pub fn resumed(&mut self, t: f64) {
        if let Some(from) = self.suspended_at.take() {
            self.suspended_s += (t - from).max(0.0);
        }
    }

    /// Seconds it has run (not suspended) in its current run, at `t`.
    pub fn run_time(&self, t: f64) -> f64 {
        let Some(start) = self.started_at else {
            return 0.0;
        };
        let frozen = self.suspended_s + self.suspended_at.map_or(0.0, |f| (t - f).max(0.0));
        (t - start - frozen).max(0.0)
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Which jobs `GET /v1/jobs` and `GET /v1/history` return: those whose ClassAd (as the
/// caller sees it with `q -l`) satisfies `constraint`, owned by one of `owners` (user names)
/// when any are given, of one of `clusters` when any are given. Query parameters
/// `constraint=EXPR`, `owner=NAME` and `cluster=N` (both repeatable).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub constraint: Option<String>,
    pub owners: Vec<String>,
    /// Cluster ids (`cluster=N`, repeatable); empty: every cluster. Chosen by an index, before
    /// the constraint is evaluated.
    pub clusters: Vec<u64>,
}

impl JobFilter {
    /// The filter as URL query parameters (`&`-joined, percent-encoded; empty when none).
    pub fn query(&self) -> String {
        let mut params = Vec::new();
        if let Some(c) = &self.constraint {
            params.push(format!("constraint={}", percent_encode(c)));
        }
        for o in &self.owners {
            params.push(format!("owner={}", percent_encode(o)));
        }
        for c in &self.clusters {
            params.push(format!("cluster={c}"));
        }
        params.join("&")
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undoes [`percent_encode`] (and a form's `+` for a space); `None` for a malformed escape or
/// a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The action of `POST /v1/actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    Remove,
    Hold,
    Release,
    Suspend,
    Continue,
    /// condor_qedit: set `attribute` to `value` on queued or held jobs.
    Edit,
}

/// `CLUSTER.PROC`, or every job of `CLUSTER` (`CLUSTER.`) when `proc` is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcSelector {
    pub cluster: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc: Option<u64>,
}

/// `POST /v1/actions`: one action on every unfinished job selected by `ids`, `procs` or
/// `constraint` (the union), in one request. A constraint selects only the caller's own jobs
/// (root's: everyone's); ids and procs that name another user's job are refused one by one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkActionRequest {
    pub action: BulkAction,
    /// Why (hold only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub procs: Vec<ProcSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// The attribute to change (edit only): RequestMemory, RequestCpus, RequestDisk, JobPrio,
    /// JobBatchName or a custom one (`+Foo`, `MY.Foo` or `Foo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// Its new value, a ClassAd expression (edit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// One selected job the action was refused for, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkRefusal {
    pub id: u64,
    pub error: String,
}

/// The answer to `POST /v1/actions`: the jobs acted on (a running job removed or held is
/// being stopped), the jobs refused, and selectors that matched no unfinished job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BulkActionResponse {
    pub done: Vec<u64>,
    /// The `[cluster, proc]` of each job in `done`, in the same order.
    #[serde(default)]
    pub done_procs: Vec<(u64, u64)>,
    #[serde(default)]
    pub refused: Vec<BulkRefusal>,
    #[serde(default)]
    pub unmatched: Vec<String>,
}

/// Which of a job's output files `GET /v1/jobs/{id}/stdout|stderr` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// The last segment of its path.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub time: f64,
    pub kind: String,
    pub detail: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub cpus_total: f64,
    pub memory_total: u64,
    pub cpus_allocated: f64,
    pub memory_allocated: u64,
    /// Measured from the kernel: load average (1 min) and memory in use by jobcell's jobs.
    pub load_1m: f64,
    pub memory_used: Option<u64>,
    pub jobs: std::collections::BTreeMap<String, u64>,
    pub daemon_pid: u32,
    pub version: String,
    /// The node's machine ClassAd, (name, value in ClassAd syntax): what a job's
    /// `requirements` are matched against.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machine_ad: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `GET /v1/top`: the node and its running jobs, read from their cgroups when asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopFrame {
    /// When the cgroups were read (Unix seconds): CPU% is the change of `cpu_us` between
    /// two frames over the change of `time`.
    pub time: f64,
    pub node: TopNode,
    /// Unfinished and recent jobs by state, as `GET /v1/status` counts them.
    pub jobs_by_state: std::collections::BTreeMap<String, u64>,
    /// Running and suspended jobs (everyone's, as `GET /v1/jobs` shows them), by id.
    pub jobs: Vec<TopJob>,
}

/// The node's resources: what it offers jobs, what running jobs asked for, what they use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopNode {
    pub cpus_total: f64,
    pub cpus_allocated: f64,
    pub memory_total: u64,
    pub memory_allocated: u64,
    /// Memory charged to all jobs' cgroups; None without a memory controller.
    pub memory_used: Option<u64>,
    /// The scratch base's filesystem (statvfs); None where it cannot be measured.
    pub disk_total: Option<u64>,
    pub disk_used: Option<u64>,
    /// Scratch running jobs asked for (`request_disk`).
    pub disk_allocated: u64,
    pub load_1m: f64,
}

/// One running or suspended job and its cgroup's figures (None: not measurable here).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopJob {
    pub id: u64,
    pub cluster: u64,
    pub proc: u64,
    pub owner: u32,
    pub owner_name: String,
    pub state: State,
    pub cpus: f64,
    pub memory: u64,
    pub command: Vec<String>,
    pub started_at: Option<f64>,
    /// Seconds run since it started, less the time it was suspended.
    pub run_time: Option<f64>,
    /// CPU time (user + system) of the job's cgroup, µs.
    pub cpu_us: Option<u64>,
    pub memory_current: Option<u64>,
    /// PSI `some avg10` of `memory.pressure` (percent); cgroup v2 only.
    pub memory_pressure: Option<f64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
}

/// `GET /v1/jobs/{id}/usage`: the job's cgroup sampled over its latest run, oldest first. A
/// long job's series is thinned (every other point dropped, `interval` doubled) to stay
/// within a bound; the last point is taken as the job ends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageSeries {
    /// Seconds between points.
    pub interval: f64,
    pub points: Vec<UsagePoint>,
}

/// One sample of a job's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsagePoint {
    /// When, in seconds since the Unix epoch.
    pub t: f64,
    /// CPU time used so far, user + system, µs.
    pub cpu_us: u64,
    /// Memory charged now, bytes.
    pub mem: u64,
    /// Most memory charged so far, bytes.
    pub mem_peak: u64,
    /// Swap used now, bytes, where the kernel accounts it for the cgroup.
    #[serde(default)]
    pub swap: Option<u64>,
    /// Share of the last 10 s in which some task waited for memory, percent (PSI `some
    /// avg10`; cgroup v2 only).
    #[serde(default)]
    pub psi_some: Option<f64>,
    /// Bytes read and written so far, where the kernel accounts the cgroup's IO.
    #[serde(default)]
    pub io_r: Option<u64>,
    #[serde(default)]
    pub io_w: Option<u64>,
    /// Processes and threads now.
    pub pids: u64,
}
