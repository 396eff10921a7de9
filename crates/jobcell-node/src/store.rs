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
}

pub const JOB_COLUMNS: &str = "id, owner, user, state, priority, cpus, memory, command, submitted_at, started_at, ended_at, hold_reason, reason, attempt, exit_code, signal, report, spec, stdout, stderr, sup_pid, sup_start, pending, cluster, proc, extra";

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
        },
        spec: r.get(17)?,
        stdout: r.get(18)?,
        stderr: r.get(19)?,
        sup_pid: r.get(20)?,
        sup_start: r.get::<_, Option<i64>>(21)?.map(|v| v as u64),
        pending: r.get(22)?,
        extra: r.get(25)?,
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

    /// Every job not yet finished.
    pub fn active_jobs(&self) -> Result<Vec<JobRow>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state NOT IN ('completed','failed','removed') ORDER BY id"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], job_from_row)
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn job(&self, id: u64) -> Result<Option<JobRow>, StoreError> {
        self.conn
            .query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                params![id as i64],
                job_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Finished jobs, newest first.
    pub fn history(&self, limit: u32) -> Result<Vec<JobInfo>, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE state IN ('completed','failed','removed') ORDER BY ended_at DESC, id DESC LIMIT ?1"
            ))
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![limit], job_from_row)
            .map_err(|e| self.err(e))?
            .map(|r| r.map(|j| j.info))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn events(&self, id: u64) -> Result<Vec<Event>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT time, kind, detail FROM events WHERE job = ?1 ORDER BY rowid")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![id as i64], |r| {
                let d: Option<String> = r.get(2)?;
                Ok(Event {
                    time: r.get(0)?,
                    kind: r.get(1)?,
                    detail: d.and_then(|s| serde_json::from_str(&s).ok()),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    pub fn counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT state, count(*) FROM jobs GROUP BY state")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }
}

pub fn add_event(
    c: &Connection,
    job: u64,
    kind: &str,
    detail: Option<&serde_json::Value>,
) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT INTO events (job, time, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![
            job as i64,
            crate::types::now(),
            kind,
            detail.map(|d| d.to_string())
        ])?;
    Ok(())
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
