//! Image references, resolved like Docker: `busybox` is `docker.io/library/busybox:latest`.
//! Pure: no IO.

use std::fmt;
use std::net::Ipv4Addr;

/// The registry of references that name none.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
/// Docker's bound on the length of a repository name (registry included).
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

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
    /// Parses `reference` the way `docker pull` reads it. The error says what is wrong.
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        if reference.is_empty() {
            return Err("the reference is empty".into());
        }
        if let Some(bad) = reference
            .chars()
            .find(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("it contains {bad:?}"));
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
            return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
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

/// `host[:port]` → `host`.
pub(crate) fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry.find(']').map_or(registry, |end| &registry[..=end]);
    }
    registry.split(':').next().unwrap_or(registry)
}

/// Checks a `sha256:<hex>` digest (the only algorithm images use in practice).
pub(crate) fn parse_digest(digest: &str) -> Result<String, String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} is not ALGORITHM:HEX"));
    };
    if algorithm != "sha256" {
        return Err(format!(
            "digest algorithm {algorithm:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "digest {digest:?} is not sha256 followed by 64 lower-case hex digits"
        ));
    }
    Ok(digest.to_owned())
}

fn parse_tag(tag: &str) -> Result<String, String> {
    let valid_first = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = |c: char| valid_first(c) || c == '.' || c == '-';
    match tag.chars().next() {
        None => Err("the tag after ':' is empty".into()),
        Some(first) if !valid_first(first) || !tag.chars().all(valid) => Err(format!(
            "tag {tag:?} may hold only letters, digits, '_', '.' and '-' and must not start with '.' or '-'"
        )),
        Some(_) if tag.len() > MAX_TAG_LEN => Err(format!(
            "tag {tag:?} is longer than {MAX_TAG_LEN} characters"
        )),
        Some(_) => Ok(tag.to_owned()),
    }
}

fn parse_registry(registry: &str) -> Result<String, String> {
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
        return Err(format!(
            "registry host {host:?} is not a valid host name or address"
        ));
    }
    match port.strip_prefix(':') {
        None if port.is_empty() => Ok(registry.to_owned()),
        Some(digits) if digits.parse::<u16>().is_ok_and(|p| p > 0) => Ok(registry.to_owned()),
        _ => Err(format!(
            "registry port in {registry:?} is not a number from 1 to 65535"
        )),
    }
}

/// A path component of a repository: lower-case letters and digits, separated by one '.',
/// one or two '_', or any number of '-'.
fn check_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("the repository name has an empty component (a '/' too many)".into());
    }
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "repository name component {component:?} must be lower-case"
        ));
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
            return Err(format!(
                "repository name component {component:?} may hold only lower-case letters and digits separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_resolve_like_docker() {
        let d = DIGEST;
        let cases: &[(&str, &str)] = &[
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/library/busybox:1", "docker.io/library/busybox:1"),
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
    }

    #[test]
    fn bad_references_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("busy box", "contains ' '"),
            ("Busybox", "must be lower-case"),
            ("busybox:", "tag after ':' is empty"),
            ("busybox:-x", "must not start with '.' or '-'"),
            ("busybox:a/b", "port"),
            ("a//b", "empty component"),
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
        ];
        for (input, want) in cases {
            let err = ImageRef::parse(input).expect_err(input);
            assert!(err.contains(want), "{input:?}: {err:?} lacks {want:?}");
        }
        let long = format!("x:{}", "a".repeat(129));
        assert!(
            ImageRef::parse(&long)
                .unwrap_err()
                .contains("longer than 128")
        );
        let long_name = "a".repeat(256);
        assert!(
            ImageRef::parse(&long_name)
                .unwrap_err()
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
