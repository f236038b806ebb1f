//! Deterministic simulation of Raft replicas: real `Replica`s over real redb logs (on tmpfs
//! when there is one), an in-memory network that can cut, isolate and drop, logical time
//! (ticks), and a seeded generator for every choice. A failing seed replays exactly.
//!
//! Properties checked: at most one leader per term; no acknowledged write is ever lost or
//! applied twice; the replicas' applied histories are prefixes of one another; a minority
//! makes no progress; a replica that restarts (or falls behind past a snapshot) catches up.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use raft::prelude::{ConfChange, ConfChangeType, Message, MessageType};
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, ProposalId, Replica, StateMachine};

/// The state machine under test: the list of values written, in commit order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Journal {
    values: Vec<u64>,
}

impl StateMachine for Journal {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let value = u64::from_be_bytes(command.try_into().expect("8-byte commands"));
        self.values.push(value);
        (self.values.len() as u64).to_be_bytes().to_vec()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        self.values = snapshot
            .chunks_exact(8)
            .map(|chunk| u64::from_be_bytes(chunk.try_into().unwrap()))
            .collect();
    }
}

/// SplitMix64: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Sim {
    dir: tempfile::TempDir,
    key: DataKey,
    rng: Rng,
    snapshot_every: u64,
    replicas: BTreeMap<u64, Option<Replica<Journal>>>,
    in_flight: Vec<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
    drop_per_mille: u64,
    next_sequence: u64,
    pending: BTreeMap<ProposalId, u64>,
    acknowledged: Vec<u64>,
    leader_of_term: BTreeMap<u64, u64>,
    next_value: u64,
    /// ReadIndex answers of the last round, by replica.
    reads: Vec<(u64, raft::prelude::ReadState)>,
}

impl Sim {
    fn new(seed: u64, voters: u64, snapshot_every: u64) -> Sim {
        let shm = PathBuf::from("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let mut sim = Sim {
            dir,
            key: DataKey::generate(),
            rng: Rng(seed),
            snapshot_every,
            replicas: BTreeMap::new(),
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            drop_per_mille: 0,
            next_sequence: 0,
            pending: BTreeMap::new(),
            acknowledged: Vec::new(),
            leader_of_term: BTreeMap::new(),
            next_value: 1,
            reads: Vec::new(),
        };
        let ids: Vec<u64> = (1..=voters).collect();
        for id in &ids {
            let mut log = sim.open_log(*id);
            log.bootstrap(&ids, Journal::default().snapshot()).unwrap();
            drop(log);
            sim.start(*id);
        }
        sim
    }

    fn open_log(&self, id: u64) -> DurableLog {
        let path = self.dir.path().join(format!("{id}.redb"));
        DurableLog::open(Location::File {
            path: &path,
            durable: true,
            key: self.key.clone(),
        })
        .unwrap()
    }

    /// Starts (or restarts) a replica from its log. Election timeouts differ per replica but
    /// are fixed, so elections never tie forever and every run replays exactly.
    fn start(&mut self, id: u64) {
        let config = Config {
            min_election_tick: 10 + 4 * id as usize,
            max_election_tick: 11 + 4 * id as usize,
            heartbeat_tick: 2,
            snapshot_every: self.snapshot_every,
            ..Config::new(id)
        };
        let replica = Replica::open(&config, self.open_log(id), Journal::default()).unwrap();
        self.replicas.insert(id, Some(replica));
    }

    fn crash(&mut self, id: u64) {
        self.replicas.insert(id, None);
    }

    fn isolate(&mut self, id: u64) {
        for other in self.replicas.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
        self.drop_per_mille = 0;
    }

    fn live(&self) -> Vec<u64> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn replica(&self, id: u64) -> &Replica<Journal> {
        self.replicas[&id].as_ref().expect("replica is running")
    }

    fn leader(&self) -> Option<u64> {
        self.live()
            .into_iter()
            .find(|id| self.replica(*id).is_leader())
    }

