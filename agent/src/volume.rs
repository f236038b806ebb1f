//! A task's volume, bind and tmpfs mounts, made on the node before its container starts.
//!
//! Named volumes use Docker's `local` driver layout: `DATA_DIR/volumes/NAME/_data`, made at
//! first use and kept across tasks (a replaced task, an updated service, find their data).
//! A volume whose `driver_opts` name a `type` is mounted there the way Docker's local driver
//! mounts it (`mount -t TYPE -o O DEVICE`: `type: none, o: bind, device: /path` binds a host
//! directory, `type: tmpfs` keeps it in memory, `nfs` and block devices as the kernel can); the
//! options it was made with are recorded beside it (`opts.json`), and a volume keeps its
//! first options as Docker's does. Anonymous volumes live in the task's own directory and go
//! with it. A volume that is empty when mounted is filled with what the image has at the
//! target (Docker's copy-up), unless the mount says `nocopy`.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use swarm_api::spec::{Mount, MountKind, Propagation, VolumeOptions};
pub use swarm_api::volume::VolumeInfo;

use crate::exec::DataMount;

/// Docker's default mode of a tmpfs mount's root.
const TMPFS_MODE: u32 = 0o1777;

/// What can go wrong making a task's mounts; each names the mount or path that failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(
        "invalid mount config for type \"bind\": bind source path does not exist: {0} (create it on the node, or constrain the service to nodes that have it)"
    )]
    MissingBindSource(String),
    #[error(
        "volume {name}: driver {driver:?} is not available on this node: only the local driver is (remove `driver:` or use `driver: local`)"
    )]
    UnknownDriver { name: String, driver: String },
    #[error("volume {name}: {detail}")]
    Volume { name: String, detail: String },
    #[error("mount at {target}: {detail}")]
    Mount { target: String, detail: String },
    #[error("no such volume: {0} (`swarm volume ls` lists this node's volumes)")]
    NotFound(String),
    #[error(
        "volume {name} is in use by container {} (remove or scale down the service first)",
        .users.join(", ")
    )]
    InUse { name: String, users: Vec<String> },
}

/// Which containers of a node mount which host paths, read from their bundles (what runc
/// runs), so that a volume in use is known even after a daemon restart.
pub fn mount_users(bundle_dir: &Path) -> BTreeMap<PathBuf, Vec<String>> {
    let mut users: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(bundle_dir) else {
        return users;
    };
    for entry in entries.flatten() {
        let container = entry.file_name().to_string_lossy().into_owned();
        let Ok(bytes) = std::fs::read(entry.path().join("config.json")) else {
            continue;
        };
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        for mount in config["mounts"].as_array().into_iter().flatten() {
            if let Some(source) = mount["source"].as_str() {
                users
                    .entry(PathBuf::from(source))
                    .or_default()
                    .push(container.clone());
            }
        }
    }
    users
}

/// The node's named volumes, under one directory.
pub struct Volumes {
    root: PathBuf,
}

impl Volumes {
    pub fn new(root: PathBuf) -> Self {
        Volumes { root }
    }

    /// The container mounts of a task's spec, in its spec's order (by target): named volumes
    /// made (and filled) when missing, anonymous ones under `task_dir`, bind sources checked.
    /// `rootfs` is the task's root filesystem, where copy-up reads the image's content.
    pub fn mounts(
        &self,
        mounts: &[Mount],
        task_dir: &Path,
        rootfs: &Path,
    ) -> Result<Vec<DataMount>, VolumeError> {
        let mut out = Vec::with_capacity(mounts.len());
        for (index, mount) in mounts.iter().enumerate() {
            out.push(match mount.kind {
                MountKind::Bind => {
                    let source = mount.source.clone().unwrap_or_default();
                    if !Path::new(&source).exists() {
                        return Err(VolumeError::MissingBindSource(source));
                    }
                    DataMount::Bind {
                        source: PathBuf::from(source),
                        destination: mount.target.clone(),
                        read_only: mount.read_only,
                        propagation: mount.propagation.unwrap_or(Propagation::Rprivate),
                    }
                }
                MountKind::Tmpfs => {
                    let options = mount.tmpfs.unwrap_or_default();
                    DataMount::Tmpfs {
                        destination: mount.target.clone(),
                        read_only: mount.read_only,
                        size_bytes: options.size_bytes,
                        mode: options.mode.unwrap_or(TMPFS_MODE),
                        exec: options.exec,
                    }
                }
                MountKind::Volume => {
                    let data = match &mount.source {
                        Some(name) => self.ensure(name, mount.volume.as_ref())?,
                        None => anonymous(task_dir, index)?,
                    };
                    if !mount.no_copy {
                        copy_up(rootfs, &mount.target, &data)?;
                    }
                    DataMount::Bind {
                        source: data,
                        destination: mount.target.clone(),
                        read_only: mount.read_only,
                        propagation: Propagation::Rprivate,
                    }
                }
            });
        }
        Ok(out)
    }

