//! The scheduler's pure core: which node each pending task goes to, or why none can take it.
//!
//! Tasks come in groups, one per service and spec, since every task of a group asks for the
//! same thing. For a group, static filters (status, a running worker, availability,
//! constraints) run once per node. The nodes that pass are then ranked by spread — fewest tasks of this service, then
//! fewest tasks overall — within the branches of the service's placement preferences
//! (`spread=node.labels.X`: tasks spread evenly over the label's values first). Each task
//! takes the best node that still fits it (reservations, max replicas per node, host-mode
//! ports). A node that does not fit one task of a group fits none of the later ones
//! (resources only shrink, counts and ports only grow), so it leaves the group's ranking for
//! good: placing T tasks on N nodes costs O(N + T log N).
//!
//! Every rejection is counted by reason, and a task no node can take gets them all:
//! "no suitable node (2 nodes lack 1GiB of memory; 1 node drained)".

mod spread;

use std::collections::{BTreeMap, HashMap, HashSet};

use swarm_api::spec::{Constraint, IpMatch, NodeAttribute, Placement, Protocol};
use swarm_api::store::{Availability, NodeRole, NodeStatus};
use swarm_api::units::{ByteSize, NanoCpus};

use spread::Tree;

/// CPU and memory, as nodes offer them and tasks reserve them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    pub availability: Availability,
    pub status: NodeStatus,
    pub labels: BTreeMap<String, String>,
    /// The host part of the node's address, for `node.ip` constraints; `None` when it is
    /// a name rather than an address.
    pub ip: Option<std::net::IpAddr>,
    pub os: String,
    pub arch: String,
    /// What the node offers; `None` when it has not said, and then it takes only tasks
    /// that reserve nothing.
    pub capacity: Option<Resources>,
    /// Why the node's worker cannot run tasks; `None` while it can.
    pub worker_error: Option<String>,
}

/// What is already on a node: assigned and running tasks.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub reserved: Resources,
    pub tasks: u64,
    pub tasks_by_service: HashMap<String, u64>,
    pub host_ports: HashSet<(Protocol, u16)>,
}

/// Pending tasks of one service that ask for the same placement.
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub service_id: &'a str,
    pub tasks: Vec<String>,
    pub placement: &'a Placement,
    pub reservations: Resources,
    /// Ports published in host mode: two tasks on one node cannot share one.
    pub host_ports: Vec<(Protocol, u16)>,
}

/// The scheduler's decisions for one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    /// (task, node)
    pub assignments: Vec<(String, String)>,
    /// (task, why no node can take it)
    pub unschedulable: Vec<(String, String)>,
}

/// Places every task of `groups` on `nodes`, whose current load `loads` gives (by index) and
/// which the placements update.
pub fn schedule(nodes: &[Candidate], loads: &mut [Load], groups: &[Group<'_>]) -> Decisions {
    assert_eq!(nodes.len(), loads.len(), "one load per node");
    let mut decisions = Decisions::default();
    for group in groups {
        place_group(nodes, loads, group, &mut decisions);
    }
    decisions
}

/// Why nodes were turned down for a group, with how many of each.
#[derive(Debug, Default)]
struct Rejections {
    down: usize,
    /// By the workers' errors.
    no_worker: BTreeMap<String, usize>,
    drained: usize,
    paused: usize,
    constraints: BTreeMap<String, usize>,
    cpus: usize,
    memory: usize,
    capacity_unknown: usize,
    max_replicas: usize,
    ports: BTreeMap<(Protocol, u16), usize>,
}

fn place_group(
    nodes: &[Candidate],
    loads: &mut [Load],
    group: &Group<'_>,
    decisions: &mut Decisions,
) {
    let mut rejections = Rejections::default();
    let eligible: Vec<usize> = (0..nodes.len())
        .filter(|&i| passes_static_filters(&nodes[i], group.placement, &mut rejections))
        .collect();
    let service = group.service_id;
    let key = |load: &Load| {
        (
            load.tasks_by_service.get(service).copied().unwrap_or(0),
            load.tasks,
        )
    };
    let mut tree = Tree::new(
        &eligible,
        &group.placement.preferences,
        |i| &nodes[i].labels,
        |i| key(&loads[i]),
        |i| key(&loads[i]).0,
    );
    let mut tasks = group.tasks.iter();
    for task in tasks.by_ref() {
        let chosen = tree.take(&mut |i| fits(&nodes[i], &loads[i], group, &mut rejections));
        let Some(i) = chosen else {
            decisions
                .unschedulable
                .push((task.clone(), explain(&rejections, nodes.len(), group)));
            break;
        };
        let load = &mut loads[i];
        load.reserved.nano_cpus += group.reservations.nano_cpus;
        load.reserved.memory_bytes += group.reservations.memory_bytes;
        load.tasks += 1;
        *load.tasks_by_service.entry(service.to_owned()).or_default() += 1;
        load.host_ports.extend(group.host_ports.iter().copied());
        decisions
            .assignments
            .push((task.clone(), nodes[i].id.clone()));
    }
    // No node fits the rest of the group either: same reasons.
    if let Some((_, reason)) = decisions.unschedulable.last().cloned() {
        for task in tasks {
            decisions.unschedulable.push((task.clone(), reason.clone()));
        }
    }
}

fn passes_static_filters(node: &Candidate, placement: &Placement, why: &mut Rejections) -> bool {
    if node.status != NodeStatus::Ready {
        why.down += 1;
        return false;
    }
    if let Some(error) = &node.worker_error {
        *why.no_worker.entry(error.clone()).or_default() += 1;
        return false;
    }
    match node.availability {
        Availability::Active => {}
        Availability::Drain => {
            why.drained += 1;
            return false;
        }
        Availability::Pause => {
            why.paused += 1;
            return false;
        }
    }
    if let Some(failed) = placement.constraints.iter().find(|c| !satisfies(node, c)) {
        *why.constraints.entry(failed.to_string()).or_default() += 1;
        return false;
    }
    true
}

/// A node's address for `node.ip` constraints: the host part of `host:port` (`[v6]:port`), when the host is one.
pub fn host_ip(address: &str) -> Option<std::net::IpAddr> {
    if let Ok(socket) = address.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_matches(['[', ']']).parse().ok()
}

/// Whether `node` satisfies one constraint; a missing label equals nothing.
pub fn satisfies(node: &Candidate, constraint: &Constraint) -> bool {
    let role = match node.role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    };
    let value = match &constraint.attribute {
        // As swarmkit: an address equals, a range contains; a node without one matches neither.
        NodeAttribute::Ip => {
            let within = IpMatch::parse(&constraint.value)
                .zip(node.ip)
                .is_some_and(|(wanted, ip)| wanted.contains(ip));
            return within == constraint.equal;
        }
        NodeAttribute::Id => Some(node.id.as_str()),
        NodeAttribute::Hostname => Some(node.hostname.as_str()),
        NodeAttribute::Role => Some(role),
        NodeAttribute::PlatformOs => Some(node.os.as_str()),
        NodeAttribute::PlatformArch => Some(node.arch.as_str()),
        NodeAttribute::NodeLabel(name) | NodeAttribute::EngineLabel(name) => {
            node.labels.get(name).map(String::as_str)
        }
    };
    // Docker compares node attributes without regard to case.
    let equal = value.is_some_and(|v| v.eq_ignore_ascii_case(&constraint.value));
    equal == constraint.equal
}