    /// One unit of time: every replica ticks, the network delivers, every replica runs its
    /// Ready checklist.
    fn round(&mut self) {
        for replica in self.replicas.values_mut().flatten() {
            replica.tick();
        }
        let mut messages = std::mem::take(&mut self.in_flight);
        // Delivery order within a round is a seeded shuffle.
        for i in (1..messages.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            messages.swap(i, j);
        }
        for message in messages {
            let (from, to) = (message.from, message.to);
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let lost = self.cut.contains(&(from, to)) || self.rng.chance(self.drop_per_mille);
            let delivered = match self.replicas.get_mut(&to) {
                // A message a replica refuses (stale term, removed peer) still arrived.
                Some(Some(replica)) if !lost => {
                    let _ = replica.step(message);
                    true
                }
                _ => false,
            };
            // Like a transport, tell the sender how its snapshots and sends fared.
            if let Some(Some(sender)) = self.replicas.get_mut(&from) {
                if is_snapshot {
                    sender.report_snapshot(to, delivered);
                }
                if !delivered {
                    sender.report_unreachable(to);
                }
            }
        }
        for (id, slot) in self.replicas.iter_mut() {
            let Some(replica) = slot else { continue };
            let output = replica.advance().unwrap();
            self.in_flight.extend(output.messages);
            self.reads
                .extend(output.reads.into_iter().map(|read| (*id, read)));
            for applied in output.applied {
                if let Some(value) = applied.proposal.and_then(|p| self.pending.remove(&p)) {
                    self.acknowledged.push(value);
                }
            }
            if replica.is_leader() {
                let term = replica.term();
                let first = *self.leader_of_term.entry(term).or_insert(*id);
                assert_eq!(first, *id, "two leaders in term {term}: {first} and {id}");
            }
        }
    }

    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.round();
        }
    }

    fn run_until_leader(&mut self, max_rounds: usize) -> u64 {
        for _ in 0..max_rounds {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.round();
        }
        panic!("no leader within {max_rounds} rounds");
    }

    /// Proposes the next value through replica `via` (a follower forwards to its leader).
    fn propose_via(&mut self, via: u64) -> u64 {
        let value = self.next_value;
        self.next_value += 1;
        self.next_sequence += 1;
        let id = ProposalId {
            replica: via,
            sequence: self.next_sequence,
        };
        let Some(Some(replica)) = self.replicas.get_mut(&via) else {
            return value;
        };
        if replica.propose(id, value.to_be_bytes().to_vec()).is_ok() {
            self.pending.insert(id, value);
        }
        value
    }

    fn propose(&mut self) -> Option<u64> {
        let leader = self.leader()?;
        Some(self.propose_via(leader))
    }

    /// Every running replica applied a prefix of the same history, with no value twice. (The
    /// replicas running now may not have applied every acknowledged write yet: `converge`
    /// checks those once all are back.)
    fn check_prefixes(&self) -> BTreeSet<u64> {
        let histories: Vec<(u64, &Vec<u64>)> = self
            .live()
            .into_iter()
            .map(|id| (id, &self.replica(id).machine().values))
            .collect();
        let (_, longest) = histories
            .iter()
            .max_by_key(|(_, h)| h.len())
            .expect("a replica runs");
        for (id, history) in &histories {
            assert_eq!(
                &longest[..history.len()],
                &history[..],
                "replica {id} diverged"
            );
        }
        let mut seen = BTreeSet::new();
        for value in longest.iter() {
            assert!(seen.insert(*value), "value {value} applied twice");
        }
        seen
    }

    /// The prefix property, and the history holds every acknowledged write.
    fn check_safety(&self) {
        let applied = self.check_prefixes();
        for value in &self.acknowledged {
            assert!(
                applied.contains(value),
                "acknowledged value {value} was lost"
            );
        }
    }

    /// All replicas running, all links healed: they converge on one history.
    fn converge(&mut self) {
        self.heal();
        for id in self.replicas.keys().copied().collect::<Vec<_>>() {
            if self.replicas[&id].is_none() {
                self.start(id);
            }
        }
        self.run_until_leader(500);
        // A write in the current term makes the leader commit everything before it.
        self.propose();
        for _ in 0..500 {
            self.round();
            let histories: BTreeSet<&Vec<u64>> = self
                .replicas
                .values()
                .flatten()
                .map(|r| &r.machine().values)
                .collect();
            if histories.len() == 1 && self.pending.is_empty() {
                break;
            }
        }
        let histories: BTreeSet<&Vec<u64>> = self
            .replicas
            .values()
            .flatten()
            .map(|r| &r.machine().values)
            .collect();
        if histories.len() != 1 {
            let states: Vec<String> = self
                .replicas
                .iter()
                .filter_map(|(id, r)| r.as_ref().map(|r| (id, r)))
                .map(|(id, r)| {
                    format!(
                        "replica {id}: term {} leader {} applied {} history {}",
                        r.term(),
                        r.leader(),
                        r.applied(),
                        r.machine().values.len()
                    )
                })
                .collect();
            panic!("replicas did not converge:\n{}", states.join("\n"));
        }
        self.check_safety();
    }
}