    /// The node's volumes, by name, with the containers that use them (`users`, from
    /// [`mount_users`]).
    pub fn list(
        &self,
        users: &BTreeMap<PathBuf, Vec<String>>,
    ) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(VolumeError::Volume {
                    name: "(all)".into(),
                    detail: format!("{}: {e}", self.root.display()),
                });
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().join("_data").is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.iter().map(|name| self.inspect(name, users)).collect()
    }

    /// One volume, as `volume inspect` shows it.
    pub fn inspect(
        &self,
        name: &str,
        users: &BTreeMap<PathBuf, Vec<String>>,
    ) -> Result<VolumeInfo, VolumeError> {
        let dir = self.root.join(name);
        let data = dir.join("_data");
        if name.contains('/') || !data.is_dir() {
            return Err(VolumeError::NotFound(name.to_owned()));
        }
        let options = std::fs::read(dir.join("opts.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let size_bytes = if is_mount_point(&data) {
            0
        } else {
            tree_size(&data)
        };
        Ok(VolumeInfo {
            name: name.to_owned(),
            driver: "local".to_owned(),
            used_by: users.get(&data).cloned().unwrap_or_default(),
            mountpoint: data,
            options,
            size_bytes,
        })
    }

    /// Removes a volume no container uses (unmounting it first when its options mounted
    /// it), with its data.
    pub fn remove(
        &self,
        name: &str,
        users: &BTreeMap<PathBuf, Vec<String>>,
    ) -> Result<(), VolumeError> {
        let info = self.inspect(name, users)?;
        if !info.used_by.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_owned(),
                users: info.used_by,
            });
        }
        let failed = |detail: String| VolumeError::Volume {
            name: name.to_owned(),
            detail,
        };
        if is_mount_point(&info.mountpoint) {
            let output = std::process::Command::new("umount")
                .arg(&info.mountpoint)
                .output()
                .map_err(|e| failed(format!("cannot run umount: {e}")))?;
            if !output.status.success() {
                return Err(failed(format!(
                    "umount {} failed: {}",
                    info.mountpoint.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        let dir = self.root.join(name);
        std::fs::remove_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))
    }

    /// Removes every volume no container uses; the names removed and the bytes freed.
    pub fn prune(
        &self,
        users: &BTreeMap<PathBuf, Vec<String>>,
    ) -> Result<(Vec<String>, u64), VolumeError> {
        let mut removed = Vec::new();
        let mut freed = 0;
        for info in self.list(users)? {
            if info.used_by.is_empty() {
                self.remove(&info.name, users)?;
                freed += info.size_bytes;
                removed.push(info.name);
            }
        }
        Ok((removed, freed))
    }

    /// Volume `name`'s data directory, made (and mounted, when its options say how) if it
    /// is not yet.
    fn ensure(&self, name: &str, options: Option<&VolumeOptions>) -> Result<PathBuf, VolumeError> {
        let failed = |detail: String| VolumeError::Volume {
            name: name.to_owned(),
            detail,
        };
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(failed("not a valid volume name".to_owned()));
        }
        let empty = BTreeMap::new();
        let (driver, driver_opts) = match options {
            Some(o) => (o.driver.as_deref(), &o.driver_opts),
            None => (None, &empty),
        };
        if let Some(driver) = driver.filter(|d| *d != "local") {
            return Err(VolumeError::UnknownDriver {
                name: name.to_owned(),
                driver: driver.to_owned(),
            });
        }
        let dir = self.root.join(name);
        let data = dir.join("_data");
        let recorded = dir.join("opts.json");
        let opts: BTreeMap<String, String> = match std::fs::read(&recorded) {
            // A volume keeps the options it was made with, as Docker's.
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| failed(format!("{}: {e}", recorded.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&data)
                    .map_err(|e| failed(format!("{}: {e}", data.display())))?;
                let json = serde_json::to_vec(driver_opts).expect("a map of strings serialises");
                let tmp = dir.join(".opts.json.tmp");
                std::fs::write(&tmp, json)
                    .and_then(|()| std::fs::rename(&tmp, &recorded))
                    .map_err(|e| failed(format!("{}: {e}", recorded.display())))?;
                driver_opts.clone()
            }
            Err(e) => return Err(failed(format!("{}: {e}", recorded.display()))),
        };
        if let Some(kind) = opts.get("type")
            && !is_mount_point(&data)
        {
            mount_volume(kind, &opts, &data).map_err(failed)?;
        }
        Ok(data)
    }
}

