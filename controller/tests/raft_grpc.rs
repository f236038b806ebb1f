//! Three Raft replicas over real gRPC and mutual TLS on loopback, in one process: a leader
//! is elected, writes go through any replica, the leader is killed and writes continue, and
//! peers without a manager certificate of this cluster are refused.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use swarm_api::grpc::raft::RaftMessage;
use swarm_api::grpc::raft::raft_client::RaftClient;
use swarm_controller::ca::{Role, RootCa};
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::driver::RaftError;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::StateMachine;
use swarm_controller::tls::NodeCredentials;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

#[path = "support/raft_cluster.rs"]
mod raft_cluster;

use raft_cluster::{Manager, ManagerConfig, credentials};

const CLUSTER: &str = "test-cluster";

#[derive(Default)]
struct Journal(Vec<u64>);

impl StateMachine for Journal {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        self.0.push(u64::from_be_bytes(command.try_into().unwrap()));
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_be_bytes()).collect()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = snapshot
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect();
    }
}

/// Starts manager `id` of `addresses` over its log in `dir`, on `listener`.
fn start(
    id: u64,
    dir: &Path,
    key: &DataKey,
    credentials: &NodeCredentials,
    addresses: &HashMap<u64, String>,
    listener: TcpListener,
) -> Manager<Journal> {
    let config = ManagerConfig {
        cluster: CLUSTER,
        dir,
        credentials,
        addresses,
        timeout: Duration::from_secs(3),
        key,
    };
    raft_cluster::start(id, Journal::default(), &config, listener)
}

/// Writes `value` once: an answer that does not say whether it was applied (the leader
/// changed, a timeout) is followed by a look before another try, as a client must, or the
/// value could be in the journal twice.
async fn write(managers: &HashMap<u64, Manager<Journal>>, value: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for manager in managers.values() {
            match manager.handle.propose(value.to_be_bytes().to_vec()).await {
                Ok(_) => return,
                // A new leader's read covers what it inherited: one look tells.
                Err(RaftError::LeaderChanged) => {
                    if applied(managers, value, deadline).await {
                        return;
                    }
                }
                // A timed-out proposal stays in the log and may commit later: looks for a
                // while before proposing again.
                Err(RaftError::Timeout) => {
                    let patience = tokio::time::Instant::now() + Duration::from_secs(5);
                    while tokio::time::Instant::now() < patience {
                        if applied(managers, value, deadline).await {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Err(_) => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no manager accepted {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `value` is in the journal, by a linearizable read: a new leader applies what it
/// inherited before it answers one.
async fn applied(
    managers: &HashMap<u64, Manager<Journal>>,
    value: u64,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        for manager in managers.values() {
            let read = manager
                .handle
                .read(move |journal: &Journal| journal.0.contains(&value));
            if let Ok(seen) = read.await {
                return seen;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no manager answered a read for {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn leader(managers: &HashMap<u64, Manager<Journal>>) -> u64 {
    raft_cluster::leader(managers, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_over_mtls_survive_the_loss_of_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let ca = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    let (mut listeners, addresses) = raft_cluster::listeners(3).await;
    let key = DataKey::generate();
    for id in 1..=3 {
        let path = dir.path().join(format!("{id}.redb"));
        let mut log = DurableLog::open(Location::File {
            path: &path,
            durable: true,
            key: key.clone(),
        })
        .unwrap();
        log.bootstrap(&[1, 2, 3], Vec::new()).unwrap();
    }
    let creds: HashMap<u64, NodeCredentials> = (1..=3)
        .map(|id| {
            (
                id,
                credentials(&ca, &format!("node-{id}"), Role::Manager, CLUSTER),
            )
        })
        .collect();
    let mut managers = HashMap::new();
    for id in 1..=3 {
        let listener = listeners.remove(&id).unwrap();
        managers.insert(
            id,
            start(id, dir.path(), &key, &creds[&id], &addresses, listener),
        );
    }
    for value in 1..=10 {
        write(&managers, value).await;
    }
    let killed = leader(&managers).await;
    drop(managers.remove(&killed));
    for value in 11..=20 {
        write(&managers, value).await;
    }
    let survivor = leader(&managers).await;
    assert_ne!(survivor, killed);
    // The killed manager restarts from its log and catches up over the network.
    let listener = TcpListener::bind(&addresses[&killed]).await.unwrap();
    managers.insert(
        killed,
        start(
            killed,
            dir.path(),
            &key,
            &creds[&killed],
            &addresses,
            listener,
        ),
    );
    write(&managers, 21).await;
    let seen = managers[&killed]
        .handle
        .read(|journal: &Journal| journal.0.clone())
        .await
        .unwrap();
    assert_eq!(seen, (1..=21).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_is_refused_to_workers_strangers_and_anonymous_clients() {
    let dir = tempfile::tempdir().unwrap();
    let ca = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    let (mut listeners, addresses) = raft_cluster::listeners(1).await;
    let address = addresses[&1].clone();
    let path = dir.path().join("1.redb");
    let key = DataKey::generate();
    let mut log = DurableLog::open(Location::File {
        path: &path,
        durable: true,
        key: key.clone(),
    })
    .unwrap();
    log.bootstrap(&[1], Vec::new()).unwrap();
    drop(log);
    let manager_creds = credentials(&ca, "node-1", Role::Manager, CLUSTER);
    let listener = listeners.remove(&1).unwrap();
    let manager = start(1, dir.path(), &key, &manager_creds, &addresses, listener);

    let attempt = |tls: ClientTlsConfig| {
        let address = address.clone();
        async move {
            let channel = Endpoint::from_shared(format!("https://{address}"))
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await;
            let mut client =
                RaftClient::new(channel.map_err(|e| tonic::Status::unavailable(e.to_string()))?);
            let messages = tokio_stream::iter(Vec::<RaftMessage>::new());
            client.stream(messages).await.map(|_| ())
        }
    };
    let worker = credentials(&ca, "node-9", Role::Worker, CLUSTER);
    let err = attempt(worker.client(Role::Manager)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("is a worker"), "{err}");

    let other_cluster = credentials(&ca, "node-8", Role::Manager, "another-cluster");
    let err = attempt(other_cluster.client(Role::Manager))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .domain_name("swarm-manager");
    let err = attempt(anonymous).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    // A certificate from another CA does not get past the handshake.
    let stranger_ca = RootCa::generate(CLUSTER, SystemTime::now()).unwrap();
    let stranger = credentials(&stranger_ca, "node-7", Role::Manager, CLUSTER);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(tonic::transport::Identity::from_pem(
            &stranger.cert_pem,
            &stranger.key_pem,
        ))
        .domain_name("swarm-manager");
    assert!(attempt(tls).await.is_err());

    // A malformed message, even from a manager, ends the stream with InvalidArgument.
    let channel = Endpoint::from_shared(format!("https://{address}"))
        .unwrap()
        .tls_config(manager_creds.client(Role::Manager))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let garbage = tokio_stream::iter(vec![RaftMessage {
        message: vec![0xff; 7],
    }]);
    let err = RaftClient::new(channel.clone())
        .stream(garbage)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // A message over the size bound is refused before it is decoded.
    let oversized = tokio_stream::iter(vec![RaftMessage {
        message: vec![0; swarm_controller::raft::grpc::MAX_MESSAGE_BYTES + 1],
    }]);
    let err = RaftClient::new(channel)
        .stream(oversized)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    drop(manager);
}
