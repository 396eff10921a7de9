//! The core loop: take every pending command, apply the batch in one transaction, commit,
//! then reply and act.

use super::queries::history;
use super::*;

impl Core {
    /// The core loop; returns when every sender is gone. The store is the loop's, not the
    /// core's: each batch's transaction borrows it while apply() changes the rest.
    pub fn run(mut self, store: Store, rx: Receiver<Cmd>) {
        let mut effects = Vec::new();
        let mut replies: Vec<Box<dyn FnOnce()>> = Vec::new();
        loop {
            let mut batch: Vec<Cmd> = self.local.drain(..).collect();
            if batch.is_empty() {
                // With changes waiting for room, look at the state dir again every second.
                let next = if self.deferred.is_empty() {
                    rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                } else {
                    rx.recv_timeout(std::time::Duration::from_secs(1))
                };
                match next {
                    Ok(c) => batch.push(c),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while batch.len() < 1024 {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let writable = self.measure_room(&store.path);
            if writable {
                batch.splice(0..0, self.deferred.drain(..));
            } else {
                batch = self.hold_writes(batch);
            }
            let tx = sql(store.batch());
            for c in batch {
                self.apply(&tx, c, &mut replies, &mut effects);
            }
            if writable {
                self.schedule(&tx, &mut effects);
            }
            sql(tx.commit());
            for r in replies.drain(..) {
                r();
            }
            if let Some(u) = &self.ulog_tx {
                for m in self.ulog_out.drain(..) {
                    let _ = u.send(m);
                }
            }
            self.perform(std::mem::take(&mut effects));
        }
    }

    pub(super) fn apply(
        &mut self,
        tx: &Batch,
        c: Cmd,
        replies: &mut Vec<Box<dyn FnOnce()>>,
        effects: &mut Vec<Effect>,
    ) {
        // Every reply, reads included, is sent after the batch's commit: a read must not show
        // a change (a job's result folded in this batch, say) that a crash could still undo.
        fn later<T: Send + 'static>(
            replies: &mut Vec<Box<dyn FnOnce()>>,
            reply: Reply<T>,
            v: Result<T, CoreError>,
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
            Cmd::NewCluster { caller, reply } => {
                let r = self.take_room(CLUSTER_NEED).map(|()| ClusterResponse {
                    cluster: self.new_cluster(tx, caller),
                });
                later(replies, reply, r);
            }
            Cmd::SubmitCluster {
                caller,
                cluster,
                req,
                reply,
            } => {
                let r = self.submit_cluster(tx, caller, cluster, *req);
                later(replies, reply, r);
            }
            Cmd::Ad { caller, id, reply } => {
                let r = self.ad(tx, caller, id);
                later(replies, reply, r);
            }
            Cmd::Metrics { reply } => {
                let r = self.metrics(tx);
                later(replies, reply, r);
            }
            Cmd::Deadline { id, attempt } => self.deadline(tx, id, attempt, effects),
            Cmd::PressureTick => self.pressure_tick(tx, effects),
            Cmd::List { reply } => {
                let mut v: Vec<JobInfo> = self.jobs.values().map(|j| j.info.clone()).collect();
                v.sort_by_key(|j| j.id);
                later(replies, reply, Ok(v));
            }
            Cmd::Get { id, reply } => {
                let r = self.get(tx, id);
                later(replies, reply, r);
            }
            Cmd::History { limit, reply } => {
                let r = history(tx, limit);
                later(replies, reply, r);
            }
            Cmd::Events { caller, id, reply } => {
                let r = self.events(tx, caller, id);
                later(replies, reply, r);
            }
            Cmd::Output {
                caller,
                id,
                which,
                reply,
            } => {
                let r = self.output(tx, caller, id, which);
                later(replies, reply, r);
            }
            Cmd::Status { reply } => {
                let r = self.status(tx);
                later(replies, reply, r);
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
                let res = JobResult::failed(attempt, why, now());
                self.finish(tx, id, Some(res), effects);
            }
            Cmd::Exited { id, attempt } => self.exited(tx, id, attempt, effects),
        }
    }
}
