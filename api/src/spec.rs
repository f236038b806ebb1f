//! Normalised specs: what the cluster runs, with every default filled in (Docker Swarm's
//! defaults), lists that carry no order sorted, and names fully qualified. Two spellings of
//! the same intent in a stack file give equal specs, so a plan never shows a noise diff.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{ByteSize, GoDuration, NanoCpus};

/// Every kind of spec has a name, unique among the objects of its kind in a cluster.
pub trait Named {
    fn name(&self) -> &str;
}

macro_rules! named {
    ($($ty:ty),*) => {$(
        impl Named for $ty {
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}

named!(ServiceSpec, NetworkSpec, FileObjectSpec);

/// A service: the template of its tasks and how many run where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
// No deny_unknown_fields: serde does not support it beside `flatten`.
pub struct ServiceSpec {
    /// The full name, `<stack>_<service>` for services of a stack.
    pub name: String,
    #[serde(flatten)]
    pub mode: ServiceMode,
    /// Service labels (`deploy.labels`).
    pub labels: BTreeMap<String, String>,
    pub task: TaskSpec,
    pub update: UpdatePolicy,
    pub rollback: UpdatePolicy,
    pub endpoint: EndpointSpec,
    /// Services (full names, of the same stack) whose tasks must run before this one's
    /// are placed, sorted by name (`depends_on`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<Dependency>,
}

/// A service another waits for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub service: String,
    pub condition: DependencyCondition,
}

/// When a dependency is met.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    /// Each of its tasks has started (a task with a healthcheck need not be healthy yet).
    ServiceStarted,
    /// Each of its tasks runs, past its healthcheck when it has one.
    ServiceHealthy,
    /// A job, whose current run completed: every completion done (a replicated job), a
    /// task done on every node (a global job).
    ServiceCompletedSuccessfully,
}

impl ServiceSpec {
    /// The number of replicas of a replicated service; `None` for a global one or a job.
    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::Global | ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
                None
            }
        }
    }

    /// Whether its tasks run to completion (`replicated-job`, `global-job`).
    pub fn is_job(&self) -> bool {
        self.mode.is_job()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// Tasks run to completion until `total_completions` of them have exited 0, at most
    /// `max_concurrent` at once (Docker's `ReplicatedJob`).
    #[serde(rename = "replicated-job")]
    ReplicatedJob {
        max_concurrent: u64,
        total_completions: u64,
    },
    /// One task to completion on every eligible node, once per node (Docker's `GlobalJob`).
    #[serde(rename = "global-job")]
    GlobalJob,
}

impl ServiceMode {
    /// Whether tasks run to completion.
    pub fn is_job(&self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }

    /// The mode with `n` tasks — a replicated job's `n` completions, at the same concurrency
    /// (`service scale`, `--replicas`, as Docker's); `None` for global modes.
    pub fn scaled(self, n: u64) -> Option<ServiceMode> {
        match self {
            ServiceMode::Replicated { .. } => Some(ServiceMode::Replicated { replicas: n }),
            ServiceMode::ReplicatedJob { max_concurrent, .. } => Some(ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions: n,
            }),
            ServiceMode::Global | ServiceMode::GlobalJob => None,
        }
    }

    /// Docker's name of the mode, as `service ls` prints it (`replicated job`).
    pub fn display_name(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated job",
            ServiceMode::GlobalJob => "global job",
        }
    }
}

/// What every task of a service is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    pub resources: Resources,
    pub restart: RestartPolicy,
    pub placement: Placement,
    /// Sorted by network name.
    pub networks: Vec<NetworkAttachment>,
    /// Bumped by `swarm service update --force`: a changed spec, so every task is
    /// replaced, though nothing else changed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub force_update: u64,
    /// The job iteration a job's task runs for (Docker's `JobIteration`): the index of the
    /// service's last change, set by the orchestrator on the tasks it makes, so a changed
    /// job runs again and its earlier tasks are told apart. Always 0 in a service's spec.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub job_iteration: u64,
}

