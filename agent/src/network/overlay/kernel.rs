//! The kernel side of the overlay: each [`Op`] as `ip`/`bridge` commands in the node's
//! network namespace (and `nsenter --net=PATH ip` inside a task's). Every op is
//! idempotent, what exists or is gone already is not an error, so a reconcile that failed
//! half-way is run again from the same current state.

use super::{
    LocalEndpoint, NodeOverlays, OVERLAY_MTU, Op, Vtep, diff, endpoint_mac, node_link_prefixes,
    overlay_bridge_name, overlay_veth_name, task_interface_name, vxlan_name,
};
use crate::network::bridge::Rule;
use crate::network::command::{delete_link, run};
use crate::network::{NetworkError, every_part};

use ipnet::Ipv4Net;

/// The flooding entry's MAC: frames with no entry of their own (broadcast, unknown).
const ALL_ZEROS: &str = "00:00:00:00:00:00";

/// A node's overlay networks: what it has made, and the reconcile towards a desired state.
/// Calls block on short subprocesses (a few ms each): from async code, call them in
/// `spawn_blocking`.
#[derive(Debug)]
pub struct Overlay {
    node_id: String,
    current: NodeOverlays,
}

impl Overlay {
    /// A node with no overlay network made yet.
    pub fn new(node_id: impl Into<String>) -> Overlay {
        Overlay {
            node_id: node_id.into(),
            current: NodeOverlays::default(),
        }
    }

    /// The state the kernel was last brought to.
    pub fn current(&self) -> &NodeOverlays {
        &self.current
    }

    /// Inserts again whichever FORWARD rules of the node's overlay bridges are missing:
    /// after a firewall reload took them.
    pub fn restore_rules(&self) -> Result<(), NetworkError> {
        for network in self.current.networks.keys() {
            Rule::between_ports(&overlay_bridge_name(&self.node_id, network)).ensure()?;
        }
        Ok(())
    }

    /// Brings the node's overlay devices to `desired`. On an error the current state is
    /// kept: the next reconcile runs the same (idempotent) ops again.
    pub fn reconcile(&mut self, desired: NodeOverlays) -> Result<(), NetworkError> {
        let ops = diff(&self.current, &desired);
        // Remote endpoints' entries go in batches: one `bridge` and one `ip` process per
        // run of them, not two per endpoint (3,000 endpoints took 7 s one by one).
        let mut entries = RemoteEntries::default();
        for op in &ops {
            if !entries.take(&self.node_id, op) {
                entries.flush()?;
                apply(&self.node_id, op)?;
            }
        }
        entries.flush()?;
        if !ops.is_empty() {
            tracing::debug!(node = self.node_id, ops = ops.len(), "overlay reconciled");
        }
        self.current = desired;
        Ok(())
    }
}

impl Overlay {
    /// Removes every overlay link and FORWARD rule of this node, whatever state it knows
    /// (found by the node's name prefixes): for a node leaving, and after a daemon restart,
    /// before the first reconcile (which then makes the desired state afresh, no device
    /// with stale settings kept). Another node's links on the machine are left alone.
    pub fn teardown(&mut self) -> Result<(), NetworkError> {
        let prefixes = node_link_prefixes(&self.node_id);
        let ours = |name: &str| prefixes.iter().any(|prefix| name.starts_with(prefix));
        // Task links first, then VXLAN devices, then bridges: nothing is left unattached.
        let (listed, mut links) = match run("ip", &["-o", "link", "show"], None) {
            Ok(listing) => (
                Ok(()),
                listing
                    .lines()
                    .filter_map(link_name)
                    .filter(|name| ours(name))
                    .map(str::to_owned)
                    .collect(),
            ),
            Err(error) => (Err(error), Vec::new()),
        };
        links.sort_by_key(|name: &String| std::cmp::Reverse(name[..3].to_owned()));
        // Each link and rule is tried whatever another's outcome (a node leaving has no
        // second chance); the first error is returned.
        let rules = || {
            let listing = run("iptables", &["-w", "5", "-S", "FORWARD"], None)?;
            every_part(
                forward_rule_bridges(&listing)
                    .filter(|bridge| ours(bridge))
                    .map(|bridge| Rule::between_ports(bridge).remove()),
            )
        };
        every_part(
            std::iter::once(listed)
                .chain(links.iter().map(|name| delete_link(name)))
                .chain(std::iter::once_with(rules)),
        )?;
        tracing::info!(
            node = self.node_id,
            links = links.len(),
            "overlay torn down"
        );
        self.current = NodeOverlays::default();
        Ok(())
    }
}

