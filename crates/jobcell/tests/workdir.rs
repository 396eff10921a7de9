//! Where a `jobcell run` job starts (`--chdir`, else its scratch dir), how its command is
//! found (relative to the caller's directory) and the command given without `--`. Needs root;
//! without it each test prints SKIPPED.

mod common;

use common::*;

#[test]
fn chdir_starts_the_job_in_a_host_dir_and_a_relative_program_is_the_callers() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("chdir");
    let work = t.subdir("work", 0o777);
    std::fs::write(work.join("job.sh"), "#!/bin/sh\necho pwd=$(pwd) args=$*\n").unwrap();
    std::fs::set_permissions(
        work.join("job.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // No `--`: everything from the first word that is not an option is the command.
    let out = std::process::Command::new(JOBCELL)
        .arg("run")
        .arg("--scratch-base")
        .arg(t.base())
        .args([
            "--chdir",
            "work",
            "-u",
            "nobody",
            "./work/job.sh",
            "--memory",
            "x",
        ])
        .current_dir(t.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("pwd={} args=--memory x", work.display())
    );
    // Without --chdir: the job's own scratch dir.
    let out = Job::new(&t.base()).run(&["pwd"]);
    out.expect(0);
    assert!(
        out.stdout.starts_with(&t.base().display().to_string()),
        "{out:?}"
    );
    // A dir under /tmp, which is private in the job, is bound in.
    let tmp = TestDir::new_in(std::path::Path::new("/tmp"), "chdir");
    std::fs::write(tmp.path().join("mark"), "").unwrap();
    let out = Job::new(&t.base())
        .opt("--chdir")
        .opt(tmp.path())
        .run(&["ls"]);
    out.expect(0);
    assert_eq!(out.stdout.trim(), "mark");
    t.assert_base_empty();
}

#[test]
fn a_dir_the_job_user_cannot_enter_fails_the_job_instead_of_running_elsewhere() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("chdir-closed");
    let closed = t.subdir("closed", 0o700);
    let out = Job::new(&t.base())
        .opts(["-u", "nobody", "--chdir"])
        .opt(&closed)
        .run(&["pwd"]);
    out.expect(125);
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "jobcell: entering {}: Permission denied (os error 13)",
            closed.display()
        )
    );
    t.assert_base_empty();
}

#[test]
fn a_missing_dir_or_program_is_one_line_and_nothing_runs() {
    if skip_unless_root() {
        return;
    }
    let t = TestDir::new("chdir-bad");
    std::fs::write(t.path().join("plain"), "").unwrap();
    for (opts, argv, want) in [
        (
            vec!["--chdir", "/nonexistent/dir"],
            vec!["pwd"],
            "jobcell: --chdir /nonexistent/dir: No such file or directory".to_string(),
        ),
        (
            vec!["--chdir", "plain"],
            vec!["pwd"],
            "jobcell: --chdir plain: not a directory".to_string(),
        ),
        (
            vec![],
            vec!["./missing.sh"],
            "jobcell: command ./missing.sh: No such file or directory".to_string(),
        ),
        (
            vec![],
            vec!["./plain"],
            "jobcell: command ./plain: not executable by you".to_string(),
        ),
    ] {
        let out = Job::new(&t.base())
            .opts(&opts)
            .command(&argv)
            .current_dir(t.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(125), "{opts:?} {argv:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), want);
        assert!(out.stdout.is_empty());
    }
    assert!(!t.base().exists() || std::fs::read_dir(t.base()).unwrap().next().is_none());
}
