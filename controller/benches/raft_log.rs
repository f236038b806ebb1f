//! The durable Raft log against the disk it writes to: how much a commit costs beyond the
//! fdatasync it cannot avoid. Target (issue: control plane): single-client commit latency
//! within 1.5× the disk's fdatasync time + 0.2 ms.
//!
//!     cargo bench -p swarm-controller --bench raft_log
//!
//! Files go to `target/bench-tmp` (the disk a data dir would be on), not to a tmpfs.

#[path = "support/harness.rs"]
mod harness;

use std::io::Write;
use std::path::PathBuf;

use harness::{measure, quantile, report};
use raft::prelude::{Entry, HardState};
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, ProposalId, Replica, StateMachine};

const RUNS: usize = 300;

struct Counter(u64);

impl StateMachine for Counter {
    fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
        self.0 += 1;
        Vec::new()
    }
    fn snapshot(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }
    fn restore(&mut self, snapshot: &[u8]) {
        self.0 = snapshot.try_into().map(u64::from_be_bytes).unwrap_or(0);
    }
}

fn main() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-tmp");
    std::fs::create_dir_all(&base).unwrap();
    let dir = tempfile::tempdir_in(&base).unwrap();
    let payload = vec![0x5au8; 128];

    // The floor: append 128 bytes to a file and fdatasync it.
    let mut file = std::fs::File::create(dir.path().join("raw")).unwrap();
    let raw = measure(RUNS, 10, || {
        file.write_all(&payload).unwrap();
        file.sync_data().unwrap();
    });
    report("fdatasync_128_bytes", None, &raw);
    let floor = quantile(&raw.samples, 0.5);

    // One entry and the hard state, in one fsynced redb transaction.
    let mut log = DurableLog::open(Location::File {
        path: &dir.path().join("log.redb"),
        durable: true,
        key: DataKey::generate(),
    })
    .unwrap();
    log.bootstrap(&[1], Vec::new()).unwrap();
    let mut index = 1;
    let persist = measure(RUNS, 10, || {
        index += 1;
        let entry = Entry {
            index,
            term: 1,
            data: payload.clone().into(),
            ..Entry::default()
        };
        let hard_state = HardState {
            term: 1,
            vote: 1,
            commit: index,
            ..HardState::default()
        };
        log.persist(&[entry], Some(&hard_state)).unwrap();
    });
    report("log_persist_one_entry", Some(1.5 * floor + 0.2), &persist);
    drop(log);

    // A whole commit on a single-voter replica: propose, persist, commit, apply.
    let mut log = DurableLog::open(Location::File {
        path: &dir.path().join("replica.redb"),
        durable: true,
        key: DataKey::generate(),
    })
    .unwrap();
    log.bootstrap(&[1], Counter(0).snapshot()).unwrap();
    let mut replica = Replica::open(&Config::new(1), log, Counter(0)).unwrap();
    while !replica.is_leader() {
        replica.tick();
        replica.advance().unwrap();
    }
    let mut sequence = 0;
    let commit = measure(RUNS, 10, || {
        sequence += 1;
        replica
            .propose(
                ProposalId {
                    replica: 1,
                    sequence,
                },
                payload.clone(),
            )
            .unwrap();
        loop {
            let output = replica.advance().unwrap();
            if output
                .applied
                .iter()
                .any(|a| a.proposal.is_some_and(|p| p.sequence == sequence))
            {
                break;
            }
        }
    });
    report(
        "replica_commit_single_voter",
        Some(1.5 * floor + 0.2),
        &commit,
    );
}
