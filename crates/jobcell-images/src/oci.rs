//! Container images: an OCI image layout (a directory, or the same in a tar: `oci-archive`)
//! and `docker save`/`podman save` tarballs (`docker-archive`), recognised by content.
//!
//! One manifest is chosen (by `--ref` and platform), every blob is checked against the size
//! and sha256 its manifest names, and the layers are applied in order through the safe
//! extractor with OCI whiteouts. The image config (Env, Cmd, ...) is returned for the store.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::ImageError;
use crate::extract::{self, Extractor};
use crate::ImageConfig;

/// Largest manifest, index or config JSON read into memory.
const MAX_JSON: u64 = 8 << 20;
/// Nested indexes followed at most this deep.
const MAX_INDEX_DEPTH: usize = 4;
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// The full name `docker save` (and containerd) put beside a tag-only ref.name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Which image of a multi-image source to import.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    /// `NAME:TAG` (or just the tag an OCI index names).
    pub reference: Option<String>,
    /// `os/arch[/variant]`; default linux/amd64.
    pub platform: Option<String>,
}

/// What kind of container image a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Container {
    OciLayout,
    OciArchive,
    DockerArchive,
}

impl Container {
    pub(crate) fn format_name(self) -> &'static str {
        match self {
            Container::OciLayout => "oci-layout",
            Container::OciArchive => "oci-archive",
            Container::DockerArchive => "docker-archive",
        }
    }
}

fn bad(what: impl Into<String>, reason: impl Into<String>) -> ImageError {
    ImageError::Container {
        what: what.into(),
        reason: reason.into(),
    }
}

pub(crate) enum Member {
    File { offset: u64, size: u64 },
    Link(String),
}

/// Where the files of an image come from: a layout directory or an indexed tar file.
pub(crate) enum Blobs {
    Dir(PathBuf),
    Tar {
        file: File,
        members: HashMap<String, Member>,
    },
}

