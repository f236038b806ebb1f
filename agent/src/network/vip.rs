//! Virtual IPs: connections to a service's VIP balanced over its serving tasks, in the
//! kernel (nftables DNAT; this machine has no IPVS).
//!
//! The desired state is pure data ([`NodeVips`], made from the node's endpoint table by
//! [`NodeVips::from_view`]): per overlay network the node carries, each VIP and the
//! addresses of the service's serving tasks. [`render`] writes the node's whole nftables
//! ruleset as text; `kernel` replaces it atomically (one `nft -f` per change) and sets the
//! routing and neighbour entries beside it.
//!
//! The path of a connection from task C to VIP:port (C on this node; the backend B here or
//! on another node):
//! 1. C's `ov…` interface routes the network's subnet, VIP included: C asks ARP for the
//!    VIP. The request floods the network's bridge `swo…` and reaches its VXLAN device
//!    `swx…`, whose `proxy` answers from a permanent neighbour entry `VIP lladdr
//!    BRIDGE-MAC` (the bridge's MAC is set by this module, derived from node and network,
//!    so it does not move as ports come and go). No ARP for a VIP crosses the overlay.
//! 2. C's frame to the bridge's MAC passes the IPv4 hooks at the bridge (`br_netfilter`):
//!    the `prerouting` chain of the node's table DNATs it to `numgen random mod N map
//!    { … }` over the serving backends, keeping the port; conntrack remembers the choice
//!    for the rest of the connection.
//! 3. `br_netfilter` looks the new destination up as the bridge's input: the network's own
//!    table (`ip rule iif swo… lookup T`, `SUBNET dev swo…` in T) says back out of the
//!    same bridge, so the frame is bridged on to B's MAC (TTL untouched): to B's port, or
//!    to the VXLAN device and B's node. That lookup needs IPv4 forwarding on the bridge
//!    (`conf/swo…/forwarding`, that device only: the node does not become a router).
//!    Permanent neighbour entries (every endpoint's MAC, known from its address) spare
//!    the node ARP on the bridge.
//! 4. B answers C directly, over the bridge (or the overlay, then the bridge of C's node):
//!    with `br_netfilter` the reply passes C's node's conntrack, which puts the VIP back
//!    as its source. Without `br_netfilter` neither 2 nor 4 would happen: the module sets
//!    `bridge-nf-call-iptables`.
//!
//! Measured against the task's address directly: `BENCHMARKS.md` (0.90–1.10× req/s).
//!
//! Per-network routing tables (numbered from node and network) and rules on the bridge's
//! name keep several nodes and networks in one namespace apart. Isolation: the `forward`
//! chain drops whatever enters from a network's bridge and would leave by another device,
//! so only traffic back into the same network (DNAT'ed, or bridged) is forwarded.
//!
//! Changes: the ruleset is replaced whole (one transaction): a backend that stops serving
//! is never chosen for a new connection, while connections open to it keep their
//! conntrack entry and drain (the `forward` chain's `ct state` rule keeps conntrack hooked
//! in the namespace even when no DNAT rule is left, see [`render`]). A node with no VIP on
//! any network has no table at all (none left behind by a killed daemon). A VIP with no serving
//! task is not DNAT'ed: it is routed into the network and the `forward` chain rejects it
//! (TCP reset, else ICMP port unreachable), the answer routed back by a rule for locally
//! made packets to the subnet (`iif lo to SUBNET lookup T`; with several nodes of the
//! network in one namespace the first node's rule routes all answers, over the overlay
//! to the client's node when the client is another node's).

mod kernel;
mod socket;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use swarm_api::endpoints::NetworkView;
use swarm_api::spec::EndpointMode;

use super::bridge::hex_digest;
use super::overlay::{overlay_bridge_name, vxlan_name};

pub use kernel::{Vips, follow};
pub use socket::{
    MAX_BACKENDS as SOCKET_MAX_BACKENDS, NodeSocketBalancer, SocketBalancer, SocketError,
    SocketVips, netns_cookie,
};

/// What a node balances: per overlay network (by network id) with at least one VIP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeVips {
    pub networks: BTreeMap<String, NetworkVips>,
}

