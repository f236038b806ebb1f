//! A manager's key to its encrypted Raft log, and autolock (Docker's `swarm init
//! --autolock`, `swarm unlock`, `swarm unlock-key`).
//!
//! `raft.key` beside `raft.redb` holds the log's data encryption key wrapped by a
//! key-encryption key (`swarm_controller::raft::crypt::KeyFile`): stored beside it without
//! autolock, derived from the cluster's unlock key with it. The unlock key lives in the
//! (encrypted) store while autolock is on, so every manager rewraps its own key file when it
//! changes (`follow_unlock_key`); when autolock turns on it also rotates the data key,
//! resealing the log (a copy of the data dir from before opens nothing written after). A
//! manager whose key file is locked starts `Locked` and serves only `Unlock` until it is
//! given the key.

use std::sync::Arc;
use std::time::Duration;

use swarm_api::store::Command;
use swarm_controller::raft::crypt::{CryptError, DataKey, KeyFile, LogKeys, UnlockKey};
use swarm_controller::raft::driver::{RaftHandle, RekeyError};
use swarm_controller::raft::log::{DurableLog, Location, LogError};
use swarm_controller::store::Store;
use tonic::Status;

use crate::{Daemon, DaemonError, Membership, internal, propose, raft_status, store_status};

pub(crate) const KEY_FILE: &str = "raft.key";

/// How often a manager compares its key file with the store's unlock key.
const FOLLOW_PERIOD: Duration = Duration::from_millis(300);

pub(crate) const LOCKED: &str = "this manager is locked: run `swarm unlock`";

