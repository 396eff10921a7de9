//! Images from a real Podman: `podman:IMAGE` sources, and a job seeing exactly the tree
//! `podman run` shows for an image podman built with whiteouts and an opaque directory.
//!
//! Needs podman (apt-get install podman) and /bin/busybox (busybox-static); no registry or
//! network: the base is `podman import` of a busybox tree. Every podman call uses a storage
//! and config of the test's own (CONTAINERS_STORAGE_CONF / CONTAINERS_CONF), never the
//! host's store.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Lists a tree from inside it: one line per entry (path, type, mode, sha256 or link target).
/// Runs under the image's own busybox sh as nobody (a job never runs as root), the same in
/// podman and in the job.
const LIST: &str = r#"cd / && find bin data opq empty | sort | while IFS= read -r p; do
 if [ -L "$p" ]; then echo "$p l $(readlink "$p")";
 elif [ -f "$p" ]; then echo "$p f $(stat -c '%a %u %g' "$p") $(sha256sum "$p" | cut -d' ' -f1)";
 elif [ -d "$p" ]; then echo "$p d $(stat -c '%a %u %g' "$p")";
 else echo "$p other"; fi; done
[ data/hard -ef data/keep/f ] && echo "data/hard is data/keep/f""#;

/// Three layers over the base: files and dirs removed (whiteouts), a dir removed and made
/// again (an opaque dir in the overlay driver's layer), a file turned into a dir and back,
/// modes changed, a hardlink, symlinks.
const CONTAINERFILE: &str = r#"FROM localhost/jc-base:1
RUN /bin/busybox --install -s /bin && mkdir -p /data/keep /data/gone /opq/sub /data/becomes-file \
 && echo keep > /data/keep/f && echo gone > /data/gone/f && echo old > /opq/sub/old \
 && ln -s ../data/keep/f /data/link && chmod 604 /data/keep/f && echo m > /data/mode \
 && chmod 704 /data/mode && echo f > /data/becomes-dir && ln /data/keep/f /data/hard
RUN rm -rf /data/gone /data/link && echo new > /data/keep/f2 && rm -rf /opq && mkdir -p /opq \
 && echo fresh > /opq/new && chmod 705 /opq && chmod 755 /data/mode && rm /data/becomes-dir \
 && mkdir /data/becomes-dir && echo in > /data/becomes-dir/x && rmdir /data/becomes-file \
 && echo file > /data/becomes-file
RUN rm /opq/new && echo replaced > /opq/new2 && ln -s /opq/new2 /data/link2 && mkdir /empty
"#;

/// A podman with a store of its own under `dir`.
struct Podman {
    dir: TestDir,
}

