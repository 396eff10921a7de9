//! Waiting for a job's end (`GET /v1/jobs/{id}/wait`, and a follower of its output): a waiter
//! is kept per job and answered in the batch whose commit ends the job, so no one polls.

use super::*;

/// One request waiting for a job's end.
pub(super) struct Waiter {
    /// A held job counts as ended (it writes nothing more until it is released).
    held_ends: bool,
    reply: Reply<JobInfo>,
}

/// Whether a job in `state` is over for a waiter.
pub fn has_ended(state: State, held_ends: bool) -> bool {
    matches!(state, State::Completed | State::Failed | State::Removed)
        || (held_ends && state == State::Held)
}

fn answer(
    replies: &mut Vec<Box<dyn FnOnce()>>,
    reply: Reply<JobInfo>,
    v: Result<JobInfo, CoreError>,
) {
    replies.push(Box::new(move || {
        let _ = reply.send(v);
    }));
}

impl Core {
    /// Answers at once if the job has ended (or does not exist), else keeps the waiter.
    pub(super) fn wait_end(
        &mut self,
        tx: &Batch,
        id: u64,
        held_ends: bool,
        reply: Reply<JobInfo>,
        replies: &mut Vec<Box<dyn FnOnce()>>,
    ) -> Result<(), CoreError> {
        match self.get(tx, id) {
            Err(e) if e.is_fatal() => Err(e),
            Ok(info) if !has_ended(info.state, held_ends) => {
                self.waiters
                    .entry(id)
                    .or_default()
                    .push(Waiter { held_ends, reply });
                Ok(())
            }
            r => {
                answer(replies, reply, r);
                Ok(())
            }
        }
    }

    /// After a batch's changes: answers the waiters whose job has ended, and forgets those
    /// whose client went away. Only jobs someone waits for are looked at.
    pub(super) fn settle_waiters(
        &mut self,
        tx: &Batch,
        replies: &mut Vec<Box<dyn FnOnce()>>,
    ) -> Result<(), CoreError> {
        if self.waiters.is_empty() {
            return Ok(());
        }
        let ids: Vec<u64> = self.waiters.keys().copied().collect();
        for id in ids {
            let mut waiting = self.waiters.remove(&id).unwrap_or_default();
            waiting.retain(|w| !w.reply.is_closed());
            // An ended job has left `jobs`; its final row is in the store.
            let state = match self.jobs.get(&id) {
                Some(j) => j.info.state,
                None => State::Completed,
            };
            if !waiting.iter().any(|w| has_ended(state, w.held_ends)) {
                if !waiting.is_empty() {
                    self.waiters.insert(id, waiting);
                }
                continue;
            }
            let info = match self.get(tx, id) {
                Ok(info) => info,
                Err(e) if e.is_fatal() => return Err(e),
                // Gone from the store too: the waiters hear why, the daemon goes on.
                Err(e) => {
                    let msg = e.to_string();
                    for w in waiting {
                        answer(replies, w.reply, Err(CoreError::NotFound(msg.clone())));
                    }
                    continue;
                }
            };
            let (done, still): (Vec<Waiter>, Vec<Waiter>) = waiting
                .into_iter()
                .partition(|w| has_ended(info.state, w.held_ends));
            for w in done {
                answer(replies, w.reply, Ok(info.clone()));
            }
            if !still.is_empty() {
                self.waiters.insert(id, still);
            }
        }
        Ok(())
    }
}
