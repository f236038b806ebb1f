//! The endpoint table: what a node must know of the cluster's overlay networks to carry
//! them (its peers' VTEPs, every task's address), to answer names (services, `tasks.NAME`,
//! aliases) and to balance virtual IPs over the tasks that serve.
//!
//! The managers keep it from the store's watch and send each node its [`NetworkView`]: the
//! networks its own tasks are on, whole (every task of every service on them, wherever it
//! runs), and no other. A node never learns a network it does not carry; a task sees only
//! names on networks it shares (the node filters per asking task).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::{EndpointMode, PortConfig};

/// The UDP port of VXLAN (IANA), Docker's overlay port: a node's data path port unless
/// `swarm daemon --data-path-port` says otherwise (several nodes on one machine).
pub const VXLAN_PORT: u16 = 4789;

/// Where a node's VXLAN traffic goes: its underlay address and UDP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vtep {
    pub address: Ipv4Addr,
    pub port: u16,
}

/// One node's share of the endpoint table, sent with its assignments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// The networks the node's given tasks are attached to, by network name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkEndpoints>,
    /// The routing mesh: the same for every node (shared by their views, not copied).
    #[serde(default, skip_serializing_if = "no_mesh")]
    pub mesh: Arc<MeshView>,
}

fn no_mesh(mesh: &Arc<MeshView>) -> bool {
    mesh.is_empty()
}

/// What every node needs to answer the cluster's published ports: the services that publish
/// ports, with their serving tasks' nodes, and how to reach each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshView {
    /// The nodes a published port's connections may be sent to, by node id, with the
    /// address other nodes reach them at (their data path address): those with a known
    /// address, not Down.
    #[serde(default)]
    pub nodes: BTreeMap<String, Ipv4Addr>,
    /// The services publishing at least one port with a number, by service id.
    #[serde(default)]
    pub services: BTreeMap<String, PublishedService>,
}

impl MeshView {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// A service's published ports and where its serving tasks run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedService {
    pub name: String,
    /// Its ports with a published number, as its spec orders them.
    pub ports: Vec<PortConfig>,
    /// Its running tasks on nodes not Down, by task id: those serving, and those told to
    /// stop that still run (they drain: other nodes send them nothing new, but their own
    /// node still takes what another node sent a moment before its view changed).
    #[serde(default)]
    pub tasks: BTreeMap<String, MeshTask>,
}

/// A running task of a service publishing ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshTask {
    pub node_id: String,
    /// Takes new connections (as [`TaskEndpoint::serving`] says); false: draining.
    pub serving: bool,
}

/// One overlay network: its address space and everything attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkEndpoints {
    /// The network object's id (devices on nodes are named after it).
    pub id: String,
    /// The VXLAN network identifier, unique in the cluster, given by the store.
    pub vni: u32,
    pub subnet: ipnet::Ipv4Net,
    /// Never a task's address.
    pub gateway: Ipv4Addr,
    /// No route out of the network.
    pub internal: bool,
    /// The services attached to it, by service id.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceEndpoint>,
    /// Every task holding an address on it (not yet stopped), by task id.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskEndpoint>,
}

/// A service as the network's names and virtual IP see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// The service's full name (`vote_redis`).
    pub name: String,
    /// Further names on this network: the network aliases of the service's attachment,
    /// which include the short name inside its stack (`redis`), sorted.
    #[serde(default)]
    pub aliases: Vec<String>,
    pub mode: EndpointMode,
    /// Its virtual IP on this network (mode `vip`), once the store gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<Ipv4Addr>,
}

/// A task's endpoint on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    pub service_id: String,
    pub node_id: String,
    /// Where the node that runs it takes VXLAN traffic; `None` while that node's address
    /// is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Vtep>,
    /// Its address on this network.
    pub address: Ipv4Addr,
    /// Its display name (`service.slot` or `service.node`): what `tasks.NAME` lists and a
    /// reverse lookup answers.
    pub name: String,
    /// Whether it takes new connections and is listed by name: running, meant to run,
    /// healthy when it has a healthcheck, on a node that is not Down. A task that stops
    /// keeps its endpoint (open connections drain) but serves no longer.
    pub serving: bool,
}

impl NetworkEndpoints {
    /// The addresses of `service_id`'s serving tasks, sorted.
    pub fn serving_addresses(&self, service_id: &str) -> Vec<Ipv4Addr> {
        let mut addresses: Vec<Ipv4Addr> = self
            .tasks
            .values()
            .filter(|t| t.serving && t.service_id == service_id)
            .map(|t| t.address)
            .collect();
        addresses.sort();
        addresses
    }
}