impl Daemon {
    fn key_file(&self) -> Result<Option<KeyFile>, DaemonError> {
        let path = self.path(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => KeyFile::from_json(&bytes)
                .map(Some)
                .map_err(|e| DaemonError::Corrupt {
                    path,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DaemonError::Io { path, source }),
        }
    }

    pub(crate) fn write_key_file(&self, file: &KeyFile) -> Result<(), DaemonError> {
        self.write_file(KEY_FILE, &file.to_json(), true)
    }

    /// The keys this manager's log may be sealed with: the ones unlocked or made earlier in
    /// this process, else unwrapped from `raft.key`, else (a new or joining manager, or a
    /// data dir from before encryption at rest) a new one, written before any record uses
    /// it. `CryptError::Locked` when the key file needs the unlock key.
    pub(crate) fn log_keys(&self) -> Result<LogKeys, DaemonError> {
        let mut cached = self.log_keys.lock().expect("not poisoned");
        if let Some(keys) = &*cached {
            return Ok(keys.clone());
        }
        let keys = match self.key_file()? {
            Some(file) => file.unwrap_keys(None)?,
            None => {
                let key = DataKey::generate();
                self.write_key_file(&KeyFile::wrap(&key, None))?;
                LogKeys::new(key)
            }
        };
        *cached = Some(keys.clone());
        Ok(keys)
    }

    pub(crate) fn set_log_keys(&self, keys: LogKeys) {
        *self.log_keys.lock().expect("not poisoned") = Some(keys);
    }

    /// Opens the log at `path` with its key: the current one, or after a rotation stopped
    /// between the reseal and the key file's last write, the pending one (the rotation is
    /// then finished by `follow_unlock_key`).
    pub(crate) fn open_log(&self, path: &std::path::Path) -> Result<DurableLog, DaemonError> {
        let keys = self.log_keys()?;
        let open = |key: &DataKey| {
            DurableLog::open(Location::File {
                path,
                durable: true,
                key: key.clone(),
            })
        };
        match (open(&keys.current), &keys.pending) {
            (Err(LogError::WrongKey { .. }), Some(pending)) => {
                let log = open(pending)?;
                self.set_log_keys(LogKeys {
                    current: pending.clone(),
                    pending: Some(pending.clone()),
                });
                Ok(log)
            }
            (opened, _) => Ok(opened?),
        }
    }

    /// Forgets the keys with the log they open (the node left its cluster).
    pub(crate) fn forget_log_keys(&self) {
        *self.log_keys.lock().expect("not poisoned") = None;
    }

    /// `swarm unlock`: a right key unwraps the log's key and starts the member; a wrong one
    /// changes nothing.
    pub(crate) async fn unlock(self: &Arc<Self>, unlock_key: &str) -> Result<(), Status> {
        let mut membership = self.membership.lock().await;
        let Membership::Locked(state) = &*membership else {
            return Err(Status::failed_precondition(
                "this node is not locked: nothing to unlock",
            ));
        };
        let unlock_key: UnlockKey = unlock_key
            .parse()
            .map_err(|e: CryptError| Status::invalid_argument(e.to_string()))?;
        let file = self
            .key_file()
            .map_err(internal)?
            .ok_or_else(|| internal(format!("{KEY_FILE} is missing")))?;
        let keys = file.unwrap_keys(Some(&unlock_key)).map_err(|e| match e {
            CryptError::WrongUnlockKey => Status::invalid_argument(e.to_string()),
            e => internal(e),
        })?;
        self.set_log_keys(keys);
        let member = self
            .start_member(state.clone(), Default::default())
            .await
            .map_err(internal)?;
        *membership = Membership::Member(member);
        tracing::info!("unlocked: the manager starts");
        Ok(())
    }
}

async fn current_unlock_key(raft: &RaftHandle<Store>) -> Result<Option<String>, Status> {
    raft.read(|store: &Store| store.data().unlock_key.clone())
        .await
        .map_err(raft_status)
}

async fn propose_unlock_key(
    raft: &RaftHandle<Store>,
    unlock_key: Option<String>,
) -> Result<(), Status> {
    propose(raft, &Command::SetAutolock { unlock_key })
        .await
        .map(drop)
        .map_err(store_status)
}

/// The cluster's unlock key, after `rotate` replaced it (refused while autolock is off).
pub(crate) async fn unlock_key(raft: &RaftHandle<Store>, rotate: bool) -> Result<String, Status> {
    let Some(current) = current_unlock_key(raft).await? else {
        return Err(Status::failed_precondition(
            "autolock is off: there is no unlock key (turn it on with `swarm cluster update --autolock=true`)",
        ));
    };
    if !rotate {
        return Ok(current);
    }
    let rotated = UnlockKey::generate().to_string();
    propose_unlock_key(raft, Some(rotated.clone())).await?;
    Ok(rotated)
}

/// Turns autolock on (answering the unlock key: a new one, or the current one if it was on
/// already) or off (answering nothing).
pub(crate) async fn set_autolock(raft: &RaftHandle<Store>, on: bool) -> Result<String, Status> {
    match (current_unlock_key(raft).await?, on) {
        (Some(current), true) => Ok(current),
        (None, false) => Ok(String::new()),
        (_, true) => {
            let unlock_key = UnlockKey::generate().to_string();
            propose_unlock_key(raft, Some(unlock_key.clone())).await?;
            Ok(unlock_key)
        }
        (Some(_), false) => {
            propose_unlock_key(raft, None).await?;
            Ok(String::new())
        }
    }
}

/// Keeps this manager's key file wrapped as the store says: by the unlock key's KEK while
/// autolock is on, by a stored KEK while it is off.
pub(crate) async fn follow_unlock_key(raft: RaftHandle<Store>, daemon: Arc<Daemon>) {
    let mut wrapped_for: Option<Option<String>> = None;
    loop {
        let Ok((initialised, unlock_key)) = raft
            .local_read(|store: &Store| {
                let data = store.data();
                (data.cluster.is_some(), data.unlock_key.clone())
            })
            .await
        else {
            return;
        };
        // A replica that has not caught up yet (a joining manager's empty store) knows
        // nothing of autolock: its key file stays as it is until it does.
        if initialised && wrapped_for.as_ref() != Some(&unlock_key) {
            match rewrap(&daemon, &raft, unlock_key.as_deref()).await {
                Ok(()) => wrapped_for = Some(unlock_key),
                Err(error) => tracing::error!(%error, "cannot rewrap the raft log's key"),
            }
        }
        tokio::time::sleep(FOLLOW_PERIOD).await;
    }
}

/// Writes the key file for `unlock_key` unless it is already wrapped that way; rotates the
/// data key when the file goes from open to locked, or finishes a rotation under way.
async fn rewrap(
    daemon: &Daemon,
    raft: &RaftHandle<Store>,
    unlock_key: Option<&str>,
) -> Result<(), DaemonError> {
    let unlock_key = unlock_key.map(str::parse::<UnlockKey>).transpose()?;
    let mut keys = daemon.log_keys()?;
    let file = daemon.key_file()?;
    // While the file was open the DEK sat beside its KEK, where any copy of the data dir
    // took it: locking replaces it (as swarmkit does), so such a copy opens nothing
    // written under autolock.
    let locking = unlock_key.is_some() && file.as_ref().is_some_and(|f| !f.is_locked());
    if keys.pending.is_none() && locking {
        keys.pending = Some(DataKey::generate());
    }
    if let Some(new) = keys.pending.clone() {
        // Both keys under the new KEK first: stopped at any point after, the manager opens
        // its log with one of them.
        daemon.write_key_file(&KeyFile::wrap_keys(&keys, unlock_key.as_ref()))?;
        daemon.set_log_keys(keys);
        raft.rekey(new.clone()).await.map_err(|e| match e {
            RekeyError::Log(e) => DaemonError::Log(e),
            RekeyError::Raft(e) => DaemonError::Crypt(CryptError::KeyFile {
                message: format!("the log was not resealed: {e}"),
            }),
        })?;
        let keys = LogKeys::new(new);
        daemon.write_key_file(&KeyFile::wrap(&keys.current, unlock_key.as_ref()))?;
        daemon.set_log_keys(keys);
        tracing::info!(
            autolock = unlock_key.is_some(),
            "rotated the raft log's data key and rewrapped it"
        );
        return Ok(());
    }
    if let Some(file) = file {
        let current = match &unlock_key {
            Some(key) => file.is_locked() && file.unwrap(Some(key)).is_ok(),
            None => !file.is_locked(),
        };
        if current {
            return Ok(());
        }
    }
    daemon.write_key_file(&KeyFile::wrap(&keys.current, unlock_key.as_ref()))?;
    tracing::info!(
        autolock = unlock_key.is_some(),
        "rewrapped the raft log's key"
    );
    Ok(())
}
