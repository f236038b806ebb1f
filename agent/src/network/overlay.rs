//! Overlay networks on a node: a VXLAN data plane programmed from a desired state.
//!
//! The node's overlay state is pure data ([`NodeOverlays`]): for each overlay network it
//! runs tasks on, the VNI, the subnet, this node's VTEP (address and UDP port), the local
//! task endpoints and the remote endpoints with the VTEP of the node that runs each. The
//! managers know all of it (addresses are allocated when tasks are created, peers are
//! nodes): nothing is learnt from multicast or from traffic. [`diff`] turns the state the
//! node has into the one it should have as a list of [`Op`]s; `kernel` applies them with
//! `ip` and `bridge`, each op idempotent so that a failed reconcile is simply run again.
//!
//! Per network on a node (names hash node and network ids, so several nodes on one
//! machine never collide, and fit the kernel's 15 characters; each starts with 5 hex
//! digits of the node's own, by which [`Overlay::teardown`] finds them after a restart):
//! - a bridge `swo` + 10 hex, the ports of the network's tasks and its VXLAN device, with
//!   an iptables FORWARD ACCEPT rule for its own traffic (as the node bridge has: with
//!   `br_netfilter` and Docker's DROP policy, bridged frames would be dropped);
//! - a VXLAN device `swx` + 10 hex: the network's VNI, `local` = this node's VTEP address,
//!   `dstport` = this node's port, `nolearning` (the forwarding table is only what the
//!   managers said) and `proxy` (ARP for a remote endpoint is answered on the node from a
//!   permanent neighbour entry: no ARP crosses the overlay);
//! - its forwarding entries: `00:00:00:00:00:00 dst PEER port P` per peer node (flooding
//!   of broadcast and unknown frames) and `MAC dst PEER port P` per remote endpoint, and a
//!   permanent neighbour entry `ADDRESS lladdr MAC` per remote endpoint (written a run of
//!   ops at a time, in one `bridge -batch` and one `ip -batch`: a network of thousands of
//!   tasks is programmed in tens of milliseconds, not seconds);
//! - per local task a veth `swy` + 12 hex on the bridge, its other end `ov` + 8 hex of the
//!   network id inside the task's namespace with the task's address (which routes the
//!   subnet through it). The task's default route stays on the node bridge (`eth0`).
//!
//! MACs follow addresses (`02:42` + the four octets, as Docker makes them), so a remote
//! endpoint's MAC is known from its address alone.
//!
//! Ports: VXLAN devices of one network namespace share one UDP socket per port and are
//! told apart by VNI alone, so two devices with the same VNI and port cannot exist in one
//! namespace (the kernel refuses the second). Nodes of a cluster on one machine (loopback
//! clusters, test hosts sharing a namespace) therefore each get their own port, and every
//! forwarding entry names the port of the peer it points at (`dst PEER port P`): a node on
//! its own machine uses 4789, Docker's, and nothing changes for it.
//!
//! No gateway address is put on the network's bridge: with one, the node would route
//! between two overlay networks it carries (a task's default route leads to the node), and
//! networks must stay isolated. A task reaches the outside through the node bridge.
//!
//! MTU: the devices and the task's end are made with 1450 bytes, a 1500-byte underlay less
//! VXLAN's 50 bytes of encapsulation; a larger task MTU would be dropped at the VXLAN port.

mod kernel;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use swarm_api::endpoints::{NetworkView, Vtep};

use super::bridge::hex_digest;

pub use kernel::{Overlay, apply};

/// MTU of the overlay's devices: a 1500-byte underlay less 50 bytes of VXLAN over IPv4.
pub const OVERLAY_MTU: u32 = 1450;

/// A task of this node on an overlay network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// The task's address on the network (in its subnet).
    pub address: Ipv4Addr,
    /// The task's network namespace (a bind-mounted nsfs file).
    pub netns: PathBuf,
}

/// A task on another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteEndpoint {
    /// The VTEP of the node that runs it.
    pub vtep: Vtep,
}

/// One overlay network as this node should carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayNetwork {
    pub vni: u32,
    pub subnet: Ipv4Net,
    /// This node's VTEP on the network.
    pub vtep: Vtep,
    /// This node's tasks, by task id.
    #[serde(default)]
    pub local: BTreeMap<String, LocalEndpoint>,
    /// Tasks on other nodes, by address.
    #[serde(default)]
    pub remote: BTreeMap<Ipv4Addr, RemoteEndpoint>,
}

