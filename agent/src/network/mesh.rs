//! The routing mesh: every node answers every port published in ingress mode and sends each
//! new connection to a serving task of the service, on this node or another; a port
//! published in host mode answers only on the nodes that run a task of it, to that task.
//! All in the kernel (nftables DNAT; this machine has no IPVS).
//!
//! The desired state is pure data ([`NodeMesh`], made from the node's endpoint table and the
//! addresses of its own tasks by [`NodeMesh::from_view`]); [`render`] writes the node's
//! ruleset as text and `kernel` sets it.
//!
//! The path of a connection to `NODE:PUBLISHED` (any address of the node):
//! 1. The `prerouting` chain (or `output`, for a client on the node itself) DNATs it to
//!    `numgen random` over every serving task of the service, each once: a task of this
//!    node as its own address and target port (its node bridge, no source NAT: the task sees
//!    the client's address), a task of node B as B's address (its data path address, as
//!    the managers know it) and the published port.
//! 2. A connection for node B leaves as any routed packet does, without encapsulation,
//!    its source rewritten to this node's address, so that B's answers come back through
//!    this node, whose conntrack undoes both rewrites. Its first packet carries the mesh's
//!    mark, a DSCP ([`MESH_DSCP`]).
//! 3. On B, a connection to one of its own addresses from another node's address with the
//!    mark is the mesh's: DNAT'ed to B's own tasks; B's task sees the first node's address
//!    as its client. With no live task left on B (one just died, or stopped, and the first
//!    node's view is a moment behind), B sends it on once to another node's tasks, marked
//!    ([`FORWARDED_DSCP`]) so that the next node never sends it further: it takes it or
//!    refuses it (TCP reset).
//!
//! Without the mark, a connection from another node's address is a client's like any
//! other (a process of that node, or a task of it, whose source that node rewrites to its
//! own): balanced over every task, given a PROXY header on such a port. A node marks the
//! packets of the mesh's connections to other nodes until they are answered (so a lost
//! SYN's retransmission is marked too) and clears the mesh's DSCPs from whatever else it
//! sends, to any address (a node that joined a moment ago knows this one before this one
//! knows it), so no task or process passes for the mesh (and forges a PROXY header). The
//! network between nodes must carry the DSCP unchanged (a switched LAN does; a routed or
//! cloud network may rewrite it): one that clears it makes every mesh connection a
//! client's again on the second node (balanced again, a PROXY header written twice). The
//! encapsulating link this design replaced told the two apart by device, and cost a
//! quarter of the remote path's throughput (BENCHMARKS.md).
//!
//! Removed tasks take no new connection from the next ruleset on; open connections keep
//! their conntrack entry and drain. The ruleset is replaced whole, in one transaction.
//! What another node sends to a published port and these rules do not DNAT is refused
//! (input). The mesh needs one node per network namespace: published ports are the
//! namespace's.
//!
//! A port that asks for the PROXY protocol takes the userspace path instead (`proxy`): the
//! node listens on it and relays each connection after a header carrying the client's
//! address; only step 3, on the node of the task, stays in the kernel.
//!
//! A client on the node itself may use a loopback address; its connections leave by the
//! node's data path device, which routes them only with `route_localnet` (the node bridge
//! has it too). The `guard` chain drops what arrives by any device but `lo` for or from a
//! loopback address, which `route_localnet` alone would let in (CVE-2020-8558's lesson); the
//! node sets `route_localnet` after the ruleset and back when its mesh goes.
//!
//! The node holds each port of the kernel path with a bound socket (`hold`), so that no
//! other process on it takes the port later; a port another process holds already is left
//! to it (no client rule here, reported to the managers) until the node can hold it.

mod hold;
mod kernel;
mod proxy;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

use swarm_api::endpoints::NetworkView;
use swarm_api::spec::{Protocol, PublishMode};

use super::bridge::{bridge_name, hex_digest};

pub use hold::{Held, PortKey};
pub use kernel::{Mesh, MeshCounters, counters, follow};
pub use proxy::{Proxies, RelayedBytes};

/// What a node's mesh is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMesh {
    /// This node's and the other nodes' addresses: none while no port is published through
    /// the mesh, or while the managers know no address of this node.
    pub nodes: Option<MeshNodes>,
    /// The ports the node answers, by protocol and published port.
    pub ports: BTreeMap<(Protocol, u16), MeshPort>,
}

/// The nodes of the mesh, by the addresses they reach each other at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshNodes {
    /// This node's: the source of the connections it sends to other nodes.
    pub own: Ipv4Addr,
    /// The other nodes': the destinations of those connections, and the sources that tell
    /// a connection another node sent.
    pub others: BTreeSet<Ipv4Addr>,
}

/// One published port on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshPort {
    /// The service's name (rules are commented with it).
    pub service: String,
    pub mode: PublishMode,
    /// Where a client's connection may go, one entry per serving task, sorted: a local task
    /// as (its address, target port), another node's as (that node's address, the
    /// published port).
    pub backends: Vec<(Ipv4Addr, u16)>,
    /// Where a connection another node sent may go: the local tasks serving or draining
    /// (the sender decided with its own view, which may be a moment behind this node's;
    /// never a task still starting, which may not listen yet).
    pub local: Vec<(Ipv4Addr, u16)>,
    /// Clients' connections take the userspace path, which writes a PROXY protocol v2
    /// header: no kernel rule for them.
    pub proxy_protocol: bool,
    /// Another process on the node holds the port: clients' connections are left to it (no
    /// rule for them); what other nodes send still reaches the local tasks.
    pub taken: bool,
}

