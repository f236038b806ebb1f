//! Raft managers in one process, started as the daemon starts them (the same durable log,
//! driver, gRPC transport and service over mutual TLS), for tests and benchmarks that need
//! real replicas without daemons. Included with `#[path]` by `tests/raft_grpc.rs` and
//! `benches/orchestrate.rs`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use swarm_controller::ca::{DEFAULT_NODE_VALIDITY, NodeIdentity, NodeKey, Role, RootCa};
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::driver::{DriverConfig, DriverTask, RaftHandle, spawn};
use swarm_controller::raft::grpc::{GrpcTransport, RaftService};
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, Replica, StateMachine};
use swarm_controller::tls::NodeCredentials;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

/// A certificate from `ca` for `node` in `role` of `cluster`, with its key.
pub fn credentials(ca: &RootCa, node: &str, role: Role, cluster: &str) -> NodeCredentials {
    let key = NodeKey::generate().unwrap();
    let identity = NodeIdentity {
        node_id: node.to_owned(),
        role,
        cluster_id: cluster.to_owned(),
    };
    let cert_pem = ca
        .issue(
            &key.csr_pem().unwrap(),
            &identity,
            SystemTime::now(),
            DEFAULT_NODE_VALIDITY,
        )
        .unwrap();
    NodeCredentials {
        ca_pem: ca.cert_pem().to_owned(),
        cert_pem,
        key_pem: key.pem(),
    }
}

/// A running replica and its server; dropping it kills both, as a crash would.
pub struct Manager<S: StateMachine> {
    pub handle: RaftHandle<S>,
    driver: DriverTask,
    server: tokio::task::JoinHandle<()>,
}

impl<S: StateMachine> Manager<S> {
    /// Stops the replica and its server (its handle's watches close).
    pub fn stop(&self) {
        self.driver.abort();
        self.server.abort();
    }
}

impl<S: StateMachine> Drop for Manager<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a manager runs with.
pub struct ManagerConfig<'a> {
    pub cluster: &'a str,
    /// The directory of the managers' logs (`<id>.redb`).
    pub dir: &'a Path,
    pub credentials: &'a NodeCredentials,
    /// Every manager's address, its own included.
    pub addresses: &'a HashMap<u64, String>,
    /// How long a proposal may take.
    pub timeout: Duration,
    /// The key the managers' logs were written with.
    pub key: &'a DataKey,
}

/// Starts manager `id` with `state` over its log in `config.dir`, serving on `listener`.
pub fn start<S: StateMachine + Send + 'static>(
    id: u64,
    state: S,
    config: &ManagerConfig<'_>,
    listener: TcpListener,
) -> Manager<S> {
    let log = DurableLog::open(Location::File {
        path: &config.dir.join(format!("{id}.redb")),
        durable: true,
        key: config.key.clone(),
    })
    .unwrap();
    let replica = Replica::open(&Config::new(id), log, state).unwrap();
    let peers: HashMap<u64, String> = config
        .addresses
        .iter()
        .filter(|(peer, _)| **peer != id)
        .map(|(p, a)| (*p, a.clone()))
        .collect();
    let peers = Arc::new(RwLock::new(peers));
    let client_tls = config.credentials.client(Role::Manager);
    let driver_config = DriverConfig {
        tick: Duration::from_millis(20),
        timeout: config.timeout,
        ..DriverConfig::default()
    };
    let (handle, driver) = spawn(
        replica,
        |inbox| GrpcTransport::new(client_tls, peers, inbox),
        driver_config,
    );
    let service = RaftService::new(
        config.cluster.to_owned(),
        handle.inbox(),
        Default::default(),
    );
    let tls = config.credentials.server();
    let server = tokio::spawn(async move {
        Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Manager {
        handle,
        driver,
        server,
    }
}

/// Listeners on free loopback ports for managers `1..=count`, and their addresses.
pub async fn listeners(count: u64) -> (HashMap<u64, TcpListener>, HashMap<u64, String>) {
    let mut listeners = HashMap::new();
    let mut addresses = HashMap::new();
    for id in 1..=count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.insert(id, listener.local_addr().unwrap().to_string());
        listeners.insert(id, listener);
    }
    (listeners, addresses)
}

/// The manager that says it leads, within `within`.
pub async fn leader<S: StateMachine + Send + 'static>(
    managers: &HashMap<u64, Manager<S>>,
    within: Duration,
) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        for (id, manager) in managers {
            if manager.handle.status().await.unwrap().leader == *id {
                return *id;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader elected within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
