//! The stack file format: the Compose file as `docker stack deploy` reads it (versions 3.x
//! and the unversioned Compose specification).
//!
//! These types are the single source of the format: `schemas/stack.schema.json` is generated
//! from them, and the stack loader checks a file against that schema (with line and column for
//! every finding) before it deserialises the file into these types. They describe what users
//! write, with every field optional; `spec` holds what the cluster runs, with every default filled.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use crate::units::{ByteSize, GoDuration, NanoCpus};

/// A stack file.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "swarm stack file", extend("patternProperties" = {"^x-": {}}))]
pub struct StackFile {
    /// Compose file version: 3.x, or absent for the Compose specification.
    pub version: Option<String>,
    /// The stack name; services are named `<name>_<service>`. Defaults to the file name.
    pub name: Option<String>,
    #[serde(default)]
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub networks: BTreeMap<String, Option<Network>>,
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<Volume>>,
    #[serde(default)]
    pub configs: BTreeMap<String, Option<ConfigOrSecret>>,
    #[serde(default)]
    pub secrets: BTreeMap<String, Option<ConfigOrSecret>>,
    #[serde(default)]
    pub include: Unsupported,
}

/// A service: the template of its tasks and how many of them run where.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Service {
    /// The image to run, as `name:tag`, `name@sha256:…` or `host:port/name:tag`.
    pub image: Option<String>,
    /// Overrides the image's CMD: a string (split like a shell) or a list.
    pub command: Option<StringOrList>,
    /// Overrides the image's ENTRYPOINT: a string (split like a shell) or a list.
    pub entrypoint: Option<StringOrList>,
    /// Environment variables: a list of `KEY=value` or a map.
    pub environment: Option<ListOrMap>,
    /// Files of `KEY=value` lines, relative to the stack file; `environment` wins over them.
    pub env_file: Option<StringOrList>,
    /// Container labels.
    pub labels: Option<ListOrMap>,
    pub ports: Option<Vec<Port>>,
    pub networks: Option<ServiceNetworks>,
    pub volumes: Option<Vec<Mount>>,
    pub configs: Option<Vec<FileReference>>,
    pub secrets: Option<Vec<FileReference>>,
    pub healthcheck: Option<Healthcheck>,
    /// How long to wait after the stop signal before killing the container (default 10s).
    pub stop_grace_period: Option<GoDuration>,
    /// The signal that asks the container to stop (default SIGTERM).
    pub stop_signal: Option<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub hostname: Option<String>,
    pub deploy: Option<Deploy>,

    #[serde(default)]
    pub build: Unsupported,
    /// Capabilities added to Docker's default set (`NET_ADMIN` or `CAP_NET_ADMIN`, `ALL`).
    pub cap_add: Option<Vec<String>>,
    /// Capabilities taken from it.
    pub cap_drop: Option<Vec<String>>,
    #[serde(default)]
    pub cgroup_parent: Unsupported,
    #[serde(default)]
    pub cgroupns_mode: Unsupported,
    #[serde(default)]
    pub container_name: Unsupported,
    #[serde(default)]
    pub cpus: Unsupported,
    #[serde(default)]
    pub credential_spec: Unsupported,
    /// Services of this stack whose tasks must run (or be healthy) before this one's start:
    /// a list of names, or a map of name to `{condition}`.
    pub depends_on: Option<DependsOn>,
    #[serde(default)]
    pub devices: Unsupported,
    /// Nameservers for names the cluster does not answer: addresses.
    pub dns: Option<StringOrList>,
    /// Resolver options (`ndots:2`, `timeout:1`, …) for the task's /etc/resolv.conf.
    pub dns_opt: Option<Vec<String>>,
    /// Search domains for the task's /etc/resolv.conf.
    pub dns_search: Option<StringOrList>,
    #[serde(default)]
    pub domainname: Unsupported,
    #[serde(default)]
    pub expose: Unsupported,
    #[serde(default)]
    pub external_links: Unsupported,
    /// Lines added to the task's /etc/hosts: a list of `HOST:ADDRESS` (or `HOST=ADDRESS`), or
    /// a map of host to address.
    pub extra_hosts: Option<ListOrMap>,
    /// Supplementary groups, by name or number.
    pub group_add: Option<Vec<StringOrNumber>>,
    /// Run swarm's minimal init as PID 1: it reaps zombies and forwards signals.
    pub init: Option<bool>,
    #[serde(default)]
    pub ipc: Unsupported,
    #[serde(default)]
    pub isolation: Unsupported,
    #[serde(default)]
    pub links: Unsupported,
    pub logging: Option<Logging>,
    #[serde(default)]
    pub mac_address: Unsupported,
    #[serde(default)]
    pub mem_limit: Unsupported,
    #[serde(default)]
    pub network_mode: Unsupported,
    /// Added to the container's out-of-memory score: -1000 (never chosen) to 1000.
    pub oom_score_adj: Option<i64>,
    #[serde(default)]
    pub pid: Unsupported,
    #[serde(default)]
    pub platform: Unsupported,
    #[serde(default)]
    pub privileged: Unsupported,
    #[serde(default)]
    pub profiles: Unsupported,
    #[serde(default)]
    pub pull_policy: Unsupported,
    /// Mount the root filesystem read-only.
    pub read_only: Option<bool>,
    /// Compose's restart policy, read as Docker reads it when `deploy.restart_policy` is
    /// absent: `on-failure[:N]` restarts a task that failed, at most N times; `always` and
    /// `unless-stopped` restart on any exit (the default); `no` is ignored, as in Docker.
    pub restart: Option<String>,
    #[serde(default)]
    pub security_opt: Unsupported,
    #[serde(default)]
    pub shm_size: Unsupported,
    /// Keep the command's stdin open (never written): a shell waits instead of ending.
    pub stdin_open: Option<bool>,
    /// Namespaced kernel parameters, as a list of `KEY=VALUE` or a map.
    pub sysctls: Option<ListOrMap>,
    /// Empty tmpfs mounts of each task's own: a path, or a list of paths, each
    /// `PATH[:OPTIONS]` with comma-separated options `size=64m`, `mode=1777`, `ro`, `rw`,
    /// `exec`, `noexec` (the default).
    pub tmpfs: Option<StringOrList>,
    /// Run the command on a terminal: its output reaches the log as one stream, lines
    /// ending in CRLF as a terminal writes them.
    pub tty: Option<bool>,
    /// Process limits by name: a number (soft = hard) or `{soft, hard}`.
    pub ulimits: Option<BTreeMap<String, UlimitValue>>,
    #[serde(default)]
    pub userns_mode: Unsupported,
}

