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
    printable(&msg)
}

/// `msg` on one line of printable text: a newline is a space; other control characters (an
/// archive's raw header bytes, a terminal escape in a file name) are `\xNN`; an undecodable
/// byte shown as U+FFFD is `?`.
pub(crate) fn printable(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for c in msg.chars() {
        match c {
            '\n' => out.push(' '),
            '\u{fffd}' => out.push('?'),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_one_printable_line() {
        assert_eq!(
            super::printable("bad\nfield \u{5}\u{fffd}\u{1b}[31m ok"),
            "bad field \\x05?\\x1b[31m ok"
        );
    }
}