/// One network's VIPs on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkVips {
    /// The network's VXLAN id: how the socket balancer names it.
    pub vni: u32,
    pub subnet: Ipv4Net,
    /// Each VIP and the addresses of its service's serving tasks, sorted; none: the VIP
    /// refuses connections.
    pub vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
    /// Every task address on the network, serving or draining: the node reaches each
    /// without ARP.
    pub endpoints: BTreeSet<Ipv4Addr>,
    /// This node's tasks on the network, by id: the socket balancer sends their
    /// connections to a VIP straight to a serving task.
    pub local_tasks: BTreeSet<String>,
}

impl NodeVips {
    /// The VIPs of node `node_id`'s endpoint table: each `vip`-mode service that has one,
    /// on each network the node carries, with its serving tasks.
    pub fn from_view(view: &NetworkView, node_id: &str) -> NodeVips {
        let networks = view
            .networks
            .values()
            .filter_map(|network| {
                let vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>> = network
                    .services
                    .iter()
                    .filter(|(_, service)| service.mode == EndpointMode::Vip)
                    .filter_map(|(id, service)| Some((service.vip?, network.serving_addresses(id))))
                    .collect();
                if vips.is_empty() {
                    return None;
                }
                let endpoints = network.tasks.values().map(|t| t.address).collect();
                let local_tasks = network
                    .tasks
                    .iter()
                    .filter(|(_, task)| task.node_id == node_id)
                    .map(|(id, _)| id.clone())
                    .collect();
                Some((
                    network.id.clone(),
                    NetworkVips {
                        vni: network.vni,
                        subnet: network.subnet,
                        vips,
                        endpoints,
                        local_tasks,
                    },
                ))
            })
            .collect();
        NodeVips { networks }
    }
}

/// The node's nftables table: `swvip` and 10 hex digits of its id's SHA-256, so several
/// nodes on one machine each have their own.
pub fn table_name(node_id: &str) -> String {
    format!(
        "swvip{}",
        &hex_digest(format!("{node_id}\0vip").as_bytes())[..10]
    )
}

/// The routing table of a network on a node: a block of 65,536 per node (12 bits of its
/// id's digest above 0x5000_0000), 16 bits of the network's inside it, so the node's
/// teardown finds its own tables by number.
pub fn routing_table(node_id: &str, network: &str) -> u32 {
    let both = hex_digest(format!("{node_id}\0{network}\0table").as_bytes());
    node_table_block(node_id) | u32::from_str_radix(&both[..4], 16).expect("hex digits")
}

/// The first routing table of the node's block.
fn node_table_block(node_id: &str) -> u32 {
    let node = hex_digest(format!("{node_id}\0table").as_bytes());
    0x5000_0000 | (u32::from_str_radix(&node[..3], 16).expect("hex digits") << 16)
}

/// The MAC the network's bridge on the node takes: the VIPs' neighbour entries point at
/// it. Locally administered (`02`), `4e` apart from the endpoints' `02:42`, and 4 bytes of
/// node and network, so two nodes' bridges never share one.
pub fn bridge_mac(node_id: &str, network: &str) -> String {
    let digest = hex_digest(format!("{node_id}\0{network}\0mac").as_bytes());
    let bytes: Vec<&str> = (0..4).map(|i| &digest[2 * i..2 * i + 2]).collect();
    format!("02:4e:{}", bytes.join(":"))
}