#[test]
fn a_leader_is_elected_and_writes_commit_everywhere() {
    let mut sim = Sim::new(1, 3, 1000);
    sim.run_until_leader(200);
    for _ in 0..20 {
        sim.propose().unwrap();
        sim.round();
    }
    sim.run(50);
    assert_eq!(sim.acknowledged.len(), 20);
    sim.converge();
    assert_eq!(sim.replica(1).machine().values.len(), 21);
}

#[test]
fn followers_forward_proposals_to_the_leader() {
    let mut sim = Sim::new(2, 3, 1000);
    let leader = sim.run_until_leader(200);
    sim.run(10);
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let value = sim.propose_via(follower);
    sim.run(20);
    assert_eq!(
        sim.acknowledged,
        vec![value],
        "the follower acknowledges its own proposal"
    );
    sim.check_safety();
}

#[test]
fn leader_crash_loses_no_acknowledged_write() {
    for seed in 0..5 {
        let mut sim = Sim::new(seed, 3, 1000);
        let first = sim.run_until_leader(200);
        for _ in 0..10 {
            sim.propose();
            sim.round();
        }
        sim.crash(first);
        let second = sim.run_until_leader(300);
        assert_ne!(first, second);
        let acknowledged_before = sim.acknowledged.len();
        for _ in 0..10 {
            sim.propose();
            sim.round();
        }
        sim.run(30);
        assert!(
            sim.acknowledged.len() >= acknowledged_before + 10,
            "writes continue on the new leader"
        );
        sim.start(first);
        sim.converge();
    }
}

#[test]
fn a_minority_makes_no_progress_and_rejoins() {
    let mut sim = Sim::new(3, 5, 1000);
    let old_leader = sim.run_until_leader(300);
    sim.run(10);
    // The leader and one follower on one side, three replicas on the other.
    let buddy = (1..=5).find(|id| *id != old_leader).unwrap();
    for a in [old_leader, buddy] {
        for b in (1..=5).filter(|id| *id != old_leader && *id != buddy) {
            sim.cut.insert((a, b));
            sim.cut.insert((b, a));
        }
    }
    let stranded: Vec<u64> = (0..5).map(|_| sim.propose_via(old_leader)).collect();
    sim.run(200);
    for value in &stranded {
        assert!(
            !sim.acknowledged.contains(value),
            "a minority acknowledged {value}"
        );
    }
    let new_leader = sim.leader().filter(|id| *id != old_leader && *id != buddy);
    let new_leader = new_leader.expect("the majority elects a leader");
    let before = sim.acknowledged.len();
    sim.propose_via(new_leader);
    sim.run(20);
    assert_eq!(sim.acknowledged.len(), before + 1, "the majority commits");
    sim.converge();
    let history = &sim.replica(old_leader).machine().values;
    for value in &stranded {
        assert!(
            !history.contains(value),
            "an uncommitted minority write survived"
        );
    }
}