/// A number at its default, 0: left out of the JSON.
fn is_zero<T: Default + PartialEq>(n: &T) -> bool {
    *n == T::default()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: String,
    /// Replaces the image's ENTRYPOINT; absent keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD; absent keeps the image's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// May hold Go-template placeholders such as `{{.Node.Hostname}}`, filled on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Absent: the image's STOPSIGNAL, else SIGTERM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    pub stop_grace_period: GoDuration,
    /// Absent: the image's healthcheck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Sorted by target.
    pub mounts: Vec<Mount>,
    /// Sorted by target.
    pub configs: Vec<FileReference>,
    /// Sorted by target.
    pub secrets: Vec<FileReference>,
    /// Privileges, kernel settings, limits and logging (Compose's `cap_add`, `sysctls`,
    /// `ulimits`, `read_only`, `group_add`, `logging`); absent keys keep Docker's defaults.
    #[serde(default, skip_serializing_if = "RuntimeOptions::is_default")]
    pub runtime: RuntimeOptions,
}

/// Linux capabilities, without their `CAP_` prefix.
pub const CAPABILITIES: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// How a container runs beyond its command, as Docker's `ContainerSpec` and `LogDriver` say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeOptions {
    /// Capabilities added to Docker's default set, as `CAP_NAME`, sorted; `ALL` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_add: Vec<String>,
    /// Capabilities taken from it, as `CAP_NAME`, sorted; `ALL` for all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capability_drop: Vec<String>,
    /// Namespaced kernel parameters (`net.*`, `kernel.shm*`, `kernel.msg*`, `kernel.sem`,
    /// `fs.mqueue.*`), set in the container's namespaces.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Resource limits of the process, by name (`nofile`, `nproc`, `core`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// The root filesystem is mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// Supplementary groups, by name (looked up in the image's /etc/group) or number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Where the container's output goes; absent: `json-file` with swarm's rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<LogDriver>,
    /// Lines added to the task's /etc/hosts, in the order given (Docker's `Hosts`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
    /// The task's resolver settings (Docker's `DNSConfig`).
    #[serde(default, skip_serializing_if = "DnsConfig::is_default")]
    pub dns: DnsConfig,
    /// swarm's minimal init runs as PID 1, reaping zombies and forwarding signals to the
    /// command (Docker's `--init`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// The command runs on a terminal (Docker's `TTY`): swarm's init, PID 1, holds it and
    /// writes what it prints to the task's log, stdout and stderr as one stream.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tty: bool,
    /// The command's stdin stays open, never written (Docker's `OpenStdin`): a read waits
    /// where /dev/null would end it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdin_open: bool,
    /// Added to the kernel's out-of-memory score of the container's processes: -1000 (never
    /// chosen) to 1000 (chosen first); 0 by default, as Docker sets it, so a container does
    /// not inherit the daemon's own (Docker's `OomScoreAdj`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub oom_score_adj: i32,
}

/// One line of /etc/hosts: `address name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtraHost {
    pub name: String,
    pub address: HostAddress,
}

/// The address of an `extra_hosts` line: an IP address, or Docker's `host-gateway`, the
/// node's own address on the task's network (its bridge gateway), known only on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub enum HostAddress {
    Ip(std::net::IpAddr),
    HostGateway,
}

impl HostAddress {
    /// How users write the node's gateway (Docker's spelling).
    pub const HOST_GATEWAY: &'static str = "host-gateway";
}

impl std::str::FromStr for HostAddress {
    type Err = std::net::AddrParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == Self::HOST_GATEWAY {
            return Ok(HostAddress::HostGateway);
        }
        text.parse().map(HostAddress::Ip)
    }
}

impl TryFrom<String> for HostAddress {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse().map_err(|_| {
            format!(
                "{text:?} is neither an IP address nor {:?}",
                Self::HOST_GATEWAY
            )
        })
    }
}

impl From<HostAddress> for String {
    fn from(address: HostAddress) -> String {
        address.to_string()
    }
}

impl fmt::Display for HostAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostAddress::Ip(address) => address.fmt(f),
            HostAddress::HostGateway => f.write_str(Self::HOST_GATEWAY),
        }
    }
}

