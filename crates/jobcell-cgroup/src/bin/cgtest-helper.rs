//! Test-support program for jobcell-cgroup's kernel tests (also used inside the busybox v2 VM,
//! so it needs nothing but the kernel). Single-threaded, so `fork` here is safe.
//!
//! usage: cgtest-helper [--gate] MODE ARGS
//!   --gate                 read one byte from stdin first (the test attaches us, then releases)
//!   hog MIB                allocate and touch MIB MiB of anonymous memory, print "done"
//!   spin CPU SECS          pin to CPU (-1: don't), burn CPU for SECS seconds (0: forever)
//!   shm MIB NPROC HOLD_MS  one shared MIB MiB mapping; NPROC children each touch all of it,
//!                          hold HOLD_MS, exit
//!   forkbomb               fork pausing children until fork fails; print the count; block on stdin
//!   sleep MS               sleep
//!   exit CODE              exit with CODE
//!   setxattr PATH NAME VAL set the xattr NAME of PATH to VAL (the guest's busybox has no
//!                          setfattr; e.g. systemd's trusted.delegate mark on a cgroup)
//!   delegated UID [DIR...] (as root) move into every DIR (its cgroup.procs), become UID, then
//!                          CgroupRoot::detect_delegated(None): print "refused: ERR", or make a
//!                          job cgroup (memory 64 MiB, pids 50), attach a forked child, print
//!                          "limits MEMORY PIDS procs N", remove it, restore, print "ok"