#[test]
fn a_lagging_replica_catches_up_from_a_snapshot() {
    let mut sim = Sim::new(4, 3, 5);
    let leader = sim.run_until_leader(200);
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    sim.crash(lagging);
    for _ in 0..60 {
        sim.propose();
        sim.round();
    }
    sim.run(20);
    assert!(sim.acknowledged.len() >= 60);
    sim.start(lagging);
    sim.converge();
    // The leader compacted its log long ago: the restarted replica got there by a snapshot.
    assert!(sim.open_log_snapshot_index(leader) > 10);
}

impl Sim {
    /// Proposes adding or removing voter `node` through `leader`.
    fn change_membership(&mut self, leader: u64, node: u64, change_type: ConfChangeType) {
        self.next_sequence += 1;
        let id = ProposalId {
            replica: leader,
            sequence: self.next_sequence,
        };
        let change = ConfChange {
            node_id: node,
            change_type,
            ..ConfChange::default()
        };
        let replica = self.replicas.get_mut(&leader).unwrap().as_mut().unwrap();
        replica.propose_conf_change(id, change).unwrap();
    }

    fn open_log_snapshot_index(&mut self, id: u64) -> u64 {
        self.crash(id);
        let index = self.open_log(id).snapshot_index();
        self.start(id);
        index
    }
}

#[test]
fn membership_changes_add_and_remove_voters() {
    let mut sim = Sim::new(5, 3, 10);
    let leader = sim.run_until_leader(200);
    for _ in 0..30 {
        sim.propose();
        sim.round();
    }
    // A new replica starts with an empty log and learns everything from the leader.
    drop(sim.open_log(4));
    sim.start(4);
    sim.change_membership(leader, 4, ConfChangeType::AddNode);
    sim.run(100);
    assert_eq!(sim.replica(leader).voters(), vec![1, 2, 3, 4]);
    assert_eq!(sim.replica(4).voters(), vec![1, 2, 3, 4]);
    assert_eq!(sim.replica(4).machine(), sim.replica(leader).machine());

    let removed = (1..=3).find(|id| *id != leader).unwrap();
    sim.change_membership(leader, removed, ConfChangeType::RemoveNode);
    sim.run(100);
    let expected: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != removed)
        .collect();
    assert_eq!(sim.replica(leader).voters(), expected);
    sim.crash(removed);
    sim.replicas.remove(&removed);
    // Three voters left: losing one still leaves a quorum.
    let other = expected.iter().copied().find(|id| *id != leader).unwrap();
    sim.crash(other);
    let before = sim.acknowledged.len();
    sim.propose();
    sim.run(30);
    assert_eq!(sim.acknowledged.len(), before + 1);
    sim.converge();
}

/// Random crashes, restarts, partitions and message loss, always leaving the cluster able to
/// heal; then heal and check that the replicas converge without losing acknowledged writes.
#[test]
fn random_faults_never_lose_acknowledged_writes() {
    for seed in 100..120 {
        let mut sim = Sim::new(seed, 5, 20);
        sim.run_until_leader(500);
        for _ in 0..300 {
            match sim.rng.below(100) {
                0..=2 => {
                    // Crash a replica, keeping a majority running.
                    let live = sim.live();
                    if live.len() > 3 {
                        let victim = live[sim.rng.below(live.len() as u64) as usize];
                        sim.crash(victim);
                    }
                }
                3..=6 => {
                    let down: Vec<u64> = sim
                        .replicas
                        .iter()
                        .filter(|(_, r)| r.is_none())
                        .map(|(id, _)| *id)
                        .collect();
                    if let Some(id) = down.first() {
                        sim.start(*id);
                    }
                }
                7 => {
                    let victim = 1 + sim.rng.below(5);
                    sim.isolate(victim);
                }
                8 => sim.heal(),
                9 => sim.drop_per_mille = sim.rng.below(200),
                _ => {}
            }
            if sim.rng.chance(600) {
                let live = sim.live();
                let via = live[sim.rng.below(live.len() as u64) as usize];
                sim.propose_via(via);
            }
            sim.round();
            sim.check_prefixes();
        }
        sim.converge();
        assert!(
            !sim.acknowledged.is_empty(),
            "seed {seed}: nothing was acknowledged"
        );
    }
}

