//! What a daemon job may name and see: bind sources are opened with their submitter's rights
//! (so a user binds only what they could open themself), and the daemon's state dir is hidden
//! in every job. The attacks run as real unprivileged users against a real daemon. Needs
//! root; without it each test prints SKIPPED.

mod daemon_harness;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use daemon_harness::*;
use jobcell_node::types::State;

const T: Duration = Duration::from_secs(60);

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn ended(j: &jobcell_node::types::JobInfo) -> bool {
    matches!(j.state, State::Held | State::Completed | State::Failed)
}

#[test]
fn a_user_cannot_bind_a_file_of_another_users_home_directly_or_through_a_symlink() {
    let test = "a_user_cannot_bind_a_file_of_another_users_home_directly_or_through_a_symlink";
    if !root_or_skip(test) {
        return;
    }
    let Some((attacker, victim)) = test_users_or_skip(test) else {
        return;
    };
    let _g = serial();
    let d = Daemon::start(&[]);
    let work = TempDir::itest();
    let home = work.path().join("home-b");
    std::fs::create_dir(&home).unwrap();
    let secret = home.join("secret");
    std::fs::write(&secret, "secret-of-b\n").unwrap();
    chmod(&secret, 0o644);
    std::os::unix::fs::chown(&secret, Some(victim.0), Some(victim.1)).unwrap();
    std::os::unix::fs::chown(&home, Some(victim.0), Some(victim.1)).unwrap();
    chmod(&home, 0o700);
    // The attacker's own dir with a symlink to the secret (root follows it; they cannot).
    let lair = work.path().join("lair-a");
    std::fs::create_dir(&lair).unwrap();
    let link = lair.join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(attacker.0), Some(attacker.1)).unwrap();
    std::os::unix::fs::chown(&lair, Some(attacker.0), Some(attacker.1)).unwrap();
    // Control: what the attacker may read binds (the job runs as its submitter).
    let mine = lair.join("mine");
    std::fs::write(&mine, "file-of-a\n").unwrap();
    let submit = |src: &Path| {
        let bind = format!("{}:/tmp/loot", src.display());
        let o = d.cli_as(
            Some(attacker),
            &[
                "submit",
                "-q",
                "--ro-bind",
                &bind,
                "--",
                "/bin/cat",
                "/tmp/loot",
            ],
        );
        assert!(o.status.success(), "{}", err(&o));
        let id = ids(&o)[0];
        let j = d.wait_for(id, T, ended);
        let o = d.cli_as(Some(attacker), &["output", &id.to_string()]);
        (j, out(&o))
    };
    let (j, output) = submit(&mine);
    assert_eq!(j.state, State::Completed, "{j:?}");
    assert_eq!(output, "file-of-a\n");
    for src in [&secret, &link] {
        let (j, output) = submit(src);
        assert!(
            !output.contains("secret-of-b"),
            "{}: the job read it",
            src.display()
        );
        assert_eq!(j.state, State::Held, "{}: {j:?}", src.display());
        let r = j.hold_reason.unwrap_or_default();
        let src_text = src.display().to_string();
        assert!(
            r.contains(&src_text) && r.contains("jobcell-test-a"),
            "the reason names the source and the user: {r}"
        );
        assert!(r.contains("Permission denied"), "{r}");
    }
    assert_eq!(std::fs::read_dir(&d.scratch).unwrap().count(), 0);
}

#[test]
fn the_daemons_state_dir_is_hidden_in_its_jobs() {
    let test = "the_daemons_state_dir_is_hidden_in_its_jobs";
    if !root_or_skip(test) {
        return;
    }
    let Some(user) = test_user_or_skip(test, "jobcell-test-a") else {
        return;
    };
    let _g = serial();
    // Under /var/lib/jobcell-itest, not /tmp: a host /tmp is private in jobs anyway.
    let d = Daemon::start_in(TempDir::itest(), &[]);
    // Whatever the state dir's own permissions, the job must not find it.
    chmod(&d.state, 0o755);
    chmod(&d.state.join("jobs"), 0o755);
    let s = d.state.display();
    let script = format!(
        "test -e {s}/state.db && echo db=visible; ls -A {s}/jobs | sed 's/^/job-dir=/'; echo end"
    );
    let o = d.cli_as(
        Some(user),
        &["submit", "-q", "--", "/bin/sh", "-c", &script],
    );
    assert!(o.status.success(), "{}", err(&o));
    let id = ids(&o)[0];
    let j = d.wait_for(id, T, ended);
    assert_eq!(j.state, State::Completed, "{j:?}");
    let o = d.cli_as(Some(user), &["output", &id.to_string()]);
    let seen = out(&o);
    assert!(seen.ends_with("end\n"), "{seen}");
    assert!(!seen.contains("db=visible"), "{seen}");
    assert!(!seen.contains("job-dir="), "{seen}");
}