impl OverlayNetwork {
    /// The other nodes carrying the network: where broadcast frames are flooded.
    pub fn peers(&self) -> BTreeSet<Vtep> {
        self.remote.values().map(|remote| remote.vtep).collect()
    }

    /// Whether changing from `self` to `other` needs the devices made again.
    fn same_devices(&self, other: &OverlayNetwork) -> bool {
        self.vni == other.vni && self.subnet == other.subnet && self.vtep == other.vtep
    }
}

/// Every overlay network a node carries, by network id; empty when it runs no task on one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeOverlays {
    pub networks: BTreeMap<String, OverlayNetwork>,
}

/// A task of this node whose namespace is made: where it is, and its address on each of
/// its networks (by network name), as the managers gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTask {
    pub netns: PathBuf,
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

/// What node `node_id` should carry, from its share of the endpoint table and its tasks
/// whose namespaces are made: each network of the view that one of those tasks is on (and
/// no other: a network is carried only while a task of the node runs on it), with the
/// node's VTEP as the view gives it for its own tasks, those tasks as local endpoints and
/// every other node's task with a known VTEP as a remote one. A network whose VTEP for
/// this node is not known yet is left out.
pub fn node_overlays(
    view: &NetworkView,
    node_id: &str,
    local: &BTreeMap<String, LocalTask>,
) -> NodeOverlays {
    let mut overlays = NodeOverlays::default();
    for (name, network) in &view.networks {
        let endpoints: BTreeMap<String, LocalEndpoint> = local
            .iter()
            .filter_map(|(task, local)| {
                let address = *local.addresses.get(name)?;
                let netns = local.netns.clone();
                Some((task.clone(), LocalEndpoint { address, netns }))
            })
            .collect();
        let own_vtep = network
            .tasks
            .values()
            .filter(|t| t.node_id == node_id)
            .find_map(|t| t.vtep);
        let Some(vtep) = own_vtep.filter(|_| !endpoints.is_empty()) else {
            continue;
        };
        let local_addresses: BTreeSet<Ipv4Addr> = endpoints.values().map(|e| e.address).collect();
        let remote = network
            .tasks
            .values()
            // An address a local task still holds (stopping here, given again elsewhere)
            // stays local until that task is gone.
            .filter(|t| t.node_id != node_id && !local_addresses.contains(&t.address))
            .filter_map(|t| Some((t.address, RemoteEndpoint { vtep: t.vtep? })))
            .collect();
        overlays.networks.insert(
            network.id.clone(),
            OverlayNetwork {
                vni: network.vni,
                subnet: network.subnet,
                vtep,
                local: endpoints,
                remote,
            },
        );
    }
    overlays
}

/// One change to a node's overlay devices. Applying a list from [`diff`] in order takes
/// the kernel from one state to the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Makes the network's bridge and VXLAN device, up.
    CreateNetwork {
        network: String,
        vni: u32,
        vtep: Vtep,
    },
    /// Removes the network's VXLAN device and bridge (their entries go with them).
    DeleteNetwork {
        network: String,
    },
    /// Floods broadcast and unknown frames to a peer node.
    AddPeer {
        network: String,
        peer: Vtep,
    },
    RemovePeer {
        network: String,
        peer: Vtep,
    },
    /// Forwards a remote endpoint's MAC to its node and answers ARP for it.
    AddRemote {
        network: String,
        address: Ipv4Addr,
        vtep: Vtep,
    },
    RemoveRemote {
        network: String,
        address: Ipv4Addr,
    },
    /// Puts a task's namespace on the network, with its address in `subnet`.
    AttachTask {
        network: String,
        task: String,
        subnet: Ipv4Net,
        endpoint: LocalEndpoint,
    },
    /// Removes a task's link to the network.
    DetachTask {
        network: String,
        task: String,
    },
}

/// The operations that take a node's overlays from `current` to `desired`: a network's
/// devices are made on first use and removed on last, and only what changed is touched.
pub fn diff(current: &NodeOverlays, desired: &NodeOverlays) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, network) in &current.networks {
        match desired.networks.get(id) {
            Some(wanted) if network.same_devices(wanted) => {}
            _ => remove_network(id, network, &mut ops),
        }
    }
    for (id, wanted) in &desired.networks {
        match current.networks.get(id) {
            Some(network) if network.same_devices(wanted) => {
                update_network(id, network, wanted, &mut ops)
            }
            _ => {
                ops.push(Op::CreateNetwork {
                    network: id.clone(),
                    vni: wanted.vni,
                    vtep: wanted.vtep,
                });
                let empty = OverlayNetwork {
                    local: BTreeMap::new(),
                    remote: BTreeMap::new(),
                    ..wanted.clone()
                };
                update_network(id, &empty, wanted, &mut ops);
            }
        }
    }
    ops
}

