//! jobcell image store: named OS trees that jobs run inside.
//!
//! Layout (all under configurable dirs):
//! ```text
//! <state_dir>/images.db            SQLite (WAL), table `images`, PRAGMA user_version = schema
//! <images_dir>/public/<sha256-hex>/       root of a public image, read-only once imported,
//!                                         shared by every public name with that content
//! <images_dir>/private-<uid>/<sha256-hex>/ private images of <uid>; the bucket dir is 0700 and
//!                                         owned by <uid>, so other local users cannot read
//!                                         the content (jobs still can: the launcher resolves
//!                                         the path before dropping privileges)
//! <images_dir>/<bucket>/.layers/<layer-hex><tag>/ regular files of a container image layer,
//!                                         hardlinked into every tree that uses the layer
//!                                         (0700; the dir itself is the layer store's flock)
//! <images_dir>/.locks/<bucket>.<hex>.lock lease lock: jobs hold LOCK_SH, `remove` needs LOCK_EX
//! <images_dir>/.staging-*          in-flight imports (flock'd by their importer)
//! ```
//! The image index is its own database file rather than a table in the daemon's `state.db`:
//! it keeps schema migrations of the two independent and lets the CLI manage images with
//! no daemon running.
//!
//! Import is atomic: extract into a staging dir, verify and digest, `renameat` to
//! `<images_dir>/<digest>`, then commit the row. A crash at any point leaves either nothing or
//! an unregistered tree/staging dir that the next `open` removes (by openat traversal that
//! never follows symlinks or crosses a mount).

mod compress;
mod dirwalk;
mod error;
mod extract;
mod image_config;
mod oci;
mod sys;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

pub use compress::Compression;
use error::io_ctx;
pub use error::ImageError;
pub use extract::LayerUse;
pub use image_config::{ImageConfig, ImageConfigError};
pub use oci::Selector;
use sys::{cstr, fd_b};

/// Schema version stored in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 3;
/// Layer store of a bucket (see the module docs).
const LAYERS_DIR: &str = ".layers";
/// File name of the index inside the state dir.
pub const DB_FILE: &str = "images.db";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only the owner and root can see and use it.
    Private,
    /// Everyone can see and use it.
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    /// Imported into the store (content-addressed, read-only tree under the images dir).
    Imported,
    /// An admin-configured tree from `[images]` in the config file (used in place).
    Configured,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Path inside the image, starting with `/`.
    pub path: String,
    /// Mode as found in the source (before stripping).
    pub mode: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: String,
    pub kind: String,
}

/// What the import changed or left out, kept with the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    pub setuid_stripped: Vec<AuditEntry>,
    /// setuid/setgid bits kept because root asked for `--keep-setuid`.
    pub setuid_kept: Vec<AuditEntry>,
    /// Device nodes, fifos, sockets, mount points of a directory import, unknown types.
    pub skipped: Vec<Skipped>,
    pub created_mount_points: Vec<String>,
    /// Mount points that were symlinks/files and were replaced with empty directories, so the
    /// launcher never mounts through a link chosen by the image author.
    pub replaced_mount_points: Vec<String>,
    pub absolute_paths_made_relative: u64,
    /// Extended attributes (incl. file capabilities) are never imported.
    pub xattrs_ignored: u64,
    pub ownership_preserved: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Content digest (sha256 hex) of an imported image; empty for a configured tree.
    pub id: String,
    pub name: String,
    pub kind: ImageKind,
    pub visibility: Visibility,
    pub owner_uid: u32,
    /// Bytes of regular-file content (hardlinks counted once).
    pub size: u64,
    /// Number of filesystem entries in the tree.
    pub entries: u64,
    /// `tar`, `tar+gzip`, `tar+bzip2`, `tar+xz`, `tar+zstd`, `dir`, `oci-layout`, `oci-archive`,
    /// `docker-archive`, or `configured`.
    pub format: String,
    /// Unix seconds.
    pub created: i64,
    pub root: PathBuf,
    pub audit: Audit,
    /// Run settings of a container image (OCI/docker config); none for a plain tree.
    #[serde(default)]
    pub config: Option<ImageConfig>,
    /// Layers of a container image whose files the tree shares with other images (in order,
    /// base first); empty for a plain tree.
    #[serde(default)]
    pub layers: Vec<LayerUse>,
    /// Bytes of `layers` that another image also uses (filled by `ImageStore::sharing`).
    #[serde(default)]
    pub shared_size: u64,
    /// `size` minus `shared_size`: what removing this image alone would free at most.
    #[serde(default)]
    pub unique_size: u64,
}

impl Image {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    pub fn visible_to(&self, uid: u32) -> bool {
        uid == 0 || self.visibility == Visibility::Public || self.owner_uid == uid
    }
}

/// Progress callback (called on the importing thread).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Import progress, reported every few hundred entries / 16 MiB and once at the end.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Bytes consumed from the source (compressed size for archives).
    pub input_bytes: u64,
    /// Total source size when known (a regular file).
    pub input_total: Option<u64>,
    pub unpacked_bytes: u64,
    pub entries: u64,
    pub done: bool,
}

pub enum ImportSource {
    /// A tarball (any supported compression) or a directory.
    Path(PathBuf),
    /// A tar stream, e.g. stdin.
    Reader(Box<dyn Read + Send>),
}

#[derive(Clone, Default)]
pub struct ImportOptions {
    pub public: bool,
    /// Root only: keep setuid/setgid bits (still audited).
    pub keep_setuid: bool,
    /// Bound on unpacked bytes (tar bombs).
    pub max_size: Option<u64>,
    /// Bound on entries: files, directories, links.
    pub max_entries: Option<u64>,
    /// Owner of the image; defaults to getuid(). Anything but 0 means files are owned by
    /// this uid instead of the archive's owners.
    pub owner_uid: Option<u32>,
    /// Group for files of a non-root import; defaults to getgid().
    pub owner_gid: Option<u32>,
    /// Set to abort the import (e.g. from a SIGINT handler); cleanup is done before returning.
    pub cancel: Option<Arc<AtomicBool>>,
    pub progress: Option<ProgressFn>,
    /// Which image of a multi-image container source to import.
    pub select: Selector,
}