impl NodeMesh {
    /// The mesh of node `node_id` from its endpoint table and the addresses of its own
    /// tasks (task id → address on the node bridge; a task not attached yet has none and
    /// takes no connection). Two services publishing one port (the managers refuse it; a
    /// view could still say so during a change): the first by service id keeps it.
    pub fn from_view(
        view: &NetworkView,
        node_id: &str,
        local: &BTreeMap<String, Ipv4Addr>,
    ) -> NodeMesh {
        let mesh = &view.mesh;
        let me = mesh.nodes.get(node_id);
        let ingress = mesh
            .services
            .values()
            .flat_map(|s| &s.ports)
            .any(|p| p.mode == PublishMode::Ingress);
        let nodes = me.filter(|_| ingress).map(|me| MeshNodes {
            own: *me,
            // A node at this node's own address (two behind one NAT'd address, say) cannot
            // be told apart from it: left out, its tasks with it.
            others: mesh
                .nodes
                .iter()
                .filter(|(id, address)| id.as_str() != node_id && *address != me)
                .map(|(_, address)| *address)
                .collect(),
        });
        let mut ports = BTreeMap::new();
        for service in mesh.services.values() {
            for port in &service.ports {
                let Some(published) = port.published else {
                    continue;
                };
                let mut backends = Vec::new();
                let mut local_backends = Vec::new();
                for (task, placed) in &service.tasks {
                    if placed.node_id == node_id {
                        if let Some(address) = local.get(task) {
                            if placed.serving {
                                backends.push((*address, port.target));
                            }
                            // A draining task still takes what another node sent it.
                            local_backends.push((*address, port.target));
                        }
                    } else if placed.serving
                        && port.mode == PublishMode::Ingress
                        && nodes.is_some()
                        && let Some(peer) = mesh.nodes.get(&placed.node_id)
                        && Some(peer) != me
                    {
                        backends.push((*peer, published));
                    }
                }
                if port.mode == PublishMode::Host && backends.is_empty() {
                    continue;
                }
                backends.sort();
                local_backends.sort();
                ports
                    .entry((port.protocol, published))
                    .or_insert_with(|| MeshPort {
                        service: service.name.clone(),
                        mode: port.mode,
                        backends,
                        local: local_backends,
                        proxy_protocol: port.proxy_protocol.is_some(),
                        taken: false,
                    });
            }
        }
        NodeMesh { nodes, ports }
    }

    /// The ports of the kernel path, which the node holds with a socket.
    pub fn held(&self) -> BTreeSet<PortKey> {
        self.ports
            .iter()
            .filter(|(_, port)| !port.proxy_protocol)
            .map(|(key, _)| *key)
            .collect()
    }

    /// Leaves the ports of `taken` to the process on the node that holds them.
    pub fn leave_taken(&mut self, taken: &BTreeSet<PortKey>) {
        for (key, port) in &mut self.ports {
            port.taken = taken.contains(key);
        }
    }

    /// Whether clients' connections to `port` are DNAT'ed by the kernel rules here.
    fn kernel_clients(port: &MeshPort) -> bool {
        !port.backends.is_empty() && !port.proxy_protocol && !port.taken
    }

    /// The ports of the userspace path and their backends.
    pub fn proxied(&self) -> BTreeMap<u16, Vec<SocketAddrV4>> {
        self.ports
            .iter()
            .filter(|((protocol, _), port)| port.proxy_protocol && *protocol == Protocol::Tcp)
            .map(|((_, published), port)| {
                let backends = port
                    .backends
                    .iter()
                    .map(|(address, port)| SocketAddrV4::new(*address, *port))
                    .collect();
                (*published, backends)
            })
            .collect()
    }
}

/// The node's nftables table: `swmesh` and 10 hex digits of its id's SHA-256.
pub fn table_name(node_id: &str) -> String {
    format!(
        "swmesh{}",
        &hex_digest(format!("{node_id}\0mesh").as_bytes())[..10]
    )
}

