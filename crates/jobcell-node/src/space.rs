//! Room in the state dir. A commit that fails ends the daemon (crash-only, see core/batch.rs), so the
//! core measures the room before each batch instead of finding out at the commit: submissions
//! that would leave less than [`SUBMIT_FLOOR`] free are refused (507), and when even the
//! queue database's own reserve runs low ([`WRITE_FLOOR`]) the core writes nothing at all
//! (requests that would are refused, supervisors' exits wait) until space comes back.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Free bytes a submission must leave in the state dir (job output lives there too).
pub const SUBMIT_FLOOR: u64 = 8 << 20;
/// Below this much room (free bytes plus the database's unused reserve) nothing is written.
pub const WRITE_FLOOR: u64 = 2 << 20;
/// What one job costs in the database beyond its spec (row, event, index entries), counted
/// twice: once in the write-ahead log, once in the database.
const JOB_OVERHEAD: u64 = 1 << 10;

/// The state dir's room, measured once per batch.
#[derive(Debug, Clone, Copy)]
pub struct Room {
    /// Bytes free on the state dir's filesystem (for an unprivileged writer).
    pub free: u64,
    /// Bytes allocated to the write-ahead log beyond its end: commits fill these first.
    pub wal_reserve: u64,
}

impl Room {
    /// Whether a batch may write: a batch's commit is a few pages per command.
    pub fn writable(&self) -> bool {
        self.free + self.wal_reserve >= WRITE_FLOOR
    }
}

pub struct StateSpace {
    dir: PathBuf,
    wal: PathBuf,
}

impl StateSpace {
    pub fn new(db: &Path) -> StateSpace {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        StateSpace {
            dir: db.parent().unwrap_or(Path::new("/")).to_path_buf(),
            wal: PathBuf::from(wal),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One statvfs and one stat. A filesystem that cannot be measured counts as roomy: the
    /// commit still fails safely if it is not.
    pub fn measure(&self) -> Room {
        let free = CString::new(self.dir.as_os_str().as_bytes())
            .ok()
            .and_then(|c| {
                // SAFETY: statvfs is a plain C struct of numbers, valid all zero.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: c is a valid C string, st a writable statvfs.
                (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0)
                    .then(|| st.f_bavail as u64 * st.f_frsize as u64)
            })
            .unwrap_or(u64::MAX / 4);
        let wal_reserve = std::fs::metadata(&self.wal)
            .map(|m| (m.blocks() * 512).saturating_sub(m.len()))
            .unwrap_or(0);
        Room { free, wal_reserve }
    }
}

/// What `jobs` jobs with a `spec_bytes` spec each need in the database.
pub fn jobs_need(jobs: u64, spec_bytes: u64) -> u64 {
    jobs.saturating_mul(spec_bytes + JOB_OVERHEAD)
        .saturating_mul(2)
}

/// "1.2 MiB", "640 KiB".
pub fn fmt_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
    } else {
        format!("{} KiB", b.div_ceil(1 << 10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(fmt_bytes(1_258_291), "1.2 MiB");
        assert_eq!(fmt_bytes(8 << 20), "8.0 MiB");
        assert_eq!(fmt_bytes(1000), "1 KiB");
        assert_eq!(jobs_need(2, 1024 - JOB_OVERHEAD), 4096);
    }

    #[test]
    fn measures_a_real_dir() {
        let d = tempfile::tempdir().unwrap();
        let s = StateSpace::new(&d.path().join("state.db"));
        let r = s.measure();
        assert!(r.free > 0 && r.wal_reserve == 0, "{r:?}");
    }
}
