//! A node's volumes, as `swarm volume ls|inspect` show them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One named volume of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// Where its data is on the node.
    pub mountpoint: PathBuf,
    /// The `driver_opts` it was made with.
    pub options: BTreeMap<String, String>,
    /// The containers (task ids) that mount it, running or not yet removed.
    pub used_by: Vec<String>,
    /// Bytes its files take (0 for a volume mounted from elsewhere: not walked).
    pub size_bytes: u64,
}
