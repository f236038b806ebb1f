//! The content store on disk, and its garbage collection. Blocking filesystem work.
//!
//! ```text
//! ROOT/blobs/sha256/<hex>      verified blobs (manifests, indexes, configs, layers)
//! ROOT/rootfs/<hex>/           one read-only lower directory per image (hex of its manifest)
//! ROOT/{blobs/sha256,rootfs}/.tmp-*   work in progress: written aside, then renamed
//! ```
//!
//! Architecture invariant: whatever has its final name in the store is complete and
//! verified. Pulls write aside (`.tmp-*`) and rename; nothing half-written is ever trusted.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::error::ImageError;
use super::manifest::{self, Fetched, Manifest};

const TMP_PREFIX: &str = ".tmp-";
/// Indexes and manifests are small JSON documents; larger blobs are not read to find them.
const MAX_INDEX_SIZE: u64 = 4 << 20;

/// What a garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Manifest digests of the images whose root filesystems were removed.
    pub images: Vec<String>,
    pub blobs: usize,
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Creates the store's directories under `root` and removes work a crashed process left.
    pub fn open(root: &Path) -> Result<Layout, ImageError> {
        let layout = Layout {
            root: root.to_owned(),
        };
        for dir in [layout.blobs_dir(), layout.rootfs_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ImageError::io("cannot create image store directory", &dir, e))?;
        }
        layout.remove_work_in_progress()?;
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    fn rootfs_dir(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    /// Where blob `digest` (`sha256:<hex>`, already checked) is stored.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.blobs_dir().join(hex(digest))
    }

    /// The root filesystem of the image whose manifest is `digest`.
    pub fn rootfs(&self, digest: &str) -> PathBuf {
        self.rootfs_dir().join(hex(digest))
    }

    /// A fresh name beside the blobs (same filesystem, so renaming is atomic).
    pub fn blob_tmp(&self, digest: &str) -> PathBuf {
        self.blobs_dir().join(tmp_name(hex(digest)))
    }

    pub fn rootfs_tmp(&self, digest: &str) -> PathBuf {
        self.rootfs_dir().join(tmp_name(hex(digest)))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob(digest).is_file()
    }

    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob(digest);
        std::fs::read(&path).map_err(|e| ImageError::io("cannot read blob", &path, e))
    }

    /// Stores `content` as blob `digest` (the caller verified it), written aside and renamed.
    pub fn write_blob(&self, digest: &str, content: &[u8]) -> Result<(), ImageError> {
        let tmp = self.blob_tmp(digest);
        let written = std::fs::File::create_new(&tmp).and_then(|mut file| {
            std::io::Write::write_all(&mut file, content)?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::io("cannot write blob", &tmp, e));
        }
        self.commit_blob(&tmp, digest)
    }

    /// Gives a verified blob written at `tmp` its final name.
    pub fn commit_blob(&self, tmp: &Path, digest: &str) -> Result<(), ImageError> {
        let path = self.blob(digest);
        std::fs::rename(tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            ImageError::io("cannot store blob", &path, e)
        })
    }

    /// The manifest digest and manifest an index or manifest blob `digest` leads to, when
    /// those blobs are stored.
    pub fn stored_manifest(&self, digest: &str) -> Option<(String, Manifest)> {
        let (os, arch) = manifest::this_platform();
        let mut digest = digest.to_owned();
        // An index leads to a manifest; a manifest leads nowhere further.
        for _ in 0..2 {
            if !self.has_blob(&digest) {
                return None;
            }
            match manifest::parse(&self.read_blob(&digest).ok()?, os, arch).ok()? {
                Fetched::Image(manifest) => return Some((digest, manifest)),
                Fetched::Index { manifest } => digest = manifest,
            }
        }
        None
    }

    /// Manifest digests of the images whose root filesystems are stored.
    pub fn images(&self) -> Result<Vec<String>, ImageError> {
        let dir = self.rootfs_dir();
        let mut images: Vec<String> = list(&dir)?
            .into_iter()
            .filter(|name| !name.starts_with(TMP_PREFIX))
            .map(|name| format!("sha256:{name}"))
            .collect();
        images.sort();
        Ok(images)
    }

    /// Removes the images not in `in_use` (manifest digests), then every blob no kept image
    /// needs. The caller makes sure no pull runs meanwhile.
    pub fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError> {
        self.remove_work_in_progress()?;
        let mut report = GcReport::default();
        let mut keep: HashSet<String> = HashSet::new();
        for image in self.images()? {
            if in_use.contains(&image) {
                if let Some((digest, manifest)) = self.stored_manifest(&image) {
                    keep.insert(digest);
                    keep.insert(manifest.config.digest);
                    keep.extend(manifest.layers.into_iter().map(|(layer, _)| layer.digest));
                }
                continue;
            }
            // Renamed aside first: a crash half-way must not leave a partial root
            // filesystem under an image's name.
            let rootfs = self.rootfs(&image);
            let doomed = self.rootfs_tmp(&image);
            std::fs::rename(&rootfs, &doomed)
                .map_err(|e| ImageError::io("cannot remove image", &rootfs, e))?;
            remove_tree(&doomed)?;
            report.images.push(image);
        }
        let blobs = self.blobs_dir();
        for name in list(&blobs)? {
            let digest = format!("sha256:{name}");
            if keep.contains(&digest) || self.is_index_of_kept(&digest, &keep) {
                continue;
            }
            let path = blobs.join(&name);
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            std::fs::remove_file(&path)
                .map_err(|e| ImageError::io("cannot remove blob", &path, e))?;
            report.blobs += 1;
            report.bytes += size;
        }
        Ok(report)
    }

    /// Whether blob `digest` is an index pointing at a kept manifest: kept, so a reference
    /// by the index's digest still needs no network.
    fn is_index_of_kept(&self, digest: &str, keep: &HashSet<String>) -> bool {
        let path = self.blob(digest);
        let small = std::fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_INDEX_SIZE);
        if !small {
            return false;
        }
        let (os, arch) = manifest::this_platform();
        matches!(
            std::fs::read(&path).map(|blob| manifest::parse(&blob, os, arch)),
            Ok(Ok(Fetched::Index { manifest })) if keep.contains(&manifest)
        )
    }

    fn remove_work_in_progress(&self) -> Result<(), ImageError> {
        for dir in [self.blobs_dir(), self.rootfs_dir()] {
            for name in list(&dir)? {
                if name.starts_with(TMP_PREFIX) {
                    remove_tree(&dir.join(name))?;
                }
            }
        }
        Ok(())
    }
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// `.tmp-<hex>-<pid>-<n>`: unique among this process's pulls and other processes on the
/// same store.
fn tmp_name(hex: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{TMP_PREFIX}{hex}-{}-{n}", std::process::id())
}

fn list(dir: &Path) -> Result<Vec<String>, ImageError> {
    let io = |e| ImageError::io("cannot list", dir, e);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        names.push(
            entry
                .map_err(io)?
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    Ok(names)
}

pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| ImageError::io("cannot remove", path, e))
}
