//! A task's configs and secrets as files in its container. Secrets are written into a
//! tmpfs mounted under the task's directory (never onto the node's disk, as Docker keeps
//! them) and configs into the task's directory; each file is bound read-only at its
//! target with the uid, gid and mode the service asks for. Both go with the task
//! ([`release`]). The contents come with the node's assignments, by the digest each of the
//! task's references pins; a reference whose content did not come fails the task naming it.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use swarm_api::files::FileContents;
use swarm_api::spec::{ContainerSpec, FileReference};

use crate::exec::FileMount;

fn secrets_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("secrets")
}

fn configs_dir(task_dir: &Path) -> PathBuf {
    task_dir.join("configs")
}

/// Writes a task's secrets (on a fresh tmpfs) and configs under its directory `task_dir`;
/// the binds that place them in its `container`.
pub fn prepare(
    task_dir: &Path,
    container: &ContainerSpec,
    contents: &FileContents,
) -> Result<Vec<FileMount>, String> {
    let mut mounts = Vec::new();
    if !container.secrets.is_empty() {
        let dir = secrets_dir(task_dir);
        mount_tmpfs(&dir)?;
        mounts.extend(write_files(&dir, "secret", &container.secrets, contents)?);
    }
    if !container.configs.is_empty() {
        let dir = configs_dir(task_dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        mounts.extend(write_files(&dir, "config", &container.configs, contents)?);
    }
    Ok(mounts)
}

/// Writes one file per reference in `dir` (named by its position: targets are paths in
/// the container, not here), owned and moded as asked.
fn write_files(
    dir: &Path,
    what: &str,
    references: &[FileReference],
    contents: &FileContents,
) -> Result<Vec<FileMount>, String> {
    let mut mounts = Vec::new();
    for (index, reference) in references.iter().enumerate() {
        let source = &reference.source;
        let content = reference
            .digest
            .as_ref()
            .and_then(|digest| contents.get(digest))
            .ok_or_else(|| {
                format!("{what} {source} not found: its content was not given to this node")
            })?;
        let id = |text: &str, field: &str| {
            text.parse::<u32>()
                .map_err(|_| format!("{what} {source}: {field} {text:?} is not a number"))
        };
        let (uid, gid) = (id(&reference.uid, "uid")?, id(&reference.gid, "gid")?);
        let path = dir.join(index.to_string());
        let failed = |e: std::io::Error| format!("{what} {source}: {}: {e}", path.display());
        std::fs::write(&path, content.bytes()).map_err(failed)?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(failed)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(reference.mode))
            .map_err(failed)?;
        mounts.push(FileMount {
            source: path,
            destination: reference.target.clone(),
            read_only: true,
        });
    }
    Ok(mounts)
}

fn c_path(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("no NUL in paths")
}

/// A new tmpfs at `dir` (made if missing), readable by root only: the secrets' files live
/// in memory. An earlier one there (a task started again) is replaced.
fn mount_tmpfs(dir: &Path) -> Result<(), String> {
    unmount(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (source, kind) = (c"tmpfs", c"tmpfs");
    let options = c"mode=0700";
    let target = c_path(dir);
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let made = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            flags,
            options.as_ptr().cast(),
        )
    };
    if made != 0 {
        let error = std::io::Error::last_os_error();
        return Err(format!(
            "cannot mount a tmpfs for secrets at {}: {error}",
            dir.display()
        ));
    }
    Ok(())
}

/// Unmounts the tmpfs at `dir` if one is there.
fn unmount(dir: &Path) -> Result<(), String> {
    let target = c_path(dir);
    // SAFETY: target is a valid NUL-terminated string. A busy tmpfs (a container still
    // holds a file) is detached; the kernel frees it when the last user goes.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
        let error = std::io::Error::last_os_error();
        // Not mounted (EINVAL) or not there (ENOENT): nothing to unmount.
        if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            return Err(format!("cannot unmount {}: {error}", dir.display()));
        }
    }
    Ok(())
}

/// Removes the task's secrets (their tmpfs) and configs. Releasing twice is fine.
pub fn release(task_dir: &Path) -> Result<(), String> {
    let secrets = secrets_dir(task_dir);
    unmount(&secrets)?;
    for dir in [secrets, configs_dir(task_dir)] {
        match std::fs::remove_dir_all(&dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("{}: {error}", dir.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::files::FileContent;

    fn reference(source: &str, target: &str, digest: Option<String>, mode: u32) -> FileReference {
        FileReference {
            source: source.into(),
            target: target.into(),
            uid: "0".into(),
            gid: "0".into(),
            mode,
            digest,
        }
    }

    #[test]
    fn files_are_written_with_their_mode_and_bound_read_only_at_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let content = FileContent::new(b"pw".to_vec());
        let contents = FileContents::from([(content.digest(), content.clone())]);
        let references = [reference(
            "db_pw",
            "/run/secrets/db",
            Some(content.digest()),
            0o440,
        )];
        let mounts = write_files(dir.path(), "secret", &references, &contents).unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].destination, "/run/secrets/db");
        assert!(mounts[0].read_only);
        assert_eq!(std::fs::read(&mounts[0].source).unwrap(), b"pw");
        let mode = std::fs::metadata(&mounts[0].source)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);

        // A content that did not come, and an owner that is not a number, fail naming it.
        let missing = [reference(
            "gone",
            "/run/secrets/gone",
            Some("sha256:00".into()),
            0o444,
        )];
        let error = write_files(dir.path(), "secret", &missing, &contents).unwrap_err();
        assert_eq!(
            error,
            "secret gone not found: its content was not given to this node"
        );
        let mut named = reference("db_pw", "/x", Some(content.digest()), 0o444);
        named.uid = "www-data".into();
        let error = write_files(dir.path(), "config", &[named], &contents).unwrap_err();
        assert_eq!(error, "config db_pw: uid \"www-data\" is not a number");
    }

    /// As root (CI, this machine) the secrets' tmpfs is a tmpfs, and goes with the task.
    #[test]
    fn secrets_live_on_a_tmpfs_released_with_the_task() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root");
            assert!(std::env::var("CI").is_err(), "CI runs as root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secrets = secrets_dir(dir.path());
        mount_tmpfs(&secrets).unwrap();
        let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
        let path = c_path(&secrets);
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut stat) }, 0);
        assert_eq!(stat.f_type, libc::TMPFS_MAGIC);
        std::fs::write(secrets.join("0"), b"pw").unwrap();
        release(dir.path()).unwrap();
        assert!(!secrets.exists());
        release(dir.path()).unwrap();
    }
}