/// A job's hold on an image. While it lives, `remove` refuses the image (without `force`).
///
/// The lock is a shared `flock` on `<images_dir>/.locks/<id>.lock` through a CLOEXEC fd: the
/// exec'd job never inherits it; a forked supervisor does (flock belongs to the open file
/// description), so the image stays held until every holder exits.
#[derive(Debug)]
pub struct ImageLease {
    pub name: String,
    /// Content digest; empty for a configured tree.
    pub id: String,
    /// Directory to pivot_root into (mount it read-only + nosuid).
    pub root: PathBuf,
    pub kind: ImageKind,
    /// The container image's run settings, to apply to the job before it launches.
    pub config: Option<ImageConfig>,
    lock: Option<File>,
}

impl ImageLease {
    /// The lock fd (None for configured trees), e.g. to dup without CLOEXEC into a supervisor
    /// that must keep the image held after the launcher exits.
    pub fn lock_fd(&self) -> Option<BorrowedFd<'_>> {
        self.lock.as_ref().map(|f| f.as_fd())
    }
}

pub struct ImageStore {
    images_dir: PathBuf,
    images_fd: OwnedFd,
    db_path: PathBuf,
    conn: Connection,
    named: BTreeMap<String, PathBuf>,
    /// Why the state dir is not writable (the store is then read-only: list, show, lease).
    read_only: Option<String>,
}

/// 1–128 chars of `[A-Za-z0-9._-]`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

struct Counting<R> {
    inner: R,
    n: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

/// Read until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Removes a staging dir on drop unless disarmed (error, panic-free early return, cancel).
struct Staging<'a> {
    parent: BorrowedFd<'a>,
    name: CString,
    armed: bool,
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = sys::remove_tree_at(self.parent, &self.name);
        }
    }
}

