//! Joining: the manager's side (the `Join` service on the cluster port, the only RPC a node
//! without a certificate may call) and the joiner's side (`swarm join`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use raft::prelude::ConfChangeType;
use swarm_api::grpc::control;
use swarm_api::grpc::join::join_client::JoinClient;
use swarm_api::grpc::join::join_server::Join;
use swarm_api::grpc::join::{JoinRequest, JoinResponse, Manager as PeerManager};
use swarm_api::store::{
    Availability, Command, Node, NodeDescription, NodeRole, NodeState, NodeStatus,
};
use tonic::{Request, Response, Status};

use super::{
    Daemon, Membership, change_voters, describe_machine, internal, millis, propose, raft_status,
    random_id, store_status,
};
use swarm_controller::ca::token::JoinToken;
use swarm_controller::ca::{NodeIdentity, NodeKey, Role};
use swarm_controller::store::Store;
use swarm_controller::tls;

pub struct JoinApi {
    daemon: Arc<Daemon>,
}

impl JoinApi {
    pub fn new(daemon: Arc<Daemon>) -> Self {
        JoinApi { daemon }
    }
}

/// How long a joiner waits for the manager to let it in.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

const INVALID_TOKEN: &str = "invalid join token: it matches neither the worker nor the manager token of this cluster (it may have been rotated); get a current one with `swarm join-token`";

