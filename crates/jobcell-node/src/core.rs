//! The core: one thread owns the SQLite connection and the in-memory queue. Every request and
//! every supervisor exit is a [`Cmd`]; the thread takes all pending commands, applies them in
//! one transaction (group commit: one fsync for many state changes), commits, and only then
//! replies and acts (spawn, signal). A failed commit ends the daemon (crash-only: the state on
//! disk is the truth and a restart recovers from it), so no reply ever acknowledges a change
//! that was not committed. A full state dir must not be what fails a commit: the room is
//! measured before each batch ([`space`]) and work that does not fit is refused (507) or, for
//! supervisors' exits, waits until there is room.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;

use jobcell_cgroup::CgroupRoot;
use jobcell_spec::{JobSpec, UserSpec};
use rusqlite::{params, OptionalExtension, Transaction};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::jobdir::{self, Claim, JobResult, SupervisorSpec};
use crate::resources::NodeResources;
use crate::space::{self, Room, StateSpace};
use crate::spawner::Spawner;
use crate::store::{add_event, Store, StoreError};
use crate::sys;
use crate::types::*;
use crate::userlog;

/// An API error: HTTP status and a one-line message.
#[derive(Debug, Clone)]
pub struct ApiErr {
    pub code: u16,
    pub msg: String,
}

impl ApiErr {
    pub fn new(code: u16, msg: impl Into<String>) -> Self {
        ApiErr {
            code,
            msg: msg.into(),
        }
    }
}

pub type Reply<T> = oneshot::Sender<Result<T, ApiErr>>;

#[derive(Debug, Clone)]
pub enum Action {
    Remove,
    Hold(Option<String>),
    Release,
    Suspend,
    Continue,
}

impl Action {
    fn verb(&self) -> &'static str {
        match self {
            Action::Remove => "remove",
            Action::Hold(_) => "hold",
            Action::Release => "release",
            Action::Suspend => "suspend",
            Action::Continue => "continue",
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
        reply: Reply<Vec<JobInfo>>,
    },
    Get {
        id: u64,
        reply: Reply<JobInfo>,
    },
    History {
        limit: u32,
        reply: Reply<Vec<JobInfo>>,
    },
    Events {
        caller: u32,
        id: u64,
        reply: Reply<Vec<Event>>,
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
    Status {
        reply: Reply<NodeStatus>,
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
}

/// The node's job policies (`[policy]` in the config).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Longest a job may run (seconds); a job past it is held with the reason. A job's own
    /// `allowed_job_duration` may be shorter, never longer.
    pub allowed_job_duration: Option<f64>,
    pub pressure: Option<PressurePolicy>,
}

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
}

