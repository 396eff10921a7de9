//! The core: one thread owns the SQLite connection and the in-memory queue. Every request and
//! every supervisor exit is a [`Cmd`]; the thread takes all pending commands, applies them in
//! one transaction (group commit: one fsync for many state changes), commits, and only then
//! replies and acts (spawn, signal). A failed commit ends the daemon (crash-only: the state on
//! disk is the truth and a restart recovers from it), so no reply ever acknowledges a change
//! that was not committed. A full state dir must not be what fails a commit: the room is
//! measured before each batch ([`space`]) and work that does not fit is refused (full) or, for
//! supervisors' exits, waits until there is room.

mod actions;
mod ads;
mod batch;
mod edit;
mod finish;
mod job_policy;
mod metrics;
mod policies;
mod queries;
mod queue;
mod recovery;
mod room;
mod scheduler;
mod select;
mod submission;
#[cfg(test)]
mod test_jobs;
mod top;
mod waiters;

pub use edit::{refuse_attribute, Edit};
pub use policies::fmt_duration;
pub use select::{AdFilter, BulkSelection};
pub use waiters::has_ended;

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;

use jobcell_cgroup::CgroupRoot;
use jobcell_spec::{JobSpec, UserSpec};
use thiserror::Error;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::jobdir::{self, Claim, JobResult, SupervisorSpec};
use crate::resources::NodeResources;
use crate::space::{self, Room, StateSpace};
use crate::spawner::Spawner;
use crate::store::{AttemptEnd, Batch, JobRow, NewJob, Store, StoreError};
use crate::sys;
use crate::types::*;
use crate::userlog;

/// What the core refuses, each with one line saying why; and the failures that end the
/// daemon ([`CoreError::is_fatal`]). The API turns the kinds into HTTP statuses (api.rs).
#[derive(Debug, Error)]
pub enum CoreError {
    /// No such job or cluster.
    #[error("{0}")]
    NotFound(String),
    /// Not the caller's to see or change.
    #[error("{0}")]
    Forbidden(String),
    /// The request itself is wrong: a bad value, a user or image that does not exist.
    #[error("{0}")]
    BadRequest(String),
    /// Not possible in the job's (or cluster's) current state.
    #[error("{0}")]
    Conflict(String),
    /// More than this node offers to jobs at all: the job could never start here.
    #[error("{0}")]
    ExceedsNode(String),
    /// The state dir has no room to record it.
    #[error("{0}")]
    Full(String),
    /// The daemon failed at its part (a cgroup write, an encoding).
    #[error("{0}")]
    Internal(String),
    /// The state database failed: the daemon must end (crash-only; see the module docs).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The spawner process is gone: no job can start until a restart forks a new one.
    #[error("the spawner failed ({0})")]
    Spawner(std::io::Error),
}

impl CoreError {
    /// Whether the daemon must end: the batch is abandoned, nothing in it is answered.
    pub fn is_fatal(&self) -> bool {
        matches!(self, CoreError::Store(_) | CoreError::Spawner(_))
    }

