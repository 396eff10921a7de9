#![allow(dead_code)]
//! Helpers shared by the image store tests: a throwaway store and crafted tarballs.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jobcell_images::*;

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub state: PathBuf,
    pub images: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("jobcell-images-test")
            .tempdir()
            .unwrap();
        let state = tmp.path().join("state");
        let images = tmp.path().join("images");
        Env { tmp, state, images }
    }

    pub fn store(&self) -> ImageStore {
        ImageStore::open(&self.state, &self.images, BTreeMap::new()).unwrap()
    }

    pub fn store_named(&self, named: BTreeMap<String, PathBuf>) -> ImageStore {
        ImageStore::open(&self.state, &self.images, named).unwrap()
    }

    /// Nothing but the (empty) lock and bucket dirs may be in the images dir.
    pub fn assert_no_trace(&self, store: &ImageStore) {
        assert!(store.list(0).unwrap().is_empty(), "an image was registered");
        for e in std::fs::read_dir(&self.images).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let is_fixed = name == ".locks" || name == "public" || name.starts_with("private-");
            assert!(is_fixed, "left behind in images dir: {name}");
            let inner: Vec<_> = std::fs::read_dir(self.images.join(&name))
                .unwrap()
                .collect();
            assert!(inner.is_empty(), "left behind in {name}: {inner:?}");
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Image trees are read-only; make them removable for TempDir.
        fn unlock(p: &Path) {
            if let Ok(md) = std::fs::symlink_metadata(p) {
                if md.is_dir() {
                    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                    if let Ok(rd) = std::fs::read_dir(p) {
                        for e in rd.flatten() {
                            unlock(&e.path());
                        }
                    }
                }
            }
        }
        unlock(self.tmp.path());
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One raw tar entry; the header is written byte by byte so that paths the `tar` crate's
/// builder would refuse (`..`, absolute) can be crafted.
pub struct Raw<'a> {
    pub path: &'a [u8],
    pub kind: tar::EntryType,
    pub mode: u32,
    pub data: &'a [u8],
    pub link: &'a [u8],
    pub uid: u64,
}

impl<'a> Raw<'a> {
    pub fn file(path: &'a str, data: &'a [u8]) -> Self {
        Raw {
            path: path.as_bytes(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            data,
            link: b"",
            uid: 0,
        }
    }
    pub fn dir(path: &'a str) -> Self {
        Raw {
            path: path.as_bytes(),
            kind: tar::EntryType::Directory,
            mode: 0o755,
            data: b"",
            link: b"",
            uid: 0,
        }
    }
    pub fn symlink(path: &'a str, target: &'a str) -> Self {
        Raw {
            path: path.as_bytes(),
            kind: tar::EntryType::Symlink,
            mode: 0o777,
            data: b"",
            link: target.as_bytes(),
            uid: 0,
        }
    }
    pub fn hardlink(path: &'a str, target: &'a str) -> Self {
        Raw {
            path: path.as_bytes(),
            kind: tar::EntryType::Link,
            mode: 0o644,
            data: b"",
            link: target.as_bytes(),
            uid: 0,
        }
    }
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    pub fn kind(mut self, k: tar::EntryType) -> Self {
        self.kind = k;
        self
    }
    pub fn uid(mut self, u: u64) -> Self {
        self.uid = u;
        self
    }
}

pub fn tarball(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let g = h.as_gnu_mut().unwrap();
            g.name[..e.path.len()].copy_from_slice(e.path);
            g.linkname[..e.link.len()].copy_from_slice(e.link);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.uid);
        h.set_mtime(1_700_000_000);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn add_bytes(
    store: &ImageStore,
    name: &str,
    bytes: Vec<u8>,
    opts: &ImportOptions,
) -> Result<Image, ImageError> {
    store.add(
        name,
        ImportSource::Reader(Box::new(std::io::Cursor::new(bytes))),
        opts,
    )
}

/// A minimal OS tree: /etc/os-release, /bin/hello (setuid), a symlink and a hardlink.
pub fn minimal_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("usr/lib")).unwrap();
    std::fs::write(
        dir.join("usr/lib/os-release"),
        "ID=jobcelltest\nPRETTY_NAME=\"jobcell test image\"\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", dir.join("etc/os-release")).unwrap();
    std::fs::write(dir.join("etc/hostname"), "img\n").unwrap();
    std::fs::hard_link(dir.join("etc/hostname"), dir.join("etc/hostname.bak")).unwrap();
}

pub fn mode_of(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Run a shell command, panicking with its stderr on failure.
pub fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
