//! What can go wrong with images. Each message is meant for the ERROR column of
//! `swarm service ps`: it names the image, blob or path that failed, and what to do.
//!
//! The error is `Clone` because every caller waiting on one shared pull receives it; causes
//! are kept as their messages.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("image {image} not found: {detail}")]
    NotFound { image: String, detail: String },
    #[error("registry {registry} is unreachable: {detail}")]
    Unreachable { registry: String, detail: String },
    #[error(
        "registry {registry} refused access to {image}: {detail} (check the credentials for {registry}: `swarm login {registry}`, then update the service with --with-registry-auth)"
    )]
    Unauthorized {
        registry: String,
        image: String,
        detail: String,
    },
    #[error("registry {registry} failed while pulling {image}: {detail}")]
    Registry {
        registry: String,
        image: String,
        detail: String,
    },
    #[error(
        "digest mismatch for {blob} of {image}: expected {expected}, got {got} (the registry serves corrupt content)"
    )]
    DigestMismatch {
        image: String,
        blob: String,
        expected: String,
        got: String,
    },
    #[error("corrupt layer {layer} of {image}: {detail}")]
    CorruptLayer {
        image: String,
        layer: String,
        detail: String,
    },
    #[error("unsupported media type {media_type} for {what} of {image}")]
    UnsupportedMediaType {
        image: String,
        what: String,
        media_type: String,
    },
    #[error("invalid manifest {digest} of {image}: {detail}")]
    InvalidManifest {
        image: String,
        digest: String,
        detail: String,
    },
    #[error("image {image} has no variant for {platform} (its index lists: {available})")]
    NoMatchingPlatform {
        image: String,
        platform: String,
        available: String,
    },
    #[error("image {image} is not stored: pull it first")]
    NotStored { image: String },
    #[error("{action} {}: {detail}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        detail: String,
    },
}

impl ImageError {
    /// An IO failure on `path` while doing `action` (e.g. "cannot write blob").
    pub(crate) fn io(action: &'static str, path: &Path, err: std::io::Error) -> ImageError {
        ImageError::Io {
            action,
            path: path.to_owned(),
            detail: io_detail(&err),
        }
    }
}

/// An io::Error's message in lower case without the "(os error N)" suffix, as Linux tools
/// print it ("connection refused", "no such file or directory").
pub(crate) fn io_detail(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}
