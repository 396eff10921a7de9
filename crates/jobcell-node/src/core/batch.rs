//! The core loop: take every pending command, apply the batch in one transaction, commit,
//! then reply and act.

use super::*;

impl Core {
    /// The core loop; returns when every sender is gone, or with a fatal error (the database
    /// or the spawner failed): then the batch is abandoned uncommitted and unanswered, and the
    /// caller ends the daemon (crash-only: a restart recovers from the committed state). The
    /// store is the loop's, not the core's: each batch's transaction borrows it while apply()
    /// changes the rest.
    pub fn run(mut self, store: Store, rx: Receiver<Cmd>) -> Result<(), CoreError> {
        let mut effects = Vec::new();
        let mut replies: Vec<Box<dyn FnOnce()>> = Vec::new();
        loop {
            let mut cmds: Vec<Cmd> = self.local.drain(..).collect();
            if cmds.is_empty() {
                // With changes waiting for room, look at the state dir again every second.
                let next = if self.deferred.is_empty() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(std::time::Duration::from_secs(1))
                };
                match next {
                    Ok(c) => cmds.push(c),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
            }
            while cmds.len() < 1024 {
                match rx.try_recv() {
                    Ok(c) => cmds.push(c),
                    Err(_) => break,
                }
            }
            let writable = self.measure_room(&store.path);
            if writable {
                cmds.splice(0..0, self.deferred.drain(..));
            } else {
                cmds = self.hold_writes(cmds);
            }
            let tx = store.batch()?;
            for c in cmds {
                self.apply(&tx, c, &mut replies, &mut effects)?;
            }
            if writable {
                self.schedule(&tx, &mut effects)?;
            }
            self.settle_waiters(&tx, &mut replies)?;
            tx.commit()?;
            for r in replies.drain(..) {
                r();
            }
            if let Some(u) = &self.ulog_tx {
                for m in self.ulog_out.drain(..) {
                    let _ = u.send(m);
                }
            }
            self.perform(std::mem::take(&mut effects))?;
        }
    }

    /// Applies one command to the batch; an error is fatal (a refusal is the command's answer).
    pub(super) fn apply(
        &mut self,
        tx: &Batch,
        c: Cmd,
        replies: &mut Vec<Box<dyn FnOnce()>>,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CoreError> {
        // Every reply, reads included, is sent after the batch's commit: a read must not show
        // a change (a job's result folded in this batch, say) that a crash could still undo.
        // A fatal error is not an answer: it ends the batch.
        fn later<T: Send + 'static>(
            replies: &mut Vec<Box<dyn FnOnce()>>,
            reply: Reply<T>,
            v: Result<T, CoreError>,
        ) -> Result<(), CoreError> {
            match v {
                Err(e) if e.is_fatal() => Err(e),
                v => {
                    replies.push(Box::new(move || {
                        let _ = reply.send(v);
                    }));
                    Ok(())
                }
            }
        }
        match c {
            Cmd::Submit { caller, req, reply } => {
                let r = self.submit(tx, caller, *req);
                later(replies, reply, r)
            }
            Cmd::NewCluster { caller, reply } => {
                let r = self.empty_cluster(tx, caller);
                later(replies, reply, r)
            }
            Cmd::SubmitCluster {
                caller,
                cluster,
                req,
                reply,
            } => {
                let r = self.submit_cluster(tx, caller, cluster, *req);
                later(replies, reply, r)
            }
            Cmd::Ad { caller, id, reply } => {
                let r = self.ad(tx, caller, id);
                later(replies, reply, r)
            }
            Cmd::Metrics { reply } => {
                let r = self.metrics(tx);
                later(replies, reply, r)
            }
            Cmd::Deadline { id, attempt } => self.deadline(tx, id, attempt, effects),
            Cmd::PressureTick => self.pressure_tick(tx, effects),
            Cmd::PolicyTick => self.policy_tick(tx, effects),
            Cmd::List {
                caller,
                filter,
                reply,
            } => {
                let r = self.list(tx, caller, &filter);
                later(replies, reply, r)
            }
            Cmd::Get { id, reply } => {
                let r = self.get(tx, id);
                later(replies, reply, r)
            }
            Cmd::History {
                caller,
                limit,
                filter,
                reply,
            } => {
                let r = self.history(tx, caller, limit, &filter);
                later(replies, reply, r)
            }
            Cmd::Events { caller, id, reply } => {
                let r = self.events(tx, caller, id);
                later(replies, reply, r)
            }
            Cmd::Usage { caller, id, reply } => {
                let r = self.usage_path(tx, caller, id);
                later(replies, reply, r)
            }
            Cmd::Output {
                caller,
                id,
                which,
                reply,
            } => {
                let r = self.output(tx, caller, id, which);
                later(replies, reply, r)
            }
            Cmd::Status { reply } => {
                let r = self.status(tx);
                later(replies, reply, r)
            }
            Cmd::Top { reply } => {
                let r = self.top(tx);
                later(replies, reply, r)
            }
            Cmd::Act {
                caller,
                id,
                action,
                reply,
            } => {
                let r = self.act(tx, caller, id, action, effects);
                later(replies, reply, r)
            }
            Cmd::ActMany { caller, sel, reply } => {
                let r = self.act_on_many(tx, caller, *sel, effects);
                later(replies, reply, r)
            }
            Cmd::Started {
                id,
                attempt,
                pid,
                start,
            } => Ok(self.started(tx, id, attempt, pid, start, effects)?),
            Cmd::SpawnFailed { id, attempt, why } => {
                let res = JobResult::failed(attempt, why, now());
                Ok(self.finish(tx, id, Some(res), effects)?)
            }
            Cmd::Exited { id, attempt } => Ok(self.exited(tx, id, attempt, effects)?),
            Cmd::WaitEnd {
                id,
                held_ends,
                reply,
            } => self.wait_end(tx, id, held_ends, reply, replies),
        }
    }
}
