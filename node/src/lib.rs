//! The node process (`swarm daemon`): the control API on a local unix socket (`control`),
//! and, once the node is in a cluster as a manager, the Raft replica with its store and the
//! cluster port's services over TLS: Raft between managers, and the join handshake (`join`).
//!
//! A node's data dir holds everything durable: `node.json` (who it is), `certs/` (the CA,
//! for managers its key too; the node's certificate and key) and, for managers, `raft.redb`
//! (encrypted), `raft.key` (its key, wrapped: `lock`) and `gitops/` (the leader's git mirrors and the repositories' ssh keys).

mod agent;
mod control;
mod dispatcher;
pub mod dns;
mod events;
pub mod files;
#[cfg(test)]
mod fixtures;
mod gitops;
mod join;
mod lock;
mod logs;
pub mod metrics;
pub mod networks;
mod notify;
mod orchestrate;
mod recover;
pub mod repos;
mod service_watch;
mod services;
mod session;
mod volumes;
mod webhook;

/// The leader's judgement of nodes by their heartbeats, pure: the cluster simulation
/// (`tests/cluster_sim.rs`) runs it too.
pub use dispatcher::{Heard, StoredNode, judge_nodes};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use raft::prelude::ConfChangeType;
use swarm_api::grpc::control::control_server::ControlServer;
use swarm_api::grpc::join::join_server::JoinServer;
use swarm_api::store::{Command, NodeDescription, NodeRole, NodeState};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Mutex, oneshot, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::Status;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use swarm_controller::ca::{Role, RootCa};
use swarm_controller::raft::crypt::{CryptError, LogKeys};
use swarm_controller::raft::driver::{self, DriverConfig, DriverTask, RaftError, RaftHandle};
use swarm_controller::raft::grpc::{
    GrpcTransport, PeerAddresses, RaftService, RaftVoters, VoterView,
};
use swarm_controller::raft::log::LogError;
use swarm_controller::raft::replica::{Config, Replica, ReplicaError};
use swarm_controller::store::Store;
use swarm_controller::store::client::{Applied, StoreClient, StoreError};
use swarm_controller::tls::NodeCredentials;

