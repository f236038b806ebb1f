//! Images: pulls from OCI registries into a content store by digest, layers unpacked into
//! one read-only root filesystem per image, an overlay per task, garbage collection.
//!
//! References are `swarm_api::image::ImageRef`: `busybox` → `docker.io/library/busybox:latest`.
//! - `manifest`, `config`: the registry's JSON documents, read as far as a task needs (pure).
//! - `unpack`: layers applied in order with whiteouts (blocking filesystem work).
//! - `store`: the layout on disk, written aside then renamed; garbage collection.
//! - `registry`: the network edge (oci-client).
//! - `rootfs`: the per-task overlay mount.
//!
//! `ImageStore::pull` ties them together: resolve the reference (a tag costs one HEAD
//! request, a digest none when the image is stored), fetch what is missing with every blob
//! verified against its digest, unpack, and share one pull among concurrent callers.
//!
//! The worker sees images through [`ImageSource`]: `ImageStore` is the real one, and
//! `FakeImages` (`fake`) plays one in memory for simulations.

mod config;
mod error;
mod fake;
mod manifest;
mod registry;
mod rootfs;
mod store;
mod unpack;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, OwnedRwLockReadGuard, RwLock};

pub use config::{Healthcheck, ImageConfig};
pub use error::ImageError;
pub use fake::FakeImages;
pub use rootfs::TaskRootfs;
pub use store::GcReport;
/// Basic credentials for one registry: the cluster's own type, as services carry them.
pub use swarm_api::auth::RegistryCredential as Credentials;

use swarm_api::image::{ImageRef, parse_digest};

use manifest::{Fetched, Manifest};
use registry::RegistryClient;
use store::Layout;

/// How registries are reached.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Registries (`host[:port]`, as in references) reached over plain http besides the
    /// loopback ones (127.0.0.0/8, `localhost`, `[::1]`), which always are.
    pub insecure_registries: Vec<String>,
    /// Basic credentials by registry (`host[:port]`).
    pub credentials: HashMap<String, Credentials>,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a response.
    pub read_timeout: Duration,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            insecure_registries: Vec::new(),
            credentials: HashMap::new(),
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// A stored image, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The reference it was pulled by.
    pub reference: ImageRef,
    /// The digest of its manifest (for an index, of this platform's manifest): its identity
    /// in the store, and what `ImageStore::collect_garbage` takes as in use.
    pub digest: String,
    /// The unpacked, read-only root filesystem: the lower directory of task overlays.
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// What a worker needs of images: a task's image pulled (or found stored, after a
/// restart), its root filesystem made and released, and unused images collected. The
/// boundary between the worker and registries and disks: `ImageStore` is the real one,
/// `FakeImages` the in-memory one of simulations.
#[async_trait::async_trait]
pub trait ImageSource: Send + Sync {
    /// The image `reference` names, pulled with `credentials` (by registry) if need be.
    async fn pull_with(
        &self,
        reference: &str,
        credentials: &HashMap<String, Credentials>,
    ) -> Result<Image, ImageError>;

    /// The stored image `reference` names by digest, with no network.
    fn stored_image(&self, reference: &str) -> Result<Image, ImageError>;

    /// The stored image with manifest digest `digest`, named by `reference`, with no
    /// network.
    fn stored_by_digest(&self, reference: &str, digest: &str) -> Result<Image, ImageError>;

    /// The manifest digests of the stored images.
    fn images(&self) -> Result<Vec<String>, ImageError>;

    /// Removes the stored images whose digests are not in `in_use`.
    async fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError>;

    /// Makes a task's root filesystem over `image` in the task's directory `dir`; returns
    /// the path the container runs in.
    fn mount_rootfs(&self, image: &Image, dir: &Path) -> Result<PathBuf, ImageError>;

    /// Removes the root filesystem made in `dir`, if any; releasing twice is fine.
    fn release_rootfs(&self, dir: &Path) -> Result<(), ImageError>;
}

