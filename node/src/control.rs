//! The control API: what the `swarm` command line asks of its daemon.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use raft::prelude::ConfChangeType;

use swarm_api::grpc::control::control_server::Control;
use swarm_api::grpc::control::{
    self as pb, ApplyPlanRequest, ApplyPlanResponse, CreateServiceRequest, CreateServiceResponse,
    ExportStateRequest, ExportStateResponse, InitRequest, InitResponse, InspectNodeRequest,
    InspectNodeResponse, IssueClientCertificateRequest, IssueClientCertificateResponse,
    JoinRequest, JoinResponse, JoinTokenRequest, JoinTokenResponse, LeaveRequest, LeaveResponse,
    ListNodesRequest, ListNodesResponse, ListServicesRequest, ListServicesResponse,
    RemoveNodeRequest, RemoveNodeResponse, RemoveServiceRequest, RemoveServiceResponse,
    RollbackServiceRequest, RollbackServiceResponse, ServiceLogsMessage, ServiceLogsRequest,
    SetNodeRoleRequest, SetNodeRoleResponse, UnlockKeyRequest, UnlockKeyResponse, UnlockRequest,
    UnlockResponse, UpdateAutolockRequest, UpdateAutolockResponse, UpdateNodeRequest,
    UpdateNodeResponse, UpdateServiceRequest, UpdateServiceResponse,
};
use swarm_api::store::{
    AddressPool, Availability, Cluster, Command, DEFAULT_CERTIFICATE_VALIDITY_MS, Node, NodeRole,
    NodeState, NodeStatus, NodeUpdate,
};
use tonic::{Request, Response, Status};

use super::session::manager_channel;
use super::{
    Daemon, Membership, change_voters, describe_machine, internal, millis, propose, raft_status,
    random_id, store_status, wait_for_leader,
};
use super::{files, lock, logs, networks, repos, services, volumes};
use swarm_api::grpc::dispatcher::LogSubscription;
use swarm_controller::ca::token::JoinToken;
use swarm_controller::ca::{NodeIdentity, NodeKey, Role, RootCa};
use swarm_controller::raft::crypt::{DataKey, KeyFile, LogKeys, UnlockKey};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::StateMachine;
use swarm_controller::store::Store;
use swarm_controller::store::client::StoreClient;
use swarm_controller::tls::peer_identity;
use tokio_stream::wrappers::ReceiverStream;

/// The control API, served on the local unix socket (where the socket's permissions decide
/// who may call), and on a manager's cluster port for operators with an admin (or manager)
/// certificate of the cluster.
pub struct ControlApi {
    daemon: Arc<Daemon>,
    /// On the cluster port: the cluster whose certificates are accepted.
    remote_cluster: Option<String>,
}

impl ControlApi {
    pub fn local(daemon: Arc<Daemon>) -> Self {
        ControlApi {
            daemon,
            remote_cluster: None,
        }
    }

    pub fn remote(daemon: Arc<Daemon>, cluster_id: String) -> Self {
        ControlApi {
            daemon,
            remote_cluster: Some(cluster_id),
        }
    }

    /// Lets a call through: any local one; a remote one from an admin or a manager.
    fn allow<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(cluster_id) = &self.remote_cluster else {
            return Ok(());
        };
        let identity = peer_identity(request, cluster_id)?;
        match identity.role {
            Role::Admin | Role::Manager => Ok(()),
            Role::Worker => Err(Status::permission_denied(format!(
                "{} holds a worker certificate: the control API needs an admin certificate (`swarm client-cert` on a manager)",
                identity.node_id
            ))),
        }
    }

    /// Refuses a call that acts on the node itself, unless it came over the local socket.
    fn local_only(&self, command: &str) -> Result<(), Status> {
        match self.remote_cluster {
            None => Ok(()),
            Some(_) => Err(Status::permission_denied(format!(
                "`swarm {command}` acts on the node it runs on: run it there, over the node's unix socket"
            ))),
        }
    }
}