/// A task's anonymous volume: a directory of its own, gone with the task's directory.
fn anonymous(task_dir: &Path, index: usize) -> Result<PathBuf, VolumeError> {
    let data = task_dir.join("volumes").join(index.to_string());
    std::fs::create_dir_all(&data).map_err(|e| VolumeError::Volume {
        name: format!("(anonymous, {})", data.display()),
        detail: e.to_string(),
    })?;
    Ok(data)
}

/// Mounts a volume's device at `data` as Docker's local driver does.
fn mount_volume(kind: &str, opts: &BTreeMap<String, String>, data: &Path) -> Result<(), String> {
    let device = opts.get("device").map_or(kind, String::as_str);
    let mut command = std::process::Command::new("mount");
    command.arg("-t").arg(kind);
    if let Some(o) = opts.get("o").filter(|o| !o.is_empty()) {
        command.arg("-o").arg(o);
    }
    command.arg(device).arg(data);
    let output = command
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "mount -t {kind} {device} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Whether `path` is the root of a mount (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    let (Ok(own), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    own.dev() != parent.dev()
}

/// Fills an empty volume with what the image holds at `target` (a directory), keeping
/// owners, modes and links; a volume with anything in it is left alone.
fn copy_up(rootfs: &Path, target: &str, data: &Path) -> Result<(), VolumeError> {
    let failed = |detail: String| VolumeError::Mount {
        target: target.to_owned(),
        detail,
    };
    let from = rootfs.join(target.trim_start_matches('/'));
    let Ok(meta) = std::fs::symlink_metadata(&from) else {
        return Ok(()); // nothing in the image there
    };
    if !meta.is_dir() {
        return Ok(());
    }
    let mut entries = std::fs::read_dir(data).map_err(|e| failed(e.to_string()))?;
    if entries.next().is_some() {
        return Ok(());
    }
    // The volume's root takes the owner and mode of the image's directory.
    std::os::unix::fs::chown(data, Some(meta.uid()), Some(meta.gid()))
        .and_then(|()| std::fs::set_permissions(data, meta.permissions()))
        .map_err(|e| failed(format!("{}: {e}", data.display())))?;
    copy_tree(&from, data).map_err(|e| failed(format!("copying the image's content: {e}")))
}

