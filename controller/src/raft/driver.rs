//! The Raft event loop: one tokio task owns a [`Replica`] and is the only one to touch it.
//! One `select!` over the tick timer and the inbox (peer messages, proposals, reads, transport
//! reports); after each event, one pass of the Ready checklist; messages go to a
//! [`Transport`]. Callers hold a [`RaftHandle`]: propose a command and await its response,
//! or run a query once the state is linearizably up to date (ReadIndex).

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use raft::prelude::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::crypt::DataKey;
use super::log::LogError;
use super::replica::{ProposalId, Replica, ReplicaError, StateMachine};

/// Delivers messages to peers. `send` must not block: queue, or refuse at once.
pub trait Transport: Send + 'static {
    /// Queues `message` for `message.to`; an error means the peer cannot be reached now.
    fn send(&mut self, message: Message) -> Result<(), Unreachable>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreachable;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("no leader is known yet; try again shortly")]
    NoLeader,
    #[error("the replica stopped")]
    Stopped,
    #[error("timed out waiting for the cluster (is a majority of managers reachable?)")]
    Timeout,
    #[error(
        "the leader changed before the change was acknowledged: it may or may not have been applied; check and try again"
    )]
    LeaderChanged,
}

/// Why a log was not resealed.
#[derive(Debug, thiserror::Error)]
pub enum RekeyError {
    #[error(transparent)]
    Raft(#[from] RaftError),
    #[error(transparent)]
    Log(LogError),
}

/// A query run on the state machine inside the loop, once it is linearizable.
type Query<M> = Box<dyn FnOnce(&M) + Send>;

/// What the loop reacts to, besides its timer.
pub enum Input<M> {
    /// A message from a peer.
    Message(Box<Message>),
    /// The transport's verdict on a snapshot it was given.
    SnapshotReport {
        to: u64,
        delivered: bool,
    },
    Unreachable {
        to: u64,
    },
    Propose {
        command: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, RaftError>>,
    },
    /// A configuration change (add or remove a voter), answered when applied.
    ProposeConfChange {
        change: raft::prelude::ConfChange,
        reply: oneshot::Sender<Result<Vec<u8>, RaftError>>,
    },
    Read {
        query: Query<M>,
    },
    /// A query on the local state as it is, without checking with the leader.
    LocalRead {
        query: Query<M>,
    },
    Status {
        reply: oneshot::Sender<Status>,
    },
    /// Asks the leader to hand leadership to voter `to` (it stops taking proposals meanwhile).
    TransferLeadership {
        to: u64,
    },
    /// Reseals the log with a new key (a key rotation), between two Ready passes.
    Rekey {
        key: DataKey,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

/// What a replica knows of the cluster right now (not linearizable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub id: u64,
    /// 0 when no leader is known.
    pub leader: u64,
    pub term: u64,
}

/// A query, and where its result arrives.
fn boxed<M, R: Send + 'static>(
    query: impl FnOnce(&M) -> R + Send + 'static,
) -> (Query<M>, oneshot::Receiver<R>) {
    let (reply, response) = oneshot::channel();
    let query: Query<M> = Box::new(move |machine| {
        let _ = reply.send(query(machine));
    });
    (query, response)
}

pub struct RaftHandle<M> {
    inbox: mpsc::Sender<Input<M>>,
    timeout: Duration,
    applied: watch::Receiver<u64>,
}

// Not derived: a handle is cloned whatever the state machine is (derive would ask `M: Clone`).
impl<M> Clone for RaftHandle<M> {
    fn clone(&self) -> Self {
        RaftHandle {
            inbox: self.inbox.clone(),
            timeout: self.timeout,
            applied: self.applied.clone(),
        }
    }
}

impl<M: StateMachine + Send + 'static> RaftHandle<M> {
    /// Proposes a command and waits until it is applied; returns the state machine's response.
    pub async fn propose(&self, command: Vec<u8>) -> Result<Vec<u8>, RaftError> {
        let (reply, response) = oneshot::channel();
        self.ask(Input::Propose { command, reply }, response, true)
            .await?
    }

