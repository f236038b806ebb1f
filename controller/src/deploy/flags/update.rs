//! `service update`: a service's spec changed in place by Docker's `update` flags —
//! settings (`--image`, `--hostname`, `--restart-delay`, …) and `--*-add`/`--*-rm` pairs for
//! lists and maps. Values are checked as `service create` checks them (ports, healthchecks
//! and the stop signal through the stack loader).

use serde_json::{Value, json};
use swarm_api::spec::{
    Constraint, NetworkAttachment, PortConfig, Protocol, RuntimeOptions, ServiceMode, ServiceSpec,
    SpreadOver, UpdatePolicy,
};
use swarm_api::units::GoDuration;

use super::document::{
    RuntimeFlags, key_values, load_service_document, mounts_document, network_document,
    port_document,
};
use super::{FlagError, RollbackFlags, parsed, ratio};
use crate::stack::convert::runtime;

/// The flags of `service update`, as given; `None` and empty lists change nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateFlags {
    pub image: Option<String>,
    pub replicas: Option<u64>,
    /// A replicated job's tasks in progress at once.
    pub max_concurrent: Option<u64>,
    pub env_add: Vec<String>,
    pub env_rm: Vec<String>,
    pub constraint_add: Vec<String>,
    pub constraint_rm: Vec<String>,
    pub limit_cpu: Option<String>,
    pub limit_memory: Option<String>,
    /// 0 removes the limit, as in Docker.
    pub limit_pids: Option<u64>,
    pub reserve_cpu: Option<String>,
    pub reserve_memory: Option<String>,
    pub stop_grace_period: Option<String>,
    pub update_parallelism: Option<u64>,
    pub update_order: Option<String>,
    pub update_delay: Option<GoDuration>,
    pub update_failure_action: Option<String>,
    pub update_monitor: Option<GoDuration>,
    pub update_max_failure_ratio: Option<f64>,
    /// A command line; `""` puts the image's entrypoint back.
    pub entrypoint: Option<String>,
    pub rollback: RollbackFlags,
    /// The command's arguments, as a command line.
    pub args: Option<String>,
    pub label_add: Vec<String>,
    pub label_rm: Vec<String>,
    pub container_label_add: Vec<String>,
    pub container_label_rm: Vec<String>,
    /// As `create --publish`; one with the same published port and protocol is replaced.
    pub publish_add: Vec<String>,
    /// `TARGET[/PROTOCOL]`.
    pub publish_rm: Vec<String>,
    pub restart_condition: Option<String>,
    pub restart_delay: Option<GoDuration>,
    pub restart_max_attempts: Option<u64>,
    pub restart_window: Option<GoDuration>,
    /// Replaces the service's healthcheck.
    pub health_cmd: Option<String>,
    pub health_interval: Option<GoDuration>,
    pub health_timeout: Option<GoDuration>,
    pub health_retries: Option<u64>,
    pub health_start_period: Option<GoDuration>,
    pub health_start_interval: Option<GoDuration>,
    pub no_healthcheck: bool,
    /// `""` removes the setting, as for `user` and `workdir`.
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub stop_signal: Option<String>,
    pub placement_pref_add: Vec<String>,
    pub placement_pref_rm: Vec<String>,
    /// `NAME` or `name=NAME,alias=A`.
    pub network_add: Vec<String>,
    /// Network names.
    pub network_rm: Vec<String>,
    /// Docker's `--mount` syntax; replaces a mount on the same target.
    pub mount_add: Vec<String>,
    /// Mount targets.
    pub mount_rm: Vec<String>,
    /// Added to the capabilities (and no longer dropped).
    pub cap_add: Vec<String>,
    /// Dropped (and no longer added).
    pub cap_drop: Vec<String>,
    /// `KEY=VALUE`.
    pub sysctl_add: Vec<String>,
    /// Keys.
    pub sysctl_rm: Vec<String>,
    /// `NAME=SOFT[:HARD]`.
    pub ulimit_add: Vec<String>,
    /// Names.
    pub ulimit_rm: Vec<String>,
    pub read_only: Option<bool>,
    pub group_add: Vec<String>,
    pub group_rm: Vec<String>,
    /// Replaces the log driver, with `log_opt` as its options.
    pub log_driver: Option<String>,
    pub log_opt: Vec<String>,
    /// `HOST:ADDRESS`, added after the service's lines (one equal to it is not repeated).
    pub host_add: Vec<String>,
    /// `HOST` (every line of it) or `HOST:ADDRESS` (that line).
    pub host_rm: Vec<String>,
    pub dns_add: Vec<String>,
    pub dns_rm: Vec<String>,
    pub dns_search_add: Vec<String>,
    pub dns_search_rm: Vec<String>,
    pub dns_option_add: Vec<String>,
    pub dns_option_rm: Vec<String>,
    pub init: Option<bool>,
    pub tty: Option<bool>,
    /// -1000..1000; 0 takes the adjustment away.
    pub oom_score_adj: Option<i64>,
    /// `vip` or `dnsrr`.
    pub endpoint_mode: Option<String>,
    /// 0: no limit.
    pub replicas_max_per_node: Option<u64>,
    /// Secrets and configs attached (`--secret-add`, `--config-add`: Docker's syntax; one at
    /// the same target is replaced) and detached by name (`--secret-rm`, `--config-rm`).
    pub secret_add: Vec<String>,
    pub secret_rm: Vec<String>,
    pub config_add: Vec<String>,
    pub config_rm: Vec<String>,
    /// Replace every task even if nothing else changes.
    pub force: bool,
}