/// Reads `size` bytes of a file from `offset` without moving a shared file position.
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = ((self.end - self.pos) as usize).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive shorter than its index",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Archive-relative path in one canonical form (`./a//b` = `a/b`); `None` when it climbs out.
fn clean(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

impl Blobs {
    /// Index the members of an uncompressed tar (headers only; data is skipped by seeking).
    pub(crate) fn index_tar(mut file: File) -> Result<Blobs, ImageError> {
        io::Seek::rewind(&mut file).map_err(|e| bad("container archive", e.to_string()))?;
        let mut members = HashMap::new();
        {
            let mut ar = tar::Archive::new(&file);
            let entries = ar
                .entries_with_seek()
                .map_err(|e| bad("container archive", e.to_string()))?;
            for e in entries {
                let e = e.map_err(|e| bad("container archive", e.to_string()))?;
                let raw = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let Some(path) = clean(&raw) else { continue };
                match e.header().entry_type() {
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        members.insert(
                            path,
                            Member::File {
                                offset: e.raw_file_position(),
                                size: e.size(),
                            },
                        );
                    }
                    tar::EntryType::Symlink | tar::EntryType::Link => {
                        if let Some(t) = e.link_name_bytes() {
                            let t = String::from_utf8_lossy(&t).into_owned();
                            let target = if e.header().entry_type() == tar::EntryType::Symlink {
                                let dir = path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                                format!("{dir}/{t}")
                            } else {
                                t
                            };
                            if let Some(t) = clean(&target) {
                                members.insert(path, Member::Link(t));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Blobs::Tar { file, members })
    }

    pub(crate) fn has(&self, path: &str) -> bool {
        match self {
            Blobs::Dir(root) => std::fs::symlink_metadata(root.join(path)).is_ok(),
            Blobs::Tar { members, .. } => members.contains_key(path),
        }
    }

    /// Open a member; returns the reader and its real size.
    fn open(&self, path: &str) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        let missing = || bad(format!("blob {path}"), "missing from the image");
        let clean_path =
            clean(path).ok_or_else(|| bad(format!("blob {path}"), "path leaves the image"))?;
        match self {
            Blobs::Dir(root) => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(root.join(&clean_path))
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::NotFound => missing(),
                        _ => bad(format!("blob {path}"), e.to_string()),
                    })?;
                let md = f
                    .metadata()
                    .map_err(|e| bad(format!("blob {path}"), e.to_string()))?;
                if !md.is_file() {
                    return Err(bad(format!("blob {path}"), "not a regular file"));
                }
                Ok((Box::new(f), md.len()))
            }
            Blobs::Tar { file, members } => {
                let mut p = clean_path;
                for _ in 0..8 {
                    match members.get(&p) {
                        Some(Member::File { offset, size }) => {
                            return Ok((
                                Box::new(At {
                                    file,
                                    pos: *offset,
                                    end: offset + size,
                                }),
                                *size,
                            ))
                        }
                        Some(Member::Link(t)) => p = t.clone(),
                        None => return Err(missing()),
                    }
                }
                Err(bad(format!("blob {path}"), "too many links"))
            }
        }
    }

    /// Read a small JSON member whole (bounded), checked against `desc` when given.
    fn read_small(&self, path: &str, desc: Option<&Descriptor>) -> Result<Vec<u8>, ImageError> {
        let (r, size) = self.open(path)?;
        if let Some(d) = desc {
            check_size(d, size)?;
        }
        if size > MAX_JSON {
            return Err(bad(
                format!("blob {path}"),
                format!("{size} bytes, more than the {MAX_JSON} allowed for metadata"),
            ));
        }
        let mut buf = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut buf)
            .map_err(|e| bad(format!("blob {path}"), e.to_string()))?;
        if let Some(d) = desc {
            let got = hex(&Sha256::digest(&buf));
            if got != d.digest().digest() {
                return Err(digest_mismatch(d, &got));
            }
        }
        Ok(buf)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest_mismatch(d: &Descriptor, got: &str) -> ImageError {
    bad(
        format!("blob {}", d.digest()),
        format!(
            "content has digest sha256:{got}; refusing a blob that does not match its manifest"
        ),
    )
}

fn check_size(d: &Descriptor, actual: u64) -> Result<(), ImageError> {
    if d.size() != actual {
        return Err(bad(
            format!("blob {}", d.digest()),
            format!("manifest says {} bytes, the image holds {actual}", d.size()),
        ));
    }
    Ok(())
}

fn blob_path(d: &Descriptor) -> Result<String, ImageError> {
    let dg = d.digest();
    if dg.algorithm().as_ref() != "sha256" {
        return Err(bad(
            format!("blob {dg}"),
            "only sha256 digests are supported",
        ));
    }
    Ok(format!("blobs/sha256/{}", dg.digest()))
}

/// Hashes and counts what passes through, so a layer is checked as it is applied.
struct Verify<R> {
    inner: R,
    hash: Sha256,
    n: u64,
    input: Arc<AtomicU64>,
}

impl<R: Read> Read for Verify<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        self.input.fetch_add(k as u64, Ordering::Relaxed);
        Ok(k)
    }
}

impl<R: Read> Verify<R> {
    fn new(inner: R, input: Arc<AtomicU64>) -> Self {
        Verify {
            inner,
            hash: Sha256::new(),
            n: 0,
            input,
        }
    }

    /// Read what the tar reader left (end-of-archive padding) and return (sha256 hex, bytes).
    fn finish(mut self, what: &str) -> Result<(String, u64), ImageError> {
        io::copy(&mut self, &mut io::sink()).map_err(|e| bad(what, e.to_string()))?;
        Ok((hex(&self.hash.finalize()), self.n))
    }
}

/// True when the first tar header of a source names a member only container images have at
/// their top (so a root-filesystem tarball is never indexed or spooled).
pub(crate) fn looks_like_container(head: &[u8]) -> bool {
    if head.len() < 512 || &head[257..262] != b"ustar" {
        return false;
    }
    let name_end = head[..100].iter().position(|&b| b == 0).unwrap_or(100);
    let name = String::from_utf8_lossy(&head[..name_end]);
    let first = name
        .trim_start_matches("./")
        .split('/')
        .next()
        .unwrap_or("");
    let hexname = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    matches!(
        first,
        "blobs" | "oci-layout" | "index.json" | "manifest.json" | "repositories"
    ) || hexname(first)
        || first
            .strip_suffix(".tar")
            .or_else(|| first.strip_suffix(".json"))
            .is_some_and(hexname)
}

