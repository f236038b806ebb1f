//! The kernel side of the mesh: the ruleset (`nft -f`), the iptables rule that lets its
//! connections through FORWARD and the sysctl settings it needs, in the node's network
//! namespace. A reconcile sets what the desired state needs; run again after a failure, it
//! converges.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use swarm_api::endpoints::NetworkView;

use super::{
    Held, MARK_TAG, MARK_TAG_MASK, NodeMesh, OPENED_SET, PortKey, Proxies, RelayedBytes, render,
    table_name,
};
use crate::network::bridge::{Rule, bridge_name};
use crate::network::command::{delete_table, run, unless_tool_missing};
use crate::network::{NetworkError, every_part};

/// A node's mesh: what it has set, and the reconcile towards a desired state. Calls block
/// on short subprocesses: from async code, call them in `spawn_blocking`.
#[derive(Debug)]
pub struct Mesh {
    node_id: String,
    current: NodeMesh,
    /// The kernel holds nothing of this node's mesh (an empty reconcile went through).
    clean: bool,
    /// The sysctl settings the last reconcile made (and the FORWARD rule with them): set
    /// again only when they change (a process fewer on the path from a task's exit to its
    /// rules gone).
    settings: Vec<String>,
    /// The node's data path address and the device holding it, on which this node set
    /// `route_localnet`: set back when it is no longer the data path device, or the mesh
    /// goes.
    opened: Option<(Ipv4Addr, String)>,
    /// What an earlier process opened was looked for (`recall`).
    recalled: bool,
}

impl Mesh {
    /// A node that has set nothing yet (a restarted daemon's first reconcile replaces the
    /// ruleset: open connections keep their conntrack entries).
    pub fn new(node_id: impl Into<String>) -> Mesh {
        Mesh {
            node_id: node_id.into(),
            current: NodeMesh::default(),
            clean: false,
            settings: Vec::new(),
            opened: None,
            recalled: false,
        }
    }

    /// Brings the node's mesh to `desired`. On an error the state it had is kept, and the
    /// next reconcile does the whole work again.
    pub fn reconcile(&mut self, desired: NodeMesh) -> Result<(), NetworkError> {
        if desired == NodeMesh::default() {
            if !self.clean {
                self.teardown()?;
            }
            return Ok(());
        }
        let node = self.node_id.clone();
        let outcome = self.set(&desired);
        if outcome.is_err() {
            // Whatever was half set is set again from nothing.
            self.current = NodeMesh::default();
            self.clean = false;
            self.settings.clear();
        }
        outcome?;
        tracing::debug!(
            node,
            ports = desired.ports.len(),
            nodes = desired.nodes.as_ref().map_or(0, |n| n.others.len() + 1),
            "mesh reconciled"
        );
        self.current = desired;
        self.clean = false;
        Ok(())
    }

    fn set(&mut self, desired: &NodeMesh) -> Result<(), NetworkError> {
        self.recall();
        let node = self.node_id.clone();
        let node = node.as_str();
        let open = match desired.nodes.as_ref().filter(|n| !n.others.is_empty()) {
            Some(nodes) => match &self.opened {
                Some((address, _)) if *address == nodes.own => self.opened.clone(),
                // Looked up again at each reconcile while no device holds it (yet).
                _ => device_of(nodes.own)?.map(|device| (nodes.own, device)),
            },
            None => None,
        };
        // The ruleset first: its `guard` chain is in place before `route_localnet` opens
        // the data path device below. The device is recorded in it, for a restarted
        // daemon's `Mesh` to shut it.
        let mut script = render(node, desired, &self.current);
        let table = table_name(node);
        script.push_str(&format!("flush set ip {table} {OPENED_SET}\n"));
        if let Some((address, device)) = &open {
            script.push_str(&format!(
                "add element ip {table} {OPENED_SET} {{ {address} . \"{device}\" }}\n"
            ));
        }
        run("nft", &["-f", "-"], Some(&script))?;
        // A client on the node itself (127.0.0.1) reaches tasks through DNAT: the kernel
        // routes such packets out of a device, and their answers in, only with
        // `route_localnet` there: the node bridge's for its own tasks, the data path
        // device's for other nodes' (the ruleset's `guard` chain drops what else that would
        // let in). Keys in the slash form: a device name may hold a dot (`eth0.100`).
        let bridge = bridge_name(node);
        let mut settings = vec!["net.ipv4.ip_forward=1".to_owned()];
        if std::path::Path::new("/proc/sys/net/ipv4/conf")
            .join(&bridge)
            .exists()
        {
            settings.push(format!("net/ipv4/conf/{bridge}/route_localnet=1"));
        }
        if let Some((_, device)) = &open {
            settings.push(format!("net/ipv4/conf/{device}/route_localnet=1"));
        }
        if self.opened != open {
            self.close()?;
        }
        if settings != self.settings {
            let mut args = vec!["-q", "-w"];
            args.extend(settings.iter().map(String::as_str));
            run("sysctl", &args, None)?;
            forward_rule(node).ensure()?;
            self.settings = settings;
        }
        self.opened = open;
        Ok(())
    }

