//! The network edge: manifests and blobs from an OCI distribution registry (oci-client), and
//! its failures turned into `ImageError`s a user can act on.

use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};
use swarm_api::image::ImageRef;
use tokio::io::AsyncWrite;

use super::Credentials;
use super::error::{ImageError, io_detail};
use super::manifest::{ACCEPTED, Descriptor};

/// A client for one registry, plain http or https, with its credentials.
#[derive(Clone)]
pub(crate) struct RegistryClient {
    client: Client,
    auth: RegistryAuth,
}

impl RegistryClient {
    pub fn new(
        insecure: bool,
        credentials: Option<&Credentials>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> RegistryClient {
        let client = Client::new(ClientConfig {
            protocol: if insecure {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(connect_timeout),
            read_timeout: Some(read_timeout),
            ..ClientConfig::default()
        });
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        RegistryClient { client, auth }
    }

    /// The digest a tag points to now (one HEAD request).
    pub async fn resolve(&self, image: &ImageRef) -> Result<String, ImageError> {
        self.client
            .fetch_manifest_digest(&reference(image, None), &self.auth)
            .await
            .map_err(|e| registry_error(image, e))
    }

    /// The manifest or index `digest`, checked against it.
    pub async fn manifest(&self, image: &ImageRef, digest: &str) -> Result<Vec<u8>, ImageError> {
        let (body, _) = self
            .client
            .pull_manifest_raw(&reference(image, Some(digest)), &self.auth, ACCEPTED)
            .await
            .map_err(|e| blob_error(image, digest, e))?;
        let got = sha256_digest(&body);
        if got != digest {
            return Err(ImageError::DigestMismatch {
                image: image.to_string(),
                blob: format!("manifest {digest}"),
                expected: digest.into(),
                got,
            });
        }
        Ok(body.to_vec())
    }

    /// Streams blob `descriptor` into `path` (a new file), checking its size and sha256.
    /// On error the file may hold a part: the caller removes it.
    pub async fn blob(
        &self,
        image: &ImageRef,
        descriptor: &Descriptor,
        path: &Path,
    ) -> Result<(), ImageError> {
        let file = std::fs::File::create_new(path)
            .map_err(|e| ImageError::io("cannot create blob file", path, e))?;
        let mut out = HashingFile {
            file,
            hasher: Sha256::new(),
            written: 0,
            limit: descriptor.size,
        };
        let pulled = self
            .client
            .pull_blob(
                &reference(image, None),
                descriptor.digest.as_str(),
                &mut out,
            )
            .await;
        let got = format!("sha256:{:x}", out.hasher.finalize_reset());
        let mismatch = |got: String| ImageError::DigestMismatch {
            image: image.to_string(),
            blob: descriptor.digest.clone(),
            expected: descriptor.digest.clone(),
            got,
        };
        match pulled {
            Ok(()) if got == descriptor.digest && out.written == descriptor.size => {}
            Ok(()) => return Err(mismatch(format!("{got} ({} bytes)", out.written))),
            Err(OciDistributionError::DigestError(_)) => return Err(mismatch(got)),
            Err(OciDistributionError::IoError(e))
                if e.kind() == std::io::ErrorKind::FileTooLarge =>
            {
                return Err(mismatch(format!(
                    "more than the {} bytes its descriptor says",
                    descriptor.size
                )));
            }
            Err(OciDistributionError::IoError(e)) => {
                return Err(ImageError::io("cannot write blob", path, e));
            }
            Err(e) => return Err(blob_error(image, &descriptor.digest, e)),
        }
        // Durable before it is renamed into the store, which trusts what it holds.
        out.file
            .sync_all()
            .map_err(|e| ImageError::io("cannot sync blob", path, e))
    }
}

fn reference(image: &ImageRef, digest: Option<&str>) -> Reference {
    match (digest.or(image.digest.as_deref()), &image.tag) {
        (Some(digest), _) => Reference::with_digest(
            image.registry.clone(),
            image.repository.clone(),
            digest.into(),
        ),
        (None, tag) => Reference::with_tag(
            image.registry.clone(),
            image.repository.clone(),
            tag.clone().unwrap_or_else(|| "latest".into()),
        ),
    }
}

pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A blob's file being written: counts and hashes what it accepts, refuses more than the
/// descriptor's size (a registry must not fill the disk).
struct HashingFile {
    // A std file: writes of a few KiB land in the page cache; a blocking-pool hop per chunk
    // (tokio::fs) costs more than it saves.
    file: std::fs::File,
    hasher: Sha256,
    written: u64,
    limit: u64,
}

impl AsyncWrite for HashingFile {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if this.written + buf.len() as u64 > this.limit {
            return Poll::Ready(Err(std::io::ErrorKind::FileTooLarge.into()));
        }
        this.file.write_all(buf)?;
        this.hasher.update(buf);
        this.written += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().file.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A failure fetching blob or manifest `digest`.
fn blob_error(image: &ImageRef, digest: &str, err: OciDistributionError) -> ImageError {
    match err {
        OciDistributionError::DigestError(e) => ImageError::DigestMismatch {
            image: image.to_string(),
            blob: digest.into(),
            expected: digest.into(),
            got: e.to_string(),
        },
        other => registry_error(image, other),
    }
}

/// oci-client's error as the user should read it.
pub(crate) fn registry_error(image: &ImageRef, err: OciDistributionError) -> ImageError {
    let registry = image.registry.clone();
    let image_name = image.to_string();
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            });
            let detail = envelope
                .errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            if not_found {
                ImageError::NotFound {
                    image: image_name,
                    detail,
                }
            } else if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                ImageError::Unauthorized {
                    registry,
                    image: image_name,
                    detail,
                }
            } else {
                ImageError::Registry {
                    registry,
                    image: image_name,
                    detail,
                }
            }
        }
        OciDistributionError::ServerError {
            code: 404, message, ..
        }
        | OciDistributionError::ImageManifestNotFoundError(message) => ImageError::NotFound {
            image: image_name,
            detail: if message.is_empty() {
                "the registry answered 404".into()
            } else {
                message
            },
        },
        OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            registry,
            image: image_name,
            detail: "the registry answered 401".into(),
        },
        OciDistributionError::AuthenticationFailure(detail) => ImageError::Unauthorized {
            registry,
            image: image_name,
            detail,
        },
        OciDistributionError::RequestError(e) => ImageError::Unreachable {
            registry,
            detail: root_cause(&e),
        },
        other => ImageError::Registry {
            registry,
            image: image_name,
            detail: other.to_string(),
        },
    }
}

