//! The node's Prometheus endpoint (`swarm daemon --metrics-addr`): `GET /metrics` renders
//! one `prometheus_client` registry in the text format.
//!
//! The registry is the seam: `run` builds it at start, the daemon's parts register their
//! collectors into it (today the ones below; the routing mesh's per-service counters
//! later), and the server only renders it. What a node exports:
//!
//! - every node, its own tasks as its worker reports them (`swarm_node_tasks_running`), and
//!   what its routing mesh counted (`swarm_mesh_connections_total` per service and published
//!   port, `swarm_mesh_bytes_total` per service, port and direction, `swarm_mesh_refused_total`),
//!   read from its nftables counters at each scrape (and the userspace path's own counts);
//! - a manager, the cluster as its store says (nodes, tasks, services) and its Raft
//!   replica (term, indexes, leadership, proposals), recorded by the Raft loop itself.
//!
//! The cluster's counts are kept from the store's watch, off the Raft task: one view when
//! the follower subscribes (or resyncs), then each entry's changed records move their
//! counts. A scrape locks the tally and writes a few dozen lines, whatever the cluster's
//! size; it never asks the Raft loop anything.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use swarm_api::store::{Availability, Node, NodeRole, NodeStatus};
use swarm_api::task::{DesiredState, Task, TaskState};
use swarm_controller::raft::driver::{RaftHandle, RaftMetrics};
use swarm_controller::store::{Changed, Changes, Store};

/// What the daemon's parts record into, shared with the collectors that render it. Cheap to
/// clone: every field is shared.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Handed to each Raft loop this node starts.
    pub raft: RaftMetrics,
    /// The cluster's counts while this node is a manager that follows its store; `None`
    /// otherwise (a worker exports only its own).
    cluster: Arc<Mutex<Option<Tally>>>,
    own: Arc<Mutex<OwnTasks>>,
    /// The node's id and its endpoint table once its worker started: whose mesh counters
    /// to read, and which service publishes each port.
    mesh: Arc<Mutex<Option<MeshSource>>>,
}

#[derive(Debug)]
struct MeshSource {
    node_id: String,
    view: tokio::sync::watch::Receiver<swarm_api::endpoints::NetworkView>,
    relayed: swarm_agent::network::RelayedBytes,
}

impl Metrics {
    /// Adds this node's collectors to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ManagerCollector {
            raft: self.raft.clone(),
            cluster: self.cluster.clone(),
        }));
        registry.register_collector(Box::new(NodeCollector {
            own: self.own.clone(),
            mesh: self.mesh.clone(),
        }));
    }

    /// The node's worker started: its mesh is `node_id`'s, its services in `view`, the
    /// bytes of its userspace path in `relayed`.
    pub fn mesh_of(
        &self,
        node_id: &str,
        view: tokio::sync::watch::Receiver<swarm_api::endpoints::NetworkView>,
        relayed: swarm_agent::network::RelayedBytes,
    ) {
        *self.mesh.lock().expect("not poisoned") = Some(MeshSource {
            node_id: node_id.to_owned(),
            view,
            relayed,
        });
    }

    /// A status this node's worker reported for one of its tasks.
    pub fn own_task(&self, id: &str, state: TaskState) {
        self.own.lock().expect("not poisoned").record(id, state);
    }
}

/// Renders `registry` as Prometheus text.
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .expect("writing to a string cannot fail");
    text
}

/// Serves `GET /metrics` on `listener` until the task is aborted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
) -> std::io::Result<()> {
    axum::serve(listener, router(registry)).await
}

fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry)
}

async fn scrape(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&registry),
    )
}

/// Why `--metrics-addr` cannot be used with the cluster port `listen`, if it cannot: the
/// cluster port binds only once the node is a manager, so a clash would show up late.
pub fn clash(metrics: SocketAddr, listen: SocketAddr) -> Option<String> {
    let overlap = metrics.ip() == listen.ip()
        || metrics.ip().is_unspecified()
        || listen.ip().is_unspecified();
    (metrics.port() == listen.port() && overlap).then(|| {
        format!(
            "port {} is the cluster port (--listen-addr {listen})",
            metrics.port()
        )
    })
}