/// Which container format `blobs` holds, if any (an OCI layout wins over docker's manifest,
/// as newer `docker save` writes both).
pub(crate) fn detect(blobs: &Blobs) -> Option<Container> {
    if blobs.has("oci-layout") && blobs.has("index.json") {
        Some(match blobs {
            Blobs::Dir(_) => Container::OciLayout,
            Blobs::Tar { .. } => Container::OciArchive,
        })
    } else if blobs.has("manifest.json") && matches!(blobs, Blobs::Tar { .. }) {
        Some(Container::DockerArchive)
    } else {
        None
    }
}

/// A directory that is an OCI image layout.
pub(crate) fn is_layout_dir(p: &Path) -> bool {
    p.join("oci-layout").is_file() && p.join("index.json").is_file()
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// One image a source offers.
struct Candidate {
    refs: Vec<String>,
    platform: Option<String>,
    manifest: Option<Descriptor>,
    docker: Option<usize>,
}

impl Candidate {
    fn label(&self) -> String {
        let r = if self.refs.is_empty() {
            match &self.manifest {
                Some(d) => d.digest().to_string(),
                None => "(untagged)".into(),
            }
        } else {
            self.refs.join(",")
        };
        match &self.platform {
            Some(p) => format!("{r} ({p})"),
            None => r,
        }
    }
}

/// Drop the default registry and namespace, so `alpine:3` matches `docker.io/library/alpine:3`.
fn norm_ref(r: &str) -> &str {
    let r = r.strip_prefix("docker.io/").unwrap_or(r);
    let r = r.strip_prefix("localhost/").unwrap_or(r);
    r.strip_prefix("library/").unwrap_or(r)
}

fn ref_matches(want: &str, have: &str) -> bool {
    if norm_ref(want) == norm_ref(have) {
        return true;
    }
    // An OCI index often names just the tag.
    !have.contains([':', '/']) && want.rsplit_once(':').is_some_and(|(_, tag)| tag == have)
}

fn platform_of(d: &Descriptor) -> Option<String> {
    d.platform().as_ref().map(|p| {
        let mut s = format!("{}/{}", p.os(), p.architecture());
        if let Some(v) = p.variant() {
            s.push('/');
            s.push_str(v);
        }
        s
    })
}

fn platform_matches(want: &str, have: &str) -> bool {
    // `linux/arm64` matches `linux/arm64/v8`; a variant asked for must match.
    have == want || have.starts_with(&format!("{want}/"))
}

fn oci_candidates(
    blobs: &Blobs,
    index: &ImageIndex,
    parent_refs: &[String],
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), ImageError> {
    for d in index.manifests() {
        let mut refs: Vec<String> = [CONTAINERD_NAME, REF_ANNOTATION]
            .iter()
            .filter_map(|k| d.annotations().as_ref().and_then(|a| a.get(*k).cloned()))
            .collect();
        if refs.is_empty() {
            refs = parent_refs.to_vec();
        }
        let mt = d.media_type().to_string();
        if mt.ends_with("image.index.v1+json") || mt.ends_with("manifest.list.v2+json") {
            if depth >= MAX_INDEX_DEPTH {
                return Err(bad("index.json", "indexes nested too deep"));
            }
            let raw = blobs.read_small(&blob_path(d)?, Some(d))?;
            let nested: ImageIndex = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("index {}", d.digest()), e.to_string()))?;
            oci_candidates(blobs, &nested, &refs, depth + 1, out)?;
        } else if mt.ends_with("image.manifest.v1+json") || mt.ends_with("manifest.v2+json") {
            out.push(Candidate {
                refs,
                platform: platform_of(d),
                manifest: Some(d.clone()),
                docker: None,
            });
        }
    }
    Ok(())
}