#[async_trait::async_trait]
impl ImageSource for ImageStore {
    async fn pull_with(
        &self,
        reference: &str,
        credentials: &HashMap<String, Credentials>,
    ) -> Result<Image, ImageError> {
        ImageStore::pull_with(self, reference, credentials).await
    }

    fn stored_image(&self, reference: &str) -> Result<Image, ImageError> {
        ImageStore::stored_image(self, reference)
    }

    fn stored_by_digest(&self, reference: &str, digest: &str) -> Result<Image, ImageError> {
        ImageStore::stored_by_digest(self, reference, digest)
    }

    fn images(&self) -> Result<Vec<String>, ImageError> {
        ImageStore::images(self)
    }

    async fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError> {
        ImageStore::collect_garbage(self, in_use).await
    }

    fn mount_rootfs(&self, image: &Image, dir: &Path) -> Result<PathBuf, ImageError> {
        Ok(TaskRootfs::mount(&image.rootfs, dir)?.merged())
    }

    fn release_rootfs(&self, dir: &Path) -> Result<(), ImageError> {
        TaskRootfs::at(dir).release()
    }
}

type SharedPull = Arc<OnceCell<Result<Image, ImageError>>>;

/// Pulls and clients are shared only among callers with the same credentials: a pull
/// without them must not answer (or fail) for one with them.
type PullKey = (ImageRef, Option<Credentials>);
type ClientKey = (String, Option<Credentials>);

/// The node's images under one directory (`DATA_DIR/images`). One store per directory.
pub struct ImageStore {
    layout: Layout,
    options: PullOptions,
    /// One client per registry and credentials, so connections are reused.
    clients: Mutex<HashMap<ClientKey, RegistryClient>>,
    /// The pull under way for each reference (and credentials): later callers wait on it.
    pulls: Mutex<HashMap<PullKey, SharedPull>>,
    /// Pulls hold it shared, garbage collection exclusively: a collection never removes
    /// blobs a pull has fetched but not yet linked to an image.
    collecting: Arc<RwLock<()>>,
}