fn remove_network(id: &str, network: &OverlayNetwork, ops: &mut Vec<Op>) {
    // The task links first: deleting the bridge would leave them unattached in the tasks.
    for task in network.local.keys() {
        ops.push(Op::DetachTask {
            network: id.to_owned(),
            task: task.clone(),
        });
    }
    ops.push(Op::DeleteNetwork {
        network: id.to_owned(),
    });
}

/// The ops between two states of a network whose devices stay.
fn update_network(id: &str, current: &OverlayNetwork, wanted: &OverlayNetwork, ops: &mut Vec<Op>) {
    let network = || id.to_owned();
    for (task, endpoint) in &current.local {
        if wanted.local.get(task) != Some(endpoint) {
            ops.push(Op::DetachTask {
                network: network(),
                task: task.clone(),
            });
        }
    }
    for address in current.remote.keys() {
        if !wanted.remote.contains_key(address) {
            ops.push(Op::RemoveRemote {
                network: network(),
                address: *address,
            });
        }
    }
    let (peers, wanted_peers) = (current.peers(), wanted.peers());
    for peer in peers.difference(&wanted_peers) {
        ops.push(Op::RemovePeer {
            network: network(),
            peer: *peer,
        });
    }
    for peer in wanted_peers.difference(&peers) {
        ops.push(Op::AddPeer {
            network: network(),
            peer: *peer,
        });
    }
    for (address, remote) in &wanted.remote {
        // A remote endpoint whose task moved to another node is replaced in place.
        if current.remote.get(address) != Some(remote) {
            ops.push(Op::AddRemote {
                network: network(),
                address: *address,
                vtep: remote.vtep,
            });
        }
    }
    for (task, endpoint) in &wanted.local {
        if current.local.get(task) != Some(endpoint) {
            ops.push(Op::AttachTask {
                network: network(),
                task: task.clone(),
                subnet: wanted.subnet,
                endpoint: endpoint.clone(),
            });
        }
    }
}

