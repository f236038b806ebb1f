//! The durable Raft log: entries, hard state, configuration and the latest snapshot in one
//! redb file, each record checksummed (CRC-32C over the encoded bytes) so that a corrupt file
//! is refused at open, naming the file and the record, instead of silently losing entries.
//! A file log is encrypted at rest: every record's payload is sealed with the data
//! encryption key (`crypt`) under a label naming its place; a log written before encryption
//! (plaintext records, no `cipher` marker) is encrypted in place when first opened with a key,
//! and `rekey` reseals the whole log with a new key (a key rotation).
//!
//! Implements raft-rs' `Storage` for reads; the writes follow its Ready checklist:
//! `persist` (entries and hard state in one transaction, fsynced before it returns when the
//! log is opened durable), `apply_snapshot` for a snapshot from the leader, and
//! `compact_to` after the state machine wrote a snapshot of its own.

use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use super::crypt::DataKey;
use super::recent::{RecentEntries, SizeLimit};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const HARD_STATE: &str = "hard_state";
const CONF_STATE: &str = "conf_state";
const SNAPSHOT: &str = "snapshot";
/// Present once every record is sealed: its value names the cipher.
const CIPHER: &str = "cipher";
const CIPHER_NAME: &[u8] = b"xchacha20poly1305";

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open the raft log {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("the raft log {path} is corrupt: {what}; refusing to start rather than lose entries")]
    Corrupt { path: PathBuf, what: String },
    #[error("cannot write the raft log {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "the raft log {path} is sealed with another key than raft.key's (a key file from another data dir, or from before a key rotation): put back the key file that goes with this log"
    )]
    WrongKey { path: PathBuf },
}

/// Where the log lives: a file encrypted with `key` (fsync on every commit unless `durable`
/// is false) or memory (simulation tests; nothing reaches a disk, nothing is encrypted).
pub enum Location<'a> {
    File {
        path: &'a Path,
        durable: bool,
        key: DataKey,
    },
    Memory,
}

pub struct DurableLog {
    db: Database,
    path: PathBuf,
    durability: Durability,
    /// Seals every record of a file log.
    key: Option<DataKey>,
    // A cache of what is small and read on every step; the entries stay on disk.
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: SnapshotMetadata,
    /// The index of the last entry; `snapshot.index` when the log holds none.
    last: u64,
    /// The newest entries, as on disk: most reads are of them.
    recent: RecentEntries,
}

/// A record on disk: CRC-32C of the payload, then the payload.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn unseal(record: &[u8]) -> Option<&[u8]> {
    let (crc, payload) = record.split_at_checked(4)?;
    (crc32fast::hash(payload).to_le_bytes() == crc).then_some(payload)
}

/// The message bytes of the record at `label`, or what is wrong with it.
fn decode(key: Option<&DataKey>, label: &str, record: &[u8]) -> Result<Vec<u8>, String> {
    let payload = unseal(record).ok_or_else(|| format!("checksum mismatch in {label}"))?;
    match key {
        Some(key) => key
            .open(label.as_bytes(), payload, label)
            .map_err(|e| e.to_string()),
        None => Ok(payload.to_vec()),
    }
}

fn entry_label(index: u64) -> String {
    format!("entry {index}")
}

/// Which key a log is sealed with: a record sealed under this label (with the cipher's
/// name), so that a log opened with another key is refused by name before any record is
/// read, and a key rotation interrupted by a stop can tell which of two keys is the log's.
const KEY_CHECK: &str = "key_check";