/// `dnat ip to numgen random mod N map { 0 : A . P, … }` over `backends` (not empty).
fn dnat(backends: &[(Ipv4Addr, u16)]) -> String {
    let map = backends
        .iter()
        .enumerate()
        .map(|(i, (address, port))| format!("{i} : {address} . {port}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "dnat ip to numgen random mod {} map {{ {map} }}",
        backends.len()
    )
}

fn l4(protocol: Protocol, port: u16) -> String {
    format!("meta l4proto {protocol} th dport {port}")
}

/// The DSCP on the first packet of a connection the mesh sends to another node: with the
/// sender's address, what tells the other node that the connection is the mesh's and not
/// a client's. 11 is no standard per-hop behaviour.
pub const MESH_DSCP: u8 = 0x0b;

/// The DSCP a node sets instead on the first packet of a connection it sends on to a third
/// node because none of its own tasks can take it: a connection so marked is never sent on
/// again. 13 is no standard per-hop behaviour.
pub const FORWARDED_DSCP: u8 = 0x0d;

/// The mark (`SO_MARK`) of the userspace path's sockets to tasks: what the node's rules
/// mark as the mesh's when one leaves for another node.
pub const PROXY_SOCKET_MARK: u32 = 0x4d50_0000;

/// The named counter of the connections a port's rules DNAT'ed (each rule sees the first
/// packet of a connection only).
pub fn connections_counter(protocol: Protocol, port: u16) -> String {
    format!("conn_{protocol}_{port}")
}

/// The named counter of the connections refused because another node sent them to a port
/// with no task here.
pub const REFUSED_COUNTER: &str = "refused";

/// The set in a node's table recording the data path device it opened `route_localnet` on.
pub const OPENED_SET: &str = "opened";

/// Which way a connection's bytes go: `In` from its client to its task (the connection's
/// original direction), `Out` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// The named counter of the bytes of a port's connections one way. The nat rules see only
/// a connection's first packet: they mark the connection (`ct mark`, [`connection_mark`])
/// and a filter chain counts every packet of marked connections.
pub fn bytes_counter(protocol: Protocol, port: u16, direction: Direction) -> String {
    format!("bytes_{protocol}_{port}_{}", direction.as_str())
}

/// The high byte of every connection mark the mesh sets: the mesh's connections are told
/// from others' (whose marks it never changes) by it.
const MARK_TAG: u32 = 0x4d00_0000;
const MARK_TAG_MASK: u32 = 0xff00_0000;

/// The conntrack mark of the connections of a published port: [`MARK_TAG`], the protocol's
/// number, the port.
pub fn connection_mark(protocol: Protocol, port: u16) -> u32 {
    let number: u32 = match protocol {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    };
    MARK_TAG | (number << 16) | u32::from(port)
}

/// The node's whole ruleset as one `nft -f` script, applied in one transaction: the table
/// made if missing and flushed (its chains emptied, its counters kept, so they count on
/// across changes), the counters of ports `previous` had and `desired` has not removed,
/// then every rule again.
pub fn render(node_id: &str, desired: &NodeMesh, previous: &NodeMesh) -> String {
    let table = table_name(node_id);
    let bridge = bridge_name(node_id);
    // What another node's mesh sent: from its address, marked. With no other node, nothing
    // is.
    let others = desired
        .nodes
        .as_ref()
        .filter(|nodes| !nodes.others.is_empty())
        .map(|nodes| address_set(&nodes.others));
    let mesh_marks = format!("{{ {MESH_DSCP:#04x}, {FORWARDED_DSCP:#04x} }}");
    let mut out = String::new();
    let _ = writeln!(out, "table ip {table} {{}}");
    let _ = writeln!(out, "flush table ip {table}");
    for (protocol, port) in previous.ports.keys() {
        if !desired.ports.contains_key(&(*protocol, *port)) {
            // Made first, so the delete holds whatever the kernel has.
            for counter in port_counters(*protocol, *port) {
                let _ = writeln!(out, "add counter ip {table} {counter}");
                let _ = writeln!(out, "delete counter ip {table} {counter}");
            }
        }
    }
    let _ = writeln!(out, "table ip {table} {{");
    let _ = writeln!(out, "\tcounter {REFUSED_COUNTER} {{\n\t}}");
    // The data path device whose `route_localnet` the node opened (its one element, set by
    // `Mesh`): kept with the rules, for a restarted daemon to shut it.
    let _ = writeln!(
        out,
        "\tset {OPENED_SET} {{\n\t\ttype ipv4_addr . ifname\n\t}}"
    );
    for (protocol, port) in desired.ports.keys() {
        for counter in port_counters(*protocol, *port) {
            let _ = writeln!(out, "\tcounter {counter} {{\n\t}}");
        }
    }

    // The mesh's connections from other nodes go to their own chain: what no rule there
    // takes is refused (input), never taken as a client's.
    let _ = writeln!(out, "\tchain from_node {{");
    for (&key, port) in &desired.ports {
        if others.is_none() || port.mode != PublishMode::Ingress {
            continue;
        }
        if !port.local.is_empty() {
            dnat_rule(&mut out, "", key, port, &port.local);
        } else if !port.backends.is_empty() {
            // No task here can take what another node sent: sent on once, to another
            // node's tasks (with none here, every backend is another node).
            // Marked FORWARDED_DSCP on its way out (`mark_for_node`).
            let condition = format!("ip dscp {MESH_DSCP:#04x}");
            dnat_rule(&mut out, &condition, key, port, &port.backends);
        }
    }
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain prerouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    let ingress: Vec<(Protocol, u16)> = desired
        .ports
        .iter()
        .filter(|(_, port)| port.mode == PublishMode::Ingress)
        .map(|(key, _)| *key)
        .collect();
    if let Some(others) = others.as_ref().filter(|_| !ingress.is_empty()) {
        let _ = writeln!(
            out,
            "\t\tip saddr {others} ip dscp {mesh_marks} fib daddr type local meta l4proto . th dport {} goto from_node",
            port_set(&ingress)
        );
    }
    // Anyone else is a client: outside the cluster, a process of another node, a task.
    for (&key, port) in &desired.ports {
        if NodeMesh::kernel_clients(port) {
            dnat_rule(&mut out, "fib daddr type local", key, port, &port.backends);
        }
    }
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain output {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook output priority -100; policy accept;"
    );
    for (&key, port) in &desired.ports {
        if NodeMesh::kernel_clients(port) {
            dnat_rule(&mut out, "fib daddr type local", key, port, &port.backends);
        }
    }
    let _ = writeln!(out, "\t}}");

    let _ = writeln!(out, "\tchain postrouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook postrouting priority srcnat; policy accept;"
    );
    // Another node's published ports: `ip daddr { A, … } meta l4proto . th dport { tcp . P, … }`.
    let for_node = others.as_ref().map(|others| {
        let ports: Vec<(Protocol, u16)> = desired.ports.keys().copied().collect();
        format!(
            "ip daddr {others} meta l4proto . th dport {}",
            port_set(&ports)
        )
    });
    if let (Some(nodes), Some(for_node)) = (&desired.nodes, &for_node) {
        // Answers must come back through this node: its conntrack undoes the DNAT (or
        // hands them to the userspace path's socket). The userspace path's connections
        // too: whatever address the route gives them, the other node tells them by this
        // one.
        let _ = writeln!(out, "\t\t{for_node} snat ip to {}", nodes.own);
    }
    // A client on the node (127.0.0.1) or a task reaching a task of its own bridge through
    // a published port would be answered directly, past the DNAT: both take the node's
    // address.
    let _ = writeln!(out, "\t\tip saddr 127.0.0.0/8 ct status dnat masquerade");
    let _ = writeln!(
        out,
        "\t\tiifname \"{bridge}\" oifname \"{bridge}\" ct status dnat masquerade"
    );
    let _ = writeln!(out, "\t}}");

    // What leaves for another node says whose it is, by the DSCP of its packets until the
    // connection is answered (a lost SYN's retransmission too): the mesh's (DNAT'ed here:
    // its connection mark; or a socket of the userspace path) carries MESH_DSCP, or
    // FORWARDED_DSCP when it came marked from another node and is sent on; anything else's
    // (a task's, a process's here) neither, whatever its sender set, and whatever its
    // destination: a node that knows this one before this one knows it (it joined a moment
    // ago) must not take a task's forged mark here for the mesh's. A filter chain (a nat
    // chain sees the first packet only); answered connections fail each of its rules at
    // their first test.
    let mesh_connection = format!("ct mark and {MARK_TAG_MASK:#010x} == {MARK_TAG:#010x}");
    let _ = writeln!(out, "\tchain leaving {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook postrouting priority filter; policy accept;"
    );
    if let Some(others) = &others {
        // `goto`: what the chain marks leaves with its mark, past the clearing below.
        let _ = writeln!(out, "\t\tct state new ip daddr {others} goto mark_for_node");
        // A UDP flow's packets are marked as long as it lasts: the other node's conntrack
        // entry may time out before this one's, and the next packet must still say whose
        // it is there.
        let udp: Vec<(Protocol, u16)> = ingress
            .iter()
            .filter(|(protocol, _)| *protocol == Protocol::Udp)
            .copied()
            .collect();
        if !udp.is_empty() {
            let _ = writeln!(
                out,
                "\t\tip daddr {others} meta l4proto . th dport {} goto mark_for_node",
                port_set(&udp)
            );
        }
    }
    let _ = writeln!(
        out,
        "\t\tct state new ip dscp {mesh_marks} ip dscp set 0x00"
    );
    let _ = writeln!(out, "\t}}");
    if let Some(others) = &others {
        let _ = writeln!(out, "\tchain mark_for_node {{");
        let _ = writeln!(
            out,
            "\t\t{mesh_connection} ct original ip saddr {others} ip dscp {mesh_marks} ip dscp set {FORWARDED_DSCP:#04x} return"
        );
        let _ = writeln!(
            out,
            "\t\t{mesh_connection} ip dscp set {MESH_DSCP:#04x} return"
        );
        let _ = writeln!(
            out,
            "\t\tmeta mark {PROXY_SOCKET_MARK:#010x} ip dscp set {MESH_DSCP:#04x} return"
        );
        let _ = writeln!(out, "\t\tip dscp {mesh_marks} ip dscp set 0x00");
        let _ = writeln!(out, "\t}}");
    }

    // What another node sent and no rule here took (no task for it here) is refused, as
    // its sender decided with a view a moment behind; so is anything for a held port with
    // no task to send to: the node's socket would take the connection into its backlog and
    // leave it there.
    let _ = writeln!(out, "\tchain input {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook input priority filter; policy accept;"
    );
    for ((protocol, published), port) in &desired.ports {
        let refusal = match protocol {
            Protocol::Tcp => "reject with tcp reset",
            _ => "reject",
        };
        let matches = l4(*protocol, *published);
        if let Some(others) = others
            .as_ref()
            .filter(|_| port.mode == PublishMode::Ingress)
        {
            let _ = writeln!(
                out,
                "\t\tip saddr {others} ip dscp {mesh_marks} ct state new {matches} counter name \"{REFUSED_COUNTER}\" {refusal}"
            );
        }
        if !port.proxy_protocol && !port.taken {
            let _ = writeln!(out, "\t\tct state new {matches} {refusal}");
        }
    }
    let _ = writeln!(out, "\t}}");
    // A loopback address is the node's own: nothing that arrives by a device is for one, or
    // from one.
    let _ = writeln!(out, "\tchain guard {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook prerouting priority raw; policy accept;"
    );
    let _ = writeln!(out, "\t\tiif != \"lo\" ip daddr 127.0.0.0/8 drop");
    let _ = writeln!(out, "\t\tiif != \"lo\" ip saddr 127.0.0.0/8 drop");
    let _ = writeln!(out, "\t}}");
    // Every packet of the mesh's connections, counted once on this node: each enters it
    // from an interface (prerouting) or from a local client (output), after the nat rules
    // marked its connection.
    let _ = writeln!(out, "\tchain count_bytes {{");
    for (protocol, published) in desired.ports.keys() {
        let mark = connection_mark(*protocol, *published);
        for (direction, state) in [(Direction::In, "original"), (Direction::Out, "reply")] {
            let _ = writeln!(
                out,
                "\t\tct mark {mark:#010x} ct direction {state} counter name \"{}\"",
                bytes_counter(*protocol, *published, direction)
            );
        }
    }
    let _ = writeln!(out, "\t}}");
    for (chain, hook) in [("arriving", "prerouting"), ("leaving_local", "output")] {
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(
            out,
            "\t\ttype filter hook {hook} priority filter; policy accept;"
        );
        let _ = writeln!(out, "\t\t{mesh_connection} jump count_bytes");
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    out
}

/// One DNAT rule of published port `key`: a new connection matching `condition` (if any)
/// and the port is counted, marked, and DNAT'ed over `targets`.
fn dnat_rule(
    out: &mut String,
    condition: &str,
    (protocol, published): (Protocol, u16),
    port: &MeshPort,
    targets: &[(Ipv4Addr, u16)],
) {
    let separator = if condition.is_empty() { "" } else { " " };
    let _ = writeln!(
        out,
        "\t\t{condition}{separator}{} counter name \"{}\" ct mark set {:#010x} {} comment \"{}\"",
        l4(protocol, published),
        connections_counter(protocol, published),
        connection_mark(protocol, published),
        dnat(targets),
        port.service
    );
}

/// `{ tcp . 8080, … }` of `ports` (not empty).
fn port_set(ports: &[(Protocol, u16)]) -> String {
    let list = ports
        .iter()
        .map(|(protocol, published)| format!("{protocol} . {published}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("{{ {list} }}")
}

/// `{ A, B, … }` of `addresses` (not empty).
fn address_set(addresses: &BTreeSet<Ipv4Addr>) -> String {
    let list = addresses
        .iter()
        .map(Ipv4Addr::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!("{{ {list} }}")
}

/// The named counters of one published port.
fn port_counters(protocol: Protocol, port: u16) -> [String; 3] {
    [
        connections_counter(protocol, port),
        bytes_counter(protocol, port, Direction::In),
        bytes_counter(protocol, port, Direction::Out),
    ]
}

#[cfg(test)]
mod tests {
    use swarm_api::endpoints::{MeshView, PublishedService};
    use swarm_api::spec::PortConfig;

    use super::*;

    fn port(published: u16, target: u16, mode: PublishMode) -> PortConfig {
        PortConfig {
            published: Some(published),
            target,
            protocol: Protocol::Tcp,
            mode,
            proxy_protocol: None,
        }
    }

    /// Nodes a, b, c at 192.0.2.1, .2, .3; `web` publishes 8080→80 with tasks t1 (a), t2
    /// and t3 (b); `db` publishes 5432 in host mode with a task on b.
    fn view() -> NetworkView {
        let node = |last: u8| Ipv4Addr::new(192, 0, 2, last);
        let tasks = |list: &[(&str, &str)]| {
            list.iter()
                .map(|(t, n)| {
                    let task = swarm_api::endpoints::MeshTask {
                        node_id: (*n).to_owned(),
                        serving: true,
                    };
                    ((*t).to_owned(), task)
                })
                .collect()
        };
        NetworkView {
            networks: BTreeMap::new(),
            mesh: std::sync::Arc::new(MeshView {
                nodes: [("a", node(1)), ("b", node(2)), ("c", node(3))]
                    .into_iter()
                    .map(|(id, n)| (id.to_owned(), n))
                    .collect(),
                services: [
                    (
                        "web-id".to_owned(),
                        PublishedService {
                            name: "web".into(),
                            ports: vec![port(8080, 80, PublishMode::Ingress)],
                            tasks: tasks(&[("t1", "a"), ("t2", "b"), ("t3", "b")]),
                        },
                    ),
                    (
                        "db-id".to_owned(),
                        PublishedService {
                            name: "db".into(),
                            ports: vec![port(5432, 5432, PublishMode::Host)],
                            tasks: tasks(&[("d1", "b")]),
                        },
                    ),
                ]
                .into_iter()
                .collect(),
            }),
        }
    }

    fn local(list: &[(&str, [u8; 4])]) -> BTreeMap<String, Ipv4Addr> {
        list.iter()
            .map(|(t, a)| ((*t).to_owned(), Ipv4Addr::from(*a)))
            .collect()
    }

    #[test]
    fn a_node_sends_remote_tasks_connections_to_their_node_and_its_own_to_them() {
        let mesh = NodeMesh::from_view(&view(), "a", &local(&[("t1", [198, 19, 1, 5])]));
        let nodes = mesh
            .nodes
            .as_ref()
            .expect("a port is published through the mesh");
        assert_eq!(nodes.own, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            nodes.others,
            [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)].into()
        );
        let web = &mesh.ports[&(Protocol::Tcp, 8080)];
        // b runs two tasks: its address is listed twice, so each task gets a share.
        assert_eq!(
            web.backends,
            [
                (Ipv4Addr::new(192, 0, 2, 2), 8080),
                (Ipv4Addr::new(192, 0, 2, 2), 8080),
                (Ipv4Addr::new(198, 19, 1, 5), 80),
            ]
        );
        assert_eq!(web.local, [(Ipv4Addr::new(198, 19, 1, 5), 80)]);
        // Host mode: only where a task runs.
        assert!(!mesh.ports.contains_key(&(Protocol::Tcp, 5432)));
    }

    #[test]
    fn a_draining_task_takes_only_what_other_nodes_already_sent() {
        let mut view = view();
        let web = std::sync::Arc::make_mut(&mut view.mesh)
            .services
            .get_mut("web-id")
            .unwrap();
        web.tasks.get_mut("t3").unwrap().serving = false;
        let on_a = NodeMesh::from_view(&view, "a", &local(&[("t1", [198, 19, 1, 5])]));
        assert_eq!(
            on_a.ports[&(Protocol::Tcp, 8080)].backends,
            [
                (Ipv4Addr::new(192, 0, 2, 2), 8080),
                (Ipv4Addr::new(198, 19, 1, 5), 80)
            ],
            "b is listed once: only t2 serves there"
        );
        let on_b = NodeMesh::from_view(
            &view,
            "b",
            &local(&[("t2", [198, 19, 2, 5]), ("t3", [198, 19, 2, 6])]),
        );
        let port = &on_b.ports[&(Protocol::Tcp, 8080)];
        assert!(!port.backends.contains(&(Ipv4Addr::new(198, 19, 2, 6), 80)));
        assert!(port.local.contains(&(Ipv4Addr::new(198, 19, 2, 6), 80)));
    }

    #[test]
    fn host_mode_binds_only_to_the_nodes_own_task() {
        let mesh = NodeMesh::from_view(
            &view(),
            "b",
            &local(&[
                ("t2", [198, 19, 2, 5]),
                ("t3", [198, 19, 2, 6]),
                ("d1", [198, 19, 2, 7]),
            ]),
        );
        let db = &mesh.ports[&(Protocol::Tcp, 5432)];
        assert_eq!(db.backends, [(Ipv4Addr::new(198, 19, 2, 7), 5432)]);
        let script = render("b", &mesh, &NodeMesh::default());
        let table = table_name("b");
        assert!(script.starts_with(&format!(
            "table ip {table} {{}}\nflush table ip {table}\ntable ip {table} {{\n"
        )));
        // What another node's mesh sent (its address and mark) goes to b's own tasks.
        assert!(script.contains(
            "\t\tip saddr { 192.0.2.1, 192.0.2.3 } ip dscp { 0x0b, 0x0d } fib daddr type local meta l4proto . th dport { tcp . 8080 } goto from_node\n"
        ));
        assert!(script.contains(
            "\tchain from_node {\n\t\tmeta l4proto tcp th dport 8080 counter name \"conn_tcp_8080\" ct mark set 0x4d061f90 dnat ip to numgen random mod 2 map { 0 : 198.19.2.5 . 80, 1 : 198.19.2.6 . 80 } comment \"web\"\n\t}\n"
        ), "{script}");
        // Host mode: every client, other nodes' addresses included, reaches the local task.
        assert!(script.contains(
            "\t\tfib daddr type local meta l4proto tcp th dport 5432 counter name \"conn_tcp_5432\" ct mark set 0x4d061538 dnat ip to numgen random mod 1 map { 0 : 198.19.2.7 . 5432 } comment \"db\"\n"
        ));
        assert!(!script.contains("dport 5432 counter name \"refused\""));
        assert!(script.contains(
            "\t\tip daddr { 192.0.2.1, 192.0.2.3 } meta l4proto . th dport { tcp . 5432, tcp . 8080 } snat ip to 192.0.2.2\n"
        ));
        assert!(script.contains(
            "\t\tiif != \"lo\" ip daddr 127.0.0.0/8 drop\n\t\tiif != \"lo\" ip saddr 127.0.0.0/8 drop\n"
        ));
        // Each way of the port's marked connections has its counter.
        assert!(script.contains(
            "\t\tct mark 0x4d061f90 ct direction original counter name \"bytes_tcp_8080_in\"\n\t\tct mark 0x4d061f90 ct direction reply counter name \"bytes_tcp_8080_out\"\n"
        ));
        assert!(script.contains("\t\tct mark and 0xff000000 == 0x4d000000 jump count_bytes\n"));
    }

    /// What leaves for another node's published port carries the mesh's mark only if it is
    /// the mesh's: DNAT'ed here, or the userspace path's socket; a mark anything else set
    /// is cleared. Another node's connection without the mark is a client's.
    #[test]
    fn only_the_mesh_s_own_connections_leave_marked_as_the_mesh_s() {
        let mesh = NodeMesh::from_view(&view(), "a", &local(&[("t1", [198, 19, 1, 5])]));
        let script = render("a", &mesh, &NodeMesh::default());
        assert!(script.contains(
            "\t\ttype filter hook postrouting priority filter; policy accept;\n\t\tct state new ip daddr { 192.0.2.2, 192.0.2.3 } goto mark_for_node\n\t\tct state new ip dscp { 0x0b, 0x0d } ip dscp set 0x00\n\t}\n"
        ), "{script}");
        assert!(script.contains(
            "\tchain mark_for_node {\n\t\tct mark and 0xff000000 == 0x4d000000 ct original ip saddr { 192.0.2.2, 192.0.2.3 } ip dscp { 0x0b, 0x0d } ip dscp set 0x0d return\n\t\tct mark and 0xff000000 == 0x4d000000 ip dscp set 0x0b return\n\t\tmeta mark 0x4d500000 ip dscp set 0x0b return\n\t\tip dscp { 0x0b, 0x0d } ip dscp set 0x00\n\t}\n"
        ), "{script}");
        // A client from another node's address is balanced over every task as any other.
        assert!(script.contains(
            "\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tip saddr { 192.0.2.2, 192.0.2.3 } ip dscp { 0x0b, 0x0d } fib daddr type local meta l4proto . th dport { tcp . 8080 } goto from_node\n\t\tfib daddr type local meta l4proto tcp th dport 8080 counter name \"conn_tcp_8080\" ct mark set 0x4d061f90 dnat ip to numgen random mod 3 map"
        ), "{script}");
    }

    /// A UDP flow has no end the other node sees: its packets to another node's UDP
    /// published ports are marked (or cleared) for as long as it lasts, not only until it
    /// is answered, so that the other node's conntrack entry, timed out first, is made
    /// again from a marked packet.
    #[test]
    fn a_udp_flow_s_packets_say_whose_they_are_while_it_lasts() {
        let mut view = view();
        let mut dns = port(5353, 53, PublishMode::Ingress);
        dns.protocol = Protocol::Udp;
        std::sync::Arc::make_mut(&mut view.mesh)
            .services
            .get_mut("web-id")
            .unwrap()
            .ports
            .push(dns);
        let mesh = NodeMesh::from_view(&view, "a", &local(&[("t1", [198, 19, 1, 5])]));
        let script = render("a", &mesh, &NodeMesh::default());
        assert!(script.contains(
            "\t\tct state new ip daddr { 192.0.2.2, 192.0.2.3 } goto mark_for_node\n\t\tip daddr { 192.0.2.2, 192.0.2.3 } meta l4proto . th dport { udp . 5353 } goto mark_for_node\n\t\tct state new ip dscp { 0x0b, 0x0d } ip dscp set 0x00\n"
        ), "{script}");
    }

    #[test]
    fn a_port_another_process_holds_is_left_to_it_but_other_nodes_still_reach_the_tasks() {
        let mut mesh = NodeMesh::from_view(
            &view(),
            "b",
            &local(&[("t2", [198, 19, 2, 5]), ("d1", [198, 19, 2, 7])]),
        );
        assert_eq!(
            mesh.held(),
            [(Protocol::Tcp, 5432), (Protocol::Tcp, 8080)].into(),
            "both ports are the kernel path's"
        );
        let held = render("b", &mesh, &NodeMesh::default());
        assert!(
            held.contains("\t\tfib daddr type local meta l4proto tcp th dport 8080 counter"),
            "{held}"
        );
        assert!(
            held.contains(
                "\t\tct state new meta l4proto tcp th dport 8080 reject with tcp reset\n"
            ),
            "a held port nothing DNAT'ed is refused: {held}"
        );
        mesh.leave_taken(&[(Protocol::Tcp, 8080)].into());
        let script = render("b", &mesh, &NodeMesh::default());
        assert!(
            !script.contains("fib daddr type local meta l4proto tcp th dport 8080"),
            "no client rule: {script}"
        );
        assert!(
            script.contains("\tchain from_node {\n\t\tmeta l4proto tcp th dport 8080 counter"),
            "what other nodes send still reaches t2: {script}"
        );
        assert!(!script.contains("dport 8080 reject"), "{script}");
        assert!(script.contains("fib daddr type local meta l4proto tcp th dport 5432"));
    }

    #[test]
    fn a_task_not_attached_yet_takes_no_connection_and_no_mesh_means_no_rules() {
        let mesh = NodeMesh::from_view(&view(), "a", &BTreeMap::new());
        assert_eq!(
            mesh.ports[&(Protocol::Tcp, 8080)].backends,
            [
                (Ipv4Addr::new(192, 0, 2, 2), 8080),
                (Ipv4Addr::new(192, 0, 2, 2), 8080)
            ]
        );
        let mut only_host = view();
        std::sync::Arc::make_mut(&mut only_host.mesh)
            .services
            .remove("web-id");
        let mesh = NodeMesh::from_view(&only_host, "a", &BTreeMap::new());
        assert_eq!(mesh, NodeMesh::default());
        assert!(!render("a", &mesh, &NodeMesh::default()).contains("snat"));
    }

    #[test]
    fn a_node_with_no_task_of_a_port_sends_what_another_node_sent_on_once() {
        let mesh = NodeMesh::from_view(&view(), "c", &BTreeMap::new());
        let script = render("c", &mesh, &NodeMesh::default());
        assert!(
            script.contains(
                "\t\tip dscp 0x0b meta l4proto tcp th dport 8080 counter name \"conn_tcp_8080\" ct mark set 0x4d061f90 dnat ip to numgen random mod 3 map { 0 : 192.0.2.1 . 8080, 1 : 192.0.2.2 . 8080, 2 : 192.0.2.2 . 8080 } comment \"web\"\n"
            ),
            "{script}"
        );
        // What another node sent and no rule took is refused and counted.
        assert!(script.contains(
            "\t\tip saddr { 192.0.2.1, 192.0.2.2 } ip dscp { 0x0b, 0x0d } ct state new meta l4proto tcp th dport 8080 counter name \"refused\" reject with tcp reset\n"
        ));
        // A node with a task of the port keeps what other nodes send.
        let on_a = render(
            "a",
            &NodeMesh::from_view(&view(), "a", &local(&[("t1", [198, 19, 1, 5])])),
            &NodeMesh::default(),
        );
        assert!(!on_a.contains("\t\tip dscp 0x0b meta l4proto"), "{on_a}");
        if swarm_testkit::is_root() && swarm_testkit::has_program("nft") {
            crate::network::command::run("nft", &["--check", "-f", "-"], Some(&script))
                .unwrap_or_else(|error| panic!("{error}"));
        }
    }

    /// The kernel's own parser accepts the ruleset (`nft --check`: nothing is set).
    #[test]
    fn nft_accepts_the_ruleset() {
        let test = "nft_accepts_the_ruleset";
        if !swarm_testkit::require(test, swarm_testkit::is_root(), "root")
            || !swarm_testkit::require(test, swarm_testkit::has_program("nft"), "nft")
        {
            return;
        }
        let local = local(&[("t2", [198, 19, 2, 5]), ("d1", [198, 19, 2, 7])]);
        // UDP and a PROXY protocol port beside the TCP ones, and a port gone since the
        // last ruleset (its counter removed).
        let mut view = view();
        let web = &mut std::sync::Arc::make_mut(&mut view.mesh)
            .services
            .get_mut("web-id")
            .unwrap()
            .ports;
        let mut udp = port(5353, 53, PublishMode::Ingress);
        udp.protocol = Protocol::Udp;
        let mut proxied = port(8443, 443, PublishMode::Ingress);
        proxied.proxy_protocol = Some(swarm_api::spec::ProxyProtocol::V2);
        web.extend([udp, proxied]);
        let mesh = NodeMesh::from_view(&view, "b", &local);
        let mut previous = mesh.clone();
        previous.ports.insert(
            (Protocol::Tcp, 9999),
            mesh.ports[&(Protocol::Tcp, 8080)].clone(),
        );
        let script = render("b", &mesh, &previous);
        assert!(
            script.contains("meta l4proto udp th dport 5353"),
            "{script}"
        );
        assert!(script.contains("delete counter ip"), "{script}");
        assert_eq!(mesh.proxied().len(), 1);
        crate::network::command::run("nft", &["--check", "-f", "-"], Some(&script))
            .unwrap_or_else(|error| panic!("{error}"));
    }

    #[test]
    fn a_node_at_this_nodes_own_address_is_left_out() {
        let mut twins = view();
        let mesh = std::sync::Arc::make_mut(&mut twins.mesh);
        mesh.nodes.insert("b".into(), Ipv4Addr::new(192, 0, 2, 1));
        let on_a = NodeMesh::from_view(&twins, "a", &local(&[("t1", [198, 19, 1, 5])]));
        assert_eq!(
            on_a.nodes.as_ref().unwrap().others,
            [Ipv4Addr::new(192, 0, 2, 3)].into()
        );
        assert_eq!(
            on_a.ports[&(Protocol::Tcp, 8080)].backends,
            [(Ipv4Addr::new(198, 19, 1, 5), 80)],
            "b's tasks are not sent to a's own address"
        );
    }

    #[test]
    fn a_node_alone_takes_every_connection_as_a_client() {
        let mut alone = view();
        let mesh = std::sync::Arc::make_mut(&mut alone.mesh);
        mesh.nodes.retain(|id, _| id == "b");
        let on_b = NodeMesh::from_view(&alone, "b", &local(&[("t2", [198, 19, 2, 5])]));
        let script = render("b", &on_b, &NodeMesh::default());
        assert!(!script.contains("saddr {"), "{script}");
        assert!(!script.contains("snat"), "{script}");
        // Nothing leaves marked as the mesh's: a node that knows this one before it knows
        // that node would take the mark.
        assert!(
            script.contains(
                "\t\ttype filter hook postrouting priority filter; policy accept;\n\t\tct state new ip dscp { 0x0b, 0x0d } ip dscp set 0x00\n\t}\n"
            ),
            "{script}"
        );
        assert!(!script.contains("mark_for_node"), "{script}");
        assert!(
            script.contains("\t\tfib daddr type local meta l4proto tcp th dport 8080 counter"),
            "{script}"
        );
    }
}