impl UpdateFlags {
    /// Changes `spec` as the flags say; the first bad value is refused, naming its flag.
    pub fn apply(&self, spec: &mut ServiceSpec) -> Result<(), FlagError> {
        self.apply_settings(spec)?;
        self.apply_networks(spec)?;
        let container = &mut spec.task.container;
        container
            .secrets
            .retain(|r| !self.secret_rm.contains(&r.source));
        container
            .configs
            .retain(|r| !self.config_rm.contains(&r.source));
        super::files::add(
            container,
            ("secret-add", "config-add"),
            &self.secret_add,
            &self.config_add,
        )?;
        self.rollback.apply(&mut spec.rollback)?;
        self.apply_container(spec)?;
        if self.force {
            spec.task.force_update += 1;
        }
        if spec.is_job()
            && (spec.update != UpdatePolicy::default() || spec.rollback != UpdatePolicy::default())
        {
            return Err(FlagError::JobUpdatePolicy);
        }
        Ok(())
    }

    /// Image, scale, environment, constraints, resources and the update policy.
    fn apply_settings(&self, spec: &mut ServiceSpec) -> Result<(), FlagError> {
        let task = &mut spec.task;
        if let Some(image) = &self.image {
            task.container.image = image.clone();
        }
        if let Some(replicas) = self.replicas {
            spec.mode = spec
                .mode
                .scaled(replicas)
                .ok_or(FlagError::ReplicasOfGlobal {
                    mode: spec.mode.display_name(),
                })?;
        }
        if let Some(most) = self.max_concurrent {
            match &mut spec.mode {
                ServiceMode::ReplicatedJob { max_concurrent, .. } => *max_concurrent = most,
                other => {
                    return Err(FlagError::MaxConcurrentWithoutJob {
                        this: Some(other.display_name()),
                    });
                }
            }
        }
        for (key, value) in key_values(&self.env_add, "env-add")? {
            swarm_api::template::check(&value).map_err(|error| {
                FlagError::invalid("env-add", &format!("{key}={value}"), error.to_string())
            })?;
            task.container.env.insert(key, value);
        }
        for key in &self.env_rm {
            task.container.env.remove(key);
        }
        let constraints = &mut task.placement.constraints;
        for text in &self.constraint_add {
            let constraint = parsed("constraint-add", text)?;
            if !constraints.contains(&constraint) {
                constraints.push(constraint);
            }
        }
        for text in &self.constraint_rm {
            let constraint: Constraint = parsed("constraint-rm", text)?;
            constraints.retain(|c| *c != constraint);
        }
        constraints.sort();
        let resources = &mut task.resources;
        if let Some(cpus) = &self.limit_cpu {
            resources.limits.cpus = Some(parsed("limit-cpu", cpus)?);
        }
        if let Some(memory) = &self.limit_memory {
            resources.limits.memory = Some(parsed("limit-memory", memory)?);
        }
        if let Some(pids) = self.limit_pids {
            resources.limits.pids = (pids > 0).then_some(pids);
        }
        if let Some(cpus) = &self.reserve_cpu {
            resources.reservations.cpus = Some(parsed("reserve-cpu", cpus)?);
        }
        if let Some(memory) = &self.reserve_memory {
            resources.reservations.memory = Some(parsed("reserve-memory", memory)?);
        }
        if let Some(grace) = &self.stop_grace_period {
            task.container.stop_grace_period = parsed("stop-grace-period", grace)?;
        }
        let update = &mut spec.update;
        if let Some(parallelism) = self.update_parallelism {
            update.parallelism = parallelism;
        }
        if let Some(order) = &self.update_order {
            update.order = serde_json::from_value(json!(order)).map_err(|_| {
                FlagError::invalid("update-order", order, "use start-first or stop-first")
            })?;
        }
        if let Some(delay) = self.update_delay {
            update.delay = delay;
        }
        if let Some(action) = &self.update_failure_action {
            update.failure_action = serde_json::from_value(json!(action)).map_err(|_| {
                FlagError::invalid(
                    "update-failure-action",
                    action,
                    "use pause, continue or rollback",
                )
            })?;
        }
        if let Some(monitor) = self.update_monitor {
            update.monitor = monitor;
        }
        if let Some(max) = self.update_max_failure_ratio {
            update.max_failure_ratio = ratio("update-max-failure-ratio", max)?;
        }
        if let Some(entrypoint) = &self.entrypoint {
            spec.task.container.entrypoint = match entrypoint.as_str() {
                "" => None,
                line => Some(command_line("entrypoint", line)?),
            };
        }
        Ok(())
    }