    /// Adds or removes a voter; resolves when the change is applied, with the state
    /// machine's response to the command in the change's context (empty without one).
    pub async fn propose_conf_change(
        &self,
        change: raft::prelude::ConfChange,
    ) -> Result<Vec<u8>, RaftError> {
        let (reply, response) = oneshot::channel();
        self.ask(Input::ProposeConfChange { change, reply }, response, true)
            .await?
    }

    /// Runs `query` on the state once every write acknowledged before this call is applied.
    pub async fn read<R: Send + 'static>(
        &self,
        query: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, RaftError> {
        let (query, response) = boxed(query);
        self.ask(Input::Read { query }, response, true).await
    }

    /// Runs `query` on this replica's state as it is now: possibly stale, never blocked by
    /// a missing quorum. For what the node itself needs (peer addresses), not for clients.
    pub async fn local_read<R: Send + 'static>(
        &self,
        query: impl FnOnce(&M) -> R + Send + 'static,
    ) -> Result<R, RaftError> {
        let (query, response) = boxed(query);
        self.ask(Input::LocalRead { query }, response, false).await
    }

    pub async fn status(&self) -> Result<Status, RaftError> {
        let (reply, response) = oneshot::channel();
        self.ask(Input::Status { reply }, response, false).await
    }

    /// Hands `input` to the loop and waits for its answer, within the handle's timeout when
    /// `bounded` (answers that need the cluster); local answers come at once.
    async fn ask<T>(
        &self,
        input: Input<M>,
        response: oneshot::Receiver<T>,
        bounded: bool,
    ) -> Result<T, RaftError> {
        self.inbox
            .send(input)
            .await
            .map_err(|_| RaftError::Stopped)?;
        if !bounded {
            return response.await.map_err(|_| RaftError::Stopped);
        }
        match tokio::time::timeout(self.timeout, response).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(RaftError::Stopped),
            Err(_) => Err(RaftError::Timeout),
        }
    }

    /// Asks this replica, if it leads, to hand leadership to `to`; watch `status` for the
    /// outcome.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), RaftError> {
        self.inbox
            .send(Input::TransferLeadership { to })
            .await
            .map_err(|_| RaftError::Stopped)
    }

    /// Reseals this replica's log with `key`: once it returns `Ok`, the old key opens
    /// nothing the log holds.
    pub async fn rekey(&self, key: DataKey) -> Result<(), RekeyError> {
        let (reply, response) = oneshot::channel();
        self.ask(Input::Rekey { key, reply }, response, false)
            .await?
            .map_err(RekeyError::Log)
    }

    /// The index of the last entry applied to the state machine, changing as entries are
    /// applied: what loops that react to the state wait on.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Where peers' messages and transport reports go.
    pub fn inbox(&self) -> mpsc::Sender<Input<M>> {
        self.inbox.clone()
    }
}

pub struct DriverConfig {
    /// One Raft tick; a lost leader is replaced after 11–16 ticks with the replica's defaults.
    pub tick: Duration,
    /// How long a caller waits for a proposal or a read.
    pub timeout: Duration,
    pub inbox_capacity: usize,
    /// Where the loop records what it observes (the node registers them for scraping).
    pub metrics: RaftMetrics,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            inbox_capacity: 4096,
            metrics: RaftMetrics::default(),
        }
    }
}

/// Why a proposal was not applied for its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProposalFailure {
    /// Refused at once: no leader was known.
    NoLeader,
    /// Its leader or term changed before it was applied.
    LeaderChanged,
    /// Its caller gave up (timed out) before it was applied.
    Abandoned,
}

impl ProposalFailure {
    pub const ALL: [ProposalFailure; 3] = [
        ProposalFailure::NoLeader,
        ProposalFailure::LeaderChanged,
        ProposalFailure::Abandoned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProposalFailure::NoLeader => "no_leader",
            ProposalFailure::LeaderChanged => "leader_changed",
            ProposalFailure::Abandoned => "abandoned",
        }
    }
}

