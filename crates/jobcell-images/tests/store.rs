//! Registry behaviour: real images, compression detection, visibility, leases, removal.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use jobcell_images::*;

fn opts() -> ImportOptions {
    ImportOptions::default()
}

/// busybox-static tree: /bin/busybox plus applet symlinks.
fn busybox_tree(dir: &Path) -> bool {
    if !Path::new("/bin/busybox").exists() {
        eprintln!("SKIPPED: /bin/busybox absent (apt-get install busybox-static)");
        return false;
    }
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    for app in ["sh", "ls", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(app)).unwrap();
    }
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(dir.join("etc/os-release"), "ID=busybox\n").unwrap();
    true
}

#[test]
fn busybox_image_from_dir_and_tar() {
    let env = Env::new();
    let src = env.path("bb");
    if !busybox_tree(&src) {
        return;
    }
    let store = env.store();
    let img = store
        .add("busybox", ImportSource::Path(src.clone()), &opts())
        .unwrap();
    assert_eq!(img.format, "dir");
    assert_eq!(img.id.len(), 64);
    assert_eq!(img.root, env.images.join("private-0").join(&img.id));
    // usable: the static binary runs from the image
    let out = std::process::Command::new(img.root.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(
        std::fs::read_link(img.root.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    // mount points created and recorded; directories read-only
    for mp in ["proc", "dev", "sys", "tmp", "var/tmp"] {
        assert!(img.root.join(mp).is_dir(), "{mp}");
    }
    assert!(img
        .audit
        .created_mount_points
        .contains(&"/proc".to_string()));
    for d in ["", "bin", "etc", "tmp"] {
        assert_eq!(mode_of(&img.root.join(d)) & 0o222, 0, "{d} writable");
    }
    // tar of the same tree via GNU tar
    let tarf = env.path("bb.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        src.display(),
        tarf.display()
    ));
    let img2 = store
        .add("busybox-tar", ImportSource::Path(tarf), &opts())
        .unwrap();
    assert_eq!(img2.format, "tar");
    assert!(img2.root.join("bin/busybox").is_file());
    let names: Vec<String> = store.list(0).unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(names, vec!["busybox", "busybox-tar"]);
}

#[test]
fn compression_detected_from_content_and_id_is_content_digest() {
    let env = Env::new();
    let src = env.path("min");
    minimal_tree(&src);
    let tarf = env.path("min.tar");
    sh(&format!(
        "tar --owner=0 --group=0 -C {} -cf {} .",
        src.display(),
        tarf.display()
    ));
    // Misleading names on purpose: detection is by magic bytes.
    sh(&format!("gzip -c {0} > {0}.a.bin && bzip2 -c {0} > {0}.b.bin && xz -c {0} > {0}.c.bin && zstd -q -c {0} > {0}.d.bin", tarf.display()));
    let store = env.store();
    let mut ids = Vec::new();
    for (suffix, fmt) in [
        ("", "tar"),
        (".a.bin", "tar+gzip"),
        (".b.bin", "tar+bzip2"),
        (".c.bin", "tar+xz"),
        (".d.bin", "tar+zstd"),
    ] {
        let p = PathBuf::from(format!("{}{suffix}", tarf.display()));
        let name = format!("min{}", fmt.replace('+', "-"));
        let img = store.add(&name, ImportSource::Path(p), &opts()).unwrap();
        assert_eq!(img.format, fmt);
        assert_eq!(
            std::fs::read_to_string(img.root.join("etc/os-release"))
                .unwrap()
                .lines()
                .next(),
            Some("ID=jobcelltest")
        );
        ids.push(img.id);
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "same content must give the same id across compressions"
    );
    // one tree shared by all five names
    let trees = std::fs::read_dir(env.images.join("private-0"))
        .unwrap()
        .count();
    assert_eq!(trees, 1);
    // hardlink in the source survives
    let a = std::fs::metadata(store.show("mintar", 0).unwrap().root.join("etc/hostname")).unwrap();
    assert_eq!(a.nlink(), 2);
    // show by id prefix is ambiguous here (five names), by name fine
    assert!(matches!(
        store.show(&ids[0][..12], 0),
        Err(ImageError::Ambiguous(_))
    ));
}

#[test]
fn private_images_invisible_to_other_users() {
    let env = Env::new();
    let store = env.store();
    let t = tarball(&[Raw::file("etc/os-release", b"ID=x\n")]);
    let own = ImportOptions {
        owner_uid: Some(1000),
        owner_gid: Some(1000),
        ..opts()
    };
    let private = add_bytes(&store, "mine", t.clone(), &own).unwrap();
    assert_eq!(private.visibility, Visibility::Private);
    let t2 = tarball(&[Raw::file("etc/os-release", b"ID=y\n")]);
    add_bytes(
        &store,
        "shared",
        t2,
        &ImportOptions {
            public: true,
            ..own.clone()
        },
    )
    .unwrap();

    let names = |uid| {
        store
            .list(uid)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(1000), vec!["mine", "shared"]);
    assert_eq!(names(0), vec!["mine", "shared"]);
    assert_eq!(names(2000), vec!["shared"]);
    // by name and by id: the same "not found" listing what uid 2000 may use
    for r in ["mine", &private.id[..12]] {
        let e = store.show(r, 2000).unwrap_err();
        assert!(
            matches!(&e, ImageError::NotFound { available, .. } if available == &vec!["shared".to_string()]),
            "{e}"
        );
        let e = store.lease(r, 2000).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("no image {r:?} visible to uid 2000; available: shared")
        );
    }
    assert!(store.lease("mine", 1000).is_ok());
    assert!(store.lease("shared", 2000).is_ok());
    // others cannot remove a public image they do not own
    assert!(matches!(
        store.remove("shared", 2000, false),
        Err(ImageError::PermissionDenied(_))
    ));
    assert!(matches!(
        store.remove("mine", 2000, false),
        Err(ImageError::NotFound { .. })
    ));
    store.remove("mine", 1000, false).unwrap();
}

#[test]
fn leases_block_removal() {
    let env = Env::new();
    let store = env.store();
    let img = add_bytes(&store, "img", tarball(&[Raw::file("bin/x", b"x")]), &opts()).unwrap();
    let l1 = store.lease("img", 0).unwrap();
    let l2 = store.lease(&img.id[..8], 1000).unwrap_err(); // private to root
    assert!(matches!(l2, ImageError::NotFound { .. }));
    let l2 = store.lease("img", 0).unwrap();
    assert_eq!(l1.root, l2.root);
    assert_eq!(l1.id, img.id);
    assert!(l1.root.join("bin/x").is_file());
    assert!(store.in_use(&img));
    // a second store (another process in real life) sees the lease too
    let other = env.store();
    assert!(matches!(
        other.remove("img", 0, false),
        Err(ImageError::InUse { .. })
    ));
    drop(l1);
    assert!(matches!(
        other.remove("img", 0, false),
        Err(ImageError::InUse { .. })
    ));
    drop(l2);
    assert!(!store.in_use(&img));
    other.remove("img", 0, false).unwrap();
    assert!(!img.root.exists());
    env.assert_no_trace(&store);
    assert!(matches!(
        store.lease("img", 0),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn force_removes_leased_image() {
    let env = Env::new();
    let store = env.store();
    let img = add_bytes(&store, "img", tarball(&[Raw::file("x", b"x")]), &opts()).unwrap();
    let _l = store.lease("img", 0).unwrap();
    store.remove("img", 0, true).unwrap();
    assert!(!img.root.exists());
}

#[test]
fn lease_fd_is_cloexec() {
    let env = Env::new();
    let store = env.store();
    add_bytes(&store, "img", tarball(&[Raw::file("x", b"x")]), &opts()).unwrap();
    let l = store.lease("img", 0).unwrap();
    use std::os::fd::AsRawFd;
    let fd = l.lock_fd().unwrap().as_raw_fd();
    // SAFETY: F_GETFD reads flags only; the lease keeps `fd` open across the call.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    assert!(flags & libc::FD_CLOEXEC != 0);
}

#[test]
fn shared_content_tree_survives_until_last_name() {
    let env = Env::new();
    let store = env.store();
    let t = tarball(&[Raw::file("x", b"same")]);
    let a = add_bytes(&store, "a", t.clone(), &opts()).unwrap();
    let b = add_bytes(&store, "b", t.clone(), &opts()).unwrap();
    assert_eq!(a.id, b.id);
    assert!(matches!(
        add_bytes(&store, "a", t, &opts()),
        Err(ImageError::NameTaken(_))
    ));
    store.remove("a", 0, false).unwrap();
    assert!(b.root.join("x").exists());
    store.remove("b", 0, false).unwrap();
    assert!(!b.root.exists());
    env.assert_no_trace(&store);
}

#[test]
fn configured_trees_listed_and_leasable() {
    let env = Env::new();
    let src = env.path("rhel5");
    minimal_tree(&src);
    let mut named = BTreeMap::new();
    named.insert("RHEL5".to_string(), src.clone());
    let store = env.store_named(named);
    let l = store.list(4242).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].kind, ImageKind::Configured);
    let lease = store.lease("RHEL5", 4242).unwrap();
    assert_eq!(lease.root, src);
    assert!(lease.lock_fd().is_none());
    assert!(matches!(
        store.remove("RHEL5", 0, false),
        Err(ImageError::Configured(_))
    ));
    assert!(matches!(
        add_bytes(&store, "RHEL5", tarball(&[Raw::file("x", b"")]), &opts()),
        Err(ImageError::NameTaken(_))
    ));
}

#[test]
fn directory_import_rules() {
    let env = Env::new();
    let src = env.path("srcdir");
    minimal_tree(&src);
    let outside = env.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(&outside, src.join("out-link")).unwrap();
    sh(&format!("mkfifo {}", src.join("fifo").display()));
    std::fs::write(src.join("suid"), "x").unwrap();
    sh(&format!("chmod 4755 {}", src.join("suid").display()));
    let store = env.store();
    let img = store
        .add("d", ImportSource::Path(src.clone()), &opts())
        .unwrap();
    // the symlink is copied as a symlink, the outside dir is not copied
    assert!(std::fs::symlink_metadata(img.root.join("out-link"))
        .unwrap()
        .file_type()
        .is_symlink());
    let found = std::process::Command::new("find")
        .arg(&img.root)
        .args(["-name", "secret"])
        .output()
        .unwrap();
    assert!(
        found.stdout.is_empty(),
        "followed a symlink out of the source: {:?}",
        found
    );
    assert!(img
        .audit
        .skipped
        .iter()
        .any(|s| s.path == "/fifo" && s.kind == "fifo"));
    assert_eq!(mode_of(&img.root.join("suid")), 0o755);
    assert_eq!(img.audit.setuid_stripped.len(), 1);
    // source untouched
    assert_eq!(mode_of(&src.join("suid")), 0o4755);
}

#[test]
fn bad_names_and_sources() {
    let env = Env::new();
    let store = env.store();
    assert!(matches!(
        add_bytes(&store, "../x", vec![], &opts()),
        Err(ImageError::BadName(_))
    ));
    let e = store
        .add("x", ImportSource::Path(env.path("missing.tar")), &opts())
        .unwrap_err();
    assert!(e.to_string().contains("missing.tar"), "{e}");
    env.assert_no_trace(&store);
}

#[test]
fn schema_version_recorded() {
    let env = Env::new();
    drop(env.store());
    let c = rusqlite_version(&env.state.join(DB_FILE));
    assert_eq!(c, SCHEMA_VERSION);
}

fn rusqlite_version(p: &Path) -> i64 {
    // The library's own dependency; read PRAGMA user_version with the sqlite3 file header
    // (offset 60, big-endian) to avoid a second SQLite in the test.
    let b = std::fs::read(p).unwrap();
    i64::from(u32::from_be_bytes([b[60], b[61], b[62], b[63]]))
}

#[test]
fn private_content_unreadable_on_host_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let store = env.store();
    let own = ImportOptions {
        owner_uid: Some(1000),
        owner_gid: Some(1000),
        ..opts()
    };
    let private = add_bytes(&store, "p", tarball(&[Raw::file("etc/secret", b"s")]), &own).unwrap();
    let public = add_bytes(
        &store,
        "q",
        tarball(&[Raw::file("etc/open", b"o")]),
        &ImportOptions {
            public: true,
            ..own
        },
    )
    .unwrap();
    let bucket = private.root.parent().unwrap();
    let md = std::fs::metadata(bucket).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o700);
    if is_root() {
        assert_eq!(md.uid(), 1000, "private bucket owned by the image owner");
    }
    assert_eq!(
        std::fs::metadata(&env.images).unwrap().permissions().mode() & 0o777,
        0o711
    );
    assert_eq!(public.root.parent().unwrap(), env.images.join("public"));
    // a non-root import (files owned by the importer) stays removable by its owner's store
    store.remove("p", 1000, false).unwrap();
    assert!(!private.root.exists());
}