impl Podman {
    /// None (after saying why, loudly) when podman or busybox is missing.
    fn new(tag: &str) -> Option<Podman> {
        let ok = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok || !Path::new("/bin/busybox").exists() {
            eprintln!(
                "SKIPPED: needs podman and /bin/busybox (apt-get install podman busybox-static)"
            );
            return None;
        }
        let dir = TestDir::new(tag);
        let p = dir.path();
        std::fs::write(
            p.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
                p.display()
            ),
        )
        .unwrap();
        // Every state dir of podman's is the test's own: `system reset` at the end then
        // removes only what this test made.
        std::fs::write(
            p.join("containers.conf"),
            format!(
                "[engine]\nevents_logger = \"none\"\ncgroup_manager = \"cgroupfs\"\n\
                 tmp_dir = \"{0}/tmp\"\nstatic_dir = \"{0}/static\"\nvolume_path = \"{0}/volumes\"\n\
                 [network]\nnetwork_config_dir = \"{0}/networks\"\n",
                p.display()
            ),
        )
        .unwrap();
        Some(Podman { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The environment that points podman (and a `podman:` source) at this store.
    fn env(&self, c: &mut Command) {
        c.env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"));
    }

    fn try_run(&self, args: &[&str]) -> Output {
        let mut c = Command::new("podman");
        self.env(&mut c);
        c.args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn run(&self, args: &[&str]) -> String {
        let o = self.try_run(args);
        assert!(o.status.success(), "podman {args:?}: {}", text(&o.stderr));
        text(&o.stdout)
    }

    /// `localhost/jc-base:1` from a busybox tree, then `localhost/jc-app:1` built on it.
    fn build_app(&self) {
        let tree = self.path("tree");
        let tar = self.path("base.tar");
        pack_busybox_tree(&tree, &["sh"], &tar);
        self.run(&["import", tar.to_str().unwrap(), "localhost/jc-base:1"]);
        let ctx = self.path("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Containerfile"), CONTAINERFILE).unwrap();
        // chroot isolation: RUN steps need no OCI runtime, cgroups or network.
        self.run(&[
            "build",
            "--isolation",
            "chroot",
            "--pull=never",
            "-t",
            "localhost/jc-app:1",
            ctx.to_str().unwrap(),
        ]);
    }

    /// What a container of `image` sees, listed by `LIST`: from `podman run`, or where this
    /// host's runtime cannot start containers (crun refuses a cgroup v1/v2 hybrid), from the
    /// image rootfs podman mounts for a container (the tree `podman run` pivots into).
    fn seen_by_container(&self, image: &str) -> String {
        let o = self.try_run(&[
            "run",
            "--rm",
            "--pull=never",
            "--network",
            "none",
            "--cgroups=disabled",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            "--user",
            "65534:65534",
            image,
            "/bin/sh",
            "-c",
            LIST,
        ]);
        if o.status.success() {
            return text(&o.stdout);
        }
        eprintln!(
            "NOTE: podman run cannot start a container here ({}); listing the rootfs podman \
             mounts for it instead",
            text(&o.stderr).trim()
        );
        let mnt = self.run(&["image", "mount", image]).trim().to_string();
        let o = Command::new("chroot")
            .args(["--userspec=65534:65534", &mnt, "/bin/sh", "-c", LIST])
            .output()
            .unwrap();
        self.run(&["image", "unmount", image]);
        assert!(o.status.success(), "chroot: {}", text(&o.stderr));
        text(&o.stdout)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Unmounts and removes everything in this store (the overlay driver's mounts too).
        let _ = self.try_run(&["system", "reset", "--force"]);
    }
}

/// A jobcell image store beside the podman one.
fn jobcell(p: &Podman, args: &[&str]) -> Output {
    let mut c = Command::new(JOBCELL);
    p.env(&mut c);
    c.args(args)
        .arg("--state-dir")
        .arg(p.path("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn add_ok(p: &Podman, name: &str, source: &str) -> String {
    let o = jobcell(p, &["image", "add", name, source]);
    assert!(
        o.status.success(),
        "image add {source}: {}",
        text(&o.stderr)
    );
    text(&o.stdout).trim().to_string()
}

/// A listing as the store keeps it: directories without write bits.
fn without_dir_write_bits(listing: &str) -> String {
    let mut out = String::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 5 && f[1] == "d" {
            let mode = u32::from_str_radix(f[2], 8).unwrap() & !0o222;
            out.push_str(&format!("{} d {mode:o} {} {}\n", f[0], f[3], f[4]));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn seen_by_job(p: &Podman, image: &str) -> String {
    let o = Job::new(&p.dir.base())
        .opts(["--state-dir", p.path("state").to_str().unwrap()])
        .opts(["--image", image, "--user", "65534"])
        .run(&["/bin/sh", "-c", LIST]);
    o.expect(0);
    o.stdout.clone()
}

/// An image podman built (three layers over an imported base: whiteouts, an opaque dir, a
/// file turned into a dir and back, mode changes, a hardlink) is seen by a job
/// exactly as by a podman container: every path, type, mode, link count, symlink target and
/// file digest, but for the one documented difference: the store's directories have no write
/// bits (its trees are immutable; a job's image view is read-only anyway). Taken straight
/// from the store (`podman:`), from an oci-archive and from a docker-archive of the same
/// image, it is one tree.
#[test]
fn a_job_sees_what_podman_run_sees() {
    if skip_unless_root() {
        return;
    }
    let Some(p) = Podman::new("podman-view") else {
        return;
    };
    p.build_app();
    // The layers really hold whiteouts and an opaque dir.
    let oci = p.path("app.oci.tar");
    p.run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "localhost/jc-app:1",
    ]);
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "d=$(mktemp -d) && tar -C $d -xf {} && for b in $d/blobs/sha256/*; do \
             tar -tzf $b 2>/dev/null || tar -tf $b 2>/dev/null; done; rm -rf $d",
            oci.display()
        ))
        .output()
        .unwrap();
    let members = text(&listing.stdout);
    assert!(members.contains("data/.wh.gone"), "{members}");
    assert!(members.contains("opq/.wh..wh..opq"), "{members}");

    let want = p.seen_by_container("localhost/jc-app:1");
    assert!(want.lines().count() > 100, "{want}");
    assert!(
        want.contains("data/hard f 604 0 0 ") && want.contains("data/hard is data/keep/f"),
        "{want}"
    );
    let id = add_ok(&p, "app", "podman:localhost/jc-app:1");
    assert_eq!(seen_by_job(&p, "app"), without_dir_write_bits(&want));

    // The docker-archive of the same image is the same tree.
    let docker = p.path("app.docker.tar");
    p.run(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        docker.to_str().unwrap(),
        "localhost/jc-app:1",
    ]);
    assert_eq!(add_ok(&p, "app-docker", docker.to_str().unwrap()), id);
    assert_eq!(add_ok(&p, "app-oci", oci.to_str().unwrap()), id);
}

/// `podman:`/`docker:` failures are one line naming the tool and image, and register nothing.
#[test]
fn a_missing_tool_or_image_is_one_line() {
    if skip_unless_root() {
        return;
    }
    let Some(p) = Podman::new("podman-missing") else {
        return;
    };
    let cases = [
        (
            "podman:localhost/nope:1",
            "podman:localhost/nope:1: `podman save",
        ),
        ("podman:--all", "podman:--all: not an image reference"),
    ];
    for (source, want) in cases {
        let o = jobcell(&p, &["image", "add", "x", source]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{source}: {err}");
        assert!(err.contains(want), "{source}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{source}: {err}");
    }
    // A tool that is not installed (PATH without it).
    let mut c = Command::new(JOBCELL);
    c.args(["image", "add", "x", "docker:alpine:3", "--state-dir"])
        .arg(p.path("state"))
        .env("PATH", "/nonexistent");
    let o = c.output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("docker:alpine:3: docker is not installed"),
        "{err}"
    );
    let ls = text(&jobcell(&p, &["image", "ls"]).stdout);
    assert!(!ls.contains(" x "), "{ls}");
}

/// The tool runs as the caller: another user pointing `podman:` at root's store (its
/// storage.conf in their environment) gets nothing out of it, while root, with the same
/// command, imports the image.
#[test]
fn another_user_cannot_import_from_roots_store() {
    if skip_unless_root() {
        return;
    }
    let Some(p) = Podman::new("podman-owner") else {
        return;
    };
    p.build_app();
    for d in ["graph", "run"] {
        std::fs::set_permissions(
            p.path(d),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
    }
    std::fs::set_permissions(
        p.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let theirs = p.path("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
    let mut c = Command::new(JOBCELL);
    p.env(&mut c);
    c.args(["image", "add", "stolen", "podman:localhost/jc-app:1"])
        .arg("--state-dir")
        .arg(theirs.join("state"))
        .env("HOME", &theirs)
        .env_remove("XDG_RUNTIME_DIR")
        .current_dir(&theirs);
    std::os::unix::process::CommandExt::uid(&mut c, 4242);
    std::os::unix::process::CommandExt::gid(&mut c, 4242);
    let o = c.output().unwrap();
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "another user imported root's image: {err}"
    );
    assert!(err.contains("podman:localhost/jc-app:1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Nothing of the image reached the user's store.
    let ls = Command::new(JOBCELL)
        .args(["image", "ls", "--state-dir"])
        .arg(theirs.join("state"))
        .output()
        .unwrap();
    assert!(!text(&ls.stdout).contains("stolen"), "{}", text(&ls.stdout));
    // Root, same environment, same command: the store is there and readable to its owner.
    add_ok(&p, "mine", "podman:localhost/jc-app:1");
}
