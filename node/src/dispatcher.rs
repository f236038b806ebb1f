//! The dispatcher, on every manager: heartbeats from every node, which the leader counts to
//! mark nodes Down when they go quiet and Ready when they come back; and certificate
//! renewal, which is also how a promoted or demoted node changes role; each node's
//! assignments (with the registry credentials of its tasks' services, and no others, and
//! the endpoints of the overlay networks its tasks are on) and
//! its task status reports; and the nodes' log streams, handed to the manager's log broker
//! (see `logs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use raft::prelude::ConfChangeType;
use swarm_api::grpc::dispatcher::dispatcher_server::{Dispatcher, DispatcherServer};
use swarm_api::grpc::dispatcher::{
    AssignmentSet, AssignmentsRequest, HeartbeatRequest, HeartbeatResponse, LogPublish,
    RenewCertificateRequest, RenewCertificateResponse, Replica, ReportTaskStatusRequest,
    ReportTaskStatusResponse, SubscribeLogsRequest,
};
use swarm_api::store::{Command, Node, NodeRole, NodeStatus, NodeStatusChange, TaskStatusUpdate};
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::logs::{self, LogBroker, SubscriptionStream};
use super::{Daemon, change_voters, internal, millis, propose, raft_status, store_status};
use swarm_controller::ca::{NodeIdentity, Role};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::{Assignment, Assignments, Changes, Store};
use swarm_controller::tls::peer_identity;

/// What each node last said, on this manager while it leads.
pub type Heartbeats = Arc<std::sync::Mutex<HashMap<String, Heard>>>;

/// A node's last heartbeat: when, why its worker cannot run tasks (`None`: it can), and the
/// published ports another process holds on it.
#[derive(Debug, Clone)]
pub struct Heard {
    at: Instant,
    worker_error: Option<String>,
    ports_taken: Vec<String>,
}

impl Heard {
    pub fn new(at: Instant, worker_error: Option<String>) -> Self {
        Heard {
            at,
            worker_error,
            ports_taken: Vec::new(),
        }
    }

    /// The same heartbeat, saying that another process holds `ports` (`8080/tcp`) on the
    /// node.
    pub fn with_ports_taken(mut self, mut ports: Vec<String>) -> Self {
        ports.sort();
        ports.dedup();
        self.ports_taken = ports;
        self
    }
}

/// A node as the leader's monitor judges it: id, status, worker error and the ports another
/// process holds on it, as the store has them.
pub type StoredNode = (String, NodeStatus, Option<String>, Vec<String>);

/// Set on the refusal of a removed node's certificate, so that the node leaves by itself.
pub const REMOVED_HEADER: &str = "swarm-node-removed";

/// How often the leader looks for nodes that went quiet or came back.
const MONITOR_TICK: Duration = Duration::from_millis(100);

pub struct DispatcherApi {
    daemon: Arc<Daemon>,
    raft: RaftHandle<Store>,
    cluster_id: String,
    heartbeats: Heartbeats,
    logs: Arc<LogBroker>,
    assignments: Arc<AssignmentHub>,
}

impl DispatcherApi {
    pub fn server(
        daemon: Arc<Daemon>,
        raft: RaftHandle<Store>,
        cluster_id: String,
        heartbeats: Heartbeats,
        logs: Arc<LogBroker>,
        assignments: Arc<AssignmentHub>,
    ) -> DispatcherServer<Self> {
        DispatcherServer::new(DispatcherApi {
            daemon,
            raft,
            cluster_id,
            heartbeats,
            logs,
            assignments,
        })
    }
}

fn removed(node_id: &str) -> Status {
    let mut status = Status::permission_denied(format!(
        "node {node_id} was removed from the cluster; to come back, it must join again with a join token"
    ));
    status
        .metadata_mut()
        .insert(REMOVED_HEADER, "1".parse().expect("a valid header value"));
    status
}

fn unknown(node_id: &str) -> Status {
    Status::not_found(format!("node {node_id} is not part of this cluster"))
}

/// What a manager's store says about a caller.
struct Caller {
    node: Option<Node>,
    removed: bool,
    period_ms: u64,
    managers: Vec<String>,
    leader_addr: String,
}

#[tonic::async_trait]
impl Dispatcher for DispatcherApi {
    type AssignmentsStream = ReceiverStream<Result<AssignmentSet, Status>>;
    type LogsStream = SubscriptionStream;
    type SubscribeLogsStream = ReceiverStream<Result<LogPublish, Status>>;

