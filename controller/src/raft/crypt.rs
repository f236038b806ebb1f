//! Encryption at rest of what a manager's Raft log holds, after swarmkit's design: every
//! record is sealed with a data encryption key (DEK, XChaCha20-Poly1305, a random nonce per
//! record), and the DEK sits in the manager's data dir wrapped by a key-encryption key (KEK).
//!
//! Without autolock the KEK is stored beside the wrapped DEK: a copied data dir then gives
//! everything away, as swarmkit's does, but the format is the one autolock uses, so turning
//! autolock on or off only rewraps the DEK. With autolock the KEK derives from the cluster's
//! unlock key (`SWMKEY-1-…`), which the manager does not keep: it waits for `swarm unlock`.
//! Turning autolock on also replaces the DEK (swarmkit's rotation): while it sat beside its
//! KEK, any copy of the data dir could take it, and such a copy must open nothing written
//! under autolock. During the rotation the key file holds both DEKs (`LogKeys::pending`),
//! so a manager stopped at any point still opens its log with one of them.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";
/// The label the DEK is wrapped under: a wrapped DEK cannot pass for a log record.
const DEK_LABEL: &[u8] = b"swarm raft dek";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptError {
    #[error("{what} failed authentication: it was tampered with or sealed with another key")]
    Tampered { what: String },
    #[error("{what} is too short to be a sealed record")]
    Truncated { what: String },
    #[error("the unlock key is wrong: the raft log's key did not open with it")]
    WrongUnlockKey,
    #[error("this manager is locked: run `swarm unlock`")]
    Locked,
    #[error("not an unlock key (expected {UNLOCK_KEY_PREFIX}… as `swarm unlock-key` prints)")]
    MalformedUnlockKey,
    #[error("the raft key file is not valid: {message}")]
    KeyFile { message: String },
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    bytes
}

/// A 256-bit symmetric key: the DEK that seals records, or a KEK that wraps the DEK.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; KEY_LEN]);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        DataKey(random_bytes())
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.0).into())
    }

    /// Encrypts `plaintext` under a fresh random nonce: `nonce || ciphertext || tag`.
    /// `label` names the record's place (authenticated, not stored), so a record moved to
    /// another place fails to open.
    pub fn seal(&self, label: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = self
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: label,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// The plaintext of a record `seal` made with the same key and label; `what` names the
    /// record in errors.
    pub fn open(&self, label: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>, CryptError> {
        let (nonce, ciphertext) =
            sealed
                .split_at_checked(NONCE_LEN)
                .ok_or_else(|| CryptError::Truncated {
                    what: what.to_owned(),
                })?;
        self.cipher()
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: label,
                },
            )
            .map_err(|_| CryptError::Tampered {
                what: what.to_owned(),
            })
    }
}

/// The cluster's unlock key, printed as `SWMKEY-1-` and 32 random bytes in base64 (Docker's
/// format). High entropy, so the KEK is a plain hash of it: no password stretching needed.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; KEY_LEN]);

impl fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UnlockKey(..)")
    }
}

impl UnlockKey {
    pub fn generate() -> Self {
        UnlockKey(random_bytes())
    }

    fn key_encryption_key(&self) -> DataKey {
        let mut hash = Sha256::new();
        hash.update(b"swarm raft kek\0");
        hash.update(self.0);
        DataKey(hash.finalize().into())
    }
}

impl fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{UNLOCK_KEY_PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl FromStr for UnlockKey {
    type Err = CryptError;

    fn from_str(text: &str) -> Result<Self, CryptError> {
        let encoded = text
            .trim()
            .strip_prefix(UNLOCK_KEY_PREFIX)
            .ok_or(CryptError::MalformedUnlockKey)?;
        let bytes = STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| CryptError::MalformedUnlockKey)?;
        Ok(UnlockKey(
            bytes
                .try_into()
                .map_err(|_| CryptError::MalformedUnlockKey)?,
        ))
    }
}

/// The keys a manager's log may be sealed with: the DEK, and during a rotation the DEK it
/// is being resealed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKeys {
    pub current: DataKey,
    pub pending: Option<DataKey>,
}

impl LogKeys {
    pub fn new(current: DataKey) -> Self {
        LogKeys {
            current,
            pending: None,
        }
    }
}