#[derive(Debug, Clone)]
pub struct DaemonConfig {
    pub data_dir: PathBuf,
    /// Where the cluster port listens (gRPC over TLS).
    pub listen_addr: SocketAddr,
    /// Where other nodes reach this one; defaults to the listen address.
    pub advertise_addr: Option<String>,
    /// The control API's unix socket (root-only permissions).
    pub socket: PathBuf,
    /// Where the node keeps what a reboot must clear (task network namespaces), under a
    /// directory named by its node id.
    pub run_dir: PathBuf,
    pub hostname: String,
    /// Where push webhooks are received (`POST /hooks/git/NAME`), if anywhere.
    pub webhook_addr: Option<SocketAddr>,
    /// Where Prometheus scrapes `GET /metrics` (`--metrics-addr`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Registries (`host[:port]`) pulled from over plain http besides the loopback ones.
    pub insecure_registries: Vec<String>,
    /// The UDP port this node takes overlay (VXLAN) traffic on: Docker's 4789, unless
    /// several nodes share a network namespace (each then needs its own).
    pub data_path_port: u16,
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
    Crypt(#[from] CryptError),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Ca(#[from] swarm_controller::ca::CaError),
    #[error("cannot serve on {address}: {message}")]
    Serve { address: String, message: String },
    #[error("--metrics-addr {address}: {message}")]
    Metrics {
        address: SocketAddr,
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> DaemonError + '_ {
    move |source| DaemonError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How often a manager refreshes its peers' addresses from the store.
const PEER_REFRESH: Duration = Duration::from_millis(300);

/// What the node is, right now.
// One value per daemon, behind its lock: boxing the member would save nothing.
#[allow(clippy::large_enum_variant)]
enum Membership {
    /// Not in a cluster: only `init` and `join` make sense.
    Outside,
    Member(Member),
    /// A manager of an autolocked cluster, restarted: nothing runs until `swarm unlock`.
    Locked(NodeState),
}

/// A node in a cluster: its identity, its session with the managers and, on a manager, the
/// replica with its services.
struct Member {
    state: NodeState,
    manager: Option<Manager>,
    /// Dropping it ends the session (see `session::run`).
    _session: watch::Sender<()>,
    agent: agent::AgentHandle,
}

/// The manager side of a running node. Dropping it stops its tasks; `stop` also waits for
/// them, so that its log can be opened again.
struct Manager {
    raft: RaftHandle<Store>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The cluster port's server: the sender stops it, gracefully.
    server: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    driver: DriverTask,
    /// The nodes whose agents send their logs through this manager.
    logs: Arc<logs::LogBroker>,
    /// The cluster's events as this manager derives them (`swarm events`).
    events: Arc<swarm_controller::store::events::EventHub>,
}

/// How long a stopping manager waits for its connections' calls to finish.
const SERVER_DRAIN: Duration = Duration::from_secs(2);

impl Manager {
    async fn stop(mut self) {
        self.driver.abort();
        let _ = (&mut self.driver).await;
        for task in std::mem::take(&mut self.tasks) {
            task.abort();
            let _ = task.await;
        }
        // With the replica gone, calls fail fast, and streams end at their next message.
        if let Some((stop, mut server)) = self.server.take() {
            drop(stop);
            if tokio::time::timeout(SERVER_DRAIN, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.driver.abort();
        for task in &self.tasks {
            task.abort();
        }
    }
}

pub struct Daemon {
    config: DaemonConfig,
    membership: Mutex<Membership>,
    /// One-service commands reaching this node at once take turns per service.
    service_turns: services::Turns,
    /// What the node's parts record for `/metrics`.
    metrics: metrics::Metrics,
    /// The key of this manager's Raft log, once unwrapped (`lock`).
    log_keys: std::sync::Mutex<Option<LogKeys>>,
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_error(&config.data_dir))?;
    // Bound before anything starts, so that a bad address stops the daemon at once.
    let metrics_listener = match config.metrics_addr {
        Some(address) => Some(bind_metrics(address, config.listen_addr).await?),
        None => None,
    };
    let daemon = Arc::new(Daemon {
        membership: Mutex::new(Membership::Outside),
        service_turns: services::Turns::default(),
        metrics: metrics::Metrics::default(),
        log_keys: std::sync::Mutex::default(),
        config,
    });
    let metrics_server = metrics_listener.map(|listener| {
        // The registry every part of the node registers its collectors into, here at start.
        let mut registry = prometheus_client::registry::Registry::default();
        daemon.metrics.register(&mut registry);
        let registry = Arc::new(registry);
        tokio::spawn(async move {
            if let Err(error) = metrics::serve(listener, registry).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        })
    });
    if let Some(state) = daemon.load_state()? {
        // Locked while the member starts: its session, which starts with it, must find it
        // a member (it ends at once when it finds the node outside a cluster).
        let mut membership = daemon.membership.lock().await;
        let locked = state.role == NodeRole::Manager
            && matches!(
                daemon.log_keys(),
                Err(DaemonError::Crypt(CryptError::Locked))
            );
        *membership = if locked {
            tracing::warn!("{}", lock::LOCKED);
            Membership::Locked(state)
        } else {
            Membership::Member(daemon.start_member(state, HashMap::new()).await?)
        };
    }
    let socket = daemon.config.socket.clone();
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    // A socket left by a daemon that did not stop cleanly.
    let _ = std::fs::remove_file(&socket);
    let webhooks = match daemon.config.webhook_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Io {
                    path: PathBuf::from(addr.to_string()),
                    source,
                })?;
            tracing::info!(%addr, "webhooks listening");
            let daemon = daemon.clone();
            Some(tokio::spawn(async move {
                if let Err(error) = webhook::serve(listener, daemon).await {
                    tracing::error!(%error, "the webhook listener stopped");
                }
            }))
        }
        None => None,
    };
    let listener = UnixListener::bind(&socket).map_err(io_error(&socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
        .map_err(io_error(&socket))?;
    let served = Server::builder()
        .add_service(ControlServer::new(control::ControlApi::local(
            daemon.clone(),
        )))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&socket);
    if let Some(webhooks) = webhooks {
        webhooks.abort();
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    let membership = std::mem::replace(&mut *daemon.membership.lock().await, Membership::Outside);
    if let Membership::Member(Member {
        manager: Some(manager),
        ..
    }) = membership
    {
        manager.stop().await;
    }
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

    /// Records who the node is. Written last when joining or initialising, so a crash
    /// half-way leaves a node outside any cluster.
    fn save_state(&self, state: &NodeState) -> Result<(), DaemonError> {
        let json = serde_json::to_vec_pretty(state).expect("node state serialises");
        self.write_file("node.json", &json, false)
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
        std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
        // The rename itself is durable only once the directory is.
        let directory = path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(io_error(directory))
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

    /// The CA, with its key: only managers have it.
    fn root_ca(&self) -> Result<RootCa, DaemonError> {
        Ok(RootCa::from_pem(
            &self.read_file("certs/ca.pem")?,
            &self.read_file("certs/ca-key.pem")?,
        )?)
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

    /// Starts what a member of a cluster runs: the manager if it is one, and its session.
    async fn start_member(
        self: &Arc<Self>,
        state: NodeState,
        peers: HashMap<u64, String>,
    ) -> Result<Member, DaemonError> {
        let manager = match state.role {
            NodeRole::Manager => Some(self.start_manager(&state, peers).await?),
            NodeRole::Worker => None,
        };
        Ok(self.member(state, manager))
    }

    /// A member around its (running) manager, with its session.
    fn member(self: &Arc<Self>, state: NodeState, manager: Option<Manager>) -> Member {
        let (stop, stopped) = watch::channel(());
        tokio::spawn(session::run(self.clone(), stopped));
        let agent = agent::AgentHandle::spawn(self.clone(), state.clone());
        Member {
            state,
            manager,
            _session: stop,
            agent,
        }
    }

    /// Forgets the cluster: the node's record first (so a crash half-way leaves a node
    /// outside any cluster), then its certificates and log.
    fn forget_cluster(&self) -> Result<(), DaemonError> {
        self.forget_log_keys();
        for name in ["node.json", "raft.redb", lock::KEY_FILE] {
            let path = self.path(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error(&path)(e));
                }
                _ => {}
            }
        }
        let certs = self.path("certs");
        match std::fs::remove_dir_all(&certs) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&certs)(e)),
            _ => Ok(()),
        }
    }

