//! `jobcell man DIR` and `jobcell completions SHELL`: a page and completions for every
//! subcommand `jobcell --help` lists, and pages that `man` renders.

use std::process::Command;

const JOBCELL: &str = env!("CARGO_BIN_EXE_jobcell");

/// The subcommands `jobcell --help` lists (its "Commands:" section), without `help`.
fn subcommands() -> Vec<String> {
    let out = Command::new(JOBCELL).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let names: Vec<String> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|n| n != "help")
        .collect();
    assert!(
        names.len() > 10 && names.iter().any(|n| n == "run"),
        "{text}"
    );
    names
}

/// Text without the overstrikes (`N\x08N`) groff uses for bold on a terminal-less output.
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::new();
    for c in text.chars() {
        if c == '\x08' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn man_writes_a_page_per_subcommand_that_man_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(JOBCELL)
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages = vec!["jobcell".to_string(), "jobcell-image-add".to_string()];
    pages.extend(subcommands().iter().map(|s| format!("jobcell-{s}")));
    let have_man = Command::new("man").arg("--version").output().is_ok();
    if !have_man {
        eprintln!("SKIPPED (rendering only): no `man` on this machine (test.sh installs man-db)");
    }
    for page in &pages {
        let path = dir.path().join(format!("{page}.1"));
        assert!(path.is_file(), "{} missing", path.display());
        if have_man {
            let out = Command::new("man")
                .arg("-l")
                .arg(&path)
                .env("MANWIDTH", "100")
                .output()
                .unwrap();
            let text = plain(&String::from_utf8_lossy(&out.stdout));
            assert!(out.status.success(), "{page}: {out:?}");
            assert!(
                text.contains("NAME") && text.contains("SYNOPSIS"),
                "{page}: {text}"
            );
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains("warning"),
                "{page}: {out:?}"
            );
        }
    }
    // No page for the hidden internal mode.
    assert!(!dir.path().join("jobcell-selftest-probe.1").exists());
    // A missing directory is one line, and nothing is written.
    let out = Command::new(JOBCELL)
        .args(["man", "/nonexistent/man1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "jobcell: /nonexistent/man1: not a directory (create it first)"
    );
}

#[test]
fn completions_for_each_shell_know_every_subcommand() {
    let subs = subcommands();
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(JOBCELL)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8(out.stdout).unwrap();
        for s in &subs {
            assert!(script.contains(s.as_str()), "{shell}: no {s}");
        }
        assert!(script.contains("--chdir"), "{shell}");
    }
    // bash loads it and registers the completion for `jobcell`.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <({JOBCELL} completions bash) && complete -p jobcell"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("jobcell"));
    let out = Command::new(JOBCELL)
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
}
