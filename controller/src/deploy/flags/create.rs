//! `service create`: its flags as a one-service Compose document, loaded as a stack file's
//! service is.

use serde_json::{Map, Value, json};
use swarm_api::spec::{ServiceMode, ServiceSpec};

use super::document::{
    RuntimeFlags, key_values, load_service_document, mounts_document, network_document,
    port_document, section,
};
use super::{FlagError, RollbackFlags};

/// The flags of `service create`, as given (Docker's names, values as typed).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateFlags {
    pub name: String,
    /// `replicated`, `global`, `replicated-job` or `global-job`.
    pub mode: String,
    /// A replicated service's tasks, or a replicated job's completions.
    pub replicas: Option<u64>,
    /// A replicated job's tasks in progress at once (default: `replicas`).
    pub max_concurrent: Option<u64>,
    pub publish: Vec<String>,
    /// `NAME` or `name=NAME,alias=A`: cluster networks to attach to.
    pub network: Vec<String>,
    /// Docker's `--mount` syntax: `type=volume|bind|tmpfs,source=…,target=…,…`.
    pub mount: Vec<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// `KEY=VALUE`.
    pub sysctl: Vec<String>,
    /// `NAME=SOFT[:HARD]`.
    pub ulimit: Vec<String>,
    pub read_only: bool,
    /// Supplementary groups, by name or number.
    pub group: Vec<String>,
    pub log_driver: Option<String>,
    /// `KEY=VALUE`.
    pub log_opt: Vec<String>,
    /// `HOST:ADDRESS` lines of the task's /etc/hosts, `ADDRESS` may be `host-gateway` (the
    /// node's address on the task's network) (`--add-host`: `--host` names the
    /// daemon to talk to).
    pub host: Vec<String>,
    /// Nameservers, search domains and resolver options.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_option: Vec<String>,
    /// swarm's init as PID 1.
    pub init: bool,
    /// The command on a terminal.
    pub tty: bool,
    /// -1000..1000.
    pub oom_score_adj: Option<i64>,
    /// `vip` (default) or `dnsrr`.
    pub endpoint_mode: Option<String>,
    pub env: Vec<String>,
    pub label: Vec<String>,
    pub container_label: Vec<String>,
    pub constraint: Vec<String>,
    pub placement_pref: Vec<String>,
    pub replicas_max_per_node: Option<u64>,
    pub reserve_cpu: Option<String>,
    pub reserve_memory: Option<String>,
    pub limit_cpu: Option<String>,
    pub limit_memory: Option<String>,
    pub limit_pids: Option<u64>,
    pub restart_condition: Option<String>,
    pub restart_delay: Option<String>,
    pub restart_max_attempts: Option<u64>,
    pub restart_window: Option<String>,
    pub update_parallelism: Option<u64>,
    pub update_delay: Option<String>,
    pub update_order: Option<String>,
    pub update_failure_action: Option<String>,
    pub update_monitor: Option<String>,
    pub update_max_failure_ratio: Option<f64>,
    pub rollback: RollbackFlags,
    pub health_cmd: Option<String>,
    pub health_interval: Option<String>,
    pub health_timeout: Option<String>,
    pub health_retries: Option<u64>,
    pub health_start_period: Option<String>,
    pub health_start_interval: Option<String>,
    pub stop_grace_period: Option<String>,
    pub stop_signal: Option<String>,
    pub hostname: Option<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub entrypoint: Option<String>,
    /// `NAME` or `source=NAME,target=T,uid=U,gid=G,mode=0440`: secrets made by `secret create`.
    pub secret: Vec<String>,
    /// The same for configs.
    pub config: Vec<String>,
    pub image: String,
    pub command: Vec<String>,
}

