//! The core: one thread owns the SQLite connection and the in-memory queue. Every request and
//! every supervisor exit is a [`Cmd`]; the thread takes all pending commands, applies them in
//! one transaction (group commit: one fsync for many state changes), commits, and only then
//! replies and acts (spawn, signal). A failed commit ends the daemon (crash-only: the state on
//! disk is the truth and a restart recovers from it), so no reply ever acknowledges a change
//! that was not committed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use jobcell_cgroup::CgroupRoot;
use jobcell_spec::{JobSpec, UserSpec};
use rusqlite::{params, Transaction};
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use crate::jobdir::{self, Claim, JobResult, SupervisorSpec};
use crate::resources::NodeResources;
use crate::spawner::Spawner;
use crate::store::{add_event, Store, StoreError};
use crate::sys;
use crate::types::*;

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
}

/// What the node is configured with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node: NodeResources,
    pub default_cpus: f64,
    pub default_memory: u64,
    pub jobs_dir: PathBuf,
    pub scratch_base: PathBuf,
    pub cgroup_parent: Option<PathBuf>,
    pub images: jobdir::ImagesConfig,
}

/// What is still pending on a job whose supervisor must end first.
#[derive(Debug, Clone)]
enum Pending {
    Remove(u32),
    Hold(String),
}