    /// The same refusal about a part of a request (`job 12.3: ...`).
    pub fn about(self, what: &str) -> CoreError {
        use CoreError::*;
        match self {
            NotFound(m) => NotFound(format!("{what}: {m}")),
            Forbidden(m) => Forbidden(format!("{what}: {m}")),
            BadRequest(m) => BadRequest(format!("{what}: {m}")),
            Conflict(m) => Conflict(format!("{what}: {m}")),
            ExceedsNode(m) => ExceedsNode(format!("{what}: {m}")),
            Full(m) => Full(format!("{what}: {m}")),
            Internal(m) => Internal(format!("{what}: {m}")),
            fatal => fatal,
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, CoreError>>;

#[derive(Debug, Clone)]
pub enum Action {
    Remove,
    Hold(Option<String>),
    Release,
    Suspend,
    Continue,
    Edit(Box<Edit>),
}

impl Action {
    fn verb(&self) -> &'static str {
        match self {
            Action::Remove => "remove",
            Action::Hold(_) => "hold",
            Action::Release => "release",
            Action::Suspend => "suspend",
            Action::Continue => "continue",
            Action::Edit(_) => "edit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub enum Cmd {
    Submit {
        caller: u32,
        req: Box<SubmitRequest>,
        reply: Reply<SubmitResponse>,
    },
    List {
        caller: u32,
        filter: AdFilter,
        reply: Reply<Vec<JobInfo>>,
    },
    Get {
        id: u64,
        reply: Reply<JobInfo>,
    },
    History {
        caller: u32,
        limit: u32,
        filter: AdFilter,
        reply: Reply<Vec<JobInfo>>,
    },
    Events {
        caller: u32,
        id: u64,
        reply: Reply<Vec<Event>>,
    },
    /// Where the job's usage series is (its owner or root only).
    Usage {
        caller: u32,
        id: u64,
        reply: Reply<PathBuf>,
    },
    Output {
        caller: u32,
        id: u64,
        which: Stream,
        reply: Reply<PathBuf>,
    },
    Act {
        caller: u32,
        id: u64,
        action: Action,
        reply: Reply<JobInfo>,
    },
    /// One action on many jobs, in one batch.
    ActMany {
        caller: u32,
        sel: Box<BulkSelection>,
        reply: Reply<BulkActionResponse>,
    },
    Status {
        reply: Reply<NodeStatus>,
    },
    /// The node and its running jobs' cgroup figures.
    Top {
        reply: Reply<TopFrame>,
    },
    /// A supervisor's pidfd became readable.
    Exited {
        id: u64,
        attempt: u32,
    },
    /// Internal: a supervisor was spawned.
    Started {
        id: u64,
        attempt: u32,
        pid: i32,
        start: u64,
    },
    /// Internal: spawning failed.
    SpawnFailed {
        id: u64,
        attempt: u32,
        why: String,
    },
    /// A new, empty cluster for a submit file.
    NewCluster {
        caller: u32,
        reply: Reply<ClusterResponse>,
    },
    /// Every job of a submit file, all or nothing.
    SubmitCluster {
        caller: u32,
        cluster: u64,
        req: Box<ClusterSubmitRequest>,
        reply: Reply<SubmitResponse>,
    },
    /// A job's ClassAd (`jobcell q -l`).
    Ad {
        caller: u32,
        id: u64,
        reply: Reply<Vec<(String, String)>>,
    },
    /// The Prometheus text exposition (`GET /metrics`).
    Metrics {
        reply: Reply<String>,
    },
    /// Internal: a running job's wall-time limit has passed.
    Deadline {
        id: u64,
        attempt: u32,
    },
    /// Internal: sample running jobs' memory pressure (only with a pressure policy).
    PressureTick,
    /// Internal: evaluate jobs' periodic policy expressions.
    PolicyTick,
    /// Answered when the job has ended (completed, failed, removed; held too with
    /// `held_ends`): at once if it has, else in the batch that ends it.
    WaitEnd {
        id: u64,
        held_ends: bool,
        reply: Reply<JobInfo>,
    },
}

/// What the node is configured with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node: NodeResources,
    pub default_cpus: f64,
    pub default_memory: u64,
    pub jobs_dir: PathBuf,
    pub scratch_base: PathBuf,
    /// `[scratch] disk`: what a job without request_disk may write in its scratch.
    pub scratch_bound: Option<u64>,
    pub cgroup_parent: Option<PathBuf>,
    pub images: jobdir::ImagesConfig,
    pub policy: Policy,
    /// What users other than root may ask for (`[limits]`).
    pub limits: crate::limits::UserLimits,
    /// Per-job uids for jobs that would run as nobody (`[run] job_uids`).
    pub job_uids: Option<jobcell_spec::UidRange>,
    /// Seconds between samples of a running job's cgroup (`[usage] sample_interval`); None:
    /// no series.
    pub usage_interval: Option<f64>,
}

/// The node's job policies (`[policy]` in the config).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Longest a job may run (seconds); a job past it is held with the reason. A job's own
    /// `allowed_job_duration` may be shorter, never longer.
    pub allowed_job_duration: Option<f64>,
    pub pressure: Option<PressurePolicy>,
    /// How often jobs' periodic policy expressions are evaluated (HTCondor's
    /// PERIODIC_EXPR_INTERVAL); zero: never.
    pub periodic_expr_interval: std::time::Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            allowed_job_duration: None,
            pressure: None,
            periodic_expr_interval: DEFAULT_PERIODIC_EXPR_INTERVAL,
        }
    }
}

