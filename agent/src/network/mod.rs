//! Task networking: the node bridge, a network namespace and an address per task.
//!
//! - `ipam`: the node's subnet and the tasks' leases in it (pure).
//! - `bridge`: the node's Linux bridge, holding the gateway address, and the iptables rule
//!   that lets its ports talk when `br_netfilter` sends bridged traffic through FORWARD.
//! - `task`: [`NodeNetwork`], the IO shell: a namespace per task with a veth into the
//!   bridge; detach, and after a restart list/adopt/sweep.
//! - `files`: /etc/hosts, /etc/resolv.conf and /etc/hostname for a task (pure, then
//!   written into the task's directory).
//! - `overlay`: overlay networks across nodes: a pure desired state per node
//!   ([`NodeOverlays`]), its [`overlay_diff`] into link/forwarding/neighbour ops, and
//!   [`Overlay`], which applies them (a bridge and a VXLAN device per network, static
//!   forwarding and neighbour entries from the managers, a veth per task).
//! - `vip`: virtual IPs: a pure desired state per node ([`NodeVips`], from its endpoint
//!   table), its nftables ruleset ([`render_vips`]: DNAT over the serving tasks) and
//!   [`Vips`], which sets it with the routes and neighbour entries that bring a task's
//!   connection to a VIP through the node and back into its network; ahead of it,
//!   [`SocketBalancer`], an eBPF program that sends a task's TCP `connect()` to a VIP
//!   straight to a serving task (no NAT at all), the DNAT taking what it does not.
//! - `mesh`: the routing mesh: a pure desired state per node ([`NodeMesh`], from its
//!   endpoint table and its tasks' addresses), its nftables ruleset ([`render_mesh`]: DNAT of
//!   published ports over the serving tasks, here or through another node) and [`Mesh`],
//!   which sets it.
//! - `canary`: an empty nftables table and an empty iptables chain in the filter and nat
//!   tables per node, looked for every few seconds: one gone (a firewall reload flushed the
//!   ruleset or restored an iptables table), the node's rules are set again.
//! - [`Networking`] and [`TaskNetworks`]: the boundary the worker sees; `HostNetworking`
//!   makes `NodeNetwork`s, `FakeNetworking` (`fake`) leases addresses in memory for
//!   simulations.
//!
//! Everything a node makes on the host is named from its node id (bridge, veths) or placed
//! under its own namespace directory, so several nodes on one machine never collide.
//! Links are configured by iproute2 subprocesses (`ip`, through `nsenter --net=PATH` inside
//! a task's namespace): a handful of commands per task, each failure reported with the
//! command and its stderr.

mod bridge;
mod canary;
mod command;
mod fake;
mod files;
mod ipam;
mod mesh;
mod overlay;
mod task;
mod vip;

pub use bridge::{Bridge, bridge_name, remove_bridge_rules};
pub use canary::{CHECK as CANARY_CHECK, canary_chain, canary_name, remove_canary, watch_canary};
pub use fake::FakeNetworking;
pub use files::{
    ContainerFilePaths, ContainerFiles, FilesError, node_resolv_conf, resolv_conf_nameservers,
};
pub use ipam::{Ipam, IpamError};
pub use ipnet::Ipv4Net;
pub use mesh::{
    Direction as MeshDirection, MESH_DSCP, Mesh, MeshCounters, MeshNodes, MeshPort, NodeMesh,
    PortKey as MeshPortKey, Proxies, RelayedBytes, counters as mesh_counters,
    follow as follow_mesh, render as render_mesh, table_name as mesh_table_name,
};
pub use overlay::{
    LocalEndpoint, LocalTask, NodeOverlays, OVERLAY_MTU, Op as OverlayOp, Overlay, OverlayNetwork,
    RemoteEndpoint, apply as apply_overlay_op, diff as overlay_diff, endpoint_mac, node_overlays,
    overlay_bridge_name, overlay_veth_name, task_interface_name, vxlan_name,
};
pub use swarm_api::endpoints::{VXLAN_PORT, Vtep};
pub use task::{HostNetworking, NodeNetwork, NodeNetworkConfig, TaskNetwork, host_veth_name};
pub use vip::{
    NetworkVips, NodeSocketBalancer, NodeVips, SOCKET_MAX_BACKENDS, SocketBalancer, SocketError,
    SocketVips, Vips, bridge_mac as vip_bridge_mac, follow as follow_vips, netns_cookie,
    render as render_vips, routing_table as vip_routing_table, table_name as vip_table_name,
};

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

/// How a worker gets its node's task network, set up when a task first needs one (from the
/// subnet the managers leased).
#[async_trait::async_trait]
pub trait Networking: Send + Sync {
    /// Sets the node's task network up (idempotent: a restarted daemon finds it made).
    async fn setup(&self, config: NodeNetworkConfig)
    -> Result<Arc<dyn TaskNetworks>, NetworkError>;
}