/// The MAC of an endpoint (a task's `eth0`, or its end of an overlay network) from its IPv4
/// address, as Docker makes it: `02:42` and the four octets (locally administered,
/// unicast). An address leased again after its task ended comes with the same MAC:
/// neighbours that cached it (the host, through the bridge, for up to a minute) still reach
/// the new task.
pub fn endpoint_mac(address: Ipv4Addr) -> String {
    let [a, b, c, d] = address.octets();
    format!("02:42:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The network's bridge on a node: `swo`, 5 hex digits of the node id's SHA-256 (so that
/// a node finds all of its devices after a restart), 5 of the network's with the node's.
pub fn overlay_bridge_name(node_id: &str, network: &str) -> String {
    format!("swo{}", node_network_suffix(node_id, network))
}

/// The network's VXLAN device on a node: `swx` and the same 10 hex digits as its bridge.
pub fn vxlan_name(node_id: &str, network: &str) -> String {
    format!("swx{}", node_network_suffix(node_id, network))
}

/// The node's end of a task's link to a network: `swy`, the node's 5 hex digits, 7 of the
/// node, network and task ids' SHA-256 (15 characters).
pub fn overlay_veth_name(node_id: &str, network: &str, task: &str) -> String {
    format!(
        "swy{}{}",
        node_digest(node_id),
        &hex_digest(format!("{node_id}\0{network}\0{task}").as_bytes())[..7]
    )
}

/// The task's end of its link to a network, inside its namespace: `ov` + 8 hex digits of
/// the network id (a task is on each network once; never `eth0`, the node bridge's).
pub fn task_interface_name(network: &str) -> String {
    format!("ov{}", &hex_digest(network.as_bytes())[..8])
}

/// The prefixes of every overlay link a node makes: what its teardown lists and removes.
fn node_link_prefixes(node_id: &str) -> [String; 3] {
    let node = node_digest(node_id);
    ["swo", "swx", "swy"].map(|kind| format!("{kind}{node}"))
}

fn node_digest(node_id: &str) -> String {
    hex_digest(format!("{node_id}\0overlay").as_bytes())[..5].to_owned()
}

fn node_network_suffix(node_id: &str, network: &str) -> String {
    let both = hex_digest(format!("{node_id}\0{network}").as_bytes());
    format!("{}{}", node_digest(node_id), &both[..5])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vtep(last: u8, port: u16) -> Vtep {
        Vtep {
            address: Ipv4Addr::new(198, 18, 0, last),
            port,
        }
    }

    fn network(vni: u32) -> OverlayNetwork {
        OverlayNetwork {
            vni,
            subnet: "10.20.0.0/24".parse().unwrap(),
            vtep: vtep(10, 4789),
            local: BTreeMap::new(),
            remote: BTreeMap::new(),
        }
    }

    fn local(last: u8) -> LocalEndpoint {
        LocalEndpoint {
            address: Ipv4Addr::new(10, 20, 0, last),
            netns: format!("/run/test/netns/t{last}").into(),
        }
    }

    fn address(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 20, 0, last)
    }

    fn state(networks: &[(&str, &OverlayNetwork)]) -> NodeOverlays {
        NodeOverlays {
            networks: networks
                .iter()
                .map(|(id, network)| (id.to_string(), (*network).clone()))
                .collect(),
        }
    }

    #[test]
    fn first_use_makes_the_devices_then_peers_remotes_and_tasks() {
        let mut net = network(4097);
        net.local.insert("t2".into(), local(2));
        net.remote.insert(
            address(3),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        net.remote.insert(
            address(4),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        let ops = diff(&NodeOverlays::default(), &state(&[("n1", &net)]));
        let n = || "n1".to_owned();
        assert_eq!(
            ops,
            vec![
                Op::CreateNetwork {
                    network: n(),
                    vni: 4097,
                    vtep: vtep(10, 4789)
                },
                // One flood entry per peer node, however many of its tasks are remote.
                Op::AddPeer {
                    network: n(),
                    peer: vtep(11, 4790)
                },
                Op::AddRemote {
                    network: n(),
                    address: address(3),
                    vtep: vtep(11, 4790)
                },
                Op::AddRemote {
                    network: n(),
                    address: address(4),
                    vtep: vtep(11, 4790)
                },
                Op::AttachTask {
                    network: n(),
                    task: "t2".into(),
                    subnet: net.subnet,
                    endpoint: local(2)
                },
            ]
        );
        // Applied, nothing is left to do.
        assert!(diff(&state(&[("n1", &net)]), &state(&[("n1", &net)])).is_empty());
    }

    #[test]
    fn last_use_detaches_the_tasks_and_removes_the_devices() {
        let mut net = network(4097);
        net.local.insert("t2".into(), local(2));
        net.remote.insert(
            address(3),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        let other = network(4098);
        let ops = diff(
            &state(&[("n1", &net), ("n2", &other)]),
            &state(&[("n2", &other)]),
        );
        assert_eq!(
            ops,
            vec![
                Op::DetachTask {
                    network: "n1".into(),
                    task: "t2".into()
                },
                Op::DeleteNetwork {
                    network: "n1".into()
                },
            ]
        );
    }

    #[test]
    fn endpoints_coming_and_going_touch_only_their_entries() {
        let mut before = network(4097);
        before.local.insert("t2".into(), local(2));
        before.local.insert("t5".into(), local(5));
        before.remote.insert(
            address(3),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        before.remote.insert(
            address(4),
            RemoteEndpoint {
                vtep: vtep(12, 4791),
            },
        );
        let mut after = before.clone();
        // t5 ends, t6 starts here; 10.20.0.4's node leaves the network (its only task
        // there ended) and 10.20.0.3's task is replaced by one at 10.20.0.7 on node 13.
        after.local.remove("t5");
        after.local.insert("t6".into(), local(6));
        after.remote.remove(&address(4));
        after.remote.remove(&address(3));
        after.remote.insert(
            address(7),
            RemoteEndpoint {
                vtep: vtep(13, 4792),
            },
        );
        let n = || "n1".to_owned();
        assert_eq!(
            diff(&state(&[("n1", &before)]), &state(&[("n1", &after)])),
            vec![
                Op::DetachTask {
                    network: n(),
                    task: "t5".into()
                },
                Op::RemoveRemote {
                    network: n(),
                    address: address(3)
                },
                Op::RemoveRemote {
                    network: n(),
                    address: address(4)
                },
                Op::RemovePeer {
                    network: n(),
                    peer: vtep(11, 4790)
                },
                Op::RemovePeer {
                    network: n(),
                    peer: vtep(12, 4791)
                },
                Op::AddPeer {
                    network: n(),
                    peer: vtep(13, 4792)
                },
                Op::AddRemote {
                    network: n(),
                    address: address(7),
                    vtep: vtep(13, 4792)
                },
                Op::AttachTask {
                    network: n(),
                    task: "t6".into(),
                    subnet: after.subnet,
                    endpoint: local(6)
                },
            ]
        );
    }

    #[test]
    fn a_remote_endpoint_moving_node_is_replaced_and_peers_follow() {
        let mut before = network(4097);
        before.remote.insert(
            address(3),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        before.remote.insert(
            address(4),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        let mut after = before.clone();
        after.remote.insert(
            address(4),
            RemoteEndpoint {
                vtep: vtep(12, 4791),
            },
        );
        let n = || "n1".to_owned();
        assert_eq!(
            diff(&state(&[("n1", &before)]), &state(&[("n1", &after)])),
            vec![
                // Node 11 still has 10.20.0.3: its flood entry stays.
                Op::AddPeer {
                    network: n(),
                    peer: vtep(12, 4791)
                },
                Op::AddRemote {
                    network: n(),
                    address: address(4),
                    vtep: vtep(12, 4791)
                },
            ]
        );
    }

    #[test]
    fn a_changed_vni_subnet_or_vtep_makes_the_devices_again() {
        let mut before = network(4097);
        before.local.insert("t2".into(), local(2));
        let changes: [fn(&mut OverlayNetwork); 3] = [
            |net| net.vni = 4099,
            |net| net.subnet = "10.30.0.0/24".parse().unwrap(),
            |net| net.vtep.port = 4800,
        ];
        for change in changes {
            let mut after = before.clone();
            change(&mut after);
            let ops = diff(&state(&[("n1", &before)]), &state(&[("n1", &after)]));
            assert_eq!(
                ops,
                vec![
                    Op::DetachTask {
                        network: "n1".into(),
                        task: "t2".into()
                    },
                    Op::DeleteNetwork {
                        network: "n1".into()
                    },
                    Op::CreateNetwork {
                        network: "n1".into(),
                        vni: after.vni,
                        vtep: after.vtep
                    },
                    Op::AttachTask {
                        network: "n1".into(),
                        task: "t2".into(),
                        subnet: after.subnet,
                        endpoint: local(2)
                    },
                ],
                "{after:?}"
            );
        }
    }

    #[test]
    fn a_task_whose_endpoint_changed_is_attached_again() {
        let mut before = network(4097);
        before.local.insert("t2".into(), local(2));
        let mut after = before.clone();
        after.local.insert("t2".into(), local(9));
        assert_eq!(
            diff(&state(&[("n1", &before)]), &state(&[("n1", &after)])),
            vec![
                Op::DetachTask {
                    network: "n1".into(),
                    task: "t2".into()
                },
                Op::AttachTask {
                    network: "n1".into(),
                    task: "t2".into(),
                    subnet: after.subnet,
                    endpoint: local(9)
                },
            ]
        );
    }

    #[test]
    fn names_fit_and_differ_by_node_network_and_task() {
        let names = [
            overlay_bridge_name("node-a", "net-1"),
            vxlan_name("node-a", "net-1"),
            overlay_veth_name("node-a", "net-1", "t1"),
            task_interface_name("net-1"),
        ];
        for name in &names {
            assert!(name.len() <= 15, "{name}");
        }
        assert_eq!(names[0].len(), 13);
        assert_eq!(names[2].len(), 15);
        assert_ne!(names[0], overlay_bridge_name("node-b", "net-1"));
        assert_ne!(names[0], overlay_bridge_name("node-a", "net-2"));
        assert_ne!(names[1], vxlan_name("node-b", "net-1"));
        assert_ne!(names[2], overlay_veth_name("node-b", "net-1", "t1"));
        assert_ne!(names[2], overlay_veth_name("node-a", "net-2", "t1"));
        assert_ne!(names[2], overlay_veth_name("node-a", "net-1", "t2"));
        assert_ne!(names[3], task_interface_name("net-2"));
        // A node's links all start with its prefixes; another node's do not.
        let prefixes = node_link_prefixes("node-a");
        for name in &names[..3] {
            assert!(prefixes.iter().any(|p| name.starts_with(p)), "{name}");
        }
        for name in [
            overlay_bridge_name("node-b", "net-1"),
            vxlan_name("node-b", "net-1"),
            overlay_veth_name("node-b", "net-1", "t1"),
        ] {
            assert!(!prefixes.iter().any(|p| name.starts_with(p)), "{name}");
        }
        assert_ne!(names[3], "eth0");
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            overlay_bridge_name("ab", "c"),
            overlay_bridge_name("a", "bc")
        );
    }

    #[test]
    fn macs_follow_addresses_as_docker_makes_them() {
        assert_eq!(
            endpoint_mac(Ipv4Addr::new(10, 0, 0, 2)),
            "02:42:0a:00:00:02"
        );
        assert_eq!(
            endpoint_mac(Ipv4Addr::new(198, 19, 231, 255)),
            "02:42:c6:13:e7:ff"
        );
    }

    #[test]
    fn the_desired_state_reads_from_json() {
        let json = r#"{"networks": {"n1": {
            "vni": 4097, "subnet": "10.20.0.0/24",
            "vtep": {"address": "198.18.0.10", "port": 4789},
            "local": {"t2": {"address": "10.20.0.2", "netns": "/run/test/netns/t2"}},
            "remote": {"10.20.0.3": {"vtep": {"address": "198.18.0.11", "port": 4790}}}
        }}}"#;
        let parsed: NodeOverlays = serde_json::from_str(json).unwrap();
        let mut net = network(4097);
        net.local.insert("t2".into(), local(2));
        net.remote.insert(
            address(3),
            RemoteEndpoint {
                vtep: vtep(11, 4790),
            },
        );
        assert_eq!(parsed, state(&[("n1", &net)]));
    }

    #[test]
    fn a_node_carries_the_networks_of_its_made_tasks_with_every_other_node_as_remote() {
        use swarm_api::endpoints::{NetworkEndpoints, TaskEndpoint};
        let endpoint = |node: &str, vtep: Option<Vtep>, last: u8| TaskEndpoint {
            service_id: "web".into(),
            node_id: node.into(),
            vtep,
            address: address(last),
            name: format!("web.{last}"),
            serving: true,
        };
        let front = NetworkEndpoints {
            id: "front-id".into(),
            vni: 4097,
            subnet: "10.20.0.0/24".parse().unwrap(),
            gateway: address(1),
            internal: false,
            services: BTreeMap::new(),
            tasks: BTreeMap::from([
                ("t2".to_owned(), endpoint("a", Some(vtep(10, 4789)), 2)),
                ("t3".to_owned(), endpoint("b", Some(vtep(11, 4790)), 3)),
                ("t4".to_owned(), endpoint("c", None, 4)),
                ("t5".to_owned(), endpoint("b", Some(vtep(11, 4790)), 5)),
            ]),
        };
        let view = NetworkView {
            networks: BTreeMap::from([("front".to_owned(), front)]),
            mesh: Default::default(),
        };
        let made = |task: &str, last: u8| {
            (
                task.to_owned(),
                LocalTask {
                    netns: format!("/run/test/netns/t{last}").into(),
                    addresses: BTreeMap::from([("front".to_owned(), address(last))]),
                },
            )
        };
        assert_eq!(
            node_overlays(&view, "a", &BTreeMap::new()),
            NodeOverlays::default(),
            "no task made here yet: nothing carried"
        );
        let mut expected = network(4097);
        expected.local.insert("t2".into(), local(2));
        for last in [3, 5] {
            let vtep = vtep(11, 4790);
            expected
                .remote
                .insert(address(last), RemoteEndpoint { vtep });
        }
        let local_tasks = BTreeMap::from([made("t2", 2)]);
        assert_eq!(
            node_overlays(&view, "a", &local_tasks),
            state(&[("front-id", &expected)]),
            "the node of t4 has no known VTEP: no entry for it"
        );
        assert_eq!(
            node_overlays(&view, "c", &BTreeMap::from([made("t4", 4)])),
            NodeOverlays::default(),
            "its own VTEP unknown: not carried yet"
        );
        let stopping_here = BTreeMap::from([made("t2", 2), made("t9", 5)]);
        let carried = node_overlays(&view, "a", &stopping_here);
        let front = &carried.networks["front-id"];
        assert_eq!(front.remote.keys().collect::<Vec<_>>(), [&address(3)]);
        assert_eq!(front.local.len(), 2);
    }
}