/// HTCondor's PERIODIC_EXPR_INTERVAL default.
pub const DEFAULT_PERIODIC_EXPR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Preempt a job that stays under memory pressure (the seed: "it may be a better use of
/// resources to preempt a heavily-swapping process and reschedule it").
#[derive(Debug, Clone)]
pub struct PressurePolicy {
    /// PSI `some` stall, percent of each sample interval (cgroup v2 only).
    pub stall_percent: Option<f64>,
    /// Major page faults per second (swap-ins, refaults; v1 and v2).
    pub major_faults: Option<f64>,
    /// How long a job must stay past a threshold (seconds).
    pub duration: f64,
    /// Hold instead of requeue.
    pub hold: bool,
}

/// How often running jobs' memory pressure is sampled when the policy is on.
pub const PRESSURE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The hold reason HTCondor gives a job its memory limit killed (HoldReasonCode 34).
pub const OOM_HOLD_REASON: &str = "memory usage exceeded request_memory";
/// The hold reason of a job that filled its size-limited scratch (request_disk).
pub const DISK_HOLD_REASON: &str =
    "disk usage exceeded request_disk (the job's scratch filesystem filled up: its writes got 'No space left on device')";

/// What is still pending on a job whose supervisor must end first.
#[derive(Debug, Clone)]
enum Pending {
    Remove(u32),
    Hold(String),
    /// Stop it and queue it again (a policy's preemption), with the reason.
    Requeue(String),
    /// Removed by its own policy expression, with the reason.
    PolicyRemove(String),
}

impl Pending {
    fn encode(&self) -> String {
        match self {
            Pending::Remove(by) => format!("remove:{by}"),
            Pending::Hold(r) => format!("hold:{r}"),
            Pending::Requeue(r) => format!("requeue:{r}"),
            Pending::PolicyRemove(r) => format!("policy-remove:{r}"),
        }
    }
    fn decode(s: &str) -> Option<Pending> {
        if let Some(by) = s.strip_prefix("remove:") {
            return by.parse().ok().map(Pending::Remove);
        }
        if let Some(r) = s.strip_prefix("policy-remove:") {
            return Some(Pending::PolicyRemove(r.to_string()));
        }
        if let Some(r) = s.strip_prefix("requeue:") {
            return Some(Pending::Requeue(r.to_string()));
        }
        s.strip_prefix("hold:")
            .map(|r| Pending::Hold(r.to_string()))
    }
}

struct Job {
    info: JobInfo,
    spec: String,
    stdout: Option<String>,
    stderr: Option<String>,
    sup: Option<(i32, u64)>,
    pidfd: Option<Arc<OwnedFd>>,
    pending: Option<Pending>,
    /// [`JobExtra`] as JSON (submit-file jobs).
    extra: Option<String>,
    /// Where its HTCondor user log events go.
    ulog: Option<userlog::Target>,
    /// Its own wall-time limit (seconds).
    max_duration: Option<f64>,
    /// Its policy expressions (submit-file jobs that have them).
    policy: Option<Arc<job_policy::JobPolicy>>,
    /// What its policy reads that no other column keeps.
    policy_state: job_policy::PolicyState,
    /// Its state when the policy last looked (to date EnteredCurrentStatus).
    seen_state: State,
}

impl Job {
    /// The attempt is over but the job is not: keep what the attempt did (shown until the next
    /// one ends) and forget its supervisor.
    fn end_attempt(
        &mut self,
        exit_code: Option<i32>,
        signal: Option<i32>,
        report: Option<serde_json::Value>,
    ) {
        self.info.exit_code = exit_code;
        self.info.signal = signal;
        self.info.report = report;
        self.pending = None;
        self.pidfd = None;
        self.sup = None;
    }

    fn from_row(r: JobRow) -> Job {
        let x: Option<JobExtra> = r
            .extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok());
        let ulog = x.as_ref().and_then(|x| x.log.clone()).and_then(|path| {
            let spec: JobSpec = serde_json::from_str(&r.spec).ok()?;
            Some(userlog::Target {
                path,
                user: spec.user,
                cluster: r.info.cluster,
                proc: r.info.proc,
            })
        });
        let policy = x
            .as_ref()
            .and_then(|x| job_policy::JobPolicy::from_ad(&x.ad).ok().flatten())
            .map(Arc::new);
        Job {
            max_duration: x.as_ref().and_then(|x| x.allowed_job_duration),
            policy,
            policy_state: job_policy::PolicyState::decode(r.policy.as_deref()),
            seen_state: r.info.state,
            info: r.info,
            spec: r.spec,
            stdout: r.stdout,
            stderr: r.stderr,
            sup: None,
            pidfd: None,
            pending: r.pending.as_deref().and_then(Pending::decode),
            extra: r.extra,
            ulog,
        }
    }
}