/// What a manager keeps beside its log (`raft.key`, JSON): the wrapped DEK (and the one a
/// rotation reseals the log with), and the KEK unless autolock is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// `seal`ed DEK, base64.
    wrapped_dek: String,
    /// `seal`ed pending DEK, base64, while a rotation is under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_pending_dek: Option<String>,
    /// The KEK in base64 without autolock; absent with it (the unlock key derives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kek: Option<String>,
}

impl KeyFile {
    /// `dek` wrapped by the unlock key's KEK when `unlock_key` is given (autolock), else by
    /// a new random KEK stored beside it.
    pub fn wrap(dek: &DataKey, unlock_key: Option<&UnlockKey>) -> Self {
        Self::wrap_keys(&LogKeys::new(dek.clone()), unlock_key)
    }

    /// Both keys of `keys` wrapped alike (see [`KeyFile::wrap`]).
    pub fn wrap_keys(keys: &LogKeys, unlock_key: Option<&UnlockKey>) -> Self {
        let (kek, stored) = match unlock_key {
            Some(unlock_key) => (unlock_key.key_encryption_key(), None),
            None => {
                let kek = DataKey::generate();
                let stored = STANDARD.encode(kek.0);
                (kek, Some(stored))
            }
        };
        let wrap = |dek: &DataKey| STANDARD.encode(kek.seal(DEK_LABEL, &dek.0));
        KeyFile {
            wrapped_dek: wrap(&keys.current),
            wrapped_pending_dek: keys.pending.as_ref().map(wrap),
            kek: stored,
        }
    }

    /// Whether the DEK needs the unlock key to be unwrapped.
    pub fn is_locked(&self) -> bool {
        self.kek.is_none()
    }

    /// The DEK: with the stored KEK, or with `unlock_key`'s when the file is locked.
    pub fn unwrap(&self, unlock_key: Option<&UnlockKey>) -> Result<DataKey, CryptError> {
        Ok(self.unwrap_keys(unlock_key)?.current)
    }

    /// The DEK and the pending one (see [`KeyFile::unwrap`]).
    pub fn unwrap_keys(&self, unlock_key: Option<&UnlockKey>) -> Result<LogKeys, CryptError> {
        let kek = match (&self.kek, unlock_key) {
            (Some(stored), _) => DataKey(decode_key(stored, "the stored key-encryption key")?),
            (None, Some(unlock_key)) => unlock_key.key_encryption_key(),
            (None, None) => return Err(CryptError::Locked),
        };
        Ok(LogKeys {
            current: self.unwrap_one(&kek, &self.wrapped_dek)?,
            pending: self
                .wrapped_pending_dek
                .as_ref()
                .map(|wrapped| self.unwrap_one(&kek, wrapped))
                .transpose()?,
        })
    }

