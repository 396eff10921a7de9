//! Messages from the job side to the launcher over a CLOEXEC pipe.
//!
//! Each message is one line shorter than PIPE_BUF, so writes from the init and the job process
//! never interleave. The launcher learns here why setup failed (the step and errno, reported as
//! one clear line) and how the job ended (exit code or signal, which the init cannot reproduce
//! in its own exit status).

use std::io;
use std::os::fd::{FromRawFd, RawFd};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Namespaces, uid maps and the mount plan (init, as root).
    Setup,
    /// The privilege drop in the job process.
    Identity,
    /// execve of the command.
    Exec,
}

impl Stage {
    fn tag(&self) -> &'static str {
        match self {
            Stage::Setup => "setup",
            Stage::Identity => "identity",
            Stage::Exec => "exec",
        }
    }
    fn from_tag(s: &str) -> Option<Self> {
        Some(match s {
            "setup" => Stage::Setup,
            "identity" => Stage::Identity,
            "exec" => Stage::Exec,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Failed {
        stage: Stage,
        errno: i32,
        what: String,
    },
    ExitCode(i32),
    Signaled(i32),
    /// The CPU time of the job's processes, as the init reaped them (its `RUSAGE_CHILDREN`):
    /// sent before the status, so the launcher need not wait for the init's own exit.
    Usage {
        user_us: u64,
        system_us: u64,
    },
    /// The size-limited scratch at the job's end: bytes used, bytes in all, whether full.
    Disk {
        used: u64,
        total: u64,
        full: bool,
    },
}

const MAX_LINE: usize = 4000;

impl Msg {
    pub fn encode(&self) -> Vec<u8> {
        let mut s = match self {
            Msg::Failed { stage, errno, what } => {
                let what: String = what
                    .chars()
                    .map(|c| if c == '\n' || c == '\t' { ' ' } else { c })
                    .collect();
                format!("F\t{}\t{}\t{}", stage.tag(), errno, what)
            }
            Msg::ExitCode(c) => format!("C\t{c}"),
            Msg::Signaled(s) => format!("S\t{s}"),
            Msg::Usage { user_us, system_us } => format!("U\t{user_us}\t{system_us}"),
            Msg::Disk { used, total, full } => format!("D\t{used}\t{total}\t{}", *full as u8),
        };
        s.truncate(MAX_LINE);
        s.push('\n');
        s.into_bytes()
    }

    pub fn decode(line: &str) -> Option<Msg> {
        let mut f = line.splitn(4, '\t');
        match f.next()? {
            "F" => Some(Msg::Failed {
                stage: Stage::from_tag(f.next()?)?,
                errno: f.next()?.parse().ok()?,
                what: f.next().unwrap_or("").to_string(),
            }),
            "C" => f.next()?.parse().ok().map(Msg::ExitCode),
            "S" => f.next()?.parse().ok().map(Msg::Signaled),
            "U" => Some(Msg::Usage {
                user_us: f.next()?.parse().ok()?,
                system_us: f.next()?.parse().ok()?,
            }),
            "D" => Some(Msg::Disk {
                used: f.next()?.parse().ok()?,
                total: f.next()?.parse().ok()?,
                full: f.next()? == "1",
            }),
            _ => None,
        }
    }

    /// Write the whole message with one write(2) (atomic below PIPE_BUF).
    pub fn send(&self, fd: RawFd) {
        let b = self.encode();
        // SAFETY: the pointer and length describe `b`, alive across the call; a bad `fd` only makes
        // the write fail.
        unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    }
}

/// "Scratch is there": the launcher makes the scratch dir after the clone, while the init
/// confines itself, and sends this one byte before "go"; the init's mounts wait for it.
pub const SCRATCH_READY: u8 = b'S';

/// Wait for [`SCRATCH_READY`]; an error or end of file means the launcher gave up or died.
pub fn read_scratch_ready(fd: RawFd) -> io::Result<()> {
    let mut b = [0u8];
    read_exact_from(fd, &mut b)?;
    if b[0] != SCRATCH_READY {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    Ok(())
}

/// `read_exact` on a descriptor that stays the caller's (borrowed as a File for std's loop).
fn read_exact_from(fd: RawFd, buf: &mut [u8]) -> io::Result<()> {
    use std::io::Read;
    // SAFETY: the File is never dropped (ManuallyDrop), so the caller's descriptor is only
    // borrowed, never closed here.
    let mut pipe = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    pipe.read_exact(buf)
}

/// The launcher's "go" to the init, with the job user's supplementary groups (looked up while
/// the init made its mounts): `G`, a count, then that many gids, all native-endian u32.
pub fn encode_go(groups: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(5 + 4 * groups.len());
    b.push(b'G');
    b.extend_from_slice(&(groups.len() as u32).to_ne_bytes());
    for g in groups {
        b.extend_from_slice(&g.to_ne_bytes());
    }
    b
}

/// Read a whole "go" (blocking); an error or end of file means the launcher gave up or died.
pub fn read_go(fd: RawFd) -> io::Result<Vec<u32>> {
    let mut head = [0u8; 5];
    read_exact_from(fd, &mut head)?;
    if head[0] != b'G' {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    let n = u32::from_ne_bytes(head[1..].try_into().expect("4 bytes")) as usize;
    if n > 65536 {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    let mut body = vec![0u8; 4 * n];
    read_exact_from(fd, &mut body)?;
    Ok(body
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

/// Accumulates bytes from the pipe and yields whole messages.
#[derive(Default)]
pub struct Reader {
    buf: Vec<u8>,
    pub msgs: Vec<Msg>,
}

impl Reader {
    /// The init reported the job's end (it sends that last, once the job's processes are gone).
    pub fn has_status(&self) -> bool {
        self.msgs
            .iter()
            .any(|m| matches!(m, Msg::ExitCode(_) | Msg::Signaled(_)))
    }

    /// Read what is available; returns Ok(false) at end of file.
    pub fn fill(&mut self, fd: RawFd) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            // SAFETY: the kernel writes at most `chunk.len()` bytes into `chunk`, which outlives
            // the call.
            let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EAGAIN) => Ok(true),
                    Some(libc::EINTR) => continue,
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Ok(false);
            }
            self.buf.extend_from_slice(&chunk[..n as usize]);
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if let Some(m) = Msg::decode(String::from_utf8_lossy(&line[..i]).as_ref()) {
                    self.msgs.push(m);
                }
            }
        }
    }
}

/// Tell the launcher over the message pipe why the init or the job gave up.
pub fn send_fail(fd: RawFd, stage: Stage, what: String, e: &io::Error) {
    Msg::Failed {
        stage,
        errno: e.raw_os_error().unwrap_or(libc::EIO),
        what,
    }
    .send(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_carries_the_groups_through_a_pipe() {
        let mut p = [0; 2];
        // SAFETY: `p` is the two-element array pipe fills.
        assert_eq!(unsafe { libc::pipe(p.as_mut_ptr()) }, 0);
        let groups: Vec<u32> = (0..3000).collect(); // more than one pipe write's atomic size
        let writer = std::thread::spawn(move || {
            let b = encode_go(&groups);
            let mut off = 0;
            while off < b.len() {
                // SAFETY: the pointer and length describe the unwritten tail of `b`, alive across
                // the call.
                let n = unsafe { libc::write(p[1], b[off..].as_ptr().cast(), b.len() - off) };
                assert!(n > 0);
                off += n as usize;
            }
            // SAFETY: the write end is this test's own and closed once, here.
            unsafe { libc::close(p[1]) };
        });
        let got = read_go(p[0]).unwrap();
        writer.join().unwrap();
        assert_eq!(got, (0..3000).collect::<Vec<u32>>());
        // The launcher gone before a whole "go": an error, never a job.
        assert!(read_go(p[0]).is_err());
        // SAFETY: the read end is this test's own and closed once, here.
        unsafe { libc::close(p[0]) };
    }

    #[test]
    fn roundtrip() {
        for m in [
            Msg::Failed {
                stage: Stage::Exec,
                errno: 2,
                what: "cannot run 'x\ty'".into(),
            },
            Msg::ExitCode(3),
            Msg::Signaled(9),
            Msg::Usage {
                user_us: 1_234_567,
                system_us: 89,
            },
            Msg::Disk {
                used: 5 << 20,
                total: 16 << 20,
                full: true,
            },
        ] {
            let b = m.encode();
            let line = std::str::from_utf8(&b).unwrap().trim_end_matches('\n');
            let back = Msg::decode(line).unwrap();
            match (&m, &back) {
                (Msg::Failed { what, .. }, Msg::Failed { what: w2, .. }) => {
                    assert_eq!(what.replace('\t', " "), *w2)
                }
                _ => assert_eq!(m, back),
            }
        }
        assert_eq!(Msg::decode("garbage"), None);
        assert_eq!(Msg::decode("C\tnotanumber"), None);
        assert_eq!(Msg::decode("U\t12"), None);
    }
}