use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn die(msg: &str) -> ! {
    eprintln!("cgtest-helper: {msg}");
    std::process::exit(100);
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> T {
    args.get(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| die(&format!("missing or bad {what}")))
}

const MIB: usize = 1 << 20;

fn touch(p: *mut u8, len: usize, val: u8) {
    let mut off = 0;
    while off < len {
        // SAFETY: p..p+len is a live writable mapping owned by this process.
        unsafe { std::ptr::write_volatile(p.add(off), val) };
        off += 4096;
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--gate") {
        args.remove(0);
        let mut b = [0u8; 1];
        if std::io::stdin().read_exact(&mut b).is_err() {
            die("gate closed before release");
        }
    }
    let mode = args.first().cloned().unwrap_or_default();
    match mode.as_str() {
        "hog" => {
            let mib: usize = arg(&args, 1, "MIB");
            let mut keep: Vec<Vec<u8>> = Vec::new();
            for _ in 0..mib {
                let mut v = vec![0u8; MIB];
                touch(v.as_mut_ptr(), MIB, 1);
                keep.push(v);
            }
            println!("done {}", keep.len());
        }
        "spin" => {
            let cpu: i32 = arg(&args, 1, "CPU");
            let secs: f64 = arg(&args, 2, "SECS");
            if cpu >= 0 {
                // SAFETY: cpu_set_t is plain data; sched_setaffinity on ourselves.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu as usize, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0
                    {
                        die(&format!(
                            "sched_setaffinity({cpu}): {}",
                            std::io::Error::last_os_error()
                        ));
                    }
                }
            }
            let start = Instant::now();
            let mut x: u64 = 1;
            while secs <= 0.0 || start.elapsed().as_secs_f64() < secs {
                for _ in 0..10000 {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            std::hint::black_box(x);
        }
        "shm" => {
            let mib: usize = arg(&args, 1, "MIB");
            let nproc: usize = arg(&args, 2, "NPROC");
            let hold: u64 = arg(&args, 3, "HOLD_MS");
            let len = mib * MIB;
            // SAFETY: anonymous shared mapping; checked for MAP_FAILED.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                die("mmap failed");
            }
            let mut kids = Vec::new();
            for i in 0..nproc {
                // SAFETY: single-threaded program; the child only touches memory and sleeps.
                match unsafe { libc::fork() } {
                    -1 => die("fork failed"),
                    0 => {
                        touch(p.cast(), len, i as u8 + 1);
                        std::thread::sleep(Duration::from_millis(hold));
                        // SAFETY: leave without running the parent's atexit handlers.
                        unsafe { libc::_exit(0) };
                    }
                    pid => kids.push(pid),
                }
            }
            let mut bad = 0;
            for k in kids {
                let mut st = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(k, &mut st, 0) };
                if !(libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0) {
                    bad += 1;
                }
            }
            if bad > 0 {
                die(&format!("{bad} shm children failed"));
            }
            println!("done");
        }
        "forkbomb" => {
            let mut n = 0u64;
            loop {
                // SAFETY: single-threaded; the child only pauses.
                match unsafe { libc::fork() } {
                    -1 => break,
                    0 => loop {
                        // SAFETY: pause until killed.
                        unsafe { libc::pause() };
                    },
                    _ => n += 1,
                }
                if n > 100_000 {
                    break;
                }
            }
            println!("forked {n}");
            let _ = std::io::stdout().flush();
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        "delegated" => delegated(&args),
        "sleep" => std::thread::sleep(Duration::from_millis(arg(&args, 1, "MS"))),
        "exit" => std::process::exit(arg(&args, 1, "CODE")),
        "setxattr" => {
            let c = |i: usize, what: &str| {
                std::ffi::CString::new(arg::<String>(&args, i, what))
                    .unwrap_or_else(|_| die(&format!("{what} holds a NUL byte")))
            };
            let (path, name, value) = (c(1, "PATH"), c(2, "NAME"), c(3, "VALUE"));
            let value = value.as_bytes();
            // SAFETY: path and name are NUL-terminated; value is a live slice of its length.
            let rc = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if rc != 0 {
                die(&format!(
                    "setxattr {:?}: {}",
                    args[1],
                    std::io::Error::last_os_error()
                ));
            }
        }
        _ => die(&format!("unknown mode {mode:?}")),
    }
}

/// A process of a user whose cgroup was delegated to it (see the usage above).
fn delegated(args: &[String]) {
    let uid: u32 = arg(args, 1, "UID");
    for d in &args[2..] {
        if let Err(e) = std::fs::write(format!("{d}/cgroup.procs"), "0") {
            die(&format!("moving into {d}: {e}"));
        }
    }
    // SAFETY: plain credential syscalls in a single-threaded process.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(uid, uid, uid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            die(&format!(
                "becoming {uid}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let root = match jobcell_cgroup::CgroupRoot::detect_delegated(None) {
        Ok(r) => r,
        Err(e) => {
            println!("refused: {e}");
            return;
        }
    };
    let limits = jobcell_cgroup::Resources {
        memory: Some(64 * MIB as u64),
        pids: Some(50),
        ..Default::default()
    };
    let job = root
        .create(
            &jobcell_cgroup::job_cgroup_name("deleg"),
            &limits,
            jobcell_cgroup::CgroupOptions::default(),
        )
        .unwrap_or_else(|e| die(&format!("create: {e}")));
    let read = |file: &str| {
        job.paths()
            .iter()
            .find_map(|p| std::fs::read_to_string(p.join(file)).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| die(&format!("no {file} in {:?}", job.paths())))
    };
    let (mem, pids) = match job.version() {
        jobcell_cgroup::Version::V1 => (read("memory.limit_in_bytes"), read("pids.max")),
        jobcell_cgroup::Version::V2 => (read("memory.max"), read("pids.max")),
    };
    // SAFETY: single-threaded; the child only pauses until killed.
    let child = match unsafe { libc::fork() } {
        -1 => die("fork failed"),
        0 => loop {
            // SAFETY: pause until killed.
            unsafe { libc::pause() };
        },
        pid => pid,
    };
    if let Err(e) = job.attach(child) {
        // SAFETY: our own child.
        unsafe { libc::kill(child, libc::SIGKILL) };
        die(&format!("attach: {e}"));
    }
    let n = job.procs().map(|p| p.len()).unwrap_or(0);
    println!("limits {mem} {pids} procs {n}");
    let removed = job.remove();
    // SAFETY: reap our own (killed) child.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    if let Err(e) = removed {
        die(&format!("remove: {e}"));
    }
    if let Err(e) = root.restore() {
        die(&format!("restore: {e}"));
    }
    println!("ok");
}