/// How a task resolves names, each list in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Nameservers: on overlay networks, where the node's DNS server forwards the task's
    /// questions it does not answer; otherwise the task's resolv.conf's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<std::net::IpAddr>,
    /// Search domains of the task's resolv.conf, replacing the node's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Resolver options of the task's resolv.conf (`ndots:2`, `timeout:1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl DnsConfig {
    pub fn is_default(&self) -> bool {
        *self == DnsConfig::default()
    }
}

impl RuntimeOptions {
    pub fn is_default(&self) -> bool {
        *self == RuntimeOptions::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    pub soft: i64,
    pub hard: i64,
}

/// A log driver and its options (Docker's `--log-driver`, `--log-opt`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogDriver {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// `["CMD", …]`, `["CMD-SHELL", "…"]`, or `["NONE"]` to turn the image's healthcheck off.
    pub test: Vec<String>,
    pub interval: GoDuration,
    pub timeout: GoDuration,
    pub retries: u64,
    pub start_period: GoDuration,
    pub start_interval: GoDuration,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: MountKind,
    /// A volume name (qualified by the stack), a host path, or absent (anonymous volume, tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    pub read_only: bool,
    /// How a named volume is made on a node, from the stack's top-level `volumes:` entry
    /// (Docker's `VolumeOptions`); absent when it says nothing more than the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeOptions>,
    /// A volume mount only: do not fill a new, empty volume with the image's content at the
    /// target (Docker's copy-up, on by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_copy: bool,
    /// A bind mount only: how mounts under it propagate; absent: `rprivate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
    /// A tmpfs mount only: its size limit, mode and whether programs may run from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsOptions>,
}

/// Mount propagation of a bind mount, as `mount(8)` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagation {
    Private,
    Rprivate,
    Shared,
    Rshared,
    Slave,
    Rslave,
}

impl Propagation {
    pub const SPELLINGS: &'static str = "private, rprivate, shared, rshared, slave, rslave";

    pub fn as_str(self) -> &'static str {
        match self {
            Propagation::Private => "private",
            Propagation::Rprivate => "rprivate",
            Propagation::Shared => "shared",
            Propagation::Rshared => "rshared",
            Propagation::Slave => "slave",
            Propagation::Rslave => "rslave",
        }
    }
}

impl std::str::FromStr for Propagation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "private" => Propagation::Private,
            "rprivate" => Propagation::Rprivate,
            "shared" => Propagation::Shared,
            "rshared" => Propagation::Rshared,
            "slave" => Propagation::Slave,
            "rslave" => Propagation::Rslave,
            other => {
                return Err(format!(
                    "unknown bind propagation {other:?}: use one of {}",
                    Propagation::SPELLINGS
                ));
            }
        })
    }
}

/// A tmpfs mount's options (Docker's `TmpfsOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TmpfsOptions {
    /// Absent: the kernel's default, half of the memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// File mode of the mount's root (decimal in JSON); absent: 1777, as Docker's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Programs may be run from it; absent: `noexec`, as Docker's (its `exec` option).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
}

/// A named volume's declaration, carried by every mount of it: a changed driver or option
/// changes the services that mount it, as in Docker, where the volume is created on each node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeOptions {
    /// The volume exists outside the stack: it is used as it is, never created.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
    /// The volume driver; absent: the node's default (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Volume => "volume",
            MountKind::Bind => "bind",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// A config or secret made available as a file in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileReference {
    /// The config's or secret's name in the cluster.
    pub source: String,
    /// The path of the file in the container.
    pub target: String,
    pub uid: String,
    pub gid: String,
    /// File mode (decimal in JSON; 292 is 0444).
    pub mode: u32,
    /// The content version the tasks mount (`sha256:<hex>`), pinned for configs and
    /// secrets a stack declares: a changed file changes the service's spec, so its tasks
    /// roll by its update policy, and tasks of the old spec keep the old content. Absent:
    /// the object's content as it is (objects made by `secret|config create`, which never
    /// change content).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl FileReference {
    /// Why the target is not a place in the container the file can go, if it is not: a
    /// `..` component would leave the directory it was written against.
    pub fn target_problem(&self) -> Option<String> {
        self.target.split('/').any(|part| part == "..").then(|| {
            format!(
                "target {:?} has a '..' component: give a path inside the container without '..'",
                self.target
            )
        })
    }
}

