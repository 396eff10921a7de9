//! Opening paths with another user's filesystem rights, on the calling thread only.
//!
//! Root opens what a job names (bind sources) on behalf of the user who submitted it: with the
//! thread's fsuid, fsgid and supplementary groups switched to that user's, every directory on
//! the way, and every symlink's target, is checked as that user, so nothing reaches the job
//! that its submitter could not open themself. Raw syscalls: the libc wrappers of setgroups
//! change every thread of the process, these only the calling one.

use std::io;

use thiserror::Error;

use crate::identity::Identity;

#[derive(Debug, Error)]
pub enum FsIdError {
    #[error("taking the filesystem rights of {user} (uid {uid}): {source}")]
    Switch {
        user: String,
        uid: u32,
        source: io::Error,
    },
    #[error("giving back jobcell's own filesystem rights: {0}")]
    Restore(io::Error),
}

fn groups_of_thread() -> io::Result<Vec<libc::gid_t>> {
    // SAFETY: size 0 only asks for the count; the buffer then has room for that many.
    let count =
        unsafe { libc::syscall(libc::SYS_getgroups, 0, std::ptr::null_mut::<libc::gid_t>()) };
    if count < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut g = vec![0 as libc::gid_t; count as usize];
    // SAFETY: `g` holds `count` entries.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, count as libc::c_int, g.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    g.truncate(n as usize);
    Ok(g)
}

fn set_thread_groups(g: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: the kernel reads `g.len()` gids from `g`.
    if unsafe { libc::syscall(libc::SYS_setgroups, g.len(), g.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// setfsuid/setfsgid return the previous value whether they succeeded or not; an invalid id
/// (-1) changes nothing and so reads the current one.
fn fsuid_now() -> u32 {
    // SAFETY: no memory is passed.
    unsafe { libc::syscall(libc::SYS_setfsuid, -1i32) as u32 }
}

fn fsgid_now() -> u32 {
    // SAFETY: no memory is passed.
    unsafe { libc::syscall(libc::SYS_setfsgid, -1i32) as u32 }
}

/// Run `f` on this thread with `user`'s filesystem identity (uid, gid, groups), then give the
/// thread its own back. A thread that cannot get its own back is an error: the caller must
/// not go on with it (nothing here leaves the user's rights in place silently). `f` must not
/// start threads (a thread inherits its creator's credentials).
pub fn with_rights_of<T>(user: &Identity, f: impl FnOnce() -> T) -> Result<T, FsIdError> {
    let switch = |source| FsIdError::Switch {
        user: user.name.clone(),
        uid: user.uid,
        source,
    };
    let (own_uid, own_gid) = (fsuid_now(), fsgid_now());
    let own_groups = groups_of_thread().map_err(switch)?;
    set_thread_groups(&user.groups).map_err(switch)?;
    // SAFETY: no memory is passed.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, user.gid);
        libc::syscall(libc::SYS_setfsuid, user.uid);
    }
    let result = if (fsuid_now(), fsgid_now()) == (user.uid, user.gid) {
        Ok(f())
    } else {
        Err(switch(io::Error::from_raw_os_error(libc::EPERM)))
    };
    // SAFETY: no memory is passed.
    unsafe {
        libc::syscall(libc::SYS_setfsuid, own_uid);
        libc::syscall(libc::SYS_setfsgid, own_gid);
    }
    if (fsuid_now(), fsgid_now()) != (own_uid, own_gid) {
        return Err(FsIdError::Restore(io::Error::from_raw_os_error(
            libc::EPERM,
        )));
    }
    set_thread_groups(&own_groups).map_err(FsIdError::Restore)?;
    if groups_of_thread().map_err(FsIdError::Restore)? != own_groups {
        return Err(FsIdError::Restore(io::Error::from_raw_os_error(
            libc::EPERM,
        )));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn paths_are_checked_as_the_user_and_the_thread_is_root_again_after() {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: paths_are_checked_as_the_user_...: needs root");
            return;
        }
        let d = std::env::temp_dir().join(format!("jobcell-fsid-test-{}", std::process::id()));
        std::fs::create_dir(&d).unwrap();
        let home = d.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let file = home.join("f");
        std::fs::write(&file, "x").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let nobody = Identity {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
        };
        let groups_before = groups_of_thread().unwrap();
        for p in [&file, &link] {
            let r = with_rights_of(&nobody, || std::fs::metadata(p)).unwrap();
            assert_eq!(
                r.unwrap_err().kind(),
                io::ErrorKind::PermissionDenied,
                "{}",
                p.display()
            );
        }
        // Root again: the same paths open, and the groups are the thread's own.
        std::fs::metadata(&link).unwrap();
        assert_eq!((fsuid_now(), fsgid_now()), (0, 0));
        assert_eq!(groups_of_thread().unwrap(), groups_before);
        // A group the user is in opens what the group may.
        std::os::unix::fs::chown(&home, Some(0), Some(4242)).unwrap();
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o750)).unwrap();
        let member = Identity {
            groups: vec![65534, 4242],
            ..nobody
        };
        let opened = with_rights_of(&member, || std::fs::metadata(&file)).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        assert!(opened.is_ok());
    }
}