/// Counters since the daemon started (Prometheus counters may reset with the process).
#[derive(Debug, Default)]
struct Counters {
    oom_holds: u64,
    /// Jobs stopped by a node policy, by reason ("memory", "duration", "pressure").
    preemptions: std::collections::BTreeMap<&'static str, u64>,
    /// Seconds from submission (or release) to start: histogram buckets, sum, count.
    sched_buckets: Vec<u64>,
    sched_sum: f64,
    sched_count: u64,
    started: u64,
    finished: std::collections::BTreeMap<&'static str, u64>,
}

pub const SCHED_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

pub struct Core {
    cfg: CoreConfig,
    jobs: HashMap<u64, Job>,
    /// Queued jobs, per owner in start order.
    queue: queue::Queue,
    alloc_cpus: f64,
    alloc_mem: u64,
    /// CPUs allocated to each owner's running jobs, for sharing the node (see `schedule`).
    alloc_by_owner: HashMap<u32, f64>,
    /// Jobs started by the scheduler so far, and each owner's number at its last start: of
    /// owners using as much of the node, the one that waited longest goes next.
    starts: u64,
    last_start: HashMap<u32, u64>,
    spawner: Spawner,
    rt: tokio::runtime::Handle,
    tx: Sender<Cmd>,
    local: VecDeque<Cmd>,
    cgroups: Option<Arc<CgroupRoot>>,
    /// User log events of this batch, sent to the writer after the commit.
    ulog_out: Vec<userlog::Msg>,
    ulog_tx: Option<Sender<userlog::Msg>>,
    counters: Counters,
    /// When each queued job became eligible (submission or release), for the latency metric.
    queued_at: HashMap<u64, f64>,
    /// Per running job: the last pressure sample and since when it is past the threshold.
    pressure: HashMap<u64, PressureSample>,
    /// Attempts that were starting or running when the machine went down (found at recovery,
    /// see [`Core::recover`]): without a result file they are failed, never run again.
    lost_in_reboot: std::collections::HashSet<(u64, u32)>,
    /// The state dir's room, measured before each batch (see [`space`]).
    space: StateSpace,
    room: Room,
    /// What submissions of this batch may still take (free bytes beyond the floor).
    submit_budget: u64,
    /// False once the filesystem said it cannot allocate ahead (no reserve to top up).
    wal_reservable: bool,
    /// Supervisors' exits and other internal changes that came while the state dir had no
    /// room to record them: applied, in order, once it has.
    deferred: VecDeque<Cmd>,
    /// Requests waiting for a job's end, by job (see [`waiters`]).
    waiters: HashMap<u64, Vec<waiters::Waiter>>,
}

#[derive(Debug, Clone, Copy)]
struct PressureSample {
    attempt: u32,
    time: f64,
    major_faults: Option<u64>,
    stall_us: Option<u64>,
    above_since: Option<f64>,
}

/// Effects performed after the commit.
enum Effect {
    Start(u64),
    Signal(Arc<OwnedFd>, i32),
    Cleanup { id: u64, pid: i32 },
}

/// What a new cluster's row takes, at most.
const CLUSTER_NEED: u64 = 4 << 10;

/// What a job takes of the node while it runs: (owner, cpus, memory).
fn allocation(info: &JobInfo) -> (u32, f64, u64) {
    (info.owner, info.cpus, info.memory)
}