/// The targets of `container`'s secrets and configs that another of its mounts (a volume,
/// bind or tmpfs, or a config or secret of the other kind) also targets: a file cannot be
/// mounted over another mount. One message per clash.
pub fn mount_target_clashes(container: &ContainerSpec) -> Vec<String> {
    let mut taken: BTreeMap<&str, &str> = container
        .mounts
        .iter()
        .map(|m| (m.target.trim_end_matches('/'), "mount"))
        .collect();
    let mut clashes = Vec::new();
    let files = container
        .configs
        .iter()
        .map(|r| ("config", r))
        .chain(container.secrets.iter().map(|r| ("secret", r)));
    for (kind, reference) in files {
        match taken.get(reference.target.as_str()) {
            Some(other) if *other != kind => clashes.push(format!(
                "{kind} {}: target {} is also a {other}'s target: a file cannot be mounted over another mount; give it another target",
                reference.source, reference.target
            )),
            _ => drop(taken.insert(&reference.target, kind)),
        }
    }
    clashes
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub limits: ResourceLimits,
    pub reservations: ResourceReservations,
}

/// Absent means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<NanoCpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

/// What the scheduler keeps free on a node for each task; absent means nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceReservations {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<NanoCpus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay: GoDuration,
    /// 0: no limit.
    pub max_attempts: u64,
    /// 0s: a restart counts as successful at once.
    pub window: GoDuration,
}

impl RestartPolicy {
    /// Whether a slot whose task just ended, and which had `restarts` tasks after its
    /// first, is never given another whatever the time: the condition is `none`, or
    /// `max_attempts` are used up with no `window` for them to age out of. The
    /// orchestrator's restart decision and the CLI's convergence wait both ask it.
    pub fn gives_up(&self, restarts: u64) -> bool {
        self.condition == RestartCondition::None
            || (self.max_attempts > 0 && self.window.0.is_zero() && restarts >= self.max_attempts)
    }
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: GoDuration::from_secs(5),
            max_attempts: 0,
            window: GoDuration::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Sorted, without duplicates: all must hold.
    pub constraints: Vec<Constraint>,
    /// In order: tasks are spread over the values of the first label, then the next.
    pub preferences: Vec<SpreadOver>,
    /// 0: no limit.
    pub max_replicas_per_node: u64,
}

/// A placement preference: spread tasks evenly over the values of a node label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpreadOver {
    /// `node.labels.<name>` or `engine.labels.<name>`; anything else is kept as written and
    /// spreads over nothing, as in Docker.
    pub spread: String,
}

impl SpreadOver {
    /// The name of the label spread over, its prefix matched without regard to case as
    /// swarmkit's scheduler matches it; none for any other descriptor (`node.id`), which
    /// the scheduler skips.
    pub fn label(&self) -> Option<&str> {
        ["node.labels.", "engine.labels."]
            .iter()
            .find_map(|prefix| {
                let name = self.spread.get(prefix.len()..).filter(|n| !n.is_empty())?;
                self.spread[..prefix.len()]
                    .eq_ignore_ascii_case(prefix)
                    .then_some(name)
            })
    }
}

/// A placement constraint: `node.role == manager`, `node.labels.zone != b`, …
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Constraint {
    pub attribute: NodeAttribute,
    pub equal: bool,
    pub value: String,
}

/// The node attributes a constraint can test, as swarmkit reads them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeAttribute {
    Id,
    Hostname,
    /// The node's address (the host part of where other nodes reach it): the value is an
    /// address or a CIDR range.
    Ip,
    Role,
    PlatformOs,
    PlatformArch,
    NodeLabel(String),
    EngineLabel(String),
}