    /// Learns, once, the data path device a process before this one opened, as its ruleset
    /// recorded it (a restarted daemon's `Mesh` starts knowing none): shut when no longer
    /// opened, or at teardown.
    fn recall(&mut self) {
        if std::mem::replace(&mut self.recalled, true) || self.opened.is_some() {
            return;
        }
        let table = table_name(&self.node_id);
        if let Ok(json) = run(
            "nft",
            &["-j", "list", "set", "ip", &table, OPENED_SET],
            None,
        ) {
            self.opened = opened_in(&json);
        }
    }

    /// Forgets what this node set: the kernel lost it (a firewall reload), and the next
    /// reconcile sets it all again (the ruleset, the sysctls, the FORWARD rule).
    pub fn forget(&mut self) {
        self.current = NodeMesh::default();
        self.clean = false;
        self.settings.clear();
    }

    /// Sets `route_localnet` back on the device this node opened, if any (gone with its
    /// device: nothing to do).
    fn close(&mut self) -> Result<(), NetworkError> {
        match self.opened.take() {
            Some((_, device)) => shut_route_localnet(&device),
            None => Ok(()),
        }
    }

    /// Removes the node's rules and table, whatever state it knows: for a node leaving, or
    /// a mesh with nothing published.
    /// Each part is tried whatever another's outcome (a node leaving has no second chance);
    /// the first error is returned.
    pub fn teardown(&mut self) -> Result<(), NetworkError> {
        self.recall();
        // `route_localnet` shut first, while the `guard` chain is still there: on the data
        // path device, and on the node bridge, where a task (it has CAP_NET_RAW) could
        // otherwise reach the node's loopback services through its gateway.
        let closed = self.close();
        let node = self.node_id.as_str();
        let bridge_closed = shut_route_localnet(&bridge_name(node));
        let rule = || unless_tool_missing(forward_rule(node).remove());
        let table = || unless_tool_missing(delete_table(&table_name(node)));
        every_part(
            [closed, bridge_closed]
                .into_iter()
                .chain(std::iter::once_with(rule))
                .chain(std::iter::once_with(table)),
        )?;
        self.current = NodeMesh::default();
        self.clean = true;
        self.settings.clear();
        Ok(())
    }
}

/// The FORWARD rule of node `node`'s mesh (the policy is DROP where Docker's engine ran):
/// the connections its rules marked go through, both ways (a client's to another node's
/// task leaves by the device it came in by, which no bridge rule covers). Named by the
/// node, so that a node leaving takes only its own.
fn forward_rule(node: &str) -> Rule {
    let mark = format!("{MARK_TAG:#010x}/{MARK_TAG_MASK:#010x}");
    let comment = table_name(node);
    Rule::filter_forward(&[
        "-m",
        "connmark",
        "--mark",
        &mark,
        "-m",
        "comment",
        "--comment",
        &comment,
        "-j",
        "ACCEPT",
    ])
}

/// Sets `route_localnet` back to 0 on `device` (gone with its device: nothing to do). Keys
/// in the slash form: a device name may hold a dot (`eth0.100`).
fn shut_route_localnet(device: &str) -> Result<(), NetworkError> {
    if !std::path::Path::new("/proc/sys/net/ipv4/conf")
        .join(device)
        .exists()
    {
        return Ok(());
    }
    let setting = format!("net/ipv4/conf/{device}/route_localnet=0");
    run("sysctl", &["-q", "-w", &setting], None).map(drop)
}

/// The `opened` set's element in `nft -j list set` output: the data path address and
/// device a node opened.
fn opened_in(json: &str) -> Option<(Ipv4Addr, String)> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    value["nftables"].as_array()?.iter().find_map(|item| {
        let concat = item["set"]["elem"].get(0)?["concat"].as_array()?;
        let address = concat.first()?.as_str()?.parse().ok()?;
        Some((address, concat.get(1)?.as_str()?.to_owned()))
    })
}

/// The device that holds `address` (the node's data path address), if one does: its
/// connections to other nodes leave by it.
fn device_of(address: Ipv4Addr) -> Result<Option<String>, NetworkError> {
    let listing = run(
        "ip",
        &[
            "-o",
            "-4",
            "address",
            "show",
            "to",
            &format!("{address}/32"),
        ],
        None,
    )?;
    Ok(device_in(&listing))
}

