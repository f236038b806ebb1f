//! The image module against real components: Debian's docker-registry on loopback with the
//! test images of `scripts/test-image`, real overlay mounts. Needs root, docker-registry,
//! umoci and skopeo; skips loudly without them (fails under CI=true).

use std::collections::HashSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use swarm_agent::image::{Credentials, ImageError, ImageStore, PullOptions, TaskRootfs};
use swarm_testkit::{Registry, Request};

/// The bound on any one pull in these tests.
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

fn prerequisites(test: &str) -> bool {
    swarm_testkit::require(
        test,
        swarm_testkit::is_root()
            && ["docker-registry", "umoci", "skopeo"]
                .iter()
                .all(|p| swarm_testkit::has_program(p)),
        "root, docker-registry, umoci and skopeo",
    )
}

fn registry_with_test_images() -> Registry {
    let registry = Registry::start().expect("registry starts");
    registry.push_test_images().expect("test images pushed");
    registry
}

fn store(dir: &Path) -> ImageStore {
    ImageStore::open(&dir.join("images"), PullOptions::default()).expect("store opens")
}

async fn pull(
    store: &ImageStore,
    reference: &str,
) -> Result<swarm_agent::image::Image, ImageError> {
    tokio::time::timeout(PULL_TIMEOUT, store.pull(reference))
        .await
        .unwrap_or_else(|_| panic!("pull of {reference} took more than {PULL_TIMEOUT:?}"))
}

/// The requests the registry served since `before` was taken, without oci-client's probes of
/// `/v2/` (it asks before each operation whether the registry wants a token).
fn since(registry: &Registry, before: &[Request]) -> Vec<Request> {
    let all = registry.requests().unwrap();
    assert!(all.starts_with(before));
    all[before.len()..]
        .iter()
        .filter(|r| r.path != "/v2/")
        .cloned()
        .collect()
}

fn blob_gets(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .filter(|r| r.is_blob_get())
        .map(|r| r.path.clone())
        .collect()
}

/// Every file name under `dir`, recursively: what a failed pull must not leave behind.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path.clone());
            }
            out.push(path.display().to_string());
        }
    }
    out
}

/// The manifest of a test image as the registry serves it (descriptors of its blobs).
async fn manifest_of(
    registry: &Registry,
    repository: &str,
    tag: &str,
) -> oci_client::manifest::OciImageManifest {
    let reference = Reference::with_tag(registry.addr(), repository.into(), tag.into());
    http_client()
        .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
        .await
        .expect("manifest")
        .0
}

fn http_client() -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

