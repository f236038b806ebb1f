//! One Raft replica: raft-rs' `RawNode` over the durable log and a state machine, driven
//! through the Ready checklist in the order raft-rs documents. No IO beyond the log, no
//! clock, no network: the caller ticks it, feeds it messages and sends what it returns, so
//! the same code runs in the deterministic simulation and in the daemon.

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, ReadState, Snapshot,
};
use raft::{RawNode, StateRole};

use super::log::{DurableLog, LogError};

/// The replicated state machine: a deterministic function of the committed entries.
pub trait StateMachine {
    /// Applies the command of a committed entry and returns the response for its proposer.
    /// Must be deterministic: every replica applies the same entries in the same order.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;

    /// The whole state, for log compaction and for replicas that fall too far behind.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot.
    fn restore(&mut self, snapshot: &[u8]);
}

/// Identifies a proposal across the cluster: the proposing replica and its own sequence
/// number, carried in the entry's context so the proposer can match the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProposalId {
    pub replica: u64,
    pub sequence: u64,
}

impl ProposalId {
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&self.replica.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out
    }

    fn decode(context: &[u8]) -> Option<ProposalId> {
        let (replica, sequence) = context.split_at_checked(8)?;
        Some(ProposalId {
            replica: u64::from_be_bytes(replica.try_into().ok()?),
            sequence: u64::from_be_bytes(sequence.try_into().ok()?),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub id: u64,
    /// Ticks a follower trusts the leader it last heard from (check quorum's lease): it
    /// ignores candidates meanwhile, and a leader that hears from no majority for this long
    /// steps down.
    pub lease_ticks: usize,
    /// Ticks without a leader before a follower campaigns: drawn from [min, max). `min` is
    /// above `lease_ticks`: the first follower to campaign finds the others out of their
    /// lease, instead of being ignored and waiting for another timeout.
    pub min_election_tick: usize,
    pub max_election_tick: usize,
    pub heartbeat_tick: usize,
    /// Entries applied between two snapshots (log compactions).
    pub snapshot_every: u64,
}

impl Config {
    /// The daemon's defaults: a tick is 100 ms, so a lost leader is replaced after
    /// 1.1–1.5 s of silence.
    pub fn new(id: u64) -> Self {
        Config {
            id,
            lease_ticks: 10,
            min_election_tick: 11,
            max_election_tick: 16,
            heartbeat_tick: 1,
            snapshot_every: 10_000,
        }
    }
}

/// A committed command, applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub index: u64,
    /// Set when this replica proposed it (the proposer answers its client).
    pub proposal: Option<ProposalId>,
    pub response: Vec<u8>,
}

/// What one pass of the Ready checklist produced.
#[derive(Debug, Default)]
pub struct Output {
    /// To send to the other replicas, in order.
    pub messages: Vec<Message>,
    pub applied: Vec<Applied>,
    /// Answers to `read_index` requests: the context given and the index to wait for.
    pub reads: Vec<ReadState>,
}

pub struct Replica<M> {
    node: RawNode<DurableLog>,
    machine: M,
    snapshot_every: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
}

impl<M: StateMachine> Replica<M> {
    /// Opens a replica over its log: the state machine is restored from the log's snapshot,
    /// and the entries after it are applied again as they come out of the Ready loop.
    pub fn open(config: &Config, log: DurableLog, mut machine: M) -> Result<Self, ReplicaError> {
        let snapshot_index = log.snapshot_index();
        if snapshot_index > 0 {
            let snapshot = raft::Storage::snapshot(&log, snapshot_index, config.id)?;
            machine.restore(&snapshot.data);
        }
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.lease_ticks,
            min_election_tick: config.min_election_tick,
            max_election_tick: config.max_election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied: snapshot_index,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..raft::Config::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config, log, &logger)?;
        Ok(Replica {
            node,
            machine,
            snapshot_every: config.snapshot_every,
        })
    }

    pub fn id(&self) -> u64 {
        self.node.raft.id
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The leader this replica knows of, 0 if none.
    pub fn leader(&self) -> u64 {
        self.node.raft.leader_id
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        voters.sort_unstable();
        voters
    }

    pub fn machine(&self) -> &M {
        &self.machine
    }

    /// One unit of logical time: heartbeats and election timeouts count ticks.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    pub fn step(&mut self, message: Message) -> Result<(), ReplicaError> {
        Ok(self.node.step(message)?)
    }

    /// Tells raft whether a snapshot sent to `to` arrived. The transport must call it for
    /// every snapshot message; until then the leader sends that peer nothing else.
    pub fn report_snapshot(&mut self, to: u64, delivered: bool) {
        let status = if delivered {
            raft::SnapshotStatus::Finish
        } else {
            raft::SnapshotStatus::Failure
        };
        self.node.report_snapshot(to, status);
    }

    /// Tells raft that the last message to `to` could not be sent.
    pub fn report_unreachable(&mut self, to: u64) {
        self.node.report_unreachable(to);
    }

    /// Proposes a command. A follower forwards it to the leader; without a known leader it
    /// is refused (`ProposalDropped`) and the caller retries elsewhere.
    pub fn propose(&mut self, id: ProposalId, command: Vec<u8>) -> Result<(), ReplicaError> {
        Ok(self.node.propose(id.encode(), command)?)
    }

    pub fn propose_conf_change(
        &mut self,
        id: ProposalId,
        change: ConfChange,
    ) -> Result<(), ReplicaError> {
        Ok(self.node.propose_conf_change(id.encode(), change)?)
    }

    /// Reseals this replica's log with `key` (a key rotation; see `DurableLog::rekey`).
    pub fn rekey(&mut self, key: super::crypt::DataKey) -> Result<(), LogError> {
        self.node.mut_store().rekey(key)
    }

    /// Asks the leader to hand leadership to voter `to`; a follower forwards the request to
    /// the leader it knows (raft-rs drops it when there is none).
    pub fn transfer_leadership(&mut self, to: u64) {
        self.node.transfer_leader(to);
    }

    /// Asks for a linearizable read: once `Output::reads` returns `context` with an index and
    /// this replica has applied that index, reading the state machine is linearizable.
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.node.read_index(context);
    }

    /// The highest index known to be committed.
    pub fn committed(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The highest index applied to the state machine.
    pub fn applied(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// Runs the Ready checklist once, in raft-rs' order: messages a leader may send before
    /// persisting; snapshot; committed entries; new entries and hard state, persisted (and
    /// fsynced) together; messages that must follow persistence; advance; the light ready's
    /// messages and committed entries, then its commit index (which need not be durable
    /// before them); advance_apply.
    pub fn advance(&mut self) -> Result<Output, ReplicaError> {
        let mut messages = Vec::new();
        let mut applied = Vec::new();
        let reads =
            self.advance_sending(|batch| messages.extend(batch), |entry| applied.push(entry))?;
        Ok(Output {
            messages,
            applied,
            reads,
        })
    }

    /// [`Replica::advance`], handing out messages and applied entries as soon as each is
    /// ready instead of at the end: a leader's appends (which may go before persistence)
    /// before anything is applied or written, so followers append while the leader
    /// fsyncs (the Raft thesis, 10.2.1; etcd does the same); a follower's answers right
    /// after its fsync; an applied entry (for its proposer's answer) before the commit
    /// index is recorded. Returns the answers to `read_index` requests.
    pub fn advance_sending(
        &mut self,
        mut send: impl FnMut(Vec<Message>),
        mut applied: impl FnMut(Applied),
    ) -> Result<Vec<ReadState>, ReplicaError> {
        if !self.node.has_ready() {
            return Ok(Vec::new());
        }
        let mut ready = self.node.ready();
        send(ready.take_messages());
        if *ready.snapshot() != Snapshot::default() {
            let snapshot = ready.snapshot().clone();
            self.machine.restore(&snapshot.data);
            self.node.mut_store().apply_snapshot(snapshot)?;
        }
        self.apply_entries(ready.take_committed_entries(), &mut applied)?;
        let reads = ready.take_read_states();
        self.node.mut_store().persist(ready.entries(), ready.hs())?;
        send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        send(light.take_messages());
        self.apply_entries(light.take_committed_entries(), &mut applied)?;
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        self.node.advance_apply();
        self.compact_if_due()?;
        Ok(reads)
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        applied: &mut impl FnMut(Applied),
    ) -> Result<(), ReplicaError> {
        for entry in entries {
            let proposal = ProposalId::decode(&entry.context).filter(|p| p.replica == self.id());
            match entry.get_entry_type() {
                // The empty entry a new leader appends: nothing to apply.
                EntryType::EntryNormal if entry.data.is_empty() => {}
                EntryType::EntryNormal => {
                    let response = self.machine.apply(entry.index, &entry.data);
                    applied(Applied {
                        index: entry.index,
                        proposal,
                        response,
                    });
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    let undecodable = "a committed conf change decodes";
                    let (conf_state, context) = if entry.get_entry_type()
                        == EntryType::EntryConfChange
                    {
                        let change = ConfChange::parse_from_bytes(&entry.data).expect(undecodable);
                        (self.node.apply_conf_change(&change)?, change.context)
                    } else {
                        let change =
                            ConfChangeV2::parse_from_bytes(&entry.data).expect(undecodable);
                        (self.node.apply_conf_change(&change)?, change.context)
                    };
                    // A conf change may carry a command for the state machine, applied at
                    // the same index: membership and state change together or not at all.
                    let response = if context.is_empty() {
                        Vec::new()
                    } else {
                        self.machine.apply(entry.index, &context)
                    };
                    self.record_configuration(entry.index, conf_state)?;
                    applied(Applied {
                        index: entry.index,
                        proposal,
                        response,
                    });
                }
            }
        }
        Ok(())
    }

    /// Saves a new configuration with a snapshot at its index, in one write: a replica that
    /// joins later is sent the latest snapshot, which must name it, or it would refuse it.
    fn record_configuration(
        &mut self,
        index: u64,
        conf_state: ConfState,
    ) -> Result<(), ReplicaError> {
        let data = self.machine.snapshot();
        let store = self.node.mut_store();
        if index > store.snapshot_index() {
            store.compact_to(index, data, Some(conf_state))?;
        } else {
            store.set_conf_state(conf_state)?;
        }
        Ok(())
    }

    fn compact_if_due(&mut self) -> Result<(), ReplicaError> {
        let applied = self.applied();
        let store = self.node.store();
        if applied >= store.snapshot_index().saturating_add(self.snapshot_every) {
            let data = self.machine.snapshot();
            self.node.mut_store().compact_to(applied, data, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::raft::log::Location;

    struct Nothing;

    impl StateMachine for Nothing {
        fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
            Vec::new()
        }
        fn snapshot(&self) -> Vec<u8> {
            Vec::new()
        }
        fn restore(&mut self, _snapshot: &[u8]) {}
    }

    /// Replicas whose messages are delivered at once, until none is left.
    struct Net(BTreeMap<u64, Replica<Nothing>>);

    impl Net {
        fn new(voters: &[u64]) -> Net {
            let replicas = voters.iter().map(|id| {
                let mut log = DurableLog::open(Location::Memory).unwrap();
                log.bootstrap(voters, Vec::new()).unwrap();
                let replica = Replica::open(&Config::new(*id), log, Nothing).unwrap();
                (*id, replica)
            });
            Net(replicas.collect())
        }

        fn tick(&mut self, id: u64) {
            self.0.get_mut(&id).unwrap().tick();
            self.settle();
        }

        fn settle(&mut self) {
            loop {
                let mut messages = Vec::new();
                for replica in self.0.values_mut() {
                    messages.extend(replica.advance().unwrap().messages);
                }
                if messages.is_empty() {
                    return;
                }
                for message in messages {
                    if let Some(replica) = self.0.get_mut(&message.to) {
                        let _ = replica.step(message);
                    }
                }
            }
        }

        fn leader(&self) -> Option<u64> {
            self.0.values().find(|r| r.is_leader()).map(|r| r.id())
        }
    }

    /// A leader's appends of a new entry go out before it writes the entry (they are
    /// handed over early); its answer to the proposer comes once a follower has it too.
    #[test]
    fn a_leader_sends_its_appends_before_it_writes() {
        let mut net = Net::new(&[1, 2, 3]);
        let leader = loop {
            for id in [1, 2, 3] {
                net.tick(id);
            }
            if let Some(leader) = net.leader() {
                break leader;
            }
        };
        let replica = net.0.get_mut(&leader).unwrap();
        let last_before = replica.node.raft.raft_log.last_index();
        let id = ProposalId {
            replica: leader,
            sequence: 1,
        };
        replica.propose(id, b"x".to_vec()).unwrap();
        // The first batch handed out is the early one.
        let mut batches: Vec<Vec<Message>> = Vec::new();
        let mut applied = Vec::new();
        replica
            .advance_sending(|batch| batches.push(batch), |entry| applied.push(entry))
            .unwrap();
        let early = batches.remove(0);
        let appends: Vec<u64> = early
            .iter()
            .filter(|m| m.get_msg_type() == raft::prelude::MessageType::MsgAppend)
            .filter(|m| m.entries.iter().any(|e| e.index == last_before + 1))
            .map(|m| m.to)
            .collect();
        assert_eq!(appends.len(), 2, "{early:?}");
        assert!(applied.is_empty(), "not committed yet");
        // The rest of the round trip commits and applies it.
        for message in early.into_iter().chain(batches.into_iter().flatten()) {
            net.0.get_mut(&message.to).unwrap().step(message).unwrap();
        }
        net.settle();
        assert_eq!(
            net.0[&leader].applied(),
            last_before + 1,
            "applied once a follower appended it"
        );
    }

    /// Followers tick at slightly different moments, so when the first of them times out
    /// the other has counted one tick less since the leader's last heartbeat. With the
    /// lease as long as the shortest timeout, that follower ignored the candidate, which
    /// waited a whole second timeout (up to 2 s in all with the daemon's ticks).
    #[test]
    fn when_the_leader_dies_the_first_follower_to_campaign_wins_within_one_timeout() {
        let config = Config::new(0);
        // Each round has about one chance in ten of the first follower drawing the
        // shortest timeout: a hundred rounds show the fault (if any) all but surely.
        for round in 0..100 {
            let mut net = Net::new(&[1, 2, 3]);
            let mut ticks = 0;
            let leader = loop {
                for id in [1, 2, 3] {
                    net.tick(id);
                }
                ticks += 1;
                assert!(ticks < 100, "no first leader");
                if let Some(leader) = net.leader() {
                    break leader;
                }
            };
            // One more heartbeat reaches both followers at the same moment; then the leader dies.
            net.tick(leader);
            net.0.remove(&leader);
            let followers: Vec<u64> = net.0.keys().copied().collect();
            let mut first_candidate = None;
            for tick in 1..=config.max_election_tick {
                for &id in &followers {
                    net.tick(id);
                    let campaigned = net.0[&id].node.raft.state != StateRole::Follower;
                    if campaigned && first_candidate.is_none() {
                        first_candidate = Some(id);
                    }
                }
                if let Some(new_leader) = net.leader() {
                    assert_eq!(
                        Some(new_leader),
                        first_candidate,
                        "round {round}: the first candidate was ignored"
                    );
                    assert!(tick < config.max_election_tick, "round {round}");
                    break;
                }
                assert!(
                    tick < config.max_election_tick,
                    "round {round}: no new leader within {tick} ticks"
                );
            }
        }
    }
}
