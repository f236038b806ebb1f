//! The dispatcher, on every manager: heartbeats from every node, which the leader counts to
//! mark nodes Down when they go quiet and Ready when they come back; and certificate
//! renewal, which is also how a promoted or demoted node changes role; each node's
//! assignments (with the registry credentials of its tasks' services, and no others) and
//! its task status reports; and the nodes' log streams, handed to the manager's log broker
//! (see `logs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use raft::prelude::ConfChangeType;
use swarm_api::auth::RegistryAuth;
use swarm_api::grpc::dispatcher::dispatcher_server::{Dispatcher, DispatcherServer};
use swarm_api::grpc::dispatcher::{
    AssignmentSet, AssignmentsRequest, HeartbeatRequest, HeartbeatResponse, LogPublish,
    RenewCertificateRequest, RenewCertificateResponse, Replica, ReportTaskStatusRequest,
    ReportTaskStatusResponse, SubscribeLogsRequest,
};
use swarm_api::store::{Command, Node, NodeRole, NodeStatus, NodeStatusChange, TaskStatusUpdate};
use swarm_api::task::{DesiredState, Task};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::logs::{self, LogBroker, SubscriptionStream};
use super::{Daemon, change_voters, internal, millis, propose, raft_status, store_status};
use swarm_controller::ca::{NodeIdentity, Role};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::Store;
use swarm_controller::tls::peer_identity;

/// A node's assignments as last sent: its tasks, its subnet, its tasks' services'
/// registry credentials.
type Assigned = (Vec<Task>, String, BTreeMap<String, RegistryAuth>);

/// When each node was last heard from, on this manager while it leads.
pub type Heartbeats = Arc<std::sync::Mutex<HashMap<String, Instant>>>;

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
}

impl DispatcherApi {
    pub fn server(
        daemon: Arc<Daemon>,
        raft: RaftHandle<Store>,
        cluster_id: String,
        heartbeats: Heartbeats,
        logs: Arc<LogBroker>,
    ) -> DispatcherServer<Self> {
        DispatcherServer::new(DispatcherApi {
            daemon,
            raft,
            cluster_id,
            heartbeats,
            logs,
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
        let raft = self.raft.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut applied = raft.applied();
            let mut sent: Option<Assigned> = None;
            loop {
                let node_id = identity.node_id.clone();
                let Ok(assigned) = raft
                    .local_read(move |store: &Store| {
                        let subnet = store.data().nodes.get(&node_id).and_then(|n| n.subnet);
                        let subnet = subnet.map(|s| s.to_string()).unwrap_or_default();
                        let tasks = assigned_to(store, &node_id);
                        let services = tasks.iter().map(|t| t.service_id.as_str());
                        let auth = registry_auth_of(&store.data().registry_auth, services);
                        (tasks, subnet, auth)
                    })
                    .await
                else {
                    return; // the replica stopped: the agent reconnects elsewhere
                };
                if sent.as_ref() != Some(&assigned) {
                    let set = AssignmentSet {
                        tasks_json: serde_json::to_string(&assigned.0).expect("tasks serialise"),
                        subnet: assigned.1.clone(),
                        registry_auth_json: serde_json::to_string(&assigned.2)
                            .expect("credentials serialise"),
                    };
                    if sender.send(Ok(set)).await.is_err() {
                        return; // the agent went away
                    }
                    sent = Some(assigned);
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
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
        self.heartbeats
            .lock()
            .expect("not poisoned")
            .insert(identity.node_id, Instant::now());
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

/// What a node's agent is given: its tasks that should run, and those it should stop that
/// have not stopped yet.
fn assigned_to(store: &Store, node_id: &str) -> Vec<Task> {
    store
        .tasks_on(node_id)
        .filter(|t| t.desired == DesiredState::Running || !t.status.state.is_terminal())
        .cloned()
        .collect()
}

/// The credentials `kept` holds for `services` (the services of a node's tasks), by
/// service id: a node gets those of its own tasks' services only.
fn registry_auth_of<'a>(
    kept: &BTreeMap<String, RegistryAuth>,
    services: impl Iterator<Item = &'a str>,
) -> BTreeMap<String, RegistryAuth> {
    services
        .filter_map(|id| Some((id.to_owned(), kept.get(id)?.clone())))
        .collect()
}

/// While this manager leads: marks Down the nodes not heard from for the cluster's number of
/// missed periods, and Ready those heard from again, in one proposal per tick. A new leader
/// gives every node a full grace period before judging it.
pub async fn monitor(raft: RaftHandle<Store>, own_raft_id: u64, heartbeats: Heartbeats) {
    let mut leading_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(MONITOR_TICK).await;
        let Ok(status) = raft.status().await else {
            return;
        };
        if status.leader != own_raft_id {
            leading_since = None;
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        let Ok((cluster, nodes)) = raft
            .local_read(|store: &Store| {
                let data = store.data();
                let nodes: Vec<(String, NodeStatus)> = data
                    .nodes
                    .values()
                    .map(|n| (n.id.clone(), n.status))
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
        let now = Instant::now();
        let changes: Vec<NodeStatusChange> = {
            let mut seen = heartbeats.lock().expect("not poisoned");
            seen.retain(|id, _| nodes.iter().any(|(node, _)| node == id));
            nodes
                .into_iter()
                .filter_map(|(id, current)| {
                    let heard = seen.get(&id).filter(|at| **at >= since);
                    let wanted = match heard {
                        Some(at) if now.duration_since(*at) < grace => NodeStatus::Ready,
                        Some(_) => NodeStatus::Down,
                        // Not heard from since this manager leads: judged after the grace.
                        None if now.duration_since(since) < grace => current,
                        None => NodeStatus::Down,
                    };
                    (wanted != current).then_some(NodeStatusChange { id, status: wanted })
                })
                .collect()
        };
        if changes.is_empty() {
            continue;
        }
        for change in &changes {
            tracing::info!(node = %change.id, status = ?change.status, "node status");
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

#[cfg(test)]
mod tests {
    use swarm_api::auth::RegistryCredential;

    use super::*;

    #[test]
    fn a_node_gets_the_credentials_of_its_own_tasks_services_only() {
        let auth = |user: &str| {
            RegistryAuth::from([(
                "127.0.0.1:5000".to_owned(),
                RegistryCredential {
                    username: user.into(),
                    password: "pw".into(),
                },
            )])
        };
        let kept = BTreeMap::from([
            ("web".to_owned(), auth("web")),
            ("db".to_owned(), auth("db")),
        ]);
        let cases: [(&[&str], &[&str]); 4] = [
            (&["web", "web"], &["web"]),
            (&["web", "db", "cache"], &["db", "web"]),
            (&["cache"], &[]),
            (&[], &[]),
        ];
        for (services, want) in cases {
            let sent = registry_auth_of(&kept, services.iter().copied());
            assert_eq!(sent.keys().map(String::as_str).collect::<Vec<_>>(), want);
            for (id, auth) in &sent {
                assert_eq!(auth, &kept[id]);
            }
        }
    }
}
