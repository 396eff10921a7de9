//! Job records for the core's unit tests.

use crate::types::{JobInfo, State};

/// Job `id` (1.0), owned by root, asking for 1 CPU and 1 MiB, queued and never started; a
/// test sets the fields it looks at with `JobInfo { .., ..queued_job(id) }`.
pub(crate) fn queued_job(id: u64) -> JobInfo {
    JobInfo {
        id,
        cluster: 1,
        proc: 0,
        owner: 0,
        user: String::new(),
        state: State::Queued,
        priority: 0,
        cpus: 1.0,
        memory: 1 << 20,
        command: vec![],
        submitted_at: 0.0,
        started_at: None,
        ended_at: None,
        hold_reason: None,
        reason: None,
        attempt: 0,
        exit_code: None,
        signal: None,
        report: None,
        batch_name: None,
        suspended_s: 0.0,
        suspended_at: None,
        owner_name: None,
    }
}