#[tonic::async_trait]
impl Join for JoinApi {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let request = request.into_inner();
        let token = JoinToken::parse(&request.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (raft, _) = self.daemon.manager().await?;
        let (cluster, nodes) = raft
            .read(|store: &Store| (store.data().cluster.clone(), store.data().nodes.clone()))
            .await
            .map_err(raft_status)?;
        let cluster =
            cluster.ok_or_else(|| Status::unavailable("the cluster is not initialised yet"))?;
        let matches =
            |secret: &str| JoinToken::parse(secret).is_ok_and(|known| known.secret_matches(&token));
        let role = if matches(&cluster.manager_token_secret) {
            NodeRole::Manager
        } else if matches(&cluster.worker_token_secret) {
            NodeRole::Worker
        } else {
            return Err(Status::unauthenticated(INVALID_TOKEN));
        };
        let raft_id = (role == NodeRole::Manager)
            .then(|| nodes.values().filter_map(|n| n.raft_id).max().unwrap_or(0) + 1);
        let node_id = random_id();
        let ca = self.daemon.root_ca().map_err(internal)?;
        let identity = NodeIdentity {
            node_id: node_id.clone(),
            role: match role {
                NodeRole::Manager => Role::Manager,
                NodeRole::Worker => Role::Worker,
            },
            cluster_id: cluster.id.clone(),
        };
        let now = SystemTime::now();
        let cert_pem = ca
            .issue(
                &request.csr_pem,
                &identity,
                now,
                std::time::Duration::from_millis(cluster.certificate_validity_ms),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if request
            .advertise_addr
            .parse::<std::net::SocketAddr>()
            .is_err()
        {
            return Err(Status::invalid_argument(format!(
                "invalid advertise address {:?}: expected IP:PORT",
                request.advertise_addr
            )));
        }
        let add = Command::AddNode(Node {
            id: node_id.clone(),
            hostname: request.hostname,
            role,
            availability: Availability::Active,
            status: NodeStatus::Ready,
            status_since: millis(now),
            labels: Default::default(),
            address: request.advertise_addr.clone(),
            raft_id,
            description: NodeDescription {
                os: request.os,
                arch: request.arch,
                nano_cpus: request.nano_cpus,
                memory_bytes: request.memory_bytes,
                data_path_port: match request.data_path_port {
                    0 => swarm_api::endpoints::VXLAN_PORT,
                    port => u16::try_from(port).map_err(|_| {
                        Status::invalid_argument(format!(
                            "invalid data path port {port}: expected 1 to 65535"
                        ))
                    })?,
                },
                metrics_port: match request.metrics_port {
                    0 => None,
                    port => Some(u16::try_from(port).map_err(|_| {
                        Status::invalid_argument(format!(
                            "invalid metrics port {port}: expected 1 to 65535"
                        ))
                    })?),
                },
            },
            subnet: None,
            worker_error: None,
            ports_taken: Vec::new(),
        });
        match raft_id {
            // A manager is a node and a voter from the same entry on.
            Some(raft_id) => change_voters(&raft, ConfChangeType::AddNode, raft_id, &add).await,
            None => propose(&raft, &add).await,
        }
        .map_err(store_status)?;
        tracing::info!(node = %node_id, ?role, "a node joined");
        let mut managers: Vec<PeerManager> = nodes
            .values()
            .filter_map(|n| {
                Some(PeerManager {
                    raft_id: n.raft_id?,
                    address: n.address.clone(),
                })
            })
            .collect();
        managers.sort_by_key(|m| m.raft_id);
        Ok(Response::new(JoinResponse {
            node_id,
            cluster_id: cluster.id,
            manager: role == NodeRole::Manager,
            cert_pem,
            ca_pem: ca.cert_pem().to_owned(),
            ca_key_pem: if role == NodeRole::Manager {
                ca.key_pem().to_owned()
            } else {
                String::new()
            },
            raft_id: raft_id.unwrap_or(0),
            managers,
        }))
    }
}

impl Daemon {
    /// `swarm join`: trust the manager at `remote_addr` through the CA the token pins, trade
    /// the token and a CSR for a certificate, and start in the role the token gives.
    pub(super) async fn join_cluster(
        self: &Arc<Self>,
        request: control::JoinRequest,
    ) -> Result<NodeState, Status> {
        let mut membership = self.membership.lock().await;
        if !matches!(*membership, Membership::Outside) {
            return Err(Status::already_exists(
                "this node is already part of a swarm; use `swarm leave` first",
            ));
        }
        let token = JoinToken::parse(&request.token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let key = NodeKey::generate().map_err(internal)?;
        let advertise_addr = self.advertise_addr(&request.advertise_addr);
        let description = describe_machine(self.config.data_path_port, self.config.metrics_addr);
        let join_request = JoinRequest {
            token: request.token,
            csr_pem: key.csr_pem().map_err(internal)?,
            hostname: self.config.hostname.clone(),
            advertise_addr: advertise_addr.clone(),
            os: description.os,
            arch: description.arch,
            nano_cpus: description.nano_cpus,
            memory_bytes: description.memory_bytes,
            data_path_port: description.data_path_port.into(),
            metrics_port: description.metrics_port.map_or(0, u32::from),
        };
        // Bounded: the membership lock is held meanwhile, and every control call waits on it.
        let exchange = async {
            let channel = tls::connect_pinned(&request.remote_addr, &token)
                .await
                .map_err(Status::unavailable)?;
            JoinClient::new(channel).join(join_request).await
        };
        let response = tokio::time::timeout(JOIN_TIMEOUT, exchange)
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the manager at {} did not answer within {} s",
                    request.remote_addr,
                    JOIN_TIMEOUT.as_secs()
                ))
            })??
            .into_inner();
        self.write_file("certs/ca.pem", response.ca_pem.as_bytes(), false)
            .map_err(internal)?;
        self.write_file("certs/node.pem", response.cert_pem.as_bytes(), false)
            .map_err(internal)?;
        self.write_file("certs/node-key.pem", key.pem().as_bytes(), true)
            .map_err(internal)?;
        let role = if response.manager {
            NodeRole::Manager
        } else {
            NodeRole::Worker
        };
        let mut managers: Vec<String> = response
            .managers
            .iter()
            .map(|m| m.address.clone())
            .collect();
        managers.sort();
        if managers.is_empty() {
            managers.push(request.remote_addr.clone());
        }
        let state = NodeState {
            node_id: response.node_id,
            cluster_id: response.cluster_id,
            role,
            raft_id: response.manager.then_some(response.raft_id),
            advertise_addr,
            managers,
        };
        if role == NodeRole::Manager {
            self.write_file("certs/ca-key.pem", response.ca_key_pem.as_bytes(), true)
                .map_err(internal)?;
            // An empty log: the leader sends a snapshot that names this replica.
            let _ = std::fs::remove_file(self.path("raft.redb"));
        }
        // The cluster counts this node from now on: record it before starting, so a crash
        // brings it back as the member it is.
        self.save_state(&state).map_err(internal)?;
        let peers: HashMap<u64, String> = response
            .managers
            .into_iter()
            .map(|m| (m.raft_id, m.address))
            .collect();
        *membership = Membership::Member(
            self.start_member(state.clone(), peers)
                .await
                .map_err(internal)?,
        );
        Ok(state)
    }
}