    /// Starts the manager: the replica over `raft.redb` (which must exist: bootstrapped by
    /// `init`, empty for a joining manager), the cluster port, and the task that keeps the
    /// peers' addresses current from the store. `peers` seeds those addresses.
    async fn start_manager(
        self: &Arc<Self>,
        state: &NodeState,
        peers: HashMap<u64, String>,
    ) -> Result<Manager, DaemonError> {
        let credentials = self.credentials()?;
        let raft_id = state.raft_id.ok_or_else(|| DaemonError::Corrupt {
            path: self.path("node.json"),
            message: "a manager without a raft id".to_owned(),
        })?;
        let raft_path = self.path("raft.redb");
        let log = self.open_log(&raft_path)?;
        let replica = Replica::open(&Config::new(raft_id), log, Store::default())?;
        // Everything that can fail comes before the replica starts, so a failure leaves no
        // loop running over the log.
        let listener = TcpListener::bind(self.config.listen_addr)
            .await
            .map_err(|e| DaemonError::Serve {
                address: self.config.listen_addr.to_string(),
                message: e.to_string(),
            })?;
        let address = self.config.listen_addr.to_string();
        let mut server_builder =
            Server::builder()
                .tls_config(credentials.server())
                .map_err(|e| DaemonError::Serve {
                    address: address.clone(),
                    message: e.to_string(),
                })?;
        let client_tls = credentials.client(Role::Manager);
        let addresses: PeerAddresses = Arc::new(RwLock::new(peers));
        let transport_addresses = addresses.clone();
        let (raft, driver) = driver::spawn(
            replica,
            |inbox| GrpcTransport::new(client_tls, transport_addresses, inbox),
            DriverConfig {
                metrics: self.metrics.raft.clone(),
                ..DriverConfig::default()
            },
        );
        let voters = RaftVoters::default();
        let heartbeats = dispatcher::Heartbeats::default();
        let log_broker = Arc::new(logs::LogBroker::default());
        let assignments = Arc::new(dispatcher::AssignmentHub::default());
        let router = server_builder
            .add_service(RaftService::new(
                state.cluster_id.clone(),
                raft.inbox(),
                voters.clone(),
            ))
            .add_service(JoinServer::new(join::JoinApi::new(self.clone())))
            .add_service(ControlServer::new(control::ControlApi::remote(
                self.clone(),
                state.cluster_id.clone(),
            )))
            .add_service(dispatcher::DispatcherApi::server(
                self.clone(),
                raft.clone(),
                state.cluster_id.clone(),
                heartbeats.clone(),
                log_broker.clone(),
                assignments.clone(),
            ));
        // Stopping the server must also close its open connections (aborting its task
        // would not: they run on tasks of their own, and would go on serving clients with
        // this manager's stopped services). Dropping the sender stops it.
        let (stop_server, server_stopped) = oneshot::channel::<()>();
        // Without TCP_NODELAY, a short answer can wait for the client's delayed ACK (Nagle):
        // 40 ms stalls on writes that take a millisecond.
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = server_stopped.await;
                })
                .await;
        });
        let refresher = tokio::spawn(refresh_peers(raft.clone(), raft_id, addresses, voters));
        let monitor = tokio::spawn(dispatcher::monitor(raft.clone(), raft_id, heartbeats));
        let orchestrator = tokio::spawn(orchestrate::run(raft.clone(), raft_id));
        let notifier = tokio::spawn(notify::run(raft.clone(), raft_id));
        let watcher = tokio::spawn(gitops::run(raft.clone(), raft_id, self.path("gitops")));
        let dispatcher = tokio::spawn(dispatcher::follow_assignments(raft.clone(), assignments));
        let event_hub = Arc::new(events::hub());
        let recorder = tokio::spawn(events::record(raft.clone(), event_hub.clone()));
        let key_wrapper = tokio::spawn(lock::follow_unlock_key(raft.clone(), self.clone()));
        let mut tasks = vec![
            refresher,
            monitor,
            orchestrator,
            notifier,
            watcher,
            dispatcher,
            recorder,
            key_wrapper,
        ];
        if self.config.metrics_addr.is_some() {
            let metrics = self.metrics.clone();
            tasks.push(tokio::spawn(metrics::follow_cluster(raft.clone(), metrics)));
        }
        Ok(Manager {
            raft,
            tasks,
            server: Some((stop_server, server)),
            driver,
            logs: log_broker,
            events: event_hub,
        })
    }

    /// The raft handle of a manager, or the error a CLI user can act on.
    async fn manager(&self) -> Result<(RaftHandle<Store>, NodeState), Status> {
        self.log_broker()
            .await
            .map(|(raft, state, _)| (raft, state))
    }

    /// A manager's events, or the error a CLI user can act on.
    async fn event_hub(&self) -> Result<Arc<swarm_controller::store::events::EventHub>, Status> {
        self.on_manager(|manager, _| manager.events.clone()).await
    }

    /// A manager's raft handle and its log broker, or the error a CLI user can act on.
    async fn log_broker(
        &self,
    ) -> Result<(RaftHandle<Store>, NodeState, Arc<logs::LogBroker>), Status> {
        self.on_manager(|manager, state| {
            (manager.raft.clone(), state.clone(), manager.logs.clone())
        })
        .await
    }

    /// What `read` takes from the running manager, or the error a CLI user can act on.
    async fn on_manager<R>(
        &self,
        read: impl FnOnce(&Manager, &NodeState) -> R,
    ) -> Result<R, Status> {
        match &*self.membership.lock().await {
            Membership::Member(Member {
                manager: Some(manager),
                state,
                ..
            }) => Ok(read(manager, state)),
            Membership::Member(_) => Err(Status::failed_precondition(
                "this node is a worker: worker nodes cannot be used to view or modify cluster state; run the command on a manager",
            )),
            Membership::Outside => Err(Status::failed_precondition(
                "this node is not a swarm manager: run `swarm init` to start a cluster, or `swarm join` to join one",
            )),
            Membership::Locked(_) => Err(Status::failed_precondition(lock::LOCKED)),
        }
    }
}

