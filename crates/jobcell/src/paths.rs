//! Paths named on the command line, resolved and checked the way condor_submit does: relative
//! to the submit directory, by this process, which has the submitter's rights (the daemon never
//! looks at a user-named path as root).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PathError {
    #[error("the current directory: {0}")]
    Cwd(std::io::Error),
    #[error("{what} {path}: {why}")]
    Refused {
        what: &'static str,
        path: String,
        why: String,
    },
}

/// `p` made absolute against the current directory (the submit directory), without its `.`
/// components.
pub fn absolute(p: &Path) -> Result<PathBuf, PathError> {
    let base = match p.is_absolute() {
        true => PathBuf::new(),
        false => std::env::current_dir().map_err(PathError::Cwd)?,
    };
    Ok(base.join(
        p.components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect::<PathBuf>(),
    ))
}

/// Why the caller could not execute `p`, if it cannot: missing, not a regular file, or no
/// execute permission for this process.
pub fn check_executable(p: &Path) -> Result<(), String> {
    let md = std::fs::metadata(p).map_err(|e| io_reason(&e))?;
    if !md.is_file() {
        return Err("not a regular file".into());
    }
    if !accessible(p, libc::X_OK) {
        return Err("not executable by you".into());
    }
    Ok(())
}

/// `dir` (made absolute) when this process can enter it: the job's `--chdir`.
pub fn checked_workdir(dir: &Path) -> Result<PathBuf, PathError> {
    let abs = absolute(dir)?;
    let refuse = |why: String| PathError::Refused {
        what: "--chdir",
        path: dir.display().to_string(),
        why,
    };
    let md = std::fs::metadata(&abs).map_err(|e| refuse(io_reason(&e)))?;
    if !md.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    if !accessible(&abs, libc::X_OK) {
        return Err(refuse(io_reason(&std::io::Error::last_os_error())));
    }
    Ok(abs)
}

/// A command's program as the job will run it: a relative path with a `/` (`./job.sh`,
/// `bin/x`) is resolved in the submit directory and must be executable; a bare name is looked
/// up in the job's PATH, an absolute path in the job's view (an image), so both are left.
pub fn resolve_program(program: &str) -> Result<Option<String>, PathError> {
    let p = Path::new(program);
    if p.is_absolute() || !program.contains('/') {
        return Ok(None);
    }
    let abs = absolute(p)?;
    check_executable(&abs).map_err(|why| PathError::Refused {
        what: "command",
        path: program.to_string(),
        why,
    })?;
    Ok(Some(abs.to_string_lossy().into_owned()))
}

/// faccessat with the effective ids (those the job's files are checked against).
fn accessible(p: &Path, mode: libc::c_int) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// An io error without its "(os error N)" tail: "No such file or directory".
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
