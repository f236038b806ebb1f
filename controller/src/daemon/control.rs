//! The control API: what the `swarm` command line asks of its daemon.

use std::sync::Arc;
use std::time::SystemTime;

use swarm_api::grpc::control::control_server::Control;
use swarm_api::grpc::control::{
    self as pb, ExportStateRequest, ExportStateResponse, InitRequest, InitResponse, JoinRequest,
    JoinResponse, JoinTokenRequest, JoinTokenResponse, ListNodesRequest, ListNodesResponse,
    RemoveNodeRequest, RemoveNodeResponse, UpdateNodeRequest, UpdateNodeResponse,
};
use swarm_api::store::{
    Availability, Cluster, Command, Node, NodeRole, NodeState, NodeStatus, NodeUpdate,
};
use tonic::{Request, Response, Status};

use super::{
    Daemon, Membership, internal, millis, propose, raft_status, random_id, wait_for_leader,
};
use crate::ca::token::JoinToken;
use crate::ca::{DEFAULT_NODE_VALIDITY, NodeIdentity, NodeKey, Role, RootCa};
use crate::raft::driver::RaftHandle;
use crate::raft::log::{DurableLog, Location};
use crate::raft::replica::StateMachine;
use crate::store::Store;

pub struct ControlApi {
    daemon: Arc<Daemon>,
}

impl ControlApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        ControlApi { daemon }
    }
}

impl Daemon {
    /// `swarm init`: a new cluster with this node as its only manager.
    async fn init(self: &Arc<Self>, advertise_addr: String) -> Result<InitResponse, Status> {
        let mut membership = self.membership.lock().await;
        if !matches!(*membership, Membership::Outside) {
            return Err(Status::already_exists(
                "this node is already part of a swarm; use `swarm leave` first",
            ));
        }
        let now = SystemTime::now();
        let cluster_id = random_id();
        let node_id = random_id();
        let ca = RootCa::generate(&cluster_id, now).map_err(internal)?;
        let key = NodeKey::generate().map_err(internal)?;
        let identity = NodeIdentity {
            node_id: node_id.clone(),
            role: Role::Manager,
            cluster_id: cluster_id.clone(),
        };
        let cert = ca
            .issue(
                &key.csr_pem().map_err(internal)?,
                &identity,
                now,
                DEFAULT_NODE_VALIDITY,
            )
            .map_err(internal)?;
        self.write_file("certs/ca.pem", ca.cert_pem().as_bytes(), false)
            .map_err(internal)?;
        self.write_file("certs/ca-key.pem", ca.key_pem().as_bytes(), true)
            .map_err(internal)?;
        self.write_file("certs/node.pem", cert.as_bytes(), false)
            .map_err(internal)?;
        self.write_file("certs/node-key.pem", key.pem().as_bytes(), true)
            .map_err(internal)?;
        let raft_path = self.path("raft.redb");
        let mut log = DurableLog::open(Location::File {
            path: &raft_path,
            durable: true,
        })
        .map_err(internal)?;
        log.bootstrap(&[1], Store::default().snapshot())
            .map_err(internal)?;
        drop(log);
        let state = NodeState {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: NodeRole::Manager,
            raft_id: Some(1),
            advertise_addr: self.advertise_addr(&advertise_addr),
        };
        let manager = self
            .start_manager(state.clone(), Default::default())
            .await
            .map_err(internal)?;
        wait_for_leader(&manager.raft).await?;
        let worker_token = JoinToken::generate(ca.cert_der()).to_string();
        let manager_token = JoinToken::generate(ca.cert_der()).to_string();
        let at = millis(now);
        let commands = [
            Command::InitCluster(Cluster {
                id: cluster_id.clone(),
                created_at: at,
                heartbeat_period_ms: 1000,
                missed_heartbeats_for_down: 3,
                worker_token_secret: worker_token.clone(),
                manager_token_secret: manager_token.clone(),
            }),
            Command::AddNode(Node {
                id: node_id.clone(),
                hostname: self.config.hostname.clone(),
                role: NodeRole::Manager,
                availability: Availability::Active,
                status: NodeStatus::Ready,
                status_since: at,
                labels: Default::default(),
                address: state.advertise_addr.clone(),
                raft_id: Some(1),
            }),
        ];
        for command in commands {
            propose(&manager.raft, &command).await?;
        }
        self.save_state(&state).map_err(internal)?;
        *membership = Membership::Manager(manager);
        Ok(InitResponse {
            node_id,
            cluster_id,
            worker_token,
            manager_token,
            advertise_addr: state.advertise_addr,
        })
    }
}