    /// Networks detached, then attached (replacing an attachment to the same network), as
    /// the loader makes them: aliases sorted, with the service's own name.
    fn apply_networks(&self, spec: &mut ServiceSpec) -> Result<(), FlagError> {
        let networks = &mut spec.task.networks;
        networks.retain(|n| !self.network_rm.contains(&n.target));
        for text in &self.network_add {
            let (target, attachment) = network_document("network-add", text)?;
            let mut aliases: Vec<String> = attachment["aliases"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .chain([spec.name.clone()])
                .collect();
            aliases.sort();
            aliases.dedup();
            networks.retain(|n| n.target != target);
            networks.push(NetworkAttachment { target, aliases });
        }
        networks.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(())
    }

    /// The container, its labels and ports, the restart policy and placement preferences.
    fn apply_container(&self, spec: &mut ServiceSpec) -> Result<(), FlagError> {
        let checked = self.checked_by_the_loader()?;
        let container = &mut spec.task.container;
        if let Some(args) = &self.args {
            container.command = Some(command_line("args", args)?);
        }
        spec.labels
            .extend(key_values(&self.label_add, "label-add")?);
        for key in &self.label_rm {
            spec.labels.remove(key);
        }
        container.labels.extend(key_values(
            &self.container_label_add,
            "container-label-add",
        )?);
        for key in &self.container_label_rm {
            container.labels.remove(key);
        }
        if let Some(hostname) = &self.hostname {
            swarm_api::template::check(hostname)
                .map_err(|error| FlagError::invalid("hostname", hostname, error.to_string()))?;
        }
        set(&mut container.hostname, &self.hostname);
        set(&mut container.user, &self.user);
        set(&mut container.working_dir, &self.workdir);
        if self.stop_signal.is_some() {
            container.stop_signal = checked.task.container.stop_signal.clone();
        }
        self.update_healthcheck(spec, &checked)?;
        let ports = &mut spec.endpoint.ports;
        for remove in &self.publish_rm {
            let (target, protocol) = target_port(remove)?;
            ports.retain(|p| {
                !(p.target == target && protocol.is_none_or(|protocol| p.protocol == protocol))
            });
        }
        for added in &checked.endpoint.ports {
            ports.retain(|p| !same_published(p, added));
            ports.push(added.clone());
        }
        ports.sort();
        if self.endpoint_mode.is_some() {
            spec.endpoint.mode = checked.endpoint.mode;
        }
        let mounts = &mut spec.task.container.mounts;
        mounts.retain(|m| !self.mount_rm.contains(&m.target));
        for added in &checked.task.container.mounts {
            mounts.retain(|m| m.target != added.target);
            mounts.push(added.clone());
        }
        mounts.sort_by(|a, b| a.target.cmp(&b.target));
        self.apply_runtime(
            &mut spec.task.container.runtime,
            &checked.task.container.runtime,
        )?;
        let restart = &mut spec.task.restart;
        if let Some(condition) = &self.restart_condition {
            restart.condition = serde_json::from_value(json!(condition)).map_err(|_| {
                FlagError::invalid(
                    "restart-condition",
                    condition,
                    "use none, on-failure or any",
                )
            })?;
        }
        if let Some(delay) = self.restart_delay {
            restart.delay = delay;
        }
        if let Some(attempts) = self.restart_max_attempts {
            restart.max_attempts = attempts;
        }
        if let Some(window) = self.restart_window {
            restart.window = window;
        }
        let placement = &mut spec.task.placement;
        for text in &self.placement_pref_rm {
            let removed = preference(text, "placement-pref-rm")?;
            placement.preferences.retain(|p| *p != removed);
        }
        for text in &self.placement_pref_add {
            let added = preference(text, "placement-pref-add")?;
            if !placement.preferences.contains(&added) {
                placement.preferences.push(added);
            }
        }
        if let Some(most) = self.replicas_max_per_node {
            placement.max_replicas_per_node = most;
        }
        Ok(())
    }

    /// Capabilities, sysctls, ulimits, groups, the read-only root, the log driver, hosts,
    /// resolver settings, init and the OOM score adjustment, as Docker's `service update`
    /// changes them; `checked` holds the added values, read by the stack loader.
    fn apply_runtime(
        &self,
        runtime: &mut RuntimeOptions,
        checked: &RuntimeOptions,
    ) -> Result<(), FlagError> {
        for added in &checked.capability_add {
            runtime.capability_drop.retain(|c| c != added);
            runtime.capability_add.push(added.clone());
        }
        for dropped in &checked.capability_drop {
            runtime.capability_add.retain(|c| c != dropped);
            runtime.capability_drop.push(dropped.clone());
        }
        for capabilities in [&mut runtime.capability_add, &mut runtime.capability_drop] {
            capabilities.sort();
            capabilities.dedup();
        }
        for key in &self.sysctl_rm {
            runtime.sysctls.remove(key);
        }
        runtime.sysctls.extend(checked.sysctls.clone());
        for name in &self.ulimit_rm {
            runtime.ulimits.remove(name);
        }
        runtime.ulimits.extend(checked.ulimits.clone());
        if let Some(read_only) = self.read_only {
            runtime.read_only = read_only;
        }
        runtime.groups.retain(|g| !self.group_rm.contains(g));
        for group in &checked.groups {
            if !runtime.groups.contains(group) {
                runtime.groups.push(group.clone());
            }
        }
        match (
            &self.log_driver,
            &checked.log_driver,
            &mut runtime.log_driver,
        ) {
            // Options alone change the current driver's.
            (None, Some(given), Some(current)) => current.options.extend(given.options.clone()),
            (_, Some(given), current) => *current = Some(given.clone()),
            (_, None, _) => {}
        }
        if let Some(init) = self.init {
            runtime.init = init;
        }
        if let Some(tty) = self.tty {
            runtime.tty = tty;
        }
        if self.oom_score_adj.is_some() {
            runtime.oom_score_adj = checked.oom_score_adj;
        }
        for text in &self.host_rm {
            let removed = match text.split_once(['=', ':']) {
                Some(_) => Some(
                    runtime::extra_host(text)
                        .map_err(|refusal| FlagError::invalid("host-rm", text, refusal.message))?,
                ),
                None => None,
            };
            runtime.extra_hosts.retain(|host| match &removed {
                Some(removed) => host != removed,
                None => host.name != *text,
            });
        }
        for added in &checked.extra_hosts {
            if !runtime.extra_hosts.contains(added) {
                runtime.extra_hosts.push(added.clone());
            }
        }
        let dns = &mut runtime.dns;
        for text in &self.dns_rm {
            let removed = runtime::nameserver(text)
                .map_err(|refusal| FlagError::invalid("dns-rm", text, refusal.message))?;
            dns.nameservers.retain(|server| *server != removed);
        }
        dns.search
            .retain(|domain| !self.dns_search_rm.contains(domain));
        dns.options
            .retain(|option| !self.dns_option_rm.contains(option));
        let lists = [
            (&mut dns.search, &checked.dns.search),
            (&mut dns.options, &checked.dns.options),
        ];
        for (list, added) in lists {
            for item in added {
                if !list.contains(item) {
                    list.push(item.clone());
                }
            }
        }
        for server in &checked.dns.nameservers {
            if !dns.nameservers.contains(server) {
                dns.nameservers.push(*server);
            }
        }
        Ok(())
    }

    /// The flags whose values only the stack loader checks fully (ports, a new
    /// healthcheck, the stop signal), as a spec of their own.
    fn checked_by_the_loader(&self) -> Result<ServiceSpec, FlagError> {
        let ports = self
            .publish_add
            .iter()
            .map(|p| port_document(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut service = json!({ "image": "checked", "ports": ports });
        if let Value::Object(mapping) = &mut service {
            mounts_document("mount-add", &self.mount_add, mapping)?;
            RuntimeFlags {
                cap_add: &self.cap_add,
                cap_drop: &self.cap_drop,
                sysctls: &self.sysctl_add,
                ulimits: ("ulimit-add", &self.ulimit_add),
                // Read by apply_runtime: `--read-only=false` must be able to unset it.
                read_only: false,
                groups: &self.group_add,
                log_driver: self.log_driver.as_deref(),
                log_opt: &self.log_opt,
                hosts: &self.host_add,
                dns: &self.dns_add,
                dns_search: &self.dns_search_add,
                dns_options: &self.dns_option_add,
                // Read by apply_runtime, as read_only.
                init: false,
                tty: false,
                oom_score_adj: self.oom_score_adj,
            }
            .insert_into(mapping)?;
        }
        if let Some(cmd) = &self.health_cmd {
            let mut health = json!({ "test": ["CMD-SHELL", cmd] });
            let durations = [
                ("interval", self.health_interval),
                ("timeout", self.health_timeout),
                ("start_period", self.health_start_period),
                ("start_interval", self.health_start_interval),
            ];
            for (key, value) in durations {
                if let Some(value) = value {
                    health[key] = json!(value.to_string());
                }
            }
            if let Some(retries) = self.health_retries {
                health["retries"] = json!(retries);
            }
            service["healthcheck"] = health;
        }
        if let Some(signal) = &self.stop_signal {
            service["stop_signal"] = json!(signal);
        }
        if let Some(mode) = &self.endpoint_mode {
            service["deploy"] = json!({ "endpoint_mode": mode });
        }
        load_service_document("update", service)
    }

    fn update_healthcheck(
        &self,
        spec: &mut ServiceSpec,
        checked: &ServiceSpec,
    ) -> Result<(), FlagError> {
        let healthcheck = &mut spec.task.container.healthcheck;
        if self.no_healthcheck {
            *healthcheck = None;
            return Ok(());
        }
        if self.health_cmd.is_some() {
            *healthcheck = checked.task.container.healthcheck.clone();
            return Ok(());
        }
        let settings = self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some();
        if !settings {
            return Ok(());
        }
        let Some(healthcheck) = healthcheck else {
            return Err(FlagError::NoHealthcheck);
        };
        if let Some(interval) = self.health_interval {
            healthcheck.interval = interval;
        }
        if let Some(timeout) = self.health_timeout {
            healthcheck.timeout = timeout;
        }
        if let Some(retries) = self.health_retries {
            healthcheck.retries = retries;
        }
        if let Some(start_period) = self.health_start_period {
            healthcheck.start_period = start_period;
        }
        if let Some(start_interval) = self.health_start_interval {
            healthcheck.start_interval = start_interval;
        }
        Ok(())
    }
}

/// A command line split as a shell would (`--args`, `--entrypoint`).
fn command_line(flag: &'static str, line: &str) -> Result<Vec<String>, FlagError> {
    shlex::split(line).ok_or_else(|| FlagError::invalid(flag, line, "unbalanced quotes"))
}

fn set(field: &mut Option<String>, value: &Option<String>) {
    if let Some(value) = value {
        *field = (!value.is_empty()).then(|| value.clone());
    }
}

/// Two ports that publish the same port number and protocol: the later replaces the earlier.
fn same_published(a: &PortConfig, b: &PortConfig) -> bool {
    a.protocol == b.protocol
        && match (a.published, b.published) {
            (Some(x), Some(y)) => x == y,
            (None, None) => a.target == b.target,
            _ => false,
        }
}

/// `TARGET[/PROTOCOL]` of `--publish-rm`.
fn target_port(text: &str) -> Result<(u16, Option<Protocol>), FlagError> {
    let invalid = || {
        FlagError::invalid(
            "publish-rm",
            text,
            "expected TARGET[/PROTOCOL], such as 80 or 53/udp",
        )
    };
    let (port, protocol) = match text.split_once('/') {
        Some((port, protocol)) => (port, Some(protocol)),
        None => (text, None),
    };
    let port = port.parse().map_err(|_| invalid())?;
    let protocol = protocol
        .map(|p| serde_json::from_value(json!(p)).map_err(|_| invalid()))
        .transpose()?;
    Ok((port, protocol))
}

/// `spread=node.labels.X`.
fn preference(text: &str, flag: &'static str) -> Result<SpreadOver, FlagError> {
    match text.strip_prefix("spread=") {
        Some(spread) if !spread.trim().is_empty() => Ok(SpreadOver {
            spread: spread.trim().to_owned(),
        }),
        _ => Err(FlagError::invalid(
            flag,
            text,
            "expected spread=node.labels.NAME",
        )),
    }
}
