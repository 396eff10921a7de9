//! Reads Slurm's headers at build time: `plugin_version` must equal the installed Slurm's
//! `SLURM_VERSION_NUMBER` (slurmd refuses a plugin built for another major.minor), and the item,
//! context and step-id numbers come from the same headers rather than being guessed.
//!
//! Without the headers the crate still builds (so `cargo build --workspace` works anywhere), but
//! with no plugin body, and says so loudly.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-check-cfg=cfg(have_slurm)");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    let dir = std::env::var_os("SLURM_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include/slurm"));
    for f in ["slurm_version.h", "spank.h", "slurm.h"] {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    match generate(&dir) {
        Ok(code) => {
            let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("slurm_consts.rs");
            std::fs::write(&out, code).unwrap();
            println!("cargo:rustc-cfg=have_slurm");
        }
        Err(why) => {
            println!(
                "cargo:warning=jobcell-spank: building WITHOUT the SPANK plugin body: {why}. \
                 Install Slurm's headers (apt-get install libslurm-dev) or set SLURM_INCLUDE_DIR \
                 to the directory holding spank.h and slurm_version.h."
            );
        }
    }
}

fn read(dir: &Path, f: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(f)).map_err(|e| format!("{}: {e}", dir.join(f).display()))
}

/// `#define NAME VALUE` -> VALUE, with parentheses stripped.
fn define(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        if w.next()? != "#define" || w.next()? != name {
            return None;
        }
        let v = w.next()?.trim_matches(|c| c == '(' || c == ')');
        match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

/// The enumerators of `enum NAME { ... };` in order (values are implicit in spank.h).
fn enumerators(text: &str, name: &str) -> Result<Vec<String>, String> {
    let start = text
        .find(&format!("enum {name} {{"))
        .ok_or(format!("spank.h has no enum {name}"))?;
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find('}').ok_or("unterminated enum")?];
    let mut out = Vec::new();
    for l in body.lines() {
        let l = l.split("/*").next().unwrap_or("").trim();
        for item in l.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            if item.contains('=') {
                return Err(format!("enum {name} has explicit values; update build.rs"));
            }
            out.push(item.to_string());
        }
    }
    Ok(out)
}

fn generate(dir: &Path) -> Result<String, String> {
    let ver = read(dir, "slurm_version.h")?;
    let spank = read(dir, "spank.h")?;
    let slurm = read(dir, "slurm.h")?;
    let version = define(&ver, "SLURM_VERSION_NUMBER")
        .ok_or("slurm_version.h defines no SLURM_VERSION_NUMBER")?;
    let mut code = format!(
        "/// SLURM_VERSION_NUMBER of the headers this plugin was built against.\n\
         pub const SLURM_VERSION_NUMBER: u32 = {version:#x};\n"
    );
    let items = enumerators(&spank, "spank_item")?;
    let ctxs = enumerators(&spank, "spank_context")?;
    for (want, list) in [
        (
            &[
                "S_JOB_UID",
                "S_JOB_GID",
                "S_JOB_ID",
                "S_JOB_STEPID",
                "S_JOB_ARGV",
            ][..],
            &items,
        ),
        (
            &[
                "S_CTX_LOCAL",
                "S_CTX_REMOTE",
                "S_CTX_ALLOCATOR",
                "S_CTX_SLURMD",
                "S_CTX_JOB_SCRIPT",
            ][..],
            &ctxs,
        ),
    ] {
        for w in want {
            let i = list
                .iter()
                .position(|x| x == w)
                .ok_or(format!("spank.h has no {w}"))?;
            code += &format!("pub const {w}: libc::c_int = {i};\n");
        }
    }
    for (name, fallback) in [
        ("SLURM_BATCH_SCRIPT", None),
        ("SLURM_EXTERN_CONT", None),
        ("SLURM_INTERACTIVE_STEP", Some(0xffff_fffau64)),
    ] {
        let v = define(&slurm, name)
            .or(fallback)
            .ok_or(format!("slurm.h defines no {name}"))?;
        code += &format!("pub const {name}: u32 = {v:#x};\n");
    }
    Ok(code)
}
