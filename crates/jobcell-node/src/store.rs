//! The durable queue: SQLite in WAL mode with `synchronous=FULL` (a commit survives power
//! loss). The schema is versioned in `PRAGMA user_version`; migrations run at open; a database
//! written by a newer jobcell is refused.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, Row};
use thiserror::Error;

use crate::types::{Event, JobInfo, State};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state database {path}: {err}")]
    Sql { path: PathBuf, err: rusqlite::Error },
    #[error("state database {path} has schema version {found}, newer than this jobcell understands ({known}); run a newer jobcell or move the state dir aside")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
}

/// Migration N brings the schema from version N to N+1.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner INTEGER NOT NULL,
        user TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        cpus REAL NOT NULL,
        memory INTEGER NOT NULL,
        command TEXT NOT NULL,
        spec TEXT NOT NULL,
        stdout TEXT,
        stderr TEXT,
        submitted_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        hold_reason TEXT,
        reason TEXT,
        attempt INTEGER NOT NULL DEFAULT 0,
        sup_pid INTEGER,
        sup_start INTEGER,
        exit_code INTEGER,
        signal INTEGER,
        report TEXT
     );
     CREATE INDEX jobs_active ON jobs(state) WHERE state NOT IN ('completed','failed','removed');
     CREATE INDEX jobs_ended ON jobs(ended_at) WHERE ended_at IS NOT NULL;
     CREATE TABLE events (
        job INTEGER NOT NULL,
        time REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT
     );
     CREATE INDEX events_job ON events(job);",
    // 1 -> 2: idempotent submission (a client retrying after a lost answer gets the same ids)
    "ALTER TABLE jobs ADD COLUMN submit_key TEXT;
     CREATE INDEX jobs_submit_key ON jobs(owner, submit_key) WHERE submit_key IS NOT NULL;",
    // 2 -> 3: an acknowledged remove/hold of a running job survives a daemon restart
    "ALTER TABLE jobs ADD COLUMN pending TEXT;",
    // 3 -> 4: HTCondor clusters (a submit file's jobs are one cluster, numbered by proc) and
    // what a submit file adds to a job (initialdir, stdin, user log, input transfer, its ad)
    "CREATE TABLE clusters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner INTEGER NOT NULL,
        created_at REAL NOT NULL
     );
     ALTER TABLE jobs ADD COLUMN cluster INTEGER;
     ALTER TABLE jobs ADD COLUMN proc INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN extra TEXT;
     INSERT INTO sqlite_sequence (name, seq) SELECT 'clusters', COALESCE(MAX(id), 0) FROM jobs;",
    // 4 -> 5: facts about the node the state was written on: the kernel boot it was written
    // in, so a restart after a power loss or reboot knows that files not fsync'd (claims,
    // results) may be lost or empty (see Core::recover)
    "CREATE TABLE node (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 5 -> 6: what a job's policy expressions read that no other column keeps (completions,
    // cumulative wall time, the hold's code), and completed jobs kept in the queue by
    // `leave_in_queue` (loaded at start with the unfinished ones)
    "ALTER TABLE jobs ADD COLUMN policy TEXT;
     ALTER TABLE jobs ADD COLUMN in_queue INTEGER;
     CREATE INDEX jobs_in_queue ON jobs(id) WHERE in_queue = 1;",
];

pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub struct Store {
    pub conn: Connection,
    pub path: PathBuf,
}

/// A job row as the core needs it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub info: JobInfo,
    pub spec: String,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub sup_pid: Option<i32>,
    pub sup_start: Option<u64>,
    /// "remove:<uid>" or "hold:<reason>": an eviction acknowledged but not yet finished.
    pub pending: Option<String>,
    /// [`crate::types::JobExtra`] as JSON (jobs from submit files).
    pub extra: Option<String>,
    /// The job's policy state as JSON (see `core::job_policy`).
    pub policy: Option<String>,
    /// A completed job that `leave_in_queue` keeps in the queue.
    pub in_queue: bool,
}