/// Whether one more task of the group fits on the node, as loaded now.
fn fits(node: &Candidate, load: &Load, group: &Group<'_>, why: &mut Rejections) -> bool {
    let wants = group.reservations;
    if wants != Resources::default() {
        let Some(capacity) = node.capacity else {
            why.capacity_unknown += 1;
            return false;
        };
        if load.reserved.nano_cpus + wants.nano_cpus > capacity.nano_cpus {
            why.cpus += 1;
            return false;
        }
        if load.reserved.memory_bytes + wants.memory_bytes > capacity.memory_bytes {
            why.memory += 1;
            return false;
        }
    }
    let max = group.placement.max_replicas_per_node;
    if max > 0
        && load
            .tasks_by_service
            .get(group.service_id)
            .is_some_and(|n| *n >= max)
    {
        why.max_replicas += 1;
        return false;
    }
    if let Some(port) = group
        .host_ports
        .iter()
        .find(|port| load.host_ports.contains(port))
    {
        *why.ports.entry(*port).or_default() += 1;
        return false;
    }
    true
}

fn explain(why: &Rejections, node_count: usize, group: &Group<'_>) -> String {
    if node_count == 0 {
        return "no suitable node (the cluster has no nodes)".to_owned();
    }
    // "1 node lacks …", "2 nodes lack …".
    let nodes = |n: usize, one: &str, many: &str| match n {
        1 => format!("1 node {one}"),
        n => format!("{n} nodes {many}"),
    };
    let mut reasons = Vec::new();
    if why.memory > 0 {
        let memory = format!("{} of memory", ByteSize(group.reservations.memory_bytes));
        reasons.push(nodes(
            why.memory,
            &format!("lacks {memory}"),
            &format!("lack {memory}"),
        ));
    }
    if why.cpus > 0 {
        let cpus = format!("{} CPUs", NanoCpus(group.reservations.nano_cpus));
        reasons.push(nodes(
            why.cpus,
            &format!("lacks {cpus}"),
            &format!("lack {cpus}"),
        ));
    }
    if why.capacity_unknown > 0 {
        let what = "reported no resources";
        reasons.push(nodes(why.capacity_unknown, what, what));
    }
    if why.max_replicas > 0 {
        let max = group.placement.max_replicas_per_node;
        reasons.push(nodes(
            why.max_replicas,
            &format!("already runs the maximum of {max} per node"),
            &format!("already run the maximum of {max} per node"),
        ));
    }
    for ((protocol, port), n) in &why.ports {
        let port = format!("host port {port}/{protocol} in use");
        reasons.push(nodes(*n, &format!("has {port}"), &format!("have {port}")));
    }
    for (constraint, n) in &why.constraints {
        reasons.push(nodes(
            *n,
            &format!("does not satisfy {constraint}"),
            &format!("do not satisfy {constraint}"),
        ));
    }
    for (error, n) in &why.no_worker {
        reasons.push(match n {
            1 => format!("1 node's worker is not running: {error}"),
            n => format!("{n} nodes' workers are not running: {error}"),
        });
    }
    for (n, what) in [
        (why.down, "down"),
        (why.drained, "drained"),
        (why.paused, "paused"),
    ] {
        if n > 0 {
            reasons.push(nodes(n, what, what));
        }
    }
    format!("no suitable node ({})", reasons.join("; "))
}

#[cfg(test)]
mod tests;
