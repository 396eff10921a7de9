//! Container images: OCI layouts, oci-archives and docker-archives built byte by byte here
//! (tar + gzip + sha256), imported with `jobcell image add`, and run with `jobcell run`.

mod common;
mod daemon_harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::json;
use sha2::{Digest, Sha256};

const MT_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MT_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MT_LAYER_GZ: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// One entry of a layer tar.
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Exec(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A layer tarball; names are written raw into the header (so `..` can be tested).
fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        let (name, data, kind, mode): (&str, &[u8], tar::EntryType, u32) = match e {
            E::Dir(n) => (n, b"", tar::EntryType::Directory, 0o755),
            E::File(n, d) => (n, d, tar::EntryType::Regular, 0o644),
            E::Exec(n, d) => (n, d, tar::EntryType::Regular, 0o755),
            E::Symlink(n, t) => {
                h.set_link_name(t).unwrap();
                (n, b"", tar::EntryType::Symlink, 0o777)
            }
        };
        let raw = &mut h.as_old_mut().name;
        raw.fill(0);
        raw[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// busybox and the applets the tests use, as the first layer of an image.
fn busybox_layer() -> Option<Vec<u8>> {
    let bb = std::fs::read("/bin/busybox").ok()?;
    let mut es = vec![E::Dir("bin/"), E::Exec("bin/busybox", &bb)];
    let applets = [
        "sh", "cat", "ls", "find", "sort", "env", "pwd", "id", "echo",
    ];
    for a in applets {
        es.push(E::Symlink(
            Box::leak(format!("bin/{a}").into_boxed_str()),
            "busybox",
        ));
    }
    Some(layer(&es))
}

struct Blob {
    media_type: &'static str,
    data: Vec<u8>,
}

impl Blob {
    fn desc(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": format!("sha256:{}", sha(&self.data)), "size": self.data.len()})
    }
}

/// One image: its config's `config` object and its layers (already compressed or not).
struct Img {
    refname: Option<&'static str>,
    arch: &'static str,
    run: serde_json::Value,
    layers: Vec<Blob>,
}

impl Img {
    /// An amd64 image of `layers`, with no name and no run config.
    fn of_layers(layers: Vec<Blob>) -> Img {
        Img {
            refname: None,
            arch: "amd64",
            run: json!({}),
            layers,
        }
    }

    /// An image (see [`Img::of_layers`]) of the tar `lower` gzipped, then the tar `upper` as
    /// it is.
    fn gzipped_then_plain(lower: &[u8], upper: Vec<u8>) -> Img {
        Img::of_layers(vec![
            Blob {
                media_type: MT_LAYER_GZ,
                data: gz(lower),
            },
            Blob {
                media_type: MT_LAYER,
                data: upper,
            },
        ])
    }

    fn config(&self, diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": self.arch, "os": "linux", "config": self.run,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }
}

fn diff_id(b: &Blob) -> String {
    if b.data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&b.data[..]), &mut out)
            .unwrap();
        format!("sha256:{}", sha(&out))
    } else {
        format!("sha256:{}", sha(&b.data))
    }
}

/// Write an OCI image layout of `imgs` into `dir`; returns each image's (manifest, config)
/// blob, so a test can tamper with them.
fn oci_layout(dir: &Path, imgs: &[Img]) -> Vec<(Blob, Blob)> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let put = |b: &Blob| std::fs::write(blobs.join(sha(&b.data)), &b.data).unwrap();
    let mut index = Vec::new();
    let mut out = Vec::new();
    for img in imgs {
        let ids: Vec<String> = img.layers.iter().map(diff_id).collect();
        let config = Blob {
            media_type: MT_CONFIG,
            data: img.config(&ids),
        };
        let manifest = Blob {
            media_type: MT_MANIFEST,
            data: serde_json::to_vec(&json!({
                "schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config.desc(),
                "layers": img.layers.iter().map(Blob::desc).collect::<Vec<_>>(),
            }))
            .unwrap(),
        };
        img.layers.iter().for_each(put);
        put(&config);
        put(&manifest);
        let mut d = manifest.desc();
        d["platform"] = json!({"os": "linux", "architecture": img.arch});
        if let Some(r) = img.refname {
            d["annotations"] = json!({"org.opencontainers.image.ref.name": r});
        }
        index.push(d);
        out.push((manifest, config));
    }
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": index})).unwrap(),
    )
    .unwrap();
    out
}

/// A tar of the files under `dir` (an oci-archive of a layout), `oci-layout` first.
fn tar_dir(dir: &Path, out: &Path) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    b.append_path_with_name(dir.join("oci-layout"), "oci-layout")
        .unwrap();
    b.append_path_with_name(dir.join("index.json"), "index.json")
        .unwrap();
    let mut blobs: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    blobs.sort();
    for n in blobs {
        b.append_path_with_name(
            dir.join("blobs/sha256").join(&n),
            format!("blobs/sha256/{n}"),
        )
        .unwrap();
    }
    b.finish().unwrap();
}

/// A docker-archive as `podman save` writes it: `<hex>.tar` layers, `<hex>.json` config,
/// `manifest.json` last.
fn docker_archive(out: &Path, imgs: &[(Vec<&str>, &Img)]) {
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let add = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut manifest = Vec::new();
    for (tags, img) in imgs {
        let ids: Vec<String> = img.layers.iter().map(diff_id).collect();
        let config = img.config(&ids);
        let mut layers = Vec::new();
        for l in &img.layers {
            let n = format!("{}.tar", sha(&l.data));
            add(&mut b, &n, &l.data);
            layers.push(n);
        }
        let cn = format!("{}.json", sha(&config));
        add(&mut b, &cn, &config);
        manifest.push(json!({"Config": cn, "RepoTags": tags, "Layers": layers}));
    }
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.finish().unwrap();
}