/// Pushes a one-layer image whose layer is `layer` with media type `media_type`.
async fn push_one_layer(registry: &Registry, repository: &str, layer: Vec<u8>, media_type: &str) {
    let reference = Reference::with_tag(registry.addr(), repository.into(), "1".into());
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    http_client()
        .push(
            &reference,
            &[ImageLayer::new(layer, media_type.into(), None)],
            Config::oci_v1(config.to_vec(), None),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("push");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_unpacks_hello_with_its_files_and_config() {
    if !prerequisites("pull_unpacks_hello_with_its_files_and_config") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let reference = format!("{}/swarm/hello:1", registry.addr());
    let image = pull(&store, &reference).await.expect("pull");

    assert_eq!(image.reference.to_string(), reference);
    assert!(image.digest.starts_with("sha256:"));
    assert_eq!(
        image.rootfs,
        dir.path().join("images/rootfs").join(&image.digest[7..])
    );
    let busybox = std::fs::metadata(image.rootfs.join("bin/busybox")).unwrap();
    assert_eq!(
        busybox.len(),
        std::fs::metadata("/bin/busybox").unwrap().len()
    );
    assert_eq!(busybox.permissions().mode() & 0o777, 0o755);
    assert_eq!(
        std::fs::read_link(image.rootfs.join("bin/httpd")).unwrap(),
        Path::new("busybox")
    );
    assert!(
        std::fs::read_to_string(image.rootfs.join("etc/passwd"))
            .unwrap()
            .starts_with("root:x:0:0:")
    );
    assert_eq!(
        std::fs::metadata(image.rootfs.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert_eq!(std::fs::metadata(&image.rootfs).unwrap().uid(), 0);

    let config = &image.config;
    assert_eq!(config.entrypoint[..2], ["/bin/sh", "-c"]);
    assert!(config.entrypoint[2].contains("v1") && config.entrypoint[2].contains("httpd -f -p 80"));
    assert!(config.cmd.is_empty());
    assert_eq!(config.env, ["PATH=/bin"]);
    assert_eq!(config.working_dir.as_deref(), Some("/"));
    assert_eq!(config.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(config.exposed_ports, ["80/tcp"]);
    assert_eq!(config.labels["org.opencontainers.image.version"], "1");
    assert_eq!(config.healthcheck, None);

    let v2 = pull(&store, &format!("{}/swarm/hello:2", registry.addr()))
        .await
        .unwrap();
    assert!(v2.config.entrypoint[2].contains("v2"));
    assert_ne!(v2.digest, image.digest);
    assert_eq!(store.images().unwrap().len(), 2);
    let pinned = format!("{reference}@{}", image.digest);
    let stored = store.stored_image(&pinned).unwrap();
    assert_eq!(stored.reference.to_string(), pinned);
    assert_eq!(
        (&stored.digest, &stored.rootfs, &stored.config),
        (&image.digest, &image.rootfs, &image.config)
    );
    assert!(
        store
            .stored_image(&reference)
            .unwrap_err()
            .to_string()
            .contains("a stored image is found by digest")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_layers_apply_with_their_whiteouts() {
    if !prerequisites("three_layers_apply_with_their_whiteouts") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let image = pull(&store, &format!("{}/swarm/layers:1", registry.addr()))
        .await
        .unwrap();
    let manifest = manifest_of(&registry, "swarm/layers", "1").await;
    assert_eq!(manifest.layers.len(), 3);

    let read = |path: &str| std::fs::read_to_string(image.rootfs.join(path)).ok();
    assert_eq!(read("data/a.txt"), None, "whiteout of a file of layer 2");
    assert!(
        !image.rootfs.join("bin/vi").exists(),
        "whiteout of a file of layer 1"
    );
    assert!(
        !image.rootfs.join("bin/.wh.vi").exists(),
        "no whiteout file left"
    );
    assert!(
        !image.rootfs.join("data/.wh.a.txt").exists(),
        "no whiteout file left"
    );
    assert_eq!(read("data/b.txt").as_deref(), Some("b\n"));
    assert_eq!(read("data/c.txt").as_deref(), Some("c\n"));
    assert_eq!(
        read("etc/layer").as_deref(),
        Some("layer 3\n"),
        "upper layer wins"
    );
    assert!(image.rootfs.join("bin/sh").is_symlink());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_resolves_to_this_platform() {
    if !prerequisites("an_index_resolves_to_this_platform") {
        return;
    }
    let registry = registry_with_test_images();
    let addr = registry.addr();
    // The index's manifests must be in its repository: copy hello:1 and hello:2 there.
    for (from, to) in [("hello:1", "multi:v1"), ("hello:2", "multi:v2")] {
        let status = std::process::Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--dest-tls-verify=false",
            ])
            .arg(format!("docker://{addr}/swarm/{from}"))
            .arg(format!("docker://{addr}/swarm/{to}"))
            .status()
            .unwrap();
        assert!(status.success(), "skopeo copy {from} {to}");
    }
    let client = http_client();
    let digest_of = |tag: &str| {
        let reference = Reference::with_tag(addr.clone(), "swarm/multi".into(), tag.into());
        let client = client.clone();
        async move {
            let (manifest, digest) = client
                .pull_image_manifest(&reference, &RegistryAuth::Anonymous)
                .await
                .unwrap();
            let size = serde_json::to_vec(&manifest).unwrap().len();
            (digest, size)
        }
    };
    let (v1, v1_size) = digest_of("v1").await;
    let (v2, v2_size) = digest_of("v2").await;
    let ours = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let other = if ours == "s390x" { "riscv64" } else { "s390x" };
    let index: oci_client::manifest::OciImageIndex = serde_json::from_value(serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": v2, "size": v2_size,
             "platform": {"os": "linux", "architecture": other}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": v1, "size": v1_size,
             "platform": {"os": "linux", "architecture": ours}},
        ]
    }))
    .unwrap();
    let multi = Reference::with_tag(addr.clone(), "swarm/multi".into(), "1".into());
    client
        .push_manifest_list(&multi, &RegistryAuth::Anonymous, index)
        .await
        .expect("index pushed");
    let index_digest = client
        .fetch_manifest_digest(&multi, &RegistryAuth::Anonymous)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let image = pull(&store, &format!("{addr}/swarm/multi:1"))
        .await
        .unwrap();
    assert_eq!(image.digest, v1, "this platform's manifest, not the index");
    assert!(image.config.entrypoint[2].contains("v1"));

    // Found offline by the index's digest, before and after a garbage collection.
    drop(registry);
    let pinned = format!("{addr}/swarm/multi@{index_digest}");
    assert_eq!(store.stored_image(&pinned).unwrap().digest, v1);
    store
        .collect_garbage(&HashSet::from([v1.clone()]))
        .await
        .unwrap();
    assert_eq!(
        store.stored_image(&pinned).unwrap().digest,
        v1,
        "the index is kept"
    );
    store.collect_garbage(&HashSet::new()).await.unwrap();
    assert!(store.stored_image(&pinned).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_image_is_not_fetched_again() {
    if !prerequisites("a_stored_image_is_not_fetched_again") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let reference = format!("{}/swarm/layers:1", registry.addr());
    let pushed = registry.requests().unwrap();
    let image = pull(&store(dir.path()), &reference).await.unwrap();
    let first = since(&registry, &pushed);
    assert_eq!(blob_gets(&first).len(), 4, "config and 3 layers: {first:?}");

    // A new store on the same directory: nothing is remembered in memory.
    let before = registry.requests().unwrap();
    let again = pull(&store(dir.path()), &reference).await.unwrap();
    assert_eq!(again.digest, image.digest);
    let new = since(&registry, &before);
    let new: Vec<_> = new
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        new,
        [("HEAD", "/v2/swarm/layers/manifests/1")],
        "a tag costs one HEAD"
    );

    // By digest, no network at all: the registry is gone.
    let by_digest = format!("{}/swarm/layers@{}", registry.addr(), image.digest);
    drop(registry);
    let offline = pull(&store(dir.path()), &by_digest)
        .await
        .expect("pull by digest offline");
    assert_eq!(offline.rootfs, image.rootfs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_image_is_unpacked_without_fetching_again() {
    if !prerequisites("a_fetched_image_is_unpacked_without_fetching_again") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let reference = format!("{}/swarm/hello:2", registry.addr());
    let pushed = registry.requests().unwrap();
    let digest = store.fetch(&reference).await.expect("fetch");
    assert_eq!(
        blob_gets(&since(&registry, &pushed)).len(),
        2,
        "config and layer"
    );
    assert!(store.images().unwrap().is_empty(), "fetched, not unpacked");

    let before = registry.requests().unwrap();
    let image = pull(&store, &reference).await.unwrap();
    assert_eq!(image.digest, digest);
    assert!(image.rootfs.join("bin/busybox").is_file());
    assert!(blob_gets(&since(&registry, &before)).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_pulls_share_one() {
    if !prerequisites("ten_concurrent_pulls_share_one") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path()));
    let reference = format!("{}/swarm/layers:1", registry.addr());
    let pushed = registry.requests().unwrap();
    let mut pulls = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (store, reference) = (store.clone(), reference.clone());
        pulls.spawn(async move { pull(&store, &reference).await });
    }
    let mut digests = HashSet::new();
    while let Some(result) = pulls.join_next().await {
        digests.insert(result.unwrap().expect("pull").digest);
    }
    assert_eq!(digests.len(), 1);

    let requests = since(&registry, &pushed);
    let manifests = requests
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(
        manifests, 2,
        "one HEAD for the tag, one GET of the manifest: {requests:?}"
    );
    let blobs = blob_gets(&requests);
    assert_eq!(blobs.len(), 4, "config and 3 layers once each: {blobs:?}");
    assert_eq!(blobs.iter().collect::<HashSet<_>>().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_reported_as_not_found() {
    if !prerequisites("a_missing_image_is_reported_as_not_found") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let addr = registry.addr();
    let cases = [
        (
            format!("{addr}/swarm/nope:1"),
            format!("image {addr}/swarm/nope:1 not found: "),
        ),
        (
            format!("{addr}/swarm/hello:9"),
            format!("image {addr}/swarm/hello:9 not found: manifest unknown"),
        ),
        (
            format!("{addr}/swarm/hello@sha256:{}", "0".repeat(64)),
            format!(
                "image {addr}/swarm/hello@sha256:{} not found: ",
                "0".repeat(64)
            ),
        ),
    ];
    for (reference, want) in cases {
        let err = pull(&store, &reference).await.expect_err(&reference);
        assert!(
            matches!(err, ImageError::NotFound { .. }),
            "{reference}: {err:?}"
        );
        assert!(err.to_string().starts_with(&want), "{reference}: {err}");
    }
    let err = pull(&store, "Hello").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid image reference \"Hello\": repository name component \"Hello\" must be lower-case"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_credentials_are_sent_and_refusals_reported() {
    if !prerequisites("basic_credentials_are_sent_and_refusals_reported") {
        return;
    }
    let registry = Registry::start_with_basic_auth().unwrap();
    registry
        .push_test_images()
        .expect("test images pushed with credentials");
    let (user, password) = registry.credentials().unwrap();
    let addr = registry.addr();
    let reference = format!("{addr}/swarm/hello:1");
    let dir = tempfile::tempdir().unwrap();
    let with = |password: &str| {
        let credentials = Credentials {
            username: user.into(),
            password: password.into(),
        };
        let options = PullOptions {
            credentials: [(addr.clone(), credentials)].into(),
            ..PullOptions::default()
        };
        ImageStore::open(&dir.path().join("images"), options).unwrap()
    };
    let cases = [
        ("anonymous", store(dir.path())),
        ("wrong password", with("not-the-password")),
    ];
    for (name, store) in cases {
        let err = pull(&store, &reference).await.unwrap_err();
        assert!(
            matches!(err, ImageError::Unauthorized { .. }),
            "{name}: {err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("registry {addr} refused access to {reference}: ")),
            "{name}: {err}"
        );
        assert!(
            err.to_string()
                .ends_with(&format!("(check the credentials for {addr}: `swarm login {addr}`, then update the service with --with-registry-auth)")),
            "{name}: {err}"
        );
    }
    let image = pull(&with(password), &reference)
        .await
        .expect("pull with credentials");
    assert!(image.rootfs.join("bin/busybox").is_file());
}

/// Credentials given for one pull (a task's service brings them) are used for it, and a
/// pull without them, even at the same time, is not answered by it. The image pulled by
/// tag is then found by its digest with the registry gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_given_for_a_pull_are_used_for_that_pull_only() {
    if !prerequisites("credentials_given_for_a_pull_are_used_for_that_pull_only") {
        return;
    }
    let registry = Registry::start_with_basic_auth().unwrap();
    registry.push_test_images().unwrap();
    let (user, password) = registry.credentials().unwrap();
    let addr = registry.addr();
    let reference = format!("{addr}/swarm/signals:1");
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let credentials = std::collections::HashMap::from([(
        addr.clone(),
        Credentials {
            username: user.into(),
            password: password.into(),
        },
    )]);
    let (with, without) = tokio::time::timeout(PULL_TIMEOUT, async {
        tokio::join!(
            store.pull_with(&reference, &credentials),
            store.pull(&reference)
        )
    })
    .await
    .expect("bounded pulls");
    let image = with.expect("the pull with credentials");
    assert!(
        matches!(without, Err(ImageError::Unauthorized { .. })),
        "{without:?}"
    );
    assert_eq!(image.config.stop_signal.as_deref(), Some("SIGUSR1"));
    let check = image
        .config
        .healthcheck
        .as_ref()
        .expect("the image's HEALTHCHECK");
    assert_eq!(check.test, ["CMD-SHELL", "test ! -f /tmp/sick"]);
    assert_eq!(check.interval, Some(Duration::from_secs(1)));
    // Stored, a tag still asks the registry (one HEAD): without credentials, refused.
    assert!(matches!(
        pull(&store, &reference).await,
        Err(ImageError::Unauthorized { .. })
    ));

    drop(registry);
    let found = store.stored_by_digest(&reference, &image.digest).unwrap();
    assert_eq!(
        (&found.digest, &found.rootfs, &found.config),
        (&image.digest, &image.rootfs, &image.config)
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_eq!(
        store
            .stored_by_digest(&reference, &missing)
            .unwrap_err()
            .to_string(),
        format!("image {reference}@{missing} is not stored: pull it first")
    );
    assert!(
        store
            .stored_by_digest(&reference, "sha256:../../etc")
            .unwrap_err()
            .to_string()
            .starts_with("invalid image reference")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_is_reported_as_unreachable() {
    if !prerequisites("a_registry_that_is_down_is_reported_as_unreachable") {
        return;
    }
    // A port nothing listens on: a registry started, then stopped.
    let addr = Registry::start().unwrap().addr();
    let dir = tempfile::tempdir().unwrap();
    let err = pull(&store(dir.path()), &format!("{addr}/swarm/hello:1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("registry {addr} is unreachable: connection refused")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_blob_is_refused_and_nothing_is_kept() {
    if !prerequisites("a_tampered_blob_is_refused_and_nothing_is_kept") {
        return;
    }
    let registry = registry_with_test_images();
    let manifest = manifest_of(&registry, "swarm/layers", "1").await;
    // The busybox layer: large enough that the tampered bytes are mid-stream.
    let layer = &manifest.layers[0].digest;
    let data = registry.blob_data(layer);
    let original = std::fs::read(&data).unwrap();
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&data, &tampered).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let reference = format!("{}/swarm/layers:1", registry.addr());
    let err = pull(&store, &reference).await.unwrap_err();
    let ImageError::DigestMismatch {
        blob,
        expected,
        got,
        ..
    } = &err
    else {
        panic!("want a digest mismatch, got {err:?}");
    };
    assert_eq!((blob, expected), (layer, layer));
    assert!(got.starts_with("sha256:") && got != layer, "{got}");
    assert!(
        err.to_string().starts_with(&format!(
            "digest mismatch for {layer} of {reference}: expected {layer}, got sha256:"
        )),
        "{err}"
    );
    let left = files_under(&dir.path().join("images"));
    assert!(
        !left.iter().any(|f| f.contains(&layer[7..])),
        "the bad blob is not kept: {left:?}"
    );
    assert!(
        !left.iter().any(|f| f.contains(".tmp-")),
        "nothing half-written: {left:?}"
    );
    assert!(store.images().unwrap().is_empty());

    // Repaired, the same store pulls it: nothing of the failed pull was trusted.
    std::fs::write(&data, &original).unwrap();
    let image = pull(&store, &reference).await.expect("pull after repair");
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("data/c.txt")).unwrap(),
        "c\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_unsupported_layers_are_refused_and_zstd_is_applied() {
    if !prerequisites("corrupt_and_unsupported_layers_are_refused_and_zstd_is_applied") {
        return;
    }
    let registry = Registry::start().unwrap();
    let addr = registry.addr();
    // A layer whose digest is right but whose content is no gzip: pushed as it is.
    push_one_layer(
        &registry,
        "swarm/corrupt",
        b"this is not gzip".to_vec(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
    .await;
    push_one_layer(
        &registry,
        "swarm/bzip2",
        b"BZh".to_vec(),
        "application/vnd.oci.image.layer.v1.tar+bzip2",
    )
    .await;
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_path("hello.txt").unwrap();
    header.set_size(6);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append(&header, &b"zstd!\n"[..]).unwrap();
    let zstd_layer = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
    push_one_layer(
        &registry,
        "swarm/zstd",
        zstd_layer,
        "application/vnd.oci.image.layer.v1.tar+zstd",
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let corrupt = pull(&store, &format!("{addr}/swarm/corrupt:1"))
        .await
        .unwrap_err();
    let ImageError::CorruptLayer { layer, .. } = &corrupt else {
        panic!("want a corrupt layer, got {corrupt:?}");
    };
    assert!(
        corrupt.to_string().starts_with(&format!(
            "corrupt layer {layer} of {addr}/swarm/corrupt:1: "
        )),
        "{corrupt}"
    );
    let unsupported = pull(&store, &format!("{addr}/swarm/bzip2:1"))
        .await
        .unwrap_err();
    assert!(
        unsupported.to_string().starts_with(
            "unsupported media type application/vnd.oci.image.layer.v1.tar+bzip2 for layer sha256:"
        ),
        "{unsupported}"
    );
    assert!(store.images().unwrap().is_empty());
    assert!(
        !files_under(&dir.path().join("images"))
            .iter()
            .any(|f| f.contains(".tmp-"))
    );

    let image = pull(&store, &format!("{addr}/swarm/zstd:1"))
        .await
        .expect("zstd image");
    assert_eq!(
        std::fs::read_to_string(image.rootfs.join("hello.txt")).unwrap(),
        "zstd!\n"
    );
}

/// Releases a task rootfs even when the test fails half-way.
struct Released(TaskRootfs);

impl Drop for Released {
    fn drop(&mut self) {
        let _ = self.0.release();
    }
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.display().to_string();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_str()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_overlay_keeps_writes_apart_and_unmounts() {
    if !prerequisites("a_task_overlay_keeps_writes_apart_and_unmounts") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let image = pull(&store, &format!("{}/swarm/hello:1", registry.addr()))
        .await
        .unwrap();

    let task_dir = dir.path().join("tasks/t1");
    let rootfs = Released(TaskRootfs::mount(&image.rootfs, &task_dir).expect("mount"));
    let merged = rootfs.0.merged();
    assert!(is_mounted(&merged));
    assert_eq!(
        std::fs::metadata(&merged).unwrap().permissions().mode() & 0o777,
        0o755
    );

    // Reads see the image; writes and deletions land in the upper dir only.
    assert!(merged.join("bin/busybox").is_file());
    std::fs::create_dir(merged.join("www")).unwrap();
    std::fs::write(merged.join("www/index.html"), "t1 v1\n").unwrap();
    std::fs::remove_file(merged.join("bin/vi")).unwrap();
    std::fs::write(merged.join("etc/passwd"), "changed\n").unwrap();
    assert_eq!(
        std::fs::read_to_string(rootfs.0.upper().join("www/index.html")).unwrap(),
        "t1 v1\n"
    );
    let whiteout = std::fs::symlink_metadata(rootfs.0.upper().join("bin/vi")).unwrap();
    assert!(
        whiteout.file_type().is_char_device(),
        "overlay whiteout in the upper dir"
    );
    assert!(!image.rootfs.join("www").exists());
    assert!(image.rootfs.join("bin/vi").is_symlink());
    assert!(
        std::fs::read_to_string(image.rootfs.join("etc/passwd"))
            .unwrap()
            .starts_with("root:")
    );

    // A second task on the same image sees the image, not the first task's writes.
    let other = Released(TaskRootfs::mount(&image.rootfs, &dir.path().join("tasks/t2")).unwrap());
    assert!(!other.0.merged().join("www").exists());
    assert!(other.0.merged().join("bin/vi").exists());

    rootfs.0.release().expect("release");
    assert!(!is_mounted(&merged));
    assert!(!task_dir.exists());
    rootfs.0.release().expect("releasing twice is fine");
    // After a restart the agent knows only the directory.
    let t2 = other.0.dir().to_owned();
    TaskRootfs::at(&t2).release().unwrap();
    assert!(!t2.exists());
    assert!(
        image.rootfs.join("bin/busybox").is_file(),
        "the image survives its tasks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_removes_unused_images_and_keeps_used_ones() {
    if !prerequisites("garbage_collection_removes_unused_images_and_keeps_used_ones") {
        return;
    }
    let registry = registry_with_test_images();
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let addr = registry.addr();
    let hello = pull(&store, &format!("{addr}/swarm/hello:1"))
        .await
        .unwrap();
    let layers = pull(&store, &format!("{addr}/swarm/layers:1"))
        .await
        .unwrap();
    let layers_manifest = manifest_of(&registry, "swarm/layers", "1").await;
    let blobs = dir.path().join("images/blobs/sha256");
    let count = || std::fs::read_dir(&blobs).unwrap().count();
    // hello: manifest, config, busybox layer; layers: manifest, config, 2 more layers.
    assert_eq!(count(), 7);

    let report = store
        .collect_garbage(&HashSet::from([hello.digest.clone()]))
        .await
        .unwrap();
    assert_eq!(report.images, std::slice::from_ref(&layers.digest));
    assert_eq!(report.blobs, 4);
    assert!(report.bytes > 0);
    assert_eq!(store.images().unwrap(), std::slice::from_ref(&hello.digest));
    assert!(!layers.rootfs.exists());
    assert!(
        blobs.join(&layers_manifest.layers[0].digest[7..]).exists(),
        "the shared busybox layer is kept"
    );
    assert!(!blobs.join(&layers_manifest.layers[2].digest[7..]).exists());
    // The kept image still needs no network.
    drop(registry);
    let pinned = format!("{addr}/swarm/hello@{}", hello.digest);
    assert_eq!(store.stored_image(&pinned).unwrap().rootfs, hello.rootfs);
    assert!(hello.rootfs.join("bin/busybox").is_file());

    let report = store.collect_garbage(&HashSet::new()).await.unwrap();
    assert_eq!(report.images, std::slice::from_ref(&hello.digest));
    assert_eq!(count(), 0);
    assert!(
        std::fs::read_dir(dir.path().join("images/rootfs"))
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(
        store.stored_image(&pinned).unwrap_err().to_string(),
        format!("image {pinned} is not stored: pull it first")
    );
}
