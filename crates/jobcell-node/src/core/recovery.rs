//! Recovery at start: the queue loaded from the database, and every attempt that was starting
//! or running when the daemon stopped re-attached, recorded as ended, or requeued (the claim
//! protocol; ARCHITECTURE.md, "Never run a job twice" and "Durability").

use super::*;

/// What recovery made of one attempt that was starting or running.
enum Recovered {
    /// Its supervisor lives: watched again.
    Attached,
    /// Its supervisor is gone (or never was ours): the attempt ends in the first batch.
    Ended,
    /// It provably never started: queued again.
    Requeued,
    /// It never started and an acknowledged remove or hold now takes effect.
    Settled,
}

impl Core {
    /// Load the queue and reconcile jobs that were starting or running when the daemon stopped.
    pub fn recover(&mut self, store: &Store) -> Result<(), StoreError> {
        let rows = store.active_jobs()?;
        let tx = store.batch()?;
        // Whether the machine went down since the state was last written: then no supervisor of
        // that boot survives, and the job dirs may have lost what was never fsync'd (a claim,
        // a result: see ARCHITECTURE.md, "Durability").
        let boot = sys::boot_id().ok();
        let last = tx.boot_id()?;
        let rebooted = matches!((&last, &boot), (Some(a), Some(b)) if a != b);
        if let Some(b) = &boot {
            tx.set_boot_id(b)?;
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
            let job = Job::from_row(r);
            let state = job.info.state;
            if !state.active() {
                if state == State::Queued {
                    self.queue.insert(&job.info);
                }
                self.jobs.insert(id, job);
                continue;
            }
            let procs = supervisors_procs.as_deref();
            match self.recover_attempt(&tx, job, row_sup, rebooted, procs)? {
                Recovered::Attached => attached += 1,
                Recovered::Ended => ended += 1,
                Recovered::Requeued => requeued += 1,
                Recovered::Settled => {}
            }
        }
        tx.commit()?;
        if rebooted {
            warn!("the machine restarted since this state was written: jobs that were starting or running are recorded as ended (with their result if it reached the disk), none is run again");
        }
        info!(
            "recovered {} unfinished jobs: {attached} running re-attached, {ended} ended while down, {requeued} requeued (never started)",
            self.jobs.len()
        );
        Ok(())
    }

    /// One attempt that was starting or running: what its claim says decides.
    fn recover_attempt(
        &mut self,
        tx: &Batch,
        mut job: Job,
        row_sup: Option<(i32, u64)>,
        rebooted: bool,
        supervisors_procs: Option<&Path>,
    ) -> Result<Recovered, StoreError> {
        let (id, attempt) = (job.info.id, job.info.attempt);
        self.allocate(allocation(&job.info));
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
            self.jobs.insert(id, job);
            return Ok(Recovered::Ended);
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
        match claim {
            // Fenced now, or by an earlier recovery whose commit did not happen.
            Some(Claim::Fenced) => self.recover_fenced(tx, job),
            Some(Claim::Supervisor { pid, starttime }) => {
                self.recover_claimed(tx, job, row_sup, (pid, starttime), supervisors_procs)
            }
            None => {
                // Unreadable claim: treat the supervisor as gone; Exited records why.
                self.local.push_back(Cmd::Exited { id, attempt });
                self.jobs.insert(id, job);
                Ok(Recovered::Ended)
            }
        }
    }

    /// An attempt that provably never started: queued again, unless a remove or hold was
    /// acknowledged meanwhile.
    fn recover_fenced(&mut self, tx: &Batch, mut job: Job) -> Result<Recovered, StoreError> {
        let (id, attempt) = (job.info.id, job.info.attempt);
        self.deallocate(allocation(&job.info));
        match job.pending.take() {
            Some(Pending::Remove(by)) => {
                let reason = format!("removed by {}", sys::user_name(by));
                tx.remove(id, now(), &reason)?;
                tx.add_event(id, "removed", Some(&serde_json::json!({"by": by})))?;
                return Ok(Recovered::Settled);
            }
            Some(Pending::PolicyRemove(reason)) => {
                tx.remove(id, now(), &reason)?;
                tx.add_event(id, "removed", Some(&serde_json::json!({"reason": reason})))?;
                return Ok(Recovered::Settled);
            }
            Some(Pending::Hold(r)) => {
                tx.hold(id, &r)?;
                tx.add_event(id, "held", Some(&serde_json::json!({"reason": r})))?;
                job.info.state = State::Held;
                job.info.hold_reason = Some(r);
                self.jobs.insert(id, job);
                return Ok(Recovered::Settled);
            }
            Some(Pending::Requeue(_)) | None => {}
        }
        job.info.state = State::Queued;
        job.info.started_at = None;
        tx.requeue_unstarted(id)?;
        tx.add_event(
            id,
            "requeued",
            Some(
                &serde_json::json!({"why": "the daemon stopped before the job's supervisor started", "attempt": attempt}),
            ),
        )?;
        self.queue.insert(&job.info);
        self.jobs.insert(id, job);
        Ok(Recovered::Requeued)
    }

    /// An attempt a process claimed: re-attached if that process is provably its supervisor
    /// and alive; otherwise the attempt ends (its result, if any, is read by Exited).
    fn recover_claimed(
        &mut self,
        tx: &Batch,
        mut job: Job,
        row_sup: Option<(i32, u64)>,
        (claimed_pid, claimed_start): (i32, u64),
        supervisors_procs: Option<&Path>,
    ) -> Result<Recovered, StoreError> {
        let (id, attempt) = (job.info.id, job.info.attempt);
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
            let member = match supervisors_procs {
                Some(procs) => sys::pidfd_in_cgroup(&fd, pid, procs).unwrap_or_else(|e| {
                    warn!("job {id}: reading {}: {e}", procs.display());
                    Some(false)
                }),
                None => Some(true),
            };
            (fd, member)
        });
        match proven {
            Ok((fd, Some(true))) => {
                job.sup = Some((pid, starttime));
                if job.info.state == State::Starting {
                    job.info.state = State::Running;
                    tx.mark_running(id, pid, starttime)?;
                }
                if job.pending.is_some() {
                    // An acknowledged remove/hold the previous daemon may not have
                    // delivered: deliver it (again; SIGTERM twice is harmless).
                    let _ = sys::pidfd_signal(&fd, libc::SIGTERM);
                }
                let fd = Arc::new(fd);
                job.pidfd = Some(fd.clone());
                self.watch(id, attempt, fd);
                let started_at = job.info.started_at.unwrap_or_else(now);
                self.jobs.insert(id, job);
                self.arm_deadline(id, attempt, started_at);
                return Ok(Recovered::Attached);
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
            }
            // Gone (now or while proving it): Exited reads its result.
            Ok((_, None)) | Err(_) => {
                job.sup = Some((pid, starttime));
                self.local.push_back(Cmd::Exited { id, attempt });
            }
        }
        self.jobs.insert(id, job);
        Ok(Recovered::Ended)
    }
}
