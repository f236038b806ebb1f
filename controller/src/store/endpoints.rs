//! The endpoint table, followed from the store's watch like the assignments: per network,
//! its address space, the services attached to it (names, aliases, endpoint mode, virtual
//! IP) and every task holding an address on it with its node's VTEP and whether it serves.
//! Built once from the state, then kept current by each entry's changes at the cost of the
//! networks they touch, telling which nodes' views changed: a node is sent its
//! [`NetworkView`] (the networks its tasks are on, whole) when it changes, and only then.
//!
//! The routing mesh's part ([`MeshView`]: the services publishing ports, where their serving
//! tasks run, how to reach each node) is the same for every node: a change to it changes
//! every node's view.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::sync::Arc;

use swarm_api::endpoints::{
    MeshTask, MeshView, NetworkEndpoints, NetworkView, PublishedService, ServiceEndpoint,
    TaskEndpoint, Vtep,
};
use swarm_api::spec::{AssignedPort, EndpointMode, NetworkSpec, PortConfig, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::store::{NetworkAllocation, Node, NodeStatus, StoreData};
use swarm_api::task::{DesiredState, NetworkAddress, Task, TaskState};

use super::{Changed, Changes, Store};

/// A network's own part of its entry: what its object and allocation say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NetworkMeta {
    id: String,
    vni: u32,
    subnet: ipnet::Ipv4Net,
    gateway: Ipv4Addr,
    internal: bool,
}

/// A service as its networks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceEntry {
    name: String,
    mode: EndpointMode,
    /// The aliases on each network it attaches to, by network name.
    attachments: BTreeMap<String, Vec<String>>,
    /// Its virtual IP on each network, by network name.
    vips: BTreeMap<String, Ipv4Addr>,
    /// Its ports with a published number (written, or given by the cluster): what the mesh
    /// answers.
    ports: Vec<PortConfig>,
}

/// A placed task that has not ended: what its endpoints (and, for a service publishing
/// ports, its place in the mesh) are made of besides its node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskEntry {
    node_id: String,
    service_id: String,
    name: String,
    networks: Vec<NetworkAddress>,
    /// Running and meant to run (its node's state is the node's entry).
    running: bool,
    /// Running, whether still meant to or told to stop (draining).
    started: bool,
}

/// What a node brings to its tasks' endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct NodeEntry {
    vtep: Option<Vtep>,
    down: bool,
}

#[derive(Debug, Default)]
pub struct Endpoints {
    networks: HashMap<String, NetworkMeta>,
    services: HashMap<String, ServiceEntry>,
    /// Service id by name: a removed service's change names it only.
    service_ids: HashMap<String, String>,
    /// The services attached to each network (ids), by network name.
    services_on: HashMap<String, BTreeSet<String>>,
    nodes: HashMap<String, NodeEntry>,
    tasks: HashMap<String, TaskEntry>,
    tasks_of_node: HashMap<String, BTreeSet<String>>,
    /// Each network's task endpoints, by task id.
    endpoints: HashMap<String, BTreeMap<String, TaskEndpoint>>,
    /// The nodes carrying each network, with how many of its tasks each runs there.
    carriers: HashMap<String, BTreeMap<String, usize>>,
    /// Each service's tasks, by service id.
    tasks_of_service: HashMap<String, BTreeSet<String>>,
    /// The services publishing ports (ids): the mesh's.
    published: BTreeSet<String>,
    /// The mesh as last built, shared by every node's view; emptied by any change to it.
    mesh: std::sync::OnceLock<Arc<MeshView>>,
}

