//! `jobcell image ...` end to end through the real binary.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("jobcell-image-cli")
            .tempdir()
            .unwrap();
        // Readable by `nobody` for the other-user checks.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Env { tmp }
    }
    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jobcell"));
        c.arg("image")
            .args(args)
            .arg("--state-dir")
            .arg(self.state());
        // No node config from the host.
        c.arg("--config").arg(self.tmp.path().join("config.toml"));
        c
    }
    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }
    fn staging_left(&self) -> Vec<String> {
        std::fs::read_dir(self.state().join("images"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(".staging"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(self.tmp.path())
            .status();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tarball(dir: &Path, files: &[(&str, &[u8], u32)]) -> PathBuf {
    let p = dir.join("img.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&p).unwrap());
    for (name, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.finish().unwrap();
    p
}

fn config(env: &Env) {
    std::fs::write(env.tmp.path().join("config.toml"), "").unwrap();
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn add_ls_show_rm() {
    let env = Env::new();
    config(&env);
    let t = tarball(
        env.tmp.path(),
        &[
            ("etc/os-release", b"ID=cli\n", 0o644),
            ("bin/su", b"x", 0o4755),
        ],
    );
    let o = env.run(&["add", "cli", t.to_str().unwrap(), "--public"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    // stderr is not a terminal here: a summary line, no progress bar escape codes
    assert!(!text(&o.stderr).contains('\r'), "progress bar on a non-tty");

    let o = env.run(&["ls"]);
    let out = text(&o.stdout);
    assert!(out.starts_with("ID "), "{out}");
    let row = out.lines().nth(1).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cols[..4],
        &[&id[..12], "cli", "public", "root"][..] as &[&str],
        "{row}"
    );
    assert_eq!(*cols.last().unwrap(), "1", "setuid-stripped count: {row}");

    let o = env.run(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "cli");
    assert_eq!(v[0]["audit"]["setuid_stripped"][0]["path"], "/bin/su");

    let o = env.run(&["show", &id[..10]]);
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("sha256:{id}")) && out.contains("/bin/su"),
        "{out}"
    );
    let o = env.run(&["show", "cli", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["in_use"], false);

    // errors: one line, exit 125
    let o = env.run(&["show", "nope"]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        text(&o.stderr).trim(),
        "jobcell: no image \"nope\" visible to uid 0; available: cli"
    );
    let o = env.run(&["add", "cli", t.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(text(&o.stderr).lines().count(), 1);

    let o = env.run(&["rm", "cli"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&env.run(&["ls"]).stdout).lines().count(), 1);
}

#[test]
fn add_from_stdin_and_bad_archive() {
    let env = Env::new();
    config(&env);
    let t = tarball(env.tmp.path(), &[("etc/os-release", b"ID=stdin\n", 0o644)]);
    let mut c = env.cmd(&["add", "fromstdin", "-"]);
    c.stdin(std::fs::File::open(&t).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    let junk = env.tmp.path().join("junk.tar.gz");
    std::fs::write(&junk, b"definitely not gzip nor tar".repeat(30)).unwrap();
    let o = env.run(&["add", "junk", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("not a tar archive"),
        "{}",
        text(&o.stderr)
    );
    assert!(env.staging_left().is_empty());
    let o = env.run(&["add", "big", t.to_str().unwrap(), "--max-size", "2"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("--max-size"),
        "{}",
        text(&o.stderr)
    );
    let o = env.run(&["add", "x", t.to_str().unwrap(), "--max-size", "lots"]);
    assert_eq!(o.status.code(), Some(125));
    // The same size syntax as --memory: decimals and iB units.
    for size in ["1.5G", "0.5MiB", "64 kb"] {
        let o = env.run(&["add", "sized", t.to_str().unwrap(), "--max-size", size]);
        assert!(o.status.success(), "--max-size {size}: {}", text(&o.stderr));
        assert!(env.run(&["rm", "sized"]).status.success());
    }
}

#[test]
fn sigint_mid_import_leaves_nothing() {
    let env = Env::new();
    config(&env);
    // A stream that stalls after the first entries: the import is mid-way when SIGINT lands.
    let mut c = env.cmd(&["add", "slow", "-"]);
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..50 {
        let mut h = tar::Header::new_gnu();
        h.set_path(format!("f{i}")).unwrap();
        h.set_size(4096);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, &[0u8; 4096][..]).unwrap();
    }
    let mut data = b.into_inner().unwrap();
    data.truncate(50 * (512 + 4096)); // drop the end-of-archive blocks: more seems to follow
    stdin.write_all(&data).unwrap();
    stdin.flush().unwrap();
    // Wait until the staging dir exists, then interrupt.
    let t0 = std::time::Instant::now();
    while env.staging_left().is_empty() && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!env.staging_left().is_empty(), "import never started");
    std::thread::sleep(std::time::Duration::from_millis(100));
    // SAFETY: kill takes integers only; the pid is this test's own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("interrupted"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        env.staging_left().is_empty(),
        "staging dir left: {:?}",
        env.staging_left()
    );
    assert_eq!(
        text(&env.run(&["ls"]).stdout).lines().count(),
        1,
        "something registered"
    );
}

#[test]
fn private_image_invisible_to_nobody() {
    if !is_root() {
        eprintln!("SKIPPED: private_image_invisible_to_nobody needs root (to run as nobody)");
        return;
    }
    let env = Env::new();
    config(&env);
    let t = tarball(env.tmp.path(), &[("etc/os-release", b"ID=p\n", 0o644)]);
    assert!(env
        .run(&["add", "secret", t.to_str().unwrap()])
        .status
        .success());
    let t2 = tarball(env.tmp.path(), &[("etc/os-release", b"ID=q\n", 0o644)]);
    assert!(env
        .run(&["add", "open", t2.to_str().unwrap(), "--public"])
        .status
        .success());
    let as_nobody = |args: &[&str]| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        let inner = env.cmd(args);
        c.arg(inner.get_program()).args(inner.get_args());
        c.stdin(Stdio::null()).output().unwrap()
    };
    let o = as_nobody(&["ls"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("open") && !out.contains("secret"), "{out}");
    let o = as_nobody(&["show", "secret"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        text(&o.stderr).contains("no image \"secret\" visible to uid 65534; available: open"),
        "{}",
        text(&o.stderr)
    );
    let o = as_nobody(&["rm", "open"]);
    assert_eq!(o.status.code(), Some(125));
    // Refused either as not the owner or, first, for the state dir being root's.
    assert!(
        text(&o.stderr).to_lowercase().contains("permission denied"),
        "{}",
        text(&o.stderr)
    );
    // root still sees both
    let out = text(&env.run(&["ls"]).stdout);
    assert!(out.contains("open") && out.contains("secret"));
}

/// A .tar.gz of `files` (name, size in bytes of zeros), compressed by the system's gzip.
fn gzip_bomb(dir: &Path, name: &str, files: &[(String, u64)]) -> PathBuf {
    let p = dir.join(name);
    let mut gz = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&p).unwrap())
        .spawn()
        .expect("gzip is needed to make the test's archive");
    {
        let mut b = tar::Builder::new(gz.stdin.take().unwrap());
        for (name, size) in files {
            let mut h = tar::Header::new_gnu();
            h.set_path(name).unwrap();
            h.set_size(*size);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append(&h, std::io::Read::take(std::io::repeat(0), *size))
                .unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
    }
    assert!(gz.wait().unwrap().success());
    p
}

/// The node's `[import]` bounds hold for root too: a 600 KiB gzip bomb (600 MiB of zeros)
/// and an archive of too many entries are refused with one line naming the key, and leave
/// no staging dir, no tree and no row.
#[test]
fn import_bounds_stop_a_gzip_bomb_and_an_entry_flood() {
    let env = Env::new();
    std::fs::write(
        env.tmp.path().join("config.toml"),
        "[import]\nmax_unpacked_size = \"64M\"\nmax_entries = 1000\n",
    )
    .unwrap();
    let bomb = gzip_bomb(
        env.tmp.path(),
        "bomb.tar.gz",
        &[("zeros".into(), 600 << 20)],
    );
    let packed = std::fs::metadata(&bomb).unwrap().len();
    assert!(packed < 1 << 20, "the bomb is {packed} bytes");
    let t = std::time::Instant::now();
    let o = env.run(&["add", "bomb", bomb.to_str().unwrap()]);
    let e = text(&o.stderr);
    eprintln!(
        "{packed}-byte bomb: exit {:?} after {:.1} s, stderr: {}",
        o.status.code(),
        t.elapsed().as_secs_f64(),
        e.trim()
    );
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert_eq!(
        e.trim(),
        "jobcell: image add bomb: unpacked size exceeds 64.0 MiB (import.max_unpacked_size) at entry \"zeros\""
    );
    let flood: Vec<(String, u64)> = (0..1500).map(|i| (format!("f{i}"), 0)).collect();
    let many = gzip_bomb(env.tmp.path(), "many.tar.gz", &flood);
    let o = env.run(&["add", "many", many.to_str().unwrap()]);
    let e = text(&o.stderr);
    eprintln!(
        "1500 entries: exit {:?}, stderr: {}",
        o.status.code(),
        e.trim()
    );
    assert_eq!(o.status.code(), Some(125), "{e}");
    assert_eq!(
        e.trim(),
        "jobcell: image add many: more than 1000 entries (import.max_entries) at entry \"f1000\""
    );
    assert!(env.staging_left().is_empty(), "{:?}", env.staging_left());
    let o = env.run(&["ls", "--json"]);
    assert_eq!(text(&o.stdout).trim(), "[]");
    // The store's bucket dirs may exist; no image tree is in any of them.
    let mut trees = Vec::new();
    for b in std::fs::read_dir(env.state().join("images")).unwrap() {
        let b = b.unwrap();
        let n = b.file_name().to_string_lossy().into_owned();
        if n.starts_with('.') || !b.file_type().unwrap().is_dir() {
            continue;
        }
        trees.extend(
            std::fs::read_dir(b.path())
                .unwrap()
                .map(|e| e.unwrap().path()),
        );
    }
    assert!(trees.is_empty(), "left in the images dir: {trees:?}");
    // --max-size on the command line is named as such.
    let o = env.run(&["add", "bomb", bomb.to_str().unwrap(), "--max-size", "1M"]);
    assert!(
        text(&o.stderr).contains("(--max-size)"),
        "{}",
        text(&o.stderr)
    );
}