/// The label set of failed proposals: `reason`.
pub type FailureLabels = [(&'static str, &'static str); 1];

/// What the loop observes of itself: atomics (the histogram, a short lock), so that the loop
/// pays nanoseconds per observation and a scrape reads them without asking the loop.
/// Clones share their values.
#[derive(Debug, Clone)]
pub struct RaftMetrics {
    pub term: Gauge<u64, AtomicU64>,
    pub commit_index: Gauge<u64, AtomicU64>,
    pub applied_index: Gauge<u64, AtomicU64>,
    /// 1 while this replica leads, else 0.
    pub is_leader: Gauge,
    /// Leaders seen (a new leader, or a new term with one), as the loop logs them.
    pub leader_changes: Counter,
    /// From the loop taking a proposal to its entry applied here, in seconds.
    pub proposal_seconds: Histogram,
    /// By `reason` (`ProposalFailure::as_str`).
    pub proposals_failed: Family<FailureLabels, Counter>,
}

impl Default for RaftMetrics {
    fn default() -> Self {
        let proposals_failed = Family::<FailureLabels, Counter>::default();
        // Every reason shows from the start, at 0: a rate over a series that appears only
        // at its first failure misses that failure.
        for reason in ProposalFailure::ALL {
            let _ = proposals_failed.get_or_create(&[("reason", reason.as_str())]);
        }
        RaftMetrics {
            term: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            // 0.25 ms to 4 s: a loopback commit with fsync takes about 1 ms here, a
            // proposal times out at 5 s.
            proposal_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 15)),
            proposals_failed,
        }
    }
}

impl RaftMetrics {
    fn failed(&self, reason: ProposalFailure) {
        self.proposals_failed
            .get_or_create(&[("reason", reason.as_str())])
            .inc();
    }

    /// The replica's position after a Ready pass.
    fn observe<M: StateMachine>(&self, replica: &Replica<M>) {
        self.term.set(replica.term());
        self.commit_index.set(replica.committed());
        self.applied_index.set(replica.applied());
        self.is_leader.set(i64::from(replica.is_leader()));
    }
}

/// The loop's task: abort it to stop the replica; it ends by itself only on a log error.
pub type DriverTask = tokio::task::JoinHandle<Result<(), ReplicaError>>;

/// Starts the loop on the current tokio runtime. It runs until it is aborted, every sender
/// of its inbox is gone, or the log fails (then it stops rather than acknowledge what is not
/// on disk).
/// `transport` is made with the loop's inbox, where it reports peers it cannot reach.
pub fn spawn<M, T>(
    replica: Replica<M>,
    transport: impl FnOnce(mpsc::Sender<Input<M>>) -> T,
    config: DriverConfig,
) -> (RaftHandle<M>, DriverTask)
where
    M: StateMachine + Send + 'static,
    T: Transport,
{
    let (inbox, receiver) = mpsc::channel(config.inbox_capacity);
    let transport = transport(inbox.clone());
    let (applied_sender, applied) = watch::channel(replica.applied());
    let handle = RaftHandle {
        inbox,
        timeout: config.timeout,
        applied,
    };
    let task = tokio::spawn(run(
        replica,
        transport,
        receiver,
        config.tick,
        applied_sender,
        config.metrics,
    ));
    (handle, task)
}

/// How long a read waits for raft's answer before it is sent again.
const READ_RETRY: Duration = Duration::from_millis(500);
/// Reads older than this are dropped: their callers timed out long before.
const READ_GIVE_UP: Duration = Duration::from_secs(60);

/// The loop's clock. A late loop (a slow fsync) gets one tick for the time it missed, and
/// the ticks stay on the grid set when the replica started. Restarting the grid from the
/// late tick (tokio's `Delay`) lined up the ticks of followers held up by the same event
/// (the same append, on one disk): after the leader's death, their election timeouts then
/// ran out in the same millisecond often enough to split votes, and a split vote costs a
/// second election timeout.
fn ticker(tick: Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    ticker
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    u64::from_le_bytes(bytes)
}