/// Keeps `metrics`' cluster tally from the store's watch while this manager runs, and clears
/// it when the task ends (aborted with the manager).
pub async fn follow_cluster(raft: RaftHandle<Store>, metrics: Metrics) {
    /// Clears the tally however this ends, an abort included.
    struct Clearing(Arc<Mutex<Option<Tally>>>);
    impl Drop for Clearing {
        fn drop(&mut self) {
            *self.0.lock().expect("not poisoned") = None;
        }
    }
    let cluster = Clearing(metrics.cluster);
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(Tally::of))
            .await
        else {
            return; // the replica stopped
        };
        let mut changes = subscription.changes;
        *cluster.0.lock().expect("not poisoned") = Some(subscription.view);
        let missed = loop {
            match changes.recv().await {
                Ok(entry) => {
                    if let Some(tally) = cluster.0.lock().expect("not poisoned").as_mut() {
                        tally.apply(&entry);
                    }
                }
                Err(missed) => break missed,
            }
        };
        tracing::debug!(%missed, "metrics: subscribing again");
    }
}

/// The labels of a node count: status, availability, role.
type NodeKey = (&'static str, &'static str, &'static str);
/// The labels of a task count: state, desired state.
type TaskKey = (&'static str, &'static str);

/// The cluster's counts, with each record's key, so that a changed record moves one count.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    nodes: HashMap<String, NodeKey>,
    tasks: HashMap<String, TaskKey>,
    services: HashSet<String>,
    /// Every label combination, counted or not: a series that appears only when its first
    /// node or task does makes rates and alerts miss that moment.
    node_counts: BTreeMap<NodeKey, u64>,
    task_counts: BTreeMap<TaskKey, u64>,
}

impl Default for Tally {
    fn default() -> Self {
        let node_counts = NODE_STATUSES
            .into_iter()
            .flat_map(|status| {
                AVAILABILITIES.into_iter().flat_map(move |available| {
                    ROLES.into_iter().map(move |node_role| {
                        let key = (
                            node_status(status),
                            availability(available),
                            role(node_role),
                        );
                        (key, 0)
                    })
                })
            })
            .collect();
        let task_counts = TASK_STATES
            .into_iter()
            .flat_map(|state| {
                DESIRED
                    .into_iter()
                    .map(move |wanted| ((state.as_str(), desired(wanted)), 0))
            })
            .collect();
        Tally {
            nodes: HashMap::new(),
            tasks: HashMap::new(),
            services: HashSet::new(),
            node_counts,
            task_counts,
        }
    }
}

impl Tally {
    /// The counts of the store's state.
    pub fn of(store: &Store) -> Tally {
        let data = store.data();
        let mut tally = Tally::default();
        for (id, node) in &data.nodes {
            tally.node(id, Some(node));
        }
        for (id, task) in &data.tasks {
            tally.task(id, Some(task));
        }
        tally.services = data
            .objects
            .services
            .iter()
            .map(|service| service.spec.name.clone())
            .collect();
        tally
    }

    /// Follows one applied entry.
    pub fn apply(&mut self, changes: &Changes) {
        for change in &changes.changed {
            match change {
                Changed::Node { id, node } => self.node(id, node.as_ref()),
                Changed::Task { id, task } => self.task(id, task.as_ref()),
                Changed::Service { name, service, .. } => {
                    if service.is_some() {
                        self.services.insert(name.clone());
                    } else {
                        self.services.remove(name);
                    }
                }
                _ => {}
            }
        }
    }

    fn node(&mut self, id: &str, node: Option<&Node>) {
        let key = node.map(|node| {
            (
                node_status(node.status),
                availability(node.availability),
                role(node.role),
            )
        });
        recount(&mut self.nodes, &mut self.node_counts, id, key);
    }

    fn task(&mut self, id: &str, task: Option<&Task>) {
        let key = task.map(|task| (task.status.state.as_str(), desired(task.desired)));
        recount(&mut self.tasks, &mut self.task_counts, id, key);
    }
}

