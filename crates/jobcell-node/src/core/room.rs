//! The state dir's room: measured before each batch; a batch without room writes nothing.

use super::*;

impl Core {
    /// Measures the state dir's room for this batch; whether the batch may write. Tops the
    /// queue database's reserve up again once its commits have used half of it.
    pub(super) fn measure_room(&mut self, db: &Path) -> bool {
        let was = self.room.writable();
        self.room = self.space.measure();
        if self.wal_reservable
            && self.room.wal_reserve < crate::store::RESERVE_WAL as u64 / 2
            && self.room.free >= space::SUBMIT_FLOOR
        {
            if let Err(e) = crate::store::reserve_wal(db) {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    self.wal_reservable = false;
                }
            }
        }
        self.submit_budget = self.room.free.saturating_sub(space::SUBMIT_FLOOR);
        let now = self.room.writable();
        if was && !now {
            warn!(
                "state dir {} full ({} free): changes wait and requests that write are refused until there is room",
                self.space.dir().display(),
                space::fmt_bytes(self.room.free)
            );
        } else if now && !was {
            info!(
                "state dir {} has room again ({} free): recording {} waiting changes",
                self.space.dir().display(),
                space::fmt_bytes(self.room.free),
                self.deferred.len()
            );
        }
        now
    }

    /// The one-line refusal of a request that needs `need` bytes of free space.
    pub(super) fn full(&self, need: u64) -> CoreError {
        CoreError::Full(format!(
            "state dir {} full: {} free, need {}",
            self.space.dir().display(),
            space::fmt_bytes(self.room.free),
            space::fmt_bytes(need)
        ))
    }

    /// A batch on a state dir without room to commit anything: reads are answered, requests
    /// that write are refused, internal changes wait in `deferred`.
    pub(super) fn hold_writes(&mut self, batch: Vec<Cmd>) -> Vec<Cmd> {
        fn refuse<T>(reply: Reply<T>, why: &str) {
            let _ = reply.send(Err(CoreError::Full(why.to_string())));
        }
        let refusal = self.full(space::WRITE_FLOOR).to_string();
        let mut reads = Vec::new();
        for c in batch {
            match c {
                Cmd::Submit { reply, .. } | Cmd::SubmitCluster { reply, .. } => {
                    refuse(reply, &refusal)
                }
                Cmd::NewCluster { reply, .. } => refuse(reply, &refusal),
                Cmd::Act { reply, .. } => refuse(reply, &refusal),
                Cmd::ActMany { reply, .. } => refuse(reply, &refusal),
                Cmd::Exited { .. }
                | Cmd::Started { .. }
                | Cmd::SpawnFailed { .. }
                | Cmd::Deadline { .. } => self.deferred.push_back(c),
                // The next tick samples (or evaluates) again.
                Cmd::PressureTick | Cmd::PolicyTick => {}
                Cmd::List { .. }
                | Cmd::Get { .. }
                | Cmd::History { .. }
                | Cmd::Events { .. }
                | Cmd::Output { .. }
                | Cmd::Usage { .. }
                | Cmd::Status { .. }
                | Cmd::Top { .. }
                | Cmd::Ad { .. }
                | Cmd::WaitEnd { .. }
                | Cmd::Metrics { .. } => reads.push(c),
            }
        }
        reads
    }

    /// Takes `need` bytes of this batch's room for a submission, or refuses it as full.
    pub(super) fn take_room(&mut self, need: u64) -> Result<(), CoreError> {
        if need > self.submit_budget {
            return Err(self.full(space::SUBMIT_FLOOR + need));
        }
        self.submit_budget -= need;
        Ok(())
    }
}