/// `depends_on`: service names, or each with its condition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DependsOn {
    List(Vec<String>),
    Map(BTreeMap<String, Dependency>),
}

/// One dependency in the long form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Dependency {
    /// `service_started` (default): its tasks run; `service_healthy`: they pass their
    /// healthcheck; `service_completed_successfully`: a job that completed.
    pub condition: Option<DependencyCondition>,
    /// `false`: a service the stack does not have is no error (a warning).
    pub required: Option<bool>,
    #[serde(default)]
    pub restart: Unsupported,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// A `ulimits` entry: one number for both limits, or each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum UlimitValue {
    Single(i64),
    Pair { soft: i64, hard: i64 },
}

/// Where the service's output goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Logging {
    /// `json-file` (default) and `local` keep the logs on the node (`service logs`).
    pub driver: Option<String>,
    /// For `json-file`/`local`: `max-size` (e.g. `10m`), `max-file` (e.g. `3`).
    pub options: Option<BTreeMap<String, StringOrNumber>>,
}

/// A string, or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StringOrList {
    String(String),
    List(Vec<String>),
}

/// A list of `KEY=value` strings, or a map of keys to scalar values (null means "no value").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ListOrMap {
    List(Vec<String>),
    Map(BTreeMap<String, Option<String>>),
}

/// A published port: `"80"`, `"8080:80"`, `"8080:80/udp"`, a port range, or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Port {
    Number(u32),
    Short(String),
    Long(PortLong),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct PortLong {
    /// The port inside the container.
    pub target: u32,
    /// The port on every node (ingress) or on the task's node (host); a number or a string.
    pub published: Option<StringOrNumber>,
    pub protocol: Option<PortProtocol>,
    pub mode: Option<PortMode>,
    /// The host address to bind; not supported by the routing mesh (ignored with a warning).
    pub host_ip: Option<String>,
    pub name: Option<String>,
    pub app_protocol: Option<String>,
    /// swarm's own key: each connection reaches the task with a PROXY protocol header
    /// carrying the client's address (`v2`), through the nodes' userspace path. TCP ports
    /// with a published number only.
    pub proxy_protocol: Option<crate::spec::ProxyProtocol>,
}

/// A value written either as a string or as a number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StringOrNumber {
    Number(u64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    Tcp,
    Udp,
    Sctp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Published on every node through the routing mesh.
    Ingress,
    /// Published only on the nodes that run a task.
    Host,
}

