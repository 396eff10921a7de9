//! Tar import over a synthetic archive generator: the fuzzer's bytes choose entries (kind,
//! path, link target) from a small alphabet rich in `..`, `/`, `.`, symlinks and hardlinks, the
//! archive is built with raw headers (no sanitising by the tar crate) and imported into a
//! store in a temporary dir. Invariant: whatever the outcome, nothing is created or changed
//! outside the store: the sibling dir `outside/` keeps exactly its one file, the temp dir holds
//! only `box/` and `outside/`, and a failed import leaves no staging dir.
#![no_main]
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;

use jobcell_images::{ImageStore, ImportOptions, ImportSource};
use libfuzzer_sys::fuzz_target;

const COMPONENTS: [&str; 8] = ["..", ".", "a", "b", "outside", "box", "", "etc"];

/// A path of up to 5 components, at most 3 of them `..` (so even a broken extractor could not
/// reach past the temp dir: staging is 3 levels below it).
fn path(bytes: &mut impl Iterator<Item = u8>, outside: &str) -> String {
    let first = bytes.next().unwrap_or(0);
    let n = (first % 5) as usize + 1;
    let mut parts = Vec::new();
    let mut dots = 0;
    for _ in 0..n {
        let mut c = COMPONENTS[(bytes.next().unwrap_or(2) % 8) as usize];
        if c == ".." {
            dots += 1;
            if dots > 3 {
                c = "a";
            }
        }
        parts.push(c);
    }
    let p = parts.join("/");
    match first >> 5 {
        0 => format!("/{p}"),
        1 => format!("{outside}/{p}"),
        2 => format!("./{p}"),
        _ => p,
    }
}

fn header(kind: tar::EntryType, name: &str, link: Option<&str>, size: u64) -> Option<tar::Header> {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        let nb = name.as_bytes();
        if nb.len() > old.name.len() {
            return None;
        }
        old.name[..nb.len()].copy_from_slice(nb);
        if let Some(l) = link {
            let lb = l.as_bytes();
            if lb.len() > old.linkname.len() {
                return None;
            }
            old.linkname[..lb.len()].copy_from_slice(lb);
        }
    }
    h.set_entry_type(kind);
    h.set_mode(0o755);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    Some(h)
}

fn archive(data: &[u8], outside: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut it = data.iter().copied();
    while let Some(k) = it.next() {
        let name = path(&mut it, outside);
        let (kind, link) = match k % 4 {
            0 => (tar::EntryType::Directory, None),
            1 => (tar::EntryType::Regular, None),
            2 => (tar::EntryType::Symlink, Some(path(&mut it, outside))),
            _ => (tar::EntryType::Link, Some(path(&mut it, outside))),
        };
        let body: &[u8] = if kind == tar::EntryType::Regular { b"pwned\n" } else { b"" };
        if let Some(h) = header(kind, &name, link.as_deref(), body.len() as u64) {
            let _ = b.append(&h, body);
        }
    }
    b.into_inner().unwrap_or_default()
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|r| r.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 512 {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), "keep").unwrap();
    let bx = tmp.path().join("box");
    let tar = archive(data, &outside.display().to_string());
    let store = ImageStore::open(&bx.join("state"), &bx.join("images"), BTreeMap::new())
        .expect("open store");
    let r = store.add(
        "fuzz",
        ImportSource::Reader(Box::new(Cursor::new(tar))),
        &ImportOptions { max_size: Some(1 << 20), ..Default::default() },
    );
    assert_eq!(names(tmp.path()), vec!["box", "outside"], "{r:?}");
    assert_eq!(names(&outside), vec!["sentinel"], "{r:?}");
    assert_eq!(std::fs::read_to_string(outside.join("sentinel")).unwrap(), "keep");
    if r.is_err() {
        let left: Vec<String> = names(&bx.join("images"))
            .into_iter()
            .filter(|n| n.starts_with(".staging"))
            .collect();
        assert!(left.is_empty(), "staging left after {r:?}: {left:?}");
    }
    drop(store);
});
