//! The node's volumes on the control API: listed, inspected, removed and pruned by the node
//! asked, from its data directory, with the containers that mount each found in their
//! bundles (what runc runs), so a volume in use is never removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use swarm_agent::exec::RuncConfig;
use swarm_agent::volume::{VolumeError, VolumeInfo, Volumes, mount_users};
use tonic::Status;

/// The node's volumes and who mounts them, read afresh for each call.
struct NodeVolumes {
    volumes: Volumes,
    users: BTreeMap<PathBuf, Vec<String>>,
}

impl NodeVolumes {
    fn read(data_dir: &Path) -> Self {
        let bundles = RuncConfig::bundle_dir_of(data_dir);
        NodeVolumes {
            volumes: Volumes::new(data_dir.join("volumes")),
            users: mount_users(&bundles),
        }
    }
}

fn status(error: VolumeError) -> Status {
    match error {
        VolumeError::NotFound(_) => Status::not_found(error.to_string()),
        VolumeError::InUse { .. } => Status::failed_precondition(error.to_string()),
        _ => Status::internal(error.to_string()),
    }
}

/// Runs a volume operation off the async threads: it walks and removes directories.
async fn blocking<T: Send + 'static>(
    data_dir: &Path,
    operation: impl FnOnce(NodeVolumes) -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, Status> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || operation(NodeVolumes::read(&data_dir)))
        .await
        .map_err(|e| Status::internal(format!("volume operation stopped: {e}")))?
        .map_err(status)
}

pub async fn list(data_dir: &Path) -> Result<Vec<VolumeInfo>, Status> {
    blocking(data_dir, |node| node.volumes.list(&node.users)).await
}

pub async fn inspect(data_dir: &Path, name: String) -> Result<VolumeInfo, Status> {
    blocking(data_dir, move |node| {
        node.volumes.inspect(&name, &node.users)
    })
    .await
}

pub async fn remove(data_dir: &Path, name: String) -> Result<(), Status> {
    blocking(data_dir, move |node| {
        node.volumes.remove(&name, &node.users)
    })
    .await
}

pub async fn prune(data_dir: &Path) -> Result<(Vec<String>, u64), Status> {
    blocking(data_dir, |node| node.volumes.prune(&node.users)).await
}
