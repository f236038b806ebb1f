//! The node process (`swarm daemon`): the control API on a local unix socket, and, once the
//! node is in a cluster, the manager's Raft replica with its store, served over mutual TLS.
//!
//! A node's data dir holds everything durable: `node.json` (who it is), `certs/` (the CA,
//! and for managers the CA key; the node's certificate and key) and `raft.redb`.
//!
//! Today a daemon can start a new cluster (`swarm init`), list its nodes and hand out join
//! tokens; joining other nodes comes next.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use swarm_api::grpc::control::control_server::{Control, ControlServer};
use swarm_api::grpc::control::{
    self as pb, InitRequest, InitResponse, JoinTokenRequest, JoinTokenResponse, ListNodesRequest,
    ListNodesResponse,
};
use swarm_api::store::{
    Availability, Cluster, Command, Node, NodeRole, NodeState, NodeStatus, Outcome,
};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Mutex;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::ca::token::JoinToken;
use crate::ca::{DEFAULT_NODE_VALIDITY, NodeIdentity, NodeKey, Role, RootCa};
use crate::raft::driver::{self, DriverConfig, DriverTask, RaftError, RaftHandle};
use crate::raft::grpc::{GrpcTransport, RaftService};
use crate::raft::log::{DurableLog, Location, LogError};
use crate::raft::replica::{Config, Replica, ReplicaError, StateMachine};
use crate::store::Store;
use crate::tls::NodeCredentials;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    /// Where the cluster port listens (gRPC over mutual TLS).
    pub listen_addr: SocketAddr,
    /// Where other nodes reach this one; defaults to the listen address.
    pub advertise_addr: Option<String>,
    /// The control API's unix socket (root-only permissions).
    pub socket: PathBuf,
    pub hostname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error("cannot serve on {address}: {message}")]
    Serve { address: String, message: String },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The manager side of a running node.
struct Manager {
    state: NodeState,
    raft: RaftHandle<Store>,
    driver: DriverTask,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.driver.abort();
        self.server.abort();
    }
}

pub struct Daemon {
    config: DaemonConfig,
    manager: Mutex<Option<Manager>>,
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(&config.data_dir))?;
    let daemon = Arc::new(Daemon {
        manager: Mutex::new(None),
        config,
    });
    if let Some(state) = daemon.load_state()? {
        let manager = daemon.start_manager(state).await?;
        *daemon.manager.lock().await = Some(manager);
    }
    let socket = daemon.config.socket.clone();
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    // A socket left by a daemon that did not stop cleanly.
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).map_err(io_error(&socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(&socket))?;
    let served = Server::builder()
        .add_service(ControlServer::new(ControlApi {
            daemon: daemon.clone(),
        }))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    *daemon.manager.lock().await = None;
    served.map_err(|e| DaemonError::Serve {
        address: socket.display().to_string(),
        message: e.to_string(),
    })
}

impl Daemon {
    fn path(&self, name: &str) -> PathBuf {
        self.config.data_dir.join(name)
    }