#[test]
fn digest_depends_on_content_not_order() {
    let env = Env::new();
    let store = env.store();
    let big = vec![9u8; 700_000]; // spans several hashing buffers
    let a = add_bytes(
        &store,
        "a",
        tarball(&[
            Raw::file("x", b"1"),
            Raw::file("big", &big),
            Raw::file("e", b""),
        ]),
        &opts(),
    )
    .unwrap();
    let b = add_bytes(
        &store,
        "b",
        tarball(&[
            Raw::file("e", b""),
            Raw::file("big", &big),
            Raw::file("x", b"1"),
        ]),
        &opts(),
    )
    .unwrap();
    assert_eq!(a.id, b.id, "archive order changed the id");
    let mut big2 = big.clone();
    big2[650_000] = 8;
    let c = add_bytes(
        &store,
        "c",
        tarball(&[
            Raw::file("x", b"1"),
            Raw::file("big", &big2),
            Raw::file("e", b""),
        ]),
        &opts(),
    )
    .unwrap();
    assert_ne!(a.id, c.id, "a changed byte kept the id");
    let d = add_bytes(
        &store,
        "d",
        tarball(&[
            Raw::file("x", b"2"),
            Raw::file("big", &big),
            Raw::file("e", b""),
        ]),
        &opts(),
    )
    .unwrap();
    assert_ne!(a.id, d.id);
    assert_eq!(std::fs::read(c.root.join("big")).unwrap(), big2);
}