/// A job's request after qedit (see [`Batch::edit_job`]).
pub struct JobEdit<'a> {
    pub spec: &'a str,
    pub cpus: f64,
    pub memory: u64,
    pub priority: i32,
    pub extra: Option<&'a str>,
}

pub const JOB_COLUMNS: &str = "id, owner, user, state, priority, cpus, memory, command, submitted_at, started_at, ended_at, hold_reason, reason, attempt, exit_code, signal, report, spec, stdout, stderr, sup_pid, sup_start, pending, cluster, proc, extra, policy, in_queue";

/// JobBatchName from a job's stored extras (JSON); only parsed when it is there at all.
fn batch_name_in_extra(extra: &str) -> Option<String> {
    if !extra.contains("JobBatchName") {
        return None;
    }
    let x: crate::types::JobExtra = serde_json::from_str(extra).ok()?;
    batch_name_in(&x.ad)
}

/// JobBatchName's string in a job's ad.
pub fn batch_name_in(ad: &[(String, String)]) -> Option<String> {
    let (_, text) = ad
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("JobBatchName"))?;
    match jobcell_classad::Expr::parse(text)
        .ok()?
        .eval_in(&jobcell_classad::ClassAd::new(), None)
    {
        jobcell_classad::Value::String(s) => Some(s),
        _ => None,
    }
}

pub fn job_from_row(r: &Row) -> rusqlite::Result<JobRow> {
    let state: String = r.get(3)?;
    let command: String = r.get(7)?;
    let report: Option<String> = r.get(16)?;
    Ok(JobRow {
        info: JobInfo {
            id: r.get::<_, i64>(0)? as u64,
            owner: r.get(1)?,
            user: r.get(2)?,
            state: State::parse(&state).unwrap_or(State::Failed),
            priority: r.get(4)?,
            cpus: r.get(5)?,
            memory: r.get::<_, i64>(6)? as u64,
            command: serde_json::from_str(&command).unwrap_or_default(),
            submitted_at: r.get(8)?,
            started_at: r.get(9)?,
            ended_at: r.get(10)?,
            hold_reason: r.get(11)?,
            reason: r.get(12)?,
            attempt: r.get(13)?,
            exit_code: r.get(14)?,
            signal: r.get(15)?,
            report: report.and_then(|s| serde_json::from_str(&s).ok()),
            // Jobs from before clusters existed are clusters of their own.
            cluster: r
                .get::<_, Option<i64>>(23)?
                .map(|c| c as u64)
                .unwrap_or(r.get::<_, i64>(0)? as u64),
            proc: r.get::<_, i64>(24)? as u64,
            batch_name: r
                .get::<_, Option<String>>(25)?
                .as_deref()
                .and_then(batch_name_in_extra),
            suspended_s: 0.0,
            suspended_at: None,
            owner_name: None,
        },
        spec: r.get(17)?,
        stdout: r.get(18)?,
        stderr: r.get(19)?,
        sup_pid: r.get(20)?,
        sup_start: r.get::<_, Option<i64>>(21)?.map(|v| v as u64),
        pending: r.get(22)?,
        extra: r.get(25)?,
        policy: r.get(26)?,
        in_queue: r.get::<_, Option<i64>>(27)? == Some(1),
    })
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |source| StoreError::Sql {
            path: path.to_path_buf(),
            err: source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;")
            .map_err(err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_path_buf(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            let tx = conn.transaction().map_err(err)?;
            for (v, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.execute_batch(sql).map_err(err)?;
                tx.execute_batch(&format!("PRAGMA user_version = {}", v + 1))
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
        }
        // A WAL left by a daemon that was killed (or that exited on a full disk) can be larger
        // than the reserve below: moved into the database and cut to nothing first, so that
        // the first commits after a restart land in reserved space instead of failing again.
        match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(0) => {}
            Ok(_) => tracing::warn!(
                "state database {}: the checkpoint at open could not finish",
                path.display()
            ),
            Err(e) => tracing::warn!("state database {}: checkpoint at open: {e}", path.display()),
        }
        reserve_space(&conn, path);
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    pub fn err(&self, err: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.clone(),
            err,
        }
    }

    /// Every job not yet finished, and the completed ones kept in the queue.
    pub fn active_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state NOT IN ('completed','failed','removed')
                 UNION ALL SELECT {JOB_COLUMNS} FROM jobs WHERE in_queue = 1 ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], job_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut rows = rows;
        for r in &mut rows {
            if matches!(r.info.state, State::Running | State::Suspended) {
                self.suspensions(&mut r.info)?;
            }
        }
        Ok(rows)
    }

    /// The time a running job has spent suspended in its current run, from its events.
    fn suspensions(&self, info: &mut JobInfo) -> Result<(), StoreError> {
        let since = info.started_at.unwrap_or(0.0);
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT time, kind FROM events WHERE job = ?1 AND time >= ?2
                 AND kind IN ('suspended', 'continued') ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let events = st
            .query_map(params![info.id as i64, since], |r| {
                Ok((r.get::<_, f64>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let (mut total, mut from) = (0.0, None);
        for (t, kind) in events {
            match (kind.as_str(), from) {
                ("suspended", None) => from = Some(t),
                ("continued", Some(f)) => {
                    total += t - f;
                    from = None;
                }
                _ => {}
            }
        }
        info.suspended_s = total;
        info.suspended_at = if info.state == State::Suspended {
            from
        } else {
            None
        };
        Ok(())
    }

    /// Begins one batch of the core. IMMEDIATE: the write lock is taken (waiting the busy
    /// timeout) at BEGIN. A deferred transaction that reads first (a keyed submission looks
    /// its key up) cannot wait when it upgrades: SQLite returns BUSY at once.
    pub fn batch(&self) -> Result<Batch<'_>, StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(
            &self.conn,
            rusqlite::TransactionBehavior::Immediate,
        )
        .map_err(|e| self.err(e))?;
        Ok(Batch {
            tx,
            path: &self.path,
        })
    }
}

/// One transaction of the core: every statement it runs, named by what it does. Nothing is
/// written for good until [`Batch::commit`]; dropping a batch rolls it back.
pub struct Batch<'s> {
    tx: rusqlite::Transaction<'s>,
    path: &'s Path,
}