/// Where node `node`'s VXLAN traffic goes: the host of its address as IPv4 (a name is
/// resolved, once per change of the node) and its data path port.
fn vtep_of(node: &Node) -> Option<Vtep> {
    let host = node
        .address
        .rsplit_once(':')
        .map_or(node.address.as_str(), |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let address = match host.parse::<Ipv4Addr>() {
        Ok(address) => address,
        Err(_) => (host, 0)
            .to_socket_addrs()
            .ok()?
            .find_map(|a| match a.ip() {
                std::net::IpAddr::V4(v4) => Some(v4),
                std::net::IpAddr::V6(_) => None,
            })?,
    };
    Some(Vtep {
        address,
        port: node.description.data_path_port,
    })
}

fn node_entry(node: &Node) -> NodeEntry {
    NodeEntry {
        vtep: vtep_of(node),
        down: node.status == NodeStatus::Down,
    }
}

fn network_meta(
    network: &Object<NetworkSpec>,
    allocation: Option<&NetworkAllocation>,
) -> Option<NetworkMeta> {
    let allocation = allocation?;
    Some(NetworkMeta {
        id: network.id.clone()?,
        vni: allocation.vni,
        subnet: allocation.subnet,
        gateway: allocation.gateway,
        internal: network.spec.internal,
    })
}

fn service_entry(
    service: &ServiceSpec,
    vips: &[NetworkAddress],
    assigned: &[AssignedPort],
) -> ServiceEntry {
    ServiceEntry {
        name: service.name.clone(),
        mode: service.endpoint.mode,
        attachments: service
            .task
            .networks
            .iter()
            .map(|a| (a.target.clone(), a.aliases.clone()))
            .collect(),
        vips: vips
            .iter()
            .map(|v| (v.network.clone(), v.address))
            .collect(),
        ports: service
            .endpoint
            .published_ports(assigned)
            .into_iter()
            .filter(|p| p.published.is_some())
            .collect(),
    }
}

/// The task's entry if it is placed and not over.
fn task_entry(task: &Task) -> Option<TaskEntry> {
    if task.status.state.is_terminal() {
        return None;
    }
    Some(TaskEntry {
        node_id: task.node_id.clone()?,
        service_id: task.service_id.clone(),
        name: task.name(),
        networks: task.networks.clone(),
        running: task.status.state == TaskState::Running && task.desired == DesiredState::Running,
        started: task.status.state == TaskState::Running,
    })
}

impl Endpoints {
    /// The endpoint table of `store`.
    pub fn of(store: &Store) -> Self {
        Self::of_data(store.data())
    }

    fn of_data(data: &StoreData) -> Self {
        let mut table = Endpoints::default();
        let mut changed = BTreeSet::new();
        for node in data.nodes.values() {
            table.nodes.insert(node.id.clone(), node_entry(node));
        }
        for network in &data.objects.networks {
            let name = &network.spec.name;
            if let Some(meta) = network_meta(network, data.network_allocations.get(name)) {
                table.networks.insert(name.clone(), meta);
            }
        }
        for service in &data.objects.services {
            if let Some(id) = &service.id {
                let vips = data.service_vips.get(id).map_or(&[][..], Vec::as_slice);
                let ports = data.assigned_ports.get(id).map_or(&[][..], Vec::as_slice);
                let entry = service_entry(&service.spec, vips, ports);
                table.put_service(id, Some(entry), &mut changed);
            }
        }
        for task in data.tasks.values() {
            table.put_task(&task.id, task_entry(task), &mut changed);
        }
        table
    }

    /// Follows one entry's changes; returns the nodes whose views changed.
    pub fn apply(&mut self, changes: &Changes) -> BTreeSet<String> {
        let mut changed = BTreeSet::new();
        for change in &changes.changed {
            match change {
                Changed::Task { id, task } => {
                    let entry = task.as_ref().and_then(task_entry);
                    self.put_task(id, entry, &mut changed);
                }
                Changed::Node { id, node } => {
                    let entry = node.as_ref().map(node_entry).unwrap_or(NodeEntry {
                        vtep: None,
                        down: true,
                    });
                    self.put_node(id, entry, &mut changed);
                }
                Changed::Service {
                    name,
                    service,
                    vips,
                    ports,
                    ..
                } => {
                    let id = match service.as_ref().and_then(|s| s.id.clone()) {
                        Some(id) => Some(id),
                        None => self.service_ids.get(name).cloned(),
                    };
                    if let Some(id) = id {
                        let entry = service
                            .as_ref()
                            .map(|s| service_entry(&s.spec, vips, ports));
                        self.put_service(&id, entry, &mut changed);
                    }
                }
                Changed::Network {
                    name,
                    network,
                    allocation,
                } => {
                    let meta = network
                        .as_ref()
                        .and_then(|n| network_meta(n, allocation.as_ref()));
                    if self.networks.get(name) != meta.as_ref() {
                        match meta {
                            Some(meta) => drop(self.networks.insert(name.clone(), meta)),
                            None => drop(self.networks.remove(name)),
                        }
                        self.mark(name, &mut changed);
                    }
                }
                Changed::Config { .. }
                | Changed::Secret { .. }
                | Changed::Repository { .. }
                | Changed::Credentials { .. }
                | Changed::FileContent { .. } => {}
            }
        }
        changed
    }

    /// Adds every node to `changed`: the mesh's part of their views changed.
    fn mark_mesh(&mut self, changed: &mut BTreeSet<String>) {
        self.mesh.take();
        changed.extend(self.nodes.keys().cloned());
    }

    /// Whether `task` takes new connections: running, meant to, on a node not Down.
    fn serving(&self, task: &TaskEntry) -> bool {
        task.running && !self.nodes.get(&task.node_id).is_some_and(|n| n.down)
    }

    /// Where a task puts the mesh: its node and whether it serves, if it runs (serving or
    /// draining) for a service publishing ports on a node not Down.
    fn mesh_place<'a>(&self, task: Option<&'a TaskEntry>) -> Option<(&'a str, bool)> {
        let task = task?;
        let down = self.nodes.get(&task.node_id).is_some_and(|n| n.down);
        (self.published.contains(&task.service_id) && task.started && !down)
            .then_some((task.node_id.as_str(), self.serving(task)))
    }

    /// Adds the nodes carrying `network` to `changed`.
    fn mark(&self, network: &str, changed: &mut BTreeSet<String>) {
        if let Some(nodes) = self.carriers.get(network) {
            changed.extend(nodes.keys().cloned());
        }
    }

    fn endpoint(&self, task: &TaskEntry, address: Ipv4Addr) -> TaskEndpoint {
        let node = self.nodes.get(&task.node_id).copied().unwrap_or_default();
        TaskEndpoint {
            service_id: task.service_id.clone(),
            node_id: task.node_id.clone(),
            vtep: node.vtep,
            address,
            name: task.name.clone(),
            serving: task.running && !node.down,
        }
    }

    /// Task `id` as it is now (`None`: ended, or gone).
    fn put_task(&mut self, id: &str, entry: Option<TaskEntry>, changed: &mut BTreeSet<String>) {
        if self.tasks.get(id) == entry.as_ref() {
            return;
        }
        if self.mesh_place(self.tasks.get(id)) != self.mesh_place(entry.as_ref()) {
            self.mark_mesh(changed);
        }
        if let Some(old) = self.tasks.remove(id) {
            if let Some(tasks) = self.tasks_of_service.get_mut(&old.service_id) {
                tasks.remove(id);
                if tasks.is_empty() {
                    self.tasks_of_service.remove(&old.service_id);
                }
            }
            for network in &old.networks {
                // Before it goes: its node may stop carrying the network.
                self.mark(&network.network, changed);
                if let Some(endpoints) = self.endpoints.get_mut(&network.network) {
                    endpoints.remove(id);
                    if endpoints.is_empty() {
                        self.endpoints.remove(&network.network);
                    }
                }
                if let Some(nodes) = self.carriers.get_mut(&network.network) {
                    if let Some(count) = nodes.get_mut(&old.node_id) {
                        *count -= 1;
                        if *count == 0 {
                            nodes.remove(&old.node_id);
                        }
                    }
                    if nodes.is_empty() {
                        self.carriers.remove(&network.network);
                    }
                }
            }
            if let Some(tasks) = self.tasks_of_node.get_mut(&old.node_id) {
                tasks.remove(id);
                if tasks.is_empty() {
                    self.tasks_of_node.remove(&old.node_id);
                }
            }
        }
        let Some(entry) = entry else {
            return;
        };
        for network in &entry.networks {
            let endpoint = self.endpoint(&entry, network.address);
            self.endpoints
                .entry(network.network.clone())
                .or_default()
                .insert(id.to_owned(), endpoint);
            *self
                .carriers
                .entry(network.network.clone())
                .or_default()
                .entry(entry.node_id.clone())
                .or_default() += 1;
            self.mark(&network.network, changed);
        }
        self.tasks_of_node
            .entry(entry.node_id.clone())
            .or_default()
            .insert(id.to_owned());
        self.tasks_of_service
            .entry(entry.service_id.clone())
            .or_default()
            .insert(id.to_owned());
        self.tasks.insert(id.to_owned(), entry);
    }

    /// Node `id` as it is now: its tasks' endpoints follow its VTEP and status.
    fn put_node(&mut self, id: &str, entry: NodeEntry, changed: &mut BTreeSet<String>) {
        if self.nodes.get(id) == Some(&entry) {
            return;
        }
        if !self.published.is_empty() {
            self.mark_mesh(changed);
        }
        self.nodes.insert(id.to_owned(), entry);
        let task_ids: Vec<String> = self
            .tasks_of_node
            .get(id)
            .map(|tasks| tasks.iter().cloned().collect())
            .unwrap_or_default();
        for task_id in task_ids {
            let task = self.tasks[&task_id].clone();
            for network in &task.networks {
                let endpoint = self.endpoint(&task, network.address);
                if let Some(endpoints) = self.endpoints.get_mut(&network.network) {
                    endpoints.insert(task_id.clone(), endpoint);
                }
                self.mark(&network.network, changed);
            }
        }
    }

    /// Service `id` as it is now (`None`: removed).
    fn put_service(
        &mut self,
        id: &str,
        entry: Option<ServiceEntry>,
        changed: &mut BTreeSet<String>,
    ) {
        let old = self.services.get(id);
        if old == entry.as_ref() {
            return;
        }
        fn published(s: Option<&ServiceEntry>) -> Option<(&String, &Vec<PortConfig>)> {
            s.map(|s| (&s.name, &s.ports))
        }
        let mesh_changed = published(old) != published(entry.as_ref())
            && (old.is_some_and(|s| !s.ports.is_empty())
                || entry.as_ref().is_some_and(|s| !s.ports.is_empty()));
        let touched: BTreeSet<String> = old
            .into_iter()
            .chain(entry.as_ref())
            .flat_map(|s| s.attachments.keys().cloned())
            .collect();
        if mesh_changed {
            self.mark_mesh(changed);
        }
        self.published.remove(id);
        if let Some(old) = self.services.remove(id) {
            self.service_ids.remove(&old.name);
            for network in old.attachments.keys() {
                if let Some(services) = self.services_on.get_mut(network) {
                    services.remove(id);
                    if services.is_empty() {
                        self.services_on.remove(network);
                    }
                }
            }
        }
        if let Some(entry) = entry {
            for network in entry.attachments.keys() {
                self.services_on
                    .entry(network.clone())
                    .or_default()
                    .insert(id.to_owned());
            }
            self.service_ids.insert(entry.name.clone(), id.to_owned());
            if !entry.ports.is_empty() {
                self.published.insert(id.to_owned());
            }
            self.services.insert(id.to_owned(), entry);
        }
        for network in &touched {
            self.mark(network, changed);
        }
    }

    /// Network `name` whole, if the store gave it its address space.
    fn network(&self, name: &str) -> Option<NetworkEndpoints> {
        let meta = self.networks.get(name)?;
        let services = self
            .services_on
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let service = self.services.get(id)?;
                Some((
                    id.clone(),
                    ServiceEndpoint {
                        name: service.name.clone(),
                        aliases: service.attachments.get(name).cloned().unwrap_or_default(),
                        mode: service.mode,
                        vip: service.vips.get(name).copied(),
                    },
                ))
            })
            .collect();
        Some(NetworkEndpoints {
            id: meta.id.clone(),
            vni: meta.vni,
            subnet: meta.subnet,
            gateway: meta.gateway,
            internal: meta.internal,
            services,
            tasks: self.endpoints.get(name).cloned().unwrap_or_default(),
        })
    }

    /// What node `node_id` is sent: the networks its tasks hold addresses on, whole.
    pub fn of_node(&self, node_id: &str) -> NetworkView {
        let names: BTreeSet<&str> = self
            .tasks_of_node
            .get(node_id)
            .into_iter()
            .flatten()
            .flat_map(|id| self.tasks[id].networks.iter())
            .map(|n| n.network.as_str())
            .collect();
        NetworkView {
            networks: names
                .into_iter()
                .filter_map(|name| Some((name.to_owned(), self.network(name)?)))
                .collect(),
            mesh: self
                .mesh
                .get_or_init(|| Arc::new(self.build_mesh()))
                .clone(),
        }
    }

    /// The routing mesh: every service publishing ports with its serving tasks, and the
    /// nodes that can be reached (empty while no service publishes).
    fn build_mesh(&self) -> MeshView {
        if self.published.is_empty() {
            return MeshView::default();
        }
        let nodes = self
            .nodes
            .iter()
            .filter(|(_, node)| !node.down)
            .filter_map(|(id, node)| Some((id.clone(), node.vtep?.address)))
            .collect();
        let services = self
            .published
            .iter()
            .filter_map(|id| {
                let service = self.services.get(id)?;
                let tasks = self
                    .tasks_of_service
                    .get(id)
                    .into_iter()
                    .flatten()
                    .filter_map(|task_id| {
                        let (node, serving) = self.mesh_place(self.tasks.get(task_id))?;
                        let task = MeshTask {
                            node_id: node.to_owned(),
                            serving,
                        };
                        Some((task_id.clone(), task))
                    })
                    .collect();
                Some((
                    id.clone(),
                    PublishedService {
                        name: service.name.clone(),
                        ports: service.ports.clone(),
                        tasks,
                    },
                ))
            })
            .collect();
        MeshView { nodes, services }
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::state::Origin;
    use swarm_api::store::{Availability, NodeDescription, NodeRole};
    use swarm_api::task::TaskStatus;

    use super::*;

    fn node(id: &str, address: &str, status: NodeStatus) -> Node {
        Node {
            id: id.into(),
            hostname: format!("host-{id}"),
            role: NodeRole::Worker,
            availability: Availability::Active,
            status,
            status_since: 1,
            labels: Default::default(),
            address: address.into(),
            raft_id: None,
            description: NodeDescription {
                data_path_port: 4789,
                ..NodeDescription::default()
            },
            subnet: None,
            worker_error: None,
            ports_taken: Vec::new(),
        }
    }

    /// Service `s_NAME` (id `s_NAME-id`) of a stack `s`, attached to `networks`.
    fn service(name: &str, networks: &[&str]) -> Object<ServiceSpec> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        let mut text = format!("services:\n  {name}:\n    image: nginx\n");
        if !networks.is_empty() {
            text.push_str("    networks:\n");
            for network in networks {
                text.push_str(&format!("      - {network}\n"));
            }
            text.push_str("networks:\n");
            for network in networks {
                text.push_str(&format!("  {network}:\n    external: true\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None);
        let spec = stack.stack.expect("a valid stack").services.remove(0);
        Object {
            id: Some(format!("{}-id", spec.name)),
            origin: Origin::default(),
            spec,
        }
    }

    fn network(name: &str, third_octet: u8) -> (Object<NetworkSpec>, NetworkAllocation) {
        let spec: NetworkSpec = serde_json::from_value(serde_json::json!({
            "name": name, "driver": "overlay", "driver_opts": {}, "attachable": false,
            "internal": false, "labels": {}, "subnets": [],
        }))
        .unwrap();
        let allocation = NetworkAllocation {
            subnet: format!("10.0.{third_octet}.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, 0, third_octet, 1),
            vni: 4096 + u32::from(third_octet),
        };
        (
            Object {
                id: Some(format!("{name}-id")),
                origin: Origin::default(),
                spec,
            },
            allocation,
        )
    }

    fn task(id: &str, service: &str, node: &str, on: &[(&str, [u8; 4])]) -> Task {
        let spec = self::service(service, &[]).spec.task;
        Task {
            id: id.into(),
            service_id: format!("s_{service}-id"),
            service_name: format!("s_{service}"),
            slot: Some(1),
            node_id: Some(node.into()),
            spec,
            desired: DesiredState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1),
            created_at: 1,
            started_at: None,
            networks: on
                .iter()
                .map(|(network, octets)| NetworkAddress {
                    network: (*network).into(),
                    address: Ipv4Addr::from(*octets),
                })
                .collect(),
        }
    }

    /// A store's watched data, changed by hand; each change also goes to the table.
    struct World {
        data: StoreData,
        table: Endpoints,
    }

    impl World {
        fn new() -> World {
            World {
                data: StoreData::default(),
                table: Endpoints::default(),
            }
        }

        fn change(&mut self, change: Changed) -> BTreeSet<String> {
            match &change {
                Changed::Node { id, node } => match node {
                    Some(node) => drop(self.data.nodes.insert(id.clone(), node.clone())),
                    None => drop(self.data.nodes.remove(id)),
                },
                Changed::Task { id, task } => match task {
                    Some(task) => drop(self.data.tasks.insert(id.clone(), task.clone())),
                    None => drop(self.data.tasks.remove(id)),
                },
                Changed::Service {
                    name,
                    service,
                    vips,
                    ..
                } => {
                    self.data.objects.services.retain(|s| s.spec.name != *name);
                    if let Some(service) = service {
                        self.data.objects.services.push(service.clone());
                        let id = service.id.clone().unwrap();
                        self.data.service_vips.insert(id, vips.clone());
                    }
                }
                Changed::Network {
                    name,
                    network,
                    allocation,
                } => {
                    self.data.objects.networks.retain(|n| n.spec.name != *name);
                    self.data.network_allocations.remove(name);
                    if let (Some(network), Some(allocation)) = (network, allocation) {
                        self.data.objects.networks.push(network.clone());
                        self.data
                            .network_allocations
                            .insert(name.clone(), *allocation);
                    }
                }
                _ => unreachable!("not used here"),
            }
            let changed = self.table.apply(&Changes {
                index: 1,
                objects_version: 1,
                tasks_version: 1,
                changed: vec![change],
            });
            // Followed or built afresh, every node's view is the same.
            let fresh = Endpoints::of_data(&self.data);
            for node in ["a", "b", "c"] {
                assert_eq!(self.table.of_node(node), fresh.of_node(node), "node {node}");
            }
            changed
        }

        fn task(&mut self, task: Task) -> BTreeSet<String> {
            self.change(Changed::Task {
                id: task.id.clone(),
                task: Some(task),
            })
        }

        fn node(&mut self, node: Node) -> BTreeSet<String> {
            self.change(Changed::Node {
                id: node.id.clone(),
                node: Some(node),
            })
        }
    }

    fn names(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    /// Nodes a and b share network `front`; c runs a task on `back` only.
    fn world() -> World {
        let mut world = World::new();
        world.node(node("a", "198.18.0.1:2377", NodeStatus::Ready));
        world.node(node("b", "198.18.0.2:2377", NodeStatus::Ready));
        world.node(node("c", "198.18.0.3:2377", NodeStatus::Ready));
        for (name, octet) in [("front", 1), ("back", 2)] {
            let (network, allocation) = network(name, octet);
            world.change(Changed::Network {
                name: name.into(),
                network: Some(network),
                allocation: Some(allocation),
            });
        }
        world.change(Changed::Service {
            name: "s_web".into(),
            service: Some(service("web", &["front"])),
            update_status: None,
            vips: vec![NetworkAddress {
                network: "front".into(),
                address: Ipv4Addr::new(10, 0, 1, 2),
            }],
            ports: Vec::new(),
        });
        world.change(Changed::Service {
            name: "s_db".into(),
            service: Some(service("db", &["back"])),
            update_status: None,
            vips: Vec::new(),
            ports: Vec::new(),
        });
        world.task(task("t1", "web", "a", &[("front", [10, 0, 1, 3])]));
        world.task(task("t2", "web", "b", &[("front", [10, 0, 1, 4])]));
        world.task(task("t3", "db", "c", &[("back", [10, 0, 2, 3])]));
        world
    }

    #[test]
    fn a_node_sees_the_networks_of_its_tasks_whole() {
        let world = world();
        let view = world.table.of_node("a");
        assert_eq!(view.networks.keys().collect::<Vec<_>>(), ["front"]);
        let front = &view.networks["front"];
        assert_eq!((front.id.as_str(), front.vni), ("front-id", 4097));
        assert_eq!(front.subnet.to_string(), "10.0.1.0/24");
        assert_eq!(front.gateway, Ipv4Addr::new(10, 0, 1, 1));
        let web = &front.services["s_web-id"];
        assert_eq!(web.name, "s_web");
        assert_eq!(web.aliases, ["web"], "the stack's short name");
        assert_eq!(web.mode, EndpointMode::Vip);
        assert_eq!(web.vip, Some(Ipv4Addr::new(10, 0, 1, 2)));
        let t2 = &front.tasks["t2"];
        assert_eq!(t2.node_id, "b");
        assert_eq!(
            t2.vtep,
            Some(Vtep {
                address: Ipv4Addr::new(198, 18, 0, 2),
                port: 4789
            })
        );
        assert_eq!(
            (t2.address, t2.name.as_str()),
            (Ipv4Addr::new(10, 0, 1, 4), "s_web.1")
        );
        assert!(!t2.serving, "assigned, not running yet");
        assert_eq!(front.tasks.len(), 2);
        assert!(world.table.of_node("d").networks.is_empty(), "no task");
    }

    #[test]
    fn a_task_changing_wakes_the_nodes_sharing_its_networks_only() {
        let mut world = world();
        let mut t2 = task("t2", "web", "b", &[("front", [10, 0, 1, 4])]);
        t2.status = TaskStatus::new(TaskState::Preparing, 2);
        assert_eq!(
            world.task(t2.clone()),
            names(&[]),
            "its endpoint is the same"
        );
        t2.status = TaskStatus::new(TaskState::Running, 3);
        assert_eq!(world.task(t2.clone()), names(&["a", "b"]));
        assert!(world.table.of_node("a").networks["front"].tasks["t2"].serving);
        t2.desired = DesiredState::Shutdown;
        assert_eq!(world.task(t2.clone()), names(&["a", "b"]));
        let stopping = &world.table.of_node("a").networks["front"].tasks["t2"];
        assert!(!stopping.serving, "kept to drain, serving no longer");
        t2.status = TaskStatus::new(TaskState::Shutdown, 4);
        assert_eq!(world.task(t2), names(&["a", "b"]));
        assert!(
            !world.table.of_node("a").networks["front"]
                .tasks
                .contains_key("t2")
        );
        assert!(
            world.table.of_node("b").networks.is_empty(),
            "b carries nothing now"
        );
        let t4 = task("t4", "web", "c", &[("front", [10, 0, 1, 5])]);
        assert_eq!(world.task(t4), names(&["a", "c"]), "c now carries front");
        assert_eq!(
            world.table.of_node("c").networks.keys().collect::<Vec<_>>(),
            ["back", "front"]
        );
        assert_eq!(
            world.change(Changed::Task {
                id: "t3".into(),
                task: None
            }),
            names(&["c"])
        );
    }

    #[test]
    fn a_node_going_down_or_moving_changes_its_tasks_endpoints() {
        let mut world = world();
        let mut t1 = task("t1", "web", "a", &[("front", [10, 0, 1, 3])]);
        t1.status = TaskStatus::new(TaskState::Running, 2);
        world.task(t1);
        assert!(world.table.of_node("b").networks["front"].tasks["t1"].serving);
        assert_eq!(
            world.node(node("a", "198.18.0.1:2377", NodeStatus::Down)),
            names(&["a", "b"])
        );
        assert!(!world.table.of_node("b").networks["front"].tasks["t1"].serving);
        assert_eq!(
            world.node(node("a", "198.18.0.9:2377", NodeStatus::Ready)),
            names(&["a", "b"])
        );
        let t1 = &world.table.of_node("b").networks["front"].tasks["t1"];
        assert!(t1.serving);
        assert_eq!(t1.vtep.unwrap().address, Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(
            world.node(node("a", "198.18.0.9:2377", NodeStatus::Ready)),
            names(&[]),
            "nothing changed"
        );
        assert_eq!(
            world.node(node("c", "198.18.0.3:2377", NodeStatus::Down)),
            names(&["c"])
        );
    }

    #[test]
    fn services_and_networks_changing_wake_their_carriers() {
        let mut world = world();
        let mut web = service("web", &["front", "back"]);
        web.spec.endpoint.mode = EndpointMode::Dnsrr;
        let changed = world.change(Changed::Service {
            name: "s_web".into(),
            service: Some(web),
            update_status: None,
            vips: Vec::new(),
            ports: Vec::new(),
        });
        assert_eq!(changed, names(&["a", "b", "c"]));
        let back = &world.table.of_node("c").networks["back"];
        assert_eq!(back.services["s_web-id"].mode, EndpointMode::Dnsrr);
        assert_eq!(back.services["s_web-id"].vip, None);
        let changed = world.change(Changed::Service {
            name: "s_db".into(),
            service: None,
            update_status: None,
            vips: Vec::new(),
            ports: Vec::new(),
        });
        assert_eq!(changed, names(&["c"]));
        assert!(
            !world.table.of_node("c").networks["back"]
                .services
                .contains_key("s_db-id")
        );
        let (front, mut allocation) = network("front", 1);
        allocation.vni = 5000;
        let changed = world.change(Changed::Network {
            name: "front".into(),
            network: Some(front),
            allocation: Some(allocation),
        });
        assert_eq!(changed, names(&["a", "b"]));
        assert_eq!(world.table.of_node("a").networks["front"].vni, 5000);
    }

    #[test]
    fn a_node_address_gives_its_vtep() {
        let mut a = node("a", "127.0.0.1:2377", NodeStatus::Ready);
        a.description.data_path_port = 4790;
        assert_eq!(
            vtep_of(&a),
            Some(Vtep {
                address: Ipv4Addr::LOCALHOST,
                port: 4790
            })
        );
        a.address = "localhost:2377".into();
        assert_eq!(vtep_of(&a).map(|v| v.address), Some(Ipv4Addr::LOCALHOST));
        a.address = "[::1]:2377".into();
        assert_eq!(vtep_of(&a), None, "no IPv4 underlay");
    }

    /// Service `s_site` of stack `s`, publishing 8080→80 through the mesh, on no network.
    fn published_site() -> Object<ServiceSpec> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.yaml");
        std::fs::write(
            &path,
            "services:\n  site:\n    image: nginx\n    ports: [\"8080:80\"]\n",
        )
        .unwrap();
        let stack = crate::stack::load(&crate::source::WorkTree, &path, "s.yaml", &|_| None);
        let spec = stack.stack.expect("a valid stack").services.remove(0);
        Object {
            id: Some("s_site-id".into()),
            origin: Origin::default(),
            spec,
        }
    }

    #[test]
    fn every_node_sees_the_mesh_and_wakes_when_a_published_task_serves() {
        let mut world = world();
        for (id, third) in [("a", 1), ("b", 2), ("c", 3)] {
            let mut node = node(id, &format!("198.18.0.{third}:2377"), NodeStatus::Ready);
            node.subnet = Some(format!("198.19.{third}.0/24").parse().unwrap());
            world.node(node);
        }
        assert!(
            world.table.of_node("a").mesh.is_empty(),
            "nothing published"
        );
        let changed = world.change(Changed::Service {
            name: "s_site".into(),
            service: Some(published_site()),
            update_status: None,
            vips: Vec::new(),
            ports: Vec::new(),
        });
        assert_eq!(changed, names(&["a", "b", "c"]));
        let mesh = world.table.of_node("c").mesh;
        assert_eq!(mesh.nodes["b"], Ipv4Addr::new(198, 18, 0, 2));
        let site = &mesh.services["s_site-id"];
        assert_eq!(site.ports[0].published, Some(8080));
        assert!(site.tasks.is_empty(), "no task serves yet");

        // A task on no network is in the mesh once it runs, and every node is told.
        let mut t4 = task("t4", "site", "b", &[]);
        assert_eq!(world.task(t4.clone()), names(&[]), "assigned: not serving");
        t4.status = TaskStatus::new(TaskState::Running, 2);
        assert_eq!(world.task(t4.clone()), names(&["a", "b", "c"]));
        let tasks = &world.table.of_node("a").mesh.services["s_site-id"].tasks;
        assert_eq!(
            tasks["t4"],
            MeshTask {
                node_id: "b".into(),
                serving: true
            }
        );
        // Told to stop while it runs: it drains, listed as not serving.
        t4.desired = DesiredState::Shutdown;
        assert_eq!(world.task(t4.clone()), names(&["a", "b", "c"]));
        let tasks = &world.table.of_node("a").mesh.services["s_site-id"].tasks;
        assert!(!tasks["t4"].serving);
        t4.desired = DesiredState::Running;
        world.task(t4.clone());

        // Its node Down: out of the mesh, tasks and node.
        world.node(node("b", "198.18.0.2:2377", NodeStatus::Down));
        let mesh = world.table.of_node("a").mesh;
        assert!(mesh.services["s_site-id"].tasks.is_empty());
        assert!(!mesh.nodes.contains_key("b"));

        // The service stops publishing: the mesh is empty again.
        let mut plain = published_site();
        plain.spec.endpoint.ports.clear();
        let changed = world.change(Changed::Service {
            name: "s_site".into(),
            service: Some(plain),
            update_status: None,
            vips: Vec::new(),
            ports: Vec::new(),
        });
        assert_eq!(changed, names(&["a", "b", "c"]));
        assert!(world.table.of_node("a").mesh.is_empty());
    }
}
