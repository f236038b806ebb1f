//! The `service update` flags that change a service's container, restart policy and
//! placement, as Docker names them: settings (`--hostname`, `--restart-delay`, …) and
//! `--*-add`/`--*-rm` pairs for lists and maps. Values are checked as `service create`
//! checks them (ports and healthchecks through the stack loader).

use clap::Args;
use serde_json::json;
use swarm_api::spec::{PortConfig, ServiceSpec, SpreadOver};
use swarm_api::units::GoDuration;

use crate::service::{key_values, load_service_document, port_document};

#[derive(Debug, Default, Args)]
pub struct UpdateFlags {
    /// The command's arguments, as a command line (replace the service's)
    #[arg(long)]
    args: Option<String>,
    /// Add or change service labels: KEY=VALUE
    #[arg(long)]
    label_add: Vec<String>,
    /// Remove service labels: KEY
    #[arg(long)]
    label_rm: Vec<String>,
    /// Add or change container labels: KEY=VALUE
    #[arg(long)]
    container_label_add: Vec<String>,
    /// Remove container labels: KEY
    #[arg(long)]
    container_label_rm: Vec<String>,
    /// Add or change a published port, as `create --publish` (one with the same published
    /// port and protocol is replaced)
    #[arg(long)]
    publish_add: Vec<String>,
    /// Remove published ports by their target port: TARGET[/PROTOCOL]
    #[arg(long)]
    publish_rm: Vec<String>,
    /// Restart when: none, on-failure or any
    #[arg(long)]
    restart_condition: Option<String>,
    /// Wait between restarts
    #[arg(long)]
    restart_delay: Option<GoDuration>,
    /// Give up after this many restarts (0: never)
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// The window in which restarts are counted
    #[arg(long)]
    restart_window: Option<GoDuration>,
    /// Healthcheck command, run with the shell (replaces the service's healthcheck)
    #[arg(long)]
    health_cmd: Option<String>,
    /// Time between two checks
    #[arg(long)]
    health_interval: Option<GoDuration>,
    /// Longest a check may run
    #[arg(long)]
    health_timeout: Option<GoDuration>,
    /// Failures in a row that make a task unhealthy
    #[arg(long)]
    health_retries: Option<u64>,
    /// Time a task has to start before failures count
    #[arg(long)]
    health_start_period: Option<GoDuration>,
    /// Remove the service's healthcheck
    #[arg(long, conflicts_with = "health_cmd")]
    no_healthcheck: bool,
    /// The containers' hostname (Go templates such as {{.Node.Hostname}} allowed)
    #[arg(long)]
    hostname: Option<String>,
    /// User inside the containers: USER[:GROUP]
    #[arg(long, short)]
    user: Option<String>,
    /// Working directory inside the containers
    #[arg(long, short)]
    workdir: Option<String>,
    /// Signal that stops a task
    #[arg(long)]
    stop_signal: Option<String>,
    /// Add a placement preference: spread=node.labels.X
    #[arg(long)]
    placement_pref_add: Vec<String>,
    /// Remove a placement preference: spread=node.labels.X
    #[arg(long)]
    placement_pref_rm: Vec<String>,
    /// At most this many tasks of the service on one node (0: no limit)
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
}

