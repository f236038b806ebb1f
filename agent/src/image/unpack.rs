//! Applying layers (tar, tar+gzip, tar+zstd) in order into one directory, with OCI
//! whiteouts. Blocking filesystem work: callers run it on a blocking thread.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (OCI and Docker spellings), or `None` when the
    /// media type is not a layer this module can apply.
    pub fn of_media_type(media_type: &str) -> Option<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Some(Compression::Zstd)
            }
            _ => None,
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug)]
pub enum ApplyError {
    /// The layer itself is bad: not a (compressed) tar, or an entry that would escape the
    /// root. Pulling it again will not help.
    Corrupt(String),
    /// Writing the root failed (disk full, permissions): the layer may be fine.
    Io { path: PathBuf, error: io::Error },
}

/// Applies one layer on top of `root`: entries are created (owners, modes, times, symlinks,
/// hard links and device nodes kept), `.wh.NAME` removes NAME of a lower layer and
/// `.wh..wh..opq` empties its directory of lower layers' entries. Entries that would land
/// outside `root` (`..`, or through a symlink pointing out) are refused.
pub fn apply_layer(
    root: &Path,
    layer: impl Read,
    compression: Compression,
) -> Result<(), ApplyError> {
    let read_error = Rc::new(Cell::new(None));
    let tracked = Tracked {
        inner: layer,
        error: read_error.clone(),
    };
    let reader: Box<dyn Read> = match compression {
        Compression::None => Box::new(tracked),
        Compression::Gzip => Box::new(Tracked {
            inner: flate2::read::GzDecoder::new(tracked),
            error: read_error.clone(),
        }),
        Compression::Zstd => Box::new(Tracked {
            inner: zstd::Decoder::new(tracked)
                .map_err(|e| ApplyError::Corrupt(format!("zstd: {e}")))?,
            error: read_error.clone(),
        }),
    };
    let canonical_root = root.canonicalize().map_err(|error| ApplyError::Io {
        path: root.to_owned(),
        error,
    })?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    // Extended attributes are not kept: filesystems under the store may refuse them, and the
    // test and demo images carry none.
    archive.set_unpack_xattrs(false);

    // The entries this layer made: an opaque whiteout keeps them and removes the rest.
    let mut this_layer: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = entry.path().map_err(corrupt)?.into_owned();
        let Some(relative) = normalise(&raw_path)? else {
            continue; // the layer's root itself: the directory exists already
        };
        let name = relative
            .file_name()
            .expect("normalised paths end in a name")
            .to_owned();
        let parent = resolve_parent(&canonical_root, &relative)?;

        if name == OPAQUE_WHITEOUT {
            if let Some(dir) = parent {
                remove_lower_children(&dir, &this_layer)?;
            }
            continue;
        }
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if let Some(dir) = parent {
                remove_any(&dir.join(OsStr::from_bytes(hidden)))?;
            }
            continue;
        }

        let kind = entry.header().entry_type();
        if kind.is_hard_link() {
            check_hard_link_target(&canonical_root, &raw_path, &entry)?;
        }
        if let Some(dir) = &parent {
            // A lower entry of another kind (or any non-directory) is replaced, not merged.
            let target = dir.join(&name);
            match std::fs::symlink_metadata(&target) {
                Ok(meta) if meta.is_dir() && kind.is_dir() => {}
                Ok(_) => remove_any(&target)?,
                Err(_) => {}
            }
        }
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            make_node(&canonical_root, &relative, &entry)?;
        } else {
            let unpacked = entry.unpack_in(&canonical_root).map_err(|error| {
                // A failed read of the layer is the layer's fault; a failed write is ours.
                match read_error.take() {
                    Some(read) => ApplyError::Corrupt(format!("{}: {read}", raw_path.display())),
                    None => ApplyError::Io {
                        path: canonical_root.join(&relative),
                        error,
                    },
                }
            })?;
            if !unpacked {
                return Err(ApplyError::Corrupt(format!(
                    "{} escapes the root",
                    raw_path.display()
                )));
            }
        }
        // The parent exists now (unpacking creates missing parents).
        if let Some(dir) = resolve_parent(&canonical_root, &relative)? {
            this_layer.insert(dir.join(&name));
        }
    }
    Ok(())
}

/// A reader that remembers its first error, to tell a corrupt layer from a failed write when
/// the tar crate reports both as io::Error.
struct Tracked<R> {
    inner: R,
    error: Rc<Cell<Option<String>>>,
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|error| {
            let previous = self.error.take();
            self.error.set(previous.or_else(|| Some(error.to_string())));
        })
    }
}