/// A new job's row (`Batch::insert_job`).
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub owner: u32,
    pub user: &'a str,
    pub state: State,
    pub priority: i32,
    pub cpus: f64,
    pub memory: u64,
    /// The argv as JSON.
    pub command: &'a str,
    pub spec: &'a str,
    pub stdout: Option<&'a str>,
    pub stderr: Option<&'a str>,
    pub submitted_at: f64,
    pub hold_reason: Option<&'a str>,
    pub submit_key: Option<&'a str>,
    pub cluster: u64,
    pub proc: u64,
    /// [`crate::types::JobExtra`] as JSON.
    pub extra: Option<&'a str>,
}

/// How an attempt ended, as its row keeps it until the next attempt ends.
#[derive(Debug, Clone, Copy)]
pub struct AttemptEnd<'a> {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The supervisor's report as JSON.
    pub report: Option<&'a str>,
}

impl Batch<'_> {
    fn err(&self, err: rusqlite::Error) -> StoreError {
        StoreError::Sql {
            path: self.path.to_path_buf(),
            err,
        }
    }

    /// One statement that changes rows.
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> Result<(), StoreError> {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut st| st.execute(params))
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// One row's one column, if there is such a row.
    fn one<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Option<T>, StoreError> {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut st| st.query_row(params, |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// Every row of a query, mapped.
    fn all<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        f: impl FnMut(&Row) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        self.tx
            .prepare_cached(sql)
            .and_then(|mut st| st.query_map(params, f)?.collect())
            .map_err(|e| self.err(e))
    }

    /// Makes the batch's changes durable (one fsync: `synchronous=FULL`).
    pub fn commit(self) -> Result<(), StoreError> {
        let path = self.path;
        self.tx.commit().map_err(|err| StoreError::Sql {
            path: path.to_path_buf(),
            err,
        })
    }

    /// The kernel boot the state was last written in.
    pub fn boot_id(&self) -> Result<Option<String>, StoreError> {
        self.one("SELECT value FROM node WHERE key = 'boot_id'", [])
    }

    pub fn set_boot_id(&self, boot_id: &str) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO node (key, value) VALUES ('boot_id', ?1) ON CONFLICT (key) DO UPDATE SET value = ?1",
            params![boot_id],
        )
    }

    pub fn job(&self, id: u64) -> Result<Option<JobRow>, StoreError> {
        self.tx
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .and_then(|mut st| st.query_row(params![id as i64], job_from_row).optional())
            .map_err(|e| self.err(e))
    }

    /// Finished jobs, newest first.
    pub fn history(&self, limit: u32) -> Result<Vec<JobInfo>, StoreError> {
        self.all(
            &format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('completed','failed','removed') AND in_queue IS NOT 1 ORDER BY ended_at DESC, id DESC LIMIT ?1"
            ),
            params![limit],
            |r| job_from_row(r).map(|j| j.info),
        )
    }

    /// The finished jobs of these clusters, newest first.
    pub fn history_of_clusters(&self, clusters: &[u64]) -> Result<Vec<JobInfo>, StoreError> {
        let mut out = Vec::new();
        for c in clusters {
            out.extend(self.all(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE cluster = ?1 AND state IN ('completed','failed','removed')"
                ),
                params![*c as i64],
                |r| job_from_row(r).map(|j| j.info),
            )?);
        }
        out.sort_by(|a, b| {
            b.ended_at
                .partial_cmp(&a.ended_at)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(b.id.cmp(&a.id))
        });
        Ok(out)
    }

    pub fn events(&self, id: u64) -> Result<Vec<Event>, StoreError> {
        self.all(
            "SELECT time, kind, detail FROM events WHERE job = ?1 ORDER BY rowid",
            params![id as i64],
            |r| {
                let d: Option<String> = r.get(2)?;
                Ok(Event {
                    time: r.get(0)?,
                    kind: r.get(1)?,
                    detail: d.and_then(|s| serde_json::from_str(&s).ok()),
                })
            },
        )
    }

    /// How many jobs are in each state (states without jobs are absent).
    pub fn counts_by_state(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.all("SELECT state, count(*) FROM jobs GROUP BY state", [], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })
    }

    /// How many jobs ended in each final state (completed, failed, removed).
    pub fn ended_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.all(
            "SELECT state, count(*) FROM jobs WHERE state IN ('completed','failed','removed') GROUP BY state",
            [],
            |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
        )
    }

    /// The owner's jobs made by a request with this submit key, in order.
    pub fn jobs_with_key(&self, owner: u32, key: &str) -> Result<Vec<u64>, StoreError> {
        self.all(
            "SELECT id FROM jobs WHERE owner = ?1 AND submit_key = ?2 ORDER BY id",
            params![owner, key],
            |r| r.get::<_, i64>(0).map(|v| v as u64),
        )
    }

    /// The highest job id handed out so far (0: none); the next job gets the one after.
    pub fn last_job_id(&self) -> Result<u64, StoreError> {
        self.one(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'jobs'), 0)",
            [],
        )
        .map(|v: Option<i64>| v.unwrap_or(0) as u64)
    }

    pub fn insert_cluster(&self, owner: u32, created_at: f64) -> Result<u64, StoreError> {
        self.run(
            "INSERT INTO clusters (owner, created_at) VALUES (?1, ?2)",
            params![owner, created_at],
        )?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    pub fn delete_cluster(&self, cluster: u64) -> Result<(), StoreError> {
        self.run(
            "DELETE FROM clusters WHERE id = ?1",
            params![cluster as i64],
        )
    }

    pub fn cluster_owner(&self, cluster: u64) -> Result<Option<u32>, StoreError> {
        self.one(
            "SELECT owner FROM clusters WHERE id = ?1",
            params![cluster as i64],
        )
    }

    pub fn cluster_job_count(&self, cluster: u64) -> Result<u64, StoreError> {
        self.one(
            "SELECT count(*) FROM jobs WHERE cluster = ?1",
            params![cluster as i64],
        )
        .map(|n: Option<i64>| n.unwrap_or(0) as u64)
    }

    /// Inserts a job; its id.
    pub fn insert_job(&self, j: &NewJob) -> Result<u64, StoreError> {
        self.run(
            "INSERT INTO jobs (owner, user, state, priority, cpus, memory, command, spec, stdout, stderr, submitted_at, hold_reason, submit_key, cluster, proc, extra)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            params![
                j.owner,
                j.user,
                j.state.as_str(),
                j.priority,
                j.cpus,
                j.memory as i64,
                j.command,
                j.spec,
                j.stdout,
                j.stderr,
                j.submitted_at,
                j.hold_reason,
                j.submit_key,
                j.cluster as i64,
                j.proc as i64,
                j.extra,
            ],
        )?;
        Ok(self.tx.last_insert_rowid() as u64)
    }

    pub fn add_event(
        &self,
        job: u64,
        kind: &str,
        detail: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.run(
            "INSERT INTO events (job, time, kind, detail) VALUES (?1, ?2, ?3, ?4)",
            params![
                job as i64,
                crate::types::now(),
                kind,
                detail.map(|d| d.to_string())
            ],
        )
    }

    /// Queued → starting, as attempt `attempt`: committed before its supervisor exists.
    pub fn mark_starting(&self, id: u64, attempt: u32, started_at: f64) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='starting', attempt=?2, started_at=?3 WHERE id=?1",
            params![id as i64, attempt, started_at],
        )
    }

    /// Starting → running under this supervisor (pid and start time).
    pub fn mark_running(&self, id: u64, pid: i32, start: u64) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='running', sup_pid=?2, sup_start=?3 WHERE id=?1 AND state='starting'",
            params![id as i64, pid, start as i64],
        )
    }

    /// A queued or held job's request changed by qedit: what it will run with.
    pub fn edit_job(&self, id: u64, e: &JobEdit) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET spec=?2, cpus=?3, memory=?4, priority=?5, extra=?6 WHERE id=?1",
            params![
                id as i64,
                e.spec,
                e.cpus,
                e.memory as i64,
                e.priority,
                e.extra
            ],
        )
    }

    /// Running ⇄ suspended: only the state changes.
    pub fn set_state(&self, id: u64, state: State) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state=?2 WHERE id=?1",
            params![id as i64, state.as_str()],
        )
    }

    /// An eviction acknowledged but not finished (see [`JobRow::pending`]).
    pub fn set_pending(&self, id: u64, pending: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET pending=?2 WHERE id=?1",
            params![id as i64, pending],
        )
    }

    /// The job's policy state (JSON).
    pub fn set_policy(&self, id: u64, policy: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET policy=?2 WHERE id=?1",
            params![id as i64, policy],
        )
    }

    /// Whether a completed job stays in the queue (`leave_in_queue`).
    pub fn set_in_queue(&self, id: u64, in_queue: bool) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET in_queue=?2 WHERE id=?1",
            params![id as i64, in_queue.then_some(1)],
        )
    }

    /// Removed without running (or after a fenced attempt).
    pub fn remove(&self, id: u64, ended_at: f64, reason: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='removed', ended_at=?2, reason=?3, pending=NULL WHERE id=?1",
            params![id as i64, ended_at, reason],
        )
    }

    /// Held without running (or after a fenced attempt).
    pub fn hold(&self, id: u64, reason: &str) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='held', hold_reason=?2, pending=NULL WHERE id=?1",
            params![id as i64, reason],
        )
    }

    pub fn release(&self, id: u64) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='queued', hold_reason=NULL WHERE id=?1",
            params![id as i64],
        )
    }

    /// Queued again: its attempt never started (it was fenced).
    pub fn requeue_unstarted(&self, id: u64) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='queued', started_at=NULL, pending=NULL WHERE id=?1",
            params![id as i64],
        )
    }

    /// Queued again after an attempt a policy stopped, with the reason and how it ended.
    pub fn requeue_ended(
        &self,
        id: u64,
        reason: Option<&str>,
        end: AttemptEnd,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='queued', pending=NULL, started_at=NULL, reason=?2, exit_code=?3, signal=?4, report=?5 WHERE id=?1",
            params![id as i64, reason, end.exit_code, end.signal, end.report],
        )
    }

    /// Held after an attempt, with the reason and how it ended.
    pub fn hold_ended(
        &self,
        id: u64,
        reason: Option<&str>,
        end: AttemptEnd,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state='held', pending=NULL, hold_reason=?2, exit_code=?3, signal=?4, report=?5 WHERE id=?1",
            params![id as i64, reason, end.exit_code, end.signal, end.report],
        )
    }

    /// Finished (completed, failed or removed) after an attempt.
    pub fn end(
        &self,
        id: u64,
        state: State,
        ended_at: f64,
        reason: Option<&str>,
        end: AttemptEnd,
    ) -> Result<(), StoreError> {
        self.run(
            "UPDATE jobs SET state=?2, pending=NULL, ended_at=?3, reason=?4, exit_code=?5, signal=?6, report=?7 WHERE id=?1",
            params![
                id as i64,
                state.as_str(),
                ended_at,
                reason,
                end.exit_code,
                end.signal,
                end.report
            ],
        )
    }
}

