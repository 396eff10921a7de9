//! The queued jobs, per owner: each owner's in the order they start (priority, then
//! submission), so that the scheduler can share the node between owners (see
//! [`Core::schedule`](super::Core)) without walking other owners' jobs.
//!
//! An owner's jobs are also kept by shape (cpus, memory): the first job that fits in what is
//! free is the earliest head among the shapes that fit. A cluster is one shape, so finding it
//! costs a few comparisons however many jobs wait, where walking the queue cost one per job
//! that does not fit (100,000 per pass with a large cluster behind a job too big to start).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::types::JobInfo;

/// Start order: higher priority first, then lower id (earlier submission).
type Key = (i64, u64);

/// A job's request: cpus (as bits of the f64, for ordering) and memory.
type Shape = (u64, u64);

#[derive(Debug, Default)]
struct Owner {
    order: BTreeSet<Key>,
    by_shape: BTreeMap<Shape, BTreeSet<Key>>,
}

#[derive(Debug, Default)]
pub(super) struct Queue {
    by_owner: HashMap<u32, Owner>,
}

fn key(j: &JobInfo) -> Key {
    (-(j.priority as i64), j.id)
}

fn shape(j: &JobInfo) -> Shape {
    (j.cpus.to_bits(), j.memory)
}

impl Queue {
    pub fn insert(&mut self, j: &JobInfo) {
        let o = self.by_owner.entry(j.owner).or_default();
        o.order.insert(key(j));
        o.by_shape.entry(shape(j)).or_default().insert(key(j));
    }

    pub fn remove(&mut self, j: &JobInfo) {
        let Some(o) = self.by_owner.get_mut(&j.owner) else {
            return;
        };
        o.order.remove(&key(j));
        if let Some(s) = o.by_shape.get_mut(&shape(j)) {
            s.remove(&key(j));
            if s.is_empty() {
                o.by_shape.remove(&shape(j));
            }
        }
        if o.order.is_empty() {
            self.by_owner.remove(&j.owner);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_owner.is_empty()
    }

    /// Owners with queued jobs.
    pub fn owners(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_owner.keys().copied()
    }

    /// An owner's next job in start order.
    pub fn head(&self, owner: u32) -> Option<u64> {
        let o = self.by_owner.get(&owner)?;
        o.order.first().map(|(_, id)| *id)
    }

    /// An owner's first job in start order that asks for at most `cpus` and `memory`.
    pub fn first_fitting(&self, owner: u32, cpus: f64, memory: u64) -> Option<u64> {
        let o = self.by_owner.get(&owner)?;
        o.by_shape
            .iter()
            .filter(|((c, m), _)| f64::from_bits(*c) <= cpus + 1e-9 && *m <= memory)
            .filter_map(|(_, jobs)| jobs.first())
            .min()
            .map(|(_, id)| *id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::test_jobs::queued_job;

    fn job(id: u64, owner: u32, priority: i32, cpus: f64, memory: u64) -> JobInfo {
        JobInfo {
            proc: id,
            owner,
            priority,
            cpus,
            memory,
            ..queued_job(id)
        }
    }

    #[test]
    fn the_first_fitting_job_is_in_start_order_whatever_its_shape() {
        let mut q = Queue::default();
        let big = job(1, 7, 0, 4.0, 100);
        let small_late = job(3, 7, 0, 1.0, 10);
        let small_early = job(2, 7, 0, 1.0, 10);
        let urgent_mid = job(4, 7, 5, 2.0, 10);
        for j in [&big, &small_late, &small_early, &urgent_mid] {
            q.insert(j);
        }
        assert_eq!(q.head(7), Some(4), "priority first");
        assert_eq!(q.first_fitting(7, 8.0, 1000), Some(4));
        assert_eq!(q.first_fitting(7, 1.5, 1000), Some(2));
        assert_eq!(q.first_fitting(7, 8.0, 50), Some(4));
        assert_eq!(q.first_fitting(7, 0.5, 1000), None);
        q.remove(&urgent_mid);
        assert_eq!(q.first_fitting(7, 8.0, 1000), Some(1));
        for j in [&big, &small_late, &small_early] {
            q.remove(j);
        }
        assert!(q.is_empty());
        assert_eq!(q.first_fitting(7, 8.0, 1000), None);
    }
}