/// Inputs handled between two Ready passes, at most: enough to fill an fsync under load,
/// few enough that ticks and replies are not held up.
const MAX_INPUTS_PER_READY: usize = 256;

/// A proposal raft took, waiting to be applied.
struct Proposal {
    reply: oneshot::Sender<Result<Vec<u8>, RaftError>>,
    /// The leader and term it was handed to.
    leader: u64,
    term: u64,
    /// When the loop took it.
    taken: Instant,
}

/// What the loop keeps for callers until raft answers them.
struct Pending<M> {
    /// Proposal ids and read contexts must not repeat across restarts: entries and reads of
    /// an earlier run could otherwise answer this run's callers.
    next_sequence: u64,
    proposals: HashMap<ProposalId, Proposal>,
    /// Reads to (re)send once a leader is known, with when the caller first asked.
    reads_to_send: Vec<(Query<M>, Instant)>,
    metrics: RaftMetrics,
}

impl<M: StateMachine> Pending<M> {
    /// Hands one input to the replica (or answers it at once).
    fn take(&mut self, replica: &mut Replica<M>, input: Input<M>) {
        match input {
            Input::Message(message) => {
                // A message raft refuses (stale term, unknown peer) is not our error.
                let _ = replica.step(*message);
            }
            Input::SnapshotReport { to, delivered } => replica.report_snapshot(to, delivered),
            Input::Unreachable { to } => replica.report_unreachable(to),
            Input::Propose { command, reply } => {
                let id = self.next_id(replica);
                match replica.propose(id, command) {
                    Ok(()) => self.taken(replica, id, reply),
                    Err(_) => self.refused(reply),
                }
            }
            Input::ProposeConfChange { change, reply } => {
                let id = self.next_id(replica);
                match replica.propose_conf_change(id, change) {
                    Ok(()) => self.taken(replica, id, reply),
                    Err(_) => self.refused(reply),
                }
            }
            Input::LocalRead { query } => query(replica.machine()),
            Input::Status { reply } => {
                let _ = reply.send(Status {
                    id: replica.id(),
                    leader: replica.leader(),
                    term: replica.term(),
                });
            }
            Input::Read { query } => self.reads_to_send.push((query, Instant::now())),
            Input::TransferLeadership { to } => replica.transfer_leadership(to),
            Input::Rekey { key, reply } => {
                let _ = reply.send(replica.rekey(key));
            }
        }
    }

    fn taken(
        &mut self,
        replica: &Replica<M>,
        id: ProposalId,
        reply: oneshot::Sender<Result<Vec<u8>, RaftError>>,
    ) {
        let proposal = Proposal {
            reply,
            leader: replica.leader(),
            term: replica.term(),
            taken: Instant::now(),
        };
        self.proposals.insert(id, proposal);
    }

    fn refused(&self, reply: oneshot::Sender<Result<Vec<u8>, RaftError>>) {
        self.metrics.failed(ProposalFailure::NoLeader);
        let _ = reply.send(Err(RaftError::NoLeader));
    }

    fn next_id(&mut self, replica: &Replica<M>) -> ProposalId {
        self.next_sequence = self.next_sequence.wrapping_add(1);
        ProposalId {
            replica: replica.id(),
            sequence: self.next_sequence,
        }
    }
}

