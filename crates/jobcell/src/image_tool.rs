//! `podman:IMAGE` / `docker:IMAGE` sources of `jobcell image add`: the image is taken from the
//! local Podman or Docker store by the tool's own `save`, whose output streams into the
//! import.
//!
//! The tool runs as the caller (the real uid/gid of this process, never a raised effective
//! one), with the caller's environment: it sees exactly the store the caller's own `podman
//! images` shows (a rootless user's store is theirs), and nothing root's store holds unless
//! the caller is root. The daemon never runs it.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

/// Bytes of the tool's stderr kept for the error line.
const STDERR_KEEP: usize = 64 << 10;

/// A container tool whose local store `image add` can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Podman,
    Docker,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Tool::Podman => "podman",
            Tool::Docker => "docker",
        }
    }

    /// `podman:IMAGE` or `docker:IMAGE`: the tool and the image reference.
    pub fn parse_source(source: &str) -> Option<(Tool, &str)> {
        if let Some(r) = source.strip_prefix("podman:") {
            Some((Tool::Podman, r))
        } else {
            source.strip_prefix("docker:").map(|r| (Tool::Docker, r))
        }
    }

    fn save_args(self, image: &str) -> Vec<&str> {
        match self {
            // An oci-archive keeps the layers as the store has them (no docker re-packing).
            Tool::Podman => vec!["save", "--quiet", "--format", "oci-archive", image],
            // `docker save` writes a docker-archive (newer versions an OCI layout beside it).
            Tool::Docker => vec!["save", image],
        }
    }
}

/// A running `TOOL save IMAGE` whose stdout is the archive.
pub struct Save {
    tool: Tool,
    image: String,
    child: Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// A reference the tool could mistake for an option, or that is empty.
fn check_reference(tool: Tool, image: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !image.is_empty()
            && !image.starts_with('-')
            && !image.bytes().any(|b| b.is_ascii_whitespace() || b == 0),
        "{}:{image}: not an image reference (expected e.g. {}:alpine:3)",
        tool.name(),
        tool.name()
    );
    Ok(())
}

impl Save {
    pub fn start(tool: Tool, image: &str) -> anyhow::Result<(Save, ChildStdout)> {
        check_reference(tool, image)?;
        let mut cmd = Command::new(tool.name());
        cmd.args(tool.save_args(image))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: getuid/geteuid/getgid/getegid cannot fail and touch no memory.
        let (uid, euid, gid, egid) = unsafe {
            (
                libc::getuid(),
                libc::geteuid(),
                libc::getgid(),
                libc::getegid(),
            )
        };
        if uid != euid || gid != egid {
            // Installed with raised privileges: the tool still reads only the caller's store.
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow::anyhow!(
                "{}:{image}: {} is not installed (not found in PATH)",
                tool.name(),
                tool.name()
            ),
            _ => anyhow::anyhow!("{}:{image}: cannot run {}: {e}", tool.name(), tool.name()),
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        // Drained beside the archive, so a chatty tool never blocks on a full stderr pipe.
        let stderr = std::thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEEP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        });
        Ok((
            Save {
                tool,
                image: image.to_string(),
                child,
                stderr: Some(stderr),
            },
            stdout,
        ))
    }

    /// Wait for the tool; its failure in one line (its own last `Error:` line), which says
    /// more than whatever the import made of a short stream.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let status = self.child.wait()?;
        let err = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        // Killed by SIGPIPE: the import stopped reading first, and its error is the one to tell.
        if status.success() || status.signal() == Some(libc::SIGPIPE) {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&err);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let why = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("Error") || l.contains("level=error"))
            .or(lines.last())
            .map(|l| l.trim_start_matches("Error: ").to_string())
            .unwrap_or_else(|| status.to_string());
        anyhow::bail!(
            "{}:{}: `{} {}` failed: {why}",
            self.tool.name(),
            self.image,
            self.tool.name(),
            self.tool.save_args(&self.image).join(" ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_name_the_tool_and_image() {
        assert_eq!(
            Tool::parse_source("podman:localhost/app:1"),
            Some((Tool::Podman, "localhost/app:1"))
        );
        assert_eq!(
            Tool::parse_source("docker:alpine:3"),
            Some((Tool::Docker, "alpine:3"))
        );
        assert_eq!(Tool::parse_source("./podman:x"), None);
        assert!(check_reference(Tool::Podman, "--help").is_err());
        assert!(check_reference(Tool::Podman, "").is_err());
        assert!(check_reference(Tool::Docker, "a b").is_err());
    }
}