    fn load_state(&self) -> Result<Option<NodeState>, DaemonError> {
        let path = self.path("node.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| DaemonError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn write_file(&self, name: &str, contents: &[u8], secret: bool) -> Result<(), DaemonError> {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        // Written aside, synced, then renamed: a crash leaves the old file or the new one.
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, contents).map_err(io_error(&temporary))?;
        let mode = if secret { 0o600 } else { 0o644 };
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))
            .map_err(io_error(&temporary))?;
        std::fs::File::open(&temporary)
            .and_then(|f| f.sync_all())
            .map_err(io_error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path))
    }

    fn read_file(&self, name: &str) -> Result<String, DaemonError> {
        let path = self.path(name);
        std::fs::read_to_string(&path).map_err(io_error(&path))
    }

    fn credentials(&self) -> Result<NodeCredentials, DaemonError> {
        Ok(NodeCredentials {
            ca_pem: self.read_file("certs/ca.pem")?,
            cert_pem: self.read_file("certs/node.pem")?,
            key_pem: self.read_file("certs/node-key.pem")?,
        })
    }

    fn advertise_addr(&self, requested: &str) -> String {
        if !requested.is_empty() {
            return requested.to_owned();
        }
        self.config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| self.config.listen_addr.to_string())
    }

    /// `swarm init`: a new cluster with this node as its only manager.
    async fn init(&self, advertise_addr: String) -> Result<InitResponse, Status> {
        let mut manager = self.manager.lock().await;
        if manager.is_some() {
            return Err(Status::already_exists(
                "this node is already part of a swarm; use `swarm leave` first",
            ));
        }
        let now = SystemTime::now();
        let cluster_id = random_id();
        let node_id = random_id();
        let internal = |e: DaemonError| Status::internal(e.to_string());
        let ca = RootCa::generate(&cluster_id, now).map_err(|e| internal(e.into()))?;
        let key = NodeKey::generate().map_err(|e| internal(e.into()))?;
        let identity = NodeIdentity {
            node_id: node_id.clone(),
            role: Role::Manager,
            cluster_id: cluster_id.clone(),
        };
        let cert = ca
            .issue(
                &key.csr_pem().map_err(|e| internal(e.into()))?,
                &identity,
                now,
                DEFAULT_NODE_VALIDITY,
            )
            .map_err(|e| internal(e.into()))?;
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
        .map_err(|e| internal(e.into()))?;
        log.bootstrap(&[1], Store::default().snapshot())
            .map_err(|e| internal(e.into()))?;
        drop(log);
        let state = NodeState {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: NodeRole::Manager,
            raft_id: Some(1),
            advertise_addr: self.advertise_addr(&advertise_addr),
        };
        let started = self.start_manager(state.clone()).await.map_err(internal)?;
        wait_for_leader(&started.raft).await?;
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
            propose(&started.raft, &command).await?;
        }
        // Only now is the node a manager of a cluster: a crash before this point leaves no
        // `node.json`, and the next start is a node outside any cluster.
        let json = serde_json::to_vec_pretty(&state).expect("node state serialises");
        self.write_file("node.json", &json, false)
            .map_err(internal)?;
        *manager = Some(started);
        Ok(InitResponse {
            node_id,
            cluster_id,
            worker_token,
            manager_token,
            advertise_addr: state.advertise_addr,
        })
    }

    async fn start_manager(&self, state: NodeState) -> Result<Manager, DaemonError> {
        let credentials = self.credentials()?;
        let raft_id = state.raft_id.unwrap_or(1);
        let raft_path = self.path("raft.redb");
        let log = DurableLog::open(Location::File {
            path: &raft_path,
            durable: true,
        })?;
        let replica = Replica::open(&Config::new(raft_id), log, Store::default())?;
        let client_tls = credentials.client(Role::Manager);
        let (raft, driver) = driver::spawn(
            replica,
            |inbox| GrpcTransport::new(client_tls, HashMap::new(), inbox),
            DriverConfig::default(),
        );
        let listener = TcpListener::bind(self.config.listen_addr)
            .await
            .map_err(|e| DaemonError::Serve {
                address: self.config.listen_addr.to_string(),
                message: e.to_string(),
            })?;
        let service = RaftService::new(state.cluster_id.clone(), raft.inbox());
        let tls = credentials.server();
        let address = self.config.listen_addr.to_string();
        let router = Server::builder()
            .tls_config(tls)
            .map_err(|e| DaemonError::Serve {
                address: address.clone(),
                message: e.to_string(),
            })?
            .add_service(service);
        let server = tokio::spawn(async move {
            // The daemon stops the server by aborting this task.
            let _ = router
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Ok(Manager {
            state,
            raft,
            driver,
            server,
        })
    }
}

/// Waits (bounded) until the replica knows a leader: a new single-manager cluster elects
/// itself after one election timeout.
async fn wait_for_leader(raft: &RaftHandle<Store>) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while raft.status().await.map_err(raft_status)?.leader == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(Status::unavailable("no leader was elected within 10 s"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn propose(raft: &RaftHandle<Store>, command: &Command) -> Result<(), Status> {
    let bytes = serde_json::to_vec(command).expect("commands serialise");
    let response = raft.propose(bytes).await.map_err(raft_status)?;
    match serde_json::from_slice(&response).expect("outcomes decode") {
        Outcome::Applied { .. } => Ok(()),
        Outcome::Rejected { reason } => Err(Status::failed_precondition(reason)),
    }
}

fn raft_status(error: RaftError) -> Status {
    match error {
        RaftError::NoLeader | RaftError::Timeout => Status::unavailable(error.to_string()),
        RaftError::Stopped => Status::internal(error.to_string()),
    }
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// 25 random lower-case letters and digits, like Docker's ids.
fn random_id() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 25];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    bytes
        .iter()
        .map(|b| ALPHABET[(*b % 36) as usize] as char)
        .collect()
}

struct ControlApi {
    daemon: Arc<Daemon>,
}

impl ControlApi {
    /// The raft handle of a manager, or the error a CLI user can act on.
    async fn raft(&self) -> Result<(RaftHandle<Store>, NodeState), Status> {
        match self.daemon.manager.lock().await.as_ref() {
            Some(manager) => Ok((manager.raft.clone(), manager.state.clone())),
            None => Err(Status::failed_precondition(
                "this node is not a swarm manager: run `swarm init` to start a cluster, or `swarm join` to join one",
            )),
        }
    }
}

#[tonic::async_trait]
impl Control for ControlApi {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitResponse>, Status> {
        let advertise_addr = request.into_inner().advertise_addr;
        self.daemon.init(advertise_addr).await.map(Response::new)
    }

    async fn list_nodes(
        &self,
        _: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        let (raft, state) = self.raft().await?;
        let status = raft.status().await.map_err(raft_status)?;
        let nodes = raft
            .read(|store: &Store| store.data().nodes.values().cloned().collect::<Vec<_>>())
            .await
            .map_err(raft_status)?;
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
                role: match node.role {
                    NodeRole::Manager => pb::Role::Manager,
                    NodeRole::Worker => pb::Role::Worker,
                } as i32,
                availability: format!("{:?}", node.availability).to_lowercase(),
                status: format!("{:?}", node.status).to_lowercase(),
                address: node.address,
            })
            .collect();
        Ok(Response::new(ListNodesResponse { nodes }))
    }

    async fn join_token(
        &self,
        request: Request<JoinTokenRequest>,
    ) -> Result<Response<JoinTokenResponse>, Status> {
        let request = request.into_inner();
        let role = match pb::Role::try_from(request.role) {
            Ok(pb::Role::Manager) => NodeRole::Manager,
            Ok(pb::Role::Worker) => NodeRole::Worker,
            _ => return Err(Status::invalid_argument("the role is worker or manager")),
        };
        let (raft, state) = self.raft().await?;
        if request.rotate {
            let ca_pem = self
                .daemon
                .read_file("certs/ca.pem")
                .map_err(|e| Status::internal(e.to_string()))?;
            let ca = RootCa::from_pem(
                &ca_pem,
                &self
                    .daemon
                    .read_file("certs/ca-key.pem")
                    .map_err(|e| Status::internal(e.to_string()))?,
            )
            .map_err(|e| Status::internal(e.to_string()))?;
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