/// Linearizability of a single register (Wing & Gong's search with memoisation, as Knossos
/// and Porcupine do it). A write whose outcome is unknown (no acknowledgement) may take
/// effect at any time after its call, or never.
mod linearizability {
    use std::collections::HashSet;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Write(u64),
        Read(u64),
    }

    #[derive(Debug, Clone, Copy)]
    pub struct Op {
        pub call: u64,
        /// `None`: no answer came (the client gave up or its replica crashed).
        pub ret: Option<u64>,
        pub kind: Kind,
    }

    pub fn check(ops: &[Op], initial: u64) -> bool {
        assert!(
            ops.len() <= 128,
            "histories are bounded to keep the search small"
        );
        let mut failed = HashSet::new();
        search(ops, 0, initial, &mut failed)
    }

    fn search(ops: &[Op], done: u128, value: u64, failed: &mut HashSet<(u128, u64)>) -> bool {
        let remaining = || (0..ops.len()).filter(move |i| done & (1 << i) == 0);
        if remaining().all(|i| ops[i].ret.is_none()) {
            return true;
        }
        if failed.contains(&(done, value)) {
            return false;
        }
        // An operation may come next only if no remaining one returned before it was called.
        let first_return = remaining()
            .filter_map(|i| ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in remaining() {
            let op = ops[i];
            if op.call > first_return {
                continue;
            }
            let next = match op.kind {
                Kind::Write(v) => v,
                Kind::Read(v) if v == value => value,
                Kind::Read(_) => continue,
            };
            if search(ops, done | (1 << i), next, failed) {
                return true;
            }
        }
        failed.insert((done, value));
        false
    }

    #[test]
    fn the_checker_accepts_and_refuses_what_it_should() {
        use Kind::*;
        let op = |call, ret, kind| Op { call, ret, kind };
        // Concurrent write and read: the read may see either value.
        assert!(check(
            &[op(0, Some(10), Write(1)), op(1, Some(2), Read(0))],
            0
        ));
        assert!(check(
            &[op(0, Some(10), Write(1)), op(1, Some(2), Read(1))],
            0
        ));
        // A read after a write returned must see it (or a later write).
        assert!(!check(
            &[op(0, Some(1), Write(1)), op(2, Some(3), Read(0))],
            0
        ));
        // Reads may not go back in time.
        assert!(!check(
            &[
                op(0, Some(9), Write(1)),
                op(1, Some(2), Read(1)),
                op(3, Some(4), Read(0))
            ],
            0
        ));
        // An unacknowledged write may have happened, or not.
        assert!(check(&[op(0, None, Write(7)), op(5, Some(6), Read(7))], 0));
        assert!(check(&[op(0, None, Write(7)), op(5, Some(6), Read(0))], 0));
        // A value nobody wrote is never read.
        assert!(!check(&[op(0, Some(1), Read(5))], 0));
    }
}