impl CreateFlags {
    /// The normalised spec the flags ask for, through the stack loader.
    pub fn spec(&self) -> Result<ServiceSpec, FlagError> {
        let job = matches!(self.mode.as_str(), "replicated-job" | "global-job");
        if self.max_concurrent.is_some() && self.mode != "replicated-job" {
            return Err(FlagError::MaxConcurrentWithoutJob { this: None });
        }
        let update_flags = self.update_parallelism.is_some()
            || self.update_delay.is_some()
            || self.update_order.is_some()
            || self.update_failure_action.is_some()
            || self.update_monitor.is_some()
            || self.update_max_failure_ratio.is_some();
        if job && (update_flags || self.rollback.section()?.is_some()) {
            return Err(FlagError::JobUpdatePolicy);
        }
        let mut spec = load_service_document(&self.name, self.document()?)?;
        if let (
            Some(most),
            ServiceMode::ReplicatedJob {
                max_concurrent,
                total_completions,
            },
        ) = (self.max_concurrent, &mut spec.mode)
        {
            // As Docker's: without `--replicas`, the job needs as many completions.
            *max_concurrent = most;
            *total_completions = self.replicas.unwrap_or(most);
        }
        super::files::add(
            &mut spec.task.container,
            ("secret", "config"),
            &self.secret,
            &self.config,
        )?;
        Ok(spec)
    }