/// The metrics endpoint's listener on `address`, which must not be the cluster port.
async fn bind_metrics(
    address: SocketAddr,
    listen_addr: SocketAddr,
) -> Result<TcpListener, DaemonError> {
    let refused = |message: String| DaemonError::Metrics { address, message };
    if let Some(clash) = metrics::clash(address, listen_addr) {
        return Err(refused(clash));
    }
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| refused(format!("cannot listen: {e}")))?;
    tracing::info!(%address, "metrics listening");
    Ok(listener)
}

/// Keeps the transport's addresses equal to the managers the store knows, and the Raft
/// service's view of who may speak Raft.
async fn refresh_peers(
    raft: RaftHandle<Store>,
    own_id: u64,
    addresses: PeerAddresses,
    voters: RaftVoters,
) {
    loop {
        let view = raft
            .local_read(move |store: &Store| {
                let data = store.data();
                let managers = data
                    .nodes
                    .values()
                    .filter_map(|node| Some((node.raft_id?, node.address.clone())))
                    .filter(|(id, _)| *id != own_id)
                    .collect::<HashMap<u64, String>>();
                let view = data.cluster.is_some().then(|| VoterView {
                    raft_ids: data
                        .nodes
                        .values()
                        .map(|n| (n.id.clone(), n.raft_id))
                        .collect(),
                    removed: data.removed_nodes.clone(),
                });
                (managers, view)
            })
            .await;
        match view {
            Ok((managers, view)) => {
                if !managers.is_empty() {
                    let mut known = addresses.write().expect("not poisoned");
                    if *known != managers {
                        *known = managers;
                    }
                }
                *voters.write().expect("not poisoned") = view;
            }
            Err(_) => return,
        }
        tokio::time::sleep(PEER_REFRESH).await;
    }
}