impl Pending {
    fn encode(&self) -> String {
        match self {
            Pending::Remove(by) => format!("remove:{by}"),
            Pending::Hold(r) => format!("hold:{r}"),
            Pending::Requeue(r) => format!("requeue:{r}"),
        }
    }
    fn decode(s: &str) -> Option<Pending> {
        if let Some(by) = s.strip_prefix("remove:") {
            return by.parse().ok().map(Pending::Remove);
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

    fn from_row(r: crate::store::JobRow) -> Job {
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
        Job {
            max_duration: x.as_ref().and_then(|x| x.allowed_job_duration),
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
    store: Store,
    cfg: CoreConfig,
    jobs: HashMap<u64, Job>,
    /// Queued jobs in start order: (-priority, id). Ids grow with submission time.
    queue: BTreeSet<(i64, u64)>,
    alloc_cpus: f64,
    alloc_mem: u64,
    spawner: Spawner,
    rt: tokio::runtime::Handle,
    tx: Sender<Cmd>,
    local: VecDeque<Cmd>,
    cgroups: Option<CgroupRoot>,
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

type Tx<'a> = Transaction<'a>;

/// What a new cluster's row takes, at most.
const CLUSTER_NEED: u64 = 4 << 10;

/// A failing statement inside a batch poisons the batch: crash-only (see the module docs).
fn sql<T>(r: rusqlite::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic_db(e),
    }
}

fn panic_db(e: rusqlite::Error) -> ! {
    error!("state database failed ({e}); exiting so a restart recovers from the committed state");
    std::process::exit(70)
}

impl Core {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        cfg: CoreConfig,
        spawner: Spawner,
        rt: tokio::runtime::Handle,
        tx: Sender<Cmd>,
        cgroups: Option<CgroupRoot>,
    ) -> Core {
        let store_path = store.path.clone();
        Core {
            store,
            cfg,
            jobs: HashMap::new(),
            queue: BTreeSet::new(),
            alloc_cpus: 0.0,
            alloc_mem: 0,
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
            space: StateSpace::new(&store_path),
            room: Room {
                free: u64::MAX / 4,
                wal_reserve: 0,
            },
            submit_budget: u64::MAX / 4,
            wal_reservable: true,
            deferred: VecDeque::new(),
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

    /// Load the queue and reconcile jobs that were starting or running when the daemon stopped.
    pub fn recover(&mut self) -> Result<(), StoreError> {
        let rows = self.store.active_jobs()?;
        let tx = self
            .store
            .conn
            .unchecked_transaction()
            .map_err(|e| StoreError::Sql {
                path: PathBuf::new(),
                err: e,
            })?;
        // Whether the machine went down since the state was last written: then no supervisor of
        // that boot survives, and the job dirs may have lost what was never fsync'd (a claim,
        // a result: see ARCHITECTURE.md, "Durability").
        let boot = sys::boot_id().ok();
        let last: Option<String> = sql(tx
            .query_row("SELECT value FROM node WHERE key = 'boot_id'", [], |r| {
                r.get(0)
            })
            .optional());
        let rebooted = matches!((&last, &boot), (Some(a), Some(b)) if a != b);
        if let Some(b) = &boot {
            sql(tx.execute(
                "INSERT INTO node (key, value) VALUES ('boot_id', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
                params![b],
            ));
        }
        // A claim is a file: it proves nothing about a pid by itself. A supervisor is proven by
        // the daemon's own record of it, and by its membership of the supervisors cgroup (which
        // it joins before claiming, and which only root can grant).
        let supervisors_procs = self
            .cgroups
            .as_ref()
            .and_then(|r| r.every_job_parent_path())
            .map(|p| p.join("supervisors/cgroup.procs"));
        let (mut requeued, mut attached, mut ended) = (0, 0, 0);
        for r in rows {
            let id = r.info.id;
            // The supervisor the daemon saw started (committed with `running`).
            let row_sup = r.sup_pid.zip(r.sup_start);
            let mut job = Job::from_row(r);
            let state = job.info.state;
            if !state.active() {
                if state == State::Queued {
                    self.queue.insert((-(job.info.priority as i64), id));
                }
                self.jobs.insert(id, job);
                continue;
            }
            self.alloc_cpus += job.info.cpus;
            self.alloc_mem += job.info.memory;
            let attempt = job.info.attempt;
            let dir = self.cfg.jobs_dir.join(id.to_string());
            let _ = jobdir::make_dir(&dir);
            let mut claim = jobdir::read_claim(&dir, attempt).ok().flatten();
            if rebooted && claim != Some(Claim::Fenced) {
                // The attempt's supervisor died with the machine. A missing claim proves
                // nothing now (the claim may not have reached the disk): the job may have run,
                // to its end even, so it is never requeued; Exited records its result if the
                // result file survived, else fails it saying so. Fencing stops nothing here
                // but keeps every attempt claimed once.
                match claim {
                    None => {
                        let _ = jobdir::claim(&dir, attempt, &Claim::Fenced);
                        job.sup = row_sup;
                    }
                    // Names its cgroup and scratch dir, for the cleanup (the daemon's own
                    // record first).
                    Some(Claim::Supervisor { pid, starttime }) => {
                        job.sup = row_sup.or(Some((pid, starttime)))
                    }
                    Some(Claim::Fenced) => {}
                }
                self.lost_in_reboot.insert((id, attempt));
                self.local.push_back(Cmd::Exited { id, attempt });
                ended += 1;
                self.jobs.insert(id, job);
                continue;
            }
            if claim.is_none() {
                // No supervisor claimed this attempt: claim it ourselves so a supervisor still
                // on its way finds it taken, and the job provably never ran.
                match jobdir::claim(&dir, attempt, &Claim::Fenced) {
                    Ok(true) => claim = Some(Claim::Fenced),
                    Ok(false) => claim = jobdir::read_claim(&dir, attempt).ok().flatten(),
                    Err(e) => warn!("job {id}: cannot claim {}: {e}", dir.display()),
                }
            }
            if claim == Some(Claim::Fenced) {
                // Fenced now, or by an earlier recovery whose commit did not happen.
                self.alloc_cpus -= job.info.cpus;
                self.alloc_mem -= job.info.memory;
                match job.pending.take() {
                    Some(Pending::Remove(by)) => {
                        sql(tx.execute(
                            "UPDATE jobs SET state='removed', ended_at=?2, reason=?3, pending=NULL WHERE id=?1",
                            params![id as i64, now(), format!("removed by {}", sys::user_name(by))],
                        ));
                        sql(add_event(
                            &tx,
                            id,
                            "removed",
                            Some(&serde_json::json!({"by": by})),
                        ));
                        continue;
                    }
                    Some(Pending::Hold(r)) => {
                        sql(tx.execute(
                            "UPDATE jobs SET state='held', hold_reason=?2, pending=NULL WHERE id=?1",
                            params![id as i64, r],
                        ));
                        sql(add_event(
                            &tx,
                            id,
                            "held",
                            Some(&serde_json::json!({"reason": r})),
                        ));
                        job.info.state = State::Held;
                        job.info.hold_reason = Some(r);
                        self.jobs.insert(id, job);
                        continue;
                    }
                    Some(Pending::Requeue(_)) | None => {}
                }
                job.info.state = State::Queued;
                job.info.started_at = None;
                sql(tx.execute(
                    "UPDATE jobs SET state='queued', started_at=NULL, pending=NULL WHERE id=?1",
                    params![id as i64],
                ));
                sql(add_event(
                    &tx,
                    id,
                    "requeued",
                    Some(
                        &serde_json::json!({"why": "the daemon stopped before the job's supervisor started", "attempt": attempt}),
                    ),
                ));
                self.queue.insert((-(job.info.priority as i64), id));
                self.jobs.insert(id, job);
                requeued += 1;
                continue;
            }
            match claim {
                Some(Claim::Supervisor {
                    pid: claimed_pid,
                    starttime: claimed_start,
                }) => {
                    let (pid, starttime) = match row_sup {
                        Some(recorded) if recorded != (claimed_pid, claimed_start) => {
                            warn!(
                                "job {id}: claim-{attempt} names pid {claimed_pid}, not its supervisor (pid {}, recorded when it started): the record is used",
                                recorded.0
                            );
                            recorded
                        }
                        _ => (claimed_pid, claimed_start),
                    };
                    let proven = sys::pidfd_for(pid, starttime).map(|fd| {
                        let member = match &supervisors_procs {
                            Some(procs) => {
                                sys::pidfd_in_cgroup(&fd, pid, procs).unwrap_or_else(|e| {
                                    warn!("job {id}: reading {}: {e}", procs.display());
                                    Some(false)
                                })
                            }
                            None => Some(true),
                        };
                        (fd, member)
                    });
                    match proven {
                        Ok((fd, Some(true))) => {
                            job.sup = Some((pid, starttime));
                            if job.info.state == State::Starting {
                                job.info.state = State::Running;
                                sql(tx.execute(
                                    "UPDATE jobs SET state='running', sup_pid=?2, sup_start=?3 WHERE id=?1",
                                    params![id as i64, pid, starttime as i64],
                                ));
                            }
                            if job.pending.is_some() {
                                // An acknowledged remove/hold the previous daemon may not have
                                // delivered: deliver it (again; SIGTERM twice is harmless).
                                let _ = sys::pidfd_signal(&fd, libc::SIGTERM);
                            }
                            let fd = Arc::new(fd);
                            job.pidfd = Some(fd.clone());
                            self.watch(id, attempt, fd);
                            attached += 1;
                            let started_at = job.info.started_at.unwrap_or_else(now);
                            self.jobs.insert(id, job);
                            self.arm_deadline(id, attempt, started_at);
                            continue;
                        }
                        Ok((_, Some(false))) => {
                            // Not a process jobcell started: never signalled, never watched.
                            warn!(
                                "job {id}: claim-{attempt} names pid {pid}, which is not its supervisor (not in jobcell's supervisors cgroup): the attempt is recorded as lost and nothing is signalled"
                            );
                            job.sup = row_sup;
                            self.local.push_back(Cmd::SpawnFailed {
                                id,
                                attempt,
                                why: format!(
                                    "attempt {attempt}'s claim names pid {pid}, which is not a jobcell supervisor; the attempt was lost when the daemon restarted"
                                ),
                            });
                            ended += 1;
                        }
                        // Gone (now or while proving it): Exited reads its result.
                        Ok((_, None)) | Err(_) => {
                            job.sup = Some((pid, starttime));
                            self.local.push_back(Cmd::Exited { id, attempt });
                            ended += 1;
                        }
                    }
                }
                _ => {
                    // Unreadable claim: treat the supervisor as gone; Exited records why.
                    self.local.push_back(Cmd::Exited { id, attempt });
                    ended += 1;
                }
            }
            self.jobs.insert(id, job);
        }
        sql(tx.commit());
        if rebooted {
            warn!("the machine restarted since this state was written: jobs that were starting or running are recorded as ended (with their result if it reached the disk), none is run again");
        }
        info!(
            "recovered {} unfinished jobs: {attached} running re-attached, {ended} ended while down, {requeued} requeued (never started)",
            self.jobs.len()
        );
        Ok(())
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

    /// The core loop; returns when every sender is gone.
    pub fn run(mut self, rx: Receiver<Cmd>) {
        let mut effects = Vec::new();
        let mut replies: Vec<Box<dyn FnOnce()>> = Vec::new();
        // The loop's transactions borrow the connection while apply() mutates the rest.
        let mut store = std::mem::replace(&mut self.store, dummy_store());
        loop {
            let mut batch: Vec<Cmd> = self.local.drain(..).collect();
            if batch.is_empty() {
                // With changes waiting for room, look at the state dir again every second.
                let next = if self.deferred.is_empty() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(std::time::Duration::from_secs(1))
                };
                match next {
                    Ok(c) => batch.push(c),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let writable = self.measure_room(&store.path);
            if writable {
                batch.splice(0..0, self.deferred.drain(..));
            } else {
                batch = self.hold_writes(batch);
            }
            // IMMEDIATE: the write lock is taken (waiting the busy timeout) at BEGIN. A
            // deferred transaction that reads first (a keyed submission looks its key up)
            // cannot wait when it upgrades: SQLite returns BUSY at once.
            let tx = match store
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            {
                Ok(t) => t,
                Err(e) => panic_db(e),
            };
            for c in batch {
                self.apply(&tx, c, &mut replies, &mut effects);
            }
            if writable {
                self.schedule(&tx, &mut effects);
            }
            if let Err(e) = tx.commit() {
                panic_db(e);
            }
            for r in replies.drain(..) {
                r();
            }
            if let Some(u) = &self.ulog_tx {
                for m in self.ulog_out.drain(..) {
                    let _ = u.send(m);
                }
            }
            self.perform(std::mem::take(&mut effects));
        }
    }

    /// Measures the state dir's room for this batch; whether the batch may write. Tops the
    /// queue database's reserve up again once its commits have used half of it.
    fn measure_room(&mut self, db: &Path) -> bool {
        let was = self.room.writable();
        self.room = self.space.measure();
        if self.wal_reservable
            && self.room.wal_reserve < crate::store::RESERVE_WAL as u64 / 2
            && self.room.free >= space::SUBMIT_FLOOR
        {
            if let Err(e) = crate::store::reserve_wal(db) {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.wal_reservable = false;
                }
            }
        }
        self.submit_budget = self.room.free.saturating_sub(space::SUBMIT_FLOOR);
        let now = self.room.writable();
        if was && !now {
            warn!(
                "state dir {} full ({} free): changes wait and requests that write are refused until there is room",
                self.space.dir().display(),
                space::fmt_bytes(self.room.free)
            );
        } else if now && !was {
            info!(
                "state dir {} has room again ({} free): recording {} waiting changes",
                self.space.dir().display(),
                space::fmt_bytes(self.room.free),
                self.deferred.len()
            );
        }
        now
    }

    /// The one-line refusal of a request that needs `need` bytes of free space.
    fn full(&self, need: u64) -> ApiErr {
        ApiErr::new(
            507,
            format!(
                "state dir {} full: {} free, need {}",
                self.space.dir().display(),
                space::fmt_bytes(self.room.free),
                space::fmt_bytes(need)
            ),
        )
    }

    /// A batch on a state dir without room to commit anything: reads are answered, requests
    /// that write are refused, internal changes wait in `deferred`.
    fn hold_writes(&mut self, batch: Vec<Cmd>) -> Vec<Cmd> {
        fn refuse<T>(reply: Reply<T>, e: &ApiErr) {
            let _ = reply.send(Err(e.clone()));
        }
        let refusal = self.full(space::WRITE_FLOOR);
        let mut reads = Vec::new();
        for c in batch {
            match c {
                Cmd::Submit { reply, .. } | Cmd::SubmitCluster { reply, .. } => {
                    refuse(reply, &refusal)
                }
                Cmd::NewCluster { reply, .. } => refuse(reply, &refusal),
                Cmd::Act { reply, .. } => refuse(reply, &refusal),
                Cmd::Exited { .. }
                | Cmd::Started { .. }
                | Cmd::SpawnFailed { .. }
                | Cmd::Deadline { .. } => self.deferred.push_back(c),
                // The next tick samples again.
                Cmd::PressureTick => {}
                Cmd::List { .. }
                | Cmd::Get { .. }
                | Cmd::History { .. }
                | Cmd::Events { .. }
                | Cmd::Output { .. }
                | Cmd::Status { .. }
                | Cmd::Ad { .. }
                | Cmd::Metrics { .. } => reads.push(c),
            }
        }
        reads
    }

    fn apply(
        &mut self,
        tx: &Tx,
        c: Cmd,
        replies: &mut Vec<Box<dyn FnOnce()>>,
        effects: &mut Vec<Effect>,
    ) {
        // Every reply, reads included, is sent after the batch's commit: a read must not show
        // a change (a job's result folded in this batch, say) that a crash could still undo.
        fn later<T: Send + 'static>(
            replies: &mut Vec<Box<dyn FnOnce()>>,
            reply: Reply<T>,
            v: Result<T, ApiErr>,
        ) {
            replies.push(Box::new(move || {
                let _ = reply.send(v);
            }));
        }
        match c {
            Cmd::Submit { caller, req, reply } => {
                let r = self.submit(tx, caller, *req);
                later(replies, reply, r);
            }
            Cmd::NewCluster { caller, reply } => {
                let r = self.take_room(CLUSTER_NEED).map(|()| ClusterResponse {
                    cluster: self.new_cluster(tx, caller),
                });
                later(replies, reply, r);
            }
            Cmd::SubmitCluster {
                caller,
                cluster,
                req,
                reply,
            } => {
                let r = self.submit_cluster(tx, caller, cluster, *req);
                later(replies, reply, r);
            }
            Cmd::Ad { caller, id, reply } => {
                let r = self.ad(tx, caller, id);
                later(replies, reply, r);
            }
            Cmd::Metrics { reply } => {
                let r = self.metrics(tx);
                later(replies, reply, r);
            }
            Cmd::Deadline { id, attempt } => self.deadline(tx, id, attempt, effects),
            Cmd::PressureTick => self.pressure_tick(tx, effects),
            Cmd::List { reply } => {
                let mut v: Vec<JobInfo> = self.jobs.values().map(|j| j.info.clone()).collect();
                v.sort_by_key(|j| j.id);
                later(replies, reply, Ok(v));
            }
            Cmd::Get { id, reply } => {
                let r = self.get(tx, id);
                later(replies, reply, r);
            }
            Cmd::History { limit, reply } => {
                let r = history(tx, limit);
                later(replies, reply, r);
            }
            Cmd::Events { caller, id, reply } => {
                let r = self.events(tx, caller, id);
                later(replies, reply, r);
            }
            Cmd::Output {
                caller,
                id,
                which,
                reply,
            } => {
                let r = self.output(tx, caller, id, which);
                later(replies, reply, r);
            }
            Cmd::Status { reply } => {
                let r = self.status(tx);
                later(replies, reply, r);
            }
            Cmd::Act {
                caller,
                id,
                action,
                reply,
            } => {
                let r = self.act(tx, caller, id, action, effects);
                later(replies, reply, r);
            }
            Cmd::Started {
                id,
                attempt,
                pid,
                start,
            } => self.started(tx, id, attempt, pid, start, effects),
            Cmd::SpawnFailed { id, attempt, why } => {
                let res = JobResult::failed(attempt, why, now());
                self.finish(tx, id, Some(res), effects);
            }
            Cmd::Exited { id, attempt } => {
                let Some(j) = self.jobs.get(&id) else { return };
                if j.info.attempt != attempt || !j.info.state.active() {
                    return;
                }
                let dir = self.job_dir(id);
                let lost = self.lost_in_reboot.remove(&(id, attempt));
                let failed = |why: String| JobResult::failed(attempt, why, now());
                let sup_pid = j.sup.map(|(p, _)| p);
                let file = jobdir::read_result(&dir, attempt);
                let unwritten = match &file {
                    Ok(jobdir::ResultFile::Missing) => {
                        jobdir::read_unwritten(&dir, attempt).map(|e| e.to_string())
                    }
                    _ => None,
                };
                let unusable = match &file {
                    Ok(jobdir::ResultFile::Found(_)) => false,
                    // (Missing in the same boot: finish() cleans up after a killed supervisor.)
                    Ok(jobdir::ResultFile::Missing) => lost,
                    _ => true,
                };
                let res = match file {
                    Ok(jobdir::ResultFile::Found(r)) => Some(r),
                    // The job ran to its end but what it ended with was lost (a power loss
                    // between the supervisor's write and the daemon's commit): recorded as
                    // failed with the reason, never run again.
                    Ok(jobdir::ResultFile::Damaged(why)) => Some(failed(format!(
                        "attempt {attempt} ended but its result was lost ({why}; the machine went down before it reached the disk?); the job is not run again"
                    ))),
                    Ok(jobdir::ResultFile::Missing) if lost => Some(failed(format!(
                        "the machine went down (reboot or power loss) while attempt {attempt} was starting or running, and no result of it reached the disk; the job is not run again"
                    ))),
                    // The supervisor could not write the result (a full state dir): say so
                    // rather than suggest it was killed.
                    Ok(jobdir::ResultFile::Missing) if unwritten.is_some() => Some(failed(format!(
                        "attempt {attempt} ended but its result could not be written ({}: {}); the job is not run again",
                        jobdir::result_path(&dir, attempt).display(),
                        unwritten.unwrap_or_default()
                    ))),
                    // A supervisor that died before claiming never started the job: say so
                    // (it could not write its claim: a full or read-only state dir) rather
                    // than suggest it was killed mid-job.
                    Ok(jobdir::ResultFile::Missing)
                        if sup_pid.is_some()
                            && matches!(jobdir::read_claim(&dir, attempt), Ok(None)) =>
                    {
                        Some(failed(format!(
                            "the job's supervisor (pid {}) ended before claiming attempt {attempt}, so the job never ran (its complaint is in the daemon's log; a full or read-only state dir?)",
                            sup_pid.unwrap_or(0)
                        )))
                    }
                    Ok(jobdir::ResultFile::Missing) => None,
                    Err(e) => Some(failed(format!(
                        "attempt {attempt}'s result could not be read ({}: {e}); the job is not run again",
                        jobdir::result_path(&dir, attempt).display()
                    ))),
                };
                // Without a usable result the supervisor may not have cleaned up (and on a
                // disk-backed scratch base a machine restart leaves its scratch dir): as for a
                // killed supervisor, its cgroup and scratch dir go (gone already is fine).
                if let (Some(pid), true) = (sup_pid, unusable) {
                    effects.push(Effect::Cleanup { id, pid });
                }
                self.finish(tx, id, res, effects);
            }
        }
    }

    fn check_owner(&self, caller: u32, owner: u32, id: u64, verb: &str) -> Result<(), ApiErr> {
        if caller == 0 || caller == owner {
            Ok(())
        } else {
            Err(ApiErr::new(
                403,
                format!(
                    "job {id} belongs to {} (uid {owner}); only its owner or root may {verb} it",
                    sys::user_name(owner)
                ),
            ))
        }
    }

    /// The ids of the caller's jobs made by an earlier request with this key (empty: none).
    fn resubmitted(&self, tx: &Tx, caller: u32, key: &Option<String>) -> Result<Vec<u64>, ApiErr> {
        let Some(k) = key else {
            return Ok(Vec::new());
        };
        if k.is_empty() || k.len() > 128 {
            return Err(ApiErr::new(400, "submit_key must be 1 to 128 bytes"));
        }
        let mut st = sql(tx.prepare_cached(
            "SELECT id FROM jobs WHERE owner = ?1 AND submit_key = ?2 ORDER BY id",
        ));
        Ok(sql(sql(
            st.query_map(params![caller, k], |r| r.get::<_, i64>(0))
        )
        .map(|r| r.map(|v| v as u64))
        .collect::<rusqlite::Result<Vec<_>>>()))
    }

    /// Check one job's request and settle its defaults; writes nothing. `images` remembers
    /// the images already found visible to the caller (a cluster names the same one often).
    fn check_job(
        &self,
        caller: u32,
        mut spec: JobSpec,
        stdout: &Option<String>,
        stderr: &Option<String>,
        extra: Option<&JobExtra>,
        images: &mut std::collections::HashSet<String>,
    ) -> Result<(JobSpec, f64, u64), ApiErr> {
        // Who the job runs as: a user may only run jobs as themself; root may choose.
        let (uid, _) = sys::lookup_user(&spec.user)
            .ok_or_else(|| ApiErr::new(400, format!("user '{}' does not exist", spec.user)))?;
        if caller != 0 && uid != caller {
            return Err(ApiErr::new(
                403,
                format!(
                    "only root may submit jobs that run as another user (asked for '{}')",
                    spec.user
                ),
            ));
        }
        if caller != 0 {
            spec.user = UserSpec::Uid(uid);
        }
        // The node decides where scratch dirs go.
        spec.scratch_base = self.cfg.scratch_base.clone();
        spec.resources.scratch_bound = match spec.resources.disk {
            None => self.cfg.scratch_bound,
            Some(_) => None,
        };
        let cpus = spec.resources.cpus.unwrap_or(self.cfg.default_cpus);
        let memory = spec.resources.memory.unwrap_or(self.cfg.default_memory);
        spec.resources.cpus = Some(cpus);
        spec.resources.memory = Some(memory);
        spec.validate()
            .map_err(|e| ApiErr::new(400, e.to_string()))?;
        if caller != 0 {
            self.cfg
                .limits
                .apply(&mut spec)
                .map_err(|e| ApiErr::new(403, e.to_string()))?;
        }
        if let Some(name) = &spec.image {
            if !images.contains(name) {
                // Refuse an unknown or invisible image now, not when the job starts.
                self.cfg
                    .images
                    .open()
                    .and_then(|s| s.show(name, caller))
                    .map_err(|e| ApiErr::new(400, format!("image '{name}': {e}")))?;
                images.insert(name.clone());
            }
        }
        let node = self.cfg.node;
        if cpus > node.cpus + 1e-9 {
            return Err(ApiErr::new(
                422,
                format!(
                    "the job asks for {cpus} cpus but this node has {} for jobs",
                    node.cpus
                ),
            ));
        }
        if memory > node.memory {
            return Err(ApiErr::new(
                422,
                format!(
                    "the job asks for {} of memory but this node has {} for jobs",
                    jobcell_spec::format_size(memory),
                    jobcell_spec::format_size(node.memory)
                ),
            ));
        }
        for (what, p) in [("stdout", stdout), ("stderr", stderr)] {
            if let Some(p) = p {
                jobcell_spec::clean_abs_path(what, Path::new(p))
                    .map_err(|e| ApiErr::new(400, e.to_string()))?;
            }
        }
        if let Some(x) = extra {
            // Opened as the job's user by the supervisor: only the shape is checked here.
            let abs = |what: &str, p: &str| {
                if p.starts_with('/') && !p.contains('\0') && p.len() <= 4096 {
                    Ok(())
                } else {
                    Err(ApiErr::new(
                        400,
                        format!(
                            "{what} '{p}' must be an absolute path (at most 4096 bytes, no NUL)"
                        ),
                    ))
                }
            };
            for (what, p) in [("initialdir", &x.cwd), ("input", &x.stdin), ("log", &x.log)] {
                if let Some(p) = p {
                    abs(what, p)?;
                }
            }
            for p in &x.transfer_input {
                abs("transfer_input_files entry", p)?;
            }
            if x.ad.len() > 10_000 {
                return Err(ApiErr::new(400, "a job ad has at most 10000 attributes"));
            }
            if let Some(d) = x.allowed_job_duration {
                if !(d.is_finite() && d > 0.0) {
                    return Err(ApiErr::new(
                        400,
                        format!("allowed_job_duration {d} must be a number of seconds > 0"),
                    ));
                }
            }
        }
        Ok((spec, cpus, memory))
    }

    fn new_cluster(&self, tx: &Tx, caller: u32) -> u64 {
        sql(tx.execute(
            "INSERT INTO clusters (owner, created_at) VALUES (?1, ?2)",
            params![caller, now()],
        ));
        tx.last_insert_rowid() as u64
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_job(
        &mut self,
        tx: &Tx,
        caller: u32,
        (cluster, proc): (u64, u64),
        spec: &JobSpec,
        spec_json: &str,
        (cpus, memory): (f64, u64),
        (priority, hold): (i32, bool),
        (stdout, stderr): (&Option<String>, &Option<String>),
        extra: Option<&JobExtra>,
        submit_key: &Option<String>,
        t: f64,
    ) -> u64 {
        let command = serde_json::to_string(&spec.argv).unwrap_or_default();
        let user = match &spec.user {
            UserSpec::Uid(u) => sys::user_name(*u),
            u => u.to_string(),
        };
        let state = if hold { State::Held } else { State::Queued };
        let hold_reason = hold.then(|| "held at submission".to_string());
        let extra_json = extra.map(|x| serde_json::to_string(x).unwrap_or_default());
        let mut ins = sql(tx.prepare_cached(
            "INSERT INTO jobs (owner, user, state, priority, cpus, memory, command, spec, stdout, stderr, submitted_at, hold_reason, submit_key, cluster, proc, extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        ));
        sql(ins.execute(params![
            caller,
            user,
            state.as_str(),
            priority,
            cpus,
            memory as i64,
            command,
            spec_json,
            stdout,
            stderr,
            t,
            hold_reason,
            submit_key,
            cluster as i64,
            proc as i64,
            extra_json,
        ]));
        let id = tx.last_insert_rowid() as u64;
        sql(add_event(
            tx,
            id,
            "submitted",
            Some(
                &serde_json::json!({"owner": caller, "held": hold, "cluster": cluster, "proc": proc}),
            ),
        ));
        let info = JobInfo {
            id,
            cluster,
            proc,
            owner: caller,
            user,
            state,
            priority,
            cpus,
            memory,
            command: spec.argv.clone(),
            submitted_at: t,
            started_at: None,
            ended_at: None,
            hold_reason: hold_reason.clone(),
            reason: None,
            attempt: 0,
            exit_code: None,
            signal: None,
            report: None,
        };
        if state == State::Queued {
            self.queue.insert((-(priority as i64), id));
            self.queued_at.insert(id, t);
        }
        let ulog = extra
            .and_then(|x| x.log.clone())
            .map(|path| userlog::Target {
                path,
                user: spec.user.clone(),
                cluster,
                proc,
            });
        self.jobs.insert(
            id,
            Job {
                info,
                spec: spec_json.to_string(),
                stdout: stdout.clone(),
                stderr: stderr.clone(),
                sup: None,
                pidfd: None,
                pending: None,
                extra: extra_json,
                ulog,
                max_duration: extra.and_then(|x| x.allowed_job_duration),
            },
        );
        self.ulog_job(id, userlog::Event::Submitted);
        if let Some(r) = hold_reason {
            self.ulog_job(id, userlog::Event::Held(r));
        }
        id
    }

    fn submit(
        &mut self,
        tx: &Tx,
        caller: u32,
        req: SubmitRequest,
    ) -> Result<SubmitResponse, ApiErr> {
        let ids = self.resubmitted(tx, caller, &req.submit_key)?;
        if !ids.is_empty() {
            let cluster = self.jobs.get(&ids[0]).map(|j| j.info.cluster);
            return Ok(SubmitResponse { ids, cluster });
        }
        let count = req.count.unwrap_or(1);
        if count == 0 || count > 10_000 {
            return Err(ApiErr::new(
                400,
                format!("count {count} must be between 1 and 10000"),
            ));
        }
        let (spec, cpus, memory) = self.check_job(
            caller,
            req.spec,
            &req.stdout,
            &req.stderr,
            None,
            &mut Default::default(),
        )?;
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| ApiErr::new(500, e.to_string()))?;
        self.take_room(space::jobs_need(count as u64, spec_json.len() as u64))?;
        // The cluster's insert comes first: it takes the write lock (waiting out another
        // writer), which a transaction that has only read cannot wait for.
        let cluster = self.new_cluster(tx, caller);
        if let Err(e) = self.make_job_dirs(tx, count as u64) {
            sql(tx.execute(
                "DELETE FROM clusters WHERE id = ?1",
                params![cluster as i64],
            ));
            return Err(e);
        }
        let t = now();
        let ids = (0..count as u64)
            .map(|proc| {
                self.insert_job(
                    tx,
                    caller,
                    (cluster, proc),
                    &spec,
                    &spec_json,
                    (cpus, memory),
                    (req.priority, req.hold),
                    (&req.stdout, &req.stderr),
                    None,
                    &req.submit_key,
                    t,
                )
            })
            .collect();
        Ok(SubmitResponse {
            ids,
            cluster: Some(cluster),
        })
    }

    /// A submit file's jobs: every one is checked before any is written, so the cluster is
    /// queued whole or not at all.
    fn submit_cluster(
        &mut self,
        tx: &Tx,
        caller: u32,
        cluster: u64,
        req: ClusterSubmitRequest,
    ) -> Result<SubmitResponse, ApiErr> {
        let ids = self.resubmitted(tx, caller, &req.submit_key)?;
        if !ids.is_empty() {
            return Ok(SubmitResponse {
                ids,
                cluster: Some(cluster),
            });
        }
        let owner: Option<u32> = sql(tx
            .query_row(
                "SELECT owner FROM clusters WHERE id = ?1",
                params![cluster as i64],
                |r| r.get(0),
            )
            .optional());
        match owner {
            None => return Err(ApiErr::new(404, format!("no cluster {cluster}"))),
            Some(o) if o != caller => {
                return Err(ApiErr::new(
                    403,
                    format!("cluster {cluster} belongs to {}", sys::user_name(o)),
                ))
            }
            _ => {}
        }
        let used: i64 = sql(tx.query_row(
            "SELECT count(*) FROM jobs WHERE cluster = ?1",
            params![cluster as i64],
            |r| r.get(0),
        ));
        if used > 0 {
            return Err(ApiErr::new(
                409,
                format!("cluster {cluster} already has jobs; ask for a new one"),
            ));
        }
        if req.jobs.is_empty() || req.jobs.len() > 100_000 {
            return Err(ApiErr::new(
                400,
                format!("a cluster has 1 to 100000 jobs, not {}", req.jobs.len()),
            ));
        }
        let mut images = Default::default();
        let mut checked = Vec::with_capacity(req.jobs.len());
        for (proc, j) in req.jobs.into_iter().enumerate() {
            let (spec, cpus, memory) = self
                .check_job(
                    caller,
                    j.spec,
                    &j.stdout,
                    &j.stderr,
                    Some(&j.extra),
                    &mut images,
                )
                .map_err(|e| ApiErr::new(e.code, format!("job {cluster}.{proc}: {}", e.msg)))?;
            let spec_json =
                serde_json::to_string(&spec).map_err(|e| ApiErr::new(500, e.to_string()))?;
            checked.push((
                spec, spec_json, cpus, memory, j.priority, j.hold, j.stdout, j.stderr, j.extra,
            ));
        }
        let spec_bytes: u64 = checked.iter().map(|c| c.1.len() as u64).sum();
        self.take_room(space::jobs_need(checked.len() as u64, 0) + 2 * spec_bytes)?;
        self.make_job_dirs(tx, checked.len() as u64)?;
        let t = now();
        let mut ids = Vec::with_capacity(checked.len());
        for (proc, (spec, spec_json, cpus, memory, prio, hold, out, err, extra)) in
            checked.into_iter().enumerate()
        {
            ids.push(self.insert_job(
                tx,
                caller,
                (cluster, proc as u64),
                &spec,
                &spec_json,
                (cpus, memory),
                (prio, hold),
                (&out, &err),
                Some(&extra),
                &req.submit_key,
                t,
            ));
        }
        Ok(SubmitResponse {
            ids,
            cluster: Some(cluster),
        })
    }

    /// Takes `need` bytes of this batch's room for a submission, or refuses it (507).
    fn take_room(&mut self, need: u64) -> Result<(), ApiErr> {
        if need > self.submit_budget {
            return Err(self.full(space::SUBMIT_FLOOR + need));
        }
        self.submit_budget -= need;
        Ok(())
    }

    /// Makes the dirs of the next `count` jobs (the ids their rows will get) before they are
    /// acknowledged: a job whose dir cannot be made is refused now rather than accepted and
    /// failed at its start.
    fn make_job_dirs(&self, tx: &Tx, count: u64) -> Result<(), ApiErr> {
        let last: i64 = sql(tx.query_row(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)",
            [],
            |r| r.get(0),
        ));
        let first = last as u64 + 1;
        let mut made = Vec::new();
        for id in first..first + count {
            let dir = self.job_dir(id);
            // Root's and closed, as every job dir (jobdir::make_dir).
            match std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&dir)
            {
                Ok(()) => made.push(dir),
                // Left by a batch whose commit never happened: the id is free again.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    for d in made {
                        let _ = std::fs::remove_dir(d);
                    }
                    let code = match e.raw_os_error() {
                        Some(libc::ENOSPC | libc::EDQUOT) => 507,
                        _ => 500,
                    };
                    return Err(ApiErr::new(
                        code,
                        format!("creating {}: {e}", dir.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn get(&self, tx: &Tx, id: u64) -> Result<JobInfo, ApiErr> {
        if let Some(j) = self.jobs.get(&id) {
            return Ok(j.info.clone());
        }
        load(tx, id).map(|r| r.info)
    }

    fn events(&self, tx: &Tx, caller: u32, id: u64) -> Result<Vec<Event>, ApiErr> {
        let owner = self.owner_of(tx, id)?;
        self.check_owner(caller, owner, id, "read the events of")?;
        let mut st = sql(tx
            .prepare_cached("SELECT time, kind, detail FROM events WHERE job = ?1 ORDER BY rowid"));
        let rows = sql(st.query_map(params![id as i64], |r| {
            let d: Option<String> = r.get(2)?;
            Ok(Event {
                time: r.get(0)?,
                kind: r.get(1)?,
                detail: d.and_then(|s| serde_json::from_str(&s).ok()),
            })
        }));
        Ok(sql(rows.collect::<rusqlite::Result<Vec<_>>>()))
    }

    /// The job's ClassAd: what its submit file said (or, for a quick submission, what its
    /// spec says in HTCondor's names), with the live attributes as the daemon knows them now.
    /// Others than the owner and root do not see the environment (it may hold secrets).
    fn ad(&self, tx: &Tx, caller: u32, id: u64) -> Result<Vec<(String, String)>, ApiErr> {
        use jobcell_spec::submit::classad_string as q;
        let (info, spec, extra) = match self.jobs.get(&id) {
            Some(j) => (j.info.clone(), j.spec.clone(), j.extra.clone()),
            None => {
                let r = load(tx, id)?;
                (r.info, r.spec, r.extra)
            }
        };
        let x: JobExtra = extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default();
        let spec: Option<JobSpec> = serde_json::from_str(&spec).ok();
        let mut ad: Vec<(String, String)> = x.ad.clone();
        if ad.is_empty() {
            if let Some(sp) = &spec {
                let (cmd, args) = sp
                    .argv
                    .split_first()
                    .map(|(c, a)| (c.clone(), a.to_vec()))
                    .unwrap_or_default();
                let env: std::collections::BTreeMap<String, String> =
                    sp.env.iter().cloned().collect();
                ad.push(("Cmd".into(), q(&cmd)));
                ad.push((
                    "Arguments".into(),
                    q(&jobcell_spec::submit::args_to_v2_raw(&args)),
                ));
                ad.push((
                    "Environment".into(),
                    q(&jobcell_spec::submit::env_to_v2_raw(&env)),
                ));
                if let Some(i) = &sp.image {
                    ad.push(("JobcellImage".into(), q(i)));
                }
            }
        }
        let mut set =
            |k: &str, v: String| match ad.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
                Some(e) => e.1 = v,
                None => ad.push((k.to_string(), v)),
            };
        let status = match info.state {
            State::Queued => 1,
            State::Starting | State::Running => 2,
            State::Removed => 3,
            State::Completed | State::Failed => 4,
            State::Held => 5,
            State::Suspended => 7,
        };
        set("ClusterId", info.cluster.to_string());
        set("ProcId", info.proc.to_string());
        set("JobcellId", info.id.to_string());
        set("JobStatus", status.to_string());
        set("JobcellState", q(info.state.as_str()));
        set("Owner", q(&sys::user_name(info.owner)));
        set("JobcellUser", q(&info.user));
        // The uid the job ran as: its own when it ran as nobody with per-job uids.
        if let Some(uid) = info
            .report
            .as_ref()
            .and_then(|r| r["isolation"]["user"]["uid"].as_u64())
        {
            set("JobcellUid", uid.to_string());
        }
        set("JobPrio", info.priority.to_string());
        set("RequestCpus", info.cpus.to_string());
        set("RequestMemory", info.memory.div_ceil(1 << 20).to_string());
        set("QDate", (info.submitted_at as i64).to_string());
        set("NumJobStarts", info.attempt.to_string());
        if let Some(t) = info.started_at {
            set("JobCurrentStartDate", (t as i64).to_string());
        }
        if let Some(t) = info.ended_at {
            set("CompletionDate", (t as i64).to_string());
        }
        if let Some(limit) = x
            .allowed_job_duration
            .or(self.cfg.policy.allowed_job_duration)
        {
            set("AllowedJobDuration", (limit as i64).to_string());
        }
        match (&info.hold_reason, info.state) {
            (Some(r), State::Held) => {
                set("HoldReason", q(r));
                if r == OOM_HOLD_REASON {
                    set("HoldReasonCode", "34".into());
                } else if r.starts_with("The job exceeded allowed job duration") {
                    set("HoldReasonCode", "46".into());
                }
            }
            _ => {
                ad.retain(|(k, _)| k != "HoldReason" && k != "HoldReasonCode");
            }
        }
        let mut set =
            |k: &str, v: String| match ad.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(k)) {
                Some(e) => e.1 = v,
                None => ad.push((k.to_string(), v)),
            };
        if let Some(r) = &info.reason {
            set(
                if info.state == State::Removed {
                    "RemoveReason"
                } else {
                    "JobcellReason"
                },
                q(r),
            );
        }
        if let Some(c) = info.exit_code {
            set("ExitCode", c.to_string());
            set("ExitBySignal", "false".into());
        }
        if let Some(sig) = info.signal {
            set("ExitBySignal", "true".into());
            set("ExitSignal", sig.to_string());
        }
        if let Some(r) = &info.report {
            if let Some(w) = r["wall_time_s"].as_f64() {
                set("RemoteWallClockTime", format!("{w:.3}"));
            }
            let cpu = |k: &str| r[k].as_u64().map(|us| format!("{:.3}", us as f64 / 1e6));
            if let Some(u) = cpu("cpu_user_us") {
                set("RemoteUserCpu", u);
            }
            if let Some(u) = cpu("cpu_system_us") {
                set("RemoteSysCpu", u);
            }
            if let Some(p) = r["usage"]["memory_peak"].as_u64() {
                set("MemoryUsage", p.div_ceil(1 << 20).to_string());
            }
            if let Some(o) = r["oom_killed"].as_bool() {
                set("JobcellOomKilled", o.to_string());
            }
        }
        if caller != 0 && caller != info.owner {
            ad.retain(|(k, _)| !k.eq_ignore_ascii_case("Environment"));
        }
        Ok(ad)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    fn metrics(&self, tx: &Tx) -> Result<String, ApiErr> {
        use std::fmt::Write;
        let mut o = String::new();
        let head = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        // One sample per label value, 0 for values not seen yet (so every series exists).
        let labeled =
            |o: &mut String,
             name: &str,
             label: &str,
             values: &[&str],
             counts: &std::collections::BTreeMap<&'static str, u64>| {
                for v in values {
                    let n = counts.get(v).copied().unwrap_or(0);
                    let _ = writeln!(o, "{name}{{{label}=\"{v}\"}} {n}");
                }
            };
        // Jobs by state: the unfinished from memory, the finished from the database.
        let mut by_state: std::collections::BTreeMap<&str, u64> = [
            "queued",
            "held",
            "starting",
            "running",
            "suspended",
            "completed",
            "failed",
            "removed",
        ]
        .iter()
        .map(|s| (*s, 0))
        .collect();
        let mut st = sql(tx.prepare_cached(
            "SELECT state, count(*) FROM jobs WHERE state IN ('completed','failed','removed') GROUP BY state",
        ));
        let rows = sql(st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))));
        for r in rows {
            let (k, n) = sql(r);
            if let Some(State::Completed | State::Failed | State::Removed) = State::parse(&k) {
                *by_state
                    .entry(State::parse(&k).expect("parsed").as_str())
                    .or_default() = n as u64;
            }
        }
        for j in self.jobs.values() {
            *by_state.entry(j.info.state.as_str()).or_default() += 1;
        }
        head(&mut o, "jobcell_jobs", "gauge", "Jobs by state.");
        for (k, n) in &by_state {
            let _ = writeln!(o, "jobcell_jobs{{state=\"{k}\"}} {n}");
        }
        let node = self.cfg.node;
        head(
            &mut o,
            "jobcell_node_cpus",
            "gauge",
            "Cores offered to jobs.",
        );
        let _ = writeln!(o, "jobcell_node_cpus {}", node.cpus);
        head(
            &mut o,
            "jobcell_node_cpus_allocated",
            "gauge",
            "Cores allocated to starting, running and suspended jobs.",
        );
        let _ = writeln!(
            o,
            "jobcell_node_cpus_allocated {}",
            (self.alloc_cpus * 1000.0).round() / 1000.0
        );
        head(
            &mut o,
            "jobcell_node_memory_bytes",
            "gauge",
            "Memory offered to jobs.",
        );
        let _ = writeln!(o, "jobcell_node_memory_bytes {}", node.memory);
        head(
            &mut o,
            "jobcell_node_memory_allocated_bytes",
            "gauge",
            "Memory allocated to starting, running and suspended jobs.",
        );
        let _ = writeln!(o, "jobcell_node_memory_allocated_bytes {}", self.alloc_mem);
        if let Some(root) = &self.cgroups {
            let parents = root.parent_paths();
            let read = |f: &str| {
                parents
                    .iter()
                    .find_map(|p| std::fs::read_to_string(p.join(f)).ok())
            };
            if let Some(m) = read("memory.usage_in_bytes").or_else(|| read("memory.current")) {
                if let Ok(m) = m.trim().parse::<u64>() {
                    head(&mut o, "jobcell_node_memory_used_bytes", "gauge", "Memory in use by all jobs (their cgroups' parent, as the kernel charges it).");
                    let _ = writeln!(o, "jobcell_node_memory_used_bytes {m}");
                }
            }
            let cpu_s = read("cpuacct.usage")
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|ns| ns as f64 / 1e9)
                .or_else(|| {
                    read("cpu.stat")?
                        .lines()
                        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse::<u64>().ok())
                        .map(|us| us as f64 / 1e6)
                });
            if let Some(c) = cpu_s {
                head(
                    &mut o,
                    "jobcell_node_cpu_used_seconds_total",
                    "counter",
                    "CPU time used by all jobs (their cgroups' parent).",
                );
                let _ = writeln!(o, "jobcell_node_cpu_used_seconds_total {c:.6}");
            }
            // Per running job, from its own cgroup.
            let mut running: Vec<&Job> = self
                .jobs
                .values()
                .filter(|j| matches!(j.info.state, State::Running | State::Suspended))
                .collect();
            running.sort_by_key(|j| j.info.id);
            let mut cpu_lines = String::new();
            let mut mem_lines = String::new();
            for j in running {
                let Some((pid, _)) = j.sup else { continue };
                let Ok(cg) = root.open(&jobdir::cgroup_name(pid, j.info.id)) else {
                    continue;
                };
                let u = cg.stats();
                cg.leak();
                let Ok(u) = u else { continue };
                let labels = format!(
                    "id=\"{}\",cluster=\"{}\",proc=\"{}\",owner=\"{}\"",
                    j.info.id,
                    j.info.cluster,
                    j.info.proc,
                    sys::user_name(j.info.owner).replace(['\\', '"', '\n'], "_")
                );
                let _ = writeln!(
                    cpu_lines,
                    "jobcell_job_cpu_seconds_total{{{labels}}} {:.6}",
                    (u.cpu_user_us + u.cpu_system_us) as f64 / 1e6
                );
                let _ = writeln!(
                    mem_lines,
                    "jobcell_job_memory_bytes{{{labels}}} {}",
                    u.memory_current
                );
            }
            head(
                &mut o,
                "jobcell_job_cpu_seconds_total",
                "counter",
                "CPU time used by each running job.",
            );
            o += &cpu_lines;
            head(
                &mut o,
                "jobcell_job_memory_bytes",
                "gauge",
                "Memory charged to each running job now.",
            );
            o += &mem_lines;
        }
        let c = &self.counters;
        head(
            &mut o,
            "jobcell_oom_kills_total",
            "counter",
            "Jobs OOM-killed at their memory limit (and held) since the daemon started.",
        );
        let _ = writeln!(o, "jobcell_oom_kills_total {}", c.oom_holds);
        head(
            &mut o,
            "jobcell_preemptions_total",
            "counter",
            "Jobs stopped by a node policy since the daemon started, by policy.",
        );
        labeled(
            &mut o,
            "jobcell_preemptions_total",
            "reason",
            &["memory", "disk", "duration", "pressure"],
            &c.preemptions,
        );
        head(
            &mut o,
            "jobcell_jobs_started_total",
            "counter",
            "Job attempts started since the daemon started.",
        );
        let _ = writeln!(o, "jobcell_jobs_started_total {}", c.started);
        head(
            &mut o,
            "jobcell_jobs_ended_total",
            "counter",
            "Job attempts that ended since the daemon started, by outcome.",
        );
        labeled(
            &mut o,
            "jobcell_jobs_ended_total",
            "state",
            &["completed", "failed", "removed", "held"],
            &c.finished,
        );
        head(
            &mut o,
            "jobcell_schedule_latency_seconds",
            "histogram",
            "From submission or release to the job's supervisor running.",
        );
        for (i, b) in SCHED_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "jobcell_schedule_latency_seconds_bucket{{le=\"{b}\"}} {}",
                c.sched_buckets[i]
            );
        }
        let _ = writeln!(
            o,
            "jobcell_schedule_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            c.sched_count
        );
        let _ = writeln!(o, "jobcell_schedule_latency_seconds_sum {:.6}", c.sched_sum);
        let _ = writeln!(
            o,
            "jobcell_schedule_latency_seconds_count {}",
            c.sched_count
        );
        Ok(o)
    }

    fn owner_of(&self, tx: &Tx, id: u64) -> Result<u32, ApiErr> {
        match self.jobs.get(&id) {
            Some(j) => Ok(j.info.owner),
            None => Ok(load(tx, id)?.info.owner),
        }
    }

    fn output(&self, tx: &Tx, caller: u32, id: u64, which: Stream) -> Result<PathBuf, ApiErr> {
        let (owner, out, err) = match self.jobs.get(&id) {
            Some(j) => (j.info.owner, j.stdout.clone(), j.stderr.clone()),
            None => {
                let r = load(tx, id)?;
                (r.info.owner, r.stdout, r.stderr)
            }
        };
        self.check_owner(caller, owner, id, "read the output of")?;
        let custom = match which {
            Stream::Stdout => out,
            Stream::Stderr => err,
        };
        if let Some(p) = custom {
            // Never read a path the user chose with the daemon's privileges.
            return Err(ApiErr::new(
                409,
                format!("job {id}'s output goes to {p}; read it there"),
            ));
        }
        Ok(custom.map(PathBuf::from).unwrap_or_else(|| {
            self.job_dir(id).join(match which {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            })
        }))
    }

    fn status(&self, tx: &Tx) -> Result<NodeStatus, ApiErr> {
        let mut jobs = std::collections::BTreeMap::new();
        let mut st = sql(tx.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state"));
        let rows = sql(st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))));
        for r in rows {
            let (s, n) = sql(r);
            jobs.insert(s, n as u64);
        }
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let memory_used = self.cgroups.as_ref().and_then(|r| {
            r.parent_paths().iter().find_map(|p| {
                ["memory.usage_in_bytes", "memory.current"]
                    .iter()
                    .find_map(|f| std::fs::read_to_string(p.join(f)).ok()?.trim().parse().ok())
            })
        });
        Ok(NodeStatus {
            cpus_total: self.cfg.node.cpus,
            memory_total: self.cfg.node.memory,
            cpus_allocated: (self.alloc_cpus * 1000.0).round() / 1000.0,
            memory_allocated: self.alloc_mem,
            load_1m,
            memory_used,
            jobs,
            daemon_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    fn act(
        &mut self,
        tx: &Tx,
        caller: u32,
        id: u64,
        action: Action,
        effects: &mut Vec<Effect>,
    ) -> Result<JobInfo, ApiErr> {
        let verb = action.verb();
        let Some(j) = self.jobs.get(&id) else {
            let r = load(tx, id)?;
            self.check_owner(caller, r.info.owner, id, verb)?;
            return Err(ApiErr::new(
                409,
                format!("job {id} has already ended ({})", r.info.state.as_str()),
            ));
        };
        self.check_owner(caller, j.info.owner, id, verb)?;
        let state = j.info.state;
        let conflict = |why: &str| Err(ApiErr::new(409, format!("cannot {verb} job {id}: {why}")));
        if j.pending.is_some() {
            return conflict("it is already being removed or held");
        }
        match (action, state) {
            (Action::Remove, State::Queued | State::Held) => {
                self.queue.remove(&(-(j.info.priority as i64), id));
                let reason = format!("removed by {}", sys::user_name(caller));
                sql(tx.execute(
                    "UPDATE jobs SET state='removed', ended_at=?2, reason=?3 WHERE id=?1",
                    params![id as i64, now(), reason],
                ));
                sql(add_event(
                    tx,
                    id,
                    "removed",
                    Some(&serde_json::json!({"by": caller})),
                ));
                let mut j = self.jobs.remove(&id).expect("present");
                self.queued_at.remove(&id);
                self.ulog(&j.ulog, userlog::Event::Aborted(reason.clone()));
                j.info.state = State::Removed;
                j.info.reason = Some(reason);
                Ok(j.info)
            }
            (Action::Remove, _) => {
                self.evict(tx, id, Pending::Remove(caller), effects)?;
                Ok(self.jobs[&id].info.clone())
            }
            (Action::Hold(reason), State::Queued) => {
                let reason =
                    reason.unwrap_or_else(|| format!("held by {}", sys::user_name(caller)));
                self.queue.remove(&(-(j.info.priority as i64), id));
                sql(tx.execute(
                    "UPDATE jobs SET state='held', hold_reason=?2 WHERE id=?1",
                    params![id as i64, reason],
                ));
                sql(add_event(
                    tx,
                    id,
                    "held",
                    Some(&serde_json::json!({"reason": reason})),
                ));
                self.queued_at.remove(&id);
                self.ulog_job(id, userlog::Event::Held(reason.clone()));
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Held;
                j.info.hold_reason = Some(reason);
                Ok(j.info.clone())
            }
            (Action::Hold(_), State::Held) => conflict("it is already held"),
            (Action::Hold(reason), _) => {
                let reason =
                    reason.unwrap_or_else(|| format!("held by {}", sys::user_name(caller)));
                self.evict(tx, id, Pending::Hold(reason), effects)?;
                Ok(self.jobs[&id].info.clone())
            }
            (Action::Release, State::Held) => {
                sql(tx.execute(
                    "UPDATE jobs SET state='queued', hold_reason=NULL WHERE id=?1",
                    params![id as i64],
                ));
                sql(add_event(tx, id, "released", None));
                self.queued_at.insert(id, now());
                self.ulog_job(id, userlog::Event::Released);
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Queued;
                j.info.hold_reason = None;
                self.queue.insert((-(j.info.priority as i64), id));
                Ok(j.info.clone())
            }
            (Action::Release, s) => conflict(&format!("it is {}, not held", s.as_str())),
            (Action::Suspend, State::Running) => {
                self.freeze(id, true)?;
                sql(tx.execute(
                    "UPDATE jobs SET state='suspended' WHERE id=?1",
                    params![id as i64],
                ));
                sql(add_event(tx, id, "suspended", None));
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Suspended;
                Ok(j.info.clone())
            }
            (Action::Continue, State::Suspended) => {
                self.freeze(id, false)?;
                sql(tx.execute(
                    "UPDATE jobs SET state='running' WHERE id=?1",
                    params![id as i64],
                ));
                sql(add_event(tx, id, "continued", None));
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Running;
                Ok(j.info.clone())
            }
            (Action::Suspend, s) => conflict(&format!("it is {}, not running", s.as_str())),
            (Action::Continue, s) => conflict(&format!("it is {}, not suspended", s.as_str())),
        }
    }

    /// Freeze or thaw a running job's cgroup.
    fn freeze(&self, id: u64, on: bool) -> Result<(), ApiErr> {
        let j = &self.jobs[&id];
        let (Some((pid, _)), Some(root)) = (j.sup, self.cgroups.as_ref()) else {
            return Err(ApiErr::new(
                409,
                format!("job {id} has no cgroup to freeze yet"),
            ));
        };
        let cg = root
            .open(&jobdir::cgroup_name(pid, id))
            .map_err(|e| ApiErr::new(409, format!("job {id}: {e}")))?;
        let r = if on { cg.freeze() } else { cg.thaw() };
        // The supervisor owns the cgroup: never let this handle remove it.
        cg.leak();
        r.map_err(|e| ApiErr::new(500, format!("job {id}: {e}")))
    }

    /// Stop a running job through its supervisor (SIGTERM: the launcher passes it on, then
    /// kills after the grace time); the state changes when the supervisor has exited.
    fn evict(
        &mut self,
        tx: &Tx,
        id: u64,
        p: Pending,
        effects: &mut Vec<Effect>,
    ) -> Result<(), ApiErr> {
        if self.jobs[&id].info.state == State::Suspended {
            // A frozen job cannot act on SIGTERM.
            self.freeze(id, false)?;
            sql(tx.execute(
                "UPDATE jobs SET state='running' WHERE id=?1",
                params![id as i64],
            ));
        }
        let kind = match &p {
            Pending::Remove(_) => "remove-requested",
            Pending::Hold(_) => "hold-requested",
            Pending::Requeue(_) => "requeue-requested",
        };
        sql(add_event(tx, id, kind, None));
        sql(tx.execute(
            "UPDATE jobs SET pending=?2 WHERE id=?1",
            params![id as i64, p.encode()],
        ));
        let j = self.jobs.get_mut(&id).expect("present");
        if j.info.state == State::Suspended {
            j.info.state = State::Running;
        }
        if let Some(fd) = &j.pidfd {
            effects.push(Effect::Signal(fd.clone(), libc::SIGTERM));
        }
        j.pending = Some(p);
        Ok(())
    }

    fn started(
        &mut self,
        tx: &Tx,
        id: u64,
        attempt: u32,
        pid: i32,
        start: u64,
        effects: &mut Vec<Effect>,
    ) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.info.attempt != attempt || j.info.state != State::Starting {
            return;
        }
        j.sup = Some((pid, start));
        match sys::pidfd_for(pid, start) {
            Ok(fd) => {
                let fd = Arc::new(fd);
                j.pidfd = Some(fd.clone());
                if j.pending.is_some() {
                    effects.push(Effect::Signal(fd.clone(), libc::SIGTERM));
                }
                self.watch(id, attempt, fd);
            }
            Err(_) => self.local.push_back(Cmd::Exited { id, attempt }),
        }
        let j = self.jobs.get_mut(&id).expect("present");
        j.info.state = State::Running;
        sql(tx.execute(
            "UPDATE jobs SET state='running', sup_pid=?2, sup_start=?3 WHERE id=?1 AND state='starting'",
            params![id as i64, pid, start as i64],
        ));
        sql(add_event(
            tx,
            id,
            "started",
            Some(&serde_json::json!({"supervisor_pid": pid, "attempt": attempt})),
        ));
        let t = now();
        if let Some(q) = self.queued_at.remove(&id) {
            let c = &mut self.counters;
            let lat = (t - q).max(0.0);
            for (i, b) in SCHED_BUCKETS.iter().enumerate() {
                if lat <= *b {
                    c.sched_buckets[i] += 1;
                }
            }
            c.sched_sum += lat;
            c.sched_count += 1;
        }
        self.counters.started += 1;
        self.ulog_job(id, userlog::Event::Executing);
        let started_at = self.jobs[&id].info.started_at.unwrap_or(t);
        self.arm_deadline(id, attempt, started_at);
    }

    /// Sample running jobs' memory pressure every [`PRESSURE_INTERVAL`] (only with a pressure
    /// policy; cgroup v1 has no PSI trigger to wait on, so this samples).
    pub fn start_pressure_sampler(&self) {
        if self.cfg.policy.pressure.is_none() || self.cgroups.is_none() {
            return;
        }
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            let mut iv = tokio::time::interval(PRESSURE_INTERVAL);
            iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                iv.tick().await;
                if tx.send(Cmd::PressureTick).is_err() {
                    return;
                }
            }
        });
    }

    /// One pressure sample of every running job; a job past a threshold for the policy's
    /// whole duration is preempted (requeued or held) with the figures in its reason.
    fn pressure_tick(&mut self, tx: &Tx, effects: &mut Vec<Effect>) {
        let Some(p) = self.cfg.policy.pressure.clone() else {
            return;
        };
        let Some(root) = &self.cgroups else {
            return;
        };
        let t = now();
        let running: Vec<(u64, u32, i32)> = self
            .jobs
            .values()
            .filter(|j| j.info.state == State::Running && j.pending.is_none())
            .filter_map(|j| j.sup.map(|(pid, _)| (j.info.id, j.info.attempt, pid)))
            .collect();
        self.pressure
            .retain(|id, _| running.iter().any(|r| r.0 == *id));
        let mut preempt = Vec::new();
        for (id, attempt, pid) in running {
            let Ok(cg) = root.open(&jobdir::cgroup_name(pid, id)) else {
                continue;
            };
            let faults = cg.paths().iter().find_map(|d| major_faults(d));
            let stall = cg.memory_pressure().ok().map(|p| p.some.total_us);
            cg.leak();
            let prev = self
                .pressure
                .get(&id)
                .copied()
                .filter(|s| s.attempt == attempt);
            let mut why = None;
            if let Some(prev) = prev {
                let dt = (t - prev.time).max(1e-3);
                if let (Some(th), Some(a), Some(b)) = (p.major_faults, prev.major_faults, faults) {
                    let rate = b.saturating_sub(a) as f64 / dt;
                    if rate > th {
                        why = Some(format!("{rate:.0} major page faults/s (threshold {th})"));
                    }
                }
                if let (Some(th), Some(a), Some(b)) = (p.stall_percent, prev.stall_us, stall) {
                    // µs stalled per second of wall time, in percent.
                    let pct = b.saturating_sub(a) as f64 / 1e4 / dt;
                    if pct > th {
                        why = Some(format!(
                            "memory stalls {pct:.0}% of the time (threshold {th}%)"
                        ));
                    }
                }
            }
            // Pressure measured over [prev.time, t] began at prev.time.
            let above_since = match (&why, prev) {
                (Some(_), Some(prev)) => Some(prev.above_since.unwrap_or(prev.time)),
                _ => None,
            };
            self.pressure.insert(
                id,
                PressureSample {
                    attempt,
                    time: t,
                    major_faults: faults,
                    stall_us: stall,
                    above_since,
                },
            );
            if let (Some(since), Some(why)) = (above_since, why) {
                if t - since >= p.duration {
                    preempt.push((id, why));
                }
            }
        }
        for (id, why) in preempt {
            let reason = format!(
                "preempted under memory pressure: {why} for {}",
                fmt_duration(p.duration)
            );
            warn!("job {id}: {reason}");
            sql(add_event(
                tx,
                id,
                "policy",
                Some(
                    &serde_json::json!({"policy": "memory pressure", "reason": reason, "action": if p.hold { "hold" } else { "requeue" }}),
                ),
            ));
            *self.counters.preemptions.entry("pressure").or_default() += 1;
            self.pressure.remove(&id);
            let pend = if p.hold {
                Pending::Hold(reason)
            } else {
                Pending::Requeue(reason)
            };
            if let Err(e) = self.evict(tx, id, pend, effects) {
                warn!("job {id}: preempting it: {}", e.msg);
            }
        }
    }

    /// The job's wall-time limit: its own, capped by the node's.
    fn duration_limit(&self, id: u64) -> Option<f64> {
        let own = self.jobs.get(&id).and_then(|j| j.max_duration);
        match (own, self.cfg.policy.allowed_job_duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Send ourselves a [`Cmd::Deadline`] when the job's wall-time limit passes.
    fn arm_deadline(&self, id: u64, attempt: u32, started_at: f64) {
        let Some(limit) = self.duration_limit(id) else {
            return;
        };
        let left = (started_at + limit - now()).max(0.0);
        let tx = self.tx.clone();
        self.rt.spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs_f64(left)).await;
            let _ = tx.send(Cmd::Deadline { id, attempt });
        });
    }

    /// A running job's wall-time limit passed: hold it, with the reason (HTCondor's
    /// `allowed_job_duration` holds too), through the same eviction as `jobcell hold`.
    fn deadline(&mut self, tx: &Tx, id: u64, attempt: u32, effects: &mut Vec<Effect>) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        if j.info.attempt != attempt || !j.info.state.active() || j.pending.is_some() {
            return;
        }
        let limit = self.duration_limit(id).unwrap_or(0.0);
        let reason = format!(
            "The job exceeded allowed job duration of {}",
            fmt_duration(limit)
        );
        sql(add_event(
            tx,
            id,
            "policy",
            Some(
                &serde_json::json!({"policy": "allowed_job_duration", "limit_s": limit, "action": "hold"}),
            ),
        ));
        warn!("job {id}: {reason}; holding it");
        *self.counters.preemptions.entry("duration").or_default() += 1;
        if let Err(e) = self.evict(tx, id, Pending::Hold(reason), effects) {
            warn!("job {id}: evicting it past its duration: {}", e.msg);
        }
    }

    /// The supervisor is gone: record how the job ended and free its resources.
    fn finish(&mut self, tx: &Tx, id: u64, res: Option<JobResult>, effects: &mut Vec<Effect>) {
        let Some(mut j) = self.jobs.remove(&id) else {
            return;
        };
        self.alloc_cpus = (self.alloc_cpus - j.info.cpus).max(0.0);
        self.alloc_mem = self.alloc_mem.saturating_sub(j.info.memory);
        if self.jobs.values().all(|j| !j.info.state.active()) {
            // Avoid drift from float sums.
            self.alloc_cpus = 0.0;
            self.alloc_mem = 0;
        }
        let t = now();
        let (exit_code, signal, report) = match &res {
            Some(r) => (r.exit_code, r.signal, r.report.clone()),
            None => (None, None, None),
        };
        let sup_pid = j.sup.map(|(p, _)| p);
        let oom = report
            .as_ref()
            .and_then(|r| r.get("oom_killed"))
            .and_then(|v| v.as_bool())
            == Some(true);
        if oom {
            self.counters.oom_holds += 1;
        }
        let disk_full = report
            .as_ref()
            .and_then(|r| r.get("disk"))
            .and_then(|d| d.get("full"))
            .and_then(|v| v.as_bool())
            == Some(true);
        let (state, reason) = match (&j.pending, &res) {
            (Some(Pending::Remove(by)), _) => (State::Removed, Some(format!("removed by {}", sys::user_name(*by)))),
            (Some(Pending::Hold(r)), _) => (State::Held, Some(r.clone())),
            (Some(Pending::Requeue(r)), _) => (State::Queued, Some(r.clone())),
            // A problem the job's owner can fix (an input file they cannot read...): held,
            // like HTCondor, rather than failed.
            (None, Some(r)) if r.hold_reason.is_some() => (State::Held, r.hold_reason.clone()),
            (None, Some(r)) if r.error.is_some() => (State::Failed, r.error.clone()),
            // HTCondor holds a job its memory limit killed; `release` runs it again.
            (None, Some(_)) if oom => {
                *self.counters.preemptions.entry("memory").or_default() += 1;
                (State::Held, Some(OOM_HOLD_REASON.to_string()))
            }
            // Its scratch filled up: whatever it made of the ENOSPC, it did not get the disk
            // it needed; held so its owner can ask for more.
            (None, Some(_)) if disk_full => {
                *self.counters.preemptions.entry("disk").or_default() += 1;
                (State::Held, Some(DISK_HOLD_REASON.to_string()))
            }
            (None, Some(_)) => (State::Completed, None),
            (None, None) => (
                State::Failed,
                Some(match sup_pid {
                    Some(p) => format!("the job's supervisor (pid {p}) ended without recording a result (killed?); the job was killed with it"),
                    None => "the job's supervisor never started".to_string(),
                }),
            ),
        };
        if res.is_none() {
            if let Some(pid) = sup_pid {
                effects.push(Effect::Cleanup { id, pid });
            }
        }
        let report_s = report.as_ref().map(|r| r.to_string());
        self.pressure.remove(&id);
        if state == State::Queued {
            // Preempted by a policy: back in the queue for a new attempt, the reason kept.
            sql(tx.execute(
                "UPDATE jobs SET state='queued', pending=NULL, started_at=NULL, reason=?2, exit_code=?3, signal=?4, report=?5 WHERE id=?1",
                params![id as i64, reason, exit_code, signal, report_s],
            ));
            sql(add_event(
                tx,
                id,
                "requeued",
                Some(&serde_json::json!({"why": reason, "preempted": true})),
            ));
            *self.counters.finished.entry("requeued").or_default() += 1;
            self.ulog(
                &j.ulog,
                userlog::Event::Evicted(reason.clone().unwrap_or_default()),
            );
            j.info.state = State::Queued;
            j.info.started_at = None;
            j.info.reason = reason;
            j.end_attempt(exit_code, signal, report);
            self.queue.insert((-(j.info.priority as i64), id));
            self.queued_at.insert(id, now());
            self.jobs.insert(id, j);
            return;
        }
        if state == State::Held {
            sql(tx.execute(
                "UPDATE jobs SET state='held', pending=NULL, hold_reason=?2, exit_code=?3, signal=?4, report=?5 WHERE id=?1",
                params![id as i64, reason, exit_code, signal, report_s],
            ));
            sql(add_event(
                tx,
                id,
                "held",
                Some(&serde_json::json!({"reason": reason, "evicted": true, "oom_killed": oom})),
            ));
            *self.counters.finished.entry("held").or_default() += 1;
            self.ulog(
                &j.ulog,
                userlog::Event::Held(reason.clone().unwrap_or_default()),
            );
            j.info.state = State::Held;
            j.info.hold_reason = reason;
            j.end_attempt(exit_code, signal, report);
            self.jobs.insert(id, j);
            return;
        }
        sql(tx.execute(
            "UPDATE jobs SET state=?2, pending=NULL, ended_at=?3, reason=?4, exit_code=?5, signal=?6, report=?7 WHERE id=?1",
            params![id as i64, state.as_str(), t, reason, exit_code, signal, report_s],
        ));
        let usage = report.as_ref().map(|r| {
            serde_json::json!({
                "exit_code": exit_code, "signal": signal,
                "wall_time_s": r.get("wall_time_s"), "cpu_user_us": r.get("cpu_user_us"),
                "cpu_system_us": r.get("cpu_system_us"), "oom_killed": r.get("oom_killed"),
                "memory_peak": r.get("usage").and_then(|u| u.get("memory_peak")),
            })
        });
        let detail = serde_json::json!({"state": state.as_str(), "reason": reason, "usage": usage});
        sql(add_event(tx, id, "ended", Some(&detail)));
        *self.counters.finished.entry(state.as_str()).or_default() += 1;
        // A job that never ran to an exit (jobcell could not start it, its supervisor died)
        // is aborted in HTCondor's words, not terminated with a made-up return value.
        let never_exited = exit_code.is_none() && signal.is_none();
        let ev = if state == State::Removed || (state == State::Failed && never_exited) {
            userlog::Event::Aborted(reason.clone().unwrap_or_default())
        } else {
            userlog::Event::Terminated {
                exit_code,
                signal,
                report: report.clone(),
                cpus: j.info.cpus,
                memory: j.info.memory,
            }
        };
        self.ulog(&j.ulog, ev);
        if state == State::Failed {
            warn!("job {id} failed: {}", reason.as_deref().unwrap_or(""));
        }
    }

    /// Start queued jobs that fit, in order of priority then submission.
    fn schedule(&mut self, tx: &Tx, effects: &mut Vec<Effect>) {
        let node = self.cfg.node;
        let mut started = Vec::new();
        for &(np, id) in &self.queue {
            let free_cpus = node.cpus - self.alloc_cpus;
            if free_cpus < 1e-6 || self.alloc_mem >= node.memory {
                break;
            }
            let j = &self.jobs[&id];
            if j.info.cpus <= free_cpus + 1e-9 && j.info.memory <= node.memory - self.alloc_mem {
                self.alloc_cpus += j.info.cpus;
                self.alloc_mem += j.info.memory;
                started.push((np, id));
            }
        }
        let t = now();
        for key in started {
            self.queue.remove(&key);
            let id = key.1;
            let j = self.jobs.get_mut(&id).expect("queued job");
            j.info.attempt += 1;
            j.info.state = State::Starting;
            j.info.started_at = Some(t);
            // Committed before the supervisor exists: a crash from here on is resolved by the
            // claim protocol, never by running the job a second time.
            sql(tx.execute(
                "UPDATE jobs SET state='starting', attempt=?2, started_at=?3 WHERE id=?1",
                params![id as i64, j.info.attempt, t],
            ));
            effects.push(Effect::Start(id));
        }
    }

    fn perform(&mut self, effects: Vec<Effect>) {
        let mut starts: Vec<(u64, u32, PathBuf, Vec<u8>)> = Vec::new();
        for e in effects {
            match e {
                Effect::Start(id) => {
                    let j = &self.jobs[&id];
                    let dir = self.job_dir(id);
                    match self.prepare_dir(id, &dir) {
                        Ok(spec) => starts.push((id, j.info.attempt, dir, spec)),
                        Err(why) => self.local.push_back(Cmd::SpawnFailed {
                            id,
                            attempt: j.info.attempt,
                            why,
                        }),
                    }
                }
                Effect::Signal(fd, sig) => {
                    if let Err(e) = sys::pidfd_signal(&fd, sig) {
                        if e.raw_os_error() != Some(libc::ESRCH) {
                            warn!("signalling a supervisor: {e}");
                        }
                    }
                }
                Effect::Cleanup { id, pid } => {
                    // What a SIGKILLed supervisor left: its job cgroup (processes are already
                    // dead through PDEATHSIG; remove() kills stragglers) and its scratch dir.
                    if let Some(root) = &self.cgroups {
                        if let Ok(cg) = root.open(&jobdir::cgroup_name(pid, id)) {
                            if let Err(e) = cg.remove() {
                                warn!("job {id}: removing its cgroup: {e}");
                            }
                        }
                    }
                    remove_scratch(&self.cfg.scratch_base, &jobdir::cgroup_name(pid, id));
                }
            }
        }
        if starts.is_empty() {
            return;
        }
        let reqs: Vec<(&Path, u32, &[u8])> = starts
            .iter()
            .map(|(_, a, d, s)| (d.as_path(), *a, s.as_slice()))
            .collect();
        match self.spawner.spawn_many(&reqs) {
            Ok(results) => {
                for ((id, attempt, _, _), r) in starts.iter().zip(results) {
                    let (id, attempt) = (*id, *attempt);
                    self.local.push_back(match r {
                        Ok((pid, start)) => Cmd::Started {
                            id,
                            attempt,
                            pid,
                            start,
                        },
                        Err(why) => Cmd::SpawnFailed { id, attempt, why },
                    });
                }
            }
            Err(e) => {
                // Without the spawner no job can start; a restart forks a new one and the claim
                // protocol sorts out what was spawned.
                error!("the spawner failed ({e}); exiting so a restart recovers");
                std::process::exit(70);
            }
        }
    }

    /// The job's dir, and its supervisor's spec: handed to a forked supervisor in the spawn
    /// request (empty here), written to `spec.json` for an exec'd one.
    fn prepare_dir(&self, id: u64, dir: &Path) -> Result<Vec<u8>, String> {
        let j = &self.jobs[&id];
        jobdir::make_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let spec: JobSpec =
            serde_json::from_str(&j.spec).map_err(|e| format!("stored spec: {e}"))?;
        let x: JobExtra = j
            .extra
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| format!("stored job extras: {e}"))?
            .unwrap_or_default();
        let s = SupervisorSpec {
            id,
            cwd: x.cwd.map(PathBuf::from),
            stdin: x.stdin.map(PathBuf::from),
            transfer_input: x.transfer_input.into_iter().map(PathBuf::from).collect(),
            transfer: x.transfer,
            spec,
            // Only a path the owner named; the default is the supervisor's to make, as root.
            stdout: j.stdout.clone().map(PathBuf::from),
            stderr: j.stderr.clone().map(PathBuf::from),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            owner: j.info.owner,
            images: Some(self.cfg.images.clone()),
            job_uids: self.cfg.job_uids,
        };
        let data = serde_json::to_vec(&s).map_err(|e| e.to_string())?;
        if !self.spawner.execs() {
            return Ok(data);
        }
        sys::create_private(&jobdir::spec_path(dir))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &data))
            .map_err(|e| format!("writing spec.json: {e}"))?;
        Ok(Vec::new())
    }
}

