//! The container runtime boundary: what the agent asks of a runtime, and what it learns.
//! `RuncRuntime` drives real containers; `FakeRuntime` plays them in memory for simulations.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

/// Everything needed to create and start one container. The root filesystem and the network
/// namespace are made by the image and network modules; the runtime only uses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The container's id: unique on its node; letters, digits, `_`, `+`, `-` and `.`.
    pub id: String,
    /// The root filesystem, already unpacked or mounted.
    pub rootfs: PathBuf,
    /// The command and its arguments; the first is looked up in `PATH` inside the container.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs; a default `PATH` is added when absent, as Docker does.
    pub env: Vec<String>,
    /// The working directory inside the container.
    pub cwd: String,
    pub user: User,
    pub hostname: String,
    /// A network namespace to join (`/var/run/netns/NAME`); `None` gives a new, empty one
    /// (loopback only).
    pub netns: Option<PathBuf>,
    /// Host files bound into the container, such as /etc/hosts, /etc/resolv.conf,
    /// /etc/hostname.
    pub files: Vec<FileMount>,
    /// The service's volume, bind and tmpfs mounts, made after `files`, by target.
    pub mounts: Vec<DataMount>,
    /// Capabilities, kernel parameters, process limits, a read-only root.
    pub options: ProcessOptions,
    pub resources: Resources,
    pub logs: LogConfig,
}

/// The numeric identity the container's process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// A host file bound at `destination` inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What the service changed of Docker's defaults for the container's process; the default
/// value changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessOptions {
    /// Added to Docker's default capabilities (`CAP_NAME`, or `ALL`).
    pub capability_add: Vec<String>,
    /// Taken from them (`CAP_NAME`, or `ALL`: none but the added ones).
    pub capability_drop: Vec<String>,
    /// Kernel parameters of the container's namespaces.
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Process limits by name (`nofile`, `nproc`, …), over the default open-file limit.
    pub ulimits: std::collections::BTreeMap<String, swarm_api::spec::Ulimit>,
    /// The root filesystem is read-only.
    pub read_only_rootfs: bool,
    /// swarm-init on the host (see `init`), to run as PID 1 before the command.
    pub init: Option<PathBuf>,
    /// The command runs on a terminal that swarm-init (then always there) holds.
    pub tty: bool,
    /// The command's stdin is a pipe swarm-init (then always there) keeps open.
    pub stdin_open: bool,
    /// The processes' out-of-memory score adjustment (-1000..1000). Always set, 0 by
    /// default as Docker sets it: a container does not inherit the daemon's own.
    pub oom_score_adj: i32,
}

/// A mount the service asked for, its host side ready (see `crate::volume`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataMount {
    /// A host directory (a bind source, or a volume's data) at `destination`.
    Bind {
        source: PathBuf,
        destination: String,
        read_only: bool,
        propagation: swarm_api::spec::Propagation,
    },
    /// A new, empty tmpfs of the container's own.
    Tmpfs {
        destination: String,
        read_only: bool,
        size_bytes: Option<u64>,
        mode: u32,
        /// Mounted without `noexec`.
        exec: bool,
    },
}

/// Resource limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// CPU time in billionths of a CPU (Docker's NanoCPUs): 1.5 CPUs is 1_500_000_000.
    pub nano_cpus: Option<u64>,
    pub pids: Option<u64>,
}

/// Where the container's stdout and stderr go, and how much of them is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub stdout: PathBuf,
    pub stderr: PathBuf,
    /// A log file is rotated once it grows beyond this size.
    pub max_bytes: u64,
    /// Files kept per stream, the live one included (Docker's `max-file`); at least 1.
    pub max_files: u32,
}

/// A container's lifecycle status, as runc reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

/// What a runtime knows of an existing container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub status: Status,
    /// The host pid of the container's init, while it has one.
    pub pid: Option<i32>,
}

/// How a container's init ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// The runtime saw the process end but could not read its status: it was adopted after
    /// a daemon restart, so its status went to the process that was its parent then.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    pub exit: Exit,
    /// The kernel killed a process of the container for lack of memory.
    pub oom_killed: bool,
}

impl ExitStatus {
    /// The exit code as Docker reports it: 128 + the signal for a signalled process.
    pub fn code(&self) -> Option<i32> {
        match self.exit {
            Exit::Code(code) => Some(code),
            Exit::Signal(signal) => Some(128 + signal),
            Exit::Unknown => None,
        }
    }
}