/// The innermost cause of a transport error ("connection refused", "operation timed out"):
/// reqwest's own message names only the URL.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut deepest = err;
    while let Some(source) = deepest.source() {
        deepest = source;
    }
    match deepest.downcast_ref::<std::io::Error>() {
        Some(io) => io_detail(io),
        None => {
            let text = deepest.to_string();
            if text.is_empty() {
                err.to_string()
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn envelope(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError {
                    code,
                    message: message.into(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://127.0.0.1:5000/v2/x/manifests/1".into(),
        }
    }

    #[test]
    fn registry_errors_read_well() {
        let image = ImageRef::parse("127.0.0.1:5000/swarm/nope:1").unwrap();
        let cases: Vec<(OciDistributionError, &str)> = vec![
            (
                envelope(OciErrorCode::ManifestUnknown, "manifest unknown"),
                "image 127.0.0.1:5000/swarm/nope:1 not found: manifest unknown",
            ),
            (
                envelope(
                    OciErrorCode::NameUnknown,
                    "repository name not known to registry",
                ),
                "image 127.0.0.1:5000/swarm/nope:1 not found: repository name not known to registry",
            ),
            (
                envelope(
                    OciErrorCode::Denied,
                    "requested access to the resource is denied",
                ),
                "registry 127.0.0.1:5000 refused access to 127.0.0.1:5000/swarm/nope:1: requested access to the resource is denied (check the credentials for 127.0.0.1:5000: `swarm login 127.0.0.1:5000`, then update the service with --with-registry-auth)",
            ),
            (
                envelope(OciErrorCode::Toomanyrequests, "slow down"),
                "registry 127.0.0.1:5000 failed while pulling 127.0.0.1:5000/swarm/nope:1: slow down",
            ),
            (
                OciDistributionError::ServerError {
                    code: 404,
                    url: "u".into(),
                    message: String::new(),
                },
                "image 127.0.0.1:5000/swarm/nope:1 not found: the registry answered 404",
            ),
            (
                OciDistributionError::UnauthorizedError { url: "u".into() },
                "registry 127.0.0.1:5000 refused access to 127.0.0.1:5000/swarm/nope:1: the registry answered 401 (check the credentials for 127.0.0.1:5000: `swarm login 127.0.0.1:5000`, then update the service with --with-registry-auth)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(registry_error(&image, err).to_string(), want);
        }
    }

    #[test]
    fn root_causes_are_lower_case_without_os_error_numbers() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "error sending request for url (http://127.0.0.1:5999/v2/)"
                )
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = Outer(std::io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(root_cause(&refused), "connection refused");
        let timed_out = Outer(std::io::Error::from_raw_os_error(libc::ETIMEDOUT));
        assert_eq!(root_cause(&timed_out), "connection timed out");
    }
}
