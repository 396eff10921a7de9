//! The node's policies: the wall-time limit (`allowed_job_duration`) and preemption under
//! memory pressure.

use super::*;

impl Core {
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
    pub(super) fn pressure_tick(
        &mut self,
        tx: &Batch,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        let Some(p) = self.cfg.policy.pressure.clone() else {
            return Ok(());
        };
        let Some(root) = &self.cgroups else {
            return Ok(());
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
            tx.add_event(id,
                "policy",
                Some(
                    &serde_json::json!({"policy": "memory pressure", "reason": reason, "action": if p.hold { "hold" } else { "requeue" }}),
                ),
            )?;
            *self.counters.preemptions.entry("pressure").or_default() += 1;
            self.pressure.remove(&id);
            let pend = if p.hold {
                Pending::Hold(reason)
            } else {
                Pending::Requeue(reason)
            };
            match self.evict(tx, id, pend, effects) {
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => warn!("job {id}: preempting it: {e}"),
                Ok(()) => {}
            }
        }
        Ok(())
    }

    /// The job's wall-time limit: its own, capped by the node's.
    pub(super) fn duration_limit(&self, id: u64) -> Option<f64> {
        let own = self.jobs.get(&id).and_then(|j| j.max_duration);
        match (own, self.cfg.policy.allowed_job_duration) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The job's `allowed_execute_duration` (seconds).
    fn execute_limit(&self, id: u64) -> Option<f64> {
        self.jobs
            .get(&id)
            .and_then(|j| j.policy.as_ref())
            .and_then(|p| p.execute_limit)
    }

    /// Send ourselves a [`Cmd::Deadline`] when the job's wall-time limit (or its
    /// `allowed_execute_duration`, whichever is first) passes.
    pub(super) fn arm_deadline(&self, id: u64, attempt: u32, started_at: f64) {
        let limit = match (self.duration_limit(id), self.execute_limit(id)) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(l) => l,
                None => return,
            },
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
    pub(super) fn deadline(
        &mut self,
        tx: &Batch,
        id: u64,
        attempt: u32,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        let Some(j) = self.jobs.get(&id) else {
            return Ok(());
        };
        if j.info.attempt != attempt || !j.info.state.active() || j.pending.is_some() {
            return Ok(());
        }
        let job_limit = self.duration_limit(id);
        let (policy, limit, reason) = match self.execute_limit(id) {
            // HTCondor's HoldReasonCode 47, not the job duration's 46.
            Some(e) if job_limit.is_none_or(|d| e < d) => (
                "allowed_execute_duration",
                e,
                format!(
                    "The job exceeded allowed execute duration of {}",
                    fmt_duration(e)
                ),
            ),
            _ => {
                let limit = job_limit.unwrap_or(0.0);
                (
                    "allowed_job_duration",
                    limit,
                    format!(
                        "The job exceeded allowed job duration of {}",
                        fmt_duration(limit)
                    ),
                )
            }
        };
        tx.add_event(
            id,
            "policy",
            Some(&serde_json::json!({"policy": policy, "limit_s": limit, "action": "hold"})),
        )?;
        warn!("job {id}: {reason}; holding it");
        *self.counters.preemptions.entry("duration").or_default() += 1;
        match self.evict(tx, id, Pending::Hold(reason), effects) {
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => {
                warn!("job {id}: evicting it past its duration: {e}");
                Ok(())
            }
            Ok(()) => Ok(()),
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