    fn unwrap_one(&self, kek: &DataKey, wrapped: &str) -> Result<DataKey, CryptError> {
        let wrapped = STANDARD.decode(wrapped).map_err(|e| CryptError::KeyFile {
            message: format!("the wrapped key: {e}"),
        })?;
        let dek = kek
            .open(DEK_LABEL, &wrapped, "the wrapped data encryption key")
            .map_err(|e| match (&self.kek, e) {
                (None, CryptError::Tampered { .. }) => CryptError::WrongUnlockKey,
                (_, e) => e,
            })?;
        Ok(DataKey(dek.try_into().map_err(|_| {
            CryptError::KeyFile {
                message: "the data encryption key is not 32 bytes".to_owned(),
            }
        })?))
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a key file serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, CryptError> {
        serde_json::from_slice(bytes).map_err(|e| CryptError::KeyFile {
            message: e.to_string(),
        })
    }
}

fn decode_key(encoded: &str, what: &str) -> Result<[u8; KEY_LEN], CryptError> {
    STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| CryptError::KeyFile {
            message: format!("{what} is not 32 bytes of base64"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_with_its_key_and_label_only() {
        let key = DataKey::generate();
        let sealed = key.seal(b"entry 7", b"the secret is hunter2");
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "the plaintext is not in the record"
        );
        assert_eq!(
            key.open(b"entry 7", &sealed, "entry 7").unwrap(),
            b"the secret is hunter2"
        );
        assert_ne!(
            sealed,
            key.seal(b"entry 7", b"the secret is hunter2"),
            "a fresh nonce per record"
        );
        let moved = key.open(b"entry 8", &sealed, "entry 8").unwrap_err();
        assert_eq!(
            moved.to_string(),
            "entry 8 failed authentication: it was tampered with or sealed with another key"
        );
        let other = DataKey::generate().open(b"entry 7", &sealed, "entry 7");
        assert!(matches!(other, Err(CryptError::Tampered { .. })));
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN + 2] ^= 1;
        assert!(matches!(
            key.open(b"entry 7", &tampered, "entry 7"),
            Err(CryptError::Tampered { .. })
        ));
        assert!(matches!(
            key.open(b"entry 7", &sealed[..10], "entry 7"),
            Err(CryptError::Truncated { .. })
        ));
    }

    #[test]
    fn unlock_keys_print_and_parse_in_dockers_format() {
        let key = UnlockKey::generate();
        let printed = key.to_string();
        assert!(printed.starts_with("SWMKEY-1-"), "{printed}");
        assert_eq!(format!("{printed}\n").parse::<UnlockKey>().unwrap(), key);
        for bad in ["", "SWMKEY-1-", "SWMKEY-1-abc", "SWMKEY-2-AAAA", "hunter2"] {
            assert_eq!(
                bad.parse::<UnlockKey>().unwrap_err(),
                CryptError::MalformedUnlockKey,
                "{bad}"
            );
        }
        assert!(!format!("{key:?}").contains(&printed[9..]));
    }

    #[test]
    fn the_dek_unwraps_with_the_stored_kek_or_the_right_unlock_key() {
        let dek = DataKey::generate();
        let open = KeyFile::from_json(&KeyFile::wrap(&dek, None).to_json()).unwrap();
        assert!(!open.is_locked());
        assert_eq!(open.unwrap(None).unwrap(), dek);

        let unlock_key = UnlockKey::generate();
        let locked = KeyFile::from_json(&KeyFile::wrap(&dek, Some(&unlock_key)).to_json()).unwrap();
        assert!(locked.is_locked());
        assert!(
            !String::from_utf8(locked.to_json())
                .unwrap()
                .contains(&unlock_key.to_string()[9..]),
            "the unlock key is not kept"
        );
        assert_eq!(locked.unwrap(None).unwrap_err(), CryptError::Locked);
        assert_eq!(
            locked.unwrap(Some(&UnlockKey::generate())).unwrap_err(),
            CryptError::WrongUnlockKey
        );
        assert_eq!(locked.unwrap(Some(&unlock_key)).unwrap(), dek);
    }

    #[test]
    fn a_rotations_pending_dek_is_wrapped_beside_the_current_one() {
        let keys = LogKeys {
            current: DataKey::generate(),
            pending: Some(DataKey::generate()),
        };
        let unlock_key = UnlockKey::generate();
        let file =
            KeyFile::from_json(&KeyFile::wrap_keys(&keys, Some(&unlock_key)).to_json()).unwrap();
        assert_eq!(file.unwrap_keys(Some(&unlock_key)).unwrap(), keys);
        assert_eq!(file.unwrap(Some(&unlock_key)).unwrap(), keys.current);
        assert_eq!(
            file.unwrap_keys(Some(&UnlockKey::generate())).unwrap_err(),
            CryptError::WrongUnlockKey
        );
        let done = KeyFile::wrap(&keys.current, None);
        assert_eq!(done.unwrap_keys(None).unwrap().pending, None);
        assert!(
            !String::from_utf8(done.to_json())
                .unwrap()
                .contains("pending")
        );
    }

    #[test]
    fn a_damaged_key_file_is_a_clear_error() {
        let mut file = KeyFile::wrap(&DataKey::generate(), None);
        file.kek = Some("c2hvcnQ=".to_owned());
        assert_eq!(
            file.unwrap(None).unwrap_err().to_string(),
            "the raft key file is not valid: the stored key-encryption key is not 32 bytes of base64"
        );
        assert!(matches!(
            KeyFile::from_json(b"{}"),
            Err(CryptError::KeyFile { .. })
        ));
    }
}