/// A hard link must name an entry already inside the root.
fn check_hard_link_target<R: Read>(
    canonical_root: &Path,
    raw_path: &Path,
    entry: &tar::Entry<'_, R>,
) -> Result<(), ApplyError> {
    let escapes =
        || ApplyError::Corrupt(format!("hard link {} escapes the root", raw_path.display()));
    let link = entry.link_name().map_err(corrupt)?.ok_or_else(escapes)?;
    let Some(relative) = normalise(&link).map_err(|_| escapes())? else {
        return Err(escapes());
    };
    if Path::new(link.as_ref()).is_absolute() {
        return Err(escapes());
    }
    match canonical_root.join(relative).canonicalize() {
        Ok(target) if target.starts_with(canonical_root) => Ok(()),
        Ok(_) => Err(escapes()),
        Err(error) => Err(ApplyError::Corrupt(format!(
            "hard link {} names {}: {error}",
            raw_path.display(),
            link.display()
        ))),
    }
}

fn corrupt(error: io::Error) -> ApplyError {
    ApplyError::Corrupt(error.to_string())
}

/// The entry's path relative to the root, without `.` and leading `/`; `None` for the root
/// itself. `..` is refused.
fn normalise(path: &Path) -> Result<Option<PathBuf>, ApplyError> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(ApplyError::Corrupt(format!(
                    "{} escapes the root",
                    path.display()
                )));
            }
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// The real directory holding `relative` (symlinks resolved), or `None` when it does not
/// exist yet. A parent that resolves outside the root is refused, so nothing outside is
/// removed or written through a symlink a layer planted.
fn resolve_parent(canonical_root: &Path, relative: &Path) -> Result<Option<PathBuf>, ApplyError> {
    let parent = canonical_root.join(relative.parent().unwrap_or(Path::new("")));
    match parent.canonicalize() {
        Ok(dir) if dir.starts_with(canonical_root) => Ok(Some(dir)),
        Ok(_) => Err(ApplyError::Corrupt(format!(
            "{} escapes the root through a symbolic link",
            relative.display()
        ))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(ApplyError::Io {
            path: parent,
            error,
        }),
    }
}

fn remove_any(path: &Path) -> Result<(), ApplyError> {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    };
    result.map_err(|error| ApplyError::Io {
        path: path.to_owned(),
        error,
    })
}

fn remove_lower_children(dir: &Path, this_layer: &HashSet<PathBuf>) -> Result<(), ApplyError> {
    let io_error = |error| ApplyError::Io {
        path: dir.to_owned(),
        error,
    };
    for child in std::fs::read_dir(dir).map_err(io_error)? {
        let child = child.map_err(io_error)?.path();
        if !this_layer.contains(&child) {
            remove_any(&child)?;
        }
    }
    Ok(())
}