/// The id of the node a user named: its id, a unique prefix of an id, or a unique hostname.
async fn resolve_node(raft: &RaftHandle<Store>, name: String) -> Result<String, Status> {
    let nodes = raft
        .read(|store: &Store| {
            store
                .data()
                .nodes
                .values()
                .map(|n| (n.id.clone(), n.hostname.clone()))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(raft_status)?;
    if nodes.iter().any(|(id, _)| *id == name) {
        return Ok(name);
    }
    let matching: Vec<&String> = nodes
        .iter()
        .filter(|(id, hostname)| id.starts_with(&name) || *hostname == name)
        .map(|(id, _)| id)
        .collect();
    match matching.as_slice() {
        [id] => Ok((*id).clone()),
        [] => Err(Status::not_found(format!(
            "no node {name:?}: see `swarm node ls`"
        ))),
        _ => Err(Status::invalid_argument(format!(
            "{name:?} names {} nodes: give more of the id",
            matching.len()
        ))),
    }
}

fn role_of(role: i32) -> Result<NodeRole, Status> {
    match pb::Role::try_from(role) {
        Ok(pb::Role::Manager) => Ok(NodeRole::Manager),
        Ok(pb::Role::Worker) => Ok(NodeRole::Worker),
        _ => Err(Status::invalid_argument("the role is worker or manager")),
    }
}

fn pb_role(role: NodeRole) -> pb::Role {
    match role {
        NodeRole::Manager => pb::Role::Manager,
        NodeRole::Worker => pb::Role::Worker,
    }
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let advertise_addr = request.into_inner().advertise_addr;
        self.daemon.init(advertise_addr).await.map(Response::new)
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        let state = self.daemon.join_cluster(request).await?;
        Ok(Response::new(JoinResponse {
            node_id: state.node_id,
            role: pb_role(state.role) as i32,
        }))
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let (raft, state) = self.daemon.manager().await?;
        let nodes = raft
            .read(|store: &Store| store.data().nodes.values().cloned().collect::<Vec<_>>())
            .await
            .map_err(raft_status)?;
        // After the read, which waited for a leader to confirm it: the leader is known.
        let status = raft.status().await.map_err(raft_status)?;
        let nodes = nodes
            .into_iter()
            .map(|node| pb::Node {
                is_self: node.id == state.node_id,
                manager_status: match (node.role, node.raft_id) {
                    (NodeRole::Manager, Some(id)) if id == status.leader => "leader".to_owned(),
                    // Reachability needs heartbeats between managers, which come next.
                    (NodeRole::Manager, _) => "unknown".to_owned(),
                    (NodeRole::Worker, _) => String::new(),
                },
                id: node.id,
                hostname: node.hostname,
                role: pb_role(node.role) as i32,
                availability: format!("{:?}", node.availability).to_lowercase(),
                status: format!("{:?}", node.status).to_lowercase(),
                address: node.address,
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        let request = request.into_inner();
        let availability = match request.availability.as_str() {
            "" => None,
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            other => {
                return Err(Status::invalid_argument(format!(
                    "invalid availability {other:?}: use active, pause or drain"
                )));
            }
        };
        let (raft, _) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.node).await?;
        let update = NodeUpdate {
            id: id.clone(),
            availability,
            role: None,
            labels_add: request.label_add.into_iter().collect(),
            labels_remove: request.label_rm,
        };
        propose(&raft, &Command::UpdateNode(update)).await?;
        Ok(Response::new(UpdateNodeResponse { id }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let (raft, _) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.into_inner().node).await?;
        propose(&raft, &Command::RemoveNode { id: id.clone() }).await?;
        Ok(Response::new(RemoveNodeResponse { id }))
    }

    async fn export_state(
        &self,
        _: Request<ExportStateRequest>,
    ) -> Result<Response<ExportStateResponse>, Status> {
        let (raft, _) = self.daemon.manager().await?;
        let state = raft
            .read(|store: &Store| store.export())
            .await
            .map_err(raft_status)?;
        let json = serde_json::to_string_pretty(&state).expect("the state serialises") + "\n";
        Ok(Response::new(ExportStateResponse { json }))
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let request = request.into_inner();
        let role = role_of(request.role)?;
        let (raft, state) = self.daemon.manager().await?;
        if request.rotate {
            let ca = self.daemon.root_ca().map_err(internal)?;
            let secret = JoinToken::generate(ca.cert_der()).to_string();
            propose(&raft, &Command::RotateJoinToken { role, secret }).await?;
        }
        let token = raft
            .read(move |store: &Store| {
                store.data().cluster.as_ref().map(|cluster| match role {
                    NodeRole::Manager => cluster.manager_token_secret.clone(),
                    NodeRole::Worker => cluster.worker_token_secret.clone(),
                })
            })
            .await
            .map_err(raft_status)?
            .ok_or_else(|| Status::failed_precondition("the cluster is not initialised"))?;
        Ok(Response::new(JoinTokenResponse {
            token,
            manager_addr: state.advertise_addr,
        }))
    }
}