async fn run<M: StateMachine, T: Transport>(
    mut replica: Replica<M>,
    mut transport: T,
    mut inbox: mpsc::Receiver<Input<M>>,
    tick: Duration,
    applied_index: watch::Sender<u64>,
    metrics: RaftMetrics,
) -> Result<(), ReplicaError> {
    let mut ticker = ticker(tick);
    let mut pending = Pending {
        next_sequence: random_u64(),
        proposals: HashMap::new(),
        reads_to_send: Vec::new(),
        metrics,
    };
    pending.metrics.observe(&replica);
    // Reads sent to raft, by context: when asked, and when the caller first asked.
    let mut reads_asked: HashMap<Vec<u8>, (Query<M>, Instant, Instant)> = HashMap::new();
    let mut reads_ready: Vec<(u64, Query<M>)> = Vec::new();
    // The leader and term last logged (0: none known).
    let mut known = (replica.leader(), replica.term());
    loop {
        tokio::select! {
            _ = ticker.tick() => replica.tick(),
            input = inbox.recv() => {
                let Some(input) = input else { return Ok(()) };
                pending.take(&mut replica, input);
                // What is already waiting joins this Ready pass: under load, many proposals
                // and peer messages share one fsync instead of paying one each.
                for _ in 1..MAX_INPUTS_PER_READY {
                    match inbox.try_recv() {
                        Ok(input) => pending.take(&mut replica, input),
                        Err(_) => break,
                    }
                }
            }
        }
        // raft drops a ReadIndex request silently when no leader is known, when a new leader
        // has not committed in its term yet, or when the leader goes away: unanswered reads
        // are sent again, under a new context, until their callers have long given up.
        let now = Instant::now();
        let (stale, waiting): (Vec<_>, Vec<_>) = reads_asked
            .drain()
            .partition(|(_, (_, asked, _))| now.duration_since(*asked) > READ_RETRY);
        reads_asked = waiting.into_iter().collect();
        pending.reads_to_send.extend(
            stale
                .into_iter()
                .map(|(_, (query, _, first))| (query, first))
                .filter(|(_, first)| now.duration_since(*first) < READ_GIVE_UP),
        );
        if replica.leader() != 0 {
            for (query, first) in std::mem::take(&mut pending.reads_to_send) {
                // The leader merges ReadIndex requests with equal contexts, whoever sent
                // them: a context names this replica as well as the request.
                let context = pending.next_id(&replica).encode();
                replica.read_index(context.clone());
                reads_asked.insert(context, (query, now, first));
            }
        }
        // Messages go out, and proposers hear, as soon as the pass has them.
        let mut refused = Vec::new();
        let (proposals, metrics) = (&mut pending.proposals, &pending.metrics);
        let reads = replica.advance_sending(
            |messages| send(&mut transport, messages, &mut refused),
            |applied| {
                if let Some(proposal) = applied.proposal.and_then(|id| proposals.remove(&id)) {
                    metrics
                        .proposal_seconds
                        .observe(proposal.taken.elapsed().as_secs_f64());
                    let _ = proposal.reply.send(Ok(applied.response));
                }
            },
        )?;
        for (to, is_snapshot) in refused {
            replica.report_unreachable(to);
            if is_snapshot {
                replica.report_snapshot(to, false);
            }
        }
        for read in reads {
            if let Some((query, _, _)) = reads_asked.remove(read.request_ctx.as_slice()) {
                reads_ready.push((read.index, query));
            }
        }
        let applied = replica.applied();
        applied_index.send_if_modified(|known| std::mem::replace(known, applied) != applied);
        let (due, waiting): (Vec<_>, Vec<_>) = reads_ready
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        reads_ready = waiting;
        for (_, query) in due {
            query(replica.machine());
        }
        // raft-rs drops a proposal silently when the leader it went to goes away (a follower
        // forwards it; a deposed leader's unreplicated tail is overwritten): its caller
        // would wait for its timeout. Once another leader or term is known, it is told at
        // once. Its entry may still be committed, as after a timeout.
        let (leader, term) = (replica.leader(), replica.term());
        if (leader, term) != known {
            // Elections, as operators (and failover measurements) need to see them.
            tracing::info!(replica = replica.id(), term, leader, "raft leader changed");
            if leader != 0 {
                pending.metrics.leader_changes.inc();
            }
            known = (leader, term);
        }
        let stranded = pending
            .proposals
            .extract_if(|_, proposal| proposal.leader != leader || proposal.term != term);
        for (_, proposal) in stranded {
            pending.metrics.failed(ProposalFailure::LeaderChanged);
            let _ = proposal.reply.send(Err(RaftError::LeaderChanged));
        }
        // Callers that gave up (timed out) leave closed senders behind: forget them.
        let metrics = &pending.metrics;
        pending.proposals.retain(|_, proposal| {
            let abandoned = proposal.reply.is_closed();
            if abandoned {
                metrics.failed(ProposalFailure::Abandoned);
            }
            !abandoned
        });
        pending.metrics.observe(&replica);
    }
}