    async fn logs(
        &self,
        request: Request<Streaming<LogPublish>>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        let mut published = request.into_inner();
        let (node, subscriptions) = self.logs.connect(&identity.node_id);
        tokio::spawn(async move {
            while let Ok(Some(publish)) = published.message().await {
                node.publish(publish).await;
            }
            node.disconnect().await;
        });
        Ok(Response::new(subscriptions))
    }

    async fn subscribe_logs(
        &self,
        request: Request<SubscribeLogsRequest>,
    ) -> Result<Response<Self::SubscribeLogsStream>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        if identity.role != Role::Manager {
            return Err(Status::permission_denied(format!(
                "{} is not a manager: only managers ask each other for logs",
                identity.node_id
            )));
        }
        logs::serve_manager(&self.logs, request.into_inner()).map(Response::new)
    }

    async fn assignments(
        &self,
        request: Request<AssignmentsRequest>,
    ) -> Result<Response<Self::AssignmentsStream>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        let mut assigned = self.assignments.follow(&identity.node_id);
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut sent: Option<Assignment> = None;
            loop {
                let now = assigned.borrow_and_update().clone();
                if let Some(now) = now
                    && sent.as_ref() != Some(&now)
                {
                    let set = AssignmentSet {
                        tasks_json: serde_json::to_string(&now.tasks).expect("tasks serialise"),
                        subnet: now.subnet.clone(),
                        registry_auth_json: serde_json::to_string(&now.registry_auth)
                            .expect("credentials serialise"),
                        network_view_json: serde_json::to_string(&now.network_view)
                            .expect("the network view serialises"),
                        file_contents_json: serde_json::to_string(&now.file_contents)
                            .expect("contents serialise"),
                    };
                    if sender.send(Ok(set)).await.is_err() {
                        return; // the agent went away
                    }
                    sent = Some(now);
                }
                tokio::select! {
                    // Closed: the replica stopped, the agent reconnects elsewhere.
                    changed = assigned.changed() => if changed.is_err() { return },
                    _ = sender.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn report_task_status(
        &self,
        request: Request<ReportTaskStatusRequest>,
    ) -> Result<Response<ReportTaskStatusResponse>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        let updates: Vec<TaskStatusUpdate> =
            serde_json::from_str(&request.into_inner().updates_json)
                .map_err(|e| Status::invalid_argument(format!("invalid task statuses: {e}")))?;
        // The store takes a status only from the node the task is assigned to.
        let command = Command::TaskStatuses {
            node_id: identity.node_id,
            updates,
        };
        propose(&self.raft, &command).await.map_err(store_status)?;
        Ok(Response::new(ReportTaskStatusResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        let request = request.into_inner();
        let worker_error = Some(request.worker_error).filter(|e| !e.is_empty());
        let ports_taken = request.ports_taken;
        let status = self.raft.status().await.map_err(raft_status)?;
        let node_id = identity.node_id.clone();
        let caller = self
            .raft
            .local_read(move |store: &Store| {
                let data = store.data();
                let address_of = |raft_id: u64| {
                    data.nodes
                        .values()
                        .find(|n| n.raft_id == Some(raft_id))
                        .map(|n| n.address.clone())
                };
                let mut managers: Vec<String> = data
                    .nodes
                    .values()
                    .filter(|n| n.raft_id.is_some())
                    .map(|n| n.address.clone())
                    .collect();
                managers.sort();
                Caller {
                    node: data.nodes.get(&node_id).cloned(),
                    removed: data.removed_nodes.contains(&node_id),
                    period_ms: data
                        .cluster
                        .as_ref()
                        .map_or(1000, |c| c.heartbeat_period_ms),
                    managers,
                    leader_addr: address_of(status.leader).unwrap_or_default(),
                }
            })
            .await
            .map_err(raft_status)?;
        if caller.removed {
            return Err(removed(&identity.node_id));
        }
        if status.leader != status.id {
            return Ok(Response::new(HeartbeatResponse {
                accepted: false,
                leader_addr: caller.leader_addr,
                period_ms: caller.period_ms,
                managers: caller.managers,
                manager: false,
            }));
        }
        let node = caller.node.ok_or_else(|| unknown(&identity.node_id))?;
        self.heartbeats.lock().expect("not poisoned").insert(
            identity.node_id,
            Heard::new(Instant::now(), worker_error).with_ports_taken(ports_taken),
        );
        Ok(Response::new(HeartbeatResponse {
            accepted: true,
            leader_addr: caller.leader_addr,
            period_ms: caller.period_ms,
            managers: caller.managers,
            manager: node.role == NodeRole::Manager,
        }))
    }

    async fn renew_certificate(
        &self,
        request: Request<RenewCertificateRequest>,
    ) -> Result<Response<RenewCertificateResponse>, Status> {
        let identity = peer_identity(&request, &self.cluster_id)?;
        let csr_pem = request.into_inner().csr_pem;
        let node_id = identity.node_id.clone();
        let (cluster, nodes, is_removed) = self
            .raft
            .read(move |store: &Store| {
                let data = store.data();
                (
                    data.cluster.clone(),
                    data.nodes.clone(),
                    data.removed_nodes.contains(&node_id),
                )
            })
            .await
            .map_err(raft_status)?;
        if is_removed {
            return Err(removed(&identity.node_id));
        }
        let cluster =
            cluster.ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
        let node = nodes
            .get(&identity.node_id)
            .ok_or_else(|| unknown(&identity.node_id))?;
        let mut raft_id = node.raft_id;
        if node.role == NodeRole::Manager && raft_id.is_none() {
            // A promoted node: it becomes a voter now, and starts its replica on the answer.
            let id = nodes.values().filter_map(|n| n.raft_id).max().unwrap_or(0) + 1;
            change_voters(
                &self.raft,
                ConfChangeType::AddNode,
                id,
                &Command::JoinRaft {
                    id: node.id.clone(),
                    raft_id: id,
                },
            )
            .await
            .map_err(store_status)?;
            raft_id = Some(id);
        }
        let manager = node.role == NodeRole::Manager;
        let ca = self.daemon.root_ca().map_err(internal)?;
        let cert_pem = ca
            .issue(
                &csr_pem,
                &NodeIdentity {
                    node_id: node.id.clone(),
                    role: if manager { Role::Manager } else { Role::Worker },
                    cluster_id: cluster.id.clone(),
                },
                SystemTime::now(),
                Duration::from_millis(cluster.certificate_validity_ms),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let replicas = nodes
            .values()
            .filter(|n| n.id != node.id)
            .filter_map(|n| {
                Some(Replica {
                    raft_id: n.raft_id?,
                    address: n.address.clone(),
                })
            })
            .collect();
        tracing::info!(node = %node.id, manager, "issued a certificate");
        Ok(Response::new(RenewCertificateResponse {
            cert_pem,
            manager,
            ca_key_pem: if manager {
                ca.key_pem().to_owned()
            } else {
                String::new()
            },
            raft_id: raft_id.unwrap_or(0),
            replicas,
        }))
    }
}

/// Each connected node's assignments, as `follow_assignments` keeps them: one task follows
/// the store's watch for every node, and a node's session wakes only when its own
/// assignments changed, its network view included (a task on another node of a network it
/// carries changing state wakes it).
#[derive(Default)]
pub struct AssignmentHub(std::sync::Mutex<Followed>);

#[derive(Default)]
struct Followed {
    /// Unknown until the watch's first view.
    assignments: Option<Assignments>,
    /// `None` until the assignments are known.
    nodes: HashMap<String, watch::Sender<Option<Assignment>>>,
}

impl AssignmentHub {
    /// Node `node_id`'s assignments, current and to come.
    fn follow(&self, node_id: &str) -> watch::Receiver<Option<Assignment>> {
        let mut followed = self.0.lock().expect("not poisoned");
        let now = followed.assignments.as_ref().map(|a| a.of_node(node_id));
        match followed.nodes.get(node_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = watch::channel(now);
                followed.nodes.insert(node_id.to_owned(), sender);
                receiver
            }
        }
    }

    /// Starts again from `assignments` (a fresh view): every followed node is told.
    fn reset(&self, assignments: Assignments) {
        let mut followed = self.0.lock().expect("not poisoned");
        followed
            .nodes
            .retain(|_, sender| sender.receiver_count() > 0);
        for (node, sender) in &followed.nodes {
            tell(sender, assignments.of_node(node));
        }
        followed.assignments = Some(assignments);
    }

    /// Follows one entry's changes: the followed nodes whose assignments changed are told.
    fn apply(&self, entry: &Changes) {
        let mut followed = self.0.lock().expect("not poisoned");
        let Followed { assignments, nodes } = &mut *followed;
        let Some(assignments) = assignments else {
            return;
        };
        for node in assignments.apply(entry) {
            if let Some(sender) = nodes.get(&node) {
                tell(sender, assignments.of_node(&node));
            }
        }
    }

    /// Ends every session's stream: their agents reconnect (elsewhere, if this manager
    /// stopped).
    fn close(&self) {
        let mut followed = self.0.lock().expect("not poisoned");
        *followed = Followed::default();
    }
}

/// Wakes a node's session if its assignments changed.
fn tell(sender: &watch::Sender<Option<Assignment>>, now: Assignment) {
    sender.send_if_modified(|sent| {
        let changed = sent.as_ref() != Some(&now);
        *sent = Some(now);
        changed
    });
}

/// Keeps the hub's assignments current from the store's watch, on every manager (an agent
/// may follow any of them), for as long as the replica runs. Per entry it costs the tasks
/// and nodes that changed, and the sets of the nodes they are on; never a scan.
pub async fn follow_assignments(raft: RaftHandle<Store>, hub: Arc<AssignmentHub>) {
    /// Closes the sessions however this ends, an abort included.
    struct Closing(Arc<AssignmentHub>);
    impl Drop for Closing {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let closing = Closing(hub);
    let hub = &closing.0;
    loop {
        let Ok(subscription) = raft
            .local_read(|store: &Store| store.subscribe(Assignments::of))
            .await
        else {
            return; // the replica stopped
        };
        let mut changes = subscription.changes;
        hub.reset(subscription.view);
        let missed = loop {
            match changes.recv().await {
                Ok(entry) => hub.apply(&entry),
                Err(missed) => break missed,
            }
        };
        tracing::debug!(%missed, "assignments: subscribing again");
    }
}

/// While this manager leads: marks Down the nodes not heard from for the cluster's number of
/// missed periods, and Ready those heard from again, and records what their workers said, in
/// one proposal per tick. A new leader gives every node a full grace period before judging
/// it.
pub async fn monitor(raft: RaftHandle<Store>, own_raft_id: u64, heartbeats: Heartbeats) {
    let mut leading_since: Option<Instant> = None;
    let mut first_seen = HashMap::new();
    loop {
        tokio::time::sleep(MONITOR_TICK).await;
        let Ok(status) = raft.status().await else {
            return;
        };
        if status.leader != own_raft_id {
            leading_since = None;
            first_seen.clear();
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let Ok((cluster, nodes)) = raft
            .local_read(|store: &Store| {
                let data = store.data();
                let nodes: Vec<StoredNode> = data
                    .nodes
                    .values()
                    .map(|n| {
                        let taken = n.ports_taken.clone();
                        (n.id.clone(), n.status, n.worker_error.clone(), taken)
                    })
                    .collect();
                (data.cluster.clone(), nodes)
            })
            .await
        else {
            return;
        };
        let Some(cluster) = cluster else {
            continue;
        };
        let grace = Duration::from_millis(
            cluster.heartbeat_period_ms * u64::from(cluster.missed_heartbeats_for_down),
        );
        let changes = {
            let mut heard = heartbeats.lock().expect("not poisoned");
            heard.retain(|id, _| nodes.iter().any(|(node, ..)| node == id));
            judge_nodes(
                &nodes,
                &heard,
                &mut first_seen,
                since,
                grace,
                Instant::now(),
            )
        };
        if changes.is_empty() {
            continue;
        }
        for change in &changes {
            tracing::info!(node = %change.id, status = ?change.status, worker_error = ?change.worker_error, ports_taken = ?change.ports_taken, "node status");
        }
        let command = Command::NodeStatuses {
            at: millis(SystemTime::now()),
            changes,
        };
        if let Err(error) = propose(&raft, &command).await {
            tracing::warn!(%error, "cannot record node statuses");
        }
    }
}

/// What the leader's monitor makes of the nodes (id, status, worker error, ports taken as
/// stored) at `now`, leading since `since`: Ready while heard within `grace`, Down once not,
/// with the worker error and ports taken last heard. A node not heard from since this manager leads keeps its
/// status for `grace` after the monitor first saw it (the monitor records that in
/// `first_seen`): a new leader, or a node that just joined, is not judged before it could
/// have beaten. Pure: the daemon and the cluster simulation judge with it.
pub fn judge_nodes(
    nodes: &[StoredNode],
    heard: &HashMap<String, Heard>,
    first_seen: &mut HashMap<String, Instant>,
    since: Instant,
    grace: Duration,
    now: Instant,
) -> Vec<NodeStatusChange> {
    let ids: std::collections::HashSet<&str> = nodes.iter().map(|(id, ..)| id.as_str()).collect();
    first_seen.retain(|id, _| ids.contains(id.as_str()));
    nodes
        .iter()
        .filter_map(|(id, current, current_error, current_taken)| {
            let heard = heard.get(id).filter(|heard| heard.at >= since);
            let seen = (*first_seen.entry(id.clone()).or_insert(now)).max(since);
            let wanted = match heard {
                Some(heard) if now.duration_since(heard.at) < grace => NodeStatus::Ready,
                Some(_) => NodeStatus::Down,
                None if now.duration_since(seen) < grace => *current,
                None => NodeStatus::Down,
            };
            let worker_error =
                heard.map_or(current_error.clone(), |heard| heard.worker_error.clone());
            let ports_taken =
                heard.map_or(current_taken.clone(), |heard| heard.ports_taken.clone());
            let changed = wanted != *current
                || worker_error != *current_error
                || ports_taken != *current_taken;
            changed.then(|| NodeStatusChange {
                id: id.clone(),
                status: wanted,
                worker_error,
                ports_taken,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_judged_by_their_heartbeats_after_a_grace() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let grace = 3 * second;
        let nodes = vec![
            ("quiet".to_owned(), NodeStatus::Ready, None, Vec::new()),
            ("beating".to_owned(), NodeStatus::Down, None, Vec::new()),
            ("no-runc".to_owned(), NodeStatus::Ready, None, Vec::new()),
        ];
        let mut first_seen = HashMap::new();
        let mut heard = HashMap::from([
            ("beating".to_owned(), Heard::new(start + second, None)),
            (
                "no-runc".to_owned(),
                Heard::new(start + second, Some("runc not found in PATH".to_owned())),
            ),
        ]);
        let judge = |heard: &HashMap<String, Heard>, first_seen: &mut _, at: Duration| {
            judge_nodes(&nodes, heard, first_seen, start, grace, start + at)
                .into_iter()
                .map(|c| (c.id, c.status, c.worker_error))
                .collect::<Vec<_>>()
        };
        let error = Some("runc not found in PATH".to_owned());
        // Leading from `start`, the monitor looks at once and every tick after.
        assert_eq!(
            judge(&HashMap::new(), &mut first_seen, Duration::ZERO),
            vec![]
        );
        assert_eq!(
            judge(&heard, &mut first_seen, 2 * second),
            vec![
                ("beating".to_owned(), NodeStatus::Ready, None),
                ("no-runc".to_owned(), NodeStatus::Ready, error.clone()),
            ],
            "the quiet node is within its grace"
        );
        assert_eq!(
            judge(&heard, &mut first_seen, 3 * second + second / 2)[0],
            ("quiet".to_owned(), NodeStatus::Down, None)
        );
        // A node that joins later gets its own grace from when the monitor first sees it.
        let mut nodes = nodes;
        nodes.push(("new".to_owned(), NodeStatus::Ready, None, Vec::new()));
        heard.insert("quiet".to_owned(), Heard::new(start + 9 * second, None));
        let changes = judge_nodes(
            &nodes,
            &heard,
            &mut first_seen,
            start,
            grace,
            start + 10 * second,
        );
        assert!(changes.iter().all(|c| c.id != "new"), "{changes:?}");
        let changes = judge_nodes(
            &nodes,
            &heard,
            &mut first_seen,
            start,
            grace,
            start + 14 * second,
        );
        assert!(
            changes
                .iter()
                .any(|c| c.id == "new" && c.status == NodeStatus::Down),
            "{changes:?}"
        );
    }

    #[test]
    fn the_ports_a_node_says_are_taken_are_recorded_until_it_says_they_are_free() {
        let start = Instant::now();
        let grace = Duration::from_secs(3);
        let taken = vec!["8080/tcp".to_owned()];
        let mut first_seen = HashMap::new();
        let stored =
            |ports: &[String]| vec![("a".to_owned(), NodeStatus::Ready, None, ports.to_vec())];
        let heard = |ports: &[String]| {
            HashMap::from([(
                "a".to_owned(),
                Heard::new(start, None).with_ports_taken(ports.to_vec()),
            )])
        };
        let judge = |stored: &[StoredNode], heard: &HashMap<String, Heard>, first_seen: &mut _| {
            judge_nodes(stored, heard, first_seen, start, grace, start)
        };
        let changes = judge(&stored(&[]), &heard(&taken), &mut first_seen);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].ports_taken, taken);
        assert_eq!(changes[0].status, NodeStatus::Ready);
        assert!(
            judge(&stored(&taken), &heard(&taken), &mut first_seen).is_empty(),
            "recorded already"
        );
        let changes = judge(&stored(&taken), &heard(&[]), &mut first_seen);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].ports_taken.is_empty(), "cleared");
        // A node not heard from keeps what the store has.
        assert!(judge(&stored(&taken), &HashMap::new(), &mut first_seen).is_empty());
    }
}
