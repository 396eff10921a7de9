//! Bad paths and files given to `jobcell run` and `jobcell image`: one line naming the thing at
//! fault, exit 125, and nothing made on the host. Needs root; without it each test prints
//! SKIPPED.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// Every directory named `name` at the top of /sys/fs/cgroup or of one of its hierarchies.
fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let top = Path::new("/sys/fs/cgroup");
    if top.join(name).exists() {
        found.push(top.join(name));
    }
    for h in std::fs::read_dir(top).unwrap().flatten() {
        let p = h.path().join(name);
        if p.exists() {
            found.push(p);
        }
    }
    found
}

#[test]
fn a_cgroup_parent_with_dot_dot_is_refused_before_anything_is_made() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("cgparent");
    let name = unique("jobcellescape");
    for parent in [
        format!("/../{name}"),
        format!("jobcell/../../{name}"),
        format!("/sys/fs/cgroup/unified/../{name}"),
    ] {
        let out = Job::new(&t.base())
            .opt("--cgroup-parent")
            .opt(&parent)
            .run(&["/bin/true"]);
        let made = cgroup_dirs_named(&name);
        // Whatever happened, leave nothing behind (a refused parent made nothing to remove).
        for d in &made {
            let _ = std::fs::read_dir(d).map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .for_each(|e| drop(std::fs::remove_dir(e.path())))
            });
            let _ = std::fs::remove_dir(d);
        }
        assert!(made.is_empty(), "{parent}: made {made:?}\n{out:?}");
        out.expect(125);
        assert_eq!(
            out.stderr.trim(),
            format!("jobcell: --cgroup-parent {parent}: `..` would leave the cgroup hierarchy"),
        );
    }
    t.assert_base_empty();
}

#[test]
fn a_scratch_base_whose_parent_is_missing_is_refused_not_made() {
    if skip_unless_root() {
        return;
    }
    let top = PathBuf::from("/").join(unique("jobcell-nonexistent"));
    let base = top.join("base");
    let out = Job::new(&base).run(&["/bin/true"]);
    let made = top.exists();
    let _ = std::fs::remove_dir(&base);
    let _ = std::fs::remove_dir(&top);
    assert!(!made, "{} was made: {out:?}", top.display());
    out.expect(125);
    assert_eq!(
        out.stderr.trim(),
        format!(
            "jobcell: --scratch-base {}: {} does not exist (jobcell makes only the last directory)",
            base.display(),
            top.display()
        )
    );
    // Its last directory alone is made, as before.
    let t = TestDir::new("scratchbase");
    Job::new(&t.path().join("fresh"))
        .run(&["/bin/true"])
        .expect(0);
    assert!(t.path().join("fresh").is_dir());
}

#[test]
fn a_garbage_archive_is_refused_in_one_printable_line() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("garbage");
    // Bytes a tar reader quotes back: a header full of control and non-UTF-8 bytes.
    let mut junk: Vec<u8> = (0..3000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    junk[148..157].copy_from_slice(b"\x05\xef\x1b[31m\n\x01");
    let archive = t.path().join("garbage.tar");
    std::fs::write(&archive, &junk).unwrap();
    let state = t.path().join("state");
    let out = std::process::Command::new(JOBCELL)
        .args(["image", "add", "--state-dir"])
        .arg(&state)
        .arg("junk")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8(out.stderr).expect("UTF-8");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.starts_with("jobcell: image add junk: "), "{err:?}");
    assert!(
        err.trim_end()
            .chars()
            .all(|c| !c.is_control() && c != '\u{fffd}'),
        "{err:?}"
    );
    let ls = std::process::Command::new(JOBCELL)
        .args(["image", "ls", "--state-dir"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("junk"));
}

#[test]
fn a_config_error_names_the_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let cfg = t.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[paths]\nstate_dir = \"/x\"\n\n[run]\ngrace_secs = \"ten\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(JOBCELL)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("jobcell: config {}:5: ", cfg.display())),
        "{err}"
    );
}