/// Character and block devices and fifos, which the tar crate would write as plain files.
fn make_node<R: Read>(
    canonical_root: &Path,
    relative: &Path,
    entry: &tar::Entry<'_, R>,
) -> Result<(), ApplyError> {
    let header = entry.header();
    let path = canonical_root.join(relative);
    let io_error = |error| ApplyError::Io {
        path: path.clone(),
        error,
    };
    let kind = header.entry_type();
    let file_type = if kind.is_character_special() {
        libc::S_IFCHR
    } else if kind.is_block_special() {
        libc::S_IFBLK
    } else {
        libc::S_IFIFO
    };
    let number = |n: io::Result<Option<u32>>| n.map_err(corrupt).map(Option::unwrap_or_default);
    let (major, minor) = (
        number(header.device_major())?,
        number(header.device_minor())?,
    );
    let mode = header.mode().map_err(corrupt)? & 0o7777;
    let (uid, gid) = (
        header.uid().map_err(corrupt)?,
        header.gid().map_err(corrupt)?,
    );
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ApplyError::Corrupt(format!("{} holds a NUL byte", relative.display())))?;
    // SAFETY: c_path is a valid NUL-terminated string; mknod and lchown only read it.
    unsafe {
        if libc::mknod(
            c_path.as_ptr(),
            file_type | mode,
            libc::makedev(major, minor),
        ) != 0
        {
            return Err(io_error(io::Error::last_os_error()));
        }
        if libc::lchown(c_path.as_ptr(), uid as libc::uid_t, gid as libc::gid_t) != 0 {
            return Err(io_error(io::Error::last_os_error()));
        }
    }
    // mknod's mode passes through the umask: set it exactly.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(io_error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    /// One entry of a test layer.
    enum E<'a> {
        Dir(&'a str, u32),
        File(&'a str, &'a str, u32, u64),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
        Fifo(&'a str),
    }

    fn layer(entries: &[E<'_>]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for entry in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(1_700_000_000);
            header.set_uid(0);
            header.set_gid(0);
            header.set_device_major(0).unwrap();
            header.set_device_minor(0).unwrap();
            let (path, data): (&str, &[u8]) = match entry {
                E::Dir(path, mode) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    (path, b"")
                }
                E::File(path, content, mode, owner) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_uid(*owner);
                    header.set_gid(*owner);
                    (path, content.as_bytes())
                }
                E::Symlink(path, target) | E::Hardlink(path, target) => {
                    header.set_entry_type(if matches!(entry, E::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    header.set_mode(0o777);
                    raw_name(&mut header.as_old_mut().linkname, target);
                    (path, b"")
                }
                E::Fifo(path) => {
                    header.set_entry_type(tar::EntryType::Fifo);
                    header.set_mode(0o640);
                    (path, b"")
                }
            };
            // Raw names: the builder's own setters refuse the `..` that some tests need.
            raw_name(&mut header.as_old_mut().name, path);
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn raw_name(field: &mut [u8], name: &str) {
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
    }

    fn compress(tar: Vec<u8>, compression: Compression) -> Vec<u8> {
        match compression {
            Compression::None => tar,
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                io::Write::write_all(&mut encoder, &tar).unwrap();
                encoder.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(&tar[..], 1).unwrap(),
        }
    }

    fn apply_all(
        root: &Path,
        layers: &[Vec<u8>],
        compression: Compression,
    ) -> Result<(), ApplyError> {
        for tar in layers {
            apply_layer(root, &compress(tar.clone(), compression)[..], compression)?;
        }
        Ok(())
    }

    /// Every path under `root` with a short description, sorted.
    fn listing(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for child in std::fs::read_dir(dir).unwrap() {
                let path = child.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                if meta.is_dir() {
                    out.push(format!("{name}/"));
                    walk(root, &path, out);
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).unwrap();
                    out.push(format!("{name} -> {}", target.display()));
                } else {
                    out.push(format!(
                        "{name} = {}",
                        std::fs::read_to_string(&path).unwrap_or_default()
                    ));
                }
            }
        }
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn media_types_map_to_compressions() {
        let cases = [
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar",
                Some(Compression::None),
            ),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
            ("application/vnd.wasm.content.layer.v1+wasm", None),
        ];
        for (media_type, want) in cases {
            assert_eq!(Compression::of_media_type(media_type), want, "{media_type}");
        }
    }

    #[test]
    fn layers_apply_in_order_with_whiteouts_in_every_compression() {
        if !swarm_testkit::require(
            "layers_apply_in_order_with_whiteouts_in_every_compression",
            swarm_testkit::is_root(),
            "root (layers keep their owners)",
        ) {
            return;
        }
        let lower = layer(&[
            E::Dir("etc/", 0o755),
            E::File("etc/keep", "keep", 0o644, 0),
            E::File("etc/gone", "gone", 0o644, 0),
            E::Dir("opaque/", 0o755),
            E::File("opaque/old", "old", 0o644, 0),
            E::Dir("opaque/sub/", 0o755),
            E::Dir("was-dir/", 0o755),
            E::File("was-dir/x", "x", 0o644, 0),
            E::File("was-file", "f", 0o644, 0),
            E::File("bin/busybox", "bb", 0o755, 0),
            E::Symlink("bin/sh", "busybox"),
        ]);
        let upper = layer(&[
            E::File("etc/.wh.gone", "", 0o644, 0),
            E::Dir("opaque/", 0o700),
            E::File("opaque/new", "new", 0o644, 0),
            E::File("opaque/.wh..wh..opq", "", 0o644, 0),
            E::File("was-dir", "now a file", 0o644, 0),
            E::Dir("was-file/", 0o755),
            E::Hardlink("bin/link", "bin/busybox"),
            E::File("bin/.wh.missing", "", 0o644, 0),
        ]);
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let root = tempfile::tempdir().unwrap();
            apply_all(root.path(), &[lower.clone(), upper.clone()], compression).unwrap();
            assert_eq!(
                listing(root.path()),
                [
                    "bin/",
                    "bin/busybox = bb",
                    "bin/link = bb",
                    "bin/sh -> busybox",
                    "etc/",
                    "etc/keep = keep",
                    "opaque/",
                    "opaque/new = new",
                    "was-dir = now a file",
                    "was-file/",
                ],
                "{compression:?}"
            );
            let busybox = std::fs::metadata(root.path().join("bin/busybox")).unwrap();
            let link = std::fs::metadata(root.path().join("bin/link")).unwrap();
            assert_eq!(busybox.ino(), link.ino(), "hard link kept");
            assert_eq!(busybox.permissions().mode() & 0o7777, 0o755);
            let opaque = std::fs::metadata(root.path().join("opaque")).unwrap();
            assert_eq!(
                opaque.permissions().mode() & 0o7777,
                0o700,
                "upper mode wins"
            );
        }
    }

    #[test]
    fn owners_modes_times_and_fifos_are_kept() {
        if !swarm_testkit::require(
            "owners_modes_times_and_fifos_are_kept",
            swarm_testkit::is_root(),
            "root (chown, mknod)",
        ) {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let tar = layer(&[
            E::File("owned", "x", 0o4750, 1234),
            E::Fifo("pipe"),
            E::Dir("sticky/", 0o1777),
        ]);
        apply_layer(root.path(), &tar[..], Compression::None).unwrap();
        let owned = std::fs::metadata(root.path().join("owned")).unwrap();
        assert_eq!((owned.uid(), owned.gid()), (1234, 1234));
        assert_eq!(
            owned.permissions().mode() & 0o7777,
            0o4750,
            "setuid kept after chown"
        );
        assert_eq!(owned.mtime(), 1_700_000_000);
        let pipe = std::fs::symlink_metadata(root.path().join("pipe")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&pipe.file_type()));
        assert_eq!(pipe.permissions().mode() & 0o7777, 0o640);
        let sticky = std::fs::metadata(root.path().join("sticky")).unwrap();
        assert_eq!(sticky.permissions().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn entries_escaping_the_root_are_refused() {
        if !swarm_testkit::require(
            "entries_escaping_the_root_are_refused",
            swarm_testkit::is_root(),
            "root (layers keep their owners)",
        ) {
            return;
        }
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let out = outside.path().display().to_string();
        let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
            (
                "dot-dot",
                vec![layer(&[E::File("../escape", "x", 0o644, 0)])],
            ),
            (
                "write through an absolute symlink",
                vec![
                    layer(&[E::Symlink("link", &out)]),
                    layer(&[E::File("link/victim", "overwritten", 0o644, 0)]),
                ],
            ),
            (
                "whiteout through a symlink",
                vec![layer(&[
                    E::Symlink("link", &out),
                    E::File("link/.wh.victim", "", 0o644, 0),
                ])],
            ),
            (
                "opaque through a symlink",
                vec![layer(&[
                    E::Symlink("link", &out),
                    E::File("link/.wh..wh..opq", "", 0o644, 0),
                ])],
            ),
            (
                "hard link to outside",
                vec![layer(&[E::Hardlink(
                    "stolen",
                    &victim.display().to_string(),
                )])],
            ),
            (
                "hard link with dot-dot",
                vec![layer(&[E::Hardlink(
                    "stolen",
                    "../../../../../../etc/hostname",
                )])],
            ),
        ];
        for (name, layers) in cases {
            let root = tempfile::tempdir().unwrap();
            let err = apply_all(root.path(), &layers, Compression::None).expect_err(name);
            match err {
                ApplyError::Corrupt(message) => {
                    assert!(message.contains("escapes the root"), "{name}: {message}")
                }
                ApplyError::Io { path, error } => {
                    panic!("{name}: io error on {}: {error}", path.display())
                }
            }
            assert_eq!(
                std::fs::read_to_string(&victim).unwrap(),
                "untouched",
                "{name}"
            );
        }
    }

    #[test]
    fn corrupt_streams_are_reported_as_corrupt() {
        if !swarm_testkit::require(
            "corrupt_streams_are_reported_as_corrupt",
            swarm_testkit::is_root(),
            "root (layers keep their owners)",
        ) {
            return;
        }
        let good = layer(&[E::File("a", "a", 0o644, 0)]);
        let gzip = compress(good.clone(), Compression::Gzip);
        let cases: Vec<(&str, Vec<u8>, Compression)> = vec![
            (
                "gzip garbage",
                b"not gzip at all".to_vec(),
                Compression::Gzip,
            ),
            (
                "truncated gzip",
                gzip[..gzip.len() / 2].to_vec(),
                Compression::Gzip,
            ),
            (
                "zstd garbage",
                b"not zstd at all".to_vec(),
                Compression::Zstd,
            ),
            ("tar garbage", vec![7u8; 1024], Compression::None),
        ];
        for (name, blob, compression) in cases {
            let root = tempfile::tempdir().unwrap();
            let err = apply_layer(root.path(), &blob[..], compression).expect_err(name);
            assert!(matches!(err, ApplyError::Corrupt(_)), "{name}: {err:?}");
        }
    }
}