/// The node's whole ruleset as one `nft -f` script: the table made if missing, deleted and
/// made again in the same transaction, so that a change is atomic.
pub fn render(node_id: &str, desired: &NodeVips) -> String {
    let table = table_name(node_id);
    let mut out = String::new();
    let _ = writeln!(out, "table ip {table} {{}}");
    let _ = writeln!(out, "delete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    let _ = writeln!(out, "\tchain prerouting {{");
    let _ = writeln!(
        out,
        "\t\ttype nat hook prerouting priority dstnat; policy accept;"
    );
    for (network, vips) in &desired.networks {
        let bridge = overlay_bridge_name(node_id, network);
        for (vip, backends) in vips.vips.iter().filter(|(_, b)| !b.is_empty()) {
            let map = backends
                .iter()
                .enumerate()
                .map(|(i, backend)| format!("{i} : {backend}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "\t\tiifname \"{bridge}\" ip daddr {vip} dnat to numgen random mod {} map {{ {map} }}",
                backends.len()
            );
        }
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "\tchain forward {{");
    let _ = writeln!(
        out,
        "\t\ttype filter hook forward priority filter; policy accept;"
    );
    // Open connections keep their NAT only while conntrack sees them, and the kernel hooks
    // conntrack into a namespace only while an expression needs it: with no DNAT rule left
    // (no VIP with a serving task) it would unhook, and draining connections would lose
    // their VIP. This rule needs it whatever the VIPs are.
    let _ = writeln!(out, "\t\tct state established,related accept");
    for (network, vips) in &desired.networks {
        let bridge = overlay_bridge_name(node_id, network);
        let idle: Vec<String> = vips
            .vips
            .iter()
            .filter(|(_, backends)| backends.is_empty())
            .map(|(vip, _)| vip.to_string())
            .collect();
        if !idle.is_empty() {
            let set = idle.join(", ");
            let _ = writeln!(
                out,
                "\t\tiifname \"{bridge}\" ip daddr {{ {set} }} meta l4proto tcp reject with tcp reset"
            );
            let _ = writeln!(out, "\t\tiifname \"{bridge}\" ip daddr {{ {set} }} reject");
        }
        let _ = writeln!(out, "\t\tiifname \"{bridge}\" oifname != \"{bridge}\" drop");
    }
    let _ = writeln!(out, "\t}}");
    let _ = writeln!(out, "}}");
    out
}

/// The `ip -batch` lines that set one network's links, neighbours and route on the node,
/// each idempotent (`replace`). Rules are not here: `ip rule add` is not idempotent, the
/// kernel side adds only the missing ones.
fn network_links(node_id: &str, network: &str, desired: &NetworkVips) -> Vec<String> {
    let bridge = overlay_bridge_name(node_id, network);
    let vxlan = vxlan_name(node_id, network);
    let mac = bridge_mac(node_id, network);
    let table = routing_table(node_id, network);
    let mut lines = vec![format!("link set dev {bridge} address {mac}")];
    for vip in desired.vips.keys() {
        lines.push(format!(
            "neigh replace {vip} lladdr {mac} dev {vxlan} nud permanent"
        ));
    }
    for endpoint in &desired.endpoints {
        lines.push(format!(
            "neigh replace {endpoint} lladdr {} dev {bridge} nud permanent",
            super::overlay::endpoint_mac(*endpoint)
        ));
    }
    lines.push(format!(
        "route replace {} dev {bridge} table {table}",
        desired.subnet
    ));
    lines
}

/// The `ip -batch` lines that remove what the last reconcile set for a network
/// (`current`) and `desired` no longer has (`None`: the network is gone from the node's
/// VIPs). Some may be gone with their device already: the kernel side tolerates their
/// failure.
fn stale_links(
    node_id: &str,
    network: &str,
    current: &NetworkVips,
    desired: Option<&NetworkVips>,
) -> Vec<String> {
    let bridge = overlay_bridge_name(node_id, network);
    let vxlan = vxlan_name(node_id, network);
    let table = routing_table(node_id, network);
    let mut lines = Vec::new();
    let kept_vip = |vip: &Ipv4Addr| desired.is_some_and(|d| d.vips.contains_key(vip));
    for vip in current.vips.keys().filter(|v| !kept_vip(v)) {
        lines.push(format!("neigh del {vip} dev {vxlan}"));
    }
    let kept_endpoint = |e: &Ipv4Addr| desired.is_some_and(|d| d.endpoints.contains(e));
    for endpoint in current.endpoints.iter().filter(|e| !kept_endpoint(e)) {
        lines.push(format!("neigh del {endpoint} dev {bridge}"));
    }
    if desired.is_none_or(|d| d.subnet != current.subnet) {
        lines.push(format!(
            "route del {} dev {bridge} table {table}",
            current.subnet
        ));
    }
    lines
}

/// A policy rule of the node's: packets coming in on `iif` (and going `to` a subnet, when
/// given) are routed by `table`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    iif: String,
    to: Option<Ipv4Net>,
    table: u32,
}

impl Rule {
    /// As `ip rule add|del` takes it.
    fn args(&self) -> String {
        let to = self.to.map(|to| format!(" to {to}")).unwrap_or_default();
        format!(
            "priority {RULE_PRIORITY} iif {}{to} lookup {}",
            self.iif, self.table
        )
    }
}

/// The policy rules a network needs on a node: traffic from its bridge, and the node's own
/// answers (rejections) to its subnet, both through its table.
fn network_rules(node_id: &str, network: &str, subnet: Ipv4Net) -> [Rule; 2] {
    let table = routing_table(node_id, network);
    [
        Rule {
            iif: overlay_bridge_name(node_id, network),
            to: None,
            table,
        },
        Rule {
            iif: "lo".to_owned(),
            to: Some(subnet),
            table,
        },
    ]
}

/// Before the main table's rule (32766), after the local one (0): the node's own addresses
/// stay local.
const RULE_PRIORITY: u32 = 1000;

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::endpoints::{NetworkEndpoints, ServiceEndpoint, TaskEndpoint};

    fn addr(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn task(service: &str, address: &str, serving: bool) -> TaskEndpoint {
        TaskEndpoint {
            service_id: service.into(),
            node_id: "n2".into(),
            vtep: None,
            address: addr(address),
            name: format!("{service}.1"),
            serving,
        }
    }

    fn view() -> NetworkView {
        let service = |name: &str, mode, vip: Option<&str>| ServiceEndpoint {
            name: name.into(),
            aliases: Vec::new(),
            mode,
            vip: vip.map(addr),
        };
        let back = NetworkEndpoints {
            id: "net-back".into(),
            vni: 4096,
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: addr("10.0.0.1"),
            internal: false,
            services: [
                (
                    "web".to_owned(),
                    service("web", EndpointMode::Vip, Some("10.0.0.2")),
                ),
                (
                    "idle".to_owned(),
                    service("idle", EndpointMode::Vip, Some("10.0.0.3")),
                ),
                ("db".to_owned(), service("db", EndpointMode::Dnsrr, None)),
            ]
            .into(),
            tasks: [
                ("t1".to_owned(), task("web", "10.0.0.6", true)),
                ("t2".to_owned(), task("web", "10.0.0.5", true)),
                ("t3".to_owned(), task("web", "10.0.0.7", false)),
                ("t4".to_owned(), task("db", "10.0.0.8", true)),
            ]
            .into(),
        };
        let mut plain = back.clone();
        plain.id = "net-plain".into();
        plain.services.retain(|id, _| id == "db");
        NetworkView {
            networks: [("back".to_owned(), back), ("plain".to_owned(), plain)].into(),
            mesh: Default::default(),
        }
    }

    #[test]
    fn a_view_gives_each_vip_its_serving_tasks() {
        let vips = NodeVips::from_view(&view(), "n2");
        // A network with no VIP (only a dnsrr service) needs nothing.
        assert_eq!(vips.networks.keys().collect::<Vec<_>>(), ["net-back"]);
        let back = &vips.networks["net-back"];
        assert_eq!(
            back.vips,
            [
                (addr("10.0.0.2"), vec![addr("10.0.0.5"), addr("10.0.0.6")]),
                (addr("10.0.0.3"), vec![]),
            ]
            .into()
        );
        // Draining (t3) and dnsrr tasks are reached without ARP all the same.
        assert_eq!(back.endpoints.len(), 4);
        // The node's own tasks on the network, whatever their service: n2 runs all four.
        assert_eq!(back.vni, 4096);
        assert_eq!(back.local_tasks.len(), 4);
        let elsewhere = NodeVips::from_view(&view(), "n9");
        assert!(elsewhere.networks["net-back"].local_tasks.is_empty());
    }

    #[test]
    fn the_ruleset_balances_serving_tasks_rejects_idle_vips_and_isolates_networks() {
        let text = render("node-1", &NodeVips::from_view(&view(), "n2"));
        let table = table_name("node-1");
        let bridge = overlay_bridge_name("node-1", "net-back");
        let expected = format!(
            "table ip {table} {{}}\n\
             delete table ip {table}\n\
             table ip {table} {{\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tiifname \"{bridge}\" ip daddr 10.0.0.2 dnat to numgen random mod 2 map {{ 0 : 10.0.0.5, 1 : 10.0.0.6 }}\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter; policy accept;\n\
             \t\tct state established,related accept\n\
             \t\tiifname \"{bridge}\" ip daddr {{ 10.0.0.3 }} meta l4proto tcp reject with tcp reset\n\
             \t\tiifname \"{bridge}\" ip daddr {{ 10.0.0.3 }} reject\n\
             \t\tiifname \"{bridge}\" oifname != \"{bridge}\" drop\n\
             \t}}\n\
             }}\n"
        );
        assert_eq!(text, expected);
        // Nothing to balance: an empty table, still replacing the last one.
        let empty = render("node-1", &NodeVips::default());
        assert!(empty.starts_with(&format!("table ip {table} {{}}\ndelete table ip {table}\n")));
        assert!(!empty.contains("dnat") && !empty.contains("drop"));
        assert!(empty.contains("ct state established,related accept"));
    }

    #[test]
    fn names_and_numbers_differ_per_node_and_network() {
        assert_ne!(table_name("a"), table_name("b"));
        assert!(table_name("a").len() <= 15);
        assert_ne!(bridge_mac("a", "n"), bridge_mac("b", "n"));
        assert!(bridge_mac("a", "n").starts_with("02:4e:"));
        let (a, b) = (routing_table("a", "n"), routing_table("a", "m"));
        assert_ne!(a, b);
        // A node's tables share its block; another node's are elsewhere.
        assert_eq!(a & 0xffff_0000, node_table_block("a"));
        assert_eq!(b & 0xffff_0000, node_table_block("a"));
        assert_ne!(node_table_block("a"), node_table_block("b"));
    }

    #[test]
    fn links_follow_the_change_of_a_network() {
        let before = NodeVips::from_view(&view(), "n2").networks["net-back"].clone();
        let mut after = before.clone();
        after.vips.remove(&addr("10.0.0.3"));
        after.endpoints.remove(&addr("10.0.0.7"));
        let (bridge, vxlan) = (
            overlay_bridge_name("n1", "net-back"),
            vxlan_name("n1", "net-back"),
        );
        let mac = bridge_mac("n1", "net-back");
        let table = routing_table("n1", "net-back");
        let lines = network_links("n1", "net-back", &after);
        assert_eq!(lines[0], format!("link set dev {bridge} address {mac}"));
        assert!(lines.contains(&format!(
            "neigh replace 10.0.0.2 lladdr {mac} dev {vxlan} nud permanent"
        )));
        assert!(lines.contains(&format!(
            "neigh replace 10.0.0.5 lladdr 02:42:0a:00:00:05 dev {bridge} nud permanent"
        )));
        assert_eq!(
            lines.last().unwrap(),
            &format!("route replace 10.0.0.0/24 dev {bridge} table {table}")
        );
        assert_eq!(
            stale_links("n1", "net-back", &before, Some(&after)),
            [
                format!("neigh del 10.0.0.3 dev {vxlan}"),
                format!("neigh del 10.0.0.7 dev {bridge}"),
            ]
        );
        // Gone: every entry it had, and its route.
        let gone = stale_links("n1", "net-back", &before, None);
        assert_eq!(gone.len(), 2 + 4 + 1);
        assert_eq!(
            gone.last().unwrap(),
            &format!("route del 10.0.0.0/24 dev {bridge} table {table}")
        );
        assert_eq!(
            network_rules("n1", "net-back", after.subnet).map(|r| r.args()),
            [
                format!("priority 1000 iif {bridge} lookup {table}"),
                format!("priority 1000 iif lo to 10.0.0.0/24 lookup {table}"),
            ]
        );
    }
}