struct Store {
    dir: TestDir,
}

impl Store {
    fn new(tag: &str) -> Store {
        Store {
            dir: TestDir::new(tag),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cli(&self, args: &[&str]) -> Output {
        let mut c = Command::new(JOBCELL);
        c.args(args).arg("--state-dir").arg(self.state());
        c.stdin(Stdio::null()).output().unwrap()
    }

    fn add(&self, name: &str, src: &Path, extra: &[&str]) -> Output {
        let mut a = vec!["image", "add", name, src.to_str().unwrap()];
        a.extend_from_slice(extra);
        self.cli(&a)
    }

    fn add_ok(&self, name: &str, src: &Path, extra: &[&str]) -> String {
        let o = self.add(name, src, extra);
        assert!(o.status.success(), "image add {name}: {}", text(&o.stderr));
        text(&o.stdout).trim().to_string()
    }

    fn job(&self, image: &str) -> Job {
        Job::new(&self.dir.base())
            .opt("--state-dir")
            .opt(self.state())
            .opt("--image")
            .opt(image)
    }

    fn no_leftovers(&self) {
        let imgs = self.state().join("images");
        if let Ok(rd) = std::fs::read_dir(&imgs) {
            for e in rd {
                let n = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(!n.starts_with(".staging"), "staging dir left: {n}");
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Three layers exercising whiteouts, opaque directories and replacements; returns the
/// layers and the tree (under /etc /data /opq) that overlayfs would show.
fn overlay_layers(bb: Vec<u8>) -> (Vec<Blob>, Vec<&'static str>) {
    let l1 = layer(&[
        E::Dir("etc/"),
        E::File("etc/a", b"a1"),
        E::File("etc/b", b"b1"),
        E::Dir("data/"),
        E::File("data/keep", b"k"),
        E::Dir("data/old/"),
        E::File("data/old/x", b"x"),
        E::Dir("opq/"),
        E::File("opq/old1", b"o"),
        E::Dir("opq/sub/"),
        E::File("opq/sub/old2", b"o"),
    ]);
    let l2 = layer(&[
        E::File("etc/.wh.b", b""),
        E::File("etc/a", b"a2"),
        E::File("opq/.wh..wh..opq", b""),
        E::File("opq/new", b"n"),
        // A file where a lower layer had a directory: the directory is gone.
        E::File("data/old", b"now a file"),
    ]);
    let l3 = layer(&[
        E::File("etc/c", b"c3"),
        E::File("data/.wh.keep", b""),
        E::File("etc/.wh.never-existed", b""),
    ]);
    let layers = vec![
        Blob {
            media_type: MT_LAYER_GZ,
            data: gz(&bb),
        },
        Blob {
            media_type: MT_LAYER_GZ,
            data: gz(&l1),
        },
        Blob {
            media_type: MT_LAYER,
            data: l2,
        },
        Blob {
            media_type: MT_LAYER_GZ,
            data: gz(&l3),
        },
    ];
    let expect = vec![
        "/data",
        "/data/old",
        "/etc",
        "/etc/a",
        "/etc/c",
        "/opq",
        "/opq/new",
    ];
    (layers, expect)
}

fn basic_img(bb: Vec<u8>, refname: Option<&'static str>) -> Img {
    Img {
        refname,
        arch: "amd64",
        run: json!({"Cmd": ["/bin/sh"]}),
        layers: vec![Blob {
            media_type: MT_LAYER_GZ,
            data: gz(&bb),
        }],
    }
}

#[test]
fn oci_layout_applies_layers_with_overlay_semantics() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-overlay");
    let (layers, expect) = overlay_layers(bb);
    let dir = s.path("layout");
    oci_layout(
        &dir,
        &[Img {
            refname: Some("overlay:1"),
            arch: "amd64",
            run: json!({}),
            layers,
        }],
    );
    s.add_ok("overlay", &dir, &[]);
    let out = s.job("overlay").run(&[
        "/bin/sh",
        "-c",
        "find /etc /data /opq | sort; cat /etc/a /data/old",
    ]);
    out.expect(0);
    let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
    want.push("a2now a file".into());
    assert_eq!(out.lines(), want, "the job's view of the layered tree");
    let show = text(&s.cli(&["image", "show", "overlay"]).stdout);
    assert!(show.contains("format:               oci-layout"), "{show}");
    s.no_leftovers();
}

#[test]
fn oci_archive_file_and_stdin_give_the_same_image() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-archive");
    let dir = s.path("layout");
    oci_layout(&dir, &[basic_img(bb, Some("latest"))]);
    let ar = s.path("img.oci.tar");
    tar_dir(&dir, &ar);
    let from_dir = s.add_ok("d", &dir, &[]);
    let from_file = s.add_ok("f", &ar, &[]);
    let mut c = Command::new(JOBCELL);
    c.args(["image", "add", "s", "-", "--state-dir"])
        .arg(s.state());
    c.stdin(std::fs::File::open(&ar).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success(), "stdin: {}", text(&o.stderr));
    assert_eq!(from_dir, from_file);
    assert_eq!(from_dir, text(&o.stdout).trim());
    // Compressed as a whole (`docker save | gzip`), from a file and from stdin.
    let gzipped = s.path("img.oci.tar.gz");
    std::fs::write(&gzipped, gz(&std::fs::read(&ar).unwrap())).unwrap();
    assert_eq!(s.add_ok("g", &gzipped, &[]), from_dir);
    let mut c = Command::new(JOBCELL);
    c.args(["image", "add", "gs", "-", "--state-dir"])
        .arg(s.state());
    c.stdin(std::fs::File::open(&gzipped).unwrap());
    let o = c.output().unwrap();
    assert!(o.status.success(), "gzip on stdin: {}", text(&o.stderr));
    assert_eq!(from_dir, text(&o.stdout).trim());
    let show = text(&s.cli(&["image", "show", "s"]).stdout);
    assert!(show.contains("format:               oci-archive"), "{show}");
    s.job("f").run(&["/bin/echo", "ran"]).expect(0);
    s.no_leftovers();
}

#[test]
fn docker_archive_config_is_honoured() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("docker-config");
    let img = Img {
        refname: None,
        arch: "amd64",
        run: json!({
            "Env": ["PATH=/bin", "FROM_IMAGE=yes", "OVERRIDE=image"],
            "WorkingDir": "/srv",
            "Entrypoint": ["/bin/sh", "-c", "echo \"$0 $* $FROM_IMAGE $OVERRIDE $(pwd) $(id -u)\""],
            "Cmd": ["default-arg"],
            "User": "root",
            "Labels": {"org.example.tool": "demo"},
        }),
        layers: vec![
            Blob {
                media_type: MT_LAYER,
                data: bb,
            },
            Blob {
                media_type: MT_LAYER,
                data: layer(&[E::Dir("srv/")]),
            },
        ],
    };
    let ar = s.path("docker.tar");
    docker_archive(&ar, &[(vec!["localhost/demo:1"], &img)]);
    s.add_ok("demo", &ar, &[]);
    let show = text(&s.cli(&["image", "show", "demo"]).stdout);
    for want in [
        "format:               docker-archive",
        "working dir:          /srv",
        "cmd:                  [\"default-arg\"]",
        "user:                 root (not used",
        "    FROM_IMAGE=yes",
        "    org.example.tool=demo",
        "reference:            localhost/demo:1",
    ] {
        assert!(show.contains(want), "image show lacks {want:?}:\n{show}");
    }
    // No command: Entrypoint + Cmd, in WorkingDir, never as the image's User (root).
    let out = s.job("demo").run(&[]);
    out.expect(0);
    let line = out.lines().join("\n");
    let uid: Vec<&str> = line.split(' ').collect();
    assert_eq!(
        &uid[..5],
        ["default-arg", "", "yes", "image", "/srv"],
        "{line}"
    );
    assert_ne!(
        uid[5], "0",
        "the image's User must not make the job root: {line}"
    );
    // A command replaces Cmd, the job's -e wins over the image's Env.
    let out = s
        .job("demo")
        .opts(["-e", "OVERRIDE=job"])
        .run(&["mine", "two"]);
    out.expect(0);
    assert!(
        out.lines()[0].starts_with("mine two yes job /srv "),
        "{:?}",
        out.lines()
    );
    s.no_leftovers();
}

#[test]
fn ref_and_platform_choose_the_image() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-ref");
    let mut a = basic_img(bb.clone(), Some("docker.io/library/tool:1"));
    a.layers.push(Blob {
        media_type: MT_LAYER,
        data: layer(&[E::File("which", b"one")]),
    });
    let mut b = basic_img(bb.clone(), Some("tool:2"));
    b.layers.push(Blob {
        media_type: MT_LAYER,
        data: layer(&[E::File("which", b"two")]),
    });
    let mut arm = basic_img(bb, Some("tool:2"));
    arm.arch = "arm64";
    let dir = s.path("layout");
    oci_layout(&dir, &[a, b, arm]);

    let o = s.add("x", &dir, &[]);
    let err = text(&o.stderr);
    eprintln!("no --ref: {}", err.trim());
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("--ref")
            && err.contains("docker.io/library/tool:1")
            && err.contains("tool:2 (linux/amd64)"),
        "the choices are listed: {err}"
    );
    assert!(
        !text(&s.cli(&["image", "ls"]).stdout).contains("x "),
        "nothing registered"
    );

    s.add_ok("one", &dir, &["--ref", "tool:1"]);
    s.add_ok("two", &dir, &["--ref", "tool:2"]);
    s.add_ok(
        "two-arm",
        &dir,
        &["--ref", "tool:2", "--platform", "linux/arm64"],
    );
    s.job("one").run(&["/bin/cat", "/which"]).expect(0);
    assert_eq!(s.job("one").run(&["/bin/cat", "/which"]).lines(), ["one"]);
    assert_eq!(s.job("two").run(&["/bin/cat", "/which"]).lines(), ["two"]);
    let o = s.add("none", &dir, &["--ref", "tool:3"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no image named \"tool:3\""),
        "{}",
        text(&o.stderr)
    );
    s.no_leftovers();
}

/// Hostile sources: each is refused with one line naming the blob or entry at fault, leaves
/// no staging dir, registers nothing and writes nothing outside the image.
#[test]
fn hostile_container_images_are_refused() {
    if skip_unless_root() {
        return;
    }
    let s = Store::new("oci-hostile");
    let outside = s.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let good = || layer(&[E::Dir("etc/"), E::File("etc/ok", b"ok")]);
    let one = Img::of_layers;
    let plain = |d: Vec<u8>| Blob {
        media_type: MT_LAYER,
        data: d,
    };

    // A layer whose content does not match its digest (same size).
    let dir = s.path("bad-digest");
    oci_layout(&dir, &[one(vec![plain(good())])]);
    let l = good();
    let p = dir.join("blobs/sha256").join(sha(&l));
    let mut tampered = l.clone();
    let at = tampered.windows(2).rposition(|w| w == b"ok").unwrap();
    tampered[at] = b'O';
    std::fs::write(&p, &tampered).unwrap();
    let cases: Vec<(&str, PathBuf, String)> =
        vec![("bad digest", dir, format!("blob sha256:{}", sha(&l)))];
    let mut cases = cases;

    // `..` in a layer.
    let dir = s.path("traversal");
    oci_layout(
        &dir,
        &[one(vec![plain(layer(&[E::File(
            "../../outside/escaped",
            b"x",
        )]))])],
    );
    cases.push(("traversal", dir, "`..`".into()));

    // A whiteout aiming outside.
    let dir = s.path("whiteout-out");
    oci_layout(
        &dir,
        &[one(vec![
            plain(good()),
            plain(layer(&[E::File("etc/../../.wh.outside", b"")])),
        ])],
    );
    cases.push(("whiteout outside", dir, "`..`".into()));

    // A manifest that names a blob the layout does not hold.
    let dir = s.path("missing");
    let l = good();
    oci_layout(&dir, &[one(vec![plain(l.clone())])]);
    std::fs::remove_file(dir.join("blobs/sha256").join(sha(&l))).unwrap();
    cases.push(("missing blob", dir, format!("{}: missing", sha(&l))));

    // A gigantic claimed size.
    let dir = s.path("huge");
    let l = good();
    let blobs = oci_layout(&dir, &[one(vec![plain(l.clone())])]);
    let (manifest, _) = &blobs[0];
    let mut m: serde_json::Value = serde_json::from_slice(&manifest.data).unwrap();
    m["layers"][0]["size"] = json!(1u64 << 62);
    let md = serde_json::to_vec(&m).unwrap();
    std::fs::write(dir.join("blobs/sha256").join(sha(&md)), &md).unwrap();
    let mut idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    idx["manifests"][0]["digest"] = json!(format!("sha256:{}", sha(&md)));
    idx["manifests"][0]["size"] = json!(md.len());
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&idx).unwrap()).unwrap();
    cases.push((
        "huge size",
        dir,
        format!("manifest says {} bytes", 1u64 << 62),
    ));

    // A docker-archive layer that does not match the config's diff_id.
    let ar = s.path("docker-bad.tar");
    let img = one(vec![plain(good())]);
    docker_archive(&ar, &[(vec!["bad:1"], &img)]);
    let mut bytes = std::fs::read(&ar).unwrap();
    let at = bytes.windows(2).rposition(|w| w == b"ok").unwrap();
    bytes[at] = b'O';
    std::fs::write(&ar, &bytes).unwrap();
    cases.push(("docker diff_id", ar, format!("blob {}.tar", sha(&good()))));

    for (what, src, needle) in cases {
        let o = s.add("hostile", &src, &[]);
        let err = text(&o.stderr);
        eprintln!("{what}: {}", err.trim());
        assert!(!o.status.success(), "{what}: accepted");
        assert_eq!(err.trim().lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains(&needle), "{what}: {err:?} lacks {needle:?}");
        assert!(
            !text(&s.cli(&["image", "ls"]).stdout).contains("hostile"),
            "{what}"
        );
        s.no_leftovers();
    }
    // The size cap holds across layers: each layer is under it, the image is not.
    let dir = s.path("two-halves");
    let half = vec![b'x'; 700];
    oci_layout(
        &dir,
        &[one(vec![
            plain(layer(&[E::File("a", &half)])),
            plain(layer(&[E::File("b", &half)])),
        ])],
    );
    let o = s.add("hostile", &dir, &["--max-size", "1K"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "size cap across layers: accepted");
    assert!(
        err.contains("exceeds 1.0 KiB (--max-size) at entry \"b\""),
        "{err}"
    );
    s.no_leftovers();
    // --ref names an image of a container source; a plain tarball has none.
    let t = s.path("plain.tar");
    std::fs::write(&t, layer(&[E::File("etc/ok", b"ok")])).unwrap();
    let o = s.add("hostile", &t, &["--ref", "x:1"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("not a container image"),
        "{}",
        text(&o.stderr)
    );
    assert!(!s.path("escaped").exists() && !outside.join("escaped").exists());
    assert!(outside.exists(), "the whiteout removed a host dir");
}

/// Rewrite the config of the layout's only image with `edit`, and the manifest and index
/// that name it, so every descriptor matches again: what is left is a config that lies.
fn rewrite_config(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let blobs = dir.join("blobs/sha256");
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&md[7..])).unwrap()).unwrap();
    let cd = m["config"]["digest"].as_str().unwrap().to_string();
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blobs.join(&cd[7..])).unwrap()).unwrap();
    edit(&mut c);
    let c = serde_json::to_vec(&c).unwrap();
    std::fs::write(blobs.join(sha(&c)), &c).unwrap();
    m["config"]["digest"] = json!(format!("sha256:{}", sha(&c)));
    m["config"]["size"] = json!(c.len());
    let m = serde_json::to_vec(&m).unwrap();
    std::fs::write(blobs.join(sha(&m)), &m).unwrap();
    index["manifests"][0]["digest"] = json!(format!("sha256:{}", sha(&m)));
    index["manifests"][0]["size"] = json!(m.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// An OCI layer is checked twice: the blob against the manifest's digest, and its
/// uncompressed tar against the config's `rootfs.diff_ids` (what the image's identity is made
/// of). A config naming other content, or another number of layers, is refused and nothing
/// is registered.
#[test]
fn an_oci_layer_not_matching_its_diff_id_is_refused() {
    if skip_unless_root() {
        return;
    }
    let s = Store::new("oci-diffid");
    let img = || {
        Img::gzipped_then_plain(
            &layer(&[E::Dir("etc/"), E::File("etc/a", b"a")]),
            layer(&[E::File("etc/b", b"b")]),
        )
    };
    let other = format!("sha256:{}", sha(&layer(&[E::File("etc/evil", b"x")])));
    type ConfigEdit<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
    let cases: [(&str, ConfigEdit, String); 3] = [
        (
            "gzip layer",
            Box::new(|c| c["rootfs"]["diff_ids"][0] = json!(other)),
            format!("layer 1 (sha256:{}): uncompressed content has digest", {
                sha(&img().layers[0].data)
            }),
        ),
        (
            "plain layer",
            Box::new(|c| c["rootfs"]["diff_ids"][1] = json!(other)),
            format!("the config's diff_id is {other}"),
        ),
        (
            "count",
            Box::new(|c| {
                c["rootfs"]["diff_ids"].as_array_mut().unwrap().pop();
            }),
            "names 1 diff_ids but the manifest lists 2 layers".into(),
        ),
    ];
    for (what, edit, want) in cases {
        let dir = s.path(what);
        oci_layout(&dir, &[img()]);
        rewrite_config(&dir, edit);
        let o = s.add("lying", &dir, &[]);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{what}: accepted");
        assert!(err.contains(&want), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        s.no_leftovers();
    }
    let ls = text(&s.cli(&["image", "ls"]).stdout);
    assert!(!ls.contains("lying"), "{ls}");
    // The same layout with an honest config imports.
    let dir = s.path("honest");
    oci_layout(&dir, &[img()]);
    s.add_ok("honest", &dir, &[]);
}

/// A layer turns a directory into a symlink to a host path and a later layer writes below
/// it: the write lands inside the image (the link is replaced by a directory), never on the
/// host, even when root imports.
#[test]
fn layer_writing_through_a_symlinked_dir_stays_inside() {
    if skip_unless_root() {
        return;
    }
    let s = Store::new("oci-symlink");
    let host = s.path("host-dir");
    std::fs::create_dir_all(&host).unwrap();
    let host_s: &'static str = Box::leak(host.to_str().unwrap().to_string().into_boxed_str());
    let layers = vec![
        Blob {
            media_type: MT_LAYER,
            data: layer(&[E::Dir("lib/"), E::File("lib/a", b"a")]),
        },
        Blob {
            media_type: MT_LAYER,
            data: layer(&[E::File(".wh.lib", b""), E::Symlink("lib", host_s)]),
        },
        Blob {
            media_type: MT_LAYER_GZ,
            data: gz(&layer(&[E::File("lib/pwned", b"x")])),
        },
        Blob {
            media_type: MT_LAYER,
            data: layer(&[E::Symlink("lnk", host_s)]),
        },
        Blob {
            media_type: MT_LAYER,
            data: layer(&[E::Dir("lnk/"), E::File("lnk/pwned2", b"y")]),
        },
    ];
    let dir = s.path("layout");
    oci_layout(&dir, &[Img::of_layers(layers)]);
    s.add_ok("sym", &dir, &[]);
    assert!(
        std::fs::read_dir(&host).unwrap().next().is_none(),
        "a layer wrote into the host dir through a symlink"
    );
    let show: serde_json::Value =
        serde_json::from_slice(&s.cli(&["image", "show", "sym", "--json"]).stdout).unwrap();
    let root = PathBuf::from(show["root"].as_str().unwrap());
    for p in ["lib/pwned", "lnk/pwned2"] {
        let m = std::fs::symlink_metadata(root.join(p)).unwrap();
        assert!(m.is_file(), "{p} inside the image");
    }
    assert!(std::fs::symlink_metadata(root.join("lib"))
        .unwrap()
        .is_dir());
    s.no_leftovers();
}

/// Whiteouts cost what they remove, not the size of the image: 40,000 whiteouts and 40,000
/// repeated opaque markers over a 40,000-file layer import in seconds (a scan of the whole
/// tree per whiteout took about nine times as long).
#[test]
fn a_whiteout_flood_does_not_stall_the_import() {
    if skip_unless_root() {
        return;
    }
    let s = Store::new("oci-whiteout-flood");
    const N: usize = 40_000;
    let names: Vec<String> = (0..N).map(|i| format!("e/f{i}")).collect();
    let wh: Vec<String> = (0..N).map(|i| format!("e/.wh.f{i}")).collect();
    let mut l1 = vec![E::Dir("e/"), E::Dir("d/")];
    l1.extend(names.iter().map(|n| E::File(n, b"")));
    let mut l2: Vec<E> = wh.iter().map(|n| E::File(n, b"")).collect();
    l2.extend((0..N).map(|_| E::File("d/.wh..wh..opq", b"")));
    let layers = vec![
        Blob {
            media_type: MT_LAYER,
            data: layer(&l1),
        },
        Blob {
            media_type: MT_LAYER,
            data: layer(&l2),
        },
    ];
    let dir = s.path("layout");
    oci_layout(&dir, &[Img::of_layers(layers)]);
    let started = std::time::Instant::now();
    s.add_ok("flood", &dir, &[]);
    let took = started.elapsed();
    eprintln!("whiteout flood imported in {took:?}");
    assert!(took < std::time::Duration::from_secs(40), "took {took:?}");
    let show: serde_json::Value =
        serde_json::from_slice(&s.cli(&["image", "show", "flood", "--json"]).stdout).unwrap();
    let root = PathBuf::from(show["root"].as_str().unwrap());
    assert_eq!(std::fs::read_dir(root.join("e")).unwrap().count(), 0);
    s.no_leftovers();
}

/// The daemon applies the image's config once, at submission, as `jobcell run` does: through
/// the API with and without a command, and from a submit file's `container_image`.
#[test]
fn the_daemon_applies_the_image_config_at_submission() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let _g = daemon_harness::serial();
    let d = daemon_harness::Daemon::start(&[]);
    let s = Store::new("oci-daemon");
    let img = Img {
        refname: Some("demo:1"),
        arch: "amd64",
        run: json!({
            "Env": ["FROM_IMAGE=yes"],
            "WorkingDir": "/srv",
            "Entrypoint": ["/bin/sh", "-c", "echo \"$FROM_IMAGE $(pwd) $0\""],
            "Cmd": ["cmd-default"],
        }),
        layers: vec![
            Blob {
                media_type: MT_LAYER_GZ,
                data: gz(&bb),
            },
            Blob {
                media_type: MT_LAYER,
                data: layer(&[E::Dir("srv/")]),
            },
        ],
    };
    let dir = s.path("layout");
    oci_layout(&dir, &[img]);
    let o = Command::new(JOBCELL)
        .args([
            "image",
            "add",
            "demo",
            "--public",
            dir.to_str().unwrap(),
            "--state-dir",
        ])
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let spec = |argv: &[&str]| {
        let mut s = jobcell_spec::JobSpec::new(argv.iter().map(|a| a.to_string()).collect());
        s.image = Some("demo".into());
        s.resources.memory = Some(32 << 20);
        serde_json::to_value(s).unwrap()
    };
    let output = |id: u64| {
        let j = d.wait_for(id, JOB_TIMEOUT, |j| j.state.terminal());
        assert_eq!(j.exit_code, Some(0), "{j:?}");
        text(&d.cli(&["output", &id.to_string()]).stdout)
    };
    let id = d.submit(json!({"spec": spec(&[])}))[0];
    assert_eq!(output(id), "yes /srv cmd-default\n");
    let id = d.submit(json!({"spec": spec(&["given"])}))[0];
    assert_eq!(output(id), "yes /srv given\n");
    // A submit file: its initialdir (a host path, not in the image) wins over WorkingDir.
    let work = daemon_harness::TempDir::itest();
    std::fs::set_permissions(
        work.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let file = "universe = container\ncontainer_image = demo\nexecutable = /bin/echo\nrequest_memory = 32\noutput = out\nqueue\n";
    let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(file));
    let id = daemon_harness::ids(&o)[0];
    let j = d.wait_for(id, JOB_TIMEOUT, |j| j.state.terminal());
    assert_eq!(j.exit_code, Some(0), "{j:?}");
    let got = std::fs::read_to_string(work.path().join("out")).unwrap();
    assert!(
        got.starts_with("yes /") && got.ends_with(" /bin/echo\n"),
        "{got:?}"
    );
    // No command at all: `jobcell submit --image` and a submit file without `executable` run
    // the image's Entrypoint + Cmd; the file's `arguments` replace Cmd (`docker run IMG ARGS`).
    let o = d.cli(&["submit", "-q", "--image", "demo", "--memory", "32M"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(output(daemon_harness::ids(&o)[0]), "yes /srv cmd-default\n");
    let o = d.cli(&[
        "submit", "-q", "--image", "demo", "--memory", "32M", "--", "x",
    ]);
    assert_eq!(output(daemon_harness::ids(&o)[0]), "yes /srv x\n");
    for (args, want) in [
        ("", "cmd-default"),
        ("arguments = from-file\n", "from-file"),
    ] {
        let out = work.path().join("out2");
        let _ = std::fs::remove_file(&out);
        let file = format!(
            "universe = container\ncontainer_image = demo\n{args}request_memory = 32\noutput = out2\nqueue\n"
        );
        let o = d.cli_in(work.path(), None, &[], &["submit", "-q", "-"], Some(&file));
        assert!(o.status.success(), "{}", text(&o.stderr));
        let j = d.wait_for(daemon_harness::ids(&o)[0], JOB_TIMEOUT, |j| {
            j.state.terminal()
        });
        assert_eq!(j.exit_code, Some(0), "{j:?}");
        // The job starts in its transfer dir (the file's own dir wins over WorkingDir).
        let got = std::fs::read_to_string(&out).unwrap();
        assert!(
            got.starts_with("yes /") && got.ends_with(&format!(" {want}\n")),
            "{got:?}"
        );
    }
    // A plain tree names no command: refused in one line, nothing queued.
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    let o = Command::new(JOBCELL)
        .args(["image", "add", "plain", "--public", tree.to_str().unwrap()])
        .arg("--state-dir")
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.cli(&["submit", "-q", "--image", "plain", "--memory", "32M"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("image 'plain'") && err.contains("give the command"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Without an image the executable is still required.
    let o = d.cli_in(
        work.path(),
        None,
        &[],
        &["submit", "-q", "-"],
        Some("arguments = a\nqueue\n"),
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no executable"),
        "{}",
        text(&o.stderr)
    );
}

/// What `podman save` really writes (docker-archive, oci-archive, oci-dir) imports as the same
/// tree with the config podman recorded. Needs podman (apt-get install podman); it uses a
/// storage dir of its own and no registry.
#[test]
fn podman_save_output_imports_and_runs() {
    if skip_unless_root() {
        return;
    }
    let podman_ok = Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !podman_ok || !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: podman_save_output_imports_and_runs needs podman and /bin/busybox (apt-get install podman busybox-static)");
        return;
    }
    let s = Store::new("oci-podman");
    let tree = s.path("tree");
    std::fs::create_dir_all(tree.join("srv")).unwrap();
    let tar = s.path("tree.tar");
    pack_busybox_tree(&tree, &["sh", "echo", "pwd"], &tar);
    let podman = |args: &[&str]| {
        let o = Command::new("podman")
            .arg("--root")
            .arg(s.path("storage"))
            .arg("--runroot")
            .arg(s.path("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "podman {args:?}: {}", text(&o.stderr));
    };
    podman(&[
        "import",
        "--change",
        "ENV FROM_IMAGE=podman",
        "--change",
        "WORKDIR /srv",
        "--change",
        r#"CMD ["/bin/sh","-c","echo $FROM_IMAGE $(pwd)"]"#,
        tar.to_str().unwrap(),
        "localhost/demo:1",
    ]);
    let mut ids = Vec::new();
    for format in ["docker-archive", "oci-archive", "oci-dir"] {
        let out = s.path(&format!("out.{format}"));
        podman(&[
            "save",
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "localhost/demo:1",
        ]);
        ids.push(s.add_ok(format, &out, &["--ref", "demo:1"]));
        let run = s.job(format).run(&[]);
        run.expect(0);
        assert_eq!(run.lines(), ["podman /srv"], "{format}");
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "one tree: {ids:?}");
    s.no_leftovers();
}

/// SIGINT while a container archive is still arriving on stdin (being kept in an unnamed
/// file) ends the import at once: exit 130, nothing registered, no staging dir left.
#[test]
fn sigint_while_a_container_stream_arrives_leaves_nothing() {
    if skip_unless_root() {
        return;
    }
    let s = Store::new("oci-sigint");
    let dir = s.path("layout");
    oci_layout(
        &dir,
        &[Img::of_layers(vec![Blob {
            media_type: MT_LAYER,
            data: layer(&[E::File("a", b"a")]),
        }])],
    );
    let ar = s.path("img.tar");
    tar_dir(&dir, &ar);
    let mut child = Command::new(JOBCELL)
        .args(["image", "add", "slow", "-", "--state-dir"])
        .arg(s.state())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The first half only: the rest "is still coming".
    let bytes = std::fs::read(&ar).unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let t0 = std::time::Instant::now();
    let staging = || {
        std::fs::read_dir(s.state().join("images"))
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with(".staging")
                })
                .count()
            })
            .unwrap_or(0)
    };
    while staging() == 0 && t0.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(staging() > 0, "import never started");
    std::thread::sleep(std::time::Duration::from_millis(200));
    // SAFETY: kill takes integers only; the pid is this test's own unreaped child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let t1 = std::time::Instant::now();
    let o = child.wait_with_output().unwrap();
    drop(stdin);
    assert!(
        t1.elapsed() < std::time::Duration::from_secs(5),
        "SIGINT not seen in time"
    );
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert_eq!(staging(), 0, "staging dir left");
    assert!(!text(&s.cli(&["image", "ls"]).stdout).contains("slow"));
}

/// Layer dirs of a root import's private bucket (`<images>/private-0/.layers`).
fn layer_dirs(s: &Store) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(s.state().join("images/private-0/.layers"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn image_json(s: &Store, name: &str) -> serde_json::Value {
    let o = s.cli(&["image", "show", name, "--json"]);
    assert!(o.status.success(), "image show {name}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn ino(p: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(p).unwrap())
}

/// Image "b": the same busybox base as `overlay_layers`, then a layer that whites out one
/// applet of the shared layer and adds its own file.
fn second_img(bb: &[u8]) -> Img {
    let lb = layer(&[
        E::File("bin/.wh.find", b""),
        E::Dir("opq/"),
        E::File("opq/b-only", b"b"),
    ]);
    Img::gzipped_then_plain(bb, lb)
}

#[test]
fn images_sharing_a_base_layer_store_it_once() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-shared");
    let base_key = sha(&gz(&bb));
    let (layers, expect) = overlay_layers(bb.clone());
    let a = s.path("a");
    oci_layout(&a, &[Img::of_layers(layers)]);
    let b = s.path("b");
    oci_layout(&b, &[second_img(&bb)]);
    s.add_ok("a", &a, &[]);
    s.add_ok("b", &b, &[]);

    // The base layer is one directory and its files one inode shared by both trees.
    let dirs = layer_dirs(&s);
    assert_eq!(
        dirs.iter().filter(|d| **d == base_key).count(),
        1,
        "{dirs:?}"
    );
    // A layer keeps the files some image shows: a's second layer is all hidden by later ones.
    assert_eq!(dirs.len(), 4, "base + 2 layers of a + 1 of b: {dirs:?}");
    let bucket = s.state().join("images/private-0");
    let tree = |n: &str| bucket.join(image_json(&s, n)["id"].as_str().unwrap());
    let stored = ino(&bucket.join(".layers").join(&base_key).join("bin/busybox"));
    assert_eq!(ino(&tree("a").join("bin/busybox")), stored);
    assert_eq!(ino(&tree("b").join("bin/busybox")), stored);
    let du = Command::new("du").arg("-sk").arg(&bucket).output().unwrap();
    eprintln!("du of both images: {}", text(&du.stdout).trim());

    // Each sees its own view of the shared layer: whiteouts and opaque dirs stay per image.
    let out = s.job("a").run(&[
        "/bin/sh",
        "-c",
        "find /etc /data /opq | sort; cat /etc/a /data/old; ls /bin/find",
    ]);
    out.expect(0);
    let mut want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
    want.push("a2now a file/bin/find".into());
    assert_eq!(out.lines(), want, "a's view");
    let out = s
        .job("b")
        .run(&["/bin/sh", "-c", "ls /opq; ls /bin/find || echo no-find"]);
    out.expect(0);
    assert_eq!(out.lines(), vec!["b-only", "no-find"], "b's view");

    let ja = image_json(&s, "a");
    assert_eq!(ja["layers"].as_array().unwrap().len(), 4, "{ja}");
    let shared = ja["shared_size"].as_u64().unwrap();
    assert_eq!(shared, bb_size(&bb), "{ja}");
    assert_eq!(
        ja["unique_size"].as_u64().unwrap(),
        ja["size"].as_u64().unwrap() - shared
    );
    let ls = text(&s.cli(&["image", "ls"]).stdout);
    assert!(ls.contains("LAYERS") && ls.contains("SHARED"), "{ls}");

    // rm of one keeps the shared layer (and the other image runs), rm of both removes it.
    let o = s.cli(&["image", "rm", "a"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(layer_dirs(&s).len(), 2, "{:?}", layer_dirs(&s));
    assert!(layer_dirs(&s).contains(&base_key));
    s.job("b").run(&["/bin/busybox", "true"]).expect(0);
    assert_eq!(image_json(&s, "b")["shared_size"].as_u64(), Some(0));
    let o = s.cli(&["image", "rm", "b"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(layer_dirs(&s), Vec::<String>::new());
    s.no_leftovers();
}

/// Bytes of the regular files of a layer tar.
fn bb_size(layer_tar: &[u8]) -> u64 {
    let mut a = tar::Archive::new(layer_tar);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type() == tar::EntryType::Regular)
        .map(|e| e.header().size().unwrap())
        .sum()
}

#[test]
fn gc_removes_layers_of_a_crashed_import_and_orphans() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-gc");
    let b = s.path("b");
    oci_layout(&b, &[second_img(&bb)]);
    // Killed after linking its layers, before its row: the layers are referenced by nothing.
    let o = Command::new(JOBCELL)
        .args(["image", "add", "b", b.to_str().unwrap(), "--state-dir"])
        .arg(s.state())
        .env("JOBCELL_CRASH_AT", "image-extracted")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success(), "the import was to be killed");
    assert_eq!(layer_dirs(&s).len(), 2, "{:?}", layer_dirs(&s));
    // And a layer dir nobody made through an import.
    let orphan = s
        .state()
        .join("images/private-0/.layers")
        .join("0".repeat(64));
    std::fs::create_dir_all(orphan.join("etc")).unwrap();
    std::fs::write(orphan.join("etc/x"), "x").unwrap();
    let o = s.cli(&["image", "gc"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("3 unused layer(s) removed"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(layer_dirs(&s), Vec::<String>::new());
    // A later import of the same image is whole and runs.
    s.add_ok("b", &b, &[]);
    assert_eq!(layer_dirs(&s).len(), 2);
    s.job("b").run(&["/bin/busybox", "true"]).expect(0);
    let o = s.cli(&["image", "gc"]);
    assert!(
        text(&o.stdout).contains("0 unused layer(s) removed"),
        "{}",
        text(&o.stdout)
    );
    s.no_leftovers();
}

#[test]
fn a_layer_dir_swapped_for_a_symlink_is_refused() {
    if skip_unless_root() {
        return;
    }
    let Some(bb) = busybox_layer() else {
        eprintln!("SKIPPED: no /bin/busybox (apt-get install busybox-static)");
        return;
    };
    let s = Store::new("oci-layer-link");
    let base_key = sha(&gz(&bb));
    let a = s.path("a");
    oci_layout(&a, &[basic_img(bb.clone(), None)]);
    let b = s.path("b");
    oci_layout(&b, &[second_img(&bb)]);
    s.add_ok("a", &a, &[]);
    // The base layer's dir now points outside the store.
    let outside = s.path("outside");
    std::fs::create_dir_all(outside.join("bin")).unwrap();
    std::fs::write(outside.join("bin/busybox"), "not busybox").unwrap();
    let layer = s.state().join("images/private-0/.layers").join(&base_key);
    std::fs::rename(&layer, s.path("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &layer).unwrap();

    let o = s.add("b", &b, &[]);
    let err = text(&o.stderr);
    assert!(
        !o.status.success(),
        "import through a symlinked layer dir: {err}"
    );
    assert!(
        err.contains("layer store") && err.contains(&base_key),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!text(&s.cli(&["image", "ls"]).stdout).contains("b "));
    // Nothing was linked into or out of the symlink's target.
    let names: Vec<_> = std::fs::read_dir(outside.join("bin")).unwrap().collect();
    assert_eq!(names.len(), 1);
    assert_eq!(
        std::fs::read(outside.join("bin/busybox")).unwrap(),
        b"not busybox"
    );
    // The image already imported keeps running from its own tree.
    s.job("a").run(&["/bin/busybox", "true"]).expect(0);
    // Removing it removes the symlink, never what it points to.
    let o = s.cli(&["image", "rm", "a"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(std::fs::symlink_metadata(&layer).is_err(), "symlink left");
    assert_eq!(
        std::fs::read(outside.join("bin/busybox")).unwrap(),
        b"not busybox"
    );
    std::fs::remove_dir_all(s.path("moved")).ok();
    s.no_leftovers();
}
