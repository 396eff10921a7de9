//! The safe extractor: every entry of a tarball or a directory walk lands here.
//!
//! Rules:
//! - paths are normalised component by component: `..` is refused, a leading `/` is dropped;
//! - each parent component is opened with `openat(O_NOFOLLOW|O_DIRECTORY)` from the staging root
//!   fd, so a symlink created earlier in the archive is never written through;
//! - symlinks are created as symlinks (targets are stored, never resolved);
//! - hardlinks only to regular files this import already extracted;
//! - setuid/setgid stripped unless `keep_setuid` (and audited either way);
//! - device nodes, fifos, sockets and unknown types are skipped and reported;
//! - ownership preserved only for root imports;
//! - a running total of unpacked bytes is checked against `max_size` before writing.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use sha2::{Digest, Sha256};

use crate::error::ImageError;
use crate::sys::{self, cstr, fd_b};
use crate::{Audit, AuditEntry, Progress, Skipped};

/// Longest accepted path (bytes) and depth; deeper trees are refused instead of risking fd
/// exhaustion in the traversal.
const MAX_PATH: usize = 4096;
const MAX_DEPTH: usize = 256;

/// Mount points the launcher needs in every image root, with the mode used when created.
const MOUNT_POINTS: &[(&str, u32)] = &[
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

#[derive(Debug)]
enum Kind {
    Dir,
    File {
        /// Index of the content hash in the hasher's results.
        sha: u32,
        size: u64,
    },
    Symlink(Vec<u8>),
    Hardlink {
        target: Vec<u8>,
        sha: u32,
        size: u64,
    },
}

#[derive(Debug)]
struct Record {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    /// Layer of a layered import that wrote it (0 for a plain import).
    layer: u32,
}

/// Content hashing on a second thread, so sha256 overlaps with the kernel's file writes.
/// File data is read straight into pooled buffers (no copies); small files are packed into
/// one buffer as segments, so the thread is woken per ~256 KiB, not per file.
struct Hasher {
    tx: Option<mpsc::SyncSender<Batch>>,
    pool: mpsc::Receiver<Vec<u8>>,
    pool_tx: mpsc::Sender<Vec<u8>>,
    allocated: usize,
    files: u32,
    cur: Vec<u8>,
    used: usize,
    /// (end offset in `cur`, this segment ends a file)
    segs: Vec<(usize, bool)>,
    handle: Option<std::thread::JoinHandle<Vec<[u8; 32]>>>,
}

struct Batch {
    buf: Vec<u8>,
    segs: Vec<(usize, bool)>,
}

const HASH_BUFS: usize = 8;
const HASH_BUF: usize = 256 << 10;

impl Hasher {
    fn new() -> Hasher {
        let (tx, rx) = mpsc::sync_channel::<Batch>(HASH_BUFS);
        let (pool_tx, pool) = mpsc::channel::<Vec<u8>>();
        let back = pool_tx.clone();
        let handle = std::thread::Builder::new()
            .name("jobcell-hash".into())
            .spawn(move || {
                let mut out = Vec::new();
                let mut h = Sha256::new();
                for b in rx {
                    let mut start = 0;
                    for &(end, ends_file) in &b.segs {
                        h.update(&b.buf[start..end]);
                        start = end;
                        if ends_file {
                            out.push(h.finalize_reset().into());
                        }
                    }
                    let _ = back.send(b.buf);
                }
                out
            })
            .ok();
        Hasher {
            tx: Some(tx),
            pool,
            pool_tx,
            allocated: 1,
            files: 0,
            cur: vec![0u8; HASH_BUF],
            used: 0,
            segs: Vec::new(),
            handle,
        }
    }

    /// A placeholder with no thread (after `results` took the real one).
    fn idle() -> Hasher {
        let (pool_tx, pool) = mpsc::channel();
        Hasher {
            tx: None,
            pool,
            pool_tx,
            allocated: 0,
            files: 0,
            cur: Vec::new(),
            used: 0,
            segs: Vec::new(),
            handle: None,
        }
    }

    fn flush(&mut self) {
        if self.segs.is_empty() {
            return;
        }
        let next = match self.pool.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < HASH_BUFS + 2 || self.tx.is_none() => {
                self.allocated += 1;
                vec![0u8; HASH_BUF]
            }
            Err(_) => self.pool.recv().unwrap_or_else(|_| vec![0u8; HASH_BUF]),
        };
        let batch = Batch {
            buf: std::mem::replace(&mut self.cur, next),
            segs: std::mem::take(&mut self.segs),
        };
        self.used = 0;
        if let Some(tx) = &self.tx {
            if let Err(mpsc::SendError(b)) = tx.send(batch) {
                self.tx = None;
                let _ = self.pool_tx.send(b.buf);
            }
        } else {
            let _ = self.pool_tx.send(batch.buf);
        }
    }

    /// Free space to read the next chunk of file data into.
    fn space(&mut self) -> &mut [u8] {
        if self.used == self.cur.len() {
            self.flush();
        }
        &mut self.cur[self.used..]
    }

    /// `n` bytes were read into `space()`; returns them.
    fn commit(&mut self, n: usize) -> &[u8] {
        let start = self.used;
        self.used += n;
        self.segs.push((self.used, false));
        &self.cur[start..self.used]
    }

    /// Close the current file; returns its index in the results.
    fn end_file(&mut self) -> u32 {
        match self.segs.last_mut() {
            Some(last) if !last.1 => last.1 = true,
            _ => self.segs.push((self.used, true)),
        }
        self.files += 1;
        self.files - 1
    }

    fn results(mut self) -> io::Result<Vec<[u8; 32]>> {
        self.flush();
        self.tx = None;
        let out = self
            .handle
            .take()
            .ok_or_else(|| io::Error::other("could not start the hashing thread"))?
            .join()
            .map_err(|_| io::Error::other("hashing thread panicked"))?;
        if out.len() != self.files as usize {
            return Err(io::Error::other("hashing thread lost files"));
        }
        Ok(out)
    }
}