/// Hands `messages` to the transport; the peers it refused (and whether a snapshot was
/// among them) go to `refused`, for raft to hear of once the Ready pass is over.
fn send<T: Transport>(transport: &mut T, messages: Vec<Message>, refused: &mut Vec<(u64, bool)>) {
    for message in messages {
        let to = message.to;
        let is_snapshot = message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot;
        if transport.send(message).is_err() {
            refused.push((to, is_snapshot));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::crypt::DataKey;
    use crate::raft::log::{DurableLog, Location};
    use crate::raft::replica::Config;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    /// The values written, in order.
    #[derive(Default)]
    struct Journal(Vec<u64>);

    impl StateMachine for Journal {
        fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
            self.0.push(u64::from_be_bytes(command.try_into().unwrap()));
            (self.0.len() as u64).to_be_bytes().to_vec()
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

    type Inboxes = Arc<Mutex<HashMap<u64, mpsc::Sender<Input<Journal>>>>>;

    /// Delivers through the peers' inboxes; a peer that is down or cut is unreachable.
    struct Channels {
        inboxes: Inboxes,
        cut: Arc<Mutex<BTreeSet<u64>>>,
        from: u64,
    }

    impl Transport for Channels {
        fn send(&mut self, message: Message) -> Result<(), Unreachable> {
            let cut = self.cut.lock().unwrap();
            if cut.contains(&self.from) || cut.contains(&message.to) {
                return Err(Unreachable);
            }
            let inbox = self
                .inboxes
                .lock()
                .unwrap()
                .get(&message.to)
                .cloned()
                .ok_or(Unreachable)?;
            inbox
                .try_send(Input::Message(Box::new(message)))
                .map_err(|_| Unreachable)
        }
    }

    struct Cluster {
        dir: tempfile::TempDir,
        key: DataKey,
        inboxes: Inboxes,
        cut: Arc<Mutex<BTreeSet<u64>>>,
        handles: HashMap<u64, (RaftHandle<Journal>, DriverTask)>,
    }

    impl Cluster {
        fn new(size: u64) -> Cluster {
            let dir = tempfile::tempdir().unwrap();
            let voters: Vec<u64> = (1..=size).collect();
            let key = DataKey::generate();
            for id in &voters {
                let path = dir.path().join(format!("{id}.redb"));
                let mut log = DurableLog::open(Location::File {
                    path: &path,
                    durable: true,
                    key: key.clone(),
                })
                .unwrap();
                log.bootstrap(&voters, Vec::new()).unwrap();
            }
            let mut cluster = Cluster {
                dir,
                key,
                inboxes: Arc::default(),
                cut: Arc::default(),
                handles: HashMap::new(),
            };
            for id in voters {
                cluster.start(id);
            }
            cluster
        }

        fn start(&mut self, id: u64) {
            let path = self.dir.path().join(format!("{id}.redb"));
            let log = DurableLog::open(Location::File {
                path: &path,
                durable: true,
                key: self.key.clone(),
            })
            .unwrap();
            let replica = Replica::open(&Config::new(id), log, Journal::default()).unwrap();
            let transport = Channels {
                inboxes: self.inboxes.clone(),
                cut: self.cut.clone(),
                from: id,
            };
            let config = DriverConfig {
                tick: Duration::from_millis(10),
                timeout: Duration::from_secs(2),
                ..DriverConfig::default()
            };
            let (handle, task) = spawn(replica, |_| transport, config);
            self.inboxes.lock().unwrap().insert(id, handle.inbox());
            self.handles.insert(id, (handle, task));
        }

        fn kill(&mut self, id: u64) {
            self.inboxes.lock().unwrap().remove(&id);
            if let Some((_, task)) = self.handles.remove(&id) {
                task.abort();
            }
        }

        /// The leader, once the running replicas agree on one.
        async fn leader(&self) -> u64 {
            for _ in 0..1000 {
                let mut seen = BTreeSet::new();
                for (handle, _) in self.handles.values() {
                    seen.insert(handle.status().await.unwrap().leader);
                }
                if let [leader] = seen.into_iter().collect::<Vec<_>>()[..]
                    && leader != 0
                    && self.handles.contains_key(&leader)
                {
                    return leader;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("the replicas never agreed on a leader");
        }

        /// Proposes `value` through any replica that accepts it, retrying until `deadline`.
        async fn write(&self, value: u64) -> u64 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                for (handle, _) in self.handles.values() {
                    if let Ok(response) = handle.propose(value.to_be_bytes().to_vec()).await {
                        return u64::from_be_bytes(response.try_into().unwrap());
                    }
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no replica accepted {value}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn writes_continue_after_the_leader_is_killed_and_reads_are_linearizable() {
        let mut cluster = Cluster::new(3);
        for value in 1..=5 {
            cluster.write(value).await;
        }
        // A linearizable read through any replica, leader or not, sees every acknowledged write.
        for (handle, _) in cluster.handles.values() {
            let seen = handle
                .read(|journal: &Journal| journal.0.clone())
                .await
                .unwrap();
            assert_eq!(seen, vec![1, 2, 3, 4, 5]);
        }
        let leader = cluster.leader().await;
        cluster.kill(leader);
        for value in 6..=8 {
            cluster.write(value).await;
        }
        let new_leader = cluster.leader().await;
        assert_ne!(new_leader, leader);
        cluster.start(leader);
        cluster.kill(new_leader);
        cluster.write(9).await;
        let (handle, _) = &cluster.handles[&leader];
        let seen = handle
            .read(|journal: &Journal| journal.0.clone())
            .await
            .unwrap();
        assert_eq!(
            seen,
            (1..=9).collect::<Vec<_>>(),
            "the restarted replica caught up"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn many_waiting_proposals_each_get_their_own_answer() {
        let cluster = Cluster::new(3);
        let leader = cluster.leader().await;
        let (handle, _) = &cluster.handles[&leader];
        // More callers than one pass takes, all waiting in the inbox before the loop runs.
        let count = 3 * MAX_INPUTS_PER_READY as u64;
        let mut callers = tokio::task::JoinSet::new();
        for value in 0..count {
            let handle = handle.clone();
            callers.spawn(async move {
                let position = handle.propose(value.to_be_bytes().to_vec()).await.unwrap();
                (value, u64::from_be_bytes(position.try_into().unwrap()))
            });
        }
        let answers: HashMap<u64, u64> = callers.join_all().await.into_iter().collect();
        let journal = handle
            .read(|journal: &Journal| journal.0.clone())
            .await
            .unwrap();
        assert_eq!(journal.len() as u64, count, "each value applied once");
        for (position, value) in journal.iter().enumerate() {
            assert_eq!(
                answers[value],
                position as u64 + 1,
                "the caller of {value} got its own entry's response"
            );
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_proposal_forwarded_to_a_lost_leader_is_answered_once_another_leads() {
        let cluster = Cluster::new(3);
        cluster.write(1).await;
        let leader = cluster.leader().await;
        let follower = *cluster.handles.keys().find(|id| **id != leader).unwrap();
        // The leader is cut off: the follower's forwarded proposal goes nowhere.
        cluster.cut.lock().unwrap().insert(leader);
        let (handle, _) = &cluster.handles[&follower];
        let asked = Instant::now();
        let err = handle
            .propose(2u64.to_be_bytes().to_vec())
            .await
            .unwrap_err();
        assert_eq!(err, RaftError::LeaderChanged);
        // A lost leader is replaced after 11–16 ticks of 10 ms; the caller's timeout is 2 s.
        assert!(
            asked.elapsed() < Duration::from_millis(500),
            "answered after {:?}",
            asked.elapsed()
        );
        // The two others go on; the write that failed may or may not be in the journal.
        cluster.write(3).await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_loop_records_its_position_proposals_and_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.redb");
        let location = Location::File {
            path: &path,
            durable: true,
            key: DataKey::generate(),
        };
        let mut log = DurableLog::open(location).unwrap();
        log.bootstrap(&[1], Vec::new()).unwrap();
        let replica = Replica::open(&Config::new(1), log, Journal::default()).unwrap();
        let metrics = RaftMetrics::default();
        let config = DriverConfig {
            tick: Duration::from_millis(10),
            metrics: metrics.clone(),
            ..DriverConfig::default()
        };
        let failed = |reason: ProposalFailure| {
            metrics
                .proposals_failed
                .get_or_create(&[("reason", reason.as_str())])
                .get()
        };
        let (handle, _task) = spawn(replica, |_| Alone, config);
        // Before the election: refused at once, and counted.
        assert_eq!(
            handle.propose(0u64.to_be_bytes().to_vec()).await,
            Err(RaftError::NoLeader)
        );
        assert_eq!(failed(ProposalFailure::NoLeader), 1);
        assert_eq!(metrics.is_leader.get(), 0);
        while handle.status().await.unwrap().leader != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for value in 1..=3u64 {
            handle.propose(value.to_be_bytes().to_vec()).await.unwrap();
        }
        assert_eq!(metrics.proposal_seconds.count(), 3);
        assert_eq!(metrics.is_leader.get(), 1);
        assert_eq!(metrics.leader_changes.get(), 1);
        assert!(metrics.term.get() >= 1);
        // The snapshot at 1, the leader's empty entry, three writes.
        assert_eq!(metrics.applied_index.get(), 5);
        assert_eq!(metrics.commit_index.get(), 5);
        assert_eq!(failed(ProposalFailure::LeaderChanged), 0);
        assert_eq!(failed(ProposalFailure::Abandoned), 0);
    }

    /// A single replica's transport: it has no one to talk to.
    struct Alone;

    impl Transport for Alone {
        fn send(&mut self, _message: Message) -> Result<(), Unreachable> {
            Err(Unreachable)
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_late_loop_keeps_its_tick_grid() {
        let start = Instant::now();
        let mut ticker = ticker(Duration::from_millis(100));
        ticker.tick().await;
        // Held up for 250 ms (and a few), then ticking again: one tick for the time
        // missed, then the ticks fall on the grid of the start, not 100 ms after the
        // late tick.
        tokio::time::sleep(Duration::from_millis(253)).await;
        ticker.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(253));
        ticker.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(300));
        ticker.tick().await;
        assert_eq!(start.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_replica_without_a_majority_fails_instead_of_answering() {
        let cluster = Cluster::new(3);
        cluster.write(1).await;
        cluster.cut.lock().unwrap().extend([2, 3]);
        let (handle, _) = &cluster.handles[&1];
        let err = handle
            .propose(2u64.to_be_bytes().to_vec())
            .await
            .unwrap_err();
        // Replica 1 may lead (then it steps down: check quorum) or follow (then it campaigns).
        assert!(
            matches!(
                err,
                RaftError::Timeout | RaftError::NoLeader | RaftError::LeaderChanged
            ),
            "{err:?}"
        );
        let read = handle.read(|journal: &Journal| journal.0.clone()).await;
        assert!(
            read.is_err(),
            "no linearizable read without a quorum: {read:?}"
        );
    }
}
