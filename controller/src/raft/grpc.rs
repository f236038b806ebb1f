//! Raft over gRPC with mutual TLS: a [`Transport`] that keeps one client stream per peer
//! (reconnecting with backoff, reporting failures to the replica), and the server side that
//! accepts streams only from managers of this cluster and feeds their messages to the
//! replica's inbox. Malformed messages end the stream; sizes are bounded.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protobuf::Message as _;
use raft::prelude::Message;
use swarm_api::grpc::raft::raft_client::RaftClient;
use swarm_api::grpc::raft::raft_server::{Raft, RaftServer};
use swarm_api::grpc::raft::{RaftMessage, StreamClosed};
use tokio::sync::mpsc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use super::driver::{Input, Transport, Unreachable};
use super::replica::StateMachine;
use crate::ca::Role;
use crate::tls::peer_identity;

/// The largest Raft message accepted or sent (snapshots included).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
/// Messages queued for one peer before sends to it are refused (reported unreachable).
const PEER_QUEUE: usize = 4096;

/// Where each replica listens, by Raft id; shared so the node can update it as managers join.
pub type PeerAddresses = Arc<RwLock<HashMap<u64, String>>>;

/// Sends each peer's messages over its own stream.
pub struct GrpcTransport<M> {
    tls: ClientTlsConfig,
    addresses: PeerAddresses,
    peers: HashMap<u64, mpsc::Sender<Message>>,
    inbox: mpsc::Sender<Input<M>>,
}

impl<M: StateMachine + Send + 'static> GrpcTransport<M> {
    /// `addresses` maps replica ids to `host:port`; `inbox` is the local replica's, for
    /// reports about peers that cannot be reached.
    pub fn new(
        tls: ClientTlsConfig,
        addresses: PeerAddresses,
        inbox: mpsc::Sender<Input<M>>,
    ) -> Self {
        GrpcTransport {
            tls,
            addresses,
            peers: HashMap::new(),
            inbox,
        }
    }

    fn peer(&mut self, to: u64) -> Option<&mpsc::Sender<Message>> {
        if !self.peers.contains_key(&to) {
            let address = self
                .addresses
                .read()
                .expect("not poisoned")
                .get(&to)?
                .clone();
            let (sender, receiver) = mpsc::channel(PEER_QUEUE);
            tokio::spawn(stream_to_peer(
                to,
                address,
                self.tls.clone(),
                receiver,
                self.inbox.clone(),
            ));
            self.peers.insert(to, sender);
        }
        self.peers.get(&to)
    }
}

impl<M: StateMachine + Send + 'static> Transport for GrpcTransport<M> {
    fn send(&mut self, message: Message) -> Result<(), Unreachable> {
        let to = message.to;
        let is_snapshot = message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
        let peer = self.peer(to).ok_or(Unreachable)?;
        peer.try_send(message).map_err(|_| Unreachable)?;
        if is_snapshot {
            // Queued on a live stream: raft may go on; if the stream breaks, the peer's next
            // answer shows it is still behind and raft sends the snapshot again.
            let _ = self.inbox.try_send(Input::SnapshotReport {
                to,
                delivered: true,
            });
        }
        Ok(())
    }
}