/// The name in a line of `ip -o link show` ("7: swy0123…@if2: <…> …").
fn link_name(line: &str) -> Option<&str> {
    let name = line.split(": ").nth(1)?;
    Some(name.split('@').next().unwrap_or(name))
}

/// The bridges of the ACCEPT rules in `iptables -S FORWARD` output ("-A FORWARD -i B -o B
/// -j ACCEPT").
fn forward_rule_bridges(rules: &str) -> impl Iterator<Item = &str> {
    rules.lines().filter_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["-A", "FORWARD", "-i", input, "-o", output, "-j", "ACCEPT"] if input == output => {
                Some(*input)
            }
            _ => None,
        }
    })
}

/// Applies one op for node `node_id` in the current network namespace.
pub fn apply(node_id: &str, op: &Op) -> Result<(), NetworkError> {
    match op {
        Op::CreateNetwork { network, vni, vtep } => create_network(node_id, network, *vni, *vtep),
        Op::DeleteNetwork { network } => delete_network(node_id, network),
        Op::AddPeer { network, peer } => tolerate(
            bridge_fdb(
                "append",
                ALL_ZEROS,
                &vxlan_name(node_id, network),
                Some(*peer),
            ),
            "File exists",
        ),
        Op::RemovePeer { network, peer } => tolerate(
            bridge_fdb("del", ALL_ZEROS, &vxlan_name(node_id, network), Some(*peer)),
            "No such file or directory",
        ),
        Op::AddRemote { .. } | Op::RemoveRemote { .. } => {
            let mut entries = RemoteEntries::default();
            entries.take(node_id, op);
            entries.flush()
        }
        Op::AttachTask {
            network,
            task,
            subnet,
            endpoint,
        } => attach_task(node_id, network, task, *subnet, endpoint),
        Op::DetachTask { network, task } => {
            // Deleting the node's end deletes the task's end with it.
            delete_link(&overlay_veth_name(node_id, network, task))
        }
    }
}

/// The forwarding and neighbour entries of remote endpoints, gathered from a run of ops
/// and written by one `bridge -batch` and one `ip -batch` each for removals and additions.
/// Removals come first: in a diff they precede the additions, and an endpoint removed and
/// added again ends added.
#[derive(Debug, Default)]
struct RemoteEntries {
    removed_fdb: String,
    removed_neigh: String,
    added_fdb: String,
    added_neigh: String,
}

impl RemoteEntries {
    /// Takes `op` if it is a remote endpoint's; whether it did.
    fn take(&mut self, node_id: &str, op: &Op) -> bool {
        match op {
            Op::AddRemote {
                network,
                address,
                vtep,
            } => {
                let device = vxlan_name(node_id, network);
                let mac = endpoint_mac(*address);
                let (dst, port) = (vtep.address, vtep.port);
                self.added_fdb.push_str(&format!(
                    "fdb replace {mac} dev {device} dst {dst} port {port} self permanent\n"
                ));
                self.added_neigh.push_str(&format!(
                    "neigh replace {address} lladdr {mac} dev {device} nud permanent\n"
                ));
                true
            }
            Op::RemoveRemote { network, address } => {
                let device = vxlan_name(node_id, network);
                let mac = endpoint_mac(*address);
                self.removed_neigh
                    .push_str(&format!("neigh del {address} dev {device}\n"));
                self.removed_fdb
                    .push_str(&format!("fdb del {mac} dev {device}\n"));
                true
            }
            _ => false,
        }
    }

    /// Writes what was taken (an entry already gone is not an error) and empties itself.
    fn flush(&mut self) -> Result<(), NetworkError> {
        let RemoteEntries {
            removed_fdb,
            removed_neigh,
            added_fdb,
            added_neigh,
        } = std::mem::take(self);
        for (program, script) in [("ip", removed_neigh), ("bridge", removed_fdb)] {
            if !script.is_empty() {
                let removed = run(program, &["-force", "-batch", "-"], Some(&script)).map(drop);
                tolerate_each(removed, "No such file or directory")?;
            }
        }
        for (program, script) in [("bridge", added_fdb), ("ip", added_neigh)] {
            if !script.is_empty() {
                run(program, &["-batch", "-"], Some(&script))?;
            }
        }
        Ok(())
    }
}

