//! The `service update` flags that change a service's container, restart policy and
//! placement, as Docker names them: settings (`--hostname`, `--restart-delay`, …) and
//! `--*-add`/`--*-rm` pairs for lists and maps. `swarm_controller::deploy::flags::UpdateFlags`
//! checks the values (as `service create` checks them) and applies them.

use clap::Args;
use swarm_api::units::GoDuration;
use swarm_controller::deploy::flags;

#[derive(Debug, Args)]
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
    /// Time between checks during the start period
    #[arg(long)]
    health_start_interval: Option<GoDuration>,
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
    /// Attach to a network: NAME or name=NAME,alias=ALIAS (repeatable)
    #[arg(long)]
    network_add: Vec<String>,
    /// Detach from a network by name (repeatable)
    #[arg(long)]
    network_rm: Vec<String>,
    /// Add or replace a secret: NAME or source=NAME,target=T,uid=U,gid=G,mode=0440
    #[arg(long)]
    secret_add: Vec<String>,
    /// Remove a secret by name (repeatable)
    #[arg(long)]
    secret_rm: Vec<String>,
    /// Add or replace a config: NAME or source=NAME,target=T,uid=U,gid=G,mode=0440
    #[arg(long)]
    config_add: Vec<String>,
    /// Remove a config by name (repeatable)
    #[arg(long)]
    config_rm: Vec<String>,
    /// Add or replace a mount (Docker's --mount syntax; see `service create --help`)
    #[arg(long)]
    mount_add: Vec<String>,
    /// Remove the mount at this target path
    #[arg(long)]
    mount_rm: Vec<String>,
    /// Add a Linux capability (and stop dropping it) (repeatable)
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a Linux capability (and stop adding it) (repeatable)
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Set a kernel parameter, KEY=VALUE (repeatable)
    #[arg(long)]
    sysctl_add: Vec<String>,
    /// Unset a kernel parameter by key (repeatable)
    #[arg(long)]
    sysctl_rm: Vec<String>,
    /// Set a process limit, NAME=SOFT[:HARD] (repeatable)
    #[arg(long)]
    ulimit_add: Vec<String>,
    /// Remove a process limit by name (repeatable)
    #[arg(long)]
    ulimit_rm: Vec<String>,
    /// Mount the root filesystem read-only (--read-only, or --read-only=false)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    read_only: Option<bool>,
    /// Add a supplementary group (repeatable)
    #[arg(long)]
    group_add: Vec<String>,
    /// Remove a supplementary group (repeatable)
    #[arg(long)]
    group_rm: Vec<String>,
    /// Replace the log driver (json-file or local)
    #[arg(long)]
    log_driver: Option<String>,
    /// A log driver option, max-size=SIZE or max-file=N (repeatable)
    #[arg(long)]
    log_opt: Vec<String>,
    /// Add a line to the task's /etc/hosts, HOST:ADDRESS (repeatable)
    #[arg(long)]
    host_add: Vec<String>,
    /// Remove the /etc/hosts lines of HOST, or the one HOST:ADDRESS (repeatable)
    #[arg(long)]
    host_rm: Vec<String>,
    /// Add a nameserver (repeatable)
    #[arg(long)]
    dns_add: Vec<String>,
    /// Remove a nameserver (repeatable)
    #[arg(long)]
    dns_rm: Vec<String>,
    /// Add a search domain (repeatable)
    #[arg(long)]
    dns_search_add: Vec<String>,
    /// Remove a search domain (repeatable)
    #[arg(long)]
    dns_search_rm: Vec<String>,
    /// Add a resolver option, e.g. ndots:2 (repeatable)
    #[arg(long)]
    dns_option_add: Vec<String>,
    /// Remove a resolver option (repeatable)
    #[arg(long)]
    dns_option_rm: Vec<String>,
    /// Run swarm's init as PID 1 (--init, or --init=false)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    init: Option<bool>,
    /// Run the command on a terminal (-t or --tty, or --tty=false)
    #[arg(
        short = 't',
        long,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    tty: Option<bool>,
    /// Added to the out-of-memory score of the tasks' processes: -1000 to 1000 (0: none)
    #[arg(long, allow_negative_numbers = true)]
    oom_score_adj: Option<i64>,
    /// vip or dnsrr
    #[arg(long)]
    endpoint_mode: Option<String>,
    /// At most this many tasks of the service on one node (0: no limit)
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
}

impl UpdateFlags {
    /// These flags over `settings` (the rest of `service update`'s), for the library.
    pub fn flags(&self, settings: flags::UpdateFlags) -> flags::UpdateFlags {
        flags::UpdateFlags {
            args: self.args.clone(),
            label_add: self.label_add.clone(),
            label_rm: self.label_rm.clone(),
            container_label_add: self.container_label_add.clone(),
            container_label_rm: self.container_label_rm.clone(),
            publish_add: self.publish_add.clone(),
            publish_rm: self.publish_rm.clone(),
            restart_condition: self.restart_condition.clone(),
            restart_delay: self.restart_delay,
            restart_max_attempts: self.restart_max_attempts,
            restart_window: self.restart_window,
            health_cmd: self.health_cmd.clone(),
            health_interval: self.health_interval,
            health_timeout: self.health_timeout,
            health_retries: self.health_retries,
            health_start_period: self.health_start_period,
            health_start_interval: self.health_start_interval,
            no_healthcheck: self.no_healthcheck,
            hostname: self.hostname.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            stop_signal: self.stop_signal.clone(),
            placement_pref_add: self.placement_pref_add.clone(),
            placement_pref_rm: self.placement_pref_rm.clone(),
            network_add: self.network_add.clone(),
            network_rm: self.network_rm.clone(),
            secret_add: self.secret_add.clone(),
            secret_rm: self.secret_rm.clone(),
            config_add: self.config_add.clone(),
            config_rm: self.config_rm.clone(),
            mount_add: self.mount_add.clone(),
            mount_rm: self.mount_rm.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctl_add: self.sysctl_add.clone(),
            sysctl_rm: self.sysctl_rm.clone(),
            ulimit_add: self.ulimit_add.clone(),
            ulimit_rm: self.ulimit_rm.clone(),
            read_only: self.read_only,
            group_add: self.group_add.clone(),
            group_rm: self.group_rm.clone(),
            log_driver: self.log_driver.clone(),
            log_opt: self.log_opt.clone(),
            host_add: self.host_add.clone(),
            host_rm: self.host_rm.clone(),
            dns_add: self.dns_add.clone(),
            dns_rm: self.dns_rm.clone(),
            dns_search_add: self.dns_search_add.clone(),
            dns_search_rm: self.dns_search_rm.clone(),
            dns_option_add: self.dns_option_add.clone(),
            dns_option_rm: self.dns_option_rm.clone(),
            init: self.init,
            tty: self.tty,
            oom_score_adj: self.oom_score_adj,
            endpoint_mode: self.endpoint_mode.clone(),
            replicas_max_per_node: self.replicas_max_per_node,
            ..settings
        }
    }
}
