//! swarm-init, the init a task with `init: true` runs as PID 1 (Docker's `--init`): it
//! reaps the zombies of the container's PID namespace and forwards signals to the command.
//! A static executable built from `init/init.c` by the build script and embedded here; a
//! node writes it once into its data directory, and each such container binds it read-only.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::RuntimeError;

/// The executable.
const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swarm-init"));

/// Where a container sees it; its command follows it as its arguments.
pub const CONTAINER_PATH: &str = "/sbin/swarm-init";

/// Writes swarm-init into `data_dir` unless it is there already, as it is; returns its
/// path. Written aside and renamed: a container never binds a half-written file.
pub fn install(data_dir: &Path) -> Result<PathBuf, RuntimeError> {
    let path = data_dir.join("swarm-init");
    let current = fs::read(&path).ok();
    let executable = fs::metadata(&path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0);
    if current.as_deref() == Some(BINARY) && executable {
        return Ok(path);
    }
    let failed = |source| RuntimeError::InitInstall {
        path: path.clone(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(failed)?;
    let aside = data_dir.join(format!(".swarm-init.{}", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(&aside)
        .and_then(|mut file| {
            file.write_all(BINARY)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&aside, &path));
    if let Err(source) = written {
        let _ = fs::remove_file(&aside);
        return Err(failed(source));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installs_once_and_repairs_a_changed_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = install(&dir.path().join("data")).unwrap();
        assert_eq!(fs::read(&path).unwrap(), BINARY);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        // A static ELF executable.
        assert_eq!(&BINARY[..4], b"\x7fELF");

        fs::write(&path, b"not swarm-init").unwrap();
        assert_eq!(install(&dir.path().join("data")).unwrap(), path);
        assert_eq!(fs::read(&path).unwrap(), BINARY);
        let left: Vec<_> = fs::read_dir(dir.path().join("data")).unwrap().collect();
        assert_eq!(left.len(), 1, "nothing left aside: {left:?}");

        let blocked = dir.path().join("file");
        fs::write(&blocked, b"").unwrap();
        let error = install(&blocked).unwrap_err().to_string();
        assert!(error.contains("swarm-init"), "{error}");
    }
}