impl NodeAttribute {
    /// Every attribute as users write it, for error messages and help.
    pub const SPELLINGS: &'static str = "node.id, node.hostname, node.ip (an address or a CIDR \
        range), node.role (manager or worker), node.platform.os, node.platform.arch, \
        node.labels.<name>, engine.labels.<name>";

    /// As swarmkit: the attribute and the label prefixes are read whatever their case; a
    /// label's name keeps its case.
    fn parse(text: &str) -> Option<NodeAttribute> {
        let label = |prefix: &str| {
            let head = text.get(..prefix.len())?;
            let name = &text[prefix.len()..];
            (head.eq_ignore_ascii_case(prefix) && !name.is_empty()).then(|| name.to_owned())
        };
        Some(match text.to_ascii_lowercase().as_str() {
            "node.id" => NodeAttribute::Id,
            "node.hostname" => NodeAttribute::Hostname,
            "node.ip" => NodeAttribute::Ip,
            "node.role" => NodeAttribute::Role,
            "node.platform.os" => NodeAttribute::PlatformOs,
            "node.platform.arch" => NodeAttribute::PlatformArch,
            _ => {
                if let Some(name) = label("node.labels.") {
                    NodeAttribute::NodeLabel(name)
                } else {
                    NodeAttribute::EngineLabel(label("engine.labels.")?)
                }
            }
        })
    }
}

impl fmt::Display for NodeAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAttribute::Id => f.write_str("node.id"),
            NodeAttribute::Hostname => f.write_str("node.hostname"),
            NodeAttribute::Ip => f.write_str("node.ip"),
            NodeAttribute::Role => f.write_str("node.role"),
            NodeAttribute::PlatformOs => f.write_str("node.platform.os"),
            NodeAttribute::PlatformArch => f.write_str("node.platform.arch"),
            NodeAttribute::NodeLabel(name) => write!(f, "node.labels.{name}"),
            NodeAttribute::EngineLabel(name) => write!(f, "engine.labels.{name}"),
        }
    }
}

/// The address or range a `node.ip` constraint names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpMatch {
    Address(std::net::IpAddr),
    Range(ipnet::IpNet),
}

impl IpMatch {
    pub fn parse(text: &str) -> Option<IpMatch> {
        if let Ok(address) = text.parse() {
            return Some(IpMatch::Address(address));
        }
        text.parse().ok().map(IpMatch::Range)
    }

    pub fn contains(&self, address: std::net::IpAddr) -> bool {
        match self {
            IpMatch::Address(own) => *own == address,
            IpMatch::Range(range) => range.contains(&address),
        }
    }
}

/// Why a constraint expression was refused; the message shows the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConstraintError(String);

impl FromStr for Constraint {
    type Err = ConstraintError;

    fn from_str(text: &str) -> Result<Self, ConstraintError> {
        let (attribute, equal, value) = if let Some((a, v)) = text.split_once("==") {
            (a, true, v)
        } else if let Some((a, v)) = text.split_once("!=") {
            (a, false, v)
        } else {
            return Err(ConstraintError(format!(
                "invalid constraint {text:?}: expected ATTRIBUTE == VALUE or ATTRIBUTE != VALUE, \
                 e.g. \"node.role == manager\""
            )));
        };
        let (attribute_text, value) = (attribute.trim(), value.trim());
        let attribute = NodeAttribute::parse(attribute_text).ok_or_else(|| {
            ConstraintError(format!(
                "invalid constraint {text:?}: unknown attribute {attribute_text:?}; use one of {}",
                NodeAttribute::SPELLINGS
            ))
        })?;
        if value.is_empty() || value.contains("==") || value.contains("!=") {
            return Err(ConstraintError(format!(
                "invalid constraint {text:?}: expected one value after the operator"
            )));
        }
        let value = match attribute {
            // Values match whatever their case: a role is written in one case, so that
            // two spellings give one spec.
            NodeAttribute::Role => match value.to_ascii_lowercase().as_str() {
                role @ ("manager" | "worker") => role.to_owned(),
                _ => {
                    return Err(ConstraintError(format!(
                        "invalid constraint {text:?}: node.role is manager or worker"
                    )));
                }
            },
            NodeAttribute::Ip => match IpMatch::parse(value) {
                Some(IpMatch::Address(address)) => address.to_string(),
                Some(IpMatch::Range(range)) => range.to_string(),
                None => {
                    return Err(ConstraintError(format!(
                        "invalid constraint {text:?}: node.ip is an address (10.0.0.5) or a \
                         CIDR range (10.0.0.0/24)"
                    )));
                }
            },
            _ => value.to_owned(),
        };
        Ok(Constraint {
            attribute,
            equal,
            value,
        })
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.equal { "==" } else { "!=" };
        write!(f, "{} {op} {}", self.attribute, self.value)
    }
}