/// Bytes of the state dir's filesystem set aside for the database at open.
pub const RESERVE_WAL: i64 = 8 << 20;
const DB_CHUNK: libc::c_int = 1 << 20;

/// Sets disk space aside so that a full state dir (job output lives there too) does not stop
/// the daemon from committing (a failed commit ends it): the WAL gets `RESERVE_WAL` bytes
/// allocated beyond its end (SQLite reuses the WAL from its start after each checkpoint and
/// never truncates it while open), and the database grows in 1 MiB chunks, so a checkpoint
/// has room for new pages too. Best effort: on an already full filesystem nothing is reserved.
fn reserve_space(conn: &Connection, path: &Path) {
    // SAFETY: the handle is this open connection's; "main" is a NUL-terminated literal; for
    // SQLITE_FCNTL_CHUNK_SIZE SQLite reads an int through the pointer, here a live local.
    unsafe {
        let mut chunk = DB_CHUNK;
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_CHUNK_SIZE,
            &mut chunk as *mut libc::c_int as *mut std::ffi::c_void,
        );
    }
    let _ = reserve_wal(path);
}

/// Allocates `RESERVE_WAL` bytes beyond the WAL's end (where its next frames go unless SQLite
/// starts it over). Also called by the core when the reserve has been used up; an error says
/// why nothing was reserved (EOPNOTSUPP: the filesystem cannot, no use trying again).
pub fn reserve_wal(db: &Path) -> std::io::Result<()> {
    // Only the WAL is opened here: closing a second descriptor of the database file itself
    // would drop SQLite's POSIX locks on it.
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let f = std::fs::OpenOptions::new().write(true).open(&wal)?;
    use std::os::fd::AsRawFd;
    let end = f.metadata()?.len() as libc::off_t;
    // SAFETY: a plain syscall on a descriptor we own; the file's size is kept.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, end, RESERVE_WAL) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_and_refuses_newer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.db");
        let s = Store::open(&p).unwrap();
        let v: i64 = s
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        s.conn.execute_batch("PRAGMA user_version = 99").unwrap();
        drop(s);
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("newer") && e.contains("99"), "{e}");
    }
}