impl Pending {
    fn encode(&self) -> String {
        match self {
            Pending::Remove(by) => format!("remove:{by}"),
            Pending::Hold(r) => format!("hold:{r}"),
        }
    }
    fn decode(s: &str) -> Option<Pending> {
        if let Some(by) = s.strip_prefix("remove:") {
            return by.parse().ok().map(Pending::Remove);
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
}

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
}

/// Effects performed after the commit.
enum Effect {
    Start(u64),
    Signal(Arc<OwnedFd>, i32),
    Cleanup { id: u64, pid: i32 },
}

type Tx<'a> = Transaction<'a>;

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
        }
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
        let (mut requeued, mut attached, mut ended) = (0, 0, 0);
        for r in rows {
            let id = r.info.id;
            let mut job = Job {
                info: r.info,
                spec: r.spec,
                stdout: r.stdout,
                stderr: r.stderr,
                sup: None,
                pidfd: None,
                pending: r.pending.as_deref().and_then(Pending::decode),
            };
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
            let _ = std::fs::create_dir_all(&dir);
            let mut claim = jobdir::read_claim(&dir, attempt).ok().flatten();
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
                    None => {}
                }
                job.info.state = State::Queued;
                job.info.started_at = None;
                sql(tx.execute(
                    "UPDATE jobs SET state='queued', started_at=NULL WHERE id=?1",
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
                Some(Claim::Supervisor { pid, starttime }) => {
                    job.sup = Some((pid, starttime));
                    if job.info.state == State::Starting {
                        job.info.state = State::Running;
                        sql(tx.execute(
                            "UPDATE jobs SET state='running', sup_pid=?2, sup_start=?3 WHERE id=?1",
                            params![id as i64, pid, starttime as i64],
                        ));
                    }
                    match sys::pidfd_for(pid, starttime) {
                        Ok(fd) => {
                            if job.pending.is_some() {
                                // An acknowledged remove/hold the previous daemon may not have
                                // delivered: deliver it (again; SIGTERM twice is harmless).
                                let _ = sys::pidfd_signal(&fd, libc::SIGTERM);
                            }
                            let fd = Arc::new(fd);
                            job.pidfd = Some(fd.clone());
                            self.watch(id, attempt, fd);
                            attached += 1;
                        }
                        Err(_) => {
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
                match rx.recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => return,
                }
            }
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let tx = match store.conn.transaction() {
                Ok(t) => t,
                Err(e) => panic_db(e),
            };
            for c in batch {
                self.apply(&tx, c, &mut replies, &mut effects);
            }
            self.schedule(&tx, &mut effects);
            if let Err(e) = tx.commit() {
                panic_db(e);
            }
            for r in replies.drain(..) {
                r();
            }
            self.perform(std::mem::take(&mut effects));
        }
    }

    fn apply(
        &mut self,
        tx: &Tx,
        c: Cmd,
        replies: &mut Vec<Box<dyn FnOnce()>>,
        effects: &mut Vec<Effect>,
    ) {
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
            Cmd::List { reply } => {
                let mut v: Vec<JobInfo> = self.jobs.values().map(|j| j.info.clone()).collect();
                v.sort_by_key(|j| j.id);
                let _ = reply.send(Ok(v));
            }
            Cmd::Get { id, reply } => {
                let r = self.get(tx, id);
                let _ = reply.send(r);
            }
            Cmd::History { limit, reply } => {
                let r = history(tx, limit);
                let _ = reply.send(r);
            }
            Cmd::Events { caller, id, reply } => {
                let r = self.events(tx, caller, id);
                let _ = reply.send(r);
            }
            Cmd::Output {
                caller,
                id,
                which,
                reply,
            } => {
                let r = self.output(tx, caller, id, which);
                let _ = reply.send(r);
            }
            Cmd::Status { reply } => {
                let r = self.status(tx);
                let _ = reply.send(r);
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
                let res = JobResult {
                    attempt,
                    exit_code: None,
                    signal: None,
                    error: Some(why),
                    exec_error: None,
                    report: None,
                    finished_at: now(),
                };
                self.finish(tx, id, Some(res), effects);
            }
            Cmd::Exited { id, attempt } => {
                let Some(j) = self.jobs.get(&id) else { return };
                if j.info.attempt != attempt || !j.info.state.active() {
                    return;
                }
                let dir = self.job_dir(id);
                let res = match jobdir::read_result(&dir, attempt) {
                    Ok(r) => r,
                    Err(e) => {
                        warn!("job {id}: unreadable result: {e}");
                        None
                    }
                };
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

    fn submit(
        &mut self,
        tx: &Tx,
        caller: u32,
        req: SubmitRequest,
    ) -> Result<SubmitResponse, ApiErr> {
        if let Some(k) = &req.submit_key {
            if k.is_empty() || k.len() > 128 {
                return Err(ApiErr::new(400, "submit_key must be 1 to 128 bytes"));
            }
            let mut st = sql(tx.prepare_cached(
                "SELECT id FROM jobs WHERE owner = ?1 AND submit_key = ?2 ORDER BY id",
            ));
            let ids: Vec<u64> = sql(
                sql(st.query_map(params![caller, k], |r| r.get::<_, i64>(0)))
                    .map(|r| r.map(|v| v as u64))
                    .collect::<rusqlite::Result<Vec<_>>>(),
            );
            if !ids.is_empty() {
                return Ok(SubmitResponse { ids });
            }
        }
        let mut spec: JobSpec = req.spec;
        let count = req.count.unwrap_or(1);
        if count == 0 || count > 10_000 {
            return Err(ApiErr::new(
                400,
                format!("count {count} must be between 1 and 10000"),
            ));
        }
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
        let cpus = spec.resources.cpus.unwrap_or(self.cfg.default_cpus);
        let memory = spec.resources.memory.unwrap_or(self.cfg.default_memory);
        spec.resources.cpus = Some(cpus);
        spec.resources.memory = Some(memory);
        spec.validate()
            .map_err(|e| ApiErr::new(400, e.to_string()))?;
        if let Some(name) = &spec.image {
            // Refuse an unknown or invisible image now, not when the job starts.
            self.cfg
                .images
                .open()
                .and_then(|s| s.show(name, caller))
                .map_err(|e| ApiErr::new(400, format!("image '{name}': {e}")))?;
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
        for (what, p) in [("stdout", &req.stdout), ("stderr", &req.stderr)] {
            if let Some(p) = p {
                jobcell_spec::clean_abs_path(what, Path::new(p))
                    .map_err(|e| ApiErr::new(400, e.to_string()))?;
            }
        }
        let spec_json =
            serde_json::to_string(&spec).map_err(|e| ApiErr::new(500, e.to_string()))?;
        let command = serde_json::to_string(&spec.argv).unwrap_or_default();
        let user = spec.user.to_string();
        let user = match &spec.user {
            UserSpec::Uid(u) => sys::user_name(*u),
            _ => user,
        };
        let state = if req.hold { State::Held } else { State::Queued };
        let hold_reason = req.hold.then(|| "held at submission".to_string());
        let t = now();
        let mut ids = Vec::with_capacity(count as usize);
        let mut ins = sql(tx.prepare_cached(
            "INSERT INTO jobs (owner, user, state, priority, cpus, memory, command, spec, stdout, stderr, submitted_at, hold_reason, submit_key)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        ));
        for _ in 0..count {
            sql(ins.execute(params![
                caller,
                user,
                state.as_str(),
                req.priority,
                cpus,
                memory as i64,
                command,
                spec_json,
                req.stdout,
                req.stderr,
                t,
                hold_reason,
                req.submit_key
            ]));
            let id = tx.last_insert_rowid() as u64;
            sql(add_event(
                tx,
                id,
                "submitted",
                Some(&serde_json::json!({"owner": caller, "held": req.hold})),
            ));
            let info = JobInfo {
                id,
                owner: caller,
                user: user.clone(),
                state,
                priority: req.priority,
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
                self.queue.insert((-(req.priority as i64), id));
            }
            self.jobs.insert(
                id,
                Job {
                    info,
                    spec: spec_json.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    sup: None,
                    pidfd: None,
                    pending: None,
                },
            );
            ids.push(id);
        }
        Ok(SubmitResponse { ids })
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
        let (state, reason) = match (&j.pending, &res) {
            (Some(Pending::Remove(by)), _) => (State::Removed, Some(format!("removed by {}", sys::user_name(*by)))),
            (Some(Pending::Hold(r)), _) => (State::Held, Some(r.clone())),
            (None, Some(r)) if r.error.is_some() => (State::Failed, r.error.clone()),
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
        if state == State::Held {
            sql(tx.execute(
                "UPDATE jobs SET state='held', pending=NULL, hold_reason=?2, exit_code=?3, signal=?4, report=?5 WHERE id=?1",
                params![id as i64, reason, exit_code, signal, report_s],
            ));
            sql(add_event(
                tx,
                id,
                "held",
                Some(&serde_json::json!({"reason": reason, "evicted": true})),
            ));
            j.info.state = State::Held;
            j.info.hold_reason = reason;
            j.pending = None;
            j.pidfd = None;
            j.sup = None;
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
        let mut starts: Vec<(u64, u32, PathBuf)> = Vec::new();
        for e in effects {
            match e {
                Effect::Start(id) => {
                    let j = &self.jobs[&id];
                    let dir = self.job_dir(id);
                    match self.prepare_dir(id, &dir) {
                        Ok(()) => starts.push((id, j.info.attempt, dir)),
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
        let reqs: Vec<(&Path, u32)> = starts.iter().map(|(_, a, d)| (d.as_path(), *a)).collect();
        match self.spawner.spawn_many(&reqs) {
            Ok(results) => {
                for ((id, attempt, _), r) in starts.iter().zip(results) {
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

    fn prepare_dir(&self, id: u64, dir: &Path) -> Result<(), String> {
        let j = &self.jobs[&id];
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let spec: JobSpec =
            serde_json::from_str(&j.spec).map_err(|e| format!("stored spec: {e}"))?;
        let s = SupervisorSpec {
            id,
            spec,
            stdout: j
                .stdout
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("stdout")),
            stderr: j
                .stderr
                .clone()
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("stderr")),
            cgroup_parent: self.cfg.cgroup_parent.clone(),
            owner: j.info.owner,
            images: Some(self.cfg.images.clone()),
        };
        let data = serde_json::to_vec(&s).map_err(|e| e.to_string())?;
        std::fs::write(jobdir::spec_path(dir), data).map_err(|e| format!("writing spec.json: {e}"))
    }
}

fn load(tx: &Tx, id: u64) -> Result<crate::store::JobRow, ApiErr> {
    use rusqlite::OptionalExtension;
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
