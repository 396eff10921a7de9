//! Link the unwinder statically instead of loading libgcc_s.so at every start.
//!
//! Every `jobcell run` and every supervisor starts this binary, so start-up is on the launch's
//! critical path. libgcc_s.so costs a library load plus its constructor's CPUID probing (each
//! CPUID traps to the hypervisor on a VM), ~0.1–0.2 ms per start, for an unwinder that a
//! `panic = "abort"` build uses only to print backtraces. Rust's std asks the linker for
//! `-lgcc_s`; a linker script of that name found first on the search path sends it to the
//! static `libgcc_eh.a` instead — what `gcc -static-libgcc` does for C programs. Where the
//! compiler has no libgcc_eh.a (or the target is not glibc Linux), nothing changes.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if !target.ends_with("-linux-gnu") {
        return;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let Ok(out) = Command::new(&cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
    else {
        return;
    };
    let eh = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    // Without the file, cc prints the bare name back.
    if !out.status.success() || !eh.is_absolute() || !eh.exists() {
        return;
    }
    let dir =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("static-libgcc");
    std::fs::create_dir_all(&dir).expect("creating OUT_DIR/static-libgcc");
    std::fs::write(
        dir.join("libgcc_s.so"),
        format!(
            "/* jobcell: -lgcc_s -> static unwinder */\nINPUT({})\n",
            eh.display()
        ),
    )
    .expect("writing the libgcc_s linker script");
    println!("cargo:rustc-link-search=native={}", dir.display());
}
