//! `GET /v1/top`: the node and its running jobs' cgroup figures, read when asked (nothing
//! polls in the background: a frame costs a few small reads per running job).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

use super::*;

impl Core {
    pub(super) fn top(&self, tx: &Batch) -> Result<TopFrame, CoreError> {
        let status = self.status(tx)?;
        let time = now();
        let mut disk_allocated = 0;
        let mut jobs = Vec::new();
        for j in self.jobs.values() {
            if !matches!(j.info.state, State::Running | State::Suspended) {
                continue;
            }
            if let Ok(spec) = serde_json::from_str::<JobSpec>(&j.spec) {
                disk_allocated += spec.resources.disk.unwrap_or(0);
            }
            jobs.push(self.top_job(tx, j, time)?);
        }
        jobs.sort_by_key(|j| j.id);
        let (disk_total, disk_used) = match filesystem_size(&self.cfg.scratch_base) {
            Some((total, used)) => (Some(total), Some(used)),
            None => (None, None),
        };
        Ok(TopFrame {
            time,
            node: TopNode {
                cpus_total: status.cpus_total,
                cpus_allocated: status.cpus_allocated,
                memory_total: status.memory_total,
                memory_allocated: status.memory_allocated,
                memory_used: status.memory_used,
                disk_total,
                disk_used,
                disk_allocated,
                load_1m: status.load_1m,
            },
            jobs_by_state: status.jobs,
            jobs,
        })
    }

    fn top_job(&self, tx: &Batch, j: &Job, time: f64) -> Result<TopJob, CoreError> {
        let mut t = TopJob {
            id: j.info.id,
            cluster: j.info.cluster,
            proc: j.info.proc,
            owner: j.info.owner,
            owner_name: sys::user_name(j.info.owner),
            state: j.info.state,
            cpus: j.info.cpus,
            memory: j.info.memory,
            command: j.info.command.clone(),
            started_at: j.info.started_at,
            run_time: None,
            cpu_us: None,
            memory_current: None,
            memory_pressure: None,
            io_read_bytes: None,
            io_write_bytes: None,
        };
        if let Some(start) = j.info.started_at {
            let events = tx.events(j.info.id)?;
            t.run_time = Some((time - start - suspended_secs(&events, start, time)).max(0.0));
        }
        let (Some(root), Some((pid, _))) = (&self.cgroups, j.sup) else {
            return Ok(t);
        };
        // Not made yet (the supervisor is starting) or already gone: no figures.
        let Ok(cg) = root.open(&jobdir::cgroup_name(pid, j.info.id)) else {
            return Ok(t);
        };
        if let Ok(u) = cg.stats() {
            t.cpu_us = Some(u.cpu_user_us + u.cpu_system_us);
            t.memory_current = Some(u.memory_current);
            t.io_read_bytes = u.io_read_bytes;
            t.io_write_bytes = u.io_write_bytes;
        }
        t.memory_pressure = cg.memory_pressure().ok().map(|p| p.some.avg10);
        // The supervisor owns the cgroup and removes it.
        cg.leak();
        Ok(t)
    }
}

/// Seconds the job was suspended since `start`, from its suspended/continued events (until
/// `time` if it still is).
fn suspended_secs(events: &[Event], start: f64, time: f64) -> f64 {
    let mut total = 0.0;
    let mut since = None;
    for e in events.iter().filter(|e| e.time >= start) {
        match e.kind.as_str() {
            "suspended" => since = since.or(Some(e.time)),
            "continued" => {
                if let Some(s) = since.take() {
                    total += e.time - s;
                }
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        total += time - s;
    }
    total
}

/// Total and used bytes of the filesystem holding `dir`.
fn filesystem_size(dir: &Path) -> Option<(u64, u64)> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain C struct of numbers, valid all zero.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    let total = st.f_blocks as u64 * block;
    Some((total, total.saturating_sub(st.f_bfree as u64 * block)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(time: f64, kind: &str) -> Event {
        Event {
            time,
            kind: kind.into(),
            detail: None,
        }
    }

    #[test]
    fn suspended_time_counts_closed_and_open_suspensions_of_this_attempt_only() {
        let events = [
            ev(1.0, "suspended"),
            ev(3.0, "continued"),
            ev(10.0, "started"),
            ev(12.0, "suspended"),
            ev(15.0, "continued"),
            ev(20.0, "suspended"),
        ];
        assert_eq!(suspended_secs(&events, 10.0, 24.0), 3.0 + 4.0);
        assert_eq!(suspended_secs(&events, 10.0, 20.0), 3.0);
    }
}