/// Keeps a stream open to one peer, reconnecting with backoff, until the transport is dropped.
async fn stream_to_peer<M>(
    to: u64,
    address: String,
    tls: ClientTlsConfig,
    queue: mpsc::Receiver<Message>,
    inbox: mpsc::Sender<Input<M>>,
) {
    let queue = Arc::new(std::sync::Mutex::new(queue));
    let mut backoff = Duration::from_millis(50);
    let mut reconnecting = false;
    loop {
        if reconnecting {
            // What was queued while the peer was away is stale: raft resends what still
            // matters, and a proposal forwarded to a leader that went away must not reach
            // its restarted process, which would forward it again to today's leader (its
            // proposer was told the outcome is unknown, and may have proposed it again).
            let mut queue = queue.lock().expect("not poisoned");
            while queue.try_recv().is_ok() {}
        }
        reconnecting = true;
        let connected = async {
            let endpoint = Endpoint::from_shared(format!("https://{address}"))
                .map_err(|e| e.to_string())?
                .tls_config(tls.clone())
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(1))
                .tcp_nodelay(true);
            endpoint.connect().await.map_err(|e| e.to_string())
        }
        .await;
        let channel: Channel = match connected {
            Ok(channel) => channel,
            Err(_) => {
                // What it queued meanwhile is dropped before the next attempt (above).
                if queue.lock().expect("not poisoned").is_closed() {
                    return;
                }
                let _ = inbox.try_send(Input::Unreachable { to });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let mut client = RaftClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        // Ends when the transport is dropped (the queue, so the stream, ends) or the peer
        // goes away.
        let _ = client.stream(Outgoing(queue.clone())).await;
        if queue.lock().expect("not poisoned").is_closed() {
            return;
        }
        let _ = inbox.try_send(Input::Unreachable { to });
    }
}

/// A peer's queue as the body of the current stream to it: the connection's task takes the
/// messages the Raft loop queued straight from the queue, with no task in between (one
/// hop less each way on a write's path); the stream after a reconnect takes up the same
/// queue.
struct Outgoing(Arc<std::sync::Mutex<mpsc::Receiver<Message>>>);

impl tokio_stream::Stream for Outgoing {
    type Item = RaftMessage;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<RaftMessage>> {
        let mut queue = self.0.lock().expect("not poisoned");
        queue.poll_recv(cx).map(|message| {
            message.map(|message| RaftMessage {
                message: message.write_to_bytes().expect("raft messages encode"),
            })
        })
    }
}

/// Who the store says may speak Raft; `None` until the replica holds a cluster (a joining
/// manager learns it from the leader's first messages).
pub type RaftVoters = Arc<RwLock<Option<VoterView>>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VoterView {
    /// Every node's Raft id (`None` for workers), by node id.
    pub raft_ids: HashMap<String, Option<u64>>,
    /// Nodes removed from the cluster.
    pub removed: std::collections::BTreeSet<String>,
}

impl VoterView {
    /// Whether the node with a manager certificate may send messages as replica `from`.
    /// A node the view does not know yet (it joined since the view was taken) may; a removed
    /// node, a demoted one, or one claiming another replica's id may not.
    fn check(&self, node_id: &str, from: u64) -> Result<(), Status> {
        if self.removed.contains(node_id) {
            return Err(Status::permission_denied(format!(
                "node {node_id} was removed from the cluster"
            )));
        }
        match self.raft_ids.get(node_id) {
            None => Ok(()),
            Some(Some(id)) if *id == from => Ok(()),
            Some(Some(id)) => Err(Status::permission_denied(format!(
                "node {node_id} is replica {id}, not {from}"
            ))),
            Some(None) => Err(Status::permission_denied(format!(
                "node {node_id} is not a manager any more (demoted)"
            ))),
        }
    }
}

/// The server side: accepts streams from managers of `cluster_id` and hands their messages
/// to the replica.
pub struct RaftService<M> {
    cluster_id: String,
    inbox: mpsc::Sender<Input<M>>,
    voters: RaftVoters,
}

impl<M: StateMachine + Send + 'static> RaftService<M> {
    pub fn new(
        cluster_id: String,
        inbox: mpsc::Sender<Input<M>>,
        voters: RaftVoters,
    ) -> RaftServer<Self> {
        RaftServer::new(RaftService {
            cluster_id,
            inbox,
            voters,
        })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Only a manager of this cluster, proven by its client certificate, may speak Raft.
pub fn authorize_manager<T>(request: &Request<T>, cluster_id: &str) -> Result<String, Status> {
    let identity = peer_identity(request, cluster_id)?;
    if identity.role != Role::Manager {
        return Err(Status::permission_denied(format!(
            "node {} is a worker: only managers take part in Raft",
            identity.node_id
        )));
    }
    Ok(identity.node_id)
}

#[tonic::async_trait]
impl<M: StateMachine + Send + 'static> Raft for RaftService<M> {
    async fn stream(
        &self,
        request: Request<Streaming<RaftMessage>>,
    ) -> Result<Response<StreamClosed>, Status> {
        let node_id = authorize_manager(&request, &self.cluster_id)?;
        let mut stream = request.into_inner();
        let mut received = 0u64;
        while let Some(envelope) = stream.message().await? {
            let message = Message::parse_from_bytes(&envelope.message)
                .map_err(|e| Status::invalid_argument(format!("malformed raft message: {e}")))?;
            if let Some(view) = &*self.voters.read().expect("not poisoned") {
                view.check(&node_id, message.from)?;
            }
            received += 1;
            if self
                .inbox
                .send(Input::Message(Box::new(message)))
                .await
                .is_err()
            {
                return Err(Status::unavailable("the replica stopped"));
            }
        }
        Ok(Response::new(StreamClosed { received }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_voter_view_refuses_removed_demoted_and_impostor_replicas() {
        let view = VoterView {
            raft_ids: [
                ("m1".to_owned(), Some(1)),
                ("m2".to_owned(), Some(2)),
                ("w1".to_owned(), None),
            ]
            .into(),
            removed: ["gone".to_owned()].into(),
        };
        assert!(view.check("m1", 1).is_ok());
        assert!(
            view.check("new", 3).is_ok(),
            "joined since the view was taken"
        );
        let refused =
            |node: &str, from: u64| view.check(node, from).unwrap_err().message().to_owned();
        assert!(refused("gone", 4).contains("was removed"));
        assert!(refused("w1", 3).contains("demoted"));
        assert!(refused("m1", 2).contains("is replica 1, not 2"));
    }
}