/// The device of the first address in `ip -o -4 address show` output ("2: eth0    inet …").
fn device_in(listing: &str) -> Option<String> {
    listing.split_whitespace().nth(1).map(str::to_owned)
}

/// What the node's mesh counted since its table was made: the connections each port's
/// rules sent on (by protocol and port), the bytes of its connections each way, and the
/// connections refused because another node sent them to a port with no task here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshCounters {
    pub connections: BTreeMap<(swarm_api::spec::Protocol, u16), u64>,
    pub bytes: BTreeMap<(swarm_api::spec::Protocol, u16, super::Direction), u64>,
    pub refused: u64,
}

/// Reads node `node_id`'s counters from the kernel; none while it has no mesh table.
pub fn counters(node_id: &str) -> Result<MeshCounters, NetworkError> {
    let table = table_name(node_id);
    match run(
        "nft",
        &["-j", "list", "counters", "table", "ip", &table],
        None,
    ) {
        Ok(json) => Ok(parse_counters(&json)),
        Err(NetworkError::Command { stderr, .. }) if stderr.contains("No such file") => {
            Ok(MeshCounters::default())
        }
        Err(error) => Err(error),
    }
}

/// The counters of `nft -j list counters` output.
fn parse_counters(json: &str) -> MeshCounters {
    use swarm_api::spec::Protocol;
    let value: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut counters = MeshCounters::default();
    for item in value["nftables"].as_array().into_iter().flatten() {
        let counter = &item["counter"];
        let (Some(name), Some(packets), Some(bytes)) = (
            counter["name"].as_str(),
            counter["packets"].as_u64(),
            counter["bytes"].as_u64(),
        ) else {
            continue;
        };
        if name == super::REFUSED_COUNTER {
            counters.refused = packets;
            continue;
        }
        let parts: Vec<&str> = name.split('_').collect();
        let (kind, protocol, port, direction) = match parts[..] {
            [kind, protocol, port] => (kind, protocol, port, None),
            [kind, protocol, port, direction] => (kind, protocol, port, Some(direction)),
            _ => continue,
        };
        let protocol = match protocol {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => continue,
        };
        let Ok(port) = port.parse() else {
            continue;
        };
        match (kind, direction) {
            ("conn", None) => {
                counters.connections.insert((protocol, port), packets);
            }
            ("bytes", Some("in")) => {
                counters
                    .bytes
                    .insert((protocol, port, super::Direction::In), bytes);
            }
            ("bytes", Some("out")) => {
                counters
                    .bytes
                    .insert((protocol, port, super::Direction::Out), bytes);
            }
            _ => {}
        }
    }
    counters
}

/// How long the follower waits before it tries again after a failed reconcile, doubled at
/// each failure in a row up to `RETRY_MAX`: a node that cannot set its mesh (no nft, say)
/// does not spin.
const RETRY: std::time::Duration = std::time::Duration::from_millis(500);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(8);