/// Clients write and read one register concurrently (reads through ReadIndex, any replica)
/// while leaders are killed and restarted; the history must be linearizable.
#[test]
fn a_concurrent_register_history_is_linearizable_across_leader_kills() {
    use linearizability::{Kind, Op, check};

    const CLIENTS: usize = 3;
    const GIVE_UP_AFTER: u64 = 60;
    for seed in 200..215 {
        let mut sim = Sim::new(seed, 3, 50);
        sim.run_until_leader(300);
        let mut history: Vec<Op> = Vec::new();
        // Per client: the index in `history` of its operation in flight, and where it waits.
        let mut in_flight: Vec<Option<(usize, Waiting)>> = vec![None; CLIENTS];
        let mut reads_asked: u64 = 0;
        let mut round: u64 = 0;
        while round < 400 && history.len() < 120 {
            round += 1;
            if let Some(leader) = sim.leader().filter(|_| round.is_multiple_of(90)) {
                sim.crash(leader);
            }
            if round % 90 == 45 {
                for id in 1..=3 {
                    if sim.replicas[&id].is_none() {
                        sim.start(id);
                    }
                }
            }
            for client in in_flight.iter_mut() {
                if client.is_some() {
                    continue;
                }
                let live = sim.live();
                let via = live[sim.rng.below(live.len() as u64) as usize];
                let index = history.len();
                if sim.rng.chance(500) {
                    let value = sim.propose_via(via);
                    history.push(Op {
                        call: round,
                        ret: None,
                        kind: Kind::Write(value),
                    });
                    *client = Some((index, Waiting::Write(value)));
                } else {
                    reads_asked += 1;
                    let context = reads_asked.to_be_bytes().to_vec();
                    sim.replicas
                        .get_mut(&via)
                        .unwrap()
                        .as_mut()
                        .unwrap()
                        .read_index(context.clone());
                    history.push(Op {
                        call: round,
                        ret: None,
                        kind: Kind::Read(0),
                    });
                    *client = Some((index, Waiting::ReadIndex { via, context }));
                }
            }
            let outputs = sim.round_collecting_reads();
            for slot in in_flight.iter_mut() {
                let Some((index, waiting)) = slot.clone() else {
                    continue;
                };
                let call = history[index].call;
                let finished = match waiting {
                    Waiting::Write(value) => sim.acknowledged.contains(&value),
                    Waiting::ReadIndex { via, context } => {
                        if let Some((_, read_index)) = outputs
                            .iter()
                            .find(|(id, r)| *id == via && r.request_ctx == context)
                            .map(|(id, r)| (*id, r.index))
                        {
                            *slot = Some((
                                index,
                                Waiting::Apply {
                                    via,
                                    index: read_index,
                                },
                            ));
                        }
                        false
                    }
                    Waiting::Apply {
                        via,
                        index: read_index,
                    } => match sim.replicas[&via].as_ref() {
                        Some(replica) if replica.applied() >= read_index => {
                            let value = replica.machine().values.last().copied().unwrap_or(0);
                            history[index].kind = Kind::Read(value);
                            true
                        }
                        _ => false,
                    },
                };
                let replica_gone = match slot.as_ref().map(|(_, w)| w) {
                    Some(Waiting::ReadIndex { via, .. } | Waiting::Apply { via, .. }) => {
                        sim.replicas[via].is_none()
                    }
                    _ => false,
                };
                if finished {
                    history[index].ret = Some(round);
                    *slot = None;
                } else if round - call > GIVE_UP_AFTER || replica_gone {
                    // The client gives up: a write's outcome is unknown, a read is void.
                    if matches!(history[index].kind, Kind::Read(_)) {
                        history[index].call = u64::MAX;
                    }
                    *slot = None;
                }
            }
        }
        let ops: Vec<Op> = history
            .into_iter()
            .filter(|op| op.call != u64::MAX)
            .collect();
        let completed = ops.iter().filter(|op| op.ret.is_some()).count();
        assert!(
            completed > 20,
            "seed {seed}: only {completed} operations completed"
        );
        assert!(
            check(&ops, 0),
            "seed {seed}: history is not linearizable: {ops:#?}"
        );
        sim.converge();
    }
}

#[derive(Debug, Clone)]
enum Waiting {
    Write(u64),
    ReadIndex { via: u64, context: Vec<u8> },
    Apply { via: u64, index: u64 },
}

impl Sim {
    /// A round, returning the ReadIndex answers each replica produced.
    fn round_collecting_reads(&mut self) -> Vec<(u64, raft::prelude::ReadState)> {
        self.round();
        std::mem::take(&mut self.reads)
    }
}
