//! A real OCI registry (Debian's `docker-registry`) on loopback, one per test, with its
//! storage in a temp dir, and the test images pushed to it by `scripts/test-image`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a registry may take to answer `/v2/` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports are tried when another process takes the free port first.
const START_ATTEMPTS: usize = 3;
/// How long the access log may lag behind the responses it records.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot run {program}: {source} (scripts/lib.sh ensure_runtime_tools installs it)")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("registry scratch dir: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "docker-registry did not answer /v2/ on {addr} within {START_TIMEOUT:?}; its log:\n{log}"
    )]
    NotReady { addr: SocketAddr, log: String },
    #[error("scripts/test-image {addr} failed ({status}):\n{output}")]
    Push {
        addr: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("the registry on {addr} did not log request {marker} within {LOG_TIMEOUT:?}")]
    LogLag { addr: SocketAddr, marker: String },
}

/// One request as the registry's access log recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Request {
    /// Whether this request fetched a blob's content (what a pull that fetches nothing avoids).
    pub fn is_blob_get(&self) -> bool {
        self.method == "GET" && self.path.contains("/blobs/sha256:")
    }
}

/// The user and password of a registry started with `Registry::start_with_basic_auth`.
pub const TEST_USER: &str = "swarm";
pub const TEST_PASSWORD: &str = "swarm-test-password";
/// `TEST_USER:bcrypt(TEST_PASSWORD)` at bcrypt's lowest cost (4), so that checking it on
/// every request stays cheap. Made with Python's `crypt.crypt(password,
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))`.
const TEST_HTPASSWD: &str = "swarm:$2b$04$R5rs6gb8OgCXYVWhxV06meChF4Xt6f6uT1CIbtb8K4IO2lJzgwSP6\n";

/// A running `docker-registry serve` on 127.0.0.1 (or another local address), killed (and its storage removed) on drop.
pub struct Registry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    basic_auth: bool,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits (bounded) until `/v2/` answers.
    pub fn start() -> Result<Registry, RegistryError> {
        Self::start_with(LOOPBACK, false)
    }

    /// Like `start`, on `ip` (a test hosts' gateway, so that the hosts can pull from it;
    /// their daemons need `--insecure-registry` for it).
    pub fn start_on(ip: IpAddr) -> Result<Registry, RegistryError> {
        Self::start_with(ip, false)
    }

    /// Like `start`, but every request needs HTTP basic authentication as `TEST_USER` with
    /// `TEST_PASSWORD` (over plain http: this is loopback).
    pub fn start_with_basic_auth() -> Result<Registry, RegistryError> {
        Self::start_with(LOOPBACK, true)
    }

    fn start_with(ip: IpAddr, basic_auth: bool) -> Result<Registry, RegistryError> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(ip, basic_auth) {
                Ok(registry) => return Ok(registry),
                // Another process may have bound the port between our probe and the registry.
                Err(err @ RegistryError::NotReady { .. }) => last = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn start_once(ip: IpAddr, basic_auth: bool) -> Result<Registry, RegistryError> {
        let addr = free_port(ip)?;
        let dir = tempfile::Builder::new()
            .prefix("swarm-registry-")
            .tempdir()?;
        let config = dir.path().join("config.yml");
        let auth = if basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, TEST_HTPASSWD)?;
            format!(
                "auth:\n  htpasswd:\n    realm: swarm-test\n    path: {}\n",
                htpasswd.display()
            )
        } else {
            String::new()
        };
        // The access log (stdout) records every request: tests count what a pull fetched.
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{auth}",
                dir.path().join("storage").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("access.log"))?)
            .stderr(File::create(dir.path().join("registry.log"))?)
            .spawn()
            .map_err(|source| RegistryError::Spawn {
                program: "docker-registry".into(),
                source,
            })?;
        let mut registry = Registry {
            child,
            addr,
            dir,
            basic_auth,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if registry.child.try_wait()?.is_some() {
                break;
            }
            // 401: up, and asking for the credentials it was started with.
            if http_get_status(addr, "/v2/").is_ok_and(|status| status == 200 || status == 401) {
                return Ok(registry);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let log =
            std::fs::read_to_string(registry.dir.path().join("registry.log")).unwrap_or_default();
        Err(RegistryError::NotReady { addr, log })
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The registry's storage root (the `filesystem` driver's `rootdirectory`).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the content of blob `digest` (`sha256:<hex>`): tests that
    /// tamper with a blob write there.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// `(user, password)` when the registry asks for basic authentication.
    pub fn credentials(&self) -> Option<(&'static str, &'static str)> {
        self.basic_auth.then_some((TEST_USER, TEST_PASSWORD))
    }

    /// Pushes the test images (`scripts/test-image`) to this registry.
    pub fn push_test_images(&self) -> Result<(), RegistryError> {
        push_test_images_as(&self.addr(), self.credentials())
    }

    /// Every request the registry served so far, in the order it logged them. Waits until
    /// the registry has logged a marker request sent now, so the requests of calls that
    /// already returned are all there.
    pub fn requests(&self) -> Result<Vec<Request>, RegistryError> {
        static MARKERS: AtomicU64 = AtomicU64::new(0);
        let marker = format!("/v2/?marker={}", MARKERS.fetch_add(1, Ordering::Relaxed));
        let _ = http_get_status(self.addr, &marker);
        let deadline = Instant::now() + LOG_TIMEOUT;
        loop {
            let log = std::fs::read_to_string(self.dir.path().join("access.log"))?;
            let requests: Vec<Request> = log.lines().filter_map(parse_access_line).collect();
            if let Some(end) = requests.iter().position(|r| r.path == marker) {
                return Ok(requests
                    .into_iter()
                    .take(end)
                    .filter(|r| !r.path.starts_with("/v2/?marker="))
                    .collect());
            }
            if Instant::now() > deadline {
                return Err(RegistryError::LogLag {
                    addr: self.addr,
                    marker,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `scripts/test-image ADDR`: builds the test images (cached) and pushes them to the
/// registry at `addr`.
pub fn push_test_images(addr: &str) -> Result<(), RegistryError> {
    push_test_images_as(addr, None)
}

fn push_test_images_as(addr: &str, credentials: Option<(&str, &str)>) -> Result<(), RegistryError> {
    let script = test_image_script();
    let mut command = Command::new(&script);
    command.env("SWARM_UDP_ECHO", udp_echo_binary());
    if let Some((user, password)) = credentials {
        command.env("REGISTRY_CREDS", format!("{user}:{password}"));
    }
    let output = command
        .arg(addr)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RegistryError::Spawn {
            program: script.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(RegistryError::Push {
            addr: addr.into(),
            status: output.status,
            output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into(),
        });
    }
    Ok(())
}

/// The static UDP echo server (`udp-echo PORT`) the test images carry as `/bin/udp-echo`.
pub fn udp_echo_binary() -> PathBuf {
    PathBuf::from(env!("SWARM_UDP_ECHO"))
}

/// `scripts/test-image` of this workspace.
pub fn test_image_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-image")
}

const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn free_port(ip: IpAddr) -> std::io::Result<SocketAddr> {
    TcpListener::bind((ip, 0))?.local_addr()
}

/// The status code of a plain HTTP/1.0 GET (std only: the testkit stays light).
fn http_get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    // The registry answers 404 for an OCI manifest unless the client says it accepts one.
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/vnd.oci.image.manifest.v1+json\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))
}

/// One line of the combined log format:
/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 200 2 "" "agent"`.
fn parse_access_line(line: &str) -> Option<Request> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut request = request.split_whitespace();
    let method = request.next()?.to_owned();
    let path = request.next()?.to_owned();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(Request {
        method,
        path,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_lines_parse() {
        let cases = [
            (
                r#"127.0.0.1 - - [01/Dec/2026:16:36:44 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1""#,
                Some(("GET", "/v2/", 200)),
            ),
            (
                r#"127.0.0.1 - - [01/Dec/2026:16:36:44 +0000] "HEAD /v2/x/manifests/1 HTTP/1.1" 404 91 "" "oci""#,
                Some(("HEAD", "/v2/x/manifests/1", 404)),
            ),
            ("time=\"2026\" level=info msg=\"response completed\"", None),
            ("", None),
        ];
        for (line, want) in cases {
            let got = parse_access_line(line);
            let got = got
                .as_ref()
                .map(|r| (r.method.as_str(), r.path.as_str(), r.status));
            assert_eq!(got, want, "{line}");
        }
    }

    #[test]
    fn registry_starts_serves_test_images_and_logs_requests() {
        if !crate::require(
            "registry_starts_serves_test_images_and_logs_requests",
            crate::has_program("docker-registry")
                && crate::has_program("umoci")
                && crate::has_program("skopeo"),
            "docker-registry, umoci and skopeo",
        ) {
            return;
        }
        let registry = Registry::start().expect("registry starts");
        registry.push_test_images().expect("test images pushed");
        let addr = registry.addr;
        assert_eq!(
            http_get_status(addr, "/v2/swarm/hello/manifests/1").unwrap(),
            200
        );
        assert_eq!(
            http_get_status(addr, "/v2/swarm/nope/manifests/1").unwrap(),
            404
        );
        let requests = registry.requests().unwrap();
        let last = requests.last().expect("requests logged");
        assert_eq!(
            (last.method.as_str(), last.path.as_str(), last.status),
            ("GET", "/v2/swarm/nope/manifests/1", 404)
        );
        let storage = registry.storage();
        drop(registry);
        assert!(!storage.exists(), "storage removed on drop");
        assert!(
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err(),
            "registry stopped on drop"
        );
    }
}