/// Bytes the files under `dir` take; what cannot be read counts for nothing.
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => tree_size(&entry.path()),
            Ok(meta) if meta.is_file() => meta.len(),
            _ => 0,
        })
        .sum()
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let source = entry.path();
        let dest = to.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&source)?;
        let kind = meta.file_type();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &dest)?;
        } else if kind.is_dir() {
            std::fs::create_dir(&dest)?;
            copy_tree(&source, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &dest)?;
        } else {
            continue; // devices, sockets and fifos are not copied, as Docker's copy-up
        }
        std::os::unix::fs::lchown(&dest, Some(meta.uid()), Some(meta.gid()))?;
        if !kind.is_symlink() {
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(meta.mode()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: MountKind, source: Option<&str>, target: &str) -> Mount {
        Mount {
            kind,
            source: source.map(str::to_owned),
            target: target.to_owned(),
            read_only: false,
            volume: None,
            no_copy: false,
            propagation: None,
            tmpfs: None,
        }
    }

    /// A named volume is made once, filled from the image when empty, and found again
    /// with its data by the next task; nocopy leaves a new volume empty.
    #[test]
    fn named_volumes_are_made_once_filled_from_the_image_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("var/lib/app/sub")).unwrap();
        std::fs::write(rootfs.join("var/lib/app/seed"), "from the image").unwrap();
        std::fs::set_permissions(
            rootfs.join("var/lib/app/seed"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("seed", rootfs.join("var/lib/app/link")).unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let task_dir = dir.path().join("task1");

        let made = volumes
            .mounts(
                &[mount(MountKind::Volume, Some("db"), "/var/lib/app")],
                &task_dir,
                &rootfs,
            )
            .unwrap();
        let data = dir.path().join("volumes/db/_data");
        assert_eq!(
            made,
            [DataMount::Bind {
                source: data.clone(),
                destination: "/var/lib/app".into(),
                read_only: false,
                propagation: Propagation::Rprivate,
            }]
        );
        assert_eq!(
            std::fs::read_to_string(data.join("seed")).unwrap(),
            "from the image"
        );
        let mode = std::fs::metadata(data.join("seed")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_link(data.join("link")).unwrap(),
            Path::new("seed")
        );
        assert!(data.join("sub").is_dir());

        // The task wrote; the next task (another image content) finds its data untouched.
        std::fs::write(data.join("seed"), "written by the task").unwrap();
        std::fs::remove_file(rootfs.join("var/lib/app/seed")).unwrap();
        volumes
            .mounts(
                &[mount(MountKind::Volume, Some("db"), "/var/lib/app")],
                &dir.path().join("task2"),
                &rootfs,
            )
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(data.join("seed")).unwrap(),
            "written by the task"
        );

        let mut nocopy = mount(MountKind::Volume, Some("empty"), "/var/lib/app");
        nocopy.no_copy = true;
        volumes.mounts(&[nocopy], &task_dir, &rootfs).unwrap();
        let empty = dir.path().join("volumes/empty/_data");
        assert_eq!(std::fs::read_dir(empty).unwrap().count(), 0);
    }

    #[test]
    fn anonymous_volumes_live_in_the_task_directory() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let task_dir = dir.path().join("task");
        let made = volumes
            .mounts(
                &[mount(MountKind::Volume, None, "/scratch")],
                &task_dir,
                dir.path(),
            )
            .unwrap();
        let DataMount::Bind { source, .. } = &made[0] else {
            panic!("{made:?}")
        };
        assert!(
            source.starts_with(&task_dir) && source.is_dir(),
            "{source:?}"
        );
    }

    #[test]
    fn bad_sources_and_drivers_are_errors_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let error = volumes
            .mounts(
                &[mount(MountKind::Bind, Some("/no/such/dir"), "/data")],
                dir.path(),
                dir.path(),
            )
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("bind source path does not exist: /no/such/dir"),
            "{error}"
        );
        let mut other = mount(MountKind::Volume, Some("shared"), "/data");
        other.volume = Some(VolumeOptions {
            driver: Some("rexray".into()),
            ..VolumeOptions::default()
        });
        let error = volumes
            .mounts(&[other], dir.path(), dir.path())
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("volume shared: driver \"rexray\" is not available on this node"),
            "{error}"
        );
        let error = volumes
            .mounts(
                &[mount(MountKind::Volume, Some("../escape"), "/data")],
                dir.path(),
                dir.path(),
            )
            .unwrap_err();
        assert!(
            error.to_string().contains("not a valid volume name"),
            "{error}"
        );
    }

    /// A volume is listed with its users and size; one in use cannot be removed; prune
    /// removes only the unused.
    #[test]
    fn volumes_are_listed_removed_and_pruned_unless_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        for name in ["busy", "idle"] {
            volumes
                .mounts(
                    &[mount(MountKind::Volume, Some(name), "/data")],
                    dir.path(),
                    dir.path(),
                )
                .unwrap();
        }
        std::fs::write(dir.path().join("volumes/idle/_data/blob"), [0u8; 100]).unwrap();
        // A container's bundle mounts "busy".
        let bundle = dir.path().join("bundles/task1");
        std::fs::create_dir_all(&bundle).unwrap();
        let busy = dir.path().join("volumes/busy/_data");
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({"mounts": [{"destination": "/data", "source": busy}]}).to_string(),
        )
        .unwrap();
        let users = mount_users(&dir.path().join("bundles"));

        let listed = volumes.list(&users).unwrap();
        let summary: Vec<(&str, &[String], u64)> = listed
            .iter()
            .map(|v| (v.name.as_str(), &v.used_by[..], v.size_bytes))
            .collect();
        assert_eq!(
            summary,
            [
                ("busy", &["task1".to_owned()][..], 0),
                ("idle", &[][..], 100)
            ]
        );
        let error = volumes.remove("busy", &users).unwrap_err();
        assert_eq!(
            error.to_string(),
            "volume busy is in use by container task1 (remove or scale down the service first)"
        );
        assert!(matches!(
            volumes.inspect("ghost", &users),
            Err(VolumeError::NotFound(_))
        ));
        assert_eq!(
            volumes.prune(&users).unwrap(),
            (vec!["idle".to_owned()], 100)
        );
        assert_eq!(
            volumes
                .list(&users)
                .unwrap()
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["busy"]
        );
    }

    #[test]
    fn tmpfs_mounts_carry_size_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path().join("volumes"));
        let mut tmpfs = mount(MountKind::Tmpfs, None, "/run/cache");
        tmpfs.tmpfs = Some(swarm_api::spec::TmpfsOptions {
            size_bytes: Some(1 << 20),
            mode: None,
            exec: false,
        });
        let made = volumes.mounts(&[tmpfs], dir.path(), dir.path()).unwrap();
        assert_eq!(
            made,
            [DataMount::Tmpfs {
                destination: "/run/cache".into(),
                read_only: false,
                size_bytes: Some(1 << 20),
                mode: 0o1777,
                exec: false,
            }]
        );
    }
}