impl Serialize for Constraint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Constraint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Constraint {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Constraint".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "examples": ["node.role == manager"] })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The network's name in the cluster.
    pub target: String,
    /// Sorted; includes the service's short name, as `docker stack deploy` adds it.
    pub aliases: Vec<String>,
}

/// How a rolling update (or a rollback) proceeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// Tasks updated at once; 0 updates all at once.
    pub parallelism: u64,
    pub delay: GoDuration,
    pub failure_action: FailureAction,
    pub monitor: GoDuration,
    pub max_failure_ratio: f64,
    pub order: UpdateOrder,
}

// The ratio is validated to a finite number in [0, 1], so equality is total.
impl Eq for UpdatePolicy {}

impl Default for UpdatePolicy {
    fn default() -> Self {
        UpdatePolicy {
            parallelism: 1,
            delay: GoDuration::default(),
            failure_action: FailureAction::Pause,
            monitor: GoDuration::from_secs(5),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Continue,
    Rollback,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub mode: EndpointMode,
    /// Sorted by published port, then target, then protocol.
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Absent: the cluster picks a free port (30000–32767) when the service is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<u16>,
    pub target: u16,
    pub protocol: Protocol,
    pub mode: PublishMode,
    /// Each connection is handed to the task after a PROXY protocol header that carries
    /// the client's address (through the nodes' userspace path, not the kernel's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// A port the cluster published for an ingress port its spec gave no number (Docker's
/// dynamic ports, 30000–32767): kept beside the spec, which stays as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignedPort {
    pub target: u16,
    pub protocol: Protocol,
    pub published: u16,
}

impl AssignedPort {
    /// The range the cluster assigns ports from, Docker's.
    pub const FIRST: u16 = 30000;
    pub const LAST: u16 = 32767;
}

impl EndpointSpec {
    /// The ingress ports that wait for the cluster to give them a number, in order.
    pub fn unnumbered(&self) -> impl Iterator<Item = &PortConfig> {
        self.ports
            .iter()
            .filter(|p| p.published.is_none() && p.mode == PublishMode::Ingress)
    }

    /// The ports as they are published: each unnumbered ingress port with the number
    /// `assigned` gives it (in order, by target and protocol), the others as written.
    pub fn published_ports(&self, assigned: &[AssignedPort]) -> Vec<PortConfig> {
        let mut left: Vec<&AssignedPort> = assigned.iter().collect();
        self.ports
            .iter()
            .map(|port| {
                let mut port = port.clone();
                if port.published.is_none() && port.mode == PublishMode::Ingress {
                    let at = left
                        .iter()
                        .position(|a| a.target == port.target && a.protocol == port.protocol);
                    port.published = at.map(|at| left.remove(at).published);
                }
                port
            })
            .collect()
    }
}

impl PortConfig {
    /// Why this port cannot speak the PROXY protocol it asks for, if it cannot: the
    /// header is written by the nodes' userspace path, which carries TCP connections to a
    /// published port.
    pub fn proxy_protocol_problem(&self) -> Option<&'static str> {
        self.proxy_protocol?;
        if self.protocol != Protocol::Tcp {
            Some("the PROXY protocol is for TCP ports: remove proxy_protocol, or publish over tcp")
        } else if self.published.is_none() {
            Some("the PROXY protocol needs a published port number: add published")
        } else {
            None
        }
    }
}

/// The PROXY protocol version a published port speaks to its tasks (HAProxy's
/// `send-proxy-v2`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    V2,
}

