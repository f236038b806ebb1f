//! The contents of configs and secrets. A config's or secret's spec carries only the
//! SHA-256 digest of its content; the bytes travel beside the specs (with the plan that
//! brings them, in the store keyed by digest, to a node with the assignments of tasks that
//! use them) and never inside anything a plan, an export or `inspect` renders.
//!
//! Keyed by digest, the store keeps every version still in use: a changed secret file gives
//! a new digest, services pin the digest they mount (`FileReference::digest`), and a version
//! goes when no object and no running task names it.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Docker's limit for a secret's content (`secret create`: 500 KiB).
pub const MAX_SECRET_BYTES: usize = 500 * 1024;

/// Docker's limit for a config's content (the gRPC message bound it keeps them under).
pub const MAX_CONFIG_BYTES: usize = 1000 * 1024;

/// The content of a config or secret. Its `Debug` shows the size only, so no log or error
/// built from it reveals the bytes; it serialises as base64 (the Raft log and snapshots).
#[derive(Clone, PartialEq, Eq)]
pub struct FileContent(Vec<u8>);

impl FileContent {
    pub fn new(bytes: Vec<u8>) -> Self {
        FileContent(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// `sha256:<hex>`, as `FileObjectSpec::digest` names it.
    pub fn digest(&self) -> String {
        digest_of(&self.0)
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

impl std::fmt::Debug for FileContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileContent(<{} bytes>)", self.0.len())
    }
}

impl Serialize for FileContent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for FileContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text)
            .map(FileContent)
            .map_err(serde::de::Error::custom)
    }
}

/// Contents by digest (`sha256:<hex>`).
pub type FileContents = BTreeMap<String, FileContent>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_size_never_the_bytes_and_serde_round_trips() {
        let content = FileContent::new(b"hunter2-password".to_vec());
        let contents = FileContents::from([(content.digest(), content.clone())]);
        let shown = format!("{contents:?} {contents:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("16 bytes"), "{shown}");
        let json = serde_json::to_string(&contents).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        let back: FileContents = serde_json::from_str(&json).unwrap();
        assert_eq!(back, contents);
        assert!(content.digest().starts_with("sha256:"));
        assert_eq!(content.digest().len(), "sha256:".len() + 64);
    }
}
