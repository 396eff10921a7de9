//! The end of an attempt: what its supervisor left (result, claim) and how the job ends
//! (completed, failed, held, removed, or queued again).

use super::*;

impl Core {
    /// A supervisor is gone (its pidfd became readable, or recovery found it gone): read what
    /// it left and end the attempt.
    pub(super) fn exited(
        &mut self,
        tx: &Batch,
        id: u64,
        attempt: u32,
        effects: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let Some(j) = self.jobs.get(&id) else {
            return Ok(());
        };
        if j.info.attempt != attempt || !j.info.state.active() {
            return Ok(());
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
        self.finish(tx, id, res, effects)
    }

    /// The supervisor is gone: record how the job ended and free its resources.
    pub(super) fn finish(
        &mut self,
        tx: &Batch,
        id: u64,
        res: Option<JobResult>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), StoreError> {
        let Some(mut j) = self.jobs.remove(&id) else {
            return Ok(());
        };
        self.deallocate(allocation(&j.info));
        if self.jobs.values().all(|j| !j.info.state.active()) {
            // Avoid drift from float sums.
            self.alloc_cpus = 0.0;
            self.alloc_mem = 0;
            self.alloc_by_owner.clear();
        }
        if let (None, Some((pid, _))) = (&res, j.sup) {
            effects.push(Effect::Cleanup { id, pid });
        }
        let mut ending = self.ending(&j, res);
        self.pressure.remove(&id);
        let in_queue = self.apply_exit_policy(&mut j, &mut ending);
        j.seen_state = ending.state;
        self.save_exit_policy_state(tx, &j)?;
        match ending.state {
            State::Queued => self.requeue_after(tx, j, ending),
            State::Held => self.hold_after(tx, j, ending),
            _ => {
                self.end_job(tx, &j, &ending)?;
                if in_queue {
                    // `leave_in_queue`: shown completed in the queue until it is removed
                    // or the expression turns false.
                    tx.set_in_queue(id, true)?;
                    j.info.state = ending.state;
                    j.info.ended_at = Some(now());
                    j.info.reason = ending.reason.clone();
                    j.seen_state = ending.state;
                    j.end_attempt(ending.exit_code, ending.signal, ending.report);
                    self.jobs.insert(id, j);
                }
                Ok(())
            }
        }
    }

    /// What the attempt's end (and a pending remove, hold or requeue) makes of the job.
    fn ending(&mut self, j: &Job, res: Option<JobResult>) -> Ending {
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
            (Some(Pending::PolicyRemove(r)), _) => (State::Removed, Some(r.clone())),
            // A problem the job's owner can fix (an input file they cannot read...): held,
            // like HTCondor, rather than failed.
            (None, Some(r)) if r.hold_reason.is_some() => (State::Held, r.hold_reason.clone()),
            (None, Some(r)) if r.error.is_some() => (State::Failed, r.error.clone()),
            // The launcher could not exec the command (126/127 are its, not the job's).
            (None, Some(r)) if r.exec_error.is_some() => (State::Failed, r.exec_error.clone()),
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
        Ending {
            state,
            reason,
            exit_code,
            signal,
            report_json: report.as_ref().map(|r| r.to_string()),
            report,
            oom,
        }
    }

    /// Preempted by a policy: back in the queue for a new attempt, the reason kept.
    fn requeue_after(&mut self, tx: &Batch, mut j: Job, e: Ending) -> Result<(), StoreError> {
        let id = j.info.id;
        tx.requeue_ended(id, e.reason.as_deref(), e.attempt_end())?;
        tx.add_event(
            id,
            "requeued",
            Some(&serde_json::json!({"why": e.reason, "preempted": true})),
        )?;
        *self.counters.finished.entry("requeued").or_default() += 1;
        self.ulog(
            &j.ulog,
            userlog::Event::Evicted(e.reason.clone().unwrap_or_default()),
        );
        j.info.state = State::Queued;
        j.info.started_at = None;
        j.info.reason = e.reason;
        j.end_attempt(e.exit_code, e.signal, e.report);
        self.queue.insert(&j.info);
        self.queued_at.insert(id, now());
        self.jobs.insert(id, j);
        Ok(())
    }

    /// Held: by its owner or root, a policy, or a problem its owner can fix.
    fn hold_after(&mut self, tx: &Batch, mut j: Job, e: Ending) -> Result<(), StoreError> {
        let id = j.info.id;
        tx.hold_ended(id, e.reason.as_deref(), e.attempt_end())?;
        tx.add_event(
            id,
            "held",
            Some(&serde_json::json!({"reason": e.reason, "evicted": true, "oom_killed": e.oom})),
        )?;
        *self.counters.finished.entry("held").or_default() += 1;
        self.ulog(
            &j.ulog,
            userlog::Event::Held(e.reason.clone().unwrap_or_default()),
        );
        j.info.state = State::Held;
        j.info.hold_reason = e.reason;
        j.end_attempt(e.exit_code, e.signal, e.report);
        self.jobs.insert(id, j);
        Ok(())
    }

    /// Finished for good: completed, failed or removed.
    fn end_job(&mut self, tx: &Batch, j: &Job, e: &Ending) -> Result<(), StoreError> {
        let id = j.info.id;
        let (state, reason) = (e.state, &e.reason);
        tx.end(id, state, now(), reason.as_deref(), e.attempt_end())?;
        let usage = e.report.as_ref().map(|r| {
            serde_json::json!({
                "exit_code": e.exit_code, "signal": e.signal,
                "wall_time_s": r.get("wall_time_s"), "cpu_user_us": r.get("cpu_user_us"),
                "cpu_system_us": r.get("cpu_system_us"), "oom_killed": r.get("oom_killed"),
                "memory_peak": r.get("usage").and_then(|u| u.get("memory_peak")),
            })
        });
        let detail = serde_json::json!({"state": state.as_str(), "reason": reason, "usage": usage});
        tx.add_event(id, "ended", Some(&detail))?;
        *self.counters.finished.entry(state.as_str()).or_default() += 1;
        // A job that never ran to an exit (jobcell could not start it, its supervisor died)
        // is aborted in HTCondor's words, not terminated with a made-up return value.
        let never_exited = e.exit_code.is_none() && e.signal.is_none();
        let ev = if state == State::Removed || (state == State::Failed && never_exited) {
            userlog::Event::Aborted(reason.clone().unwrap_or_default())
        } else {
            userlog::Event::Terminated {
                exit_code: e.exit_code,
                signal: e.signal,
                report: e.report.clone(),
                cpus: j.info.cpus,
                memory: j.info.memory,
            }
        };
        self.ulog(&j.ulog, ev);
        if state == State::Failed {
            warn!("job {id} failed: {}", reason.as_deref().unwrap_or(""));
        }
        Ok(())
    }
}

/// How an attempt ended and what that makes of its job (see [`Core::finish`]).
pub(super) struct Ending {
    pub(super) state: State,
    pub(super) reason: Option<String>,
    pub(super) exit_code: Option<i32>,
    pub(super) signal: Option<i32>,
    pub(super) report: Option<serde_json::Value>,
    report_json: Option<String>,
    oom: bool,
}

impl Ending {
    fn attempt_end(&self) -> AttemptEnd<'_> {
        AttemptEnd {
            exit_code: self.exit_code,
            signal: self.signal,
            report: self.report_json.as_deref(),
        }
    }
}

/// Remove a dead supervisor's scratch dir `base/name` with the launcher's own removal (openat,
/// never following symlinks or crossing mounts).
pub(super) fn remove_scratch(base: &Path, name: &str) {
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
