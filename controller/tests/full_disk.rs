//! A full disk under the Raft log: writes fail with an error instead of being acknowledged,
//! and every write that was acknowledged is in the log when it is opened again.
//!
//! Needs root (it mounts a small tmpfs). Outside CI it skips loudly without root; under
//! CI=true it fails instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use raft::prelude::EntryType;
use swarm_controller::raft::crypt::DataKey;
use swarm_controller::raft::driver::{DriverConfig, RaftError, Transport, Unreachable, spawn};
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, Replica, StateMachine};

/// Counts commands: the test checks the log itself, not this state.
#[derive(Default)]
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

/// A single voter sends nothing.
struct Alone;

impl Transport for Alone {
    fn send(&mut self, _: raft::prelude::Message) -> Result<(), Unreachable> {
        Err(Unreachable)
    }
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallDisk {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { _dir: dir, path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the disk that holds `dir` until it refuses more.
fn fill(dir: &Path) {
    let mut file = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).and_then(|_| file.sync_all()).is_ok() {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_instead_of_acknowledging_them() {
    let Some(disk) = SmallDisk::mount("8m") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (root is needed): under CI=true this test must run"
        );
        eprintln!(
            "SKIPPED a_full_disk_fails_writes_instead_of_acknowledging_them: cannot mount a tmpfs (run as root)"
        );
        return;
    };
    let log_path = disk.path.join("raft.redb");
    let key = DataKey::generate();
    let mut log = DurableLog::open(Location::File {
        path: &log_path,
        durable: true,
        key: key.clone(),
    })
    .unwrap();
    log.bootstrap(&[1], Vec::new()).unwrap();
    let config = Config {
        // No compaction: every entry stays, so the log must grow.
        snapshot_every: u64::MAX,
        ..Config::new(1)
    };
    let replica = Replica::open(&config, log, Counter::default()).unwrap();
    let driver_config = DriverConfig {
        tick: Duration::from_millis(10),
        timeout: Duration::from_secs(5),
        ..DriverConfig::default()
    };
    let (raft, driver) = spawn(replica, |_| Alone, driver_config);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while raft.status().await.unwrap().leader != 1 {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        raft.propose(vec![1; 1024]).await.is_ok(),
        "a write with room"
    );

    fill(&disk.path);
    let mut acknowledged = 1u64;
    let mut refusal = None;
    for _ in 0..10_000 {
        match raft.propose(vec![7; 16 << 10]).await {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    let refusal = refusal.expect("a full disk refuses writes within 160 MiB of them");
    assert!(
        matches!(refusal, RaftError::Stopped | RaftError::Timeout),
        "{refusal:?}"
    );
    // The replica stopped rather than acknowledge what is not on disk, and said why.
    let stopped = tokio::time::timeout(Duration::from_secs(10), driver)
        .await
        .expect("the driver stops")
        .expect("not a panic");
    let error = stopped.expect_err("the driver stops with the log's error");
    assert!(
        error.to_string().contains("cannot write the raft log"),
        "{error}"
    );

    // Every acknowledged write is in the log, read back after the disk has room again.
    std::fs::remove_file(disk.path.join("filler")).unwrap();
    let log = DurableLog::open(Location::File {
        path: &log_path,
        durable: true,
        key: key.clone(),
    })
    .unwrap();
    let last = raft::Storage::last_index(&log).unwrap();
    let entries = raft::Storage::entries(
        &log,
        2,
        last + 1,
        None,
        raft::GetEntriesContext::empty(false),
    )
    .unwrap();
    let written = entries
        .iter()
        .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
        .count() as u64;
    eprintln!(
        "full disk: {acknowledged} writes acknowledged, {written} in the log, then {refusal:?}"
    );
    assert!(
        written >= acknowledged,
        "{acknowledged} writes acknowledged, {written} in the log"
    );
}