impl ImageStore {
    /// Opens (creating it if needed) the store in `root`, removing work a crashed process
    /// left half done.
    pub fn open(root: &Path, options: PullOptions) -> Result<ImageStore, ImageError> {
        // rustls (under reqwest) is built without a default crypto provider; another part of
        // the process may have installed one already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(ImageStore {
            layout: Layout::open(root)?,
            options,
            clients: Mutex::default(),
            pulls: Mutex::default(),
            collecting: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Makes the image `reference` (Docker's spelling) available: pulled, verified and
    /// unpacked, or found stored. Concurrent calls for one reference share one pull.
    pub async fn pull(&self, reference: &str) -> Result<Image, ImageError> {
        self.pull_with(reference, &HashMap::new()).await
    }

    /// Like `pull`, with credentials by registry (`host[:port]`) that take precedence over
    /// the store's own for this pull: a task's service brings them (`--with-registry-auth`).
    pub async fn pull_with(
        &self,
        reference: &str,
        credentials: &HashMap<String, Credentials>,
    ) -> Result<Image, ImageError> {
        let image = parse_reference(reference)?;
        let credentials = credentials
            .get(&image.registry)
            .or_else(|| self.options.credentials.get(&image.registry))
            .cloned();
        let key = (image.clone(), credentials.clone());
        let shared = {
            let mut pulls = self.pulls.lock().expect("pulls lock");
            pulls.entry(key.clone()).or_default().clone()
        };
        // If the caller running the pull is cancelled, a waiting caller takes it over.
        let result = shared
            .get_or_init(|| self.pull_now(&image, credentials.as_ref()))
            .await
            .clone();
        {
            // The first caller back retires the finished pull: later calls look again.
            let mut pulls = self.pulls.lock().expect("pulls lock");
            if pulls.get(&key).is_some_and(|p| Arc::ptr_eq(p, &shared)) {
                pulls.remove(&key);
            }
        }
        result
    }

    /// Fetches and verifies the blobs of image `reference` into the store without unpacking
    /// them: to have an image on the node ahead of need, or to time the network half of a
    /// pull. Returns the manifest digest. Unlike `pull`, calls are not shared, and until the
    /// image is pulled a garbage collection removes what this fetched.
    pub async fn fetch(&self, reference: &str) -> Result<String, ImageError> {
        let image = parse_reference(reference)?;
        let _shared = self.collecting.read().await;
        let client = self.client(&image, self.options.credentials.get(&image.registry));
        let top = match &image.digest {
            Some(digest) => digest.clone(),
            None => client.resolve(&image).await?,
        };
        let (digest, manifest) = self.fetch_manifest(&client, &image, &top).await?;
        self.fetch_blobs(&client, &image, &manifest).await?;
        Ok(digest)
    }

    /// The stored image that `reference` names by digest (`NAME@sha256:…`, as tasks pinned
    /// to a digest carry it), without any network: for an agent that restarts with tasks
    /// whose images it pulled before.
    pub fn stored_image(&self, reference: &str) -> Result<Image, ImageError> {
        let image = parse_reference(reference)?;
        let Some(digest) = &image.digest else {
            return Err(ImageError::InvalidReference {
                reference: reference.into(),
                reason: "a stored image is found by digest: give NAME@sha256:…".into(),
            });
        };
        self.stored(&image, digest)?
            .ok_or_else(|| ImageError::NotStored {
                image: image.to_string(),
            })
    }

    /// The stored image whose manifest digest is `digest` (an `Image::digest`), named by
    /// `reference` (a tag will do), without any network: for an agent that restarts with
    /// tasks whose images it recorded when it pulled them.
    pub fn stored_by_digest(&self, reference: &str, digest: &str) -> Result<Image, ImageError> {
        let image = parse_reference(reference)?;
        let digest = parse_digest(digest).map_err(|reason| ImageError::InvalidReference {
            reference: format!("{reference} (pulled as {digest})"),
            reason: reason.to_string(),
        })?;
        self.stored(&image, &digest)?
            .ok_or_else(|| ImageError::NotStored {
                image: format!("{image}@{digest}"),
            })
    }

    /// The manifest digests of the stored images.
    pub fn images(&self) -> Result<Vec<String>, ImageError> {
        self.layout.images()
    }

    /// Removes every stored image whose manifest digest is not in `in_use`, and the blobs
    /// only they needed. Waits for running pulls to finish; pulls wait for it.
    pub async fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError> {
        let _exclusive = self.collecting.write().await;
        let layout = self.layout.clone();
        let in_use = in_use.clone();
        tokio::task::spawn_blocking(move || layout.collect_garbage(&in_use))
            .await
            .expect("garbage collection does not panic")
    }

    async fn pull_now(
        &self,
        image: &ImageRef,
        credentials: Option<&Credentials>,
    ) -> Result<Image, ImageError> {
        let shared = self.collecting.clone().read_owned().await;
        // A digest is enough to find a stored image; a tag must be asked about.
        if let Some(digest) = &image.digest
            && let Some(stored) = self.stored(image, digest)?
        {
            return Ok(stored);
        }
        let client = self.client(image, credentials);
        let top = match &image.digest {
            Some(digest) => digest.clone(),
            None => client.resolve(image).await?,
        };
        if let Some(stored) = self.stored(image, &top)? {
            return Ok(stored);
        }
        let (digest, manifest) = self.fetch_manifest(&client, image, &top).await?;
        self.fetch_blobs(&client, image, &manifest).await?;
        self.unpack(image, &digest, &manifest, shared).await?;
        // Unpacked a moment ago: only a garbage collection that started since (and did not
        // count it in use) can have removed it.
        self.stored(image, &digest)?
            .ok_or_else(|| ImageError::NotStored {
                image: image.to_string(),
            })
    }

    /// The image `digest` (an index or a manifest) leads to, if it is all stored.
    fn stored(&self, image: &ImageRef, digest: &str) -> Result<Option<Image>, ImageError> {
        let Some((digest, manifest)) = self.layout.stored_manifest(digest) else {
            return Ok(None);
        };
        let rootfs = self.layout.rootfs(&digest);
        if !rootfs.is_dir() || !self.layout.has_blob(&manifest.config.digest) {
            return Ok(None);
        }
        let blob = self.layout.read_blob(&manifest.config.digest)?;
        let config =
            ImageConfig::from_blob(&blob).map_err(|detail| ImageError::InvalidManifest {
                image: image.to_string(),
                digest: manifest.config.digest.clone(),
                detail: format!("config: {detail}"),
            })?;
        Ok(Some(Image {
            reference: image.clone(),
            digest,
            rootfs,
            config,
        }))
    }

    fn client(&self, image: &ImageRef, credentials: Option<&Credentials>) -> RegistryClient {
        let mut clients = self.clients.lock().expect("clients lock");
        clients
            .entry((image.registry.clone(), credentials.cloned()))
            .or_insert_with(|| {
                RegistryClient::new(
                    is_insecure(image, &self.options.insecure_registries),
                    credentials,
                    self.options.connect_timeout,
                    self.options.read_timeout,
                )
            })
            .clone()
    }

    /// Fetches (and stores) the manifest `top` names, through an index if it is one.
    async fn fetch_manifest(
        &self,
        client: &RegistryClient,
        image: &ImageRef,
        top: &str,
    ) -> Result<(String, Manifest), ImageError> {
        let (os, arch) = manifest::this_platform();
        let mut digest = top.to_owned();
        for _ in 0..2 {
            let blob = client.manifest(image, &digest).await?;
            let fetched = manifest::parse(&blob, os, arch).map_err(|e| match e {
                manifest::ManifestError::Invalid(detail) => ImageError::InvalidManifest {
                    image: image.to_string(),
                    digest: digest.clone(),
                    detail,
                },
                manifest::ManifestError::UnsupportedMediaType { what, media_type } => {
                    ImageError::UnsupportedMediaType {
                        image: image.to_string(),
                        what,
                        media_type,
                    }
                }
                manifest::ManifestError::NoMatchingPlatform {
                    platform,
                    available,
                } => ImageError::NoMatchingPlatform {
                    image: image.to_string(),
                    platform,
                    available,
                },
            })?;
            self.write_blob(&digest, blob).await?;
            match fetched {
                Fetched::Image(manifest) => return Ok((digest, manifest)),
                Fetched::Index { manifest } => digest = manifest,
            }
        }
        Err(ImageError::InvalidManifest {
            image: image.to_string(),
            digest,
            detail: "an index leads to another index".into(),
        })
    }

    async fn write_blob(&self, digest: &str, blob: Vec<u8>) -> Result<(), ImageError> {
        let layout = self.layout.clone();
        let digest = digest.to_owned();
        tokio::task::spawn_blocking(move || layout.write_blob(&digest, &blob))
            .await
            .expect("writing a blob does not panic")
    }

    /// Fetches the config and layers not stored yet, all at once.
    async fn fetch_blobs(
        &self,
        client: &RegistryClient,
        image: &ImageRef,
        manifest: &Manifest,
    ) -> Result<(), ImageError> {
        let mut wanted: Vec<_> = std::iter::once(&manifest.config)
            .chain(manifest.layers.iter().map(|(layer, _)| layer))
            .filter(|blob| !self.layout.has_blob(&blob.digest))
            .cloned()
            .collect();
        wanted.dedup_by(|a, b| a.digest == b.digest);
        let mut fetches = tokio::task::JoinSet::new();
        for descriptor in wanted {
            let (client, image, layout) = (client.clone(), image.clone(), self.layout.clone());
            fetches.spawn(async move {
                let tmp = layout.blob_tmp(&descriptor.digest);
                let fetched = client.blob(&image, &descriptor, &tmp).await;
                match fetched {
                    Ok(()) => layout.commit_blob(&tmp, &descriptor.digest),
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        Err(e)
                    }
                }
            });
        }
        // The first failure wins; dropping the set aborts the other fetches, and a pull
        // started later removes what they left aside.
        while let Some(fetched) = fetches.join_next().await {
            fetched.expect("a blob fetch does not panic")?;
        }
        Ok(())
    }

    /// Applies the layers in order into a directory aside, then renames it into place.
    /// `shared` is the pull's hold on the store against garbage collection: it moves into
    /// the unpacking thread, which finishes its work even when the pull is cancelled.
    async fn unpack(
        &self,
        image: &ImageRef,
        digest: &str,
        manifest: &Manifest,
        shared: OwnedRwLockReadGuard<()>,
    ) -> Result<(), ImageError> {
        let (layout, image, digest, manifest) = (
            self.layout.clone(),
            image.clone(),
            digest.to_owned(),
            manifest.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let _shared = shared;
            let tmp = layout.rootfs_tmp(&digest);
            let unpacked = unpack_into(&layout, &image, &manifest, &tmp);
            let result = unpacked.and_then(|()| {
                let rootfs = layout.rootfs(&digest);
                match std::fs::rename(&tmp, &rootfs) {
                    Ok(()) => Ok(()),
                    // Another pull of the same image (by another reference) won the race.
                    Err(_) if rootfs.is_dir() => Ok(()),
                    Err(e) => Err(ImageError::io("cannot store root filesystem", &rootfs, e)),
                }
            });
            if tmp.exists() {
                store::remove_tree(&tmp)?;
            }
            result
        })
        .await
        .expect("unpacking does not panic")
    }
}

