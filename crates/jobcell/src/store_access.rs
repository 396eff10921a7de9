//! Opening the image store as a user who cannot write its state dir (rootless `jobcell run
//! --image`, and Slurm tasks through the SPANK plugin).
//!
//! The index is SQLite in WAL mode, and a WAL reader must create `images.db-shm` next to the
//! database: in root's state dir a user gets SQLITE_READONLY_DIRECTORY. Until the store itself
//! handles read-only openers, we read a private snapshot instead: a copy of the main database
//! file (complete once the writer's connection has closed and checkpointed), switched to
//! rollback-journal mode in its header, opened read-only from a directory we then make
//! read-only, and unlinked at once so nothing is left behind. Leases still take the real
//! per-image lock in the images dir and re-check that the image's tree exists.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jobcell_images::ImageStore;

const DB_FILE: &str = "images.db";

fn writable(p: &Path) -> bool {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
        .unwrap_or(false)
}

pub fn open(
    state_dir: &Path,
    images_dir: &Path,
    named: BTreeMap<String, PathBuf>,
) -> anyhow::Result<ImageStore> {
    let db = state_dir.join(DB_FILE);
    if unsafe { libc::geteuid() } == 0 || writable(state_dir) || !db.exists() {
        return Ok(ImageStore::open(state_dir, images_dir, named)?);
    }
    let tmpl = CString::new(format!(
        "{}/jobcell-index-XXXXXX",
        std::env::temp_dir().display()
    ))?;
    let raw = tmpl.into_raw();
    let made = unsafe { libc::mkdtemp(raw) };
    let dir = PathBuf::from(
        unsafe { CString::from_raw(raw) }
            .into_string()
            .unwrap_or_default(),
    );
    anyhow::ensure!(
        !made.is_null(),
        "making a private copy of the image index in {}: {}",
        std::env::temp_dir().display(),
        std::io::Error::last_os_error()
    );
    let copy = dir.join(DB_FILE);
    let result = (|| -> anyhow::Result<ImageStore> {
        let mut src =
            std::fs::File::open(&db).with_context(|| format!("image index {}", db.display()))?;
        let mut bytes = Vec::new();
        src.read_to_end(&mut bytes)
            .with_context(|| format!("image index {}", db.display()))?;
        let mut f = std::fs::File::create(&copy)?;
        f.write_all(&bytes)?;
        // Header bytes 18/19 are the write/read format versions: 2 = WAL, 1 = rollback journal.
        if bytes.len() >= 20 && bytes[18] == 2 && bytes[19] == 2 {
            f.seek(SeekFrom::Start(18))?;
            f.write_all(&[1, 1])?;
        }
        drop(f);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500))?;
        Ok(ImageStore::open(&dir, images_dir, named)?)
    })();
    // The open connection keeps the copy alive; its name and dir can go now.
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::remove_file(&copy);
    let _ = std::fs::remove_dir(&dir);
    result
}
