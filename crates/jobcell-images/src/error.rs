use std::path::PathBuf;

/// Everything that can go wrong in the image store. Each message is one line naming the
/// thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image database {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("image database {path} has schema version {found}, this jobcell knows up to {known}")]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("invalid image name {0:?}: use 1-128 characters from A-Z a-z 0-9 . _ - starting with a letter or digit")]
    BadName(String),
    #[error("image name {0:?} is already taken")]
    NameTaken(String),
    /// Unknown or invisible: the message lists what this user may use.
    #[error("no image {name:?} visible to uid {uid}; available: {}", if available.is_empty() { "(none)".to_string() } else { available.join(", ") })]
    NotFound {
        name: String,
        uid: u32,
        available: Vec<String>,
    },
    #[error("image reference {0:?} is ambiguous; give more of the id or the name")]
    Ambiguous(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("image {name:?} is in use by a running job; use --force to remove it anyway")]
    InUse { name: String },
    #[error("image {0:?} is configured in the config file and cannot be removed here")]
    Configured(String),
    /// A tar entry (or directory-import path) is unsafe or malformed.
    #[error("entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },
    /// The archive stream itself is unreadable (corrupt, truncated, not a tar).
    #[error("archive {where_}: {reason}")]
    Archive { where_: String, reason: String },
    #[error("unpacked size exceeds the limit of {limit} bytes (at entry {entry:?})")]
    TooBig { limit: u64, entry: String },
    #[error("more than {limit} entries (at entry {entry:?})")]
    TooManyEntries { limit: u64, entry: String },
    /// A container image (OCI layout, oci-archive, docker-archive) is malformed, does not
    /// match its digests, or the image to import cannot be chosen.
    #[error("{what}: {reason}")]
    Container { what: String, reason: String },
    #[error("import interrupted")]
    Interrupted,
    /// A directory of the layer store is not what the store made (e.g. a symlink).
    #[error("layer store {path}: {reason}; refusing it")]
    LayerStore { path: String, reason: String },
    #[error("source {0}: not a regular file, directory or stream")]
    BadSource(PathBuf),
    #[error("the image is empty (no entries)")]
    Empty,
    /// The store was opened read-only (`access(W_OK)` on the state dir failed).
    #[error("state dir {path} is not writable by uid {uid} ({reason}): images can only be listed")]
    ReadOnly {
        path: PathBuf,
        uid: u32,
        reason: String,
    },
    /// The images dir (or the database's filesystem) ran out of space or quota.
    #[error("no space left for the image in {dir}: {detail}")]
    NoSpace { dir: PathBuf, detail: String },
}

impl ImageError {
    /// True when the error comes from ENOSPC/EDQUOT (also when only its text carries it, as in
    /// an entry's write error).
    pub(crate) fn is_no_space(&self) -> bool {
        let codes = [libc::ENOSPC, libc::EDQUOT];
        match self {
            ImageError::Io { source, .. } => {
                source.raw_os_error().is_some_and(|c| codes.contains(&c))
            }
            ImageError::Db { source, .. } => {
                source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
            }
            ImageError::Entry { reason, .. } => codes
                .iter()
                .any(|c| reason.contains(&std::io::Error::from_raw_os_error(*c).to_string())),
            _ => false,
        }
    }
}

pub(crate) fn io_ctx(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}