/// Whether `image`'s registry is reached over plain http: loopback ones always (like
/// Docker's default insecure registries), others when listed.
fn is_insecure(image: &ImageRef, insecure_registries: &[String]) -> bool {
    image.is_loopback() || insecure_registries.contains(&image.registry)
}

fn parse_reference(reference: &str) -> Result<ImageRef, ImageError> {
    ImageRef::parse(reference).map_err(|reason| ImageError::InvalidReference {
        reference: reference.into(),
        reason: reason.to_string(),
    })
}

fn unpack_into(
    layout: &Layout,
    image: &ImageRef,
    manifest: &Manifest,
    dir: &Path,
) -> Result<(), ImageError> {
    std::fs::create_dir(dir)
        .map_err(|e| ImageError::io("cannot create root filesystem", dir, e))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| ImageError::io("cannot set mode of", dir, e))?;
    for (layer, compression) in &manifest.layers {
        let path = layout.blob(&layer.digest);
        let file = std::fs::File::open(&path)
            .map_err(|e| ImageError::io("cannot read layer", &path, e))?;
        let reader = std::io::BufReader::with_capacity(256 << 10, file);
        unpack::apply_layer(dir, reader, *compression).map_err(|e| match e {
            unpack::ApplyError::Corrupt(detail) => ImageError::CorruptLayer {
                image: image.to_string(),
                layer: layer.digest.clone(),
                detail,
            },
            unpack::ApplyError::Io { path, error } => {
                ImageError::io("cannot unpack layer into", &path, error)
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_for_loopback_and_listed_registries() {
        let listed = ["registry.lan:5000".to_owned(), "10.0.0.7".to_owned()];
        let cases = [
            ("127.0.0.1:5000/x", true),
            ("localhost/x", true),
            ("[::1]:5000/x", true),
            ("registry.lan:5000/x", true),
            ("registry.lan/x", false),
            ("10.0.0.7/x", true),
            ("10.0.0.7:5000/x", false),
            ("busybox", false),
            ("ghcr.io/org/x", false),
        ];
        for (reference, want) in cases {
            let image = ImageRef::parse(reference).unwrap();
            assert_eq!(is_insecure(&image, &listed), want, "{reference}");
        }
    }
}
