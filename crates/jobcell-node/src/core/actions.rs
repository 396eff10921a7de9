//! What owners (and root) do to a job: remove, hold, release, suspend, continue.

use super::*;

impl Core {
    pub(super) fn act(
        &mut self,
        tx: &Batch,
        caller: u32,
        id: u64,
        action: Action,
        effects: &mut Vec<Effect>,
    ) -> Result<JobInfo, CoreError> {
        let verb = action.verb();
        let Some(j) = self.jobs.get(&id) else {
            let r = load(tx, id)?;
            self.check_owner(caller, r.info.owner, id, verb)?;
            return Err(CoreError::Conflict(format!(
                "job {id} has already ended ({})",
                r.info.state.as_str()
            )));
        };
        self.check_owner(caller, j.info.owner, id, verb)?;
        let state = j.info.state;
        let conflict = |why: &str| {
            Err(CoreError::Conflict(format!(
                "cannot {verb} job {id}: {why}"
            )))
        };
        if j.pending.is_some() {
            return conflict("it is already being removed or held");
        }
        if state == State::Completed {
            // Kept in the queue by leave_in_queue: rm takes it out; nothing else applies.
            return match action {
                Action::Remove => self.leave_queue(tx, id),
                _ => conflict("it has completed"),
            };
        }
        match (action, state) {
            (Action::Remove, State::Queued | State::Held) => {
                self.queue.remove(&j.info);
                let reason = format!("removed by {}", sys::user_name(caller));
                tx.remove(id, now(), &reason)?;
                tx.add_event(id, "removed", Some(&serde_json::json!({"by": caller})))?;
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
                self.queue.remove(&j.info);
                tx.hold(id, &reason)?;
                self.note_user_hold(tx, id, &reason)?;
                tx.add_event(id, "held", Some(&serde_json::json!({"reason": reason})))?;
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
                self.note_user_hold(tx, id, &reason)?;
                self.evict(tx, id, Pending::Hold(reason), effects)?;
                Ok(self.jobs[&id].info.clone())
            }
            (Action::Release, State::Held) => {
                tx.release(id)?;
                tx.add_event(id, "released", None)?;
                self.queued_at.insert(id, now());
                self.ulog_job(id, userlog::Event::Released);
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Queued;
                j.info.hold_reason = None;
                self.queue.insert(&j.info);
                Ok(j.info.clone())
            }
            (Action::Release, s) => conflict(&format!("it is {}, not held", s.as_str())),
            (Action::Suspend, State::Running) => {
                self.freeze(id, true)?;
                tx.set_state(id, State::Suspended)?;
                tx.add_event(id, "suspended", None)?;
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Suspended;
                j.info.suspended_at = Some(now());
                Ok(j.info.clone())
            }
            (Action::Continue, State::Suspended) => {
                self.freeze(id, false)?;
                tx.set_state(id, State::Running)?;
                tx.add_event(id, "continued", None)?;
                let j = self.jobs.get_mut(&id).expect("present");
                j.info.state = State::Running;
                j.info.resumed(now());
                Ok(j.info.clone())
            }
            (Action::Edit(e), State::Queued | State::Held) => self.edit(tx, caller, id, &e),
            (Action::Edit(_), s) => conflict(&format!(
                "it is {}; qedit changes queued or held jobs only",
                s.as_str()
            )),
            (Action::Suspend, s) => conflict(&format!("it is {}, not running", s.as_str())),
            (Action::Continue, s) => conflict(&format!("it is {}, not suspended", s.as_str())),
        }
    }

    /// Freeze or thaw a running job's cgroup.
    pub(super) fn freeze(&self, id: u64, on: bool) -> Result<(), CoreError> {
        let j = &self.jobs[&id];
        let (Some((pid, _)), Some(root)) = (j.sup, self.cgroups.as_ref()) else {
            return Err(CoreError::Conflict(format!(
                "job {id} has no cgroup to freeze yet"
            )));
        };
        let cg = root
            .open(&jobdir::cgroup_name(pid, id))
            .map_err(|e| CoreError::Conflict(format!("job {id}: {e}")))?;
        let r = if on { cg.freeze() } else { cg.thaw() };
        // The supervisor owns the cgroup: never let this handle remove it.
        cg.leak();
        r.map_err(|e| CoreError::Internal(format!("job {id}: {e}")))
    }

    /// Stop a running job through its supervisor (SIGTERM: the launcher passes it on, then
    /// kills after the grace time); the state changes when the supervisor has exited.
    pub(super) fn evict(
        &mut self,
        tx: &Batch,
        id: u64,
        p: Pending,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        if self.jobs[&id].info.state == State::Suspended {
            // A frozen job cannot act on SIGTERM.
            self.freeze(id, false)?;
            tx.set_state(id, State::Running)?;
        }
        let kind = match &p {
            Pending::Remove(_) | Pending::PolicyRemove(_) => "remove-requested",
            Pending::Hold(_) => "hold-requested",
            Pending::Requeue(_) => "requeue-requested",
        };
        tx.add_event(id, kind, None)?;
        tx.set_pending(id, &p.encode())?;
        let j = self.jobs.get_mut(&id).expect("present");
        if j.info.state == State::Suspended {
            j.info.state = State::Running;
            j.info.resumed(now());
        }
        if let Some(fd) = &j.pidfd {
            effects.push(Effect::Signal(fd.clone(), libc::SIGTERM));
        }
        j.pending = Some(p);
        Ok(())
    }
}