/// Moves record `id` from the count of its old key to that of `key` (`None`: removed).
fn recount<K: Copy + Ord>(
    records: &mut HashMap<String, K>,
    counts: &mut BTreeMap<K, u64>,
    id: &str,
    key: Option<K>,
) {
    let before = match key {
        Some(key) => records.insert(id.to_owned(), key),
        None => records.remove(id),
    };
    if before == key {
        return;
    }
    if let Some(before) = before {
        *counts.entry(before).or_default() -= 1;
    }
    if let Some(key) = key {
        *counts.entry(key).or_default() += 1;
    }
}

/// Every value of each label, from which the counts start at 0.
const NODE_STATUSES: [NodeStatus; 3] = [NodeStatus::Unknown, NodeStatus::Ready, NodeStatus::Down];
const AVAILABILITIES: [Availability; 3] = [
    Availability::Active,
    Availability::Pause,
    Availability::Drain,
];
const ROLES: [NodeRole; 2] = [NodeRole::Manager, NodeRole::Worker];
const DESIRED: [DesiredState; 2] = [DesiredState::Running, DesiredState::Shutdown];
const TASK_STATES: [TaskState; 12] = [
    TaskState::New,
    TaskState::Pending,
    TaskState::Assigned,
    TaskState::Accepted,
    TaskState::Preparing,
    TaskState::Starting,
    TaskState::Running,
    TaskState::Complete,
    TaskState::Shutdown,
    TaskState::Failed,
    TaskState::Rejected,
    TaskState::Orphaned,
];

// The labels' values, as the CLI and the store's JSON spell them.
fn node_status(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Unknown => "unknown",
        NodeStatus::Ready => "ready",
        NodeStatus::Down => "down",
    }
}

fn availability(availability: Availability) -> &'static str {
    match availability {
        Availability::Active => "active",
        Availability::Pause => "pause",
        Availability::Drain => "drain",
    }
}

fn role(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Manager => "manager",
        NodeRole::Worker => "worker",
    }
}

fn desired(desired: DesiredState) -> &'static str {
    match desired {
        DesiredState::Running => "running",
        DesiredState::Shutdown => "shutdown",
    }
}

/// This node's own tasks, by the states its worker last reported; a task leaves when it
/// reaches a state it never leaves.
#[derive(Debug, Default)]
struct OwnTasks {
    states: HashMap<String, TaskState>,
    running: u64,
}

impl OwnTasks {
    fn record(&mut self, id: &str, state: TaskState) {
        let before = if state.is_terminal() {
            self.states.remove(id)
        } else {
            self.states.insert(id.to_owned(), state)
        };
        if before == Some(TaskState::Running) {
            self.running -= 1;
        }
        if state == TaskState::Running {
            self.running += 1;
        }
    }
}

/// The cluster's gauges and the Raft replica's metrics, only while this node is a manager.
#[derive(Debug)]
struct ManagerCollector {
    raft: RaftMetrics,
    cluster: Arc<Mutex<Option<Tally>>>,
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Counted under the lock, written after it: a scrape never holds up the follower
        // for longer than a copy of a few dozen numbers.
        let Some((nodes, tasks, services)) = self
            .cluster
            .lock()
            .expect("not poisoned")
            .as_ref()
            .map(|tally| {
                (
                    tally.node_counts.clone(),
                    tally.task_counts.clone(),
                    tally.services.len() as u64,
                )
            })
        else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "swarm_nodes",
            "Nodes in the cluster by status, availability and role.",
            None,
            MetricType::Gauge,
        )?;
        for ((status, availability, role), count) in &nodes {
            let labels = [
                ("status", *status),
                ("availability", *availability),
                ("role", *role),
            ];
            family.encode_family(&labels)?.encode_gauge(count)?;
        }
        let mut family = encoder.encode_descriptor(
            "swarm_tasks",
            "Tasks in the store by state and desired state.",
            None,
            MetricType::Gauge,
        )?;
        for ((state, desired), count) in &tasks {
            let labels = [("state", *state), ("desired_state", *desired)];
            family.encode_family(&labels)?.encode_gauge(count)?;
        }
        encoder
            .encode_descriptor(
                "swarm_services",
                "Services in the cluster.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&services)?;
        let raft = &self.raft;
        let plain: [(&str, &str, &dyn EncodeMetric); 6] = [
            ("swarm_raft_term", "This replica's Raft term.", &raft.term),
            (
                "swarm_raft_commit_index",
                "The highest Raft index this replica knows committed.",
                &raft.commit_index,
            ),
            (
                "swarm_raft_applied_index",
                "The highest Raft index applied to this replica's store.",
                &raft.applied_index,
            ),
            (
                "swarm_raft_is_leader",
                "1 while this replica leads, else 0.",
                &raft.is_leader,
            ),
            (
                "swarm_raft_leader_changes",
                "Leaders this replica has seen since the node started.",
                &raft.leader_changes,
            ),
            (
                "swarm_raft_proposals_failed",
                "Proposals not applied for their caller, by reason.",
                &raft.proposals_failed,
            ),
        ];
        for (name, help, metric) in plain {
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let latency = &raft.proposal_seconds;
        latency.encode(encoder.encode_descriptor(
            "swarm_raft_proposal_duration",
            "From the Raft loop taking a proposal to its entry applied on this replica.",
            Some(&Unit::Seconds),
            latency.metric_type(),
        )?)
    }
}