/// Makes a file log ready for `key`: marks a new one encrypted; rewrites one written before
/// encryption at rest (plaintext records, no `cipher` marker) with every record sealed
/// (`reseal`); checks that a sealed one is sealed with `key` (`LogError::WrongKey`
/// otherwise), recording the check in a log from before key checks.
fn prepare_encrypted(db: Database, path: &Path, key: &DataKey) -> Result<Database, LogError> {
    let write_error = |e: &dyn std::fmt::Display| LogError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let plaintext = {
        let txn = db.begin_write().map_err(|e| write_error(&e))?;
        let mut meta = txn.open_table(META).map_err(|e| write_error(&e))?;
        let entries = txn.open_table(ENTRIES).map_err(|e| write_error(&e))?;
        let sealed = meta.get(CIPHER).map_err(|e| write_error(&e))?.is_some();
        let empty = meta.is_empty().map_err(|e| write_error(&e))?
            && entries.is_empty().map_err(|e| write_error(&e))?;
        let check = meta
            .get(KEY_CHECK)
            .map_err(|e| write_error(&e))?
            .map(|record| record.value().to_vec());
        match check {
            Some(check) if sealed => {
                decode(Some(key), KEY_CHECK, &check).map_err(|_| LogError::WrongKey {
                    path: path.to_path_buf(),
                })?;
            }
            _ if sealed || empty => {
                // A log sealed before key checks: one of its records tells whether `key`
                // is its key, before a check says so for good.
                let sample = [HARD_STATE, CONF_STATE, SNAPSHOT]
                    .into_iter()
                    .find_map(|name| Some((name, meta.get(name).ok()??.value().to_vec())));
                if let Some((label, record)) = sample
                    && decode(Some(key), label, &record).is_err()
                {
                    return Err(LogError::WrongKey {
                        path: path.to_path_buf(),
                    });
                }
                if empty {
                    meta.insert(CIPHER, CIPHER_NAME)
                        .map_err(|e| write_error(&e))?;
                }
                meta.insert(KEY_CHECK, key_check(key).as_slice())
                    .map_err(|e| write_error(&e))?;
                drop((meta, entries));
                txn.commit().map_err(|e| write_error(&e))?;
            }
            _ => {}
        }
        !sealed && !empty
    };
    if !plaintext {
        return Ok(db);
    }
    let db = reseal(db, path, None, key)?;
    tracing::info!(path = %path.display(), "the raft log was encrypted at rest");
    Ok(db)
}

/// Whether `db`'s key check opens with `key`.
fn sealed_with(db: &Database, key: &DataKey) -> bool {
    let check = || -> Option<bool> {
        let txn = db.begin_read().ok()?;
        let meta = txn.open_table(META).ok()?;
        let record = meta.get(KEY_CHECK).ok()??;
        Some(decode(Some(key), KEY_CHECK, record.value()).is_ok())
    };
    check().unwrap_or(false)
}

/// The `KEY_CHECK` record of `key`.
fn key_check(key: &DataKey) -> Vec<u8> {
    seal(&key.seal(KEY_CHECK.as_bytes(), CIPHER_NAME))
}