/// Waits (bounded) until the replica knows a leader: a new single-manager cluster elects
/// itself after one election timeout.
async fn wait_for_leader(raft: &RaftHandle<Store>) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while raft.status().await.map_err(raft_status)?.leader == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err(Status::unavailable("no leader was elected within 10 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Proposes `command` through the store's typed client.
async fn propose(raft: &RaftHandle<Store>, command: &Command) -> Result<Applied, StoreError> {
    StoreClient::new(raft.clone()).propose(command).await
}

/// Adds or removes the voter `raft_id`, with `command` applied to the store at the same
/// index: the store's managers and Raft's voters never disagree.
async fn change_voters(
    raft: &RaftHandle<Store>,
    change_type: ConfChangeType,
    raft_id: u64,
    command: &Command,
) -> Result<Applied, StoreError> {
    StoreClient::new(raft.clone())
        .change_voters(change_type, raft_id, command)
        .await
}

/// What a client of the node's gRPC services reads of a store error: the one place where
/// the store's errors become gRPC codes.
fn store_status(error: StoreError) -> Status {
    match &error {
        StoreError::NoLeader | StoreError::Timeout { .. } | StoreError::UnknownOutcome => {
            Status::unavailable(error.to_string())
        }
        StoreError::Stopped => Status::internal(error.to_string()),
        StoreError::Conflict(_) => Status::aborted(error.to_string()),
        StoreError::Invalid { .. } => Status::failed_precondition(error.to_string()),
    }
}

fn raft_status(error: RaftError) -> Status {
    match error {
        RaftError::NoLeader | RaftError::Timeout | RaftError::LeaderChanged => {
            Status::unavailable(error.to_string())
        }
        RaftError::Stopped => Status::internal(error.to_string()),
    }
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
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

/// This machine's platform and resources, and the node's data path and metrics ports, as a
/// node reports them.
fn describe_machine(data_path_port: u16, metrics: Option<SocketAddr>) -> NodeDescription {
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get() as u64);
    NodeDescription {
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        nano_cpus: cpus * 1_000_000_000,
        memory_bytes,
        data_path_port,
        metrics_port: metrics.map(|address| address.port()),
    }
}
