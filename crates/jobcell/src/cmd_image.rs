//! `jobcell image ...`: the image registry's command line.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;

/// println! that ignores a closed stdout (`jobcell image ls | head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}
use jobcell_images::{
    Image, ImageError, ImageKind, ImageStore, ImportOptions, ImportSource, Progress, Visibility,
};

/// Where the store lives: flags, else `[paths]` of the config, else the node defaults.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Node config file (default /etc/jobcell/config.toml when it exists).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// State dir holding images.db (default /var/lib/jobcell).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Directory of image trees (default <state-dir>/images).
    #[arg(long, value_name = "DIR")]
    images_dir: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
pub enum ImageCmd {
    /// Import a root filesystem (tar, .gz, .bz2, .xz, .zst — detected from content — a
    /// directory, or `-` for a tar stream on stdin), or a container image: an OCI image
    /// layout (directory), an oci-archive or a docker-archive (`docker save`/`podman save`).
    Add {
        /// Unique name jobs use with --image.
        name: String,
        /// Tarball, directory, `-` for stdin, or `podman:IMAGE` / `docker:IMAGE` for an image
        /// of your local Podman or Docker store (the tool's `save` runs as you).
        source: PathBuf,
        /// Everyone may see and use it (default: only you and root).
        #[arg(long)]
        public: bool,
        /// Keep setuid/setgid bits (root only; still audited).
        #[arg(long)]
        keep_setuid: bool,
        /// Refuse archives that unpack to more than SIZE (e.g. 2G, 500M).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Of a container archive holding several images, the one named NAME:TAG.
        #[arg(long = "ref", value_name = "NAME:TAG")]
        reference: Option<String>,
        /// Of a multi-platform container image, this one (default linux/amd64).
        #[arg(long, value_name = "OS/ARCH")]
        platform: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the images you can use.
    Ls {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// All metadata of one image, including its digest and import audit.
    Show {
        /// Name, or id (digest prefix).
        image: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove layers no image uses (left by a crashed import or removed images).
    Gc {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove an image (refused while a job uses it, unless --force).
    Rm {
        /// Name, or id (digest prefix).
        image: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn open_store(a: &StoreArgs) -> anyhow::Result<ImageStore> {
    let cfg = crate::config::load(a.config.as_deref())?;
    let (state_dir, images_dir) =
        crate::config::store_dirs(&cfg, a.state_dir.as_deref(), a.images_dir.as_deref());
    Ok(ImageStore::open(
        &state_dir,
        &images_dir,
        cfg.images.clone(),
    )?)
}

fn uid() -> u32 {
    // SAFETY: getuid cannot fail and touches no memory.
    unsafe { libc::getuid() }
}

pub fn run(cmd: ImageCmd) -> anyhow::Result<i32> {
    match cmd {
        ImageCmd::Add {
            name,
            source,
            public,
            keep_setuid,
            max_size,
            reference,
            platform,
            store,
        } => add(
            name,
            source,
            public,
            keep_setuid,
            max_size,
            jobcell_images::Selector {
                reference,
                platform,
            },
            &store,
        ),
        ImageCmd::Ls { json, store } => {
            let s = open_store(&store)?;
            let mut imgs = s.list(uid())?;
            s.sharing(&mut imgs)?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&imgs)?);
            } else {
                print_table(&imgs);
            }
            Ok(0)
        }
        ImageCmd::Show { image, json, store } => {
            let s = open_store(&store)?;
            let mut img = s.show(&image, uid())?;
            s.sharing(std::slice::from_mut(&mut img))?;
            let in_use = s.in_use(&img);
            if json {
                let mut v = serde_json::to_value(&img)?;
                v["in_use"] = serde_json::Value::Bool(in_use);
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_show(&img, in_use);
            }
            Ok(0)
        }
        ImageCmd::Gc { store } => {
            let s = open_store(&store)?;
            let removed = s.gc().context("image gc")?;
            for r in &removed {
                outln!("removed layer {r}");
            }
            outln!("{} unused layer(s) removed", removed.len());
            Ok(0)
        }
        ImageCmd::Rm {
            image,
            force,
            store,
        } => {
            let s = open_store(&store)?;
            s.remove(&image, uid(), force)
                .with_context(|| format!("image rm {image}"))?;
            Ok(0)
        }
    }
}

static CANCEL: OnceLock<Arc<AtomicBool>> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    // Async-signal-safe: one atomic store; the import notices and cleans up its staging dir.
    if let Some(c) = CANCEL.get() {
        c.store(true, Ordering::Relaxed);
    }
}

/// SIGINT/SIGTERM/SIGHUP cancel the import instead of killing us mid-extraction. No
/// SA_RESTART, so a blocked read returns EINTR and the flag is seen promptly.
fn install_cancel_handler() -> Arc<AtomicBool> {
    let flag = CANCEL
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `sa` is a zeroed sigaction (valid) filled before use; the handler only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = 0;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    flag
}

fn add(
    name: String,
    source: PathBuf,
    public: bool,
    keep_setuid: bool,
    max_size: Option<String>,
    select: jobcell_images::Selector,
    store: &StoreArgs,
) -> anyhow::Result<i32> {
    let flag = match max_size {
        Some(s) => Some(
            jobcell_images::parse_size(&s)
                .with_context(|| format!("--max-size {s:?}: expected e.g. 500M or 2G"))?,
        ),
        None => None,
    };
    let bounds = ImportBounds::new(&crate::config::load(store.config.as_deref())?, flag)?;
    let s = open_store(store)?;
    let cancel = install_cancel_handler();
    let progress = std::io::stderr()
        .is_terminal()
        .then(|| ProgressBar::new(&name));
    let opts = ImportOptions {
        public,
        keep_setuid,
        max_size: bounds.size.map(|(v, _)| v),
        max_entries: Some(bounds.entries),
        cancel: Some(cancel.clone()),
        progress: progress.clone().map(|p| {
            Arc::new(move |pr: &Progress| p.update(pr)) as Arc<dyn Fn(&Progress) + Send + Sync>
        }),
        select,
        ..ImportOptions::default()
    };
    let tool = source
        .to_str()
        .and_then(crate::image_tool::Tool::parse_source);
    let mut save = None;
    let src = if let Some((tool, image)) = tool {
        let (child, archive) = crate::image_tool::Save::start(tool, image)
            .with_context(|| format!("image add {name}"))?;
        save = Some(child);
        ImportSource::Reader(Box::new(archive))
    } else if source.as_os_str() == "-" {
        ImportSource::Reader(Box::new(std::io::stdin()))
    } else {
        ImportSource::Path(source.clone())
    };
    let r = s.add(&name, src, &opts);
    if let Some(p) = &progress {
        p.clear();
    }
    // The archive's reader is gone with the import: a tool still writing gets EPIPE and
    // ends. A failed tool explains a failed import better than the short stream it left.
    if let Some(save) = save {
        let tool_result = save.finish();
        if r.is_err() {
            tool_result.with_context(|| format!("image add {name}"))?;
        }
    }
    match r {
        Ok(img) => {
            eprintln!(
                "imported {} as {} ({}, {} entries, {}, setuid stripped: {}, skipped: {})",
                img.name,
                img.short_id(),
                jobcell_spec::format_size(img.size),
                img.entries,
                img.format,
                img.audit.setuid_stripped.len(),
                img.audit.skipped.len()
            );
            outln!("{}", img.id);
            Ok(0)
        }
        Err(ImageError::Interrupted) => {
            eprintln!("jobcell: image add {name}: interrupted; nothing was registered");
            Ok(130)
        }
        // Name the key that set the bound, so the user knows whom to ask.
        Err(ImageError::TooBig { limit, entry }) => anyhow::bail!(
            "image add {name}: unpacked size exceeds {} ({}) at entry {entry:?}",
            jobcell_spec::format_size(limit),
            bounds.size.map_or("--max-size", |(_, k)| k)
        ),
        Err(ImageError::TooManyEntries { limit, entry }) => anyhow::bail!(
            "image add {name}: more than {limit} entries (import.max_entries) at entry {entry:?}"
        ),
        Err(e) => Err(anyhow::Error::new(e).context(format!("image add {name}"))),
    }
}

/// The node's bounds on an import (`[import]`), for every caller: a gzip bomb of a few
/// hundred KiB unpacks to gigabytes, and a flood of empty files eats inodes. `--max-size`
/// may lower the size bound, never raise it.
struct ImportBounds {
    /// (bytes, the key that set it)
    size: Option<(u64, &'static str)>,
    entries: u64,
}

const DEFAULT_MAX_UNPACKED_SIZE: &str = "20G";
const DEFAULT_MAX_ENTRIES: u64 = 1_000_000;

impl ImportBounds {
    fn new(cfg: &jobcell_spec::Config, flag: Option<u64>) -> anyhow::Result<Self> {
        let text = cfg
            .import
            .max_unpacked_size
            .as_deref()
            .unwrap_or(DEFAULT_MAX_UNPACKED_SIZE);
        let node = match text.trim() {
            "none" => None,
            t => Some(
                jobcell_spec::parse_size(t, jobcell_spec::Unit::MiB)
                    .with_context(|| format!("[import] max_unpacked_size = {text:?}"))?,
            ),
        };
        let size = match (flag, node) {
            (Some(f), Some(n)) if n < f => Some((n, "import.max_unpacked_size")),
            (Some(f), _) => Some((f, "--max-size")),
            (None, n) => n.map(|n| (n, "import.max_unpacked_size")),
        };
        let entries = cfg.import.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        anyhow::ensure!(
            entries > 0,
            "[import] max_entries = 0: an image has at least one entry"
        );
        Ok(ImportBounds { size, entries })
    }
}

/// A one-line progress display on a terminal, redrawn at most 10 times a second.
#[derive(Clone)]
struct ProgressBar {
    name: String,
    last: Arc<Mutex<Option<Instant>>>,
}

impl ProgressBar {
    fn new(name: &str) -> Self {
        ProgressBar {
            name: name.to_string(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    fn update(&self, p: &Progress) {
        let mut last = self.last.lock().unwrap();
        if !p.done && last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            return;
        }
        *last = Some(Instant::now());
        let bar = match p.input_total {
            Some(t) if t > 0 => {
                let frac = (p.input_bytes as f64 / t as f64).min(1.0);
                let n = (frac * 24.0) as usize;
                format!(
                    "[{}{}] {:3.0}% ",
                    "#".repeat(n),
                    "-".repeat(24 - n),
                    frac * 100.0
                )
            }
            _ => String::new(),
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[K{}: {}{} read, {} unpacked, {} entries",
            self.name,
            bar,
            jobcell_spec::format_size(p.input_bytes),
            jobcell_spec::format_size(p.unpacked_bytes),
            p.entries
        );
        let _ = e.flush();
    }

    fn clear(&self) {
        if self.last.lock().unwrap().is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// `YYYY-MM-DD HH:MM` UTC from unix seconds (civil-from-days, no time crate needed).
pub(crate) fn utc(ts: i64) -> String {
    if ts <= 0 {
        return "-".into();
    }
    let days = ts.div_euclid(86400);
    let secs = ts.rem_euclid(86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// A user's name from the passwd database (for display), else the number.
pub(crate) fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; all zeroes is a valid value for getpwuid_r to fill.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut res: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local, and buf's length is passed with it.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
    if rc == 0 && !res.is_null() {
        // SAFETY: on success pw_name points to a NUL-terminated string in buf, still alive.
        unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
            .to_string_lossy()
            .into_owned()
    } else {
        uid.to_string()
    }
}

fn visibility(i: &Image) -> &'static str {
    match (i.kind, i.visibility) {
        (ImageKind::Configured, _) => "config",
        (_, Visibility::Public) => "public",
        (_, Visibility::Private) => "private",
    }
}

fn print_table(imgs: &[Image]) {
    let rows: Vec<[String; 10]> = imgs
        .iter()
        .map(|i| {
            let configured = i.kind == ImageKind::Configured;
            [
                if configured {
                    "-".into()
                } else {
                    i.short_id().to_string()
                },
                i.name.clone(),
                visibility(i).to_string(),
                user_name(i.owner_uid),
                if configured {
                    "-".into()
                } else {
                    jobcell_spec::format_size(i.size)
                },
                utc(i.created),
                if i.layers.is_empty() {
                    "-".into()
                } else {
                    i.layers.len().to_string()
                },
                if configured {
                    "-".into()
                } else {
                    jobcell_spec::format_size(i.shared_size)
                },
                if configured {
                    "-".into()
                } else {
                    jobcell_spec::format_size(i.unique_size)
                },
                if configured {
                    "-".into()
                } else {
                    i.audit.setuid_stripped.len().to_string()
                },
            ]
        })
        .collect();
    let head = [
        "ID",
        "NAME",
        "VISIBILITY",
        "OWNER",
        "SIZE",
        "CREATED (UTC)",
        "LAYERS",
        "SHARED",
        "UNIQUE",
        "SETUID-STRIPPED",
    ];
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (k, c) in r.iter().enumerate() {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (k, c) in cells.iter().enumerate() {
            if k + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[k]));
            }
        }
        outln!("{}", s.trim_end());
    };
    line(&head);
    for r in &rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn print_show(i: &Image, in_use: bool) {
    let kv = |k: &str, v: &dyn std::fmt::Display| outln!("{k:<22}{v}");
    kv("name:", &i.name);
    if i.kind == ImageKind::Configured {
        kv(
            "kind:",
            &"configured (admin-configured tree, used in place)",
        );
        kv("root:", &i.root.display());
        return;
    }
    kv("id:", &i.short_id());
    kv("digest:", &format!("sha256:{}", i.id));
    kv("visibility:", &visibility(i));
    kv(
        "owner:",
        &format!("{} ({})", user_name(i.owner_uid), i.owner_uid),
    );
    kv(
        "size:",
        &format!("{} ({} bytes)", jobcell_spec::format_size(i.size), i.size),
    );
    kv(
        "shared size:",
        &format!(
            "{} ({} bytes, in layers other images use)",
            jobcell_spec::format_size(i.shared_size),
            i.shared_size
        ),
    );
    kv(
        "unique size:",
        &format!(
            "{} ({} bytes)",
            jobcell_spec::format_size(i.unique_size),
            i.unique_size
        ),
    );
    kv("layers:", &i.layers.len());
    for l in &i.layers {
        outln!("    sha256:{} ({} bytes stored in it)", l.key, l.size);
    }
    kv("entries:", &i.entries);
    kv("format:", &i.format);
    kv("created:", &format!("{} UTC", utc(i.created)));
    kv("root:", &i.root.display());
    kv("in use:", &if in_use { "yes" } else { "no" });
    let a = &i.audit;
    kv(
        "ownership preserved:",
        &if a.ownership_preserved {
            "yes (root import)"
        } else {
            "no (owned by importer)"
        },
    );
    kv("setuid stripped:", &a.setuid_stripped.len());
    for e in &a.setuid_stripped {
        outln!("    {:06o} {}", e.mode, e.path);
    }
    if !a.setuid_kept.is_empty() {
        kv("setuid kept:", &a.setuid_kept.len());
        for e in &a.setuid_kept {
            outln!("    {:06o} {}", e.mode, e.path);
        }
    }
    kv("skipped:", &a.skipped.len());
    for s in &a.skipped {
        outln!("    {} ({})", s.path, s.kind);
    }
    kv(
        "mount points created:",
        &if a.created_mount_points.is_empty() {
            "-".to_string()
        } else {
            a.created_mount_points.join(" ")
        },
    );
    if !a.replaced_mount_points.is_empty() {
        kv(
            "mount points replaced:",
            &a.replaced_mount_points.join(", "),
        );
    }
    kv(
        "absolute paths:",
        &format!("{} made relative", a.absolute_paths_made_relative),
    );
    kv("xattrs ignored:", &a.xattrs_ignored);
    if let Some(c) = &i.config {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                serde_json::to_string(v).unwrap_or_default()
            }
        };
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        kv("reference:", &opt(&c.reference));
        kv("platform:", &opt(&c.platform));
        kv("entrypoint:", &list(&c.entrypoint));
        kv("cmd:", &list(&c.cmd));
        kv("working dir:", &opt(&c.working_dir));
        kv(
            "user:",
            &format!(
                "{} (not used: jobs run as jobcell's identity)",
                opt(&c.user)
            ),
        );
        kv("env:", &c.env.len());
        for e in &c.env {
            outln!("    {e}");
        }
        kv("labels:", &c.labels.len());
        for (k, v) in &c.labels {
            outln!("    {k}={v}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "-");
        assert_eq!(super::utc(1_700_000_000), "2023-11-14 22:13");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(jobcell_spec::format_size(10), "10 B");
        assert_eq!(jobcell_spec::format_size(1536), "1.5 KiB");
    }
}