impl Core {
    /// A job's cpus and memory are taken from the node (it starts, or runs at recovery).
    fn allocate(&mut self, (owner, cpus, memory): (u32, f64, u64)) {
        self.alloc_cpus += cpus;
        self.alloc_mem += memory;
        *self.alloc_by_owner.entry(owner).or_default() += cpus;
    }

    /// ... and given back (it ended, or provably never started).
    fn deallocate(&mut self, (owner, cpus, memory): (u32, f64, u64)) {
        self.alloc_cpus = (self.alloc_cpus - cpus).max(0.0);
        self.alloc_mem = self.alloc_mem.saturating_sub(memory);
        if let Some(c) = self.alloc_by_owner.get_mut(&owner) {
            *c -= cpus;
            if *c < 1e-9 {
                self.alloc_by_owner.remove(&owner);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state_db: &Path,
        cfg: CoreConfig,
        spawner: Spawner,
        rt: tokio::runtime::Handle,
        tx: Sender<Cmd>,
        cgroups: Option<Arc<CgroupRoot>>,
    ) -> Core {
        Core {
            cfg,
            jobs: HashMap::new(),
            queue: queue::Queue::default(),
            alloc_cpus: 0.0,
            alloc_mem: 0,
            alloc_by_owner: HashMap::new(),
            starts: 0,
            last_start: HashMap::new(),
            spawner,
            rt,
            tx,
            local: VecDeque::new(),
            cgroups,
            ulog_out: Vec::new(),
            ulog_tx: None,
            counters: Counters {
                sched_buckets: vec![0; SCHED_BUCKETS.len()],
                ..Default::default()
            },
            queued_at: HashMap::new(),
            pressure: HashMap::new(),
            lost_in_reboot: Default::default(),
            space: StateSpace::new(state_db),
            room: Room {
                free: u64::MAX / 4,
                wal_reserve: 0,
            },
            submit_budget: u64::MAX / 4,
            wal_reservable: true,
            deferred: VecDeque::new(),
            waiters: HashMap::new(),
        }
    }

    /// Send HTCondor user log events to this writer (see [`userlog`]).
    pub fn set_userlog(&mut self, tx: Sender<userlog::Msg>) {
        self.ulog_tx = Some(tx);
    }

    fn ulog(&mut self, target: &Option<userlog::Target>, event: userlog::Event) {
        if let (Some(t), Some(_)) = (target, &self.ulog_tx) {
            self.ulog_out.push(userlog::Msg {
                target: t.clone(),
                event,
                time: now(),
            });
        }
    }

    fn ulog_job(&mut self, id: u64, event: userlog::Event) {
        let t = self.jobs.get(&id).and_then(|j| j.ulog.clone());
        self.ulog(&t, event);
    }

    fn job_dir(&self, id: u64) -> PathBuf {
        self.cfg.jobs_dir.join(id.to_string())
    }

    fn watch(&self, id: u64, attempt: u32, fd: Arc<OwnedFd>) {
        let tx = self.tx.clone();
        let dup = match fd.try_clone() {
            Ok(d) => d,
            Err(e) => {
                warn!("job {id}: dup pidfd: {e}");
                let _ = tx.send(Cmd::Exited { id, attempt });
                return;
            }
        };
        self.rt.spawn(async move {
            // SAFETY: `dup` is an OwnedFd the AsyncFd owns for its whole life.
            match unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE)
            } {
                Ok(afd) => {
                    let _ = afd.readable().await;
                }
                Err(e) => warn!("job {id}: watching pidfd: {e}"),
            }
            let _ = tx.send(Cmd::Exited { id, attempt });
        });
    }

    fn check_owner(&self, caller: u32, owner: u32, id: u64, verb: &str) -> Result<(), CoreError> {
        if caller == 0 || caller == owner {
            Ok(())
        } else {
            Err(CoreError::Forbidden(format!(
                "job {id} belongs to {} (uid {owner}); only its owner or root may {verb} it",
                sys::user_name(owner)
            )))
        }
    }
}

pub(super) fn load(tx: &Batch, id: u64) -> Result<JobRow, CoreError> {
    tx.job(id)?
        .ok_or_else(|| CoreError::NotFound(format!("no job {id}")))
}