/// The networks a service joins: a list of names, or a map of names to attachment options.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ServiceNetworks {
    List(Vec<String>),
    Map(BTreeMap<String, Option<NetworkAttachment>>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct NetworkAttachment {
    /// Other names the service answers to on this network.
    pub aliases: Option<Vec<String>>,
    #[serde(default)]
    pub driver_opts: Unsupported,
    #[serde(default)]
    pub ipv4_address: Unsupported,
    #[serde(default)]
    pub ipv6_address: Unsupported,
    #[serde(default)]
    pub priority: Unsupported,
}

/// A volume, bind or tmpfs mount: `SOURCE:TARGET[:ro]`, `TARGET`, or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Mount {
    Short(String),
    Long(MountLong),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct MountLong {
    #[serde(rename = "type")]
    pub kind: MountKind,
    pub source: Option<String>,
    pub target: String,
    pub read_only: Option<bool>,
    pub consistency: Option<String>,
    pub bind: Option<BindOptions>,
    pub volume: Option<VolumeMountOptions>,
    pub tmpfs: Option<TmpfsMountOptions>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct BindOptions {
    /// `rprivate` (default), `private`, `rshared`, `shared`, `rslave`, `slave`.
    pub propagation: Option<String>,
    #[serde(default)]
    pub create_host_path: Unsupported,
    #[serde(default)]
    pub selinux: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct VolumeMountOptions {
    /// Do not copy the image's content at the target into a new volume.
    pub nocopy: Option<bool>,
    #[serde(default)]
    pub subpath: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct TmpfsMountOptions {
    /// Bytes, or with a unit (`64m`, `1g`).
    pub size: Option<crate::units::ByteSize>,
    /// The mount root's mode, octal as YAML 1.1 reads `01777`.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Volume,
    Bind,
    Tmpfs,
}

/// A config or secret given to a service: its name, or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FileReference {
    Short(String),
    Long(FileReferenceLong),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct FileReferenceLong {
    /// The name of the config or secret in the stack's top-level section.
    pub source: String,
    /// The path in the container (configs: `/<source>`; secrets: `/run/secrets/<source>`).
    pub target: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    /// File mode, in octal (e.g. 0440).
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Healthcheck {
    /// `["CMD", "prog", "arg"]`, `["CMD-SHELL", "command"]`, `["NONE"]`, or a shell command string.
    pub test: Option<StringOrList>,
    pub interval: Option<GoDuration>,
    pub timeout: Option<GoDuration>,
    pub retries: Option<u64>,
    pub start_period: Option<GoDuration>,
    pub start_interval: Option<GoDuration>,
    /// Turns off the image's healthcheck.
    pub disable: Option<bool>,
}

/// How the service is deployed: mode, replicas, placement, resources and policies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Deploy {
    pub mode: Option<DeployMode>,
    /// The number of tasks of a replicated service (default 1); of a replicated job, the
    /// completions it needs, run as many at once.
    #[schemars(range(max = 100000))]
    pub replicas: Option<u64>,
    pub placement: Option<Placement>,
    pub resources: Option<Resources>,
    pub restart_policy: Option<RestartPolicy>,
    pub update_config: Option<UpdateConfig>,
    pub rollback_config: Option<UpdateConfig>,
    /// Service labels.
    pub labels: Option<ListOrMap>,
    pub endpoint_mode: Option<EndpointMode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeployMode {
    /// A set number of tasks spread over the nodes.
    Replicated,
    /// One task on every eligible node.
    Global,
    /// Tasks that run to completion: `replicas` of them must exit 0, as many at once.
    #[serde(rename = "replicated-job")]
    ReplicatedJob,
    /// One task to completion on every eligible node.
    #[serde(rename = "global-job")]
    GlobalJob,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// One virtual address that balances over the tasks.
    Vip,
    /// DNS round robin over the task addresses.
    Dnsrr,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Placement {
    /// Expressions `ATTRIBUTE == VALUE` or `ATTRIBUTE != VALUE`, all of which must hold, such as
    /// `node.role == manager` or `node.labels.zone != b`. Attributes: node.id, node.hostname,
    /// node.ip (an address or a CIDR range), node.role (manager or worker), node.platform.os,
    /// node.platform.arch, node.labels.<name>, engine.labels.<name>; values match whatever
    /// their case.
    pub constraints: Option<Vec<String>>,
    pub preferences: Option<Vec<PlacementPreference>>,
    /// At most this many tasks of the service on one node (0: no limit).
    pub max_replicas_per_node: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementPreference {
    /// Spread tasks evenly over the values of a node label, e.g. `node.labels.zone`.
    pub spread: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Resources {
    pub limits: Option<ResourceLimits>,
    pub reservations: Option<ResourceReservations>,
    #[serde(default)]
    pub memory_swap: Unsupported,
    #[serde(default)]
    pub memory_swappiness: Unsupported,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct ResourceLimits {
    /// CPUs, e.g. `0.5` or `"2"`.
    pub cpus: Option<Cpus>,
    /// Memory, e.g. `512M`.
    pub memory: Option<ByteSize>,
    /// The most processes the container may run.
    pub pids: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct ResourceReservations {
    pub cpus: Option<Cpus>,
    pub memory: Option<ByteSize>,
    #[serde(default)]
    pub generic_resources: Unsupported,
    #[serde(default)]
    pub devices: Unsupported,
}

/// A CPU count written as a number (`0.5`) or a string (`"0.5"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Cpus(pub NanoCpus);

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct RestartPolicy {
    pub condition: Option<RestartCondition>,
    /// Time between restart attempts (default 5s).
    pub delay: Option<GoDuration>,
    /// Give up after this many failed restarts (default: never).
    pub max_attempts: Option<u64>,
    /// How long a restart must run to count as a success (default: at once).
    pub window: Option<GoDuration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    Any,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct UpdateConfig {
    /// Tasks updated at once (0: all at once; default 1).
    pub parallelism: Option<u64>,
    /// Time between batches.
    pub delay: Option<GoDuration>,
    pub failure_action: Option<FailureAction>,
    /// How long each task is watched for failure after its update (default 5s).
    pub monitor: Option<GoDuration>,
    /// Share of failed tasks tolerated, from 0 to 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_failure_ratio: Option<f64>,
    pub order: Option<UpdateOrder>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    Continue,
    Rollback,
    Pause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    StopFirst,
    StartFirst,
}

/// A top-level network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Network {
    /// `overlay` (default) spans the cluster.
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub attachable: Option<bool>,
    pub internal: Option<bool>,
    /// The network exists outside the stack and is not created or removed by it.
    pub external: Option<External>,
    /// The name in the cluster, instead of `<stack>_<network>`.
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub enable_ipv6: Unsupported,
}

/// `true`, or (old style) `{name: …}` naming the external object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum External {
    Flag(bool),
    Named(ExternalName),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalName {
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Option<Vec<IpamPool>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpamPool {
    /// An address range in CIDR form, e.g. `10.10.0.0/24`.
    pub subnet: Option<String>,
}

/// A top-level volume. Volumes live on each node; the stack only names them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct Volume {
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub external: Option<External>,
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
}

/// A top-level config or secret: content from a file, or an object that exists outside the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("patternProperties" = {"^x-": {}}))]
pub struct ConfigOrSecret {
    /// A file whose content becomes the object, relative to the stack file.
    pub file: Option<String>,
    pub external: Option<External>,
    /// The name in the cluster, instead of `<stack>_<name>`.
    pub name: Option<String>,
    pub labels: Option<ListOrMap>,
    /// A config's content itself, written in the stack file (the Compose specification's
    /// inline form; not for secrets), instead of `file`.
    pub content: Option<String>,
    /// A variable (of the deploying environment or the stack's `.env`) whose value becomes
    /// the object, instead of `file`.
    pub environment: Option<String>,
    #[serde(default)]
    pub template_driver: Unsupported,
    #[serde(default)]
    pub driver: Unsupported,
    #[serde(default)]
    pub driver_opts: Unsupported,
}

/// A key of the format that swarm does not implement yet: accepted with a warning, then ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsupported;

/// The schema keyword that marks a key as [`Unsupported`]; the stack loader warns where it sees it.
pub const UNSUPPORTED_KEYWORD: &str = "x-swarm-unsupported";

impl<'de> Deserialize<'de> for Unsupported {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer)?;
        Ok(Unsupported)
    }
}

impl JsonSchema for Unsupported {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Unsupported".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "Part of the Compose format, not implemented by swarm yet: accepted with a warning and ignored.",
            "x-swarm-unsupported": true
        })
    }
}

/// The JSON Schema of stack files, as committed in `schemas/stack.schema.json`.
pub fn json_schema() -> schemars::Schema {
    schemars::schema_for!(StackFile)
}
