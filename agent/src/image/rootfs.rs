//! A task's root filesystem: an overlayfs over the image's read-only root filesystem, with
//! the task's writes in a directory of its own.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::ImageError;
use super::store::remove_tree;

/// An overlay mounted at `DIR/merged` (lower: the image's root filesystem, upper and work
/// directories: `DIR/upper`, `DIR/work`). It stays mounted until `release`: a restarted
/// agent finds it by its directory (`TaskRootfs::at`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRootfs {
    dir: PathBuf,
}

impl TaskRootfs {
    /// Mounts an overlay of `lower` (an image's `rootfs`) in `dir`, which is created and must
    /// not be in use by another task.
    pub fn mount(lower: &Path, dir: &Path) -> Result<TaskRootfs, ImageError> {
        let rootfs = TaskRootfs::at(dir);
        for path in [lower, dir] {
            // The mount options are a comma-separated list: these would break it.
            if path
                .as_os_str()
                .as_bytes()
                .iter()
                .any(|b| b",:\\".contains(b))
            {
                return Err(ImageError::Io {
                    action: "cannot mount an overlay with",
                    path: path.to_owned(),
                    detail: "the path holds ',', ':' or '\\'; choose a data dir without them"
                        .into(),
                });
            }
        }
        for path in [rootfs.upper(), rootfs.work(), rootfs.merged()] {
            std::fs::create_dir_all(&path)
                .map_err(|e| ImageError::io("cannot create task rootfs directory", &path, e))?;
        }
        // The merged root takes the upper directory's mode: make it a normal root's.
        std::fs::set_permissions(rootfs.upper(), PermissionsExt::from_mode(0o755))
            .map_err(|e| ImageError::io("cannot set mode of", &rootfs.upper(), e))?;
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            rootfs.upper().display(),
            rootfs.work().display()
        );
        let c = |path: &Path| CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths");
        let target = c(&rootfs.merged());
        let options = CString::new(options).expect("no NUL in paths");
        // SAFETY: every pointer is a valid NUL-terminated string living across the call.
        let status = unsafe {
            libc::mount(
                c"overlay".as_ptr(),
                target.as_ptr(),
                c"overlay".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if status != 0 {
            let error = std::io::Error::last_os_error();
            let _ = remove_tree(dir);
            return Err(ImageError::io(
                "cannot mount overlay at",
                &rootfs.merged(),
                error,
            ));
        }
        Ok(rootfs)
    }

    /// The task root filesystem in `dir`, mounted or not (to release it after a restart).
    pub fn at(dir: &Path) -> TaskRootfs {
        TaskRootfs {
            dir: dir.to_owned(),
        }
    }

    /// The container's root: what goes in the OCI bundle's `root.path`.
    pub fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// Where the task's writes land.
    pub fn upper(&self) -> PathBuf {
        self.dir.join("upper")
    }

    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Unmounts the overlay (if mounted) and removes the directory with the task's writes.
    /// Releasing twice is fine.
    pub fn release(&self) -> Result<(), ImageError> {
        let merged = self.merged();
        let target = CString::new(merged.as_os_str().as_bytes()).expect("no NUL in paths");
        // SAFETY: target is a valid NUL-terminated string.
        if unsafe { libc::umount2(target.as_ptr(), 0) } != 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // Not mounted (EINVAL), or already gone (ENOENT): nothing to unmount.
                Some(libc::EINVAL | libc::ENOENT) => {}
                // Still busy (a process holds a file): detach it, the kernel finishes later.
                // SAFETY: as above.
                Some(libc::EBUSY)
                    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 => {}
                _ => return Err(ImageError::io("cannot unmount overlay at", &merged, error)),
            }
        }
        remove_tree(&self.dir)
    }
}
