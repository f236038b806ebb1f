//! Image references, one grammar for the whole cluster: the planner checks a stack's
//! `image` with it, the CLI finds a reference's registry with it, and a node pulls what it
//! resolves to, so a file the planner accepts always parses on the node.
//!
//! `[registry/]repository[:tag][@digest]`, read and normalised as Docker reads it:
//! `busybox` is `docker.io/library/busybox:latest`, `index.docker.io` is `docker.io`.
//! Pure: no IO.

use std::fmt;
use std::net::Ipv4Addr;

/// The registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// Docker Hub's historical name, normalised to [`DEFAULT_REGISTRY`] as Docker does.
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const DEFAULT_TAG: &str = "latest";
/// Docker's bound on the length of a repository name (registry included).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// Why a reference does not parse. The messages complete "invalid image reference R: …".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    #[error("the reference is empty")]
    Empty,
    #[error("it contains {0:?} (whitespace and control characters are not allowed)")]
    ForbiddenCharacter(char),
    #[error("the name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("repository name {0:?} is 64 hexadecimal digits, which Docker reads as an image id")]
    HexName(String),
    #[error("invalid tag: the tag after ':' is empty")]
    EmptyTag,
    #[error(
        "invalid tag {0:?}: a tag holds only letters, digits, '_', '.' and '-' and must not start with '.' or '-'"
    )]
    BadTag(String),
    #[error("invalid tag {0:?}: it is longer than {MAX_TAG_LEN} characters")]
    TagTooLong(String),
    #[error("digest {0:?} is not ALGORITHM:HEX")]
    DigestForm(String),
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    DigestAlgorithm(String),
    #[error("digest {0:?} is not sha256 followed by 64 lower-case hex digits")]
    DigestHex(String),
    #[error("registry host {0:?} is not a valid host name or address")]
    RegistryHost(String),
    #[error("registry port in {0:?} is not a number from 1 to 65535")]
    RegistryPort(String),
    #[error("repository name component {0:?} must be lower-case")]
    Uppercase(String),
    #[error("invalid path component: the repository name has an empty component (a '/' too many)")]
    EmptyComponent,
    #[error(
        "invalid path component {0:?}: it may hold only lower-case letters and digits separated by '.', '_', '__' or '-'"
    )]
    BadComponent(String),
}

