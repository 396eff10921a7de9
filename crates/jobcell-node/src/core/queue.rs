//! The queued jobs, per owner: each owner's in the order they start (priority, then
//! submission), so that the scheduler can share the node between owners (see
//! [`Core::schedule`](super::Core)) without walking other owners' jobs.

use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub(super) struct Queue {
    by_owner: HashMap<u32, BTreeSet<(i64, u64)>>,
}

impl Queue {
    pub fn insert(&mut self, owner: u32, priority: i32, id: u64) {
        self.by_owner
            .entry(owner)
            .or_default()
            .insert((-(priority as i64), id));
    }

    pub fn remove(&mut self, owner: u32, priority: i32, id: u64) {
        if let Some(jobs) = self.by_owner.get_mut(&owner) {
            jobs.remove(&(-(priority as i64), id));
            if jobs.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }

    /// Owners with queued jobs.
    pub fn owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_owner.keys().copied()
    }

    /// An owner's queued jobs in start order.
    pub fn of(&self, owner: u32) -> impl Iterator<Item = u64> + '_ {
        self.by_owner
            .get(&owner)
            .into_iter()
            .flat_map(|jobs| jobs.iter().map(|(_, id)| *id))
    }
}