pub(crate) struct Policy {
    pub keep_setuid: bool,
    /// Keep uid/gid from the archive (root imports only).
    pub preserve_owner: bool,
    /// Owner of everything when not preserving (the importer).
    pub owner: (u32, u32),
    pub max_size: Option<u64>,
    /// Bound on entries (an archive of millions of empty files costs inodes, not bytes).
    pub max_entries: Option<u64>,
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<crate::ProgressFn>,
    pub input_bytes: Arc<AtomicU64>,
    pub input_total: Option<u64>,
}

/// Where regular files of an image's layers are kept once, as hardlinks the image trees share:
/// `<bucket>/.layers/<layer digest><tag>/` (`tag` names the import policy, since setuid
/// stripping and ownership are part of what a file is).
pub(crate) struct LayerStore {
    /// The bucket's `.layers` dir; flock'd `LOCK_EX` from the sharing pass until the commit,
    /// so a collection never removes a layer between its linking and its row.
    pub dir: OwnedFd,
    pub tag: String,
}

/// A layer an image uses and the bytes of the image's files stored in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerUse {
    /// `<digest hex><tag>`: the layer's directory name in the bucket's `.layers`.
    pub key: String,
    pub size: u64,
}

pub(crate) struct Extracted {
    /// Layers whose files the tree shares, in order; empty for a plain tree.
    pub layers: Vec<LayerUse>,
    /// The layer store, still locked (see `LayerStore::dir`).
    pub _layer_lock: Option<OwnedFd>,
    pub audit: Audit,
    pub digest: String,
    pub size: u64,
    pub entries: u64,
}

pub(crate) struct Extractor<'p> {
    root: OwnedFd,
    /// Currently open directory chain below the root (component, fd): tar archives are mostly
    /// in depth-first order, so most entries reuse the parent opened for the previous one.
    stack: Vec<(Vec<u8>, OwnedFd)>,
    /// Ordered, so everything below a directory is one range (whiteouts, opaque dirs).
    records: BTreeMap<Vec<u8>, Record>,
    dirs: BTreeMap<Vec<u8>, Meta>,
    audit: Audit,
    policy: &'p Policy,
    euid: u32,
    umask: u32,
    egid: u32,
    now: i64,
    total: u64,
    entries: u64,
    hasher: Hasher,
    /// Image layers applied in order (OCI): whiteouts apply and a later layer replaces what
    /// an earlier one left in its way, as overlayfs shows it.
    layered: bool,
    /// Number of the layer being applied (1-based; 0 in a plain import).
    layer: u32,
    /// Directories made opaque in this layer (a repeated or nested marker has nothing left
    /// to remove).
    opaque_done: HashSet<Vec<u8>>,
    /// Digest (hex) of each layer applied, in order.
    layer_ids: Vec<String>,
    layer_store: Option<LayerStore>,
}

fn disp(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn entry_err(path: &[u8], reason: impl Into<String>) -> ImageError {
    ImageError::Entry {
        entry: disp(path),
        reason: reason.into(),
    }
}

/// Split an archive path into safe components. `Ok(comps, was_absolute)`.
pub(crate) fn normalize(raw: &[u8]) -> Result<(Vec<Vec<u8>>, bool), String> {
    if raw.len() > MAX_PATH {
        return Err(format!("path longer than {MAX_PATH} bytes"));
    }
    if raw.contains(&0) {
        return Err("path contains a NUL byte".into());
    }
    let absolute = raw.first() == Some(&b'/');
    let mut comps = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains a `..` component; refusing an entry that could escape the image root".into()),
            c if c.len() > 255 => return Err("path component longer than 255 bytes".into()),
            c => comps.push(c.to_vec()),
        }
    }
    if comps.len() > MAX_DEPTH {
        return Err(format!("path deeper than {MAX_DEPTH} components"));
    }
    Ok((comps, absolute))
}

/// The keys strictly below directory `key`: `key/` up to (not including) `key0` (`0` is the
/// byte after `/`).
fn subtree(key: &[u8]) -> (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) {
    let mut lo = key.to_vec();
    lo.push(b'/');
    let mut hi = key.to_vec();
    hi.push(b'/' + 1);
    (std::ops::Bound::Included(lo), std::ops::Bound::Excluded(hi))
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    comps.join(&b'/')
}