fn choose(mut cands: Vec<Candidate>, sel: &Selector) -> Result<Candidate, ImageError> {
    let all: Vec<String> = cands.iter().map(Candidate::label).collect();
    let listing = || {
        if all.is_empty() {
            "(none)".to_string()
        } else {
            all.join("; ")
        }
    };
    if let Some(want) = &sel.reference {
        cands.retain(|c| c.refs.iter().any(|h| ref_matches(want, h)));
        if cands.is_empty() {
            return Err(bad(
                "image choice",
                format!("no image named {want:?}; the source has: {}", listing()),
            ));
        }
    }
    let want_platform = sel.platform.as_deref().unwrap_or("linux/amd64");
    if cands.len() > 1 {
        let fit: Vec<usize> = cands
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.platform
                    .as_deref()
                    .is_none_or(|p| platform_matches(want_platform, p))
            })
            .map(|(i, _)| i)
            .collect();
        if fit.is_empty() {
            return Err(bad(
                "image choice",
                format!(
                    "no image for platform {want_platform}; the source has: {}",
                    listing()
                ),
            ));
        }
        cands = cands
            .into_iter()
            .enumerate()
            .filter(|(i, _)| fit.contains(i))
            .map(|(_, c)| c)
            .collect();
    }
    match cands.len() {
        0 => Err(bad("image choice", "the source holds no image manifest")),
        1 => Ok(cands.remove(0)),
        _ => Err(bad(
            "image choice",
            format!(
                "the source holds several images; choose one with --ref NAME:TAG (or --platform OS/ARCH): {}",
                cands.iter().map(Candidate::label).collect::<Vec<_>>().join("; ")
            ),
        )),
    }
}

fn config_of(
    cfg: &ImageConfiguration,
    chosen: &Candidate,
    manifest_digest: Option<String>,
) -> ImageConfig {
    let c = cfg.config().clone().unwrap_or_default();
    ImageConfig {
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        user: c.user().clone().filter(|u| !u.is_empty()),
        labels: c
            .labels()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        reference: chosen.refs.first().cloned(),
        platform: Some(format!("{}/{}", cfg.os(), cfg.architecture())),
        manifest: manifest_digest,
    }
}

fn check_platform(cfg: &ImageConfiguration, sel: &Selector) -> Result<(), ImageError> {
    let have = format!("{}/{}", cfg.os(), cfg.architecture());
    let want = sel.platform.as_deref().unwrap_or("linux/amd64");
    let want_base: String = want.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
    if have != want_base {
        return Err(bad(
            "image choice",
            format!(
                "the image is for {have}, not {want}; give --platform {have} to import it anyway"
            ),
        ));
    }
    Ok(())
}