/// Makes the network's devices; on a failure removes what it made, so that a network the
/// current state does not hold has no devices left behind.
fn create_network(node_id: &str, network: &str, vni: u32, vtep: Vtep) -> Result<(), NetworkError> {
    make_devices(node_id, network, vni, vtep).inspect_err(|_| {
        if let Err(cleanup) = delete_network(node_id, network) {
            tracing::warn!(node = node_id, network, error = %cleanup, "cleanup after a failed overlay create failed");
        }
    })
}

fn make_devices(node_id: &str, network: &str, vni: u32, vtep: Vtep) -> Result<(), NetworkError> {
    let bridge = overlay_bridge_name(node_id, network);
    let vxlan = vxlan_name(node_id, network);
    let mtu = OVERLAY_MTU.to_string();
    tolerate(
        run(
            "ip",
            &[
                "link", "add", "name", &bridge, "mtu", &mtu, "type", "bridge",
            ],
            None,
        )
        .map(drop),
        "File exists",
    )?;
    let (vni, local, port) = (
        vni.to_string(),
        vtep.address.to_string(),
        vtep.port.to_string(),
    );
    tolerate(
        run(
            "ip",
            &[
                "link",
                "add",
                "name",
                &vxlan,
                "mtu",
                &mtu,
                "type",
                "vxlan",
                "id",
                &vni,
                "local",
                &local,
                "dstport",
                &port,
                "nolearning",
                "proxy",
            ],
            None,
        )
        .map(drop),
        "File exists",
    )?;
    let script = format!("link set {vxlan} master {bridge} up\nlink set {bridge} up\n");
    run("ip", &["-batch", "-"], Some(&script))?;
    Rule::between_ports(&bridge).ensure()?;
    tracing::info!(
        node = node_id,
        network,
        bridge,
        vxlan,
        "overlay network made"
    );
    Ok(())
}

/// Removes the network's devices (their entries and the tasks' links go with them) and
/// its FORWARD rule.
fn delete_network(node_id: &str, network: &str) -> Result<(), NetworkError> {
    let bridge = overlay_bridge_name(node_id, network);
    delete_link(&vxlan_name(node_id, network))?;
    delete_link(&bridge)?;
    Rule::between_ports(&bridge).remove()?;
    Ok(())
}

/// Links the task to the network; on a failure removes the link again.
fn attach_task(
    node_id: &str,
    network: &str,
    task: &str,
    subnet: Ipv4Net,
    endpoint: &LocalEndpoint,
) -> Result<(), NetworkError> {
    link_task(node_id, network, task, subnet, endpoint).inspect_err(|_| {
        if let Err(cleanup) = delete_link(&overlay_veth_name(node_id, network, task)) {
            tracing::warn!(node = node_id, network, task, error = %cleanup, "cleanup after a failed overlay attach failed");
        }
    })
}

