//! Faults: what a crash, a full disk, a read-only filesystem, a locked or corrupted
//! database do to `jobcell image add` and `jobcell daemon`. Each must end with a clear one-line
//! error naming the thing at fault, nothing half-created, and no acknowledged data lost.
//!
//! Small filesystems (tmpfs) and read-only binds are mounted only inside a private mount
//! namespace that one test thread enters (`unshare(CLONE_NEWNS)` affects only the calling
//! thread; the processes it starts inherit it), so no mount is ever visible on the host and
//! the namespace goes away with the last process in it. Needs root; `sqlite3` for the lock
//! tests (else SKIPPED). Run: `cargo test -p jobcell --test faults`.

mod common;
mod daemon_harness;

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use daemon_harness::remove_supervisors_cgroup;
use jobcell_node::client::Client;
use jobcell_node::types::{JobInfo, State};

/// These tests fill filesystems, hold database locks and start daemons: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Mount namespace and tmpfs helpers

/// Runs `f` on a new thread inside a new mount namespace with private propagation. Returns
/// None (after a SKIPPED line) when the kernel refuses the namespace.
fn in_private_mount_ns<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
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
            // SAFETY: "/" is NUL-terminated and 'static; MS_PRIVATE takes no source, type or data
            // (nulls allowed).
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            assert_eq!(r, 0, "make / private: {}", std::io::Error::last_os_error());
            Some(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// A mount made by the test (inside the private namespace), detached when dropped.
struct Mounted(PathBuf);

impl Mounted {
    /// A tmpfs of `size` bytes at `at` (created if missing).
    fn tmpfs(at: &Path, size: u64) -> Mounted {
        Self::tmpfs_with(at, &format!("size={size}"))
    }

    /// A tmpfs at `at` with these options (`size=...,nr_inodes=...`).
    fn tmpfs_with(at: &Path, opts: &str) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let opts = CString::new(format!("{opts},mode=0755")).unwrap();
        // SAFETY: all strings are NUL-terminated CStrings alive across the call.
        let r = unsafe {
            libc::mount(
                c"jobcell-faults".as_ptr(),
                cpath(at).as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
        Mounted(at.to_path_buf())
    }

    /// `at` bound onto itself read-only.
    fn read_only(at: &Path) -> Mounted {
        let c = cpath(at);
        // SAFETY: both paths are NUL-terminated CStrings alive across the call; a bind takes no
        // type or data.
        let r = unsafe {
            libc::mount(
                c.as_ptr(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let m = Mounted(at.to_path_buf());
        // SAFETY: the path is a NUL-terminated CString alive across the call; a remount takes no
        // source, type or data.
        let r = unsafe {
            libc::mount(
                std::ptr::null(),
                c.as_ptr(),
                std::ptr::null(),
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        assert_eq!(r, 0, "remount ro: {}", std::io::Error::last_os_error());
        m
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // SAFETY: the path is a NUL-terminated temporary that lives until the end of the statement,
        // after the call.
        unsafe { libc::umount2(cpath(&self.0).as_ptr(), libc::MNT_DETACH) };
    }
}

/// Bytes used on the filesystem holding `p`.
fn fs_used(p: &Path) -> u64 {
    // SAFETY: statvfs is plain integers, for which all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated temporary alive across the call and `st` a writable
    // statvfs.
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) }, 0);
    (st.f_blocks - st.f_bfree) * st.f_frsize
}

/// Bytes an unprivileged writer may still use on the filesystem holding `p`.
fn fs_free(p: &Path) -> u64 {
    // SAFETY: statvfs is plain integers, for which all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated temporary alive across the call and `st` a writable
    // statvfs.
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}

/// Fills the filesystem holding `dir` with `dir/filler` until ENOSPC, then gives `keep` bytes
/// of it back. The filler's path (remove it to free the space).
fn fill(dir: &Path, keep: u64) -> PathBuf {
    let p = dir.join("filler");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    let chunk = vec![0xa5u8; 1 << 16];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", p.display()),
        }
    }
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(keep)).unwrap();
    p
}

/// No mount of the host's namespace lies under `dir` (the tests mount only in their own).
fn assert_no_mount_under(dir: &Path) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.display().to_string();
    for l in mi.lines() {
        assert!(!l.contains(&d), "mount left behind: {l}");
        assert!(!l.contains("jobcell-faults"), "mount left behind: {l}");
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// An uncompressed tarball: a `data/` dir with `files` files of `size` bytes each.
fn tarball(files: usize, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "data/", std::io::empty()).unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for i in 0..files {
        let body: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(size as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("data/f{i}"), &body[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

struct Store {
    state: PathBuf,
    images: PathBuf,
}

impl Store {
    fn new(state: PathBuf, images: PathBuf) -> Store {
        Store { state, images }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(JOBCELL);
        c.arg("image")
            .args(args)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--images-dir")
            .arg(&self.images)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn add(&self, name: &str, src: &Path) -> Output {
        self.run(&["add", name, src.to_str().unwrap()])
    }

    /// Names `image ls --json` shows (this open also sweeps stale staging dirs).
    fn names(&self) -> Vec<String> {
        let o = self.run(&["ls", "--json"]);
        assert!(o.status.success(), "image ls: {}", err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }

    /// Entries of the images dir starting with `.staging-`.
    fn staging(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.images)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Digest-named trees in the buckets.
    fn trees(&self) -> Vec<String> {
        let mut out = Vec::new();
        for b in std::fs::read_dir(&self.images)
            .into_iter()
            .flatten()
            .flatten()
        {
            let n = b.file_name().to_string_lossy().into_owned();
            if n == "public" || n.starts_with("private-") {
                for t in std::fs::read_dir(b.path()).into_iter().flatten().flatten() {
                    out.push(format!("{n}/{}", t.file_name().to_string_lossy()));
                }
            }
        }
        out.sort();
        out
    }
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// jobcell failed with exit 125 and exactly one line on stderr containing every needle.
fn assert_one_line_error(o: &Output, needles: &[&str]) -> String {
    let e = err(o);
    assert_eq!(o.status.code(), Some(125), "exit status; stderr: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "not one line: {e:?}");
    for n in needles {
        assert!(e.contains(n), "{n:?} not in {e:?}");
    }
    e
}

#[test]
fn image_add_killed_at_any_step_leaves_no_half_image() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-kill");
    let store = Store::new(t.path().join("state"), t.path().join("images"));
    let tar_path = t.path().join("img.tar");
    std::fs::write(&tar_path, tarball(24, 64 << 10)).unwrap();
    let small = t.path().join("small.tar");
    std::fs::write(&small, tarball(1, 10)).unwrap();

    // 1. Crash points of the import, in order (debug builds: JOBCELL_CRASH_AT).
    for (i, point) in [
        "image-staging",
        "image-extracted",
        "image-renamed",
        "image-committed",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("img{i}");
        let o = store
            .cmd(&["add", &name, tar_path.to_str().unwrap()])
            .env("JOBCELL_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(
            o.status.signal(),
            Some(libc::SIGKILL),
            "{point}: not killed at the crash point (release build?): {o:?}"
        );
        let names = store.names();
        if *point == "image-committed" {
            // Committed: the image is whole.
            assert_eq!(names, std::slice::from_ref(&name), "{point}");
            let o = store.run(&["show", &name, "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            let root = PathBuf::from(v["root"].as_str().unwrap());
            assert_eq!(std::fs::read_dir(root.join("data")).unwrap().count(), 24);
            assert!(store.run(&["rm", &name]).status.success());
        } else {
            assert!(names.is_empty(), "{point}: half image listed: {names:?}");
        }
        // The next open (the `ls` above) removed the dead importer's staging dir.
        assert_eq!(store.staging(), Vec::<PathBuf>::new(), "{point}");
        // The next add sweeps a tree published without its row (crash after the rename).
        let o = store.add("other", &small);
        assert!(o.status.success(), "{point}: {}", err(&o));
        assert_eq!(store.names(), ["other"], "{point}");
        assert_eq!(store.trees().len(), 1, "{point}: {:?}", store.trees());
        assert!(store.run(&["rm", "other"]).status.success());
        assert_eq!(store.trees(), Vec::<String>::new(), "{point}");
    }

    // 2. SIGKILL in the middle of the extraction: the tar comes on stdin, the test sends half
    // of it, waits until files appear in the staging dir, then kills the importer.
    let data = tarball(40, 64 << 10);
    let mut child = store
        .cmd(&["add", "mid", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    let started = Instant::now();
    let staging = loop {
        if let Some(s) = store
            .staging()
            .into_iter()
            .find(|s| s.join("data/f8").exists())
        {
            break s;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the import ended early ({st})");
        }
        assert!(started.elapsed() < WAIT, "no files in a staging dir");
        std::thread::sleep(Duration::from_millis(5));
    };
    // SAFETY: kill takes integers only; the pid is this test's own unreaped child, so it names no
    // other process.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    drop(stdin);
    assert!(staging.exists(), "the killed import left nothing to sweep?");
    assert!(store.names().is_empty(), "half image listed");
    assert!(!staging.exists(), "staging dir of the dead importer kept");
    assert_eq!(store.trees(), Vec::<String>::new());
    // The store is usable and a full import of the same stream works.
    let mut child = store
        .cmd(&["add", "mid", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(store.names(), ["mid"]);
    assert!(store.run(&["rm", "mid"]).status.success());
}

#[test]
fn image_import_on_a_full_disk_fails_cleanly() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-enospc");
    let big = t.path().join("big.tar");
    std::fs::write(&big, tarball(32, 256 << 10)).unwrap(); // 8 MiB
    let small = t.path().join("small.tar");
    std::fs::write(&small, tarball(2, 1000)).unwrap();
    let small_fs = t.path().join("small");
    let ran = in_private_mount_ns(|| {
        // (state dir elsewhere, images dir on the small fs), (both on the small fs)
        for both in [false, true] {
            let m = Mounted::tmpfs(&small_fs, 4 << 20);
            let state = if both {
                small_fs.join("state")
            } else {
                t.path().join(format!("state-{both}"))
            };
            let store = Store::new(state, small_fs.join("images"));
            assert!(store.names().is_empty());
            let before = fs_used(&small_fs);
            let o = store.add("big", &big);
            let e = assert_one_line_error(
                &o,
                &[
                    "no space left for the image in",
                    &small_fs.join("images").display().to_string(),
                    "No space left on device",
                ],
            );
            assert!(e.contains("image add big"), "{e}");
            assert!(store.names().is_empty(), "registered on a full disk");
            assert_eq!(store.staging(), Vec::<PathBuf>::new());
            assert_eq!(store.trees(), Vec::<String>::new());
            // The space is given back (the index may have grown a little).
            let after = fs_used(&small_fs);
            assert!(
                after <= before + (256 << 10),
                "{before} bytes used before, {after} after"
            );
            // And the store still works.
            let o = store.add("small", &small);
            assert!(o.status.success(), "{}", err(&o));
            assert_eq!(store.names(), ["small"]);
            drop(m);
        }
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

#[test]
fn read_only_state_dir_is_refused_with_a_clear_error() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-rofs");
    let tar_path = t.path().join("img.tar");
    std::fs::write(&tar_path, tarball(2, 1000)).unwrap();
    let ro = t.subdir("ro", 0o755);
    let rw_images = t.subdir("rw-images", 0o755);
    let ran = in_private_mount_ns(|| {
        // A store made while writable, with one image, then the whole dir read-only.
        let full = Store::new(ro.join("state"), ro.join("images"));
        assert!(full.add("old", &tar_path).status.success());
        // State dir read-only, images dir writable (a separate filesystem on some sites).
        let split = Store::new(ro.join("state"), rw_images.clone());
        let _m = Mounted::read_only(&ro);

        let o = full.add("new", &tar_path);
        let ro_state = ro.join("state").display().to_string();
        assert_one_line_error(
            &o,
            &[
                &format!("state dir {ro_state} is not writable by uid 0"),
                "Read-only file system",
            ],
        );
        let o = split.add("new", &tar_path);
        assert_one_line_error(&o, &[&format!("state dir {ro_state}"), "Read-only"]);
        assert_eq!(split.staging(), Vec::<PathBuf>::new());
        let o = full.run(&["rm", "old"]);
        assert_one_line_error(&o, &[&format!("state dir {ro_state}"), "Read-only"]);
        // Reading still works.
        assert_eq!(full.names(), ["old"]);

        // The daemon refuses a read-only state dir before doing anything.
        let o = Command::new(JOBCELL)
            .arg("daemon")
            .arg("--state-dir")
            .arg(ro.join("daemon"))
            .arg("--socket")
            .arg(t.path().join("api.sock"))
            .arg("--scratch-base")
            .arg(t.path().join("scratch"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_one_line_error(
            &o,
            &[
                &format!("state dir {}", ro.join("daemon").display()),
                "Read-only file system",
            ],
        );
        assert!(!t.path().join("api.sock").exists());
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// `sqlite3 DB` holding an exclusive (write) transaction until dropped.
struct SqliteLock(Child);

impl SqliteLock {
    fn hold(db: &Path) -> Option<SqliteLock> {
        let child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("SKIPPED: no sqlite3 tool (apt-get install sqlite3)");
            return None;
        };
        // In WAL mode BEGIN EXCLUSIVE takes the write lock at once; readers go on.
        let stdin = child.stdin.as_mut().unwrap();
        stdin
            .write_all(b"BEGIN EXCLUSIVE;\nSELECT 'locked';\n")
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked", "sqlite3 did not take the lock");
        Some(SqliteLock(child))
    }
}

impl Drop for SqliteLock {
    fn drop(&mut self) {
        if let Some(mut s) = self.0.stdin.take() {
            let _ = s.write_all(b"ROLLBACK;\n.quit\n");
        }
        let _ = self.0.wait();
    }
}

fn have_sqlite3() -> bool {
    if Command::new("sqlite3").arg("--version").output().is_ok() {
        return true;
    }
    eprintln!("SKIPPED: no sqlite3 tool (apt-get install sqlite3)");
    false
}

fn contents(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Overwrite the SQLite header ("SQLite format 3\0") with garbage.
fn corrupt_header(db: &Path) {
    let mut f = std::fs::OpenOptions::new().write(true).open(db).unwrap();
    f.write_all(b"garbage garbage!").unwrap();
}

#[test]
fn locked_or_corrupted_image_database() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-imgdb");
    let tar_path = t.path().join("img.tar");
    std::fs::write(&tar_path, tarball(4, 4096)).unwrap();
    let tar2 = t.path().join("img2.tar");
    std::fs::write(&tar2, tarball(5, 4096)).unwrap();
    let store = Store::new(t.path().join("state"), t.path().join("images"));
    assert!(store.add("old", &tar_path).status.success());
    let db = t.path().join("state/images.db");
    if !have_sqlite3() {
        return;
    }
    {
        let Some(_lock) = SqliteLock::hold(&db) else {
            return;
        };
        // Readers are not blocked (WAL).
        assert_eq!(store.names(), ["old"]);
        // A writer waits (busy timeout), then gives up with a clear error and cleans up.
        let o = store.add("new", &tar2);
        assert_one_line_error(
            &o,
            &[
                &format!("image database {}", db.display()),
                "database is locked",
            ],
        );
        assert_eq!(store.staging(), Vec::<PathBuf>::new());
        assert_eq!(store.trees().len(), 1, "{:?}", store.trees());
    }
    assert_eq!(store.names(), ["old"]);
    assert!(store.add("new", &tar2).status.success());
    assert_eq!(store.names(), ["new", "old"]);

    // Corrupted: every command refuses with the file named, nothing is rewritten or removed.
    let o = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .output()
        .unwrap();
    assert!(o.status.success());
    corrupt_header(&db);
    let trees = store.trees();
    let files = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    contents(&e.path()),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = files(&db);
    for args in [
        vec!["ls"],
        vec!["show", "old"],
        vec!["add", "x", tar_path.to_str().unwrap()],
        vec!["rm", "old"],
    ] {
        let o = store.run(&args);
        assert_one_line_error(
            &o,
            &[
                &format!("image database {}", db.display()),
                "not a database",
            ],
        );
        assert!(!err(&o).contains("panick"), "{}", err(&o));
    }
    assert_eq!(files(&db), before, "the corrupted database was changed");
    assert_eq!(store.trees(), trees, "image trees changed");
    assert_eq!(store.staging(), Vec::<PathBuf>::new());
}

// ---------------------------------------------------------------------------------------------
// Daemon

struct Daemon {
    child: Option<Child>,
    dir: PathBuf,
    state: PathBuf,
    sock: PathBuf,
    scratch: PathBuf,
}

impl Daemon {
    /// A daemon whose state dir is `state` (scratch and socket under `dir`).
    fn start(dir: &Path, state: &Path) -> Daemon {
        let mut d = Daemon {
            child: None,
            dir: dir.to_path_buf(),
            state: state.to_path_buf(),
            sock: dir.join("api.sock"),
            scratch: dir.join("scratch"),
        };
        d.launch().unwrap_or_else(|e| panic!("{e}"));
        d
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(JOBCELL);
        c.arg("daemon")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--socket")
            .arg(&self.sock)
            .arg("--scratch-base")
            .arg(&self.scratch)
            .args(["--cpus", "1", "--memory", "1G"]);
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let mut child = self
            .cmd()
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while UnixStream::connect(&self.sock).is_err() {
            if let Some(st) = child.try_wait().unwrap() {
                return Err(format!("daemon exited ({st}): {}", self.log()));
            }
            if t.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("daemon not ready: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    fn assert_alive(&mut self) {
        let st = self
            .child
            .as_mut()
            .expect("daemon running")
            .try_wait()
            .unwrap();
        assert!(st.is_none(), "the daemon exited ({st:?}): {}", self.log());
    }

    fn client(&self) -> Client {
        Client::new(&self.sock)
    }

    fn submit(&self, argv: &[&str]) -> Result<u64, String> {
        self.submit_with(&[], argv)
    }

    /// `jobcell submit` with extra options (`--hold`, `--count N`); the first job's id.
    fn submit_with(&self, opts: &[&str], argv: &[&str]) -> Result<u64, String> {
        let o = Command::new(JOBCELL)
            .arg("submit")
            .args(["--cpus", "0.1", "--memory", "32"])
            .args(opts)
            .arg("--")
            .args(argv)
            .env("JOBCELL_SOCKET", &self.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        if !o.status.success() {
            return Err(err(&o));
        }
        out.trim()
            .strip_prefix("Submitted job ")
            .and_then(|r| r.strip_suffix('.'))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unexpected submit output {out:?}"))
    }

    fn job(&self, id: u64) -> JobInfo {
        self.client()
            .call("GET", &format!("/v1/jobs/{id}"), None)
            .unwrap()
    }

    fn wait_ended(&self, id: u64) -> JobInfo {
        let t = Instant::now();
        loop {
            let j = self.job(id);
            if matches!(j.state, State::Completed | State::Failed) {
                return j;
            }
            assert!(t.elapsed() < WAIT, "job {id} still {:?}", j.state);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self, id: u64) -> Vec<u8> {
        let o = Command::new(JOBCELL)
            .args(["output", &id.to_string()])
            .env("JOBCELL_SOCKET", &self.sock)
            .output()
            .unwrap();
        assert!(o.status.success(), "output {id}: {}", err(&o));
        o.stdout
    }

    /// Waits for the daemon to exit on its own; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            if t.elapsed() > WAIT {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the daemon did not exit: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill takes integers only; the pid is this harness's own unreaped child, so it
            // names no other process.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        remove_supervisors_cgroup();
    }
}

#[test]
fn job_output_filling_the_state_dir_leaves_the_daemon_running() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-output");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs(&state_fs, 24 << 20);
        let mut d = Daemon::start(t.path(), &state_fs.join("state"));
        let first = d.submit(&["/bin/echo", "first"]).unwrap();
        let j = d.wait_ended(first);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(0)));
        // Writes 64 MiB to stdout, which lives in the state dir: far more than fits.
        let hog = d
            .submit(&[
                "/bin/sh",
                "-c",
                "head -c 64M /dev/zero; echo head-exit=$? >&2; exit 7",
            ])
            .unwrap();
        let j = d.wait_ended(hog);
        eprintln!(
            "the hog job: {:?} {:?} exit {:?}",
            j.state, j.reason, j.exit_code
        );
        // Its result still lands (the supervisor reserved the space at start): the job's own
        // exit status is recorded, not "ended without recording a result".
        assert_eq!(j.exit_code, Some(7), "the hog's own status: {j:?}");
        // The daemon is alive and answers; the earlier job's record and output are intact.
        assert!(
            d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
            "daemon exited: {}",
            d.log()
        );
        let j1 = d.job(first);
        assert_eq!((j1.state, j1.exit_code), (State::Completed, Some(0)));
        assert_eq!(d.output(first), b"first\n");
        let hist: Vec<JobInfo> = d
            .client()
            .call("GET", "/v1/history?limit=100", None)
            .unwrap();
        assert!(hist.iter().any(|j| j.id == first) && hist.iter().any(|j| j.id == hog));
        // A new submission either works or is refused with a clear error; the daemon stays.
        match d.submit(&["/bin/true"]) {
            Ok(id) => {
                let j = d.wait_ended(id);
                eprintln!("a job on the full disk: {:?} {:?}", j.state, j.reason);
            }
            Err(e) => {
                eprintln!("a submit on the full disk: {e}");
                assert_eq!(e.trim_end().lines().count(), 1, "{e}");
            }
        }
        assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());
        // Once space is freed (the hog's output removed), jobs run again.
        let _ = std::fs::remove_file(state_fs.join(format!("state/jobs/{hog}/stdout")));
        let again = d.submit(&["/bin/echo", "again"]).unwrap();
        let j = d.wait_ended(again);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(0)), "{j:?}");
        d.stop();
        // Acknowledged records survive a restart.
        d.launch().unwrap();
        assert_eq!(d.job(first).state, State::Completed);
        assert_eq!(d.job(again).state, State::Completed);
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// A large submission (the database must grow by more than is free).
fn many_held_jobs(count: u32) -> Vec<u8> {
    let spec = jobcell_spec::JobSpec::new(vec!["/bin/true".into()]);
    serde_json::to_vec(&serde_json::json!({"spec": spec, "count": count, "hold": true})).unwrap()
}

/// A submission on a full state dir is refused with 507 and one line saying what is free and
/// what is needed; the daemon stays up (same pid), reads keep working, and once space is back
/// the same daemon takes work again.
#[test]
fn a_full_state_dir_refuses_submissions_and_recovers_without_a_restart() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-full");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs(&state_fs, 32 << 20);
        let state = state_fs.join("state");
        let mut d = Daemon::start(t.path(), &state);
        let first = d.submit(&["/bin/echo", "first"]).unwrap();
        assert_eq!(d.wait_ended(first).exit_code, Some(0));
        let pid = d.pid();
        let filler = fill(&state_fs, 1 << 20);
        let big = many_held_jobs(2000);
        let r = d.client().raw("POST", "/v1/jobs", Some(&big));
        let (code, data) = r.unwrap_or_else(|e| panic!("no answer ({e}): {}", d.log()));
        eprintln!(
            "2000 jobs submitted on the full disk: {code} {}",
            String::from_utf8_lossy(&data[..data.len().min(200)])
        );
        let msg = String::from_utf8_lossy(&data).to_string();
        assert_eq!(code, 507, "{msg}");
        assert!(
            msg.contains(&format!("state dir {} full: ", state.display()))
                && msg.contains(" free, need "),
            "{msg}"
        );
        // The command-line client says it in one line.
        let e = d.submit(&["/bin/true"]).unwrap_err();
        eprintln!("jobcell submit on the full disk: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.contains("full"), "{e}");
        d.assert_alive();
        assert_eq!(d.pid(), pid);
        // Reads work: the queue, history, status and the earlier job's output.
        let q: Vec<JobInfo> = d.client().call("GET", "/v1/jobs", None).unwrap();
        assert!(q.is_empty(), "a refused submission left jobs: {q:?}");
        let hist: Vec<JobInfo> = d
            .client()
            .call("GET", "/v1/history?limit=10", None)
            .unwrap();
        assert!(hist.iter().any(|j| j.id == first));
        let _: serde_json::Value = d.client().call("GET", "/v1/status", None).unwrap();
        assert_eq!(d.output(first), b"first\n");
        // Space comes back: the same daemon takes work again.
        std::fs::remove_file(&filler).unwrap();
        let again = d.submit(&["/bin/echo", "again"]).unwrap();
        let j = d.wait_ended(again);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(0)), "{j:?}");
        let (code, data) = d.client().raw("POST", "/v1/jobs", Some(&big)).unwrap();
        assert_eq!(code, 201, "{}", String::from_utf8_lossy(&data));
        d.assert_alive();
        assert_eq!(d.pid(), pid, "the daemon was restarted");
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// Large submissions on a nearly full state dir, then a restart there: the daemon neither
/// exits on them nor, restarted, at its first write (under systemd's `Restart=` that would be
/// a restart loop); it answers reads, takes a small write (rm), refuses submissions with one
/// line, and takes them again once space is back.
#[test]
fn a_restart_on_a_nearly_full_state_dir_stays_up() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-restart-full");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs(&state_fs, 48 << 20);
        let state = state_fs.join("state");
        let mut d = Daemon::start(t.path(), &state);
        let held = d.submit_with(&["--hold"], &["/bin/true"]).unwrap();
        let filler = fill(&state_fs, 1 << 20);
        for i in 0..3 {
            let r = d
                .client()
                .raw("POST", "/v1/jobs", Some(&many_held_jobs(10_000)));
            let r = r.map(|(code, body)| {
                (
                    code,
                    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
                )
            });
            eprintln!("10000 jobs on the nearly full disk ({i}): {r:?}");
        }
        let wal = std::fs::metadata(state.join("state.db-wal")).map_or(0, |m| m.len());
        eprintln!("the WAL: {wal} bytes; free: {} bytes", fs_free(&state_fs));
        let survived = d.child.as_mut().unwrap().try_wait().unwrap();
        // Killed (or exited on its own): started again on the same disk.
        if let Some(mut c) = d.child.take() {
            let _ = c.kill();
            eprintln!("the daemon before the restart: {:?}", c.wait().unwrap());
        }
        for attempt in 1..=3 {
            d.launch().unwrap_or_else(|e| panic!("{e}"));
            let q: Vec<JobInfo> = d.client().call("GET", "/v1/jobs", None).unwrap();
            let o = Command::new(JOBCELL)
                .args(["rm", &held.to_string()])
                .env("JOBCELL_SOCKET", &d.sock)
                .output()
                .unwrap();
            eprintln!(
                "restart {attempt}: {} jobs; rm on the nearly full disk: {:?} {}",
                q.len(),
                o.status,
                err(&o)
            );
            std::thread::sleep(Duration::from_millis(300));
            if d.child.as_mut().unwrap().try_wait().unwrap().is_none() {
                break;
            }
            eprintln!(
                "the restarted daemon exited: {}",
                d.log()
                    .lines()
                    .rev()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            d.child = None;
            assert!(attempt < 3, "the daemon exits at each restart");
        }
        assert!(
            survived.is_none(),
            "the large submissions ended the daemon ({survived:?})"
        );
        let pid = d.pid();
        let e = d.submit(&["/bin/true"]).unwrap_err();
        eprintln!("jobcell submit on the nearly full disk: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.contains("full"), "{e}");
        d.assert_alive();
        std::fs::remove_file(&filler).unwrap();
        let again = d.submit(&["/bin/echo", "again"]).unwrap();
        let j = d.wait_ended(again);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(0)), "{j:?}");
        d.assert_alive();
        assert_eq!(d.pid(), pid);
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// A submission whose job dir cannot be made (here: the state dir's filesystem has no inodes
/// left, though bytes are free) is refused with one line, not acknowledged and failed later.
#[test]
fn a_submission_whose_job_dir_cannot_be_made_is_refused() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-jobdir");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs_with(&state_fs, "size=32m,nr_inodes=100");
        let mut d = Daemon::start(t.path(), &state_fs.join("state"));
        let first = d.submit(&["/bin/echo", "first"]).unwrap();
        assert_eq!(d.wait_ended(first).exit_code, Some(0));
        let inodes = state_fs.join("inodes");
        std::fs::create_dir(&inodes).unwrap();
        let mut made = 0;
        while std::fs::File::create(inodes.join(made.to_string())).is_ok() {
            made += 1;
        }
        let r = d.submit(&["/bin/true"]);
        eprintln!("a submission without inodes for its job dir: {r:?}");
        if let Ok(id) = r {
            let j = d.wait_ended(id);
            panic!("acknowledged, then: {:?} {:?}", j.state, j.reason);
        }
        let e = r.unwrap_err();
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        assert!(e.contains("jobs/") && e.contains("No space left"), "{e}");
        let q: Vec<JobInfo> = d.client().call("GET", "/v1/jobs", None).unwrap();
        assert!(q.is_empty(), "{q:?}");
        d.assert_alive();
        std::fs::remove_dir_all(&inodes).unwrap();
        let again = d.submit(&["/bin/echo", "again"]).unwrap();
        let j = d.wait_ended(again);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(0)), "{j:?}");
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// A job started when the state dir had too little room for its result (the supervisor's
/// reservation failed) and filled the rest with its output: its record says the result could
/// not be written for lack of space, not that its supervisor was killed.
#[test]
fn a_result_lost_to_a_full_disk_names_the_cause() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-result");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs(&state_fs, 32 << 20);
        let mut d = Daemon::start(t.path(), &state_fs.join("state"));
        let first = d.submit(&["/bin/echo", "first"]).unwrap();
        assert_eq!(d.wait_ended(first).exit_code, Some(0));
        let hog = d
            .submit_with(
                &["--hold"],
                &["/bin/sh", "-c", "head -c 4M /dev/zero; exit 3"],
            )
            .unwrap();
        let filler = fill(&state_fs, 32 << 10);
        let o = Command::new(JOBCELL)
            .args(["release", &hog.to_string()])
            .env("JOBCELL_SOCKET", &d.sock)
            .output()
            .unwrap();
        assert!(o.status.success(), "release: {}", err(&o));
        let j = d.wait_ended(hog);
        eprintln!(
            "the job whose result was lost: {:?} {:?}",
            j.state, j.reason
        );
        let why = j.reason.clone().unwrap_or_default();
        assert_eq!(j.state, State::Failed, "{j:?}");
        assert!(
            why.contains("could not be written") && why.contains("No space left on device"),
            "{why}"
        );
        assert!(!why.contains("killed"), "{why}");
        d.assert_alive();
        std::fs::remove_file(&filler).unwrap();
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

/// With no room even for the database's reserve (the daemon restarted on a state dir with
/// 512 KiB left and no WAL to take its reserve back from), the daemon writes nothing: a job that ends meanwhile stays running in the
/// queue, requests that write get 507, reads are answered; once space is back the job's end
/// is recorded with its own status, by the same daemon, within seconds.
#[test]
fn with_no_room_to_write_a_jobs_end_waits_for_space() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-defer");
    let state_fs = t.path().join("statefs");
    let ran = in_private_mount_ns(|| {
        let _m = Mounted::tmpfs(&state_fs, 32 << 20);
        let mut d = Daemon::start(t.path(), &state_fs.join("state"));
        let ready = t.subdir("ready", 0o777);
        let job = d
            .submit(&[
                "/bin/sh",
                "-c",
                &format!(
                    "touch {}/up; while [ ! -e {}/go ]; do sleep 0.05; done; exit 5",
                    ready.display(),
                    t.path().display()
                ),
            ])
            .unwrap();
        let t0 = Instant::now();
        while !ready.join("up").exists() {
            assert!(t0.elapsed() < WAIT, "the job did not start: {}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        // The job keeps running while the daemon is down. Closing the database as its last
        // user removes the WAL and with it the space reserved there.
        d.stop();
        let db = state_fs.join("state/state.db");
        drop(jobcell_node::store::Store::open(&db).unwrap());
        assert!(!state_fs.join("state/state.db-wal").exists());
        let filler = fill(&state_fs, 512 << 10);
        d.launch().unwrap_or_else(|e| panic!("{e}"));
        let pid = d.pid();
        std::fs::write(t.path().join("go"), b"").unwrap();
        std::thread::sleep(Duration::from_secs(2));
        let j = d.job(job);
        eprintln!("the job's record while the disk is full: {:?}", j.state);
        assert!(j.state.active(), "recorded without room: {j:?}");
        let e = d.submit(&["/bin/true"]).unwrap_err();
        eprintln!("a submission: {e}");
        assert!(e.contains("full"), "{e}");
        let o = Command::new(JOBCELL)
            .args(["hold", &job.to_string()])
            .env("JOBCELL_SOCKET", &d.sock)
            .output()
            .unwrap();
        eprintln!("jobcell hold: {:?} {}", o.status.code(), err(&o));
        assert!(
            !o.status.success() && err(&o).contains("full"),
            "{}",
            err(&o)
        );
        let _: serde_json::Value = d.client().call("GET", "/v1/status", None).unwrap();
        std::fs::remove_file(&filler).unwrap();
        let j = d.wait_ended(job);
        assert_eq!((j.state, j.exit_code), (State::Completed, Some(5)), "{j:?}");
        d.assert_alive();
        assert_eq!(d.pid(), pid);
        d.stop();
    });
    if ran.is_none() {
        return;
    }
    assert_no_mount_under(t.path());
}

#[test]
fn locked_or_corrupted_state_database() {
    if skip_unless_root() {
        return;
    }
    let _g = serial();
    let t = TestDir::new("faults-statedb");
    let state = t.path().join("state");
    let mut d = Daemon::start(t.path(), &state);
    let first = d.submit(&["/bin/echo", "first"]).unwrap();
    assert_eq!(d.wait_ended(first).state, State::Completed);
    let db = state.join("state.db");
    if !have_sqlite3() {
        return;
    }
    // A lock shorter than the busy timeout: the daemon waits and the submit succeeds.
    let second = {
        let Some(lock) = SqliteLock::hold(&db) else {
            return;
        };
        let sock = d.sock.clone();
        let th = std::thread::spawn(move || {
            Command::new(JOBCELL)
                .args([
                    "submit",
                    "--cpus",
                    "0.1",
                    "--memory",
                    "32",
                    "--",
                    "/bin/true",
                ])
                .env("JOBCELL_SOCKET", sock)
                .output()
                .unwrap()
        });
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
        let o = th.join().unwrap();
        assert!(o.status.success(), "{}", err(&o));
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.trim()
            .trim_start_matches("Submitted job ")
            .trim_end_matches('.')
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(d.wait_ended(second).state, State::Completed);
    // A lock held longer: the daemon gives up with a clear log line and exits (crash-only:
    // the committed state is the truth); the client is told; nothing acknowledged is lost.
    {
        let Some(_lock) = SqliteLock::hold(&db) else {
            return;
        };
        let r = d.submit(&["/bin/true"]);
        let e = r.expect_err("a submit while the database stays locked");
        assert_eq!(e.trim_end().lines().count(), 1, "{e}");
        let st = d.wait_exit();
        assert_eq!(st.code(), Some(70), "{}", d.log());
        let log = d.log();
        assert!(
            log.contains("state database failed (database is locked)"),
            "{log}"
        );
    }
    d.launch().unwrap();
    assert_eq!(d.job(first).state, State::Completed);
    assert_eq!(d.job(second).state, State::Completed);
    assert_eq!(d.output(first), b"first\n");
    d.stop();
    remove_supervisors_cgroup();

    // Corrupted header: refused with the file named; the file is not touched.
    let o = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA wal_checkpoint(TRUNCATE);")
        .output()
        .unwrap();
    assert!(o.status.success());
    corrupt_header(&db);
    let before = contents(&db);
    let o = d.cmd().stdin(Stdio::null()).output().unwrap();
    assert_one_line_error(
        &o,
        &[
            &format!("state database {}", db.display()),
            "not a database",
        ],
    );
    assert_eq!(contents(&db), before, "the corrupted database was changed");
    assert!(UnixStream::connect(&d.sock).is_err());
}
