//! How both binaries end on an error: one line, exit 125.

/// jobcell's own failures exit 125 (like `env` and container runtimes); 126/127 and the job's
/// own codes come from the job.
pub(crate) const EXIT_JOBCELL_ERROR: i32 = 125;

/// The error and its causes on one line, each cause said once (many errors already include
/// their source's text in their own message).
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}