/// What every node exports of itself.
#[derive(Debug)]
struct NodeCollector {
    own: Arc<Mutex<OwnTasks>>,
    mesh: Arc<Mutex<Option<MeshSource>>>,
}

/// A published port's labels: service, protocol, port.
type PortLabels = (String, String, String);

/// The mesh's counts, labelled.
#[derive(Debug, Default, PartialEq)]
struct MeshCounts {
    connections: BTreeMap<PortLabels, u64>,
    /// By port and direction (`in`: from the clients to the tasks, `out`: back).
    bytes: BTreeMap<(PortLabels, &'static str), u64>,
    refused: u64,
}

/// The kernel's counters and the userspace path's bytes (`relayed`, TCP ports) labelled
/// with the service publishing each port; a port no service publishes any more is left
/// out.
fn label_mesh(
    services: &BTreeMap<(swarm_api::spec::Protocol, u16), String>,
    counters: &swarm_agent::network::MeshCounters,
    relayed: &BTreeMap<u16, (u64, u64)>,
) -> MeshCounts {
    use swarm_agent::network::MeshDirection;
    use swarm_api::spec::Protocol;
    let labels = |protocol: Protocol, port: u16| {
        let service = services.get(&(protocol, port))?;
        Some((service.clone(), protocol.to_string(), port.to_string()))
    };
    let mut counts = MeshCounts {
        refused: counters.refused,
        ..MeshCounts::default()
    };
    for ((protocol, port), count) in &counters.connections {
        if let Some(labels) = labels(*protocol, *port) {
            counts.connections.insert(labels, *count);
        }
    }
    for ((protocol, port, direction), count) in &counters.bytes {
        if let Some(labels) = labels(*protocol, *port) {
            *counts
                .bytes
                .entry((labels, direction.as_str()))
                .or_default() += count;
        }
    }
    for (port, (to_tasks, to_clients)) in relayed {
        if let Some(labels) = labels(Protocol::Tcp, *port) {
            for (direction, count) in [
                (MeshDirection::In, to_tasks),
                (MeshDirection::Out, to_clients),
            ] {
                *counts
                    .bytes
                    .entry((labels.clone(), direction.as_str()))
                    .or_default() += count;
            }
        }
    }
    counts
}

impl NodeCollector {
    /// The node's mesh counters with the service publishing each port (a port no service
    /// publishes any more is left out); none before the worker starts or when `nft` cannot
    /// be read (said in the log).
    fn mesh_counts(&self) -> Option<MeshCounts> {
        let (node_id, services, relayed) = {
            let source = self.mesh.lock().expect("not poisoned");
            let source = source.as_ref()?;
            let view = source.view.borrow();
            let services: BTreeMap<(swarm_api::spec::Protocol, u16), String> = view
                .mesh
                .services
                .values()
                .flat_map(|s| {
                    s.ports
                        .iter()
                        .filter_map(|p| Some(((p.protocol, p.published?), s.name.clone())))
                })
                .collect();
            (source.node_id.clone(), services, source.relayed.snapshot())
        };
        let counters = match swarm_agent::network::mesh_counters(&node_id) {
            Ok(counters) => counters,
            Err(error) => {
                tracing::debug!(%error, "metrics: cannot read the mesh's counters");
                return None;
            }
        };
        Some(label_mesh(&services, &counters, &relayed))
    }
}

impl Collector for NodeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let running = self.own.lock().expect("not poisoned").running;
        encoder
            .encode_descriptor(
                "swarm_node_tasks_running",
                "Tasks running on this node, as its worker reports them.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&running)?;
        let Some(MeshCounts {
            connections,
            bytes,
            refused,
        }) = self.mesh_counts()
        else {
            return Ok(());
        };
        let mut family = encoder.encode_descriptor(
            "swarm_mesh_connections",
            "Connections this node's routing mesh sent to a task (here or on another node), \
             by service and published port; ports with the PROXY protocol count where their \
             task runs.",
            None,
            MetricType::Counter,
        )?;
        for ((service, protocol, port), count) in &connections {
            let labels = [
                ("service", service.as_str()),
                ("protocol", protocol.as_str()),
                ("port", port.as_str()),
            ];
            family
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(count, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "swarm_mesh_bytes",
            "Bytes of the connections this node's routing mesh sent to a task, by service, \
             published port and direction (in: from the clients, out: to them); counted on \
             every node a connection crosses.",
            None,
            MetricType::Counter,
        )?;
        for (((service, protocol, port), direction), count) in &bytes {
            let labels = [
                ("service", service.as_str()),
                ("protocol", protocol.as_str()),
                ("port", port.as_str()),
                ("direction", direction),
            ];
            family
                .encode_family(&labels)?
                .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(count, None)?;
        }
        encoder
            .encode_descriptor(
                "swarm_mesh_refused",
                "Connections another node sent for a port with no serving task here, refused.",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&refused, None)
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::plan::Op;
    use swarm_api::spec::ServiceSpec;
    use swarm_api::state::Object;
    use swarm_api::store::{Cluster, Command, NodeStatusChange, TaskChange, TaskStatusUpdate};
    use swarm_api::task::TaskStatus;

    use super::*;
    use crate::fixtures::{plan, spec};

    fn node(id: &str, role: NodeRole) -> Command {
        Command::AddNode(Node {
            id: id.into(),
            hostname: format!("host-{id}"),
            role,
            availability: Availability::Active,
            status: NodeStatus::Ready,
            status_since: 1,
            labels: Default::default(),
            address: "127.0.0.1:2377".into(),
            raft_id: None,
            description: Default::default(),
            subnet: None,
            worker_error: None,
            ports_taken: Vec::new(),
        })
    }

    fn task(id: &str, service: &Object<ServiceSpec>, slot: u64) -> Task {
        Task {
            id: id.into(),
            service_id: service.id.clone().unwrap(),
            service_name: service.spec.name.clone(),
            slot: Some(slot),
            node_id: Some("n1".into()),
            spec: service.spec.task.clone(),
            desired: DesiredState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }
    }

    fn running(id: &str) -> Command {
        Command::TaskStatuses {
            node_id: "n1".into(),
            updates: vec![TaskStatusUpdate {
                id: id.into(),
                status: TaskStatus::new(TaskState::Running, 5),
            }],
        }
    }

    /// A store driven as Raft would drive it, with a tally following its watch.
    struct Followed {
        store: Store,
        index: u64,
        tally: Tally,
        changes: swarm_controller::store::Receiver,
    }

    impl Followed {
        fn new() -> Followed {
            let mut store = Store::default();
            store.apply_command(
                1,
                Command::InitCluster(Cluster {
                    id: "c".into(),
                    created_at: 0,
                    heartbeat_period_ms: 1000,
                    missed_heartbeats_for_down: 3,
                    certificate_validity_ms: 1,
                    worker_token_secret: String::new(),
                    manager_token_secret: String::new(),
                    address_pool: Default::default(),
                }),
            );
            let subscription = store.subscribe(Tally::of);
            Followed {
                store,
                index: 1,
                tally: subscription.view,
                changes: subscription.changes,
            }
        }

        /// Applies `command`, follows its changes, and checks the follower against a
        /// rescan of the whole state.
        fn apply(&mut self, command: Command) {
            self.index += 1;
            self.store.apply_command(self.index, command);
            while let Some(entry) = self.changes.try_recv().unwrap() {
                self.tally.apply(&entry);
            }
            assert_eq!(
                self.tally,
                Tally::of(&self.store),
                "after entry {}",
                self.index
            );
        }

        fn service(&self, name: &str) -> Object<ServiceSpec> {
            let services = self.store.export().services;
            services.into_iter().find(|s| s.spec.name == name).unwrap()
        }

        fn write(&mut self, changes: Vec<TaskChange>) {
            let expected_version = self.store.data().tasks_version;
            self.apply(Command::WriteTasks {
                expected_version,
                changes,
            });
        }
    }

    /// The lines of `text` that start with `prefix`.
    fn lines<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn the_meshs_bytes_add_the_kernels_and_the_userspace_paths_by_service() {
        use swarm_agent::network::{MeshCounters, MeshDirection};
        use swarm_api::spec::Protocol;
        let services = [
            ((Protocol::Tcp, 8080), "web".to_owned()),
            ((Protocol::Tcp, 8443), "proxied".to_owned()),
        ]
        .into();
        let counters = MeshCounters {
            connections: [((Protocol::Tcp, 8080), 3), ((Protocol::Tcp, 9999), 1)].into(),
            bytes: [
                ((Protocol::Tcp, 8080, MeshDirection::In), 300),
                ((Protocol::Tcp, 8080, MeshDirection::Out), 900),
                ((Protocol::Tcp, 8443, MeshDirection::In), 10),
                ((Protocol::Tcp, 9999, MeshDirection::In), 5),
            ]
            .into(),
            refused: 2,
        };
        let counts = label_mesh(&services, &counters, &[(8443, (100, 400))].into());
        let port =
            |service: &str, port: &str| (service.to_owned(), "tcp".to_owned(), port.to_owned());
        assert_eq!(counts.refused, 2);
        assert_eq!(
            counts.connections,
            [(port("web", "8080"), 3)].into(),
            "a port no service publishes is left out"
        );
        assert_eq!(
            counts.bytes,
            [
                ((port("proxied", "8443"), "in"), 110),
                ((port("proxied", "8443"), "out"), 400),
                ((port("web", "8080"), "in"), 300),
                ((port("web", "8080"), "out"), 900),
            ]
            .into()
        );
    }

    #[test]
    fn the_tally_follows_the_store_as_a_rescan_would_count_it() {
        let mut followed = Followed::new();
        followed.apply(node("n1", NodeRole::Manager));
        followed.apply(node("n2", NodeRole::Worker));
        followed.apply(plan(Op::Create, spec("web")));
        followed.apply(plan(Op::Create, spec("db")));
        let web = followed.service("s_web");
        followed.write(vec![
            TaskChange::Create(Box::new(task("w1", &web, 1))),
            TaskChange::Create(Box::new(task("w2", &web, 2))),
        ]);
        followed.apply(running("w1"));
        followed.apply(running("w2"));
        followed.apply(Command::NodeStatuses {
            at: 9,
            changes: vec![NodeStatusChange {
                id: "n2".into(),
                status: NodeStatus::Down,
                worker_error: None,
                ports_taken: Vec::new(),
            }],
        });
        let tally = &followed.tally;
        assert_eq!(tally.services.len(), 2);
        assert_eq!(tally.task_counts[&("running", "running")], 2);
        assert_eq!(tally.task_counts[&("assigned", "running")], 0);
        assert_eq!(tally.node_counts[&("ready", "active", "manager")], 1);
        assert_eq!(tally.node_counts[&("down", "active", "worker")], 1);
        assert_eq!(tally.node_counts[&("ready", "active", "worker")], 0);
        // Every combination is there from the start: 3 × 3 × 2 and 12 × 2.
        assert_eq!((tally.node_counts.len(), tally.task_counts.len()), (18, 24));
        followed.apply(plan(Op::Remove, spec("db")));
        assert_eq!(followed.tally.services.len(), 1);
    }

    #[test]
    fn a_manager_renders_the_cluster_and_its_replica_a_worker_only_itself() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.own_task("t1", TaskState::Preparing);
        metrics.own_task("t1", TaskState::Running);
        metrics.own_task("t2", TaskState::Running);
        metrics.own_task("t3", TaskState::Running);
        metrics.own_task("t3", TaskState::Failed);

        // A worker: no cluster, no Raft.
        let text = render(&registry);
        assert_eq!(
            lines(&text, "swarm_node_tasks_running"),
            ["swarm_node_tasks_running 2"]
        );
        assert!(lines(&text, "swarm_raft").is_empty(), "{text}");
        assert!(lines(&text, "swarm_tasks").is_empty(), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        // A manager whose store holds one running task of one service, on one node.
        let mut followed = Followed::new();
        followed.apply(node("n1", NodeRole::Manager));
        followed.apply(plan(Op::Create, spec("web")));
        let web = followed.service("s_web");
        followed.write(vec![TaskChange::Create(Box::new(task("w1", &web, 1)))]);
        followed.apply(running("w1"));
        *metrics.cluster.lock().unwrap() = Some(followed.tally.clone());
        metrics.raft.term.set(3);
        metrics.raft.commit_index.set(42);
        metrics.raft.applied_index.set(41);
        metrics.raft.is_leader.set(1);
        metrics.raft.leader_changes.inc();
        metrics.raft.proposal_seconds.observe(0.0007);
        let text = render(&registry);
        for expected in [
            "# TYPE swarm_nodes gauge",
            r#"swarm_nodes{status="ready",availability="active",role="manager"} 1"#,
            r#"swarm_nodes{status="down",availability="drain",role="worker"} 0"#,
            "# TYPE swarm_tasks gauge",
            r#"swarm_tasks{state="running",desired_state="running"} 1"#,
            r#"swarm_tasks{state="pending",desired_state="running"} 0"#,
            "swarm_services 1",
            "# TYPE swarm_raft_term gauge",
            "swarm_raft_term 3",
            "swarm_raft_commit_index 42",
            "swarm_raft_applied_index 41",
            "swarm_raft_is_leader 1",
            "# TYPE swarm_raft_leader_changes counter",
            "swarm_raft_leader_changes_total 1",
            r#"swarm_raft_proposals_failed_total{reason="no_leader"} 0"#,
            r#"swarm_raft_proposals_failed_total{reason="leader_changed"} 0"#,
            r#"swarm_raft_proposals_failed_total{reason="abandoned"} 0"#,
            "# TYPE swarm_raft_proposal_duration_seconds histogram",
            "# UNIT swarm_raft_proposal_duration_seconds seconds",
            r#"swarm_raft_proposal_duration_seconds_bucket{le="0.0005"} 0"#,
            r#"swarm_raft_proposal_duration_seconds_bucket{le="0.001"} 1"#,
            r#"swarm_raft_proposal_duration_seconds_bucket{le="+Inf"} 1"#,
            "swarm_raft_proposal_duration_seconds_count 1",
            "swarm_node_tasks_running 2",
        ] {
            assert!(
                text.lines().any(|line| line == expected),
                "no line {expected:?} in\n{text}"
            );
        }
        assert_eq!(lines(&text, "swarm_nodes{").len(), 18);
        assert_eq!(lines(&text, "swarm_tasks{").len(), 24);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_metrics_port_may_not_be_the_cluster_port() {
        let address = |s: &str| s.parse::<SocketAddr>().unwrap();
        let listen = address("0.0.0.0:2377");
        assert_eq!(
            clash(address("127.0.0.1:2377"), listen).as_deref(),
            Some("port 2377 is the cluster port (--listen-addr 0.0.0.0:2377)")
        );
        assert!(clash(address("127.0.0.1:9323"), listen).is_none());
        // Two addresses of their own may share a port.
        assert!(clash(address("127.0.0.2:2377"), address("127.0.0.1:2377")).is_none());
        assert!(clash(address("0.0.0.0:2377"), address("127.0.0.1:2377")).is_some());
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_registry_at_metrics_only() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::ServiceExt;

        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let router = router(Arc::new(registry));
        let response = router
            .clone()
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8(body.to_vec()).unwrap();
        assert!(body.contains("swarm_node_tasks_running 0\n"), "{body}");
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