/// Choose the image, verify and apply its layers into `x`, and return its config.
pub(crate) fn import(
    x: &mut Extractor,
    blobs: &Blobs,
    kind: Container,
    sel: &Selector,
    input: Arc<AtomicU64>,
) -> Result<ImageConfig, ImageError> {
    match kind {
        Container::OciLayout | Container::OciArchive => {
            let layout = blobs.read_small("oci-layout", None)?;
            let v: serde_json::Value =
                serde_json::from_slice(&layout).map_err(|e| bad("oci-layout", e.to_string()))?;
            if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
                return Err(bad("oci-layout", "imageLayoutVersion is not 1.0.0"));
            }
            let raw = blobs.read_small("index.json", None)?;
            let index: ImageIndex =
                serde_json::from_slice(&raw).map_err(|e| bad("index.json", e.to_string()))?;
            let mut cands = Vec::new();
            oci_candidates(blobs, &index, &[], 0, &mut cands)?;
            let chosen = choose(cands, sel)?;
            let md = chosen
                .manifest
                .clone()
                .expect("OCI candidates name a manifest");
            let raw = blobs.read_small(&blob_path(&md)?, Some(&md))?;
            let manifest: ImageManifest = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("manifest {}", md.digest()), e.to_string()))?;
            let cd = manifest.config();
            let raw = blobs.read_small(&blob_path(cd)?, Some(cd))?;
            let cfg: ImageConfiguration = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("config {}", cd.digest()), e.to_string()))?;
            check_platform(&cfg, sel)?;
            let diff_ids = cfg.rootfs().diff_ids();
            if diff_ids.len() != manifest.layers().len() {
                return Err(bad(
                    format!("config {}", cd.digest()),
                    format!(
                        "names {} diff_ids but the manifest lists {} layers",
                        diff_ids.len(),
                        manifest.layers().len()
                    ),
                ));
            }
            for (i, (ld, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
                let mt = ld.media_type().to_string();
                if !mt.contains("tar") {
                    return Err(bad(
                        format!("layer {} ({})", i + 1, ld.digest()),
                        format!("unsupported media type {mt}"),
                    ));
                }
                let what = format!("layer {} ({})", i + 1, ld.digest());
                let (r, size) = blobs.open(&blob_path(ld)?)?;
                check_size(ld, size)?;
                x.begin_layer(ld.digest().digest());
                // Two digests per layer: the blob's (the manifest's) and its uncompressed
                // tar's (the config's diff_id, what the image's identity is built from).
                let mut blob = Verify::new(r, input.clone());
                let (tar_digest, applied) = match crate::compress::open(&mut blob) {
                    Ok((_, dec)) => {
                        let mut tar = Verify::new(dec, Arc::new(AtomicU64::new(0)));
                        let applied = extract::import_tar(x, &mut tar);
                        (tar.finish(&what), applied)
                    }
                    Err(e) => (Err(bad(&what, e.to_string())), Ok("tar")),
                };
                let blob_digest = blob.finish(&what);
                let want_diff = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
                // A blob that is not what its manifest names is reported as such, even when
                // its content also broke the extraction.
                match (blob_digest, tar_digest, applied) {
                    (Ok((got, _)), _, _) if got != ld.digest().digest() => {
                        return Err(digest_mismatch(ld, &got))
                    }
                    (Ok(_), Ok((got, _)), _) if got != want_diff => {
                        return Err(bad(
                            what,
                            format!("uncompressed content has digest sha256:{got}, the config's diff_id is {diff_id}; refusing a layer that does not match"),
                        ))
                    }
                    (_, _, Err(e)) => return Err(e),
                    (Err(e), _, Ok(_)) | (_, Err(e), Ok(_)) => return Err(e),
                    (Ok(_), Ok(_), Ok(_)) => {}
                }
            }
            Ok(config_of(&cfg, &chosen, Some(md.digest().to_string())))
        }
        Container::DockerArchive => {
            let raw = blobs.read_small("manifest.json", None)?;
            let entries: Vec<DockerEntry> =
                serde_json::from_slice(&raw).map_err(|e| bad("manifest.json", e.to_string()))?;
            let cands = entries
                .iter()
                .enumerate()
                .map(|(i, e)| Candidate {
                    refs: e.repo_tags.clone().unwrap_or_default(),
                    platform: None,
                    manifest: None,
                    docker: Some(i),
                })
                .collect();
            let chosen = choose(cands, sel)?;
            let entry = &entries[chosen.docker.expect("docker candidates name an entry")];
            let raw = blobs.read_small(&entry.config, None)?;
            // The config is named by its own digest (`<hex>.json` or `blobs/sha256/<hex>`).
            let stem = entry.config.rsplit('/').next().unwrap_or("");
            let stem = stem.strip_suffix(".json").unwrap_or(stem);
            let got = hex(&Sha256::digest(&raw));
            if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) && stem != got {
                return Err(bad(
                    format!("config {}", entry.config),
                    format!("content has digest sha256:{got}; refusing a config that does not match its name"),
                ));
            }
            let cfg: ImageConfiguration = serde_json::from_slice(&raw)
                .map_err(|e| bad(format!("config {}", entry.config), e.to_string()))?;
            check_platform(&cfg, sel)?;
            let diff_ids = cfg.rootfs().diff_ids();
            if diff_ids.len() != entry.layers.len() {
                return Err(bad(
                    "manifest.json",
                    format!(
                        "{} layers listed but the config names {} diff_ids",
                        entry.layers.len(),
                        diff_ids.len()
                    ),
                ));
            }
            for (i, (path, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
                let what = format!("layer {} ({path})", i + 1);
                let (r, _) = blobs.open(path)?;
                x.begin_layer(diff_id.strip_prefix("sha256:").unwrap_or(diff_id));
                // docker's diff_ids are digests of the uncompressed layer.
                let (_, dec) = crate::compress::open(Verify::new(r, input.clone()))
                    .map_err(|e| bad(&what, e.to_string()))?;
                let mut v = Verify::new(dec, Arc::new(AtomicU64::new(0)));
                let applied = extract::import_tar(x, &mut v);
                let want = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
                match (v.finish(&what), applied) {
                    (Ok((got, _)), _) if got != want => {
                        return Err(bad(
                            format!("blob {path}"),
                            format!("content has digest sha256:{got}, the config names {diff_id}; refusing a layer that does not match"),
                        ))
                    }
                    (_, Err(e)) => return Err(e),
                    (Err(e), Ok(_)) => return Err(e),
                    (Ok(_), Ok(_)) => {}
                }
            }
            Ok(config_of(&cfg, &chosen, None))
        }
    }
}