fn load(tx: &Tx, id: u64) -> Result<crate::store::JobRow, ApiErr> {
    sql(tx
        .query_row(
            &format!(
                "SELECT {} FROM jobs WHERE id = ?1",
                crate::store::JOB_COLUMNS
            ),
            params![id as i64],
            crate::store::job_from_row,
        )
        .optional())
    .ok_or_else(|| ApiErr::new(404, format!("no job {id}")))
}

fn history(tx: &Tx, limit: u32) -> Result<Vec<JobInfo>, ApiErr> {
    let mut st = sql(tx.prepare_cached(&format!(
        "SELECT {} FROM jobs WHERE state IN ('completed','failed','removed') ORDER BY ended_at DESC, id DESC LIMIT ?1",
        crate::store::JOB_COLUMNS
    )));
    let rows = sql(st.query_map(params![limit], crate::store::job_from_row));
    Ok(sql(rows
        .map(|r| r.map(|j| j.info))
        .collect::<rusqlite::Result<Vec<_>>>()))
}

fn dummy_store() -> Store {
    Store {
        conn: rusqlite::Connection::open_in_memory().expect("in-memory sqlite"),
        path: PathBuf::new(),
    }
}

/// Remove a dead supervisor's scratch dir `base/name` with the launcher's own removal (openat,
/// never following symlinks or crossing mounts).
fn remove_scratch(base: &Path, name: &str) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(dir) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(base)
    else {
        return;
    };
    let Ok(c) = std::ffi::CString::new(name) else {
        return;
    };
    match jobcell_sandbox::scratch::remove_tree_at(dir.as_raw_fd(), &c, &base.join(name)) {
        Ok(()) => {}
        Err(e) => {
            if base.join(name).exists() {
                warn!("removing scratch {}: {e}", base.join(name).display());
            }
        }
    }
}

/// `600` -> `10m`, `90` -> `1m30s`.
pub fn fmt_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if sec > 0 || out.is_empty() {
        out += &format!("{sec}s");
    }
    out
}

/// Major page faults of a memory cgroup so far (`memory.stat`: v1 `total_pgmajfault`,
/// v2 `pgmajfault`); None for other controllers' dirs.
fn major_faults(dir: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    let get = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
    };
    get("total_pgmajfault").or_else(|| get("pgmajfault"))
}
