//! Manifests and indexes (OCI and Docker schema 2), read as far as pulling needs, and the
//! choice of this machine's variant in an index. Pure.

use serde::Deserialize;
use swarm_api::image::parse_digest;

use super::unpack::Compression;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// What a pull accepts from the registry, index types included.
pub const ACCEPTED: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

const CONFIG_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];

/// A blob as a manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An image manifest: one config and the layers, lowest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<(Descriptor, Compression)>,
}

/// What a manifest digest led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    Image(Manifest),
    /// An index: the digest of the manifest for this machine.
    Index {
        manifest: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

/// Why a manifest cannot be pulled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestError {
    Invalid(String),
    UnsupportedMediaType { what: String, media_type: String },
    NoMatchingPlatform { platform: String, available: String },
}

/// Reads a manifest or index blob; for an index, picks the entry for `os`/`architecture`
/// (OCI names: `linux`, `amd64`). Every digest is checked, since digests become paths.
pub fn parse(blob: &[u8], os: &str, architecture: &str) -> Result<Fetched, ManifestError> {
    let raw: RawManifest =
        serde_json::from_slice(blob).map_err(|e| ManifestError::Invalid(e.to_string()))?;
    let media_type = raw.media_type.as_deref().unwrap_or_default();
    if let Some(entries) = raw.manifests {
        if !matches!(media_type, "" | OCI_INDEX | DOCKER_MANIFEST_LIST) {
            return Err(ManifestError::UnsupportedMediaType {
                what: "index".into(),
                media_type: media_type.into(),
            });
        }
        let chosen = entries.iter().find(|entry| {
            entry
                .platform
                .as_ref()
                .is_some_and(|p| p.os == os && p.architecture == architecture)
        });
        return match chosen {
            Some(entry) => Ok(Fetched::Index {
                manifest: parse_digest(&entry.digest)
                    .map_err(|e| ManifestError::Invalid(e.to_string()))?,
            }),
            None => Err(ManifestError::NoMatchingPlatform {
                platform: format!("{os}/{architecture}"),
                available: entries
                    .iter()
                    .filter_map(|e| e.platform.as_ref())
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        };
    }
    if !matches!(media_type, "" | OCI_MANIFEST | DOCKER_MANIFEST) {
        return Err(ManifestError::UnsupportedMediaType {
            what: "manifest".into(),
            media_type: media_type.into(),
        });
    }
    let config = raw
        .config
        .ok_or_else(|| ManifestError::Invalid("it has no config".into()))?;
    check_descriptor(&config)?;
    if !CONFIG_MEDIA_TYPES.contains(&config.media_type.as_str()) {
        return Err(ManifestError::UnsupportedMediaType {
            what: format!("config {}", config.digest),
            media_type: config.media_type,
        });
    }
    let layers = raw
        .layers
        .unwrap_or_default()
        .into_iter()
        .map(|layer| {
            check_descriptor(&layer)?;
            match Compression::of_media_type(&layer.media_type) {
                Some(compression) => Ok((layer, compression)),
                None => Err(ManifestError::UnsupportedMediaType {
                    what: format!("layer {}", layer.digest),
                    media_type: layer.media_type,
                }),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Fetched::Image(Manifest { config, layers }))
}

fn check_descriptor(descriptor: &Descriptor) -> Result<(), ManifestError> {
    parse_digest(&descriptor.digest)
        .map(drop)
        .map_err(|e| ManifestError::Invalid(e.to_string()))
}

/// This machine as an index names platforms: `GOARCH` spellings of Rust's architectures.
pub fn this_platform() -> (&'static str, &'static str) {
    (
        std::env::consts::OS,
        oci_architecture(std::env::consts::ARCH),
    )
}

fn oci_architecture(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";

    fn manifest(
        media_type: &str,
        config_type: &str,
        layer_type: &str,
        layer_digest: &str,
    ) -> Vec<u8> {
        format!(
            r#"{{"schemaVersion": 2, "mediaType": "{media_type}",
                "config": {{"mediaType": "{config_type}", "digest": "{A}", "size": 10}},
                "layers": [{{"mediaType": "{layer_type}", "digest": "{layer_digest}", "size": 20}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn manifests_parse_or_say_why_not() {
        let oci_config = "application/vnd.oci.image.config.v1+json";
        let gzip = "application/vnd.oci.image.layer.v1.tar+gzip";
        let ok = parse(
            &manifest(OCI_MANIFEST, oci_config, gzip, B),
            "linux",
            "amd64",
        )
        .unwrap();
        assert_eq!(
            ok,
            Fetched::Image(Manifest {
                config: Descriptor {
                    media_type: oci_config.into(),
                    digest: A.into(),
                    size: 10
                },
                layers: vec![(
                    Descriptor {
                        media_type: gzip.into(),
                        digest: B.into(),
                        size: 20
                    },
                    Compression::Gzip
                )],
            })
        );
        let docker = manifest(
            DOCKER_MANIFEST,
            "application/vnd.docker.container.image.v1+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            B,
        );
        assert!(matches!(
            parse(&docker, "linux", "amd64"),
            Ok(Fetched::Image(_))
        ));

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("not json", b"<html>".to_vec(), "expected value"),
            (
                "bzip2 layer",
                manifest(
                    OCI_MANIFEST,
                    oci_config,
                    "application/vnd.oci.image.layer.v1.tar+bzip2",
                    B,
                ),
                "layer sha256:bbbb",
            ),
            (
                "wasm config",
                manifest(OCI_MANIFEST, "application/vnd.wasm.config.v1+json", gzip, B),
                "config sha256:aaaa",
            ),
            (
                "path in digest",
                manifest(OCI_MANIFEST, oci_config, gzip, "sha256:../../etc"),
                "64 lower-case hex",
            ),
            (
                "artifact",
                manifest(
                    "application/vnd.oci.artifact.manifest.v1+json",
                    oci_config,
                    gzip,
                    B,
                ),
                "manifest",
            ),
            (
                "no config",
                br#"{"schemaVersion": 2, "layers": []}"#.to_vec(),
                "no config",
            ),
        ];
        for (name, blob, want) in cases {
            let err = parse(&blob, "linux", "amd64").expect_err(name);
            let text = format!("{err:?}");
            assert!(text.contains(want), "{name}: {text}");
        }
    }

    #[test]
    fn an_index_picks_this_platform() {
        let index = format!(
            r#"{{"schemaVersion": 2, "mediaType": "{OCI_INDEX}", "manifests": [
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{A}", "size": 1, "platform": {{"os": "linux", "architecture": "arm64", "variant": "v8"}}}},
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{B}", "size": 1, "platform": {{"os": "linux", "architecture": "amd64"}}}},
                {{"mediaType": "{OCI_MANIFEST}", "digest": "{C}", "size": 1, "platform": {{"os": "windows", "architecture": "amd64"}}}}
            ]}}"#
        );
        let cases = [
            ("linux", "amd64", Ok(B)),
            ("linux", "arm64", Ok(A)),
            ("windows", "amd64", Ok(C)),
            (
                "linux",
                "s390x",
                Err("linux/arm64, linux/amd64, windows/amd64"),
            ),
        ];
        for (os, arch, want) in cases {
            let got = parse(index.as_bytes(), os, arch);
            match (got, want) {
                (Ok(Fetched::Index { manifest }), Ok(digest)) => assert_eq!(manifest, digest),
                (Err(ManifestError::NoMatchingPlatform { available, .. }), Err(listed)) => {
                    assert_eq!(available, listed)
                }
                (got, want) => panic!("{os}/{arch}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn rust_architectures_map_to_oci_names() {
        let cases = [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("x86", "386"),
            ("s390x", "s390x"),
            ("riscv64", "riscv64"),
        ];
        for (rust, oci) in cases {
            assert_eq!(oci_architecture(rust), oci, "{rust}");
        }
    }
}