/// A fully qualified image reference: registry, repository, and a tag, a digest or both
/// (a digest, when given, is what is pulled; the tag is kept for display).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `docker.io`, `127.0.0.1:5000`, `[::1]:5000`, `localhost`.
    pub registry: String,
    /// e.g. `library/busybox`, `swarm/hello`.
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 lower-case hex>`.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `reference` the way `docker pull` reads it.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageRefError> {
        if reference.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if let Some(bad) = reference
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ImageRefError::ForbiddenCharacter(bad));
        }
        if is_hex_id(reference) {
            return Err(ImageRefError::HexName(reference.to_owned()));
        }
        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => (name, Some(parse_digest(digest)?)),
            None => (reference, None),
        };
        // A tag is the part after the last ':' that follows the last '/', so the port of
        // `host:5000/name` is not taken for one.
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(colon) => {
                let colon = last_slash + colon;
                (&name[..colon], Some(parse_tag(&name[colon + 1..])?))
            }
            None => (name, None),
        };
        if name.len() > MAX_NAME_LEN {
            return Err(ImageRefError::NameTooLong);
        }
        let (registry, repository) = match name.split_once('/') {
            // Like Docker: the first component names a registry when it looks like a host.
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (parse_registry(first)?, rest.to_owned())
            }
            Some(_) => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
            None => (DEFAULT_REGISTRY.to_owned(), format!("library/{name}")),
        };
        let repository = match (registry.as_str(), repository.split_once('/')) {
            (DEFAULT_REGISTRY, None) => format!("library/{repository}"),
            _ => repository,
        };
        for component in repository.split('/') {
            check_path_component(component)?;
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_owned()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host part of the registry, without the port (`[::1]` keeps its brackets).
    pub fn registry_host(&self) -> &str {
        registry_host(&self.registry)
    }

    /// Whether the registry is on this machine (127.0.0.0/8, `localhost`, `[::1]`): those
    /// are reached over plain http, like Docker's default insecure registries.
    pub fn is_loopback(&self) -> bool {
        let host = self.registry_host();
        host == "localhost"
            || host == "[::1]"
            || host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Checks a `sha256:<hex>` digest (the only algorithm images use in practice) and returns
/// it as given.
pub fn parse_digest(digest: &str) -> Result<String, ImageRefError> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(ImageRefError::DigestForm(digest.to_owned()));
    };
    if algorithm != "sha256" {
        return Err(ImageRefError::DigestAlgorithm(algorithm.to_owned()));
    }
    if !is_hex_id(hex) {
        return Err(ImageRefError::DigestHex(digest.to_owned()));
    }
    Ok(digest.to_owned())
}

/// 64 lower-case hex digits: a sha256 digest's hex, or what Docker takes for an image id.
fn is_hex_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `host[:port]` → `host`.
fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split(':').next().unwrap_or(registry)
}

fn parse_tag(tag: &str) -> Result<String, ImageRefError> {
    let valid_first = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = |c: char| valid_first(c) || c == '.' || c == '-';
    match tag.chars().next() {
        None => Err(ImageRefError::EmptyTag),
        Some(first) if !valid_first(first) || !tag.chars().all(valid) => {
            Err(ImageRefError::BadTag(tag.to_owned()))
        }
        Some(_) if tag.len() > MAX_TAG_LEN => Err(ImageRefError::TagTooLong(tag.to_owned())),
        Some(_) => Ok(tag.to_owned()),
    }
}

fn parse_registry(registry: &str) -> Result<String, ImageRefError> {
    let host = registry_host(registry);
    let port = &registry[host.len()..];
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner.strip_suffix(']').is_some_and(|ip| {
            !ip.is_empty() && ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':')
        })
    } else {
        !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
    };
    if !host_ok {
        return Err(ImageRefError::RegistryHost(host.to_owned()));
    }
    match port.strip_prefix(':') {
        None if port.is_empty() && host == LEGACY_DEFAULT_REGISTRY => {
            Ok(DEFAULT_REGISTRY.to_owned())
        }
        None if port.is_empty() => Ok(registry.to_owned()),
        Some(digits) if digits.parse::<u16>().is_ok_and(|p| p > 0) => Ok(registry.to_owned()),
        _ => Err(ImageRefError::RegistryPort(registry.to_owned())),
    }
}

/// A path component of a repository: lower-case letters and digits, separated by one '.',
/// one or two '_', or any number of '-'.
fn check_path_component(component: &str) -> Result<(), ImageRefError> {
    if component.is_empty() {
        return Err(ImageRefError::EmptyComponent);
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(ImageRefError::Uppercase(component.to_owned()));
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let allowed = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if start == 0 || i == bytes.len() || !allowed {
            return Err(ImageRefError::BadComponent(component.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// The agent's table and the planner's accepted references, each with what it
    /// resolves to.
    #[test]
    fn references_resolve_like_docker() {
        let d = DIGEST;
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/prom/x:1", "docker.io/prom/x:1"),
            ("prom/prometheus:v2.0", "docker.io/prom/prometheus:v2.0"),
            (
                "ghcr.io/org/team/app:1.0-rc_1",
                "ghcr.io/org/team/app:1.0-rc_1",
            ),
            (
                "127.0.0.1:5000/swarm/hello:1",
                "127.0.0.1:5000/swarm/hello:1",
            ),
            ("127.0.0.1:5000/hello", "127.0.0.1:5000/hello:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/a/b:2", "localhost:5000/a/b:2"),
            ("[::1]:5000/x:3", "[::1]:5000/x:3"),
            (
                "registry.example.com/a.b/c__d/e-f--g:t",
                "registry.example.com/a.b/c__d/e-f--g:t",
            ),
            // The planner's table.
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.27-alpine", "docker.io/library/nginx:1.27-alpine"),
            ("library/nginx:latest", "docker.io/library/nginx:latest"),
            ("127.0.0.1:5000/swarm/web:1", "127.0.0.1:5000/swarm/web:1"),
            ("localhost/app", "localhost/app:latest"),
            (
                "dockersamples/examplevotingapp_vote:before",
                "docker.io/dockersamples/examplevotingapp_vote:before",
            ),
            // Tags and hosts keep their case; only repositories are lower-case.
            ("busybox:Latest", "docker.io/library/busybox:Latest"),
            ("Registry.Example.com/x", "Registry.Example.com/x:latest"),
        ];
        for (input, want) in cases {
            let got = ImageRef::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), *want, "{input}");
        }
        let by_digest = ImageRef::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(by_digest.tag, None);
        assert_eq!(by_digest.digest.as_deref(), Some(d));
        assert_eq!(
            by_digest.to_string(),
            format!("docker.io/library/busybox@{d}")
        );
        let both = ImageRef::parse(&format!("127.0.0.1:5000/swarm/hello:1@{d}")).unwrap();
        assert_eq!(
            (both.registry.as_str(), both.repository.as_str()),
            ("127.0.0.1:5000", "swarm/hello")
        );
        assert_eq!(
            (both.tag.as_deref(), both.digest.as_deref()),
            (Some("1"), Some(d))
        );
        let hub = ImageRef::parse(&format!("registry.example.com/team/app@{d}")).unwrap();
        assert_eq!(
            hub.to_string(),
            format!("registry.example.com/team/app@{d}")
        );
    }

    /// Both old tables' refusals, and (last) references on which the planner's light check
    /// and the node's parser disagreed: the planner accepted them, the node refused them
    /// (`a..b/x`, `x_`, `host:/x`, a name over 255 characters are in the tables above; the
    /// other way round, `[::1]:5000/x`, which the planner refused, is in the accepted table).
    #[test]
    fn bad_references_say_why() {
        let upper_digest = format!("x@sha256:{}", "A".repeat(64));
        let hex_name = "0123456789abcdef".repeat(4);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("busy box", "contains ' '"),
            ("nginx latest", "whitespace"),
            ("Busybox", "must be lower-case"),
            ("Nginx", "lower-case"),
            ("busybox:", "tag after ':' is empty"),
            ("nginx:", "invalid tag"),
            ("busybox:-x", "must not start with '.' or '-'"),
            ("busybox:a/b", "port"),
            ("a//b", "empty component"),
            ("a//b", "invalid path component"),
            ("busybox@sha256:abc", "64 lower-case hex"),
            ("busybox@md5:0123", "not supported (only sha256)"),
            ("busybox@", "not ALGORITHM:HEX"),
            ("host:99999/x", "port"),
            ("host:/x", "port"),
            ("-bad.example.com/x", "not a valid host"),
            ("a..b/x", "not a valid host"),
            ("_x", "lower-case letters and digits"),
            ("x_", "lower-case letters and digits"),
            ("x___y", "lower-case letters and digits"),
            ("x.-y", "lower-case letters and digits"),
            ("nul\0x", "control characters"),
            ("h_st:5000/x", "not a valid host"),
            // Where the planner's old check accepted what the node refused.
            (&upper_digest, "64 lower-case hex"),
            ("web:a/b", "port"),
            ("host:0/x", "port"),
            ("app.", "lower-case letters and digits"),
            ("team/app-", "lower-case letters and digits"),
            // Docker's rule, which neither had: a bare 64-hex name is an image id.
            (&hex_name, "image id"),
        ];
        for (input, want) in cases {
            let err = ImageRef::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
        let long = format!("x:{}", "a".repeat(129));
        assert!(
            ImageRef::parse(&long)
                .unwrap_err()
                .to_string()
                .contains("longer than 128")
        );
        let long_name = "a".repeat(256);
        assert!(
            ImageRef::parse(&long_name)
                .unwrap_err()
                .to_string()
                .contains("longer than 255")
        );
    }

    #[test]
    fn loopback_registries_are_recognised() {
        let cases = [
            ("127.0.0.1:5000/x", true),
            ("127.8.9.10/x", true),
            ("localhost/x", true),
            ("localhost:5000/x", true),
            ("[::1]:5000/x", true),
            ("[::2]:5000/x", false),
            ("10.0.0.1:5000/x", false),
            ("busybox", false),
            ("localhost.example.com/x", false),
        ];
        for (input, want) in cases {
            assert_eq!(
                ImageRef::parse(input).unwrap().is_loopback(),
                want,
                "{input}"
            );
        }
    }
}
