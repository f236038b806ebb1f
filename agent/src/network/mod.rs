//! Task networking: the node bridge, a network namespace and an address per task.
//!
//! - `ipam`: the node's subnet and the tasks' leases in it (pure).
//! - `bridge`: the node's Linux bridge, holding the gateway address, and the iptables rule
//!   that lets its ports talk when `br_netfilter` sends bridged traffic through FORWARD.
//! - `task`: [`NodeNetwork`], the IO shell: a namespace per task with a veth into the
//!   bridge; detach, and after a restart list/adopt/sweep.
//! - `files`: /etc/hosts, /etc/resolv.conf and /etc/hostname for a task (pure, then
//!   written into the task's directory).
//!
//! Everything a node makes on the host is named from its node id (bridge, veths) or placed
//! under its own namespace directory, so several nodes on one machine never collide.
//! Links are configured by iproute2 subprocesses (`ip`, through `nsenter --net=PATH` inside
//! a task's namespace): a handful of commands per task, each failure reported with the
//! command and its stderr.

mod bridge;
mod command;
mod files;
mod ipam;
mod task;

pub use bridge::{Bridge, bridge_name};
pub use files::{ContainerFilePaths, ContainerFiles, FilesError, node_resolv_conf};
pub use ipam::{Ipam, IpamError};
pub use ipnet::Ipv4Net;
pub use task::{NodeNetwork, NodeNetworkConfig, TaskNetwork, host_veth_name};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`: {source} (is {program} installed?)")]
    Spawn {
        command: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(
        "invalid task id {0:?}: a task id names files and links, so it must be 1 to 128 \
         letters, digits, '-', '_' or '.', not starting with '.'"
    )]
    InvalidTaskId(String),
    #[error("task {task} is already attached at {address}: detach it first")]
    AlreadyAttached { task: String, address: Ipv4Net },
    #[error(
        "the network of task {task} ({path}) is incomplete: {what}; detach the task and \
         attach it again"
    )]
    Incomplete {
        task: String,
        path: PathBuf,
        what: String,
    },
}

impl NetworkError {
    /// Whether this is iproute2 saying the link it was asked about does not exist.
    fn is_missing_link(&self) -> bool {
        matches!(self, NetworkError::Command { stderr, .. }
            if stderr.contains("Cannot find device") || stderr.contains("does not exist"))
    }
}