    /// The service's mapping in the one-service Compose document.
    fn document(&self) -> Result<Value, FlagError> {
        let env = key_values(&self.env, "env")?;
        let container_labels = key_values(&self.container_label, "container-label")?;
        let mut service = Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                service.insert(key.to_owned(), value);
            }
        };
        put("image", Some(json!(self.image)));
        let networks = self
            .network
            .iter()
            .map(|text| network_document("network", text))
            .collect::<Result<Map<String, Value>, FlagError>>()?;
        put(
            "networks",
            (!networks.is_empty()).then_some(Value::Object(networks)),
        );
        put(
            "command",
            (!self.command.is_empty()).then(|| json!(self.command)),
        );
        // A string, split by the loader as Compose splits it.
        put("entrypoint", self.entrypoint.as_ref().map(|e| json!(e)));
        put("environment", (!env.is_empty()).then(|| json!(env)));
        put(
            "labels",
            (!container_labels.is_empty()).then(|| json!(container_labels)),
        );
        put("hostname", self.hostname.as_ref().map(|v| json!(v)));
        put("working_dir", self.workdir.as_ref().map(|v| json!(v)));
        put("user", self.user.as_ref().map(|v| json!(v)));
        put(
            "stop_grace_period",
            self.stop_grace_period.as_ref().map(|v| json!(v)),
        );
        put("stop_signal", self.stop_signal.as_ref().map(|v| json!(v)));
        let ports = self
            .publish
            .iter()
            .map(|p| port_document(p))
            .collect::<Result<Vec<_>, _>>()?;
        put("ports", (!ports.is_empty()).then(|| json!(ports)));
        if let Some(cmd) = &self.health_cmd {
            let health = section([
                ("test", Some(json!(["CMD-SHELL", cmd]))),
                ("interval", self.health_interval.as_ref().map(|v| json!(v))),
                ("timeout", self.health_timeout.as_ref().map(|v| json!(v))),
                (
                    "start_period",
                    self.health_start_period.as_ref().map(|v| json!(v)),
                ),
                (
                    "start_interval",
                    self.health_start_interval.as_ref().map(|v| json!(v)),
                ),
                ("retries", self.health_retries.map(|v| json!(v))),
            ]);
            put("healthcheck", health);
        }
        mounts_document("mount", &self.mount, &mut service)?;
        RuntimeFlags {
            cap_add: &self.cap_add,
            cap_drop: &self.cap_drop,
            sysctls: &self.sysctl,
            ulimits: ("ulimit", &self.ulimit),
            read_only: self.read_only,
            groups: &self.group,
            log_driver: self.log_driver.as_deref(),
            log_opt: &self.log_opt,
            hosts: &self.host,
            dns: &self.dns,
            dns_search: &self.dns_search,
            dns_options: &self.dns_option,
            init: self.init,
            tty: self.tty,
            oom_score_adj: self.oom_score_adj,
        }
        .insert_into(&mut service)?;
        service.insert("deploy".into(), self.deploy_document()?);
        Ok(Value::Object(service))
    }

    fn deploy_document(&self) -> Result<Value, FlagError> {
        let text = |value: &Option<String>| value.as_ref().map(|v| json!(v));
        let labels = (!self.label.is_empty())
            .then(|| key_values(&self.label, "label"))
            .transpose()?;
        let preferences = self
            .placement_pref
            .iter()
            .map(|p| match p.split_once('=') {
                Some(("spread", target)) => Ok(json!({ "spread": target })),
                _ => Err(FlagError::invalid(
                    "placement-pref",
                    p,
                    "expected spread=node.labels.KEY",
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let placement = section([
            (
                "constraints",
                (!self.constraint.is_empty()).then(|| json!(self.constraint)),
            ),
            (
                "preferences",
                (!preferences.is_empty()).then(|| json!(preferences)),
            ),
            (
                "max_replicas_per_node",
                self.replicas_max_per_node.map(|m| json!(m)),
            ),
        ]);
        let resources = section([
            (
                "limits",
                section([
                    ("cpus", text(&self.limit_cpu)),
                    ("memory", text(&self.limit_memory)),
                    // 0 is Docker's "no limit": the loader reads it so.
                    ("pids", self.limit_pids.map(|n| json!(n))),
                ]),
            ),
            (
                "reservations",
                section([
                    ("cpus", text(&self.reserve_cpu)),
                    ("memory", text(&self.reserve_memory)),
                ]),
            ),
        ]);
        let restart = section([
            ("condition", text(&self.restart_condition)),
            ("delay", text(&self.restart_delay)),
            ("window", text(&self.restart_window)),
            ("max_attempts", self.restart_max_attempts.map(|m| json!(m))),
        ]);
        let update = section([
            ("delay", text(&self.update_delay)),
            ("order", text(&self.update_order)),
            ("failure_action", text(&self.update_failure_action)),
            ("monitor", text(&self.update_monitor)),
            ("parallelism", self.update_parallelism.map(|p| json!(p))),
            (
                "max_failure_ratio",
                self.update_max_failure_ratio.map(|r| json!(r)),
            ),
        ]);
        Ok(section([
            ("mode", Some(json!(self.mode))),
            ("endpoint_mode", text(&self.endpoint_mode)),
            ("replicas", self.replicas.map(|r| json!(r))),
            ("labels", labels.map(|l| json!(l))),
            ("placement", placement),
            ("resources", resources),
            ("restart_policy", restart),
            ("update_config", update),
            ("rollback_config", self.rollback.section()?),
        ])
        .expect("the mode is always there"))
    }
}

/// A name for a service created without `--name`, as Docker gives one: an adjective and
/// a scientist's name (`brave_lovelace`), chosen by `seed`.
pub fn generated_name(seed: u64) -> String {
    const ADJECTIVES: &[&str] = &[
        "admiring", "agile", "amazing", "blissful", "bold", "brave", "busy", "calm", "clever",
        "cool", "curious", "daring", "eager", "elegant", "epic", "festive", "focused", "friendly",
        "gallant", "gentle", "happy", "hopeful", "jolly", "keen", "kind", "lucid", "merry",
        "modest", "nifty", "patient", "quiet", "quirky", "relaxed", "serene", "sharp", "steady",
        "sweet", "tender", "upbeat", "vibrant", "vigilant", "wise", "witty", "zealous", "zen",
    ];
    const SCIENTISTS: &[&str] = &[
        "babbage",
        "bell",
        "boole",
        "curie",
        "darwin",
        "dijkstra",
        "einstein",
        "euler",
        "feynman",
        "franklin",
        "galileo",
        "goldwasser",
        "hamilton",
        "hodgkin",
        "hopper",
        "johnson",
        "kepler",
        "knuth",
        "lamport",
        "liskov",
        "lovelace",
        "meitner",
        "newton",
        "noether",
        "pasteur",
        "payne",
        "perlman",
        "ritchie",
        "shannon",
        "tesla",
        "thompson",
        "torvalds",
        "turing",
        "wozniak",
        "yalow",
    ];
    let adjective = ADJECTIVES[(seed % ADJECTIVES.len() as u64) as usize];
    let scientist =
        SCIENTISTS[((seed / ADJECTIVES.len() as u64) % SCIENTISTS.len() as u64) as usize];
    format!("{adjective}_{scientist}")
}