impl Daemon {
    /// `swarm init`: a new cluster with this node as its only manager.
    async fn init(self: &Arc<Self>, request: InitRequest) -> Result<InitResponse, Status> {
        let mut membership = self.membership.lock().await;
        if request.force_new_cluster {
            return self.force_new_cluster(&mut membership).await;
        }
        if !matches!(*membership, Membership::Outside) {
            return Err(Status::already_exists(
                "this node is already part of a swarm; use `swarm leave` first",
            ));
        }
        let advertise_addr = request.advertise_addr;
        let heartbeat_period_ms = match request.heartbeat_period_ms {
            0 => 1000,
            ms => ms,
        };
        let missed_heartbeats_for_down = match request.missed_heartbeats_for_down {
            0 => 3,
            n => n,
        };
        let certificate_validity_ms = match request.certificate_validity_ms {
            0 => DEFAULT_CERTIFICATE_VALIDITY_MS,
            ms => ms,
        };
        let address_pool = address_pool(
            &request.default_addr_pool,
            request.default_addr_pool_mask_length,
        )?;
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
                Duration::from_millis(certificate_validity_ms),
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
        // The log's key is written before the log: a crash between leaves a key for nothing,
        // never a log without its key.
        let unlock_key = request.autolock.then(UnlockKey::generate);
        let data_key = DataKey::generate();
        self.write_key_file(&KeyFile::wrap(&data_key, unlock_key.as_ref()))
            .map_err(internal)?;
        self.set_log_keys(LogKeys::new(data_key.clone()));
        let raft_path = self.path("raft.redb");
        let mut log = DurableLog::open(Location::File {
            path: &raft_path,
            durable: true,
            key: data_key,
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
            managers: Vec::new(),
        };
        let manager = self
            .start_manager(&state, Default::default())
            .await
            .map_err(internal)?;
        wait_for_leader(&manager.raft).await?;
        let worker_token = JoinToken::generate(ca.cert_der()).to_string();
        let manager_token = JoinToken::generate(ca.cert_der()).to_string();
        let at = millis(now);
        let commands = [
            Command::SetAutolock {
                unlock_key: unlock_key.as_ref().map(UnlockKey::to_string),
            },
            Command::InitCluster(Cluster {
                id: cluster_id.clone(),
                created_at: at,
                heartbeat_period_ms,
                missed_heartbeats_for_down,
                certificate_validity_ms,
                worker_token_secret: worker_token.clone(),
                manager_token_secret: manager_token.clone(),
                address_pool,
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
                description: describe_machine(self.config.data_path_port, self.config.metrics_addr),
                subnet: None,
                worker_error: None,
                ports_taken: Vec::new(),
            }),
        ];
        for command in commands {
            propose(&manager.raft, &command)
                .await
                .map_err(store_status)?;
        }
        self.save_state(&state).map_err(internal)?;
        *membership = Membership::Member(self.member(state.clone(), Some(manager)));
        Ok(InitResponse {
            node_id,
            cluster_id,
            worker_token,
            manager_token,
            advertise_addr: state.advertise_addr,
            unlock_key: unlock_key.map(|key| key.to_string()).unwrap_or_default(),
        })
    }
}

/// The id of the node a user named: its id, a unique prefix of an id, a unique hostname, or
/// `self` for the node that answers.
async fn resolve_node(
    raft: &RaftHandle<Store>,
    name: String,
    own: &NodeState,
) -> Result<String, Status> {
    if name == "self" {
        return Ok(own.node_id.clone());
    }
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

async fn read_node(raft: &RaftHandle<Store>, id: &str) -> Result<Node, Status> {
    let id = id.to_owned();
    raft.read(move |store: &Store| store.data().nodes.get(&id).cloned())
        .await
        .map_err(raft_status)?
        .ok_or_else(|| Status::not_found("the node was removed meanwhile"))
}

/// What `node ls` shows of a manager: the leader, or whether the leader hears from it.
fn manager_status(node: &Node, leader: u64) -> &'static str {
    match (node.role, node.raft_id) {
        (NodeRole::Worker, _) => "",
        (NodeRole::Manager, Some(id)) if id == leader => "leader",
        // Promoted; its replica has not joined yet.
        (NodeRole::Manager, None) => "unknown",
        (NodeRole::Manager, Some(_)) => match node.status {
            NodeStatus::Ready => "reachable",
            NodeStatus::Down => "unreachable",
            NodeStatus::Unknown => "unknown",
        },
    }
}

/// Marks a worker for promotion; it becomes a voter when it asks for its manager
/// certificate (at its next heartbeat). False when it is a manager already.
async fn promote(raft: &RaftHandle<Store>, id: &str) -> Result<bool, Status> {
    let node = read_node(raft, id).await?;
    if node.role == NodeRole::Manager {
        return Ok(false);
    }
    let update = NodeUpdate {
        id: id.to_owned(),
        role: Some(NodeRole::Manager),
        ..NodeUpdate::default()
    };
    propose(raft, &Command::UpdateNode(update))
        .await
        .map_err(store_status)?;
    tracing::info!(node = %id, "promoted to manager");
    Ok(true)
}

/// Removes a manager's voter (handing leadership on first if it leads), unless that would
/// leave the remaining managers without a reachable quorum. False when it is a worker.
pub(super) async fn demote(raft: &RaftHandle<Store>, id: &str) -> Result<bool, Status> {
    let node = read_node(raft, id).await?;
    if node.role == NodeRole::Worker {
        return Ok(false);
    }
    let Some(raft_id) = node.raft_id else {
        // Promoted but not a voter yet: taking the promotion back is enough.
        let update = NodeUpdate {
            id: id.to_owned(),
            role: Some(NodeRole::Worker),
            ..NodeUpdate::default()
        };
        propose(raft, &Command::UpdateNode(update))
            .await
            .map_err(store_status)?;
        return Ok(true);
    };
    let nodes = raft
        .read(|store: &Store| store.data().nodes.clone())
        .await
        .map_err(raft_status)?;
    let leader = raft.status().await.map_err(raft_status)?.leader;
    let others: Vec<&Node> = nodes
        .values()
        .filter(|n| n.raft_id.is_some() && n.id != id)
        .collect();
    if others.is_empty() {
        return Err(Status::failed_precondition(
            "this is the last manager of the cluster: promote another node first",
        ));
    }
    let reachable: Vec<&Node> = others
        .iter()
        .copied()
        .filter(|n| n.raft_id == Some(leader) || n.status == NodeStatus::Ready)
        .collect();
    let quorum = others.len() / 2 + 1;
    if reachable.len() < quorum {
        return Err(Status::failed_precondition(format!(
            "demoting {id} would leave {} reachable managers out of {}, fewer than the {quorum} a quorum needs: bring the unreachable managers back first",
            reachable.len(),
            others.len()
        )));
    }
    if raft_id == leader {
        let successor = reachable
            .iter()
            .find_map(|n| n.raft_id)
            .expect("a quorum is reachable");
        hand_over_leadership(raft, raft_id, successor).await?;
    }
    change_voters(
        raft,
        ConfChangeType::RemoveNode,
        raft_id,
        &Command::LeaveRaft { id: id.to_owned() },
    )
    .await
    .map_err(store_status)?;
    tracing::info!(node = %id, "demoted to worker");
    Ok(true)
}

/// Asks the leader `from` to hand leadership to `to`, and waits (bounded) for a new leader.
async fn hand_over_leadership(raft: &RaftHandle<Store>, from: u64, to: u64) -> Result<(), Status> {
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(10);
    let mut asked = start;
    raft.transfer_leadership(to).await.map_err(raft_status)?;
    loop {
        let leader = raft.status().await.map_err(raft_status)?.leader;
        if leader != from && leader != 0 {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        if now > deadline {
            return Err(Status::unavailable(
                "leadership could not be handed over within 10 s; try again",
            ));
        }
        // raft-rs abandons a transfer after an election timeout (the successor was behind,
        // or a message was lost): ask again rather than wait for nothing.
        if now - asked > Duration::from_secs(1) {
            asked = now;
            raft.transfer_leadership(to).await.map_err(raft_status)?;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The cluster's address pool from `init`'s flags (empty or 0: Docker's defaults).
fn address_pool(base: &str, mask_length: u32) -> Result<AddressPool, Status> {
    let default = AddressPool::default();
    let base = match base {
        "" => default.base,
        text => {
            let base: ipnet::Ipv4Net = text.parse().map_err(|_| {
                Status::invalid_argument(format!(
                    "--default-addr-pool {text:?} is not an IPv4 CIDR such as 10.20.0.0/16"
                ))
            })?;
            if base.trunc() != base {
                return Err(Status::invalid_argument(format!(
                    "--default-addr-pool {text:?} has host bits set: did you mean {}?",
                    base.trunc()
                )));
            }
            base
        }
    };
    let subnet_size = match mask_length {
        0 => default.subnet_size,
        n => u8::try_from(n).unwrap_or(u8::MAX),
    };
    // A node's subnet holds its gateway and at least a few tasks.
    if subnet_size < base.prefix_len() || subnet_size > 29 {
        return Err(Status::invalid_argument(format!(
            "--default-addr-pool-mask-length {subnet_size} must be between the pool's prefix ({}) and 29",
            base.prefix_len()
        )));
    }
    Ok(AddressPool { base, subnet_size })
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
        self.local_only("init")?;
        self.daemon
            .init(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        self.local_only("join")?;
        let request = request.into_inner();
        let state = self.daemon.join_cluster(request).await?;
        Ok(Response::new(JoinResponse {
            node_id: state.node_id,
            role: pb_role(state.role) as i32,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        self.allow(&request)?;
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
                message: node.status_message().unwrap_or_default(),
                ports_taken: node.ports_taken.clone(),
                manager_status: manager_status(&node, status.leader).to_owned(),
                id: node.id,
                hostname: node.hostname,
                role: pb_role(node.role) as i32,
                availability: format!("{:?}", node.availability).to_lowercase(),
                status: format!("{:?}", node.status).to_lowercase(),
                address: node.address,
                labels: node.labels.into_iter().collect(),
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn update_node(
        &self,
        request: Request<UpdateNodeRequest>,
    ) -> Result<Response<UpdateNodeResponse>, Status> {
        self.allow(&request)?;
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
        let (raft, state) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.node, &state).await?;
        let update = NodeUpdate {
            id: id.clone(),
            availability,
            role: None,
            labels_add: request.label_add.into_iter().collect(),
            labels_remove: request.label_rm,
        };
        propose(&raft, &Command::UpdateNode(update))
            .await
            .map_err(store_status)?;
        Ok(Response::new(UpdateNodeResponse { id }))
    }

    async fn remove_node(
        &self,
        request: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        self.allow(&request)?;
        let request = request.into_inner();
        let (raft, state) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.node, &state).await?;
        let node = read_node(&raft, &id).await?;
        if node.role == NodeRole::Manager {
            return Err(Status::failed_precondition(format!(
                "node {id} is a manager: demote it first (`swarm node demote {id}`)"
            )));
        }
        if node.status != NodeStatus::Down && !request.force {
            return Err(Status::failed_precondition(format!(
                "node {id} is not down and can't be removed: stop it or make it leave first (`swarm leave` on the node), or use --force"
            )));
        }
        propose(&raft, &Command::RemoveNode { id: id.clone() })
            .await
            .map_err(store_status)?;
        tracing::info!(node = %id, "node removed");
        Ok(Response::new(RemoveNodeResponse { id }))
    }

    async fn inspect_node(
        &self,
        request: Request<InspectNodeRequest>,
    ) -> Result<Response<InspectNodeResponse>, Status> {
        self.allow(&request)?;
        let (raft, state) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.into_inner().node, &state).await?;
        let node = read_node(&raft, &id).await?;
        let leader = raft.status().await.map_err(raft_status)?.leader;
        let message = node.status_message();
        let mut json = serde_json::json!({
            "ID": node.id,
            "Self": node.id == state.node_id,
            "Spec": {
                "Role": node.role,
                "Availability": node.availability,
                "Labels": node.labels,
            },
            "Description": { "Hostname": node.hostname },
            "Status": {
                "State": node.status,
                "Since": node.status_since,
                "Addr": node.address,
            },
            "ManagerStatus": node.raft_id.map(|raft_id| serde_json::json!({
                "Leader": raft_id == leader,
                "Reachability": manager_status(&node, leader),
                "Addr": node.address,
                "RaftID": raft_id,
            })),
        });
        // As Docker's: there only when there is something to say.
        if let Some(message) = message {
            json["Status"]["Message"] = message.into();
        }
        let json = serde_json::to_string_pretty(&json).expect("json serialises");
        Ok(Response::new(InspectNodeResponse { json }))
    }

    async fn set_node_role(
        &self,
        request: Request<SetNodeRoleRequest>,
    ) -> Result<Response<SetNodeRoleResponse>, Status> {
        self.allow(&request)?;
        let request = request.into_inner();
        let role = role_of(request.role)?;
        let (raft, state) = self.daemon.manager().await?;
        let id = resolve_node(&raft, request.node, &state).await?;
        let changed = match role {
            NodeRole::Manager => promote(&raft, &id).await?,
            NodeRole::Worker => demote(&raft, &id).await?,
        };
        Ok(Response::new(SetNodeRoleResponse { id, changed }))
    }

    async fn issue_client_certificate(
        &self,
        request: Request<IssueClientCertificateRequest>,
    ) -> Result<Response<IssueClientCertificateResponse>, Status> {
        self.local_only("client-cert")?;
        let request = request.into_inner();
        let (raft, _) = self.daemon.manager().await?;
        let cluster = raft
            .read(|store: &Store| store.data().cluster.clone())
            .await
            .map_err(raft_status)?
            .ok_or_else(|| Status::failed_precondition("the cluster is not initialised"))?;
        let name = request.name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
        {
            return Err(Status::invalid_argument(format!(
                "invalid client name {name:?}: use letters, digits and - _ . @"
            )));
        }
        let ca = self.daemon.root_ca().map_err(internal)?;
        let identity = NodeIdentity {
            node_id: name.to_owned(),
            role: Role::Admin,
            cluster_id: cluster.id,
        };
        let cert_pem = ca
            .issue(
                &request.csr_pem,
                &identity,
                SystemTime::now(),
                Duration::from_millis(cluster.certificate_validity_ms),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(client = name, "issued an admin certificate");
        Ok(Response::new(IssueClientCertificateResponse {
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        self.local_only("leave")?;
        self.daemon.leave(request.into_inner().force).await?;
        Ok(Response::new(LeaveResponse {}))
    }

    async fn export_state(
        &self,
        request: Request<ExportStateRequest>,
    ) -> Result<Response<ExportStateResponse>, Status> {
        self.allow(&request)?;
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
        self.allow(&request)?;
        let request = request.into_inner();
        let role = role_of(request.role)?;
        let (raft, state) = self.daemon.manager().await?;
        if request.rotate {
            let ca = self.daemon.root_ca().map_err(internal)?;
            let secret = JoinToken::generate(ca.cert_der()).to_string();
            propose(&raft, &Command::RotateJoinToken { role, secret })
                .await
                .map_err(store_status)?;
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

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        self.local_only("unlock")?;
        self.daemon.unlock(&request.into_inner().unlock_key).await?;
        Ok(Response::new(UnlockResponse {}))
    }

    async fn unlock_key(
        &self,
        request: Request<UnlockKeyRequest>,
    ) -> Result<Response<UnlockKeyResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let unlock_key = lock::unlock_key(&raft, request.into_inner().rotate).await?;
        Ok(Response::new(UnlockKeyResponse { unlock_key }))
    }

    async fn update_autolock(
        &self,
        request: Request<UpdateAutolockRequest>,
    ) -> Result<Response<UpdateAutolockResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let unlock_key = lock::set_autolock(&raft, request.into_inner().autolock).await?;
        Ok(Response::new(UpdateAutolockResponse { unlock_key }))
    }

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<CreateServiceResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        let id = services::create(
            &StoreClient::new(raft),
            &request.spec_json,
            &request.registry_auth_json,
        )
        .await?;
        Ok(Response::new(CreateServiceResponse { id }))
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<UpdateServiceResponse>, Status> {
        self.allow(&request)?;
        let request = request.into_inner();
        let (raft, _) = self.daemon.manager().await?;
        services::update(
            &StoreClient::new(raft),
            &self.daemon.service_turns,
            &request.service,
            &request.spec_json,
            request.version,
            &request.base_spec_json,
            &request.registry_auth_json,
        )
        .await?;
        Ok(Response::new(UpdateServiceResponse {}))
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let removed = services::remove(
            &StoreClient::new(raft),
            &self.daemon.service_turns,
            &request.into_inner().services,
        )
        .await?;
        Ok(Response::new(RemoveServiceResponse { removed }))
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let view = services::view(&StoreClient::new(raft.clone())).await?;
        let json = serde_json::to_string(&view).expect("the view serialises");
        Ok(Response::new(ListServicesResponse { json }))
    }

    async fn apply_plan(
        &self,
        request: Request<ApplyPlanRequest>,
    ) -> Result<Response<ApplyPlanResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        services::apply_plan(
            &StoreClient::new(raft),
            &request.plan_json,
            &request.registry_auth_json,
            request.file_contents.into_iter().collect(),
            request.force,
        )
        .await?;
        Ok(Response::new(ApplyPlanResponse {}))
    }

    async fn rollback_service(
        &self,
        request: Request<RollbackServiceRequest>,
    ) -> Result<Response<RollbackServiceResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        services::rollback(
            &StoreClient::new(raft),
            &self.daemon.service_turns,
            &request.into_inner().service,
        )
        .await?;
        Ok(Response::new(RollbackServiceResponse {}))
    }

    type ServiceLogsStream = ReceiverStream<Result<ServiceLogsMessage, Status>>;

    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        self.allow(&request)?;
        let request = request.into_inner();
        let (raft, state, broker) = self.daemon.log_broker().await?;
        let view = services::view(&StoreClient::new(raft.clone())).await?;
        let tasks = logs::target_tasks(&view, &request.target)?;
        let nodes = logs::by_node(&tasks);
        let known: std::collections::HashSet<String> = tasks.iter().map(|t| t.id.clone()).collect();
        // Following a service (not one task), its tasks that start later are followed too.
        let followed_service = match view.service(&request.target) {
            Ok(service) if request.follow => service.id.clone(),
            _ => None,
        };
        let own = state.node_id.clone();
        let managers = raft
            .local_read(move |store: &Store| {
                store
                    .data()
                    .nodes
                    .values()
                    .filter(|n| n.raft_id.is_some() && n.id != own)
                    .map(|n| n.address.clone())
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(raft_status)?;
        let credentials = self.daemon.credentials().map_err(internal)?;
        let remotes: Vec<logs::Remote> = managers
            .into_iter()
            .map(|address| logs::Remote {
                channel: manager_channel(&address, &credentials),
                address,
            })
            .collect();
        let template = LogSubscription {
            follow: request.follow,
            tail: request.tail,
            since_ns: request.since_ns,
            ..LogSubscription::default()
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(16);
        if let Some(service_id) = followed_service {
            tokio::spawn(logs::follow_new_tasks(
                raft,
                broker.clone(),
                remotes.clone(),
                service_id,
                known,
                template.clone(),
                sender.clone(),
            ));
        }
        tokio::spawn(logs::gather(
            broker, remotes, template, nodes, view.nodes, sender,
        ));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type WatchServiceStream = super::service_watch::Stream;

    async fn watch_service(
        &self,
        request: Request<pb::WatchServiceRequest>,
    ) -> Result<Response<Self::WatchServiceStream>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let stream = super::service_watch::follow(raft, request.into_inner().service).await?;
        Ok(Response::new(stream))
    }

    type EventsStream = super::events::Stream;

    async fn events(
        &self,
        request: Request<pb::EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        self.allow(&request)?;
        let hub = self.daemon.event_hub().await?;
        let stream = super::events::follow(&hub, request.into_inner())?;
        Ok(Response::new(stream))
    }

    async fn add_repository(
        &self,
        request: Request<pb::AddRepositoryRequest>,
    ) -> Result<Response<pb::AddRepositoryResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        repos::add(&StoreClient::new(raft), request.into_inner()).await?;
        Ok(Response::new(pb::AddRepositoryResponse {}))
    }

    async fn list_repositories(
        &self,
        request: Request<pb::ListRepositoriesRequest>,
    ) -> Result<Response<pb::ListRepositoriesResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let list = repos::list(&StoreClient::new(raft)).await?;
        let json = repos::to_json(&list);
        Ok(Response::new(pb::ListRepositoriesResponse { json }))
    }

    async fn inspect_repository(
        &self,
        request: Request<pb::InspectRepositoryRequest>,
    ) -> Result<Response<pb::InspectRepositoryResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let view = repos::inspect(&StoreClient::new(raft), request.into_inner().name).await?;
        let json = repos::to_json(&view);
        Ok(Response::new(pb::InspectRepositoryResponse { json }))
    }

    async fn remove_repository(
        &self,
        request: Request<pb::RemoveRepositoryRequest>,
    ) -> Result<Response<pb::RemoveRepositoryResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        let removed = repos::remove(&StoreClient::new(raft), request.name, request.prune).await?;
        Ok(Response::new(pb::RemoveRepositoryResponse { removed }))
    }

    async fn sync_repository(
        &self,
        request: Request<pb::SyncRepositoryRequest>,
    ) -> Result<Response<pb::SyncRepositoryResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let at = repos::sync(&StoreClient::new(raft), request.into_inner().name).await?;
        Ok(Response::new(pb::SyncRepositoryResponse { at }))
    }

    async fn list_deployments(
        &self,
        request: Request<pb::ListDeploymentsRequest>,
    ) -> Result<Response<pb::ListDeploymentsResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let list =
            repos::deployments(&StoreClient::new(raft), request.into_inner().repository).await?;
        let json = repos::to_json(&list);
        Ok(Response::new(pb::ListDeploymentsResponse { json }))
    }

    async fn show_deployment(
        &self,
        request: Request<pb::ShowDeploymentRequest>,
    ) -> Result<Response<pb::ShowDeploymentResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let detail = repos::show(&StoreClient::new(raft), request.into_inner().deployment).await?;
        let json = repos::to_json(&detail);
        Ok(Response::new(pb::ShowDeploymentResponse { json }))
    }

    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let id = networks::create(&StoreClient::new(raft), &request.into_inner().spec_json).await?;
        Ok(Response::new(pb::CreateNetworkResponse { id }))
    }

    async fn list_networks(
        &self,
        request: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let list = networks::list(&StoreClient::new(raft)).await?;
        let json = serde_json::to_string(&list).map_err(internal)?;
        Ok(Response::new(pb::ListNetworksResponse { json }))
    }

    async fn inspect_network(
        &self,
        request: Request<pb::InspectNetworkRequest>,
    ) -> Result<Response<pb::InspectNetworkResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let view =
            networks::inspect(&StoreClient::new(raft), &request.into_inner().network).await?;
        let json = serde_json::to_string(&view).map_err(internal)?;
        Ok(Response::new(pb::InspectNetworkResponse { json }))
    }

    async fn remove_network(
        &self,
        request: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        networks::remove(&StoreClient::new(raft), &request.into_inner().network).await?;
        Ok(Response::new(pb::RemoveNetworkResponse {}))
    }

    async fn create_file_object(
        &self,
        request: Request<pb::CreateFileObjectRequest>,
    ) -> Result<Response<pb::CreateFileObjectResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        let kind = files::kind(request.kind)?;
        let labels = request.labels.into_iter().collect();
        let id = files::create(
            &StoreClient::new(raft),
            kind,
            request.name,
            labels,
            request.content,
        )
        .await?;
        Ok(Response::new(pb::CreateFileObjectResponse { id }))
    }