/// Keeps the node's mesh on its endpoint table and the addresses of its tasks (each
/// address's task id, by `task_of`): a reconcile
/// at every change that changes the desired state, again after a wait while one fails.
/// The ports another process on the node holds are sent on `taken` at each change, and
/// tried again after a wait until the node holds them. The userspace path counts the
/// bytes it relays into `relayed`.
/// At each change of `reloads` (a firewall reload took the node's rules) everything is set
/// again. The first reconcile waits for a view not seen yet (`views` marked changed, or its
/// next change): a restarted daemon's worker has none before its first assignment, and
/// the ports the last process published stay until it comes. Returns when `stop` completes
/// or the view's sender goes (the worker stopped), leaving the kernel as it is, once a
/// reconcile under way is done: the tasks outlive a daemon restart, and so do their
/// published ports.
#[allow(clippy::too_many_arguments)]
pub async fn follow<T: Send + Sync + 'static>(
    node_id: String,
    mut views: tokio::sync::watch::Receiver<NetworkView>,
    mut addresses: tokio::sync::watch::Receiver<BTreeMap<Ipv4Addr, T>>,
    task_of: fn(&T) -> &str,
    taken: tokio::sync::watch::Sender<std::collections::BTreeSet<PortKey>>,
    relayed: RelayedBytes,
    mut reloads: tokio::sync::watch::Receiver<u64>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    if !crate::network::first_view(&mut views, &mut stop).await {
        return;
    }
    let mut mesh = Mesh::new(node_id.clone());
    let mut proxies = Proxies::counting_into(relayed);
    let mut held = Held::default();
    let mut applied: Option<NodeMesh> = None;
    let mut last_error = None;
    let mut retry = RETRY;
    loop {
        let local: BTreeMap<String, Ipv4Addr> = addresses
            .borrow_and_update()
            .iter()
            .map(|(address, task)| (task_of(task).to_owned(), *address))
            .collect();
        let mut desired = NodeMesh::from_view(&views.borrow_and_update(), &node_id, &local);
        // Held first: a port that moves to the userspace path is released before its
        // proxy binds it.
        let mut now_taken = held.set(&desired.held());
        let unbound = proxies.set(&desired.proxied());
        // A port not bound yet, whatever the reason, is tried again after a wait.
        let unheld = !unbound.is_empty() || !now_taken.is_empty();
        for (port, error) in unbound {
            if error.kind() == std::io::ErrorKind::AddrInUse {
                now_taken.insert((swarm_api::spec::Protocol::Tcp, port));
            } else {
                tracing::warn!(node = node_id, port, %error, "cannot listen on a published port");
            }
        }
        desired.leave_taken(&now_taken);
        taken.send_if_modified(|reported| {
            // Taken by something else on this node: the other nodes answer it still.
            for (protocol, port) in now_taken.difference(reported) {
                tracing::warn!(node = node_id, port, %protocol, "a published port is taken by another process: left to it");
            }
            for (protocol, port) in reported.difference(&now_taken) {
                tracing::info!(node = node_id, port, %protocol, "a published port taken by another process is the mesh's again");
            }
            let changed = *reported != now_taken;
            reported.clone_from(&now_taken);
            changed
        });
        if applied.as_ref() != Some(&desired) {
            let wanted = desired.clone();
            let (back, outcome) = tokio::task::spawn_blocking(move || {
                let outcome = mesh.reconcile(wanted);
                (mesh, outcome)
            })
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            mesh = back;
            match outcome {
                Ok(()) => {
                    last_error = None;
                    retry = RETRY;
                    applied = Some(desired);
                }
                Err(error) => {
                    let message = error.to_string();
                    if last_error.as_ref() != Some(&message) {
                        tracing::warn!(node = node_id, %message, "cannot set the routing mesh");
                    }
                    last_error = Some(message);
                    applied = None;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
        let changed = tokio::select! {
            changed = views.changed() => changed.is_ok(),
            changed = addresses.changed() => changed.is_ok(),
            Ok(()) = reloads.changed() => {
                mesh.forget();
                applied = None;
                true
            }
            _ = tokio::time::sleep(retry), if applied.is_none() || unheld => true,
            () = &mut stop => false,
        };
        if !changed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::spec::Protocol;

    use super::*;

    #[test]
    fn the_opened_device_is_read_from_the_ruleset() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "ip", "name": "opened", "table": "swmesh0", "type": ["ipv4_addr", "ifname"], "handle": 1, "elem": [{"concat": ["198.18.0.12", "eth0"]}]}}]}"#;
        assert_eq!(
            opened_in(json),
            Some((Ipv4Addr::new(198, 18, 0, 12), "eth0".to_owned()))
        );
        let empty = r#"{"nftables": [{"set": {"family": "ip", "name": "opened", "table": "swmesh0", "type": ["ipv4_addr", "ifname"], "handle": 1}}]}"#;
        assert_eq!(opened_in(empty), None, "nothing opened");
    }

    #[test]
    fn the_data_path_device_is_read_from_ip_address_output() {
        let listing = "2: eth0    inet 198.18.0.10/24 brd 198.18.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(device_in(listing).as_deref(), Some("eth0"));
        assert_eq!(
            device_in("").as_deref(),
            None,
            "no device holds the address"
        );
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"counter": {"family": "ip", "name": "refused", "table": "t", "handle": 2, "packets": 3, "bytes": 180}},
            {"counter": {"family": "ip", "name": "conn_tcp_8080", "table": "t", "handle": 3, "packets": 41, "bytes": 2460}},
            {"counter": {"family": "ip", "name": "conn_udp_53", "table": "t", "handle": 4, "packets": 7, "bytes": 420}},
            {"counter": {"family": "ip", "name": "bytes_tcp_8080_in", "table": "t", "handle": 5, "packets": 90, "bytes": 9000}},
            {"counter": {"family": "ip", "name": "bytes_tcp_8080_out", "table": "t", "handle": 6, "packets": 80, "bytes": 64000}}]}"#;
        let counters = parse_counters(json);
        use super::super::Direction;
        assert_eq!(counters.bytes[&(Protocol::Tcp, 8080, Direction::In)], 9000);
        assert_eq!(
            counters.bytes[&(Protocol::Tcp, 8080, Direction::Out)],
            64000
        );
        assert_eq!(counters.bytes.len(), 2);
        assert_eq!(counters.refused, 3);
        assert_eq!(counters.connections[&(Protocol::Tcp, 8080)], 41);
        assert_eq!(counters.connections[&(Protocol::Udp, 53)], 7);
    }
}