/// Rewrites the log at `path` with every record sealed with `to` (opened with `from`, or
/// taken as plaintext without it) into a new file renamed over the old one: sealing in place
/// would leave the old records in redb's freed pages. Until the rename the old file is
/// whole; after it, the new one is.
fn reseal(
    db: Database,
    path: &Path,
    from: Option<&DataKey>,
    to: &DataKey,
) -> Result<Database, LogError> {
    let write_error = |e: &dyn std::fmt::Display| LogError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let aside = path.with_extension("resealing");
    let _ = std::fs::remove_file(&aside);
    {
        let sealed = Database::create(&aside).map_err(|e| LogError::Write {
            path: aside.clone(),
            message: e.to_string(),
        })?;
        let reading = db.begin_read().map_err(|e| write_error(&e))?;
        let writing = sealed.begin_write().map_err(|e| write_error(&e))?;
        let seal_record = |label: &str, record: &[u8]| -> Result<Vec<u8>, LogError> {
            let payload = decode(from, label, record).map_err(|what| LogError::Corrupt {
                path: path.to_path_buf(),
                what,
            })?;
            Ok(seal(&to.seal(label.as_bytes(), &payload)))
        };
        {
            let old_meta = reading.open_table(META).map_err(|e| write_error(&e))?;
            let mut meta = writing.open_table(META).map_err(|e| write_error(&e))?;
            for name in [HARD_STATE, CONF_STATE, SNAPSHOT] {
                if let Some(record) = old_meta.get(name).map_err(|e| write_error(&e))? {
                    meta.insert(name, seal_record(name, record.value())?.as_slice())
                        .map_err(|e| write_error(&e))?;
                }
            }
            meta.insert(CIPHER, CIPHER_NAME)
                .map_err(|e| write_error(&e))?;
            meta.insert(KEY_CHECK, key_check(to).as_slice())
                .map_err(|e| write_error(&e))?;
            let old_entries = reading.open_table(ENTRIES).map_err(|e| write_error(&e))?;
            let mut entries = writing.open_table(ENTRIES).map_err(|e| write_error(&e))?;
            for item in old_entries.iter().map_err(|e| write_error(&e))? {
                let (index, record) = item.map_err(|e| write_error(&e))?;
                let index = index.value();
                entries
                    .insert(
                        index,
                        seal_record(&entry_label(index), record.value())?.as_slice(),
                    )
                    .map_err(|e| write_error(&e))?;
            }
        }
        writing.commit().map_err(|e| write_error(&e))?;
    }
    drop(db);
    std::fs::rename(&aside, path).map_err(|e| write_error(&e))?;
    if let Some(directory) = path.parent() {
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(|e| write_error(&e))?;
    }
    Database::create(path).map_err(|e| LogError::Open {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

impl DurableLog {
    pub fn open(location: Location) -> Result<Self, LogError> {
        let (db, path, durability, key) = match location {
            Location::File { path, durable, key } => {
                let db = Database::create(path).map_err(|e| LogError::Open {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?;
                let durability = if durable {
                    Durability::Immediate
                } else {
                    Durability::None
                };
                let db = prepare_encrypted(db, path, &key)?;
                (db, path.to_path_buf(), durability, Some(key))
            }
            Location::Memory => {
                let db = Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .expect("an in-memory database opens");
                (db, PathBuf::from("<memory>"), Durability::None, None)
            }
        };
        let mut log = DurableLog {
            db,
            path,
            durability,
            key,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            snapshot: SnapshotMetadata::default(),
            last: 0,
            recent: RecentEntries::default(),
        };
        log.load()?;
        Ok(log)
    }

    fn corrupt(&self, what: impl Into<String>) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
        }
    }

    fn write_error(&self, e: impl std::fmt::Display) -> LogError {
        LogError::Write {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// A record for the place `label`: the message, sealed with the key (if any), then
    /// checksummed.
    fn encode<M: protobuf::Message>(&self, label: &str, message: &M) -> Vec<u8> {
        let bytes = message.write_to_bytes().expect("raft messages encode");
        match &self.key {
            Some(key) => seal(&key.seal(label.as_bytes(), &bytes)),
            None => seal(&bytes),
        }
    }

    fn decode(&self, label: &str, record: &[u8]) -> Result<Vec<u8>, String> {
        decode(self.key.as_ref(), label, record)
    }

    /// Reads the metadata and checks every record: checksums (and seals), and entries
    /// contiguous from the snapshot on.
    fn load(&mut self) -> Result<(), LogError> {
        {
            let txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
            txn.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
            txn.open_table(META).map_err(|e| self.write_error(e))?;
            txn.commit().map_err(|e| self.write_error(e))?;
        }
        let path = self.path.clone();
        let corrupt = |what: String| LogError::Corrupt {
            path: path.clone(),
            what,
        };
        let record_key = self.key.clone();
        let txn = self.db.begin_read().map_err(|e| corrupt(e.to_string()))?;
        let meta = txn.open_table(META).map_err(|e| corrupt(e.to_string()))?;
        let read_meta = |key: &str| -> Result<Option<Vec<u8>>, LogError> {
            let Some(record) = meta.get(key).map_err(|e| corrupt(e.to_string()))? else {
                return Ok(None);
            };
            decode(record_key.as_ref(), key, record.value())
                .map(Some)
                .map_err(&corrupt)
        };
        if let Some(bytes) = read_meta(HARD_STATE)? {
            self.hard_state = HardState::parse_from_bytes(&bytes)
                .map_err(|e| corrupt(format!("{HARD_STATE}: {e}")))?;
        }
        if let Some(bytes) = read_meta(CONF_STATE)? {
            self.conf_state = ConfState::parse_from_bytes(&bytes)
                .map_err(|e| corrupt(format!("{CONF_STATE}: {e}")))?;
        }
        if let Some(bytes) = read_meta(SNAPSHOT)? {
            let snapshot = Snapshot::parse_from_bytes(&bytes)
                .map_err(|e| corrupt(format!("{SNAPSHOT}: {e}")))?;
            self.snapshot = snapshot.get_metadata().clone();
        }
        let entries = txn
            .open_table(ENTRIES)
            .map_err(|e| self.corrupt(e.to_string()))?;
        let mut expected = self.snapshot.index + 1;
        let mut recent = RecentEntries::default();
        for item in entries.iter().map_err(|e| self.corrupt(e.to_string()))? {
            let (index, record) = item.map_err(|e| self.corrupt(e.to_string()))?;
            let index = index.value();
            if index != expected {
                return Err(
                    self.corrupt(format!("entry {expected} is missing (found {index} next)"))
                );
            }
            let payload = self
                .decode(&entry_label(index), record.value())
                .map_err(|what| self.corrupt(what))?;
            let entry = Entry::parse_from_bytes(&payload)
                .map_err(|e| self.corrupt(format!("entry {index}: {e}")))?;
            if entry.index != index {
                return Err(self.corrupt(format!("entry {index} holds index {}", entry.index)));
            }
            recent.appended(std::slice::from_ref(&entry));
            expected += 1;
        }
        self.last = expected - 1;
        self.recent = recent;
        if self.hard_state.commit > self.last {
            return Err(self.corrupt(format!(
                "the commit index {} is past the last entry {}",
                self.hard_state.commit, self.last
            )));
        }
        Ok(())
    }

    /// Starts a new cluster's log: a snapshot at index 1, term 1, holding the configuration
    /// with `voters` and the state machine's initial state. Every log then starts past a
    /// snapshot, so a replica that joins later with an empty log is sent that snapshot and
    /// learns the whole configuration (as etcd bootstraps).
    pub fn bootstrap(&mut self, voters: &[u64], initial_state: Vec<u8>) -> Result<(), LogError> {
        let mut snapshot = Snapshot {
            data: initial_state.into(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = 1;
        metadata.term = 1;
        metadata.set_conf_state(ConfState {
            voters: voters.to_vec(),
            ..ConfState::default()
        });
        self.apply_snapshot(snapshot)
    }

    /// Reseals the whole log with `key` (a key rotation); the key it was sealed with opens
    /// nothing of it afterwards. A log in memory holds nothing at rest: only the key changes.
    pub fn rekey(&mut self, key: DataKey) -> Result<(), LogError> {
        if self.key.is_none() {
            return Ok(());
        }
        let placeholder = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| self.write_error(e))?;
        let db = std::mem::replace(&mut self.db, placeholder);
        match reseal(db, &self.path, self.key.as_ref(), &key) {
            Ok(db) => {
                self.db = db;
                self.key = Some(key);
                tracing::info!(path = %self.path.display(), "the raft log was resealed with a new key");
                Ok(())
            }
            Err(error) => {
                // The file at the path is whole, sealed with the old key or (failing after
                // the rename) the new one: go on with it and the key its check names.
                let db = Database::create(&self.path).map_err(|e| self.write_error(e))?;
                if sealed_with(&db, &key) {
                    self.key = Some(key);
                }
                self.db = db;
                Err(error)
            }
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.index
    }

    fn commit_txn(&self, txn: redb::WriteTransaction) -> Result<(), LogError> {
        txn.commit().map_err(|e| self.write_error(e))
    }

    fn begin(&self) -> Result<redb::WriteTransaction, LogError> {
        let mut txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        txn.set_durability(self.durability)
            .map_err(|e| self.write_error(e))?;
        Ok(txn)
    }

    /// Appends `entries` (replacing any conflicting suffix) and saves `hard_state`, in one
    /// transaction: the entries, term and vote on disk (fsynced) when this returns.
    pub fn persist(
        &mut self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), LogError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        // Only entries, the term and the vote must be on disk before raft goes on; a commit
        // index alone (what a follower learns from each append after the one that carried
        // the entry) reaches the disk with the next durable write, as `set_commit`'s does
        // (etcd's `MustSync`). Followers paid a second fsync per write for it.
        let must_sync = !entries.is_empty()
            || hard_state.is_some_and(|hs| {
                hs.term != self.hard_state.term || hs.vote != self.hard_state.vote
            });
        let mut txn = self.begin()?;
        if !must_sync {
            txn.set_durability(Durability::None)
                .map_err(|e| self.write_error(e))?;
        }
        let mut last = self.last;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
            if let Some(first) = entries.first() {
                if first.index <= self.snapshot.index || first.index > self.last + 1 {
                    panic!(
                        "raft asked to append entry {} to a log holding {}..={}",
                        first.index,
                        self.snapshot.index + 1,
                        self.last
                    );
                }
                // Entries after the first new one conflict with the leader's log: drop them.
                for index in first.index..=self.last {
                    table.remove(index).map_err(|e| self.write_error(e))?;
                }
                for entry in entries {
                    table
                        .insert(
                            entry.index,
                            self.encode(&entry_label(entry.index), entry).as_slice(),
                        )
                        .map_err(|e| self.write_error(e))?;
                }
                last = entries.last().expect("not empty").index;
            }
            if let Some(hard_state) = hard_state {
                let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
                meta.insert(HARD_STATE, self.encode(HARD_STATE, hard_state).as_slice())
                    .map_err(|e| self.write_error(e))?;
            }
        }
        self.commit_txn(txn)?;
        self.last = last;
        self.recent.appended(entries);
        if let Some(hard_state) = hard_state {
            self.hard_state = hard_state.clone();
        }
        Ok(())
    }

    /// Records a new commit index (from a light ready) without an fsync of its own: it
    /// reaches the disk with the next durable write. Losing it in a crash is safe, since a
    /// replica learns the commit index again from its peers (etcd does the same).
    pub fn set_commit(&mut self, commit: u64) -> Result<(), LogError> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        let mut txn = self.db.begin_write().map_err(|e| self.write_error(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.write_error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert(HARD_STATE, self.encode(HARD_STATE, &hard_state).as_slice())
                .map_err(|e| self.write_error(e))?;
        }
        self.commit_txn(txn)?;
        self.hard_state = hard_state;
        Ok(())
    }

    /// Replaces the log with a snapshot (from the leader, or the bootstrap configuration).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), LogError> {
        let metadata = snapshot.get_metadata().clone();
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(metadata.index);
        hard_state.term = hard_state.term.max(metadata.term);
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
            table
                .retain(|_, _| false)
                .map_err(|e| self.write_error(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert(SNAPSHOT, self.encode(SNAPSHOT, &snapshot).as_slice())
                .map_err(|e| self.write_error(e))?;
            meta.insert(
                CONF_STATE,
                self.encode(CONF_STATE, metadata.get_conf_state())
                    .as_slice(),
            )
            .map_err(|e| self.write_error(e))?;
            meta.insert(HARD_STATE, self.encode(HARD_STATE, &hard_state).as_slice())
                .map_err(|e| self.write_error(e))?;
        }
        self.commit_txn(txn)?;
        self.conf_state = metadata.get_conf_state().clone();
        self.last = metadata.index;
        self.recent.clear();
        self.snapshot = metadata;
        self.hard_state = hard_state;
        Ok(())
    }

    /// Saves a configuration applied from a committed conf change.
    pub fn set_conf_state(&mut self, conf_state: ConfState) -> Result<(), LogError> {
        let txn = self.begin()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert(CONF_STATE, self.encode(CONF_STATE, &conf_state).as_slice())
                .map_err(|e| self.write_error(e))?;
        }
        self.commit_txn(txn)?;
        self.conf_state = conf_state;
        Ok(())
    }

    /// Stores the state machine's snapshot at `index` (which the caller has applied) and
    /// drops the entries it covers.
    pub fn compact_to(
        &mut self,
        index: u64,
        data: Vec<u8>,
        conf_state: Option<ConfState>,
    ) -> Result<(), LogError> {
        // The caller applied `index`, so it is committed (the hard state on disk may not
        // say so yet: committed entries are applied before the Ready's hard state is saved).
        assert!(
            index > self.snapshot.index && index <= self.last,
            "compaction to {index} outside the log {}..={}",
            self.snapshot.index,
            self.last
        );
        let term = raft::Storage::term(self, index).expect("the entry is in the log");
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        let conf_state = conf_state.unwrap_or_else(|| self.conf_state.clone());
        metadata.set_conf_state(conf_state.clone());
        // The snapshot, its configuration and a commit index that covers it go to disk
        // together: raft-rs refuses a log whose commit is below its snapshot.
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(index);
        let txn = self.begin()?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.write_error(e))?;
            table
                .retain(|key, _| key > index)
                .map_err(|e| self.write_error(e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.write_error(e))?;
            meta.insert(SNAPSHOT, self.encode(SNAPSHOT, &snapshot).as_slice())
                .map_err(|e| self.write_error(e))?;
            meta.insert(CONF_STATE, self.encode(CONF_STATE, &conf_state).as_slice())
                .map_err(|e| self.write_error(e))?;
            meta.insert(HARD_STATE, self.encode(HARD_STATE, &hard_state).as_slice())
                .map_err(|e| self.write_error(e))?;
        }
        self.commit_txn(txn)?;
        self.recent.compacted(index);
        self.snapshot = snapshot.get_metadata().clone();
        self.conf_state = conf_state;
        self.hard_state = hard_state;
        Ok(())
    }

    fn read_entry(&self, index: u64) -> Result<Entry, StorageError> {
        let other = |e: String| StorageError::Other(e.into());
        let txn = self.db.begin_read().map_err(|e| other(e.to_string()))?;
        let table = txn.open_table(ENTRIES).map_err(|e| other(e.to_string()))?;
        let record = table
            .get(index)
            .map_err(|e| other(e.to_string()))?
            .ok_or(StorageError::Unavailable)?;
        let payload = self
            .decode(&entry_label(index), record.value())
            .map_err(other)?;
        Entry::parse_from_bytes(&payload).map_err(|e| other(e.to_string()))
    }
}

impl raft::Storage for DurableLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(
            high <= self.last + 1,
            "entries up to {high} asked of a log ending at {}",
            self.last
        );
        let max_size = max_size.into();
        if let Some(entries) = self.recent.range(low, high, max_size) {
            return Ok(entries);
        }
        let other = |e: String| raft::Error::Store(StorageError::Other(e.into()));
        let txn = self.db.begin_read().map_err(|e| other(e.to_string()))?;
        let table = txn.open_table(ENTRIES).map_err(|e| other(e.to_string()))?;
        let mut entries = Vec::new();
        let mut limit = SizeLimit::new(max_size);
        for item in table.range(low..high).map_err(|e| other(e.to_string()))? {
            let (index, record) = item.map_err(|e| other(e.to_string()))?;
            let payload = self
                .decode(&entry_label(index.value()), record.value())
                .map_err(other)?;
            let entry = Entry::parse_from_bytes(&payload).map_err(|e| other(e.to_string()))?;
            if !limit.admits(&entry) {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index == self.snapshot.index {
            return Ok(self.snapshot.term);
        }
        if index < self.snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if index > self.last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if let Some(entry) = self.recent.get(index) {
            return Ok(entry.term);
        }
        Ok(self.read_entry(index).map_err(raft::Error::Store)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot.index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last)
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let other = |e: String| raft::Error::Store(StorageError::Other(e.into()));
        let txn = self.db.begin_read().map_err(|e| other(e.to_string()))?;
        let meta = txn.open_table(META).map_err(|e| other(e.to_string()))?;
        match meta.get(SNAPSHOT).map_err(|e| other(e.to_string()))? {
            Some(record) => {
                let payload = self.decode(SNAPSHOT, record.value()).map_err(other)?;
                Snapshot::parse_from_bytes(&payload).map_err(|e| other(e.to_string()))
            }
            None => Ok(Snapshot::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn durable_file<'a>(path: &'a Path, key: &DataKey) -> Location<'a> {
        Location::File {
            path,
            durable: true,
            key: key.clone(),
        }
    }

    fn open_file(path: &Path, key: &DataKey) -> DurableLog {
        DurableLog::open(durable_file(path, key)).unwrap()
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            data: data.to_vec().into(),
            ..Entry::default()
        }
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote,
            commit,
            ..HardState::default()
        }
    }

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let mut log = open_file(&path, &key);
            log.bootstrap(&[1, 2, 3], Vec::new()).unwrap();
            log.persist(
                &[entry(2, 1, b"a"), entry(3, 1, b"b")],
                Some(&hard_state(1, 2, 2)),
            )
            .unwrap();
        }
        let log = open_file(&path, &key);
        let state = log.initial_state().unwrap();
        assert_eq!(state.hard_state, hard_state(1, 2, 2));
        assert_eq!(state.conf_state.voters, vec![1, 2, 3]);
        assert_eq!(
            (log.first_index().unwrap(), log.last_index().unwrap()),
            (2, 3)
        );
        let entries = log
            .entries(2, 4, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(entries, vec![entry(2, 1, b"a"), entry(3, 1, b"b")]);
    }

    #[test]
    fn conflicting_suffixes_are_replaced() {
        let mut log = DurableLog::open(Location::Memory).unwrap();
        log.bootstrap(&[1], Vec::new()).unwrap();
        log.persist(
            &[entry(2, 1, b"a"), entry(3, 1, b"b"), entry(4, 1, b"c")],
            None,
        )
        .unwrap();
        log.persist(&[entry(3, 2, b"B")], None).unwrap();
        assert_eq!(log.last_index().unwrap(), 3);
        assert_eq!(log.term(3).unwrap(), 2);
        assert!(matches!(
            log.term(4),
            Err(raft::Error::Store(StorageError::Unavailable))
        ));
    }

    #[test]
    fn reads_agree_whether_the_entries_are_kept_in_memory_or_only_on_disk() {
        // More entries than the in-memory run keeps: the first ones come from disk only.
        let mut log = DurableLog::open(Location::Memory).unwrap();
        log.bootstrap(&[1], Vec::new()).unwrap();
        let mut expected: Vec<Entry> = (2..=5001).map(|i| entry(i, 1, b"x")).collect();
        for batch in expected.chunks(100) {
            log.persist(batch, None).unwrap();
        }
        // A new leader replaces the tail from 4001 on.
        let replaced: Vec<Entry> = (4001..=5100).map(|i| entry(i, 2, b"y")).collect();
        log.persist(&replaced, None).unwrap();
        expected.truncate(3999);
        expected.extend(replaced);
        let read = |log: &DurableLog, low: u64, high: u64, max: Option<u64>| {
            log.entries(low, high, max, GetEntriesContext::empty(false))
                .unwrap()
        };
        let slice =
            |low: u64, high: u64| expected[(low - 2) as usize..(high - 2) as usize].to_vec();
        for (low, high) in [(2, 10), (900, 1100), (3990, 4010), (5000, 5101), (2, 5101)] {
            assert_eq!(
                read(&log, low, high, None),
                slice(low, high),
                "{low}..{high}"
            );
        }
        // Room for three entries of the range (the same size within each).
        let three = |index: u64| 3 * u64::from(expected[(index - 2) as usize].compute_size());
        assert_eq!(read(&log, 2, 100, Some(three(2))).len(), 3);
        assert_eq!(read(&log, 5000, 5101, Some(three(5000))).len(), 3);
        for index in [2, 1000, 4000, 4001, 5100] {
            assert_eq!(
                log.term(index).unwrap(),
                expected[(index - 2) as usize].term
            );
        }
        log.compact_to(4500, Vec::new(), None).unwrap();
        assert_eq!(read(&log, 4501, 4600, None), slice(4501, 4600));
        assert!(matches!(
            log.term(4000),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }

    #[test]
    fn compaction_keeps_the_snapshot_and_the_tail() {
        let mut log = DurableLog::open(Location::Memory).unwrap();
        log.bootstrap(&[1], Vec::new()).unwrap();
        let entries: Vec<Entry> = (2..=10).map(|i| entry(i, 1, b"x")).collect();
        log.persist(&entries, Some(&hard_state(1, 1, 8))).unwrap();
        log.compact_to(6, b"state at 6".to_vec(), None).unwrap();
        assert_eq!(log.first_index().unwrap(), 7);
        assert_eq!(log.term(6).unwrap(), 1);
        assert!(matches!(
            log.term(5),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        let snapshot = log.snapshot(6, 2).unwrap();
        assert_eq!(snapshot.get_metadata().index, 6);
        assert_eq!(&snapshot.data[..], b"state at 6");
        assert!(
            log.snapshot(7, 2).is_err(),
            "a newer snapshot is not available yet"
        );
        let size_one = log
            .entries(7, 11, Some(1), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            size_one.len(),
            1,
            "at least one entry, however small the limit"
        );
    }

    #[test]
    fn a_corrupt_record_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let mut log = open_file(&path, &key);
            log.bootstrap(&[1], Vec::new()).unwrap();
            log.persist(
                &[entry(2, 1, b"payload-one"), entry(3, 1, b"payload-two")],
                None,
            )
            .unwrap();
            // Flip a byte of entry 3's payload, through redb so the file itself stays valid.
            let txn = log.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(ENTRIES).unwrap();
                let mut record = table.get(3).unwrap().unwrap().value().to_vec();
                let last = record.len() - 1;
                record[last] ^= 0xff;
                table.insert(3, record.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = DurableLog::open(durable_file(&path, &key))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("raft.redb is corrupt: checksum mismatch in entry 3"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let mut log = open_file(&path, &key);
            log.bootstrap(&[1], Vec::new()).unwrap();
            let entries: Vec<Entry> = (2..=200).map(|i| entry(i, 1, &[7u8; 512])).collect();
            log.persist(&entries, None).unwrap();
        }
        let length = std::fs::metadata(&path).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length / 2).unwrap();
        drop(file);
        let err = DurableLog::open(durable_file(&path, &key))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("raft.redb"), "{err}");
    }

    #[test]
    fn the_file_holds_no_plaintext_and_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let mut log = open_file(&path, &key);
            log.bootstrap(&[1], b"snapshot-secret-bytes".to_vec())
                .unwrap();
            log.persist(&[entry(2, 1, b"entry-secret-bytes")], None)
                .unwrap();
        }
        let raw = std::fs::read(&path).unwrap();
        assert!(!contains(&raw, b"snapshot-secret-bytes"));
        assert!(!contains(&raw, b"entry-secret-bytes"));
        let log = open_file(&path, &key);
        assert_eq!(
            &log.snapshot(1, 1).unwrap().data[..],
            b"snapshot-secret-bytes"
        );
        drop(log);
        let err = DurableLog::open(durable_file(&path, &DataKey::generate()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("raft.redb is sealed with another key than raft.key's"),
            "{err}"
        );
    }

    #[test]
    fn a_log_sealed_before_key_checks_gets_one_from_its_own_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let log = open_file(&path, &key);
            let txn = log.db.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(KEY_CHECK).unwrap();
            txn.commit().unwrap();
            let mut log = log;
            log.bootstrap(&[1], b"snapshot".to_vec()).unwrap();
        }
        let wrong = DurableLog::open(durable_file(&path, &DataKey::generate()));
        assert!(matches!(wrong, Err(LogError::WrongKey { .. })));
        let log = open_file(&path, &key);
        assert!(sealed_with(&log.db, &key), "checked from now on");
    }

    #[test]
    fn a_rekeyed_log_opens_with_the_new_key_only_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let (old, new) = (DataKey::generate(), DataKey::generate());
        let before_rekey = dir.path().join("before.redb");
        {
            let mut log = open_file(&path, &old);
            log.bootstrap(&[1, 2], b"snapshot-bytes".to_vec()).unwrap();
            log.persist(
                &[entry(2, 1, b"entry-bytes"), entry(3, 1, b"more")],
                Some(&hard_state(1, 1, 3)),
            )
            .unwrap();
            std::fs::copy(&path, &before_rekey).unwrap();
            log.rekey(new.clone()).unwrap();
            // Written after the rotation: sealed with the new key.
            log.persist(&[entry(4, 1, b"after")], Some(&hard_state(1, 1, 4)))
                .unwrap();
        }
        assert!(!dir.path().join("raft.resealing").exists());
        let wrong = DurableLog::open(durable_file(&path, &old));
        assert!(matches!(wrong, Err(LogError::WrongKey { .. })));
        let log = open_file(&path, &new);
        assert_eq!(log.initial_state().unwrap().hard_state, hard_state(1, 1, 4));
        assert_eq!(log.initial_state().unwrap().conf_state.voters, vec![1, 2]);
        assert_eq!(
            log.entries(2, 5, None, GetEntriesContext::empty(false))
                .unwrap(),
            vec![
                entry(2, 1, b"entry-bytes"),
                entry(3, 1, b"more"),
                entry(4, 1, b"after")
            ]
        );
        assert_eq!(&log.snapshot(1, 1).unwrap().data[..], b"snapshot-bytes");
        // A copy from before the rotation still opens with the old key, and only with it.
        drop(log);
        let copy = open_file(&before_rekey, &old);
        assert_eq!(copy.last_index().unwrap(), 3);
        drop(copy);
        assert!(matches!(
            DurableLog::open(durable_file(&before_rekey, &new)),
            Err(LogError::WrongKey { .. })
        ));
    }

    #[test]
    fn a_tampered_record_with_a_good_checksum_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            let mut log = open_file(&path, &key);
            log.bootstrap(&[1], Vec::new()).unwrap();
            log.persist(&[entry(2, 1, b"one"), entry(3, 1, b"two")], None)
                .unwrap();
            // Entry 2's sealed record in entry 3's place, checksum and all: the label
            // binds a record to its place.
            let txn = log.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(ENTRIES).unwrap();
                let record = table.get(2).unwrap().unwrap().value().to_vec();
                table.insert(3, record.as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = DurableLog::open(durable_file(&path, &key))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(
                "raft.redb is corrupt: entry 3 failed authentication: it was tampered with"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_log_written_in_plaintext_is_encrypted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        let key = DataKey::generate();
        {
            // A log as written before encryption at rest: no marker, records in plaintext.
            let mut log = open_file(&path, &key);
            let txn = log.db.begin_write().unwrap();
            txn.open_table(META).unwrap().remove(CIPHER).unwrap();
            txn.commit().unwrap();
            log.key = None;
            log.bootstrap(&[1, 2], b"old-snapshot-bytes".to_vec())
                .unwrap();
            log.persist(
                &[entry(2, 1, b"old-entry-bytes"), entry(3, 1, b"more")],
                Some(&hard_state(1, 1, 3)),
            )
            .unwrap();
        }
        assert!(contains(&std::fs::read(&path).unwrap(), b"old-entry-bytes"));
        let log = open_file(&path, &key);
        let raw = std::fs::read(&path).unwrap();
        assert!(!contains(&raw, b"old-entry-bytes"), "no plaintext is left");
        assert!(!contains(&raw, b"old-snapshot-bytes"));
        assert!(!dir.path().join("raft.resealing").exists());
        assert_eq!(log.initial_state().unwrap().hard_state, hard_state(1, 1, 3));
        assert_eq!(log.initial_state().unwrap().conf_state.voters, vec![1, 2]);
        assert_eq!(
            log.entries(2, 4, None, GetEntriesContext::empty(false))
                .unwrap(),
            vec![entry(2, 1, b"old-entry-bytes"), entry(3, 1, b"more")]
        );
        assert_eq!(&log.snapshot(1, 1).unwrap().data[..], b"old-snapshot-bytes");
        drop(log);
        // Encrypted once: it opens again as it is.
        let log = open_file(&path, &key);
        assert_eq!(log.last_index().unwrap(), 3);
    }
}