fn unique_suffix() -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::process::id(),
        t.as_nanos(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether the process that named a `.staging-<pid>-...`/`.trash-<pid>-...` dir still runs
/// (this one included: another thread may be importing). A recycled pid only delays the
/// removal until that process is gone.
fn creator_alive(name: &[u8]) -> bool {
    let rest = name.splitn(2, |c| *c == b'-').nth(1).unwrap_or_default();
    let pid = rest.split(|c| *c == b'-').next().unwrap_or_default();
    match std::str::from_utf8(pid)
        .ok()
        .and_then(|p| p.parse::<i32>().ok())
    {
        // SAFETY: signal 0 only checks that the pid exists and delivers nothing; errno is this
        // thread's own, read right after the call.
        Some(p) if p > 0 => unsafe {
            libc::kill(p, 0) == 0 || *libc::__errno_location() == libc::EPERM
        },
        _ => false,
    }
}

/// Debug builds only: `JOBCELL_CRASH_AT=<point>` SIGKILLs the process at a named step of an
/// import, so tests can check what a crash there leaves.
fn crash_point(_point: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("JOBCELL_CRASH_AT").is_some_and(|v| v == _point) {
        // SAFETY: getpid cannot fail and SIGKILL to ourselves is the intended crash: nothing runs
        // after it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Directory (below the images dir) holding trees of this visibility and owner.
fn bucket(public: bool, owner: u32) -> String {
    if public {
        "public".to_string()
    } else {
        format!("private-{owner}")
    }
}

fn bucket_of(img: &Image) -> String {
    bucket(img.visibility == Visibility::Public, img.owner_uid)
}

fn is_digest(name: &[u8]) -> bool {
    name.len() == 64
        && name
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

impl ImageStore {
    /// Open (creating if needed) the store. `named` are admin-configured trees, listed and
    /// leasable by everyone, never imported or removed here.
    pub fn open(
        state_dir: &Path,
        images_dir: &Path,
        named: BTreeMap<String, PathBuf>,
    ) -> Result<Self, ImageError> {
        use std::os::unix::fs::PermissionsExt;
        for d in [state_dir, images_dir] {
            if !d.is_dir() {
                std::fs::create_dir_all(d).map_err(io_ctx(format!("create {}", d.display())))?;
                if d == images_dir {
                    // Traversable, not listable: tree paths are not enumerable by other users.
                    let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711));
                }
            }
        }
        let images_fd = sys::open_dir_path(images_dir)
            .map_err(io_ctx(format!("open images dir {}", images_dir.display())))?;
        let db_path = state_dir.join(DB_FILE);
        // SAFETY: `c` is NUL-terminated and outlives the access call; errno is read right after it
        // on this thread.
        let read_only = unsafe {
            let c = sys::path_c(state_dir).map_err(io_ctx("state dir"))?;
            (libc::access(c.as_ptr(), libc::W_OK) != 0)
                .then(|| io::Error::last_os_error().to_string())
        };
        let writable = read_only.is_none();
        let dberr = |source| ImageError::Db {
            path: db_path.clone(),
            source,
        };
        let conn = if writable {
            Connection::open(&db_path).map_err(dberr)?
        } else {
            Connection::open_with_flags(
                &db_path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(dberr)?
        };
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(dberr)?;
        let store = ImageStore {
            images_dir: images_dir.to_path_buf(),
            images_fd,
            db_path: db_path.clone(),
            conn,
            named,
            read_only,
        };
        if writable {
            // Keep the -wal/-shm files after the last writer closes, so users without write
            // access to the state dir can still open the index read-only (WAL readers need them).
            // SAFETY: `handle()` is the live connection `store` owns; "main" is NUL-terminated;
            // PERSIST_WAL reads and writes the one c_int `on` points at, alive across the call.
            unsafe {
                let mut on: libc::c_int = 1;
                rusqlite::ffi::sqlite3_file_control(
                    store.conn.handle(),
                    c"main".as_ptr(),
                    rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
                    &mut on as *mut libc::c_int as *mut std::ffi::c_void,
                );
            }
            store
                .conn
                .pragma_update(None, "synchronous", "NORMAL")
                .map_err(dberr)?;
            // Opening must stay cheap (every `jobcell run --image` does it): migrate only when
            // the schema is behind, and only sweep the top level of the images dir here.
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(dberr)?;
            if v < SCHEMA_VERSION {
                store.migrate()?;
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", db_path.display()));
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
                }
            } else if v > SCHEMA_VERSION {
                return Err(ImageError::SchemaTooNew {
                    path: db_path,
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
            let _ = sys::mkdirat(fd_b(&store.images_fd), c".locks", 0o755);
            let _ = sys::mkdirat(fd_b(&store.images_fd), c"public", 0o755);
            store.cleanup_stale(false);
        } else {
            let v: i64 = store
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(dberr)?;
            if v > SCHEMA_VERSION {
                return Err(ImageError::SchemaTooNew {
                    path: db_path,
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
        }
        Ok(store)
    }

    /// Refuse a change up front (rather than after extracting a whole tree) when the state dir
    /// is not writable, e.g. on a read-only filesystem.
    fn check_writable(&self) -> Result<(), ImageError> {
        match &self.read_only {
            None => Ok(()),
            Some(reason) => Err(ImageError::ReadOnly {
                path: self
                    .db_path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                uid: sys::geteuid(),
                reason: reason.clone(),
            }),
        }
    }

    fn db_err(&self) -> impl Fn(rusqlite::Error) -> ImageError + '_ {
        |source| ImageError::Db {
            path: self.db_path.clone(),
            source,
        }
    }

    fn migrate(&self) -> Result<(), ImageError> {
        let e = self.db_err();
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(&e)?;
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(&e)?;
        let r = (|| {
            let v: i64 = self
                .conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .map_err(&e)?;
            if v > SCHEMA_VERSION {
                return Err(ImageError::SchemaTooNew {
                    path: self.db_path.clone(),
                    found: v,
                    known: SCHEMA_VERSION,
                });
            }
            if v < 1 {
                self.conn
                    .execute_batch(
                        "CREATE TABLE images (
                            name      TEXT PRIMARY KEY,
                            digest    TEXT NOT NULL,
                            owner_uid INTEGER NOT NULL,
                            public    INTEGER NOT NULL,
                            size      INTEGER NOT NULL,
                            entries   INTEGER NOT NULL,
                            format    TEXT NOT NULL,
                            created   INTEGER NOT NULL,
                            audit     TEXT NOT NULL
                        );
                        CREATE INDEX images_digest ON images(digest);
                        PRAGMA user_version = 1;",
                    )
                    .map_err(&e)?;
            }
            if v < 2 {
                // The run settings of a container image (JSON), NULL for a plain tree.
                self.conn
                    .execute_batch(
                        "ALTER TABLE images ADD COLUMN config TEXT;
                        PRAGMA user_version = 2;",
                    )
                    .map_err(&e)?;
            }
            if v < 3 {
                // Layers a container image's tree shares (JSON list of `LayerUse`).
                self.conn
                    .execute_batch(
                        "ALTER TABLE images ADD COLUMN layers TEXT;
                        PRAGMA user_version = 3;",
                    )
                    .map_err(&e)?;
            }
            Ok(())
        })();
        match r {
            Ok(()) => self.conn.execute_batch("COMMIT").map_err(&e),
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(err)
            }
        }
    }

    /// Remove leftovers of crashed imports/removals: unlocked `.staging-*`, `.trash-*` (at
    /// every open), and with `trees` also trees without a row (before an add or remove).
    /// Best effort; errors are ignored (the next call retries).
    fn cleanup_stale(&self, trees: bool) {
        let Ok(names) = sys::read_dir_names(fd_b(&self.images_fd)) else {
            return;
        };
        for name in names {
            let b = name.to_bytes();
            if b.starts_with(b".staging-") || b.starts_with(b".trash-") {
                // The creator is alive: a staging dir is not locked yet right after its
                // mkdir, and a trash dir is never locked while `remove` empties it.
                if creator_alive(b) {
                    continue;
                }
                let Ok(fd) = sys::open_dir_at(fd_b(&self.images_fd), &name) else {
                    continue;
                };
                // A live import holds LOCK_EX on its staging dir (also across the rename).
                if sys::flock(fd_b(&fd), libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false) {
                    let _ = sys::remove_tree_at(fd_b(&self.images_fd), &name);
                }
            } else if trees && (b == b"public" || b.starts_with(b"private-")) {
                let Ok(bfd) = sys::open_dir_at(fd_b(&self.images_fd), &name) else {
                    continue;
                };
                let bucket = String::from_utf8_lossy(b).into_owned();
                for t in sys::read_dir_names(fd_b(&bfd)).unwrap_or_default() {
                    if !is_digest(t.to_bytes()) {
                        continue;
                    }
                    let Ok(fd) = sys::open_dir_at(fd_b(&bfd), &t) else {
                        continue;
                    };
                    if !sys::flock(fd_b(&fd), libc::LOCK_EX | libc::LOCK_NB).unwrap_or(false) {
                        continue;
                    }
                    let d = String::from_utf8_lossy(t.to_bytes()).into_owned();
                    if self.tree_refs(&bucket, &d).unwrap_or(1) == 0 {
                        let _ = sys::remove_tree_at(fd_b(&bfd), &t);
                    }
                }
            }
        }
    }

    /// Rows whose tree is `<bucket>/<digest>`.
    fn tree_refs(&self, bucket_name: &str, digest: &str) -> Result<i64, ImageError> {
        let (public, owner): (i64, i64) = if bucket_name == "public" {
            (1, -1)
        } else {
            match bucket_name
                .strip_prefix("private-")
                .and_then(|u| u.parse::<u32>().ok())
            {
                Some(u) => (0, i64::from(u)),
                None => return Ok(1),
            }
        };
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM images
                 WHERE digest = ?1 AND public = ?2 AND (public = 1 OR owner_uid = ?3)",
                params![digest, public, owner],
                |r| r.get(0),
            )
            .map_err(self.db_err())
    }

    pub fn images_dir(&self) -> &Path {
        &self.images_dir
    }

    fn row_to_image(&self, r: &rusqlite::Row) -> rusqlite::Result<Image> {
        let digest: String = r.get(1)?;
        let audit: String = r.get(8)?;
        let config: Option<String> = r.get(9)?;
        let layers: Option<String> = r.get(10)?;
        Ok(Image {
            root: self
                .images_dir
                .join(bucket(r.get::<_, i64>(3)? != 0, r.get(2)?))
                .join(&digest),
            id: digest,
            name: r.get(0)?,
            kind: ImageKind::Imported,
            owner_uid: r.get(2)?,
            visibility: if r.get::<_, i64>(3)? != 0 {
                Visibility::Public
            } else {
                Visibility::Private
            },
            size: r.get::<_, i64>(4)? as u64,
            entries: r.get::<_, i64>(5)? as u64,
            format: r.get(6)?,
            created: r.get(7)?,
            audit: serde_json::from_str(&audit).unwrap_or_default(),
            config: config.and_then(|c| serde_json::from_str(&c).ok()),
            layers: layers
                .and_then(|l| serde_json::from_str(&l).ok())
                .unwrap_or_default(),
            shared_size: 0,
            unique_size: 0,
        })
    }

    fn all_rows(&self) -> Result<Vec<Image>, ImageError> {
        let e = self.db_err();
        let mut st = self
            .conn
            .prepare_cached("SELECT name, digest, owner_uid, public, size, entries, format, created, audit, config, layers FROM images ORDER BY name")
            .map_err(&e)?;
        let rows = st.query_map([], |r| self.row_to_image(r)).map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(&e)
    }

    fn row_by_name(&self, name: &str) -> Result<Option<Image>, ImageError> {
        let e = self.db_err();
        let mut st = self
            .conn
            .prepare_cached("SELECT name, digest, owner_uid, public, size, entries, format, created, audit, config, layers FROM images WHERE name = ?1")
            .map_err(&e)?;
        st.query_row([name], |r| self.row_to_image(r))
            .optional()
            .map_err(&e)
    }

    fn configured(&self, name: &str, path: &Path) -> Image {
        Image {
            id: String::new(),
            name: name.to_string(),
            kind: ImageKind::Configured,
            visibility: Visibility::Public,
            owner_uid: 0,
            size: 0,
            entries: 0,
            format: "configured".into(),
            created: 0,
            root: path.to_path_buf(),
            audit: Audit::default(),
            config: None,
            layers: Vec::new(),
            shared_size: 0,
            unique_size: 0,
        }
    }

    /// Images `viewer_uid` may see and use: configured trees, public images, its own (root: all).
    pub fn list(&self, viewer_uid: u32) -> Result<Vec<Image>, ImageError> {
        let mut out: Vec<Image> = self
            .named
            .iter()
            .map(|(n, p)| self.configured(n, p))
            .collect();
        out.extend(
            self.all_rows()?
                .into_iter()
                .filter(|i| i.visible_to(viewer_uid)),
        );
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn not_found(&self, name: &str, uid: u32) -> ImageError {
        let available = self
            .list(uid)
            .map(|l| l.into_iter().map(|i| i.name).collect())
            .unwrap_or_default();
        ImageError::NotFound {
            name: name.to_string(),
            uid,
            available,
        }
    }

    /// By name first, then by id (digest prefix of at least 4 hex digits, `sha256:` allowed).
    pub fn show(&self, name_or_id: &str, viewer_uid: u32) -> Result<Image, ImageError> {
        if let Some(p) = self.named.get(name_or_id) {
            return Ok(self.configured(name_or_id, p));
        }
        // Fast path (every job launch): one indexed row by name.
        if let Some(i) = self.row_by_name(name_or_id)? {
            if i.visible_to(viewer_uid) {
                return Ok(i);
            }
        }
        let visible: Vec<Image> = self
            .all_rows()?
            .into_iter()
            .filter(|i| i.visible_to(viewer_uid))
            .collect();
        if let Some(i) = visible.iter().find(|i| i.name == name_or_id) {
            return Ok(i.clone());
        }
        let pfx = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if pfx.len() >= 4 && pfx.bytes().all(|c| c.is_ascii_hexdigit()) {
            let pfx = pfx.to_ascii_lowercase();
            let mut m: Vec<&Image> = visible.iter().filter(|i| i.id.starts_with(&pfx)).collect();
            match m.len() {
                0 => {}
                1 => return Ok(m.remove(0).clone()),
                _ => return Err(ImageError::Ambiguous(name_or_id.to_string())),
            }
        }
        Err(self.not_found(name_or_id, viewer_uid))
    }

    fn lock_path(&self, bucket: &str, digest: &str) -> PathBuf {
        self.images_dir
            .join(".locks")
            .join(format!("{bucket}.{digest}.lock"))
    }

    /// Import a tree under `name`. Nothing is registered (and no staging dir remains) unless
    /// the whole import succeeds.
    pub fn add(
        &self,
        name: &str,
        source: ImportSource,
        opts: &ImportOptions,
    ) -> Result<Image, ImageError> {
        self.add_inner(name, source, opts).map_err(|e| {
            if e.is_no_space() {
                ImageError::NoSpace {
                    dir: self.images_dir.clone(),
                    detail: e.to_string(),
                }
            } else {
                e
            }
        })
    }

    fn add_inner(
        &self,
        name: &str,
        source: ImportSource,
        opts: &ImportOptions,
    ) -> Result<Image, ImageError> {
        if !valid_name(name) {
            return Err(ImageError::BadName(name.to_string()));
        }
        if self.named.contains_key(name) {
            return Err(ImageError::NameTaken(name.to_string()));
        }
        if self.name_taken(name)? {
            return Err(ImageError::NameTaken(name.to_string()));
        }
        self.check_writable()?;
        self.cleanup_stale(true);
        let owner_uid = opts.owner_uid.unwrap_or_else(sys::getuid);
        let owner_gid =
            opts.owner_gid
                .unwrap_or_else(|| if owner_uid == 0 { 0 } else { sys::getgid() });
        if opts.keep_setuid && owner_uid != 0 {
            return Err(ImageError::PermissionDenied(
                "--keep-setuid is only for root".into(),
            ));
        }
        let staging_name = cstr(format!(".staging-{}", unique_suffix()).as_bytes()).unwrap();
        sys::mkdirat(fd_b(&self.images_fd), &staging_name, 0o700).map_err(io_ctx(format!(
            "create staging dir in {}",
            self.images_dir.display()
        )))?;
        let mut guard = Staging {
            parent: fd_b(&self.images_fd),
            name: staging_name.clone(),
            armed: true,
        };
        let staging = sys::open_dir_at(fd_b(&self.images_fd), &staging_name)
            .map_err(io_ctx("open staging dir"))?;
        sys::flock(fd_b(&staging), libc::LOCK_EX).map_err(io_ctx("lock staging dir"))?;
        crash_point("image-staging");

        let input_bytes = Arc::new(AtomicU64::new(0));
        let mut policy = extract::Policy {
            keep_setuid: opts.keep_setuid,
            preserve_owner: owner_uid == 0,
            owner: (owner_uid, owner_gid),
            max_size: opts.max_size,
            max_entries: opts.max_entries,
            cancel: opts.cancel.clone(),
            progress: opts.progress.clone(),
            input_bytes: input_bytes.clone(),
            input_total: None,
        };
        let root = staging.try_clone().map_err(io_ctx("dup staging fd"))?;
        let format;
        let mut config = None;
        // A container image (OCI layout or archive, docker archive) is read from an indexed
        // file; everything else streams through the tar reader as before.
        let container = |file: File,
                         opened: bool|
         -> Result<Result<(oci::Blobs, oci::Container), File>, ImageError> {
            let mut head = [0u8; 512];
            let n = std::os::unix::fs::FileExt::read_at(&file, &mut head, 0)
                .map_err(io_ctx("read the source"))?;
            if !opened && !oci::looks_like_container(&head[..n]) {
                return Ok(Err(file));
            }
            let blobs = oci::Blobs::index_tar(file)?;
            match oci::detect(&blobs) {
                Some(kind) => Ok(Ok((blobs, kind))),
                None => match blobs {
                    oci::Blobs::Tar { mut file, .. } => {
                        io::Seek::rewind(&mut file).map_err(io_ctx("rewind the source"))?;
                        Ok(Err(file))
                    }
                    oci::Blobs::Dir(_) => unreachable!("index_tar makes a tar index"),
                },
            }
        };
        let not_container = || {
            ImageError::Archive {
            where_: "start".into(),
            reason: "looks like a container image but has neither index.json + oci-layout nor manifest.json".into(),
        }
        };
        let ex = match source {
            ImportSource::Path(p) => {
                let md =
                    std::fs::metadata(&p).map_err(io_ctx(format!("source {}", p.display())))?;
                if md.is_dir() && oci::is_layout_dir(&p) {
                    let blobs = oci::Blobs::Dir(p.clone());
                    let (c, f, done) = self.import_container(
                        root,
                        &policy,
                        opts,
                        owner_uid,
                        &blobs,
                        oci::Container::OciLayout,
                        input_bytes.clone(),
                    )?;
                    (config, format) = (Some(c), f);
                    done
                } else if md.is_dir() {
                    let mut x = extract::Extractor::new(root, &policy);
                    dirwalk::import_dir(&mut x, &p)?;
                    format = "dir";
                    x.finish()?
                } else if md.is_file() {
                    policy.input_total = Some(md.len());
                    let f = File::open(&p).map_err(io_ctx(format!("source {}", p.display())))?;
                    let found = match self.spool_compressed_container(
                        &f,
                        opts.max_size,
                        opts.cancel.as_deref(),
                    )? {
                        Some(spool) => Ok(container(spool, true)?.map_err(|_| not_container())?),
                        None => container(f, false)?,
                    };
                    match found {
                        Ok((blobs, kind)) => {
                            let (c, f, done) = self.import_container(
                                root,
                                &policy,
                                opts,
                                owner_uid,
                                &blobs,
                                kind,
                                input_bytes.clone(),
                            )?;
                            (config, format) = (Some(c), f);
                            done
                        }
                        Err(f) => {
                            let r = Counting {
                                // Small: reads of file data (256 KiB) then bypass the buffer and go
                                // straight into the hashing buffers (one copy fewer per byte).
                                inner: io::BufReader::with_capacity(64 << 10, f),
                                n: input_bytes.clone(),
                            };
                            let mut x = extract::Extractor::new(root, &policy);
                            format = extract::import_tar(&mut x, r)?;
                            x.finish()?
                        }
                    }
                } else {
                    return Err(ImageError::BadSource(p));
                }
            }
            ImportSource::Reader(r) => {
                let counted = Counting {
                    inner: io::BufReader::with_capacity(1 << 20, r),
                    n: input_bytes.clone(),
                };
                let (comp, mut dec) = compress::open(counted).map_err(|e| ImageError::Archive {
                    where_: "header".into(),
                    reason: e.to_string(),
                })?;
                let mut head = vec![0u8; 512];
                let n = read_full(&mut dec, &mut head).map_err(io_ctx("read the image stream"))?;
                head.truncate(n);
                let is_container = oci::looks_like_container(&head);
                let mut r = io::Cursor::new(head).chain(dec);
                if is_container {
                    // Blobs are read out of order: keep the stream in an unnamed file first.
                    let spool = self.spool(&mut r, opts.max_size, opts.cancel.as_deref())?;
                    let (blobs, kind) = container(spool, true)?.map_err(|_| not_container())?;
                    let (c, f, done) = self.import_container(
                        root,
                        &policy,
                        opts,
                        owner_uid,
                        &blobs,
                        kind,
                        input_bytes.clone(),
                    )?;
                    (config, format) = (Some(c), f);
                    done
                } else {
                    let mut x = extract::Extractor::new(root, &policy);
                    // Decompressed above already: the format is what was found there.
                    extract::import_tar(&mut x, r)?;
                    format = comp.format_name();
                    x.finish()?
                }
            }
        };
        if let Some(c) = &opts.cancel {
            if c.load(Ordering::Relaxed) {
                return Err(ImageError::Interrupted);
            }
        }
        if config.is_none() && (opts.select.reference.is_some() || opts.select.platform.is_some()) {
            return Err(ImageError::Container {
                what: "--ref/--platform".into(),
                reason: "the source is not a container image (OCI layout, oci-archive or docker-archive)".into(),
            });
        }
        crash_point("image-extracted");
        let img = self.commit(
            name,
            &ex,
            format,
            config.as_ref(),
            owner_uid,
            opts.public,
            &mut guard,
            &staging,
        )?;
        // Release the layer store before collecting in it.
        drop(ex);
        // Best effort: a failure leaves unreferenced layers for the next collection.
        let _ = self.gc();
        Ok(img)
    }

    /// Copy a stream into an unnamed file in the images dir (gone when closed), bounded by
    /// `limit` bytes.
    fn spool(
        &self,
        r: &mut impl Read,
        limit: Option<u64>,
        cancel: Option<&AtomicBool>,
    ) -> Result<File, ImageError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_TMPFILE)
            .open(&self.images_dir)
            .map_err(io_ctx(format!(
                "spool file in {}",
                self.images_dir.display()
            )))?;
        let bound = limit.unwrap_or(u64::MAX);
        let mut buf = vec![0u8; 1 << 20];
        let mut n: u64 = 0;
        loop {
            // The cancel flag is seen between reads (a signal makes a blocked read EINTR).
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(ImageError::Interrupted);
            }
            let k = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_ctx("spool the image stream")(e)),
            };
            n += k as u64;
            if n > bound {
                return Err(ImageError::TooBig {
                    limit: bound,
                    entry: "(the archive itself)".into(),
                });
            }
            io::Write::write_all(&mut f, &buf[..k]).map_err(io_ctx("spool the image stream"))?;
        }
        Ok(f)
    }

    /// A compressed tarball holding a container image (`docker save | gzip`): its decompressed
    /// stream in an unnamed file. `None` (file rewound) when it is anything else.
    fn spool_compressed_container(
        &self,
        file: &File,
        limit: Option<u64>,
        cancel: Option<&AtomicBool>,
    ) -> Result<Option<File>, ImageError> {
        let mut magic = [0u8; 6];
        let n = std::os::unix::fs::FileExt::read_at(file, &mut magic, 0)
            .map_err(io_ctx("read the source"))?;
        if Compression::detect(&magic[..n]) == Compression::None {
            return Ok(None);
        }
        // A dup shares the file position: rewound below for the plain import.
        let mut dup = file.try_clone().map_err(io_ctx("dup the source"))?;
        let (_, mut dec) = compress::open(&mut dup).map_err(|e| ImageError::Archive {
            where_: "header".into(),
            reason: e.to_string(),
        })?;
        let mut head = vec![0u8; 512];
        let n = read_full(&mut dec, &mut head).map_err(io_ctx("read the source"))?;
        head.truncate(n);
        if !oci::looks_like_container(&head) {
            drop(dec);
            io::Seek::rewind(&mut dup).map_err(io_ctx("rewind the source"))?;
            return Ok(None);
        }
        let mut r = io::Cursor::new(head).chain(dec);
        Ok(Some(self.spool(&mut r, limit, cancel)?))
    }

    /// The bucket dir of images of this visibility and owner, created on first use.
    fn open_bucket(&self, public: bool, owner_uid: u32) -> Result<OwnedFd, ImageError> {
        let bucket_name = bucket(public, owner_uid);
        let bucket_c = cstr(bucket_name.as_bytes()).unwrap();
        match sys::open_dir_at(fd_b(&self.images_fd), &bucket_c) {
            Ok(fd) => Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let _ = sys::mkdirat(
                    fd_b(&self.images_fd),
                    &bucket_c,
                    if public { 0o755 } else { 0o700 },
                );
                let fd = sys::open_dir_at(fd_b(&self.images_fd), &bucket_c)
                    .map_err(io_ctx(format!("open {bucket_name} in the images dir")))?;
                if !public && sys::geteuid() == 0 && owner_uid != 0 {
                    sys::fchown(fd_b(&fd), owner_uid, u32::MAX)
                        .map_err(io_ctx("chown private image dir"))?;
                }
                Ok(fd)
            }
            Err(e) => Err(ImageError::Io {
                context: format!("open {bucket_name} in the images dir"),
                source: e,
            }),
        }
    }

    /// The bucket's layer store for an import with this policy. `.layers` is made 0700 (only
    /// the store's owner and root use it: jobs run in the trees) and opened without following
    /// a symlink.
    /// A container image's layers applied into `root` (their files shared through the
    /// bucket's layer store), with its config and the name of its format.
    #[allow(clippy::too_many_arguments)]
    fn import_container(
        &self,
        root: OwnedFd,
        policy: &extract::Policy,
        opts: &ImportOptions,
        owner_uid: u32,
        blobs: &oci::Blobs,
        kind: oci::Container,
        input_bytes: Arc<AtomicU64>,
    ) -> Result<(ImageConfig, &'static str, extract::Extracted), ImageError> {
        let mut x = extract::Extractor::new(root, policy);
        x.set_layer_store(self.layer_store(opts.public, owner_uid, policy)?);
        let config = oci::import(&mut x, blobs, kind, &opts.select, input_bytes)?;
        Ok((config, kind.format_name(), x.finish()?))
    }

    fn layer_store(
        &self,
        public: bool,
        owner_uid: u32,
        policy: &extract::Policy,
    ) -> Result<extract::LayerStore, ImageError> {
        let bfd = self.open_bucket(public, owner_uid)?;
        let name = cstr(LAYERS_DIR.as_bytes()).unwrap();
        match sys::mkdirat(fd_b(&bfd), &name, 0o700) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(io_ctx(format!("create {LAYERS_DIR} in the images dir"))(e))
            }
            _ => {}
        }
        let dir = sys::open_dir_at(fd_b(&bfd), &name).map_err(|e| ImageError::LayerStore {
            path: format!("{}/{LAYERS_DIR}", bucket(public, owner_uid)),
            reason: format!("not a directory of the store ({e})"),
        })?;
        // What a file becomes depends on the policy as well as the layer: name it in the key.
        let mut tag = String::new();
        if !policy.preserve_owner {
            let (u, g) = if sys::geteuid() == 0 {
                policy.owner
            } else {
                (sys::geteuid(), sys::getegid())
            };
            tag.push_str(&format!("-u{u}.g{g}"));
        }
        if policy.keep_setuid {
            tag.push_str("-setuid");
        }
        Ok(extract::LayerStore { dir, tag })
    }

    /// Fill `shared_size`/`unique_size` of imported images: a layer's bytes count as shared
    /// when another image of the same bucket uses that layer too.
    pub fn sharing(&self, imgs: &mut [Image]) -> Result<(), ImageError> {
        let all = self.all_rows()?;
        for img in imgs.iter_mut() {
            if img.kind == ImageKind::Configured {
                continue;
            }
            let b = bucket_of(img);
            let shared: u64 = img
                .layers
                .iter()
                .filter(|l| {
                    all.iter().any(|o| {
                        o.name != img.name
                            && bucket_of(o) == b
                            && o.layers.iter().any(|ol| ol.key == l.key)
                    })
                })
                .map(|l| l.size)
                .sum();
            img.shared_size = shared.min(img.size);
            img.unique_size = img.size - img.shared_size;
        }
        Ok(())
    }

    /// Remove layers no image references (left by a crashed import or by removed images)
    /// from every bucket this caller can write (root: all). Returns the removed layer dirs as
    /// `<bucket>/<key>`.
    pub fn gc(&self) -> Result<Vec<String>, ImageError> {
        self.check_writable()?;
        self.cleanup_stale(true);
        let all = self.all_rows()?;
        let mut removed = Vec::new();
        let euid = sys::geteuid();
        let buckets: Vec<String> = if euid == 0 {
            sys::read_dir_names(fd_b(&self.images_fd))
                .map_err(io_ctx("list the images dir"))?
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .filter(|b| b == "public" || b.starts_with("private-"))
                .collect()
        } else {
            vec![bucket(false, euid)]
        };
        for b in buckets {
            let bc = cstr(b.as_bytes()).unwrap();
            let Ok(bfd) = sys::open_dir_at(fd_b(&self.images_fd), &bc) else {
                continue;
            };
            let lc = cstr(LAYERS_DIR.as_bytes()).unwrap();
            let ldir = match sys::open_dir_at(fd_b(&bfd), &lc) {
                Ok(fd) => fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(ImageError::LayerStore {
                        path: format!("{b}/{LAYERS_DIR}"),
                        reason: format!("not a directory of the store ({e})"),
                    })
                }
            };
            // Imports link into the store under this lock and commit their row before
            // releasing it: a layer seen here without a row is not being imported.
            sys::flock(fd_b(&ldir), libc::LOCK_EX).map_err(io_ctx("lock the layer store"))?;
            let used: std::collections::HashSet<&str> = all
                .iter()
                .filter(|i| bucket_of(i) == b)
                .flat_map(|i| i.layers.iter().map(|l| l.key.as_str()))
                .collect();
            for name in sys::read_dir_names(fd_b(&ldir)).map_err(io_ctx("list the layer store"))? {
                let key = name.to_string_lossy();
                if used.contains(key.as_ref()) {
                    continue;
                }
                sys::remove_tree_at(fd_b(&ldir), &name)
                    .map_err(io_ctx(format!("remove layer {b}/{key}")))?;
                removed.push(format!("{b}/{key}"));
            }
        }
        Ok(removed)
    }

    fn name_taken(&self, name: &str) -> Result<bool, ImageError> {
        self.conn
            .query_row("SELECT 1 FROM images WHERE name = ?1", [name], |_| Ok(()))
            .optional()
            .map(|o| o.is_some())
            .map_err(self.db_err())
    }

    #[allow(clippy::too_many_arguments)]
    fn commit(
        &self,
        name: &str,
        ex: &extract::Extracted,
        format: &str,
        config: Option<&ImageConfig>,
        owner_uid: u32,
        public: bool,
        guard: &mut Staging,
        _staging: &OwnedFd,
    ) -> Result<Image, ImageError> {
        let bucket_name = bucket(public, owner_uid);
        let bfd = self.open_bucket(public, owner_uid)?;
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.lock_path(&bucket_name, &ex.digest))
            .map_err(io_ctx("create image lock file"))?;
        // Shared: a concurrent `remove` of the same content (LOCK_EX) finishes first.
        sys::flock(lock.as_fd(), libc::LOCK_SH).map_err(io_ctx("lock image"))?;
        let e = self.db_err();
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(&e)?;
        let digest_c = cstr(ex.digest.as_bytes()).unwrap();
        let mut renamed = false;
        let r = (|| -> Result<Image, ImageError> {
            if self.name_taken(name)? {
                return Err(ImageError::NameTaken(name.to_string()));
            }
            match sys::fstatat(fd_b(&bfd), &digest_c) {
                // Same content already stored (another name, or an orphan from a crash after
                // rename): share it; the staging copy is dropped by the guard.
                Ok(st) if sys::is_dir(&st) => {}
                _ => {
                    sys::renameat(fd_b(&self.images_fd), &guard.name, fd_b(&bfd), &digest_c)
                        .map_err(io_ctx("publish image tree"))?;
                    renamed = true;
                    guard.armed = false;
                    crash_point("image-renamed");
                }
            }
            let audit = serde_json::to_string(&ex.audit).unwrap_or_else(|_| "{}".into());
            let config_json = config.and_then(|c| serde_json::to_string(c).ok());
            let layers_json = (!ex.layers.is_empty())
                .then(|| serde_json::to_string(&ex.layers).ok())
                .flatten();
            let created = now_secs();
            self.conn
                .execute(
                    "INSERT INTO images (name, digest, owner_uid, public, size, entries, format, created, audit, config, layers)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                    params![name, ex.digest, owner_uid, public as i64, ex.size as i64, ex.entries as i64, format, created, audit, config_json, layers_json],
                )
                .map_err(&e)?;
            Ok(Image {
                id: ex.digest.clone(),
                name: name.to_string(),
                kind: ImageKind::Imported,
                visibility: if public {
                    Visibility::Public
                } else {
                    Visibility::Private
                },
                owner_uid,
                size: ex.size,
                entries: ex.entries,
                format: format.to_string(),
                created,
                root: self.images_dir.join(&bucket_name).join(&ex.digest),
                audit: ex.audit.clone(),
                config: config.cloned(),
                layers: ex.layers.clone(),
                shared_size: 0,
                unique_size: ex.size,
            })
        })();
        let r = r.and_then(|img| self.conn.execute_batch("COMMIT").map_err(&e).map(|_| img));
        match r {
            Ok(img) => {
                crash_point("image-committed");
                let _ = sys::fsync(fd_b(&bfd));
                Ok(img)
            }
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                if renamed {
                    // Published tree without a row: take it back out.
                    let _ = sys::remove_tree_at(fd_b(&bfd), &digest_c);
                }
                Err(err)
            }
        }
    }

    /// Remove `name_or_id` (owner or root). Refused while a lease is held unless `force`.
    /// The tree goes when the last name referring to its content goes.
    pub fn remove(&self, name_or_id: &str, viewer_uid: u32, force: bool) -> Result<(), ImageError> {
        let img = self.show(name_or_id, viewer_uid)?;
        if img.kind == ImageKind::Configured {
            return Err(ImageError::Configured(img.name));
        }
        if viewer_uid != 0 && img.owner_uid != viewer_uid {
            return Err(ImageError::PermissionDenied(format!(
                "image {:?} belongs to uid {}",
                img.name, img.owner_uid
            )));
        }
        self.check_writable()?;
        let bucket_name = bucket_of(&img);
        let lock_path = self.lock_path(&bucket_name, &img.id);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_ctx("open image lock file"))?;
        let exclusive = sys::flock(lock.as_fd(), libc::LOCK_EX | libc::LOCK_NB)
            .map_err(io_ctx("lock image"))?;
        if !exclusive && !force {
            return Err(ImageError::InUse { name: img.name });
        }
        let e = self.db_err();
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(&e)?;
        let r = (|| -> Result<i64, ImageError> {
            self.conn
                .execute("DELETE FROM images WHERE name = ?1", [&img.name])
                .map_err(&e)?;
            self.tree_refs(&bucket_name, &img.id)
        })();
        let left = match r.and_then(|n| self.conn.execute_batch("COMMIT").map_err(&e).map(|_| n)) {
            Ok(n) => n,
            Err(err) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                return Err(err);
            }
        };
        if left == 0 {
            // Rename first so a half-removed tree is never visible under its digest.
            let trash = cstr(format!(".trash-{}", unique_suffix()).as_bytes()).unwrap();
            let digest_c = cstr(img.id.as_bytes()).unwrap();
            let bfd = sys::open_dir_at(
                fd_b(&self.images_fd),
                &cstr(bucket_name.as_bytes()).unwrap(),
            )
            .map_err(io_ctx(format!("open {bucket_name} in the images dir")))?;
            match sys::renameat(fd_b(&bfd), &digest_c, fd_b(&self.images_fd), &trash) {
                Ok(()) => sys::remove_tree_at(fd_b(&self.images_fd), &trash)
                    .map_err(io_ctx(format!("remove tree of {}", img.name)))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ImageError::Io {
                        context: format!("remove tree of {}", img.name),
                        source: e,
                    })
                }
            }
            let _ = std::fs::remove_file(&lock_path);
        }
        // Layers only this image used go now (best effort: `image gc` retries).
        let _ = self.gc();
        Ok(())
    }

    /// Resolve `name` for a job run by `viewer_uid` and hold it until the lease is dropped.
    /// Unknown/invisible name -> `NotFound` listing the names this uid can use.
    pub fn lease(&self, name: &str, viewer_uid: u32) -> Result<ImageLease, ImageError> {
        let img = self.show(name, viewer_uid)?;
        if img.kind == ImageKind::Configured {
            if !img.root.is_dir() {
                return Err(ImageError::Io {
                    context: format!(
                        "configured image {:?} root {}",
                        img.name,
                        img.root.display()
                    ),
                    source: io::Error::from(io::ErrorKind::NotFound),
                });
            }
            return Ok(ImageLease {
                name: img.name,
                id: String::new(),
                root: img.root,
                kind: img.kind,
                config: None,
                lock: None,
            });
        }
        let c =
            sys::path_c(&self.lock_path(&bucket_of(&img), &img.id)).map_err(io_ctx("lock path"))?;
        // O_RDONLY is enough for flock and works for non-root users.
        // SAFETY: `c` is NUL-terminated and outlives the call.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            )
        };
        if fd < 0 {
            return Err(self.not_found(name, viewer_uid));
        }
        // SAFETY: `fd` was just returned by a successful open; nothing else owns it.
        let lock = unsafe { File::from(OwnedFd::from_raw_fd(fd)) };
        sys::flock(lock.as_fd(), libc::LOCK_SH).map_err(io_ctx("lock image"))?;
        // Re-check under the lock: a remove may have finished while we waited.
        let still: bool = self
            .conn
            .query_row(
                "SELECT 1 FROM images WHERE name = ?1 AND digest = ?2",
                [&img.name, &img.id],
                |_| Ok(()),
            )
            .optional()
            .map_err(self.db_err())?
            .is_some();
        if !still || !img.root.is_dir() {
            return Err(self.not_found(name, viewer_uid));
        }
        Ok(ImageLease {
            name: img.name,
            id: img.id,
            root: img.root,
            kind: img.kind,
            config: img.config,
            lock: Some(lock),
        })
    }

    /// True when some job holds a lease on the image's content.
    pub fn in_use(&self, img: &Image) -> bool {
        if img.kind == ImageKind::Configured {
            return false;
        }
        let Ok(f) = File::open(self.lock_path(&bucket_of(img), &img.id)) else {
            return false;
        };
        match sys::flock(f.as_fd(), libc::LOCK_EX | libc::LOCK_NB) {
            Ok(true) => false,
            Ok(false) => true,
            Err(_) => false,
        }
    }
}

/// A size like `500M`, `1.5G`, `1024` (bytes), `10KiB`: the workspace's one size parser,
/// `jobcell_spec::parse_size`, with bare numbers in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    jobcell_spec::parse_size(s, jobcell_spec::Unit::Bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("RHEL5"));
        assert!(valid_name("debian-12.1_x"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(129)));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10"), Some(10));
        assert_eq!(parse_size("2K"), Some(2048));
        assert_eq!(parse_size("3MiB"), Some(3 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("1.5G"), Some(1536 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("1Q"), None);
    }

    #[test]
    fn normalize_paths() {
        use extract::normalize;
        assert_eq!(
            normalize(b"./a//b/").unwrap(),
            (vec![b"a".to_vec(), b"b".to_vec()], false)
        );
        assert!(normalize(b"/etc/passwd").unwrap().1);
        assert!(normalize(b"a/../../b").is_err());
        assert!(normalize(b"..").is_err());
        assert_eq!(normalize(b"./").unwrap().0.len(), 0);
    }

    #[test]
    fn compression_magic() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(
            Compression::detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]),
            Compression::Xz
        );
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"etc/passwd"), Compression::None);
    }
}