/// A node's task network as the worker uses it: one network per task, and after a daemon
/// restart, the adoption of those still in use and the sweep of the rest.
#[async_trait::async_trait]
pub trait TaskNetworks: Send + Sync {
    /// Gives the task an address and a namespace to run in.
    async fn attach(&self, task_id: &str) -> Result<TaskNetwork, NetworkError>;
    /// Takes away the route out of the node of an attached task whose networks are all
    /// `--internal`: it keeps its addresses, its overlays and the node's DNS server (on the
    /// bridge's own subnet), and reaches nothing else.
    async fn close_route_out(&self, task_id: &str) -> Result<(), NetworkError>;
    /// Removes the task's network and releases its address; idempotent.
    async fn detach(&self, task_id: &str) -> Result<(), NetworkError>;
    /// Takes over the task's network found after a restart, with its address.
    async fn adopt(&self, task_id: &str) -> Result<TaskNetwork, NetworkError>;
    /// Detaches the networks of every task not in `owned`; returns their ids.
    async fn sweep(&self, owned: HashSet<String>) -> Result<Vec<String>, NetworkError>;
    /// Brings the node's overlay networks to `desired`: devices made on a network's first
    /// local task and removed after its last, peers and forwarding entries as given.
    async fn reconcile_overlay(&self, desired: NodeOverlays) -> Result<(), NetworkError>;
    /// Inserts again whichever of the iptables rules of the node's bridge and overlays are
    /// missing: after a firewall reload took them.
    async fn restore_rules(&self) -> Result<(), NetworkError>;
    /// Removes everything the node made (overlays too), for a node leaving.
    async fn teardown(&self) -> Result<(), NetworkError>;
}

/// Runs `work` on a thread that joins the network namespace at `netns` (a bind mount or
/// `/proc/PID/ns/net`) and ends with it: the sockets it opens and the commands it starts
/// are in that namespace, the rest of the process is not moved. A panic in `work` goes on
/// in the caller.
pub fn in_namespace<T: Send>(
    netns: &std::path::Path,
    work: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let namespace = std::fs::File::open(netns)?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns changes only this thread's network namespace; the thread
                // ends with the scope.
                if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Removes node `node_id`'s bridge (its iptables rules with it) and overlay links by name,
/// whatever made them: for a node leaving whose worker does not know them (a restarted
/// daemon with no task), or a test cleaning up after a killed daemon. Every part is tried;
/// the first error is returned.
pub fn remove_node_links(node_id: &str) -> Result<(), NetworkError> {
    let bridge = bridge_name(node_id);
    let bridge_link = || command::delete_link(&bridge);
    let bridge_rules = || {
        remove_bridge_rules(&bridge);
        Ok(())
    };
    every_part(
        std::iter::once_with(|| Overlay::new(node_id).teardown())
            .chain(std::iter::once_with(bridge_link))
            .chain(std::iter::once_with(bridge_rules)),
    )
}

/// Runs every part of a teardown (`parts`, evaluated one by one) whatever another's
/// outcome, and returns the first error: a node leaving has no second chance, so one
/// failure must not leave the rest in place. Later errors are logged. After a tool that
/// hung (`TimedOut`), the parts left are not tried: the next would most likely wait for
/// the same kernel lock, and each would cost the whole timeout.
pub(crate) fn every_part(
    parts: impl IntoIterator<Item = Result<(), NetworkError>>,
) -> Result<(), NetworkError> {
    let mut first = Ok(());
    for outcome in parts {
        let hung = matches!(outcome, Err(NetworkError::TimedOut { .. }));
        match (outcome, &first) {
            (Err(error), Ok(())) => first = Err(error),
            (Err(error), Err(_)) => tracing::warn!(%error, "a further part of a teardown failed"),
            (Ok(()), _) => {}
        }
        if hung {
            tracing::warn!("a network tool hung: the rest of this teardown is not tried");
            break;
        }
    }
    first
}

/// Waits for a value of `views` not seen yet (marked changed, or its next change): what
/// a follower reconciles first. False when `stop` completes first, or the sender goes.
pub(crate) async fn first_view<V>(
    views: &mut tokio::sync::watch::Receiver<V>,
    stop: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> bool {
    if views.has_changed().unwrap_or(false) {
        return true;
    }
    tokio::select! {
        changed = views.changed() => changed.is_ok(),
        () = stop => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "`{command}` did not finish within {after:?} and was killed (another tool holding \
         the kernel's lock?); run it by hand to see why"
    )]
    TimedOut {
        command: String,
        after: std::time::Duration,
    },
    #[error("`{command}` was killed: its input or output failed ({source})")]
    Pipe {
        command: String,
        source: std::io::Error,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_is_tried_and_the_first_error_returned() {
        let failure = |n: u32| NetworkError::Command {
            command: format!("part {n}"),
            status: "exit status: 1".into(),
            stderr: String::new(),
        };
        let mut tried = Vec::new();
        let outcome = every_part((1..=4).map(|n| {
            tried.push(n);
            if n % 2 == 0 { Err(failure(n)) } else { Ok(()) }
        }));
        assert_eq!(tried, [1, 2, 3, 4]);
        let Err(NetworkError::Command { command, .. }) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(command, "part 2");
        assert!(every_part([Ok(()), Ok(())]).is_ok());
    }

    #[test]
    fn after_a_tool_that_hung_no_further_part_is_tried() {
        let hung = || NetworkError::TimedOut {
            command: "ip link del dev x".into(),
            after: std::time::Duration::from_secs(20),
        };
        let mut tried = Vec::new();
        let outcome = every_part((1..=3).map(|n| {
            tried.push(n);
            if n == 2 { Err(hung()) } else { Ok(()) }
        }));
        assert_eq!(tried, [1, 2]);
        assert!(matches!(outcome, Err(NetworkError::TimedOut { .. })));
    }
}