fn link_task(
    node_id: &str,
    network: &str,
    task: &str,
    subnet: Ipv4Net,
    endpoint: &LocalEndpoint,
) -> Result<(), NetworkError> {
    let veth = overlay_veth_name(node_id, network, task);
    let inside = task_interface_name(network);
    let netns = endpoint.netns.to_str().ok_or_else(|| NetworkError::Io {
        action: "cannot pass to ip a namespace path that is not UTF-8:",
        path: endpoint.netns.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    // A link left by an attach that failed half-way is made again, whole.
    delete_link(&veth)?;
    let mtu = OVERLAY_MTU.to_string();
    // One command makes both ends, the node's on the bridge and up, the task's born in
    // its namespace: a crash leaves both or neither.
    run(
        "ip",
        &[
            "link",
            "add",
            "name",
            &veth,
            "mtu",
            &mtu,
            "up",
            "master",
            &overlay_bridge_name(node_id, network),
            "type",
            "veth",
            "peer",
            "name",
            &inside,
            "mtu",
            &mtu,
            "address",
            &endpoint_mac(endpoint.address),
            "netns",
            netns,
        ],
        None,
    )?;
    let address = Ipv4Net::new(endpoint.address, subnet.prefix_len())
        .expect("the prefix comes from a valid subnet");
    // The address brings the subnet's route through the link; the default route stays.
    let script = format!("address replace {address} dev {inside}\nlink set {inside} up\n");
    let net_arg = format!("--net={netns}");
    run("nsenter", &[&net_arg, "ip", "-batch", "-"], Some(&script))?;
    tracing::debug!(node = node_id, network, task, %address, "task attached to overlay");
    Ok(())
}

/// `bridge fdb ACTION MAC dev DEVICE [dst ADDRESS port PORT]` on the VXLAN device's own
/// table (`self`), entries never aged out (`permanent`).
fn bridge_fdb(
    action: &str,
    mac: &str,
    device: &str,
    vtep: Option<Vtep>,
) -> Result<(), NetworkError> {
    let (address, port) = vtep
        .map(|vtep| (vtep.address.to_string(), vtep.port.to_string()))
        .unwrap_or_default();
    let mut args = vec!["fdb", action, mac, "dev", device];
    if vtep.is_some() {
        args.extend(["dst", &address, "port", &port]);
    }
    if action != "del" {
        args.extend(["self", "permanent"]);
    }
    run("bridge", &args, None).map(drop)
}

/// `result`, with a command failure whose stderr says `already` (the state is there, or
/// gone, already) counted as success.
fn tolerate(result: Result<(), NetworkError>, already: &str) -> Result<(), NetworkError> {
    match result {
        Err(NetworkError::Command { stderr, .. }) if stderr.contains(already) => Ok(()),
        other => other,
    }
}

/// `result` of a `-force` batch, with a failure whose every line is the batch's own
/// count (`Command failed -:N`) or says `already` taken as success.
fn tolerate_each(result: Result<(), NetworkError>, already: &str) -> Result<(), NetworkError> {
    match result {
        Err(NetworkError::Command { stderr, .. })
            if stderr
                .lines()
                .all(|line| line.contains(already) || line.starts_with("Command failed")) =>
        {
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_and_rules_are_parsed() {
        let links = "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue\n\
                     9: swo0123456789: <BROADCAST,MULTICAST,UP> mtu 1450\n\
                     11: swy0123456789ab@if2: <BROADCAST,MULTICAST,UP> mtu 1450 master swo0123456789\n";
        let names: Vec<&str> = links.lines().filter_map(link_name).collect();
        assert_eq!(names, ["lo", "swo0123456789", "swy0123456789ab"]);
        let rules = "-P FORWARD ACCEPT\n\
                     -A FORWARD -i swo0123456789 -o swo0123456789 -j ACCEPT\n\
                     -A FORWARD -i swb01234567 -o swb01234567 -j ACCEPT\n\
                     -A FORWARD -i eth0 -o swo0123456789 -j ACCEPT\n";
        let bridges: Vec<&str> = forward_rule_bridges(rules).collect();
        assert_eq!(bridges, ["swo0123456789", "swb01234567"]);
    }

    #[test]
    fn tolerate_passes_only_the_named_failure() {
        let failure = |stderr: &str| NetworkError::Command {
            command: "bridge fdb append".into(),
            status: "exit status: 2".into(),
            stderr: stderr.into(),
        };
        assert!(
            tolerate(
                Err(failure("RTNETLINK answers: File exists")),
                "File exists"
            )
            .is_ok()
        );
        assert!(
            tolerate(
                Err(failure("RTNETLINK answers: Invalid argument")),
                "File exists"
            )
            .is_err()
        );
        assert!(tolerate(Ok(()), "File exists").is_ok());
    }

    #[test]
    fn a_batch_is_tolerated_only_when_every_failure_is_the_named_one() {
        let failure = |stderr: &str| NetworkError::Command {
            command: "ip -force -batch -".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        let missing = "RTNETLINK answers: No such file or directory\nCommand failed -:1\n\
                       RTNETLINK answers: No such file or directory\nCommand failed -:3";
        assert!(tolerate_each(Err(failure(missing)), "No such file or directory").is_ok());
        let mixed = "RTNETLINK answers: No such file or directory\nCommand failed -:1\n\
                     Cannot find device \"swx0\"\nCommand failed -:2";
        assert!(tolerate_each(Err(failure(mixed)), "No such file or directory").is_err());
    }
}
