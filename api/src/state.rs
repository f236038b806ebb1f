//! The cluster state export: what `swarm state export` writes and `swarm plan --state` reads.
//! It holds specs and where they came from, never secret material; its JSON Schema is
//! committed in `schemas/state.schema.json`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::{FileObjectSpec, NetworkSpec, ServiceSpec};

/// The version of the export format; readers refuse a format they do not know.
pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterState {
    /// Always [`STATE_FORMAT`].
    pub format: u32,
    /// The store version (Raft index) the export was taken at; a saved plan names it.
    pub version: u64,
    #[serde(default)]
    pub services: Vec<Object<ServiceSpec>>,
    #[serde(default)]
    pub networks: Vec<Object<NetworkSpec>>,
    #[serde(default)]
    pub configs: Vec<Object<FileObjectSpec>>,
    #[serde(default)]
    pub secrets: Vec<Object<FileObjectSpec>>,
}

impl ClusterState {
    /// A cluster with nothing in it.
    pub fn empty() -> Self {
        ClusterState {
            format: STATE_FORMAT,
            version: 0,
            services: Vec::new(),
            networks: Vec::new(),
            configs: Vec::new(),
            secrets: Vec::new(),
        }
    }
}

impl Default for ClusterState {
    fn default() -> Self {
        ClusterState::empty()
    }
}

/// A stored object: its spec and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// No deny_unknown_fields: serde does not support it beside `flatten`.
pub struct Object<S> {
    /// The cluster's id for the object; absent for objects not created yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub origin: Origin,
    pub spec: S,
}

/// Where an object came from: the stack it belongs to, and the stack file that declares it.
/// Objects created imperatively have neither, and plans never remove them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The stack file, relative to the root of its git repository (or as given on the command line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}
