//! `jobcell submit --dry-run [--json] FILE|-`: the jobs a submit description would queue.

use std::io::Write;
use std::process::{Command, Stdio};

fn jobcell() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jobcell"))
}

fn run_stdin(args: &[&str], stdin: &str, cwd: &std::path::Path) -> std::process::Output {
    let mut child = jobcell()
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn dry_run_json_lists_every_job() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.in"), "").unwrap();
    std::fs::write(dir.path().join("b.in"), "").unwrap();
    std::fs::write(
        dir.path().join("job.sub"),
        "executable = run.sh\narguments = \"--file $(Item) 'two words'\"\n\
         environment = \"A=1 B='x y'\"\nrequest_memory = 2G\nrequest_disk = 1G\nrequest_cpus = 2\n\
         output = out.$(Process)\n+Project = \"p\"\njobcell_image = alma9\nhold = true\n\
         queue matching *.in\n",
    )
    .unwrap();
    let out = jobcell()
        .args(["submit", "--dry-run", "--json", "job.sub"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    let cwd = dir.path().canonicalize().unwrap();
    let cwd = cwd.to_str().unwrap();
    let j = &jobs[1];
    assert_eq!(j["proc_id"], 1);
    assert_eq!(j["executable"], format!("{cwd}/run.sh"));
    assert_eq!(
        j["argv"],
        serde_json::json!([format!("{cwd}/run.sh"), "--file", "b.in", "two words"])
    );
    assert_eq!(j["environment"], serde_json::json!({"A": "1", "B": "x y"}));
    assert_eq!(j["request_memory"], 2048);
    assert_eq!(j["request_disk"], 1048576);
    assert_eq!(j["request_cpus"], 2.0);
    assert_eq!(j["output"], format!("{cwd}/out.1"));
    assert_eq!(j["held"], true);
    assert_eq!(j["image"], "alma9");
    assert_eq!(j["custom_attributes"]["Project"], "p");
}

#[test]
fn dry_run_from_stdin_prints_classad_form() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_stdin(
        &["submit", "--dry-run", "-"],
        "executable = /bin/echo\narguments = a b\nqueue 2\n",
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("1.1\n"), "{text}");
    assert!(
        text.contains("Cmd = \"/bin/echo\"\nArgs = \"a b\""),
        "{text}"
    );
    assert!(
        text.ends_with("2 job(s) dry-run to cluster 1 (nothing was queued).\n"),
        "{text}"
    );
}

#[test]
fn malformed_file_is_one_line_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        (
            "executable = /bin/echo\narguments = \"a\nqueue\n",
            "<stdin>: line 2: arguments",
        ),
        (
            "executable = /bin/echo\nrequest_memory = 2X\nqueue\n",
            "<stdin>: line 2: request_memory",
        ),
        ("executable = /bin/echo\n", "<stdin>: no queue statement"),
        (
            "executable = /bin/echo\nuniverse = docker\nqueue\n",
            "<stdin>: line 2: universe 'docker'",
        ),
    ] {
        let out = run_stdin(&["submit", "--dry-run", "--json", "-"], text, dir.path());
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty(), "nothing is printed as queued");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("jobcell: ") && err.contains(needle),
            "{err}"
        );
    }
    let out = jobcell()
        .args(["submit", "--dry-run", "missing.sub"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.sub"));
}

#[test]
fn warnings_name_the_line_and_do_not_stop_the_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_stdin(
        &["submit", "--dry-run", "--json", "-"],
        "executable = /bin/echo\nrank = Memory > 10\nqueue\n",
        dir.path(),
    );
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("warning: <stdin>: line 2: 'rank'"), "{err}");
    assert!(!err.contains("not a file"), "{err}");
}

/// condor_submit refuses an executable it could not send; so does `jobcell submit`, naming the
/// file and the `executable` line, unless the program is the node's or the image's.
#[test]
fn a_missing_or_unrunnable_executable_is_refused_at_its_line() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data.txt"), "not a program\n").unwrap();
    std::fs::create_dir(dir.path().join("adir")).unwrap();
    let cwd = dir.path().canonicalize().unwrap();
    for (exe, why) in [
        ("./missing", "No such file or directory"),
        ("data.txt", "not executable by you"),
        ("adir", "not a regular file"),
    ] {
        let out = run_stdin(
            &["submit", "--dry-run", "-"],
            &format!("universe = vanilla\nexecutable = {exe}\nqueue\n"),
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(125), "{exe}");
        assert!(out.stdout.is_empty(), "{exe}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            err.trim_end(),
            format!(
                "jobcell: <stdin>: line 2: executable {}/{exe}: {why}",
                cwd.display()
            ),
            "{exe}"
        );
    }
    // A program already on the node, an image's, and a runnable one of the submitter's pass.
    std::fs::set_permissions(
        dir.path().join("data.txt"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    for text in [
        "executable = /opt/nowhere/prog\ntransfer_executable = false\nqueue\n",
        "executable = /in/the/image\njobcell_image = alma9\nqueue\n",
        "executable = data.txt\nqueue\n",
    ] {
        let out = run_stdin(&["submit", "--dry-run", "-"], text, dir.path());
        assert!(
            out.status.success(),
            "{text}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn an_unreadable_input_file_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "executable = /bin/true\n\ninput = /nonexistent/in.$(Process)\nqueue\n",
            "<stdin>: line 3: input /nonexistent/in.0: ",
        ),
        (
            "executable = /bin/true\ntransfer_input_files = /nonexistent/x\nqueue\n",
            "<stdin>: line 2: transfer_input_files: /nonexistent/x: ",
        ),
    ] {
        let out = run_stdin(&["submit", "--dry-run", "-"], text, dir.path());
        assert_eq!(out.status.code(), Some(125));
        assert!(out.stdout.is_empty(), "nothing is printed as queued");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}
