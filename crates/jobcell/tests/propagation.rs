//! Mount propagation between the host and a running job: the job's view of the host tree is a
//! slave of the host's, so a filesystem the host unmounts leaves the job too (the job does not
//! keep it busy), while nothing mounted for the job ever shows on the host.
//!
//! The host side is played by a test thread in a mount namespace of its own (`unshare` affects
//! the calling thread and what it starts), with shared propagation set up there: the real
//! host's mounts are never touched. Needs root. Run: `cargo test -p jobcell --test propagation`.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mount(src: &str, at: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) {
    let src = CString::new(src).unwrap();
    let fstype = fstype.map(|f| CString::new(f).unwrap());
    let data = data.map(|d| CString::new(d).unwrap());
    // SAFETY: every string is a NUL-terminated CString (or null where mount takes none) alive
    // across the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            cpath(at).as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    assert_eq!(
        r,
        0,
        "mount {}: {}",
        at.display(),
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a thread in a new mount namespace whose whole tree is then made shared (as on a
/// systemd host), so the test can watch propagation in both directions without the real host
/// seeing anything. None (after a SKIPPED line) if the kernel refuses the namespace.
fn as_shared_host<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare takes flags only; it runs on this scoped thread of its own, so only
            // that thread's mount namespace changes.
            if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
                eprintln!(
                    "SKIPPED: unshare(CLONE_NEWNS): {}",
                    std::io::Error::last_os_error()
                );
                return None;
            }
            // Cut off from the real host first, then shared within this namespace only.
            mount(
                "none",
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            );
            mount(
                "none",
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_SHARED,
                None,
            );
            Some(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// The mount table of the calling thread's namespace (/proc/self would be the main thread's).
fn my_mountinfo() -> String {
    std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}

/// Waits for the job to make `p` (dropping the job on failure kills it).
fn wait_for(p: &Path) {
    let t = Instant::now();
    while !p.exists() {
        assert!(t.elapsed() < JOB_TIMEOUT, "the job did not get ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A filesystem mounted on the host before a job starts is unmounted by the host while the job
/// runs: a plain umount (no lazy detach) succeeds and the job sees the mount go away — it does
/// not hold its own copy of the mount, which would keep the filesystem (a USB disk, a loop
/// device) busy until the job ends.
#[test]
fn a_host_umount_reaches_a_running_job() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("propagation");
    let ready = t.subdir("ready", 0o777);
    let media = t.subdir("media", 0o755);
    let ran = as_shared_host(|| {
        mount(
            "jobcell-media",
            &media,
            Some("tmpfs"),
            0,
            Some("size=1m,mode=0755"),
        );
        std::fs::write(media.join("marker"), b"here").unwrap();
        let m = media.display();
        let script = format!(
            "touch {r}/up; i=0; while [ -e {m}/marker ]; do i=$((i+1)); \
             if [ $i -gt 200 ]; then echo still-mounted; exit 1; fi; sleep 0.05; done; \
             if grep -q ' {m} ' /proc/self/mountinfo; then echo still-listed; exit 2; fi; \
             echo released",
            r = ready.display()
        );
        let job = Job::new(&t.base()).spawn_sh(&script);
        wait_for(&ready.join("up"));
        // SAFETY: the path is a NUL-terminated temporary alive until the end of the statement,
        // after the call.
        let r = unsafe { libc::umount2(cpath(&media).as_ptr(), 0) };
        let umount = (r == 0)
            .then_some(())
            .ok_or(std::io::Error::last_os_error());
        if umount.is_err() {
            // SAFETY: the path is a NUL-terminated temporary alive until the end of the statement,
            // after the call.
            unsafe { libc::umount2(cpath(&media).as_ptr(), libc::MNT_DETACH) };
        }
        (umount, job.wait())
    });
    let Some((umount, out)) = ran else { return };
    assert!(umount.is_ok(), "the host's umount: {umount:?}");
    assert_eq!(
        (out.code(), out.stdout.trim()),
        (0, "released"),
        "the job still had the host's filesystem: {out:?}"
    );
    t.assert_base_empty();
}

/// Nothing jobcell mounts for a job (private /tmp, the covered scratch base, binds, a --disk
/// filesystem) shows on the host, even when the host's tree is shared: the host's mount table
/// is the same before, during and after the job.
#[test]
fn no_job_mount_reaches_a_shared_host() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("propagation-back");
    let ready = t.subdir("ready", 0o777);
    let data = t.subdir("data", 0o755);
    let ran = as_shared_host(|| {
        let before = my_mountinfo();
        let job = Job::new(&t.base())
            .opts(["--disk", "32M", "--ro-bind"])
            .opt(format!("{}:{}", data.display(), data.display()))
            .opt("--bind")
            .opt(format!("{}:{}", ready.display(), ready.display()))
            .spawn_sh(&format!(
                "touch {}/up; sleep 0.5; touch /tmp/x $JOBCELL_SCRATCH/y 2>/dev/null; echo done",
                ready.display()
            ));
        wait_for(&ready.join("up"));
        let during = my_mountinfo();
        let out = job.wait();
        (before, during, my_mountinfo(), out)
    });
    let Some((before, during, after, out)) = ran else {
        return;
    };
    assert_eq!((out.code(), out.stdout.trim()), (0, "done"), "{out:?}");
    assert_eq!(before, during, "a job's mount showed on the host");
    assert_eq!(before, after, "the host's mount table changed");
    t.assert_base_empty();
}