impl UpdateFlags {
    /// Changes `spec` as the flags say.
    pub fn apply(&self, spec: &mut ServiceSpec) -> anyhow::Result<()> {
        let checked = self.checked_by_the_loader()?;
        let container = &mut spec.task.container;
        if let Some(args) = &self.args {
            container.command =
                Some(shlex::split(args).ok_or_else(|| {
                    anyhow::anyhow!("invalid --args {args:?}: unbalanced quotes")
                })?);
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
        let restart = &mut spec.task.restart;
        if let Some(condition) = &self.restart_condition {
            restart.condition = serde_json::from_value(json!(condition)).map_err(|_| {
                anyhow::anyhow!(
                    "invalid --restart-condition {condition:?}: use none, on-failure or any"
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

    /// The flags whose values only the stack loader checks fully (ports, a new
    /// healthcheck, the stop signal), as a spec of their own.
    fn checked_by_the_loader(&self) -> anyhow::Result<ServiceSpec> {
        let ports = self
            .publish_add
            .iter()
            .map(|p| port_document(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut service = json!({ "image": "checked", "ports": ports });
        if let Some(cmd) = &self.health_cmd {
            let mut health = json!({ "test": ["CMD-SHELL", cmd] });
            let durations = [
                ("interval", self.health_interval),
                ("timeout", self.health_timeout),
                ("start_period", self.health_start_period),
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
        load_service_document("update", service)
    }

    fn update_healthcheck(
        &self,
        spec: &mut ServiceSpec,
        checked: &ServiceSpec,
    ) -> anyhow::Result<()> {
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
            || self.health_start_period.is_some();
        if !settings {
            return Ok(());
        }
        let Some(healthcheck) = healthcheck else {
            anyhow::bail!("the service has no healthcheck to change: give one with --health-cmd");
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
        Ok(())
    }
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
fn target_port(text: &str) -> anyhow::Result<(u16, Option<swarm_api::spec::Protocol>)> {
    let invalid = || {
        anyhow::anyhow!(
            "invalid --publish-rm {text:?}: expected TARGET[/PROTOCOL], such as 80 or 53/udp"
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
fn preference(text: &str, flag: &str) -> anyhow::Result<SpreadOver> {
    match text.strip_prefix("spread=") {
        Some(spread) if !spread.is_empty() => Ok(SpreadOver {
            spread: spread.to_owned(),
        }),
        _ => anyhow::bail!("invalid --{flag} {text:?}: expected spread=node.labels.NAME"),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: UpdateFlags,
    }

    fn service() -> ServiceSpec {
        load_service_document(
            "web",
            json!({
                "image": "web:1",
                "ports": ["8080:80", "53:53/udp"],
                "labels": {"tier": "front"},
                "deploy": {"labels": {"team": "a"}, "placement": {"preferences": [{"spread": "node.labels.zone"}]}},
            }),
        )
        .unwrap()
    }

    fn updated(args: &[&str]) -> anyhow::Result<ServiceSpec> {
        let mut argv = vec!["update"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv)?;
        let mut spec = service();
        cli.flags.apply(&mut spec)?;
        Ok(spec)
    }

    #[test]
    fn flags_change_only_what_they_name() {
        let spec = updated(&[
            "--args",
            "httpd -f -p '8 0'",
            "--label-add",
            "team=b",
            "--container-label-rm",
            "tier",
            "--publish-add",
            "8080:8000",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "53/udp",
            "--restart-condition",
            "on-failure",
            "--restart-max-attempts",
            "3",
            "--health-cmd",
            "wget -q -O- localhost",
            "--health-retries",
            "2",
            "--hostname",
            "{{.Task.Slot}}",
            "--stop-signal",
            "SIGUSR1",
            "--placement-pref-rm",
            "spread=node.labels.zone",
            "--placement-pref-add",
            "spread=node.labels.rack",
        ])
        .unwrap();
        let container = &spec.task.container;
        assert_eq!(
            container.command.as_deref(),
            Some(&["httpd".to_owned(), "-f".into(), "-p".into(), "8 0".into()][..])
        );
        assert_eq!(spec.labels["team"], "b");
        assert!(container.labels.is_empty());
        let ports: Vec<String> = spec.endpoint.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["*:8080->8000/tcp", "*:9090->90/tcp"]);
        assert_eq!(spec.task.restart.max_attempts, 3);
        assert_eq!(spec.task.restart.delay.to_string(), "5s", "unchanged");
        let health = container.healthcheck.as_ref().unwrap();
        assert_eq!(health.test, ["CMD-SHELL", "wget -q -O- localhost"]);
        assert_eq!(health.retries, 2);
        assert_eq!(container.hostname.as_deref(), Some("{{.Task.Slot}}"));
        assert_eq!(container.stop_signal.as_deref(), Some("SIGUSR1"));
        let spreads: Vec<&str> = spec
            .task
            .placement
            .preferences
            .iter()
            .map(|p| p.spread.as_str())
            .collect();
        assert_eq!(spreads, ["node.labels.rack"]);
    }

    #[test]
    fn bad_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--publish-add", "80:x"], "--publish"),
            (&["--publish-rm", "http"], "--publish-rm"),
            (&["--restart-condition", "sometimes"], "--restart-condition"),
            (
                &["--placement-pref-add", "node.labels.x"],
                "--placement-pref-add",
            ),
            (&["--health-interval", "5s"], "--health-cmd"),
            (&["--args", "sh -c 'oops"], "--args"),
            (&["--label-add", "novalue"], "--label-add"),
        ];
        for (args, flag) in cases {
            let error = updated(args).unwrap_err().to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }
}