/// A command to run inside a running container, such as a healthcheck.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub args: Vec<String>,
    /// After this, the command is killed and the result says it timed out.
    pub timeout: Duration,
    /// Output kept (stdout and stderr together); the rest is read and dropped.
    pub max_output: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// `None` when the command timed out (and was killed).
    pub exit_code: Option<i32>,
    /// Stdout and stderr interleaved, at most `max_output` bytes.
    pub output: Vec<u8>,
    /// More output was produced than was kept.
    pub truncated: bool,
}

/// The container runtime, as the agent uses it. Implementations are interchangeable at run
/// time (`Arc<dyn Runtime>`).
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Creates the container and starts its process. On an error nothing is left behind.
    async fn start(&self, config: &ContainerConfig) -> Result<(), RuntimeError>;

    async fn state(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;

    /// Resolves when the container's init has exited (at once if it already has).
    async fn wait(&self, id: &str) -> Result<ExitStatus, RuntimeError>;

    /// Sends `signal` to the container's init.
    async fn kill(&self, id: &str, signal: i32) -> Result<(), RuntimeError>;

    /// Sends `signal`, then SIGKILL when the container is still running after `grace`.
    /// Bounded: fails if the container survives SIGKILL for several seconds.
    async fn stop(
        &self,
        id: &str,
        signal: i32,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError>;

    /// Kills the container if it runs and removes everything the runtime made for it
    /// (runtime state, cgroup, bundle). The log files stay. Deleting a container that does
    /// not exist succeeds.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;

    async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecOutput, RuntimeError>;

    /// The containers of this node, to adopt after a daemon restart.
    async fn list(&self) -> Result<Vec<ContainerInfo>, RuntimeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container id {id:?} is invalid: use 1 to 128 letters, digits, '_', '+', '-' or '.'")]
    InvalidId { id: String },
    #[error("container {id} already exists on this node: delete it first")]
    AlreadyExists { id: String },
    #[error("container {id} does not exist on this node")]
    NotFound { id: String },
    #[error("container {id} is not running")]
    NotRunning { id: String },
    #[error("runc {command} of container {id} failed: {stderr}")]
    Runc {
        command: &'static str,
        id: String,
        stderr: String,
    },
    #[error("runc {command} of container {id} printed what is not understood ({detail})")]
    RuncOutput {
        command: &'static str,
        id: String,
        detail: String,
    },
    #[error("could not run {program} for container {id}: {source}; is runc installed?")]
    Spawn {
        program: PathBuf,
        id: String,
        source: std::io::Error,
    },
    #[error("{what} for container {id} failed at {path}: {source}")]
    Io {
        what: &'static str,
        id: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("container {id} is still running {after:?} after SIGKILL: look for a stuck process")]
    StopTimeout { id: String, after: Duration },
    #[error("the configuration of container {id} cannot be built: {detail}")]
    Config { id: String, detail: String },
    #[error("listing the containers in {state_dir} failed: {detail}")]
    List { state_dir: PathBuf, detail: String },
    #[error("cannot remove the cgroups of node {node}: {source}; delete its containers first")]
    NodeCgroup {
        node: String,
        source: std::io::Error,
    },
    #[error("the runtime cannot start: {detail}")]
    Setup { detail: String },
    #[error("cannot install swarm-init at {path}: {source}")]
    InitInstall {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The runtime's program is not installed: `runc not found in PATH`.
    #[error("{program} not found{}", if *.searched_path { " in PATH" } else { "" })]
    ProgramNotFound {
        program: PathBuf,
        searched_path: bool,
    },
    #[error("{detail} (container {id})")]
    Scripted { id: String, detail: String },
}

/// Whether runc accepts `id` as a container id (its rule: `^[\w+-\.]+$`), kept short so
/// that paths built from it stay well under the limits.
pub fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_runc_rule() {
        let cases = [
            ("web.1.abc", true),
            ("a_b+c-d", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("a b", false),
            ("é", false),
        ];
        for (id, valid) in cases {
            assert_eq!(valid_id(id), valid, "{id:?}");
        }
        assert!(valid_id(&"x".repeat(128)));
        assert!(!valid_id(&"x".repeat(129)));
    }

    #[test]
    fn exit_codes_as_docker_reports_them() {
        let cases = [
            (Exit::Code(3), Some(3)),
            (Exit::Signal(9), Some(137)),
            (Exit::Unknown, None),
        ];
        for (exit, code) in cases {
            let status = ExitStatus {
                exit,
                oom_killed: false,
            };
            assert_eq!(status.code(), code, "{exit:?}");
        }
    }
}
