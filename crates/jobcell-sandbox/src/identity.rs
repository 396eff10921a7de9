//! Who the job runs as, resolved on the host before anything is created; and the ordered
//! privilege drop the job process performs just before exec.

use std::ffi::{CStr, CString};
use std::io;

use jobcell_spec::UserSpec;
use serde::Serialize;
use thiserror::Error;

use crate::syscall::Syscall;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("unknown user '{0}'")]
    UnknownUser(String),
    #[error("refusing to run a job as root (uid 0); pick an unprivileged --user")]
    Root,
    #[error("looking up user '{0}': {1}")]
    Lookup(String, io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups of that user only (never the launcher's).
    pub groups: Vec<u32>,
}

/// The passwd entry (name, uid, gid) for a user, if there is one.
pub fn lookup(spec: &UserSpec) -> Result<Option<(String, u32, u32)>, IdentityError> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is pointers and integers, for which all-zero (null) is valid; getpwnam_r fills
    // it before it is read.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    let r = match spec {
        UserSpec::Name(n) => {
            let c = CString::new(n.as_str()).map_err(|_| IdentityError::UnknownUser(n.clone()))?;
            // SAFETY: `c` is NUL-terminated; `pw`, `buf` (with its length) and `out` are writable
            // and outlive the call, and the strings it fills in point into `buf`.
            unsafe {
                libc::getpwnam_r(
                    c.as_ptr(),
                    &mut pw,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut out,
                )
            }
        }
        // SAFETY: `pw`, `buf` (with its length) and `out` are writable and outlive the call; the
        // strings it fills in point into `buf`.
        UserSpec::Uid(u) => unsafe {
            libc::getpwuid_r(*u, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out)
        },
    };
    if out.is_null() {
        if r != 0 && r != libc::ENOENT && r != libc::ESRCH {
            return Err(IdentityError::Lookup(
                spec.to_string(),
                io::Error::from_raw_os_error(r),
            ));
        }
        return Ok(None);
    }
    // SAFETY: after a successful lookup (`out` non-null) pw_name points at a NUL-terminated name
    // inside `buf`, which is still alive.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    Ok(Some((name, pw.pw_uid, pw.pw_gid)))
}

fn grouplist(name: &str, gid: u32) -> Vec<u32> {
    let Ok(c) = CString::new(name) else {
        return vec![gid];
    };
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `c` is NUL-terminated and `groups` has room for `count` entries, the length
        // passed; both outlive the call.
        let r = unsafe { libc::getgrouplist(c.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if r >= 0 {
            groups.truncate(count as usize);
            groups.sort_unstable();
            groups.dedup();
            return groups;
        }
        n = count.max(n * 2);
    }
}

impl Identity {
    /// Resolve `--user` on the host. Root jobs are refused: with every capability gone, uid 0
    /// would still own most of the host's files.
    pub fn resolve(spec: &UserSpec) -> Result<Self, IdentityError> {
        let mut id = Self::resolve_user(spec)?;
        id.load_groups();
        Ok(id)
    }

    /// [`Identity::resolve`] without the supplementary groups (only the primary group), which
    /// [`Identity::load_groups`] adds later. The launcher looks them up while the job's init
    /// makes its mounts: the passwd entry is usually found in /etc/passwd alone, but
    /// getgrouplist asks every `group:` source of nsswitch.conf, which loads their modules.
    pub fn resolve_user(spec: &UserSpec) -> Result<Self, IdentityError> {
        let (name, uid, gid) =
            lookup(spec)?.ok_or_else(|| IdentityError::UnknownUser(spec.to_string()))?;
        if uid == 0 {
            return Err(IdentityError::Root);
        }
        Ok(Identity {
            name,
            uid,
            gid,
            groups: vec![gid],
        })
    }

    /// The user's supplementary groups, from every source nsswitch.conf names.
    pub fn load_groups(&mut self) {
        self.groups = grouplist(&self.name, self.gid);
    }

    /// The caller itself, for rootless jobs inside a user namespace that maps only the caller.
    pub fn current() -> Self {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        // SAFETY: getgid has no preconditions and cannot fail.
        let gid = unsafe { libc::getgid() };
        let name = lookup(&UserSpec::Uid(uid))
            .ok()
            .flatten()
            .map(|x| x.0)
            .unwrap_or_else(|| uid.to_string());
        Identity {
            name,
            uid,
            gid,
            groups: vec![gid],
        }
    }
}

/// Highest capability number this kernel knows.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// What the job inherits from its init, applied by the init before the job exists (while it
/// waits for the launcher's "go", off the launch's critical path): an empty capability
/// bounding set (needs CAP_SETPCAP, which the init still has). It passes to every child and
/// cannot be undone; the init itself never execs and keeps the capabilities it already holds.
/// Dropping 41 capabilities one by one is 41 new credentials, ~50 µs. (The seccomp filter
/// comes later, from the job itself: it refuses the cgroup namespace the job still makes.)
pub fn confine_init(sys: &dyn Syscall, last_cap: u32) -> io::Result<()> {
    for cap in 0..=last_cap {
        sys.capbset_drop(cap)?;
    }
    Ok(())
}

/// Become `id` with no way back: groups, gid, ambient set, uid (which clears permitted and
/// effective), the inheritable set, then no_new_privs so no setuid or file-capability binary
/// can raise privileges again. The bounding set comes from the init ([`confine_init`]), the
/// seccomp filter from the job just before (see launch/job.rs, become_job). `userns`: inside a user namespace that maps only the caller, groups
/// cannot be set.
pub fn drop_privileges(sys: &dyn Syscall, id: &Identity, userns: bool) -> io::Result<()> {
    if !userns {
        sys.setgroups(&id.groups)?;
    }
    sys.setresgid(id.gid)?;
    sys.clear_ambient_caps()?;
    sys.setresuid(id.uid)?;
    sys.clear_caps()?;
    sys.set_no_new_privs()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syscall::Recorder;

    #[test]
    fn nobody_resolves_and_root_is_refused() {
        let n = Identity::resolve(&UserSpec::Name("nobody".into())).unwrap();
        assert_eq!(n.uid, 65534);
        assert!(n.groups.contains(&n.gid));
        assert!(matches!(
            Identity::resolve(&UserSpec::Uid(0)),
            Err(IdentityError::Root)
        ));
        assert!(matches!(
            Identity::resolve(&UserSpec::Name("root".into())),
            Err(IdentityError::Root)
        ));
        let e = Identity::resolve(&UserSpec::Name("no-such-user-xyz".into())).unwrap_err();
        assert_eq!(e.to_string(), "unknown user 'no-such-user-xyz'");
        assert!(Identity::resolve(&UserSpec::Uid(3_999_999)).is_err());
    }

    #[test]
    fn privilege_drop_order() {
        let rec = Recorder::default();
        let id = Identity {
            name: "u".into(),
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        };
        confine_init(&rec, 2).unwrap();
        drop_privileges(&rec, &id, false).unwrap();
        assert_eq!(
            rec.lines(),
            [
                "capbset_drop 0",
                "capbset_drop 1",
                "capbset_drop 2",
                "setgroups [100, 27]",
                "setresgid 100",
                "clear_ambient",
                "setresuid 1000",
                "clear_caps",
                "no_new_privs",
            ]
        );
        // A failure stops the sequence: no later step runs as a half-dropped identity.
        let rec = Recorder {
            fail_on: Some("setresgid".into()),
            ..Default::default()
        };
        assert!(drop_privileges(&rec, &id, false).is_err());
        assert_eq!(rec.lines().last().unwrap(), "setresgid 100");
    }
}
