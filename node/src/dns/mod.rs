//! Service discovery: one DNS server per node, as Docker's embedded server at 127.0.0.11
//! is one per container. It listens on the node bridge's address (every task's gateway,
//! UDP and TCP port 53) in the node's namespace and tells its askers apart by their source
//! address, a task's `eth0`: the task → its networks (and its stack) → the names it may see.
//!
//! - `table` (pure): the node's [`NetworkView`] and its tasks' addresses → the answers:
//!   services (their VIP, or with `dnsrr` their serving tasks), `tasks.NAME`, aliases
//!   (the short name inside a stack), tasks' display names, reverse names.
//! - `message` (pure): a query's bytes → the reply's (hickory-proto), or "forward".
//! - `server`: the UDP loop and TCP listener; unknown names go to the asking task's
//!   service's nameservers (`dns`, as Docker's embedded server uses a container's
//!   `--dns`), or the node's resolvers.
//! - [`follow`]: rebuilds the table at every change of the view or of the tasks;
//!   [`serve_node`]: the server a node's agent runs, on its bridge's address.

mod message;
mod server;
mod table;

pub use message::{Reply, Transport, reply};
pub use server::{DnsServer, FORWARD_TIMEOUT};
pub use table::{Answer, Kind, Table};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use swarm_agent::network::{Ipam, Ipv4Net};
use swarm_agent::worker::Asker;
use swarm_api::endpoints::NetworkView;
use tokio::sync::watch;

/// The port tasks ask.
pub const DNS_PORT: u16 = 53;

/// How long a node whose server could not listen waits before it tries again.
const BIND_RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot listen for dns questions on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// The node's own resolvers, from `resolv_conf` (the node's /etc/resolv.conf: the server
/// runs in the node's namespace, where a local cache on loopback is reachable), port 53.
/// None when the file is missing or names none: every forward then fails at once.
pub fn node_resolvers(resolv_conf: &Path) -> Vec<SocketAddr> {
    let text = std::fs::read_to_string(resolv_conf).unwrap_or_default();
    swarm_agent::network::resolv_conf_nameservers(&text)
        .into_iter()
        .map(|server| SocketAddr::new(server, DNS_PORT))
        .collect()
}

/// Keeps `server`'s table that of the latest `view` and `askers` (a task's `eth0` address
/// → the task), rebuilt at each change of either; returns when either sender goes.
pub async fn follow(
    server: &DnsServer,
    mut view: watch::Receiver<NetworkView>,
    mut askers: watch::Receiver<BTreeMap<Ipv4Addr, Asker>>,
) {
    loop {
        let table = Table::new(&view.borrow_and_update(), &askers.borrow_and_update());
        server.set_table(table);
        tokio::select! {
            changed = view.changed() => if changed.is_err() { return },
            changed = askers.changed() => if changed.is_err() { return },
        }
    }
}

/// The node's DNS server as its agent runs it: listening on the node bridge's address
/// (the gateway of the node's subnet, once the managers sent it) at port `port`
/// ([`DNS_PORT`] but in tests), answering from `view` and `askers`, forwarding to the
/// resolvers of the node's /etc/resolv.conf, or a task's to its service's nameservers.
/// Runs until dropped (with the agent).
pub async fn serve_node(
    mut subnet: watch::Receiver<Option<Ipv4Net>>,
    port: u16,
    view: watch::Receiver<NetworkView>,
    askers: watch::Receiver<BTreeMap<Ipv4Addr, Asker>>,
) {
    let Ok(subnet) = subnet.wait_for(Option::is_some).await.map(|s| *s) else {
        return;
    };
    let gateway = match subnet.map(Ipam::new) {
        Some(Ok(ipam)) => ipam.gateway(),
        Some(Err(error)) => {
            tracing::error!(%error, "no dns server for this node's tasks");
            return;
        }
        None => return,
    };
    let resolvers = node_resolvers(Path::new("/etc/resolv.conf"));
    loop {
        match DnsServer::start((gateway, port).into(), resolvers.clone(), DNS_PORT) {
            Ok(server) => {
                follow(&server, view, askers).await;
                return;
            }
            Err(error) => {
                tracing::error!(%error, "the tasks of this node cannot resolve names; trying again in {}s", BIND_RETRY.as_secs());
                tokio::time::sleep(BIND_RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