impl fmt::Display for PortConfig {
    /// Docker's `service ls` spelling, `*:8080->80/tcp`; a port published in host mode
    /// (only on the nodes that run a task, not through the routing mesh) says so:
    /// `*:8080->80/tcp (host)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.published {
            Some(published) => write!(f, "*:{published}->{}/{}", self.target, self.protocol)?,
            None => write!(f, "*:auto->{}/{}", self.target, self.protocol)?,
        }
        match self.mode {
            PublishMode::Ingress => {}
            PublishMode::Host => f.write_str(" (host)")?,
        }
        match self.proxy_protocol {
            Some(ProxyProtocol::V2) => f.write_str(" (proxy-protocol v2)"),
            None => Ok(()),
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    Ingress,
    Host,
}

/// A cluster network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    pub driver: String,
    pub driver_opts: BTreeMap<String, String>,
    pub attachable: bool,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Address ranges in CIDR form; empty: leased from the cluster's default pool.
    pub subnets: Vec<String>,
    /// The subnet's gateway (`--gateway`); absent: its first address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

/// A config or a secret. The content itself is not part of the spec (a secret never leaves
/// the managers): its SHA-256 digest is, so a changed file shows as a changed spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileObjectSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `sha256:<hex>` of the content.
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs are spelled as Docker's modes in specs, and scale as `service scale` does.
    #[test]
    fn job_modes_serialise_and_scale_as_dockers() {
        let job = ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        };
        assert_eq!(
            serde_json::to_value(job).unwrap(),
            serde_json::json!({"mode": "replicated-job", "max_concurrent": 2, "total_completions": 5})
        );
        assert_eq!(
            serde_json::to_value(ServiceMode::GlobalJob).unwrap(),
            serde_json::json!({"mode": "global-job"})
        );
        assert_eq!(
            job.scaled(8),
            Some(ServiceMode::ReplicatedJob {
                max_concurrent: 2,
                total_completions: 8
            }),
            "the completions change, the concurrency stays"
        );
        assert_eq!(ServiceMode::GlobalJob.scaled(3), None);
        assert_eq!(ServiceMode::Global.scaled(3), None);
        assert_eq!(
            [job, ServiceMode::GlobalJob].map(|m| (m.display_name(), m.is_job())),
            [("replicated job", true), ("global job", true)]
        );
        assert!(!ServiceMode::Replicated { replicas: 1 }.is_job());
    }

    /// Spellings swarmkit accepts read as one constraint; the help names every attribute.
    #[test]
    fn constraints_parse_as_swarmkit_reads_them() {
        let parsed = |text: &str| text.parse::<Constraint>().map(|c| c.to_string());
        for (text, canonical) in [
            ("Node.Role==Manager", "node.role == manager"),
            ("NODE.LABELS.Zone != b", "node.labels.Zone != b"),
            ("Engine.Labels.disk==ssd", "engine.labels.disk == ssd"),
            ("node.ip == 10.0.0.5", "node.ip == 10.0.0.5"),
            ("node.ip != 10.0.0.0/24", "node.ip != 10.0.0.0/24"),
            ("node.IP == 2001:db8::/32", "node.ip == 2001:db8::/32"),
            ("node.platform.os == linux", "node.platform.os == linux"),
            (
                "node.Platform.Arch == x86_64",
                "node.platform.arch == x86_64",
            ),
        ] {
            assert_eq!(parsed(text).as_deref(), Ok(canonical), "{text}");
        }
        let error = parsed("node.ip == 10.0.0.300").unwrap_err().to_string();
        assert!(error.contains("CIDR range"), "{error}");
        let error = parsed("node.zone == a").unwrap_err().to_string();
        for attribute in [
            "node.id",
            "node.hostname",
            "node.ip",
            "node.role",
            "node.platform.os",
            "node.platform.arch",
            "node.labels.<name>",
            "engine.labels.<name>",
        ] {
            assert!(error.contains(attribute), "{error}");
        }
        assert!(parsed("node.labels. == a").is_err());
    }
}
