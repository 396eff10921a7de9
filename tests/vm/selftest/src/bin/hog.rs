//! Helper for the VM self-test: joins a cgroup, then touches N MiB of memory.
//! usage: vm-selftest-hog CGROUP_DIR MIB
use std::{env, fs, process};

fn main() {
    let args: Vec<String> = env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vm-selftest-hog CGROUP_DIR MIB");
        process::exit(2);
    }
    let mib: usize = match args[2].parse() {
        Ok(n) => n,
        Err(_) => {
            eprintln!("vm-selftest-hog: MIB '{}' is not a number", args[2]);
            process::exit(2);
        }
    };
    // Writing "0" to cgroup.procs moves the writer itself.
    if let Err(e) = fs::write(format!("{}/cgroup.procs", args[1]), "0") {
        eprintln!("vm-selftest-hog: cannot join {}: {e}", args[1]);
        process::exit(3);
    }
    let mut buf = vec![0u8; mib << 20];
    // Touch every page so it is really charged to the cgroup.
    for i in (0..buf.len()).step_by(4096) {
        buf[i] = 1;
    }
    println!("touched {} MiB", std::hint::black_box(&buf).len() >> 20);
}