    async fn list_file_objects(
        &self,
        request: Request<pb::ListFileObjectsRequest>,
    ) -> Result<Response<pb::ListFileObjectsResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let kind = files::kind(request.into_inner().kind)?;
        let list = files::list(&StoreClient::new(raft), kind).await?;
        let json = serde_json::to_string(&list).map_err(internal)?;
        Ok(Response::new(pb::ListFileObjectsResponse { json }))
    }

    async fn inspect_file_object(
        &self,
        request: Request<pb::InspectFileObjectRequest>,
    ) -> Result<Response<pb::InspectFileObjectResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        let kind = files::kind(request.kind)?;
        let view = files::inspect(&StoreClient::new(raft), kind, request.object).await?;
        let json = serde_json::to_string(&view).map_err(internal)?;
        Ok(Response::new(pb::InspectFileObjectResponse { json }))
    }

    async fn remove_file_object(
        &self,
        request: Request<pb::RemoveFileObjectRequest>,
    ) -> Result<Response<pb::RemoveFileObjectResponse>, Status> {
        self.allow(&request)?;
        let (raft, _) = self.daemon.manager().await?;
        let request = request.into_inner();
        let kind = files::kind(request.kind)?;
        files::remove(&StoreClient::new(raft), kind, request.object).await?;
        Ok(Response::new(pb::RemoveFileObjectResponse {}))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        self.allow(&request)?;
        let list = volumes::list(&self.daemon.config.data_dir).await?;
        let json = serde_json::to_string(&list).map_err(internal)?;
        Ok(Response::new(pb::ListVolumesResponse { json }))
    }

    async fn inspect_volume(
        &self,
        request: Request<pb::InspectVolumeRequest>,
    ) -> Result<Response<pb::InspectVolumeResponse>, Status> {
        self.allow(&request)?;
        let name = request.into_inner().name;
        let info = volumes::inspect(&self.daemon.config.data_dir, name).await?;
        let json = serde_json::to_string(&info).map_err(internal)?;
        Ok(Response::new(pb::InspectVolumeResponse { json }))
    }

    async fn remove_volume(
        &self,
        request: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, Status> {
        self.allow(&request)?;
        let name = request.into_inner().name;
        volumes::remove(&self.daemon.config.data_dir, name).await?;
        Ok(Response::new(pb::RemoveVolumeResponse {}))
    }

    async fn prune_volumes(
        &self,
        request: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, Status> {
        self.allow(&request)?;
        let (removed, reclaimed_bytes) = volumes::prune(&self.daemon.config.data_dir).await?;
        Ok(Response::new(pb::PruneVolumesResponse {
            removed,
            reclaimed_bytes,
        }))
    }
}