impl<'p> Extractor<'p> {
    pub fn new(root: OwnedFd, policy: &'p Policy) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut audit = Audit {
            ownership_preserved: policy.preserve_owner,
            ..Audit::default()
        };
        audit.ownership_preserved = policy.preserve_owner;
        let mut x = Extractor {
            root,
            stack: Vec::new(),
            records: BTreeMap::new(),
            dirs: BTreeMap::new(),
            audit,
            policy,
            euid: sys::geteuid(),
            umask: sys::current_umask(),
            egid: sys::getegid(),
            now,
            total: 0,
            entries: 0,
            hasher: Hasher::new(),
            layered: false,
            layer: 0,
            opaque_done: HashSet::new(),
            layer_ids: Vec::new(),
            layer_store: None,
        };
        let (uid, gid) = policy.owner;
        x.dirs.insert(
            Vec::new(),
            Meta {
                mode: 0o755,
                uid,
                gid,
                mtime: now,
            },
        );
        x
    }

    fn check_cancel(&self) -> Result<(), ImageError> {
        if let Some(c) = &self.policy.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(ImageError::Interrupted);
            }
        }
        Ok(())
    }

    fn report(&self, done: bool) {
        if let Some(p) = &self.policy.progress {
            p(&Progress {
                input_bytes: self.policy.input_bytes.load(Ordering::Relaxed),
                input_total: self.policy.input_total,
                unpacked_bytes: self.total,
                entries: self.entries,
                done,
            });
        }
    }

    /// uid/gid the entry gets, and whether a chown is needed to get there.
    fn owner_of(&self, m: &Meta) -> ((u32, u32), bool) {
        let want = if self.policy.preserve_owner {
            (m.uid, m.gid)
        } else {
            self.policy.owner
        };
        let need = self.euid == 0 && want != (self.euid, self.egid);
        let actual = if self.euid == 0 {
            want
        } else {
            (self.euid, self.egid)
        };
        (actual, need)
    }

    fn begin(&mut self, raw: &[u8]) -> Result<Vec<Vec<u8>>, ImageError> {
        self.check_cancel()?;
        let (comps, abs) = normalize(raw).map_err(|r| entry_err(raw, r))?;
        if abs {
            self.audit.absolute_paths_made_relative += 1;
        }
        self.entries += 1;
        if let Some(limit) = self.policy.max_entries {
            if self.entries > limit {
                return Err(ImageError::TooManyEntries {
                    limit,
                    entry: disp(raw),
                });
            }
        }
        if self.entries & 255 == 0 {
            self.report(false);
        }
        Ok(comps)
    }

    /// Open (creating as needed) the directory chain `comps` and return the last fd.
    fn parent(&mut self, comps: &[Vec<u8>], entry: &[u8]) -> Result<RawFd, ImageError> {
        let common = self
            .stack
            .iter()
            .zip(comps)
            .take_while(|((a, _), b)| a == *b)
            .count();
        self.stack.truncate(common);
        for i in common..comps.len() {
            let cur = self
                .stack
                .last()
                .map(|(_, f)| f.as_raw_fd())
                .unwrap_or(self.root.as_raw_fd());
            // SAFETY: `cur` is the descriptor of the last OwnedFd in `self.stack` or of
            // `self.root`, both of which stay open while this iteration uses the borrow (the stack
            // only grows after it).
            let cur = unsafe { BorrowedFd::borrow_raw(cur) };
            let name = cstr(&comps[i]).map_err(|e| entry_err(entry, e.to_string()))?;
            let fd = match sys::open_dir_at(cur, &name) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Parent not in the archive (yet): create it with defaults.
                    sys::mkdirat(cur, &name, 0o700).map_err(|e| entry_err(entry, format!("mkdir {}: {e}", disp(&join(&comps[..=i])))))?;
                    let key = join(&comps[..=i]);
                    let (uid, gid) = self.policy.owner;
                    let meta = Meta { mode: 0o755, uid, gid, mtime: self.now };
                    let ((u, g), _) = self.owner_of(&meta);
                    self.records.insert(key.clone(), Record { kind: Kind::Dir, mode: 0o755, uid: u, gid: g, layer: self.layer });
                    self.dirs.insert(key, meta);
                    sys::open_dir_at(cur, &name).map_err(|e| entry_err(entry, e.to_string()))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
                    && self.is_lower_layer(&join(&comps[..=i])) =>
                {
                    // A lower layer left a symlink or file where this layer has a directory:
                    // as in overlayfs the upper directory wins, so the entry lands inside the
                    // image instead of going through the link.
                    let key = join(&comps[..=i]);
                    sys::unlinkat(cur, &name, 0).map_err(|e| entry_err(entry, format!("replace {}: {e}", disp(&key))))?;
                    self.forget(&key);
                    sys::mkdirat(cur, &name, 0o700).map_err(|e| entry_err(entry, format!("mkdir {}: {e}", disp(&key))))?;
                    let (uid, gid) = self.policy.owner;
                    let meta = Meta { mode: 0o755, uid, gid, mtime: self.now };
                    let ((u, g), _) = self.owner_of(&meta);
                    self.records.insert(key.clone(), Record { kind: Kind::Dir, mode: 0o755, uid: u, gid: g, layer: self.layer });
                    self.dirs.insert(key, meta);
                    sys::open_dir_at(cur, &name).map_err(|e| entry_err(entry, e.to_string()))?
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    return Err(entry_err(
                        entry,
                        format!(
                            "parent {:?} is a symlink or not a directory; refusing to write through it",
                            disp(&join(&comps[..=i]))
                        ),
                    ))
                }
                Err(e) => return Err(entry_err(entry, e.to_string())),
            };
            self.stack.push((comps[i].clone(), fd));
        }
        Ok(self
            .stack
            .last()
            .map(|(_, f)| f.as_raw_fd())
            .unwrap_or(self.root.as_raw_fd()))
    }

    /// Open an existing directory chain without creating or following anything.
    fn walk_existing(&self, comps: &[Vec<u8>]) -> io::Result<OwnedFd> {
        let mut cur = sys::open_dir_at(self.root.as_fd(), c".")?;
        for c in comps {
            cur = sys::open_dir_at(fd_b(&cur), &cstr(c)?)?;
        }
        Ok(cur)
    }

    /// `name` exists where a non-directory is to be created: remove it unless it is a directory.
    fn replace_nondir(
        &mut self,
        dir: BorrowedFd,
        name: &CString,
        entry: &[u8],
        key: &[u8],
    ) -> Result<(), ImageError> {
        let st = sys::fstatat(dir, name).map_err(|e| entry_err(entry, e.to_string()))?;
        if sys::is_dir(&st) && self.is_lower_layer(key) {
            // An upper layer's non-directory hides the lower directory entirely.
            sys::remove_tree_at(dir, name)
                .map_err(|e| entry_err(entry, format!("replace lower directory: {e}")))?;
            self.forget(key);
            return Ok(());
        }
        if sys::is_dir(&st) {
            return Err(entry_err(
                entry,
                "would replace a directory extracted earlier",
            ));
        }
        sys::unlinkat(dir, name, 0)
            .map_err(|e| entry_err(entry, format!("replace earlier entry: {e}")))
    }

    fn split<'c>(
        &self,
        comps: &'c [Vec<u8>],
        raw: &[u8],
    ) -> Result<(&'c [Vec<u8>], CString), ImageError> {
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| entry_err(raw, "entry names the image root itself"))?;
        Ok((
            parents,
            cstr(last).map_err(|e| entry_err(raw, e.to_string()))?,
        ))
    }

    /// Start applying the next layer of a layered import.
    /// Share the regular files of the layers with other images through `store`.
    pub fn set_layer_store(&mut self, store: LayerStore) {
        self.layer_store = Some(store);
    }

    /// Start applying the layer whose digest (hex) is `id`.
    pub fn begin_layer(&mut self, id: &str) {
        self.layer_ids.push(id.to_string());
        self.layered = true;
        self.layer += 1;
        self.opaque_done.clear();
        self.stack.clear();
    }

    /// True when `key` exists in the tree and an earlier layer put it there.
    fn is_lower_layer(&self, key: &[u8]) -> bool {
        self.layered && self.records.get(key).is_some_and(|r| r.layer < self.layer)
    }

    /// Drop what the bookkeeping knows about `key` and everything below it. The open-directory
    /// stack is left alone: callers only remove entries below its deepest directory.
    fn forget(&mut self, key: &[u8]) {
        self.records.remove(key);
        self.dirs.remove(key);
        let below: Vec<Vec<u8>> = self
            .records
            .range(subtree(key))
            .map(|(k, _)| k.clone())
            .collect();
        for k in below {
            self.records.remove(&k);
            self.dirs.remove(&k);
        }
    }

    /// Remove `key` (and its subtree) from the image if it is there. Never follows a link: a
    /// parent that is not a real directory means there is nothing below it to remove.
    fn remove_path(&mut self, comps: &[Vec<u8>], raw: &[u8]) -> Result<(), ImageError> {
        let (parents, name) = self.split(comps, raw)?;
        self.stack.clear();
        let dir = match self.walk_existing(parents) {
            Ok(d) => d,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT) | Some(libc::ELOOP) | Some(libc::ENOTDIR)
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(entry_err(raw, e.to_string())),
        };
        sys::remove_tree_at(fd_b(&dir), &name)
            .map_err(|e| entry_err(raw, format!("whiteout: {e}")))?;
        self.forget(&join(comps));
        Ok(())
    }

    /// An OCI whiteout entry: `.wh.NAME` removes NAME of the lower layers, `.wh..wh..opq`
    /// empties its directory of everything the lower layers put there.
    pub fn whiteout(&mut self, raw: &[u8]) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        let (last, parents) = comps
            .split_last()
            .ok_or_else(|| entry_err(raw, "whiteout names the image root"))?;
        if last.as_slice() == b".wh..wh..opq" {
            let dir = join(parents);
            let done = (0..=parents.len()).any(|n| self.opaque_done.contains(&join(&parents[..n])));
            if done {
                return Ok(());
            }
            self.opaque_done.insert(dir.clone());
            let range: (std::ops::Bound<Vec<u8>>, std::ops::Bound<Vec<u8>>) = if dir.is_empty() {
                (std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            } else {
                subtree(&dir)
            };
            let mut lower: Vec<Vec<u8>> = self
                .records
                .range(range)
                .filter(|(_, r)| r.layer < self.layer)
                .map(|(k, _)| k.clone())
                .collect();
            // Shallowest first: removing a directory takes its subtree with it.
            lower.sort_by_key(|k| k.iter().filter(|&&b| b == b'/').count());
            for k in lower {
                if !self.records.contains_key(&k) {
                    continue;
                }
                let kc: Vec<Vec<u8>> = k.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
                self.remove_path(&kc, raw)?;
            }
            return Ok(());
        }
        if last.starts_with(b".wh..wh.") {
            // Other aufs metadata (hardlink dirs): nothing to apply.
            self.audit.skipped.push(Skipped {
                path: format!("/{}", disp(&join(&comps))),
                kind: "aufs metadata".into(),
            });
            return Ok(());
        }
        let target = &last[b".wh.".len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(entry_err(raw, "whiteout names no file of its directory"));
        }
        let mut tcomps = parents.to_vec();
        tcomps.push(target.to_vec());
        let key = join(&tcomps);
        if self
            .records
            .get(&key)
            .is_some_and(|r| r.layer == self.layer)
        {
            // Whiteouts hide the lower layers only, never this layer's own entries.
            return Ok(());
        }
        self.remove_path(&tcomps, raw)
    }

    pub fn dir(&mut self, raw: &[u8], meta: Meta) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        let key = join(&comps);
        let ((u, g), _) = self.owner_of(&meta);
        let mut meta = meta;
        meta.mode &= 0o7777 & !0o4000; // setuid on a directory means nothing; drop it
        if comps.is_empty() {
            self.dirs.insert(key, meta);
            return Ok(());
        }
        let (parents, name) = self.split(&comps, raw)?;
        let parents = parents.to_vec();
        let pfd = self.parent(&parents, raw)?;
        // SAFETY: `parent` returns the descriptor of an OwnedFd held in `self.stack` (or
        // `self.root`); nothing truncates the stack before this entry is done with the borrow.
        let pfd = unsafe { BorrowedFd::borrow_raw(pfd) };
        match sys::mkdirat(pfd, &name, 0o700) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let st = sys::fstatat(pfd, &name).map_err(|e| entry_err(raw, e.to_string()))?;
                if !sys::is_dir(&st) {
                    sys::unlinkat(pfd, &name, 0).map_err(|e| entry_err(raw, e.to_string()))?;
                    sys::mkdirat(pfd, &name, 0o700).map_err(|e| entry_err(raw, e.to_string()))?;
                }
            }
            Err(e) => return Err(entry_err(raw, format!("mkdir: {e}"))),
        }
        self.records.insert(
            key.clone(),
            Record {
                kind: Kind::Dir,
                mode: meta.mode,
                uid: u,
                gid: g,
                layer: self.layer,
            },
        );
        self.dirs.insert(key, meta);
        Ok(())
    }

    fn strip_setuid(&mut self, key: &[u8], mode: u32) -> u32 {
        let mode = mode & 0o7777;
        if mode & 0o6000 == 0 {
            return mode;
        }
        let rec = AuditEntry {
            path: format!("/{}", disp(key)),
            mode,
        };
        if self.policy.keep_setuid {
            self.audit.setuid_kept.push(rec);
            mode
        } else {
            self.audit.setuid_stripped.push(rec);
            mode & !0o6000
        }
    }

    pub fn file(
        &mut self,
        raw: &[u8],
        meta: Meta,
        size: u64,
        data: &mut dyn Read,
    ) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        let (parents, name) = self.split(&comps, raw)?;
        let key = join(&comps);
        if let Some(limit) = self.policy.max_size {
            if self.total.saturating_add(size) > limit {
                return Err(ImageError::TooBig {
                    limit,
                    entry: disp(raw),
                });
            }
        }
        let parents = parents.to_vec();
        let pfd = self.parent(&parents, raw)?;
        // SAFETY: `parent` returns the descriptor of an OwnedFd held in `self.stack` (or
        // `self.root`); nothing truncates the stack before this entry is done with the borrow.
        let pfd = unsafe { BorrowedFd::borrow_raw(pfd) };
        let mode = self.strip_setuid(&key, meta.mode);
        // Create with the final permission bits; fchmod only when the umask or special bits
        // would make them differ (saves a syscall per file in the common case).
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let cmode = mode & 0o777;
        let fd = match sys::openat(pfd, &name, flags, cmode) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace_nondir(pfd, &name, raw, &key)?;
                sys::openat(pfd, &name, flags, cmode)
                    .map_err(|e| entry_err(raw, format!("create: {e}")))?
            }
            Err(e) => return Err(entry_err(raw, format!("create: {e}"))),
        };
        let mut f = File::from(fd);
        let mut done: u64 = 0;
        let res = (|| -> Result<(), ImageError> {
            while done < size {
                let buf = self.hasher.space();
                let want = ((size - done) as usize).min(buf.len());
                let n = match data.read(&mut buf[..want]) {
                    Ok(0) => {
                        return Err(entry_err(
                            raw,
                            format!("archive truncated: got {done} of {size} bytes of data"),
                        ))
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.check_cancel()?;
                        continue;
                    }
                    Err(e) => {
                        return Err(entry_err(
                            raw,
                            format!("read error (corrupt archive?): {e}"),
                        ))
                    }
                };
                f.write_all(self.hasher.commit(n))
                    .map_err(|e| entry_err(raw, format!("write: {e}")))?;
                done += n as u64;
                self.total += n as u64;
                if done < size && (done & ((16 << 20) - 1)) < n as u64 {
                    self.check_cancel()?;
                    self.report(false);
                }
            }
            Ok(())
        })();
        res?;
        let sha = self.hasher.end_file();
        let ((u, g), need_chown) = self.owner_of(&meta);
        if need_chown {
            sys::fchown(f.as_fd(), u, g).map_err(|e| entry_err(raw, format!("chown: {e}")))?;
        }
        if mode & !0o777 != 0 || cmode & self.umask != 0 {
            // After fchown: chown clears setuid bits.
            sys::fchmod(f.as_fd(), mode).map_err(|e| entry_err(raw, format!("chmod: {e}")))?;
        }
        sys::futimens_mtime(f.as_fd(), meta.mtime)
            .map_err(|e| entry_err(raw, format!("utimens: {e}")))?;
        drop(f);
        self.records.insert(
            key,
            Record {
                kind: Kind::File { sha, size },
                mode,
                uid: u,
                gid: g,
                layer: self.layer,
            },
        );
        Ok(())
    }

    pub fn symlink(&mut self, raw: &[u8], meta: Meta, target: &[u8]) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        let (parents, name) = self.split(&comps, raw)?;
        let key = join(&comps);
        if target.is_empty() {
            return Err(entry_err(raw, "symlink with an empty target"));
        }
        let t = cstr(target).map_err(|_| entry_err(raw, "symlink target contains a NUL byte"))?;
        let parents = parents.to_vec();
        let pfd = self.parent(&parents, raw)?;
        // SAFETY: `parent` returns the descriptor of an OwnedFd held in `self.stack` (or
        // `self.root`); nothing truncates the stack before this entry is done with the borrow.
        let pfd = unsafe { BorrowedFd::borrow_raw(pfd) };
        match sys::symlinkat(&t, pfd, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace_nondir(pfd, &name, raw, &key)?;
                sys::symlinkat(&t, pfd, &name)
                    .map_err(|e| entry_err(raw, format!("symlink: {e}")))?;
            }
            Err(e) => return Err(entry_err(raw, format!("symlink: {e}"))),
        }
        let ((u, g), need_chown) = self.owner_of(&meta);
        if need_chown {
            sys::lchownat(pfd, &name, u, g).map_err(|e| entry_err(raw, format!("chown: {e}")))?;
        }
        self.records.insert(
            key,
            Record {
                kind: Kind::Symlink(target.to_vec()),
                mode: 0o777,
                uid: u,
                gid: g,
                layer: self.layer,
            },
        );
        Ok(())
    }

    pub fn hardlink(&mut self, raw: &[u8], target_raw: &[u8]) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        let (tcomps, _) =
            normalize(target_raw).map_err(|r| entry_err(raw, format!("hardlink target: {r}")))?;
        let (parents, name) = self.split(&comps, raw)?;
        let key = join(&comps);
        let tkey = join(&tcomps);
        if tkey == key {
            return Err(entry_err(raw, "hardlink to itself"));
        }
        // Only to a regular file this import created: never to anything on the host.
        let (canon, sha, size, mode, uid, gid) = match self.records.get(&tkey) {
            Some(Record {
                kind: Kind::File { sha, size },
                mode,
                uid,
                gid,
                ..
            }) => (tkey.clone(), *sha, *size, *mode, *uid, *gid),
            Some(Record {
                kind: Kind::Hardlink { target, sha, size },
                mode,
                uid,
                gid,
                ..
            }) => (target.clone(), *sha, *size, *mode, *uid, *gid),
            _ => {
                return Err(entry_err(
                    raw,
                    format!(
                    "hardlink target {:?} is not a regular file extracted earlier in this image",
                    disp(target_raw)
                ),
                ))
            }
        };
        let (tparents, tname) = self.split(&tcomps, raw)?;
        let tdir = self
            .walk_existing(tparents)
            .map_err(|e| entry_err(raw, format!("hardlink target: {e}")))?;
        let st = sys::fstatat(fd_b(&tdir), &tname)
            .map_err(|e| entry_err(raw, format!("hardlink target: {e}")))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(entry_err(raw, "hardlink target is not a regular file"));
        }
        let parents = parents.to_vec();
        let pfd = self.parent(&parents, raw)?;
        // SAFETY: `parent` returns the descriptor of an OwnedFd held in `self.stack` (or
        // `self.root`); nothing truncates the stack before this entry is done with the borrow.
        let pfd = unsafe { BorrowedFd::borrow_raw(pfd) };
        match sys::linkat(fd_b(&tdir), &tname, pfd, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.replace_nondir(pfd, &name, raw, &key)?;
                sys::linkat(fd_b(&tdir), &tname, pfd, &name)
                    .map_err(|e| entry_err(raw, format!("link: {e}")))?;
            }
            Err(e) => return Err(entry_err(raw, format!("link: {e}"))),
        }
        self.records.insert(
            key,
            Record {
                kind: Kind::Hardlink {
                    target: canon,
                    sha,
                    size,
                },
                mode,
                uid,
                gid,
                layer: self.layer,
            },
        );
        Ok(())
    }

    pub fn skip(&mut self, raw: &[u8], kind: &str) -> Result<(), ImageError> {
        let comps = self.begin(raw)?;
        self.audit.skipped.push(Skipped {
            path: format!("/{}", disp(&join(&comps))),
            kind: kind.to_string(),
        });
        Ok(())
    }

    pub fn note_xattrs_ignored(&mut self, n: u64) {
        self.audit.xattrs_ignored += n;
    }

    /// Make sure the directories the launcher mounts over exist as real directories.
    fn ensure_mount_points(&mut self) -> Result<(), ImageError> {
        for (mp, mode) in MOUNT_POINTS {
            let comps: Vec<Vec<u8>> = mp.split('/').map(|s| s.as_bytes().to_vec()).collect();
            let (last, parents) = comps.split_last().unwrap();
            let pdir = self.walk_existing(parents).map_err(|e| ImageError::Entry {
                entry: format!("/{}", disp(&join(parents))),
                reason: format!("needed as a real directory for the mount point /{mp}: {e}"),
            })?;
            let name = cstr(last).unwrap();
            let key = join(&comps);
            let create = match sys::fstatat(fd_b(&pdir), &name) {
                Ok(st) if sys::is_dir(&st) => false,
                Ok(st) => {
                    let what = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                        let t = sys::readlinkat(fd_b(&pdir), &name).unwrap_or_default();
                        format!("symlink -> {}", disp(&t))
                    } else {
                        "non-directory".to_string()
                    };
                    sys::unlinkat(fd_b(&pdir), &name, 0).map_err(|e| ImageError::Io {
                        context: format!("replace /{mp}"),
                        source: e,
                    })?;
                    self.audit
                        .replaced_mount_points
                        .push(format!("/{mp} (was {what})"));
                    true
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.audit.created_mount_points.push(format!("/{mp}"));
                    true
                }
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("stat /{mp}"),
                        source: e,
                    })
                }
            };
            if create {
                sys::mkdirat(fd_b(&pdir), &name, 0o700).map_err(|e| ImageError::Io {
                    context: format!("mkdir /{mp}"),
                    source: e,
                })?;
                let (uid, gid) = self.policy.owner;
                let meta = Meta {
                    mode: *mode,
                    uid: if self.policy.preserve_owner { 0 } else { uid },
                    gid: if self.policy.preserve_owner { 0 } else { gid },
                    mtime: self.now,
                };
                let ((u, g), _) = self.owner_of(&meta);
                self.records.insert(
                    key.clone(),
                    Record {
                        kind: Kind::Dir,
                        mode: *mode,
                        uid: u,
                        gid: g,
                        layer: self.layer,
                    },
                );
                self.dirs.insert(key, meta);
            }
        }
        Ok(())
    }

    /// Apply directory attributes deepest-first (a read-only parent would block its children),
    /// removing write permission: images are read-only once imported.
    fn apply_dir_attrs(&mut self) -> Result<(), ImageError> {
        // Reverse lexicographic order of component lists = children before parents, and
        // consecutive keys share prefixes, so the open-directory stack is reused.
        let mut keys: Vec<Vec<Vec<u8>>> = self
            .dirs
            .keys()
            .map(|k| {
                if k.is_empty() {
                    Vec::new()
                } else {
                    k.split(|&b| b == b'/').map(|c| c.to_vec()).collect()
                }
            })
            .collect();
        keys.sort_unstable_by(|a, b| b.cmp(a));
        self.stack.clear();
        for comps in keys {
            let key = join(&comps);
            let meta = self.dirs[&key];
            let fd = self.parent(&comps, &key)?;
            // SAFETY: `parent` returns the descriptor of an OwnedFd held in `self.stack` (or
            // `self.root`); nothing truncates the stack before this directory is done with the
            // borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let ((u, g), need_chown) = self.owner_of(&meta);
            if need_chown {
                sys::fchown(fd, u, g).map_err(|e| entry_err(&key, format!("chown: {e}")))?;
            }
            let mode = meta.mode & 0o7777 & !0o4000 & !0o222;
            sys::fchmod(fd, mode).map_err(|e| entry_err(&key, format!("chmod: {e}")))?;
            sys::futimens_mtime(fd, meta.mtime)
                .map_err(|e| entry_err(&key, format!("utimens: {e}")))?;
            self.records.insert(
                key,
                Record {
                    kind: Kind::Dir,
                    mode,
                    uid: u,
                    gid: g,
                    layer: self.layer,
                },
            );
        }
        self.stack.clear();
        Ok(())
    }

    /// sha256 over a canonical stream: entries sorted by path, each as
    /// `path \0 kind mode uid gid payload`, payload = content sha256 / link target.
    /// Order-independent and free of mtimes, so the same content gets the same id.
    fn digest(&self, shas: &[[u8; 32]]) -> String {
        let mut keys: Vec<&Vec<u8>> = self.records.keys().collect();
        keys.sort();
        let mut h = Sha256::new();
        h.update(b"jobcell-image-v1\n");
        for k in keys {
            let r = &self.records[k];
            h.update((k.len() as u32).to_le_bytes());
            h.update(k);
            let (tag, payload): (u8, Vec<u8>) = match &r.kind {
                Kind::Dir => (b'd', Vec::new()),
                Kind::File { sha, size } => (
                    b'f',
                    [&size.to_le_bytes()[..], &shas[*sha as usize][..]].concat(),
                ),
                Kind::Symlink(t) => (b'l', t.clone()),
                Kind::Hardlink { target, sha, size } => (
                    b'h',
                    [&size.to_le_bytes()[..], &shas[*sha as usize][..], target].concat(),
                ),
            };
            h.update([tag]);
            h.update(r.mode.to_le_bytes());
            h.update(r.uid.to_le_bytes());
            h.update(r.gid.to_le_bytes());
            h.update((payload.len() as u32).to_le_bytes());
            h.update(&payload);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn finish(mut self) -> Result<Extracted, ImageError> {
        self.check_cancel()?;
        if self.entries == 0 {
            return Err(ImageError::Empty);
        }
        self.stack.clear();
        self.ensure_mount_points()?;
        // Before the directories turn read-only: files are swapped for links in place.
        let (layers, layer_lock) = self.share_layers()?;
        self.apply_dir_attrs()?;
        let size = self
            .records
            .values()
            .map(|r| match r.kind {
                Kind::File { size, .. } => size,
                _ => 0,
            })
            .sum();
        let hasher = std::mem::replace(&mut self.hasher, Hasher::idle());
        let shas = hasher.results().map_err(|e| ImageError::Io {
            context: "content digest".into(),
            source: e,
        })?;
        let digest = self.digest(&shas);
        // One syncfs instead of an fsync per file: the rename that publishes the tree follows.
        sys::syncfs(self.root.as_fd()).map_err(|e| ImageError::Io {
            context: "syncfs".into(),
            source: e,
        })?;
        self.report(true);
        Ok(Extracted {
            layers,
            _layer_lock: layer_lock,
            audit: self.audit,
            digest,
            size,
            entries: self.records.len() as u64,
        })
    }
}

/// Open (creating with `create`) the directory `comps` below `root`, one `O_NOFOLLOW`
/// component at a time.
fn open_chain(root: BorrowedFd, comps: &[&[u8]], create: bool) -> io::Result<OwnedFd> {
    let mut cur: Option<OwnedFd> = None;
    for c in comps {
        let name = cstr(c)?;
        let at = cur.as_ref().map_or(root, |f| f.as_fd());
        if create {
            match sys::mkdirat(at, &name, 0o700) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        cur = Some(sys::open_dir_at(at, &name)?);
    }
    match cur {
        Some(fd) => Ok(fd),
        None => root.try_clone_to_owned(),
    }
}

impl Extractor<'_> {
    /// Make each regular file of the tree one inode with the same file of its layer in the
    /// layer store: the file is linked into the store when the store lacks it, and the tree's
    /// copy is replaced by the store's when another image put it there first. A layer's
    /// digest fixes its content, so the same path in the same layer (same policy tag) is the
    /// same file; size, mode and owner are compared anyway and a mismatch keeps the copy.
    fn share_layers(&mut self) -> Result<(Vec<LayerUse>, Option<OwnedFd>), ImageError> {
        let Some(store) = self.layer_store.take() else {
            return Ok((Vec::new(), None));
        };
        if self.layer_ids.is_empty() {
            return Ok((Vec::new(), None));
        }
        let lerr = |path: String, reason: String| ImageError::LayerStore { path, reason };
        sys::flock(store.dir.as_fd(), libc::LOCK_EX)
            .map_err(|e| lerr(".layers".into(), format!("lock: {e}")))?;
        let keys: Vec<String> = self
            .layer_ids
            .iter()
            .map(|id| format!("{id}{}", store.tag))
            .collect();
        let mut sizes = vec![0u64; keys.len()];
        let mut layer_roots: Vec<Option<OwnedFd>> = (0..keys.len()).map(|_| None).collect();
        // Records are sorted by path: siblings reuse the parents opened for the previous file.
        let mut tree_parent: Option<(Vec<u8>, OwnedFd)> = None;
        let mut layer_parent: Option<(usize, Vec<u8>, OwnedFd)> = None;
        let tmp = cstr(b".jobcell-layer-link").unwrap();
        for (key, rec) in &self.records {
            let Kind::File { size, .. } = rec.kind else {
                continue;
            };
            if rec.layer == 0 || rec.layer as usize > keys.len() {
                continue;
            }
            let l = rec.layer as usize - 1;
            let comps: Vec<&[u8]> = key.split(|c| *c == b'/').collect();
            let (name, parents) = comps.split_last().expect("a record has a name");
            let parent_key = join_refs(parents);
            let err = |what: &str, e: io::Error| entry_err(key, format!("{what}: {e}"));
            if layer_roots[l].is_none() {
                let kc = cstr(keys[l].as_bytes()).unwrap();
                match sys::mkdirat(store.dir.as_fd(), &kc, 0o700) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(lerr(keys[l].clone(), format!("create: {e}")))
                    }
                    _ => {}
                }
                let fd = sys::open_dir_at(store.dir.as_fd(), &kc).map_err(|e| {
                    lerr(
                        format!(".layers/{}", keys[l]),
                        format!("not a directory of the store ({e})"),
                    )
                })?;
                layer_roots[l] = Some(fd);
            }
            if tree_parent.as_ref().is_none_or(|(k, _)| *k != parent_key) {
                let fd = open_chain(self.root.as_fd(), parents, false)
                    .map_err(|e| err("open parent", e))?;
                tree_parent = Some((parent_key.clone(), fd));
            }
            if layer_parent
                .as_ref()
                .is_none_or(|(ll, k, _)| *ll != l || *k != parent_key)
            {
                let root = layer_roots[l].as_ref().expect("opened above");
                let fd = open_chain(root.as_fd(), parents, true).map_err(|e| {
                    lerr(
                        format!(".layers/{}/{}", keys[l], disp(&parent_key)),
                        e.to_string(),
                    )
                })?;
                layer_parent = Some((l, parent_key.clone(), fd));
            }
            let tp = tree_parent.as_ref().expect("set above").1.as_fd();
            let lp = layer_parent.as_ref().expect("set above").2.as_fd();
            let name = cstr(name).map_err(|e| err("name", e))?;
            match sys::fstatat(lp, &name) {
                Ok(st) => {
                    let same = st.st_mode & libc::S_IFMT == libc::S_IFREG
                        && st.st_size as u64 == size
                        && st.st_mode & 0o7777 == rec.mode
                        && (st.st_uid, st.st_gid) == (rec.uid, rec.gid);
                    if !same {
                        continue;
                    }
                    sys::linkat(lp, &name, tp, &tmp).map_err(|e| err("link from layer", e))?;
                    sys::renameat(tp, &tmp, tp, &name).map_err(|e| err("link from layer", e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    sys::linkat(tp, &name, lp, &name).map_err(|e| err("link into layer", e))?;
                }
                Err(e) => return Err(err("layer file", e)),
            }
            sizes[l] += size;
        }
        let layers = keys
            .into_iter()
            .zip(sizes)
            .map(|(key, size)| LayerUse { key, size })
            .collect();
        Ok((layers, Some(store.dir)))
    }
}

fn join_refs(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

/// Feed a (possibly compressed) tar stream through the extractor. Returns the format name.
pub(crate) fn import_tar<R: Read>(x: &mut Extractor, r: R) -> Result<&'static str, ImageError> {
    let (comp, dec) = crate::compress::open(r).map_err(|e| ImageError::Archive {
        where_: "header".into(),
        reason: e.to_string(),
    })?;
    let mut ar = tar::Archive::new(dec);
    let entries = ar.entries().map_err(|e| ImageError::Archive {
        where_: "start".into(),
        reason: e.to_string(),
    })?;
    let mut last: Option<String> = None;
    for e in entries {
        let mut e = e.map_err(|err| {
            x.check_cancel()
                .err()
                .unwrap_or_else(|| ImageError::Archive {
                    where_: match &last {
                        Some(l) => format!("after entry {l:?}"),
                        None if comp == crate::compress::Compression::None => {
                            "at the first entry (not a tar archive, or corrupt)".into()
                        }
                        None => "at the first entry".into(),
                    },
                    reason: err.to_string(),
                })
        })?;
        let path = e.path_bytes().into_owned();
        let h = e.header();
        let et = h.entry_type();
        let bad =
            |what: &str, err: io::Error| entry_err(&path, format!("bad {what} in header: {err}"));
        let mode = h.mode().map_err(|err| bad("mode", err))?;
        let uid = h.uid().map_err(|err| bad("uid", err))?;
        let gid = h.gid().map_err(|err| bad("gid", err))?;
        let mtime = h.mtime().map_err(|err| bad("mtime", err))?;
        let (uid, gid) = (
            u32::try_from(uid).unwrap_or(65534),
            u32::try_from(gid).unwrap_or(65534),
        );
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime: mtime.min(i64::MAX as u64) as i64,
        };
        if let Ok(Some(pax)) = e.pax_extensions() {
            let n = pax
                .filter_map(Result::ok)
                .filter(|p| p.key_bytes().starts_with(b"SCHILY.xattr."))
                .count();
            x.note_xattrs_ignored(n as u64);
        }
        use tar::EntryType as T;
        let base = path.rsplit(|&b| b == b'/').find(|c| !c.is_empty());
        if x.layered
            && base.is_some_and(|b| b.starts_with(b".wh."))
            && !matches!(
                et,
                T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
            )
        {
            x.whiteout(&path)?;
            last = Some(disp(&path));
            continue;
        }
        match et {
            T::Regular | T::Continuous | T::GNUSparse
                if path.ends_with(b"/") && et == T::Regular =>
            {
                x.dir(&path, meta)?
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let size = e.size();
                x.file(&path, meta, size, &mut e)?
            }
            T::Directory => x.dir(&path, meta)?,
            T::Symlink => {
                let t = e
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&path, "symlink without a target"))?
                    .into_owned();
                x.symlink(&path, meta, &t)?
            }
            T::Link => {
                let t = e
                    .link_name_bytes()
                    .ok_or_else(|| entry_err(&path, "hardlink without a target"))?
                    .into_owned();
                x.hardlink(&path, &t)?
            }
            T::Char => x.skip(&path, "character device")?,
            T::Block => x.skip(&path, "block device")?,
            T::Fifo => x.skip(&path, "fifo")?,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
            other => x.skip(
                &path,
                &format!("unsupported entry type {:?}", other.as_byte() as char),
            )?,
        }
        last = Some(disp(&path));
    }
    Ok(comp.format_name())
}
