//! `swarm service create|ls|ps|inspect|update|rollback|scale|rm|logs`.
//!
//! The flags are clap's here and plain data in `swarm_controller::deploy::flags`, which
//! turns them into specs (through the stack loader, so `service create` and `stack deploy`
//! give equal specs for equal intents); this file talks to the daemon and prints.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use swarm_api::grpc::control::{
    CreateServiceRequest, RemoveServiceRequest, RollbackServiceRequest, UpdateServiceRequest,
};
use swarm_api::spec::ServiceSpec;
use swarm_api::state::Object;
use swarm_api::task::{ServicesView, Task};
use swarm_api::units::GoDuration;
use swarm_controller::deploy::flags;

use crate::client::{self, Host, view};
use crate::converge::{Change, Wait};
use crate::output::{ListFormat, print_services_from};
use crate::rollback_flags::RollbackFlags;
use crate::tasks::{TaskListArgs, hostname, print_ports_taken, print_tasks};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a service
    Create(Box<CreateArgs>),
    /// List services
    #[command(alias = "list")]
    Ls {
        /// Only the IDs
        #[arg(long, short)]
        quiet: bool,
        /// Only services matching KEY=VALUE: name (a prefix), id (a prefix), label (KEY or
        /// KEY=VALUE; com.docker.stack.namespace=STACK: a stack's services), mode (replicated,
        /// global, replicated-job or global-job); repeat a key for alternatives (labels must
        /// all match)
        #[arg(long, short)]
        filter: Vec<String>,
        /// Whole ids
        #[arg(long)]
        no_trunc: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.Name}}\t{{.Replicas}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// List the tasks of services
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        #[command(flatten)]
        listing: TaskListArgs,
    },
    /// Show services in detail (JSON, with their update status)
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        /// A summary for people instead of JSON
        #[arg(long, conflicts_with = "format")]
        pretty: bool,
        /// A Go template over each service's JSON (its fields as `inspect` prints them):
        /// `{{.spec.task.container.image}}`, `{{json .Endpoint}}`
        #[arg(long, short)]
        format: Option<String>,
    },
    /// Change a service: its tasks are replaced as its update policy says
    Update(Box<UpdateArgs>),
    /// Put a service back to its spec before its last change
    Rollback {
        service: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Scale replicated services: NAME=REPLICAS…
    Scale {
        #[arg(required = true)]
        scales: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove services
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Show the logs of a service's tasks, or of one task
    Logs(Box<crate::logs::LogsArgs>),
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The service: its name, id or a unique id prefix
    service: String,
    /// A new image
    #[arg(long)]
    image: Option<String>,
    /// Number of tasks (replicated mode), or completions (replicated-job mode)
    #[arg(long)]
    replicas: Option<u64>,
    /// Number of job tasks to run at once (replicated-job mode)
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Add or change environment variables: KEY=VALUE
    #[arg(long)]
    env_add: Vec<String>,
    /// Remove environment variables: KEY
    #[arg(long)]
    env_rm: Vec<String>,
    /// Add placement constraints (attributes as for `service create --constraint`)
    #[arg(long)]
    constraint_add: Vec<String>,
    /// Remove placement constraints (as written when added)
    #[arg(long)]
    constraint_rm: Vec<String>,
    /// CPU limit per task (e.g. 0.5)
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Memory limit per task (e.g. 256M)
    #[arg(long)]
    limit_memory: Option<String>,
    /// Most processes per task (0: no limit)
    #[arg(long)]
    limit_pids: Option<u64>,
    /// CPUs reserved per task
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Memory reserved per task
    #[arg(long)]
    reserve_memory: Option<String>,
    /// Time to wait for a task to stop before killing it
    #[arg(long)]
    stop_grace_period: Option<String>,
    /// Tasks updated at once (0: all)
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// start-first or stop-first
    #[arg(long)]
    update_order: Option<String>,
    /// Wait between updates of batches
    #[arg(long)]
    update_delay: Option<GoDuration>,
    /// pause, continue or rollback
    #[arg(long)]
    update_failure_action: Option<String>,
    /// How long each updated task is watched for failure
    #[arg(long)]
    update_monitor: Option<GoDuration>,
    /// Failures tolerated during an update (0 to 1)
    #[arg(long)]
    update_max_failure_ratio: Option<f64>,
    /// Overrides the image's entrypoint (a command line; "" puts the image's back)
    #[arg(long)]
    entrypoint: Option<String>,
    #[command(flatten)]
    rollback: RollbackFlags,
    #[command(flatten)]
    container: crate::update_flags::UpdateFlags,
    /// Replace every task even if nothing else changes
    #[arg(long)]
    force: bool,
    /// Send the registry credentials of Docker's client config to the nodes
    #[arg(long)]
    with_registry_auth: bool,
    /// Roll back to the spec before the last change, as `service rollback` (no other
    /// change may be asked with it)
    #[arg(long = "rollback")]
    roll_back: bool,
    #[command(flatten)]
    wait: Wait,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The service's name [default: a generated one, such as brave_lovelace]
    #[arg(long)]
    name: Option<String>,
    /// replicated, global, replicated-job or global-job
    #[arg(long, default_value = "replicated")]
    mode: String,
    /// Number of tasks (replicated mode), or completions (replicated-job mode)
    #[arg(long)]
    replicas: Option<u64>,
    /// Number of job tasks to run at once (replicated-job mode) [default: --replicas]
    #[arg(long)]
    max_concurrent: Option<u64>,
    /// Publish a port: [mode=host,]PUBLISHED:TARGET[/udp], or published=P,target=T,mode=M,protocol=P
    #[arg(long, short)]
    publish: Vec<String>,
    /// Environment variables: KEY=VALUE
    #[arg(long, short)]
    env: Vec<String>,
    /// Read environment variables from a file: KEY=VALUE lines (a KEY alone takes the
    /// value this command sees), # comments; --env wins over it
    #[arg(long)]
    env_file: Vec<std::path::PathBuf>,
    /// Service labels: KEY=VALUE
    #[arg(long, short)]
    label: Vec<String>,
    /// Container labels: KEY=VALUE
    #[arg(long)]
    container_label: Vec<String>,
    /// Placement constraints, ATTRIBUTE==VALUE or ATTRIBUTE!=VALUE, e.g. node.labels.zone==a.
    /// Attributes: node.id, node.hostname, node.ip (an address or a CIDR range), node.role
    /// (manager or worker), node.platform.os, node.platform.arch, node.labels.<name>,
    /// engine.labels.<name>
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preferences: spread=node.labels.X
    #[arg(long)]
    placement_pref: Vec<String>,
    /// Attach to a cluster network: NAME or name=NAME,alias=ALIAS (repeatable)
    #[arg(long)]
    network: Vec<String>,
    /// Give a secret: NAME or source=NAME,target=T,uid=U,gid=G,mode=0440 (repeatable;
    /// a relative target is under /run/secrets)
    #[arg(long)]
    secret: Vec<String>,
    /// Give a config: NAME or source=NAME,target=T,uid=U,gid=G,mode=0440 (repeatable;
    /// the target defaults to /NAME)
    #[arg(long)]
    config: Vec<String>,
    /// Attach a mount: type=volume|bind|tmpfs,source=…,target=…[,readonly][,volume-nocopy]
    /// [,volume-driver=…][,volume-opt=K=V][,bind-propagation=…][,tmpfs-size=…][,tmpfs-mode=…]
    /// (repeatable)
    #[arg(long)]
    mount: Vec<String>,
    /// Add a Linux capability to the default set: NET_ADMIN, SYS_PTRACE…, or ALL (repeatable)
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a Linux capability from the default set, or ALL (repeatable)
    #[arg(long)]
    cap_drop: Vec<String>,
    /// A namespaced kernel parameter, KEY=VALUE (net.*, kernel.shm*, …) (repeatable)
    #[arg(long)]
    sysctl: Vec<String>,
    /// A process limit, NAME=SOFT[:HARD] (e.g. nofile=1024:4096) (repeatable)
    #[arg(long)]
    ulimit: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// A supplementary group, by name or number (repeatable)
    #[arg(long)]
    group: Vec<String>,
    /// The log driver: json-file (default) or local
    #[arg(long)]
    log_driver: Option<String>,
    /// A line of the task's /etc/hosts, HOST:ADDRESS (repeatable; Docker's `service create
    /// --host`, which here names the daemon)
    #[arg(long)]
    add_host: Vec<String>,
    /// A nameserver for names the cluster does not answer (repeatable)
    #[arg(long)]
    dns: Vec<String>,
    /// A search domain of the task's resolv.conf (repeatable)
    #[arg(long)]
    dns_search: Vec<String>,
    /// A resolver option of the task's resolv.conf, e.g. ndots:2 (repeatable)
    #[arg(long)]
    dns_option: Vec<String>,
    /// Run swarm's init as PID 1: it reaps zombies and forwards signals to the command
    #[arg(long)]
    init: bool,
    /// Run the command on a terminal (its output logged as one stream, lines in CRLF)
    #[arg(short = 't', long)]
    tty: bool,
    /// Added to the out-of-memory score of the tasks' processes: -1000 (never chosen) to 1000
    #[arg(long, allow_negative_numbers = true)]
    oom_score_adj: Option<i64>,
    /// How the service is found by name: vip (one virtual IP, balanced) or dnsrr (its
    /// tasks' addresses)
    #[arg(long)]
    endpoint_mode: Option<String>,
    /// A log driver option: max-size=SIZE, max-file=N (repeatable)
    #[arg(long)]
    log_opt: Vec<String>,
    /// At most this many tasks of the service on one node
    #[arg(long)]
    replicas_max_per_node: Option<u64>,
    /// CPUs reserved per task (e.g. 0.5)
    #[arg(long)]
    reserve_cpu: Option<String>,
    /// Memory reserved per task (e.g. 256M)
    #[arg(long)]
    reserve_memory: Option<String>,
    /// CPU limit per task
    #[arg(long)]
    limit_cpu: Option<String>,
    /// Memory limit per task
    #[arg(long)]
    limit_memory: Option<String>,
    /// Most processes per task (0: no limit)
    #[arg(long)]
    limit_pids: Option<u64>,
    /// Restart when: none, on-failure or any
    #[arg(long)]
    restart_condition: Option<String>,
    /// Wait between restarts (e.g. 5s)
    #[arg(long)]
    restart_delay: Option<String>,
    /// Give up after this many restarts (0: never)
    #[arg(long)]
    restart_max_attempts: Option<u64>,
    /// The window in which restarts are counted
    #[arg(long)]
    restart_window: Option<String>,
    /// Tasks updated at once (0: all)
    #[arg(long)]
    update_parallelism: Option<u64>,
    /// Wait between updates of batches
    #[arg(long)]
    update_delay: Option<String>,
    /// start-first or stop-first
    #[arg(long)]
    update_order: Option<String>,
    /// pause, continue or rollback
    #[arg(long)]
    update_failure_action: Option<String>,
    /// How long each updated task is watched for failure
    #[arg(long)]
    update_monitor: Option<String>,
    /// Failures tolerated during an update (0 to 1)
    #[arg(long)]
    update_max_failure_ratio: Option<f64>,
    #[command(flatten)]
    rollback: RollbackFlags,
    /// Healthcheck command, run with the shell
    #[arg(long)]
    health_cmd: Option<String>,
    #[arg(long)]
    health_interval: Option<String>,
    #[arg(long)]
    health_timeout: Option<String>,
    #[arg(long)]
    health_retries: Option<u64>,
    #[arg(long)]
    health_start_period: Option<String>,
    /// Time between checks during the start period
    #[arg(long)]
    health_start_interval: Option<String>,
    /// Time to wait for a task to stop before killing it
    #[arg(long)]
    stop_grace_period: Option<String>,
    /// Signal that stops a task
    #[arg(long)]
    stop_signal: Option<String>,
    /// The containers' hostname (Go templates such as {{.Node.Hostname}} allowed)
    #[arg(long)]
    hostname: Option<String>,
    /// Working directory inside the containers
    #[arg(long, short)]
    workdir: Option<String>,
    /// User inside the containers: USER[:GROUP]
    #[arg(long, short)]
    user: Option<String>,
    /// Overrides the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// Send the registry credentials of Docker's client config to the nodes
    #[arg(long)]
    with_registry_auth: bool,
    #[command(flatten)]
    wait: Wait,
    /// The image
    image: String,
    /// The command and its arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn run(host: &Host, command: ServiceCommand) -> anyhow::Result<ExitCode> {
    match command {
        ServiceCommand::Create(args) => create(host, *args).await,
        ServiceCommand::Logs(args) => crate::logs::run(host, *args).await,
        ServiceCommand::Ls {
            quiet,
            filter,
            no_trunc,
            format,
        } => {
            let filter = crate::filter::ServiceFilter::parse(&filter)?;
            let sources = crate::gitops::sources(host).await?;
            let mut view = view(host).await?;
            view.services.retain(|service| filter.matches(service));
            print_services_from(&view, &sources, quiet, &format, no_trunc)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Ps { services, listing } => {
            let filter = listing.filter()?;
            let view = view(host).await?;
            let mut tasks: Vec<&Task> = Vec::new();
            let mut published = Vec::new();
            for reference in &services {
                let service = resolve(&view, reference)?;
                published.extend(
                    view.ports_of(service)
                        .iter()
                        .filter_map(|p| Some(format!("{}/{}", p.published?, p.protocol))),
                );
                tasks.extend(
                    view.tasks
                        .iter()
                        .filter(|t| Some(&t.service_id) == service.id.as_ref())
                        .filter(|t| filter.matches(t, hostname(&view, t))),
                );
            }
            print_tasks(&view, tasks, &listing)?;
            if listing.is_table() {
                print_ports_taken(host, |_, port| published.iter().any(|p| p == port)).await?;
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Inspect {
            services,
            pretty,
            format,
        } => {
            let view = view(host).await?;
            let found = services
                .iter()
                .map(|reference| resolve(&view, reference))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if pretty {
                print!("{}", crate::inspect::pretty(&view, &found));
            } else if let Some(template) = format {
                let mut objects = crate::inspect::objects(&view, &found)?;
                // Fields a service may have, there (empty) for a template to test.
                for object in objects.iter_mut().filter_map(|o| o.as_object_mut()) {
                    for field in ["UpdateStatus", "Endpoint"] {
                        object
                            .entry(field.to_owned())
                            .or_insert(serde_json::Value::Null);
                    }
                }
                print!("{}", crate::go_template::render_each(&template, &objects)?);
            } else {
                println!("{}", crate::inspect::json(&view, &found)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Update(args) => update(host, *args).await,
        ServiceCommand::Rollback { service, wait } => roll_back(host, service, wait).await,
        ServiceCommand::Scale { scales, wait } => scale(host, &scales, wait).await,
        ServiceCommand::Rm { services } => {
            let mut client = client::connect(host).await?;
            let removed = client
                .remove_service(RemoveServiceRequest { services })
                .await
                .map_err(client::explain)?
                .into_inner()
                .removed;
            for name in removed {
                println!("{name}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The variables of an `--env-file`, read as Docker reads one: `KEY=VALUE` lines taken as
/// written (no quotes, no `$`), a `KEY` alone given the value `lookup` finds (left out when
/// it finds none), blank lines and `#` comments skipped.
fn env_file(
    path: &std::path::Path,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --env-file {}", path.display()))?;
    let mut variables = Vec::new();
    for (n, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            anyhow::bail!(
                "{}:{}: invalid variable name {key:?}: write KEY=VALUE, or KEY alone to pass this command's value",
                path.display(),
                n + 1
            );
        }
        if let Some(value) = value.map(str::to_owned).or_else(|| lookup(key)) {
            variables.push(format!("{key}={value}"));
        }
    }
    Ok(variables)
}

/// `swarm service rollback` (and `service update --rollback`): the spec before the last
/// change, rolled out by the service's rollback_config.
async fn roll_back(host: &Host, service: String, wait: Wait) -> anyhow::Result<ExitCode> {
    let name = resolve(&view(host).await?, &service)?.spec.name.clone();
    let mut client = client::connect(host).await?;
    client
        .rollback_service(RollbackServiceRequest { service })
        .await
        .map_err(client::explain)?;
    println!("{name}: rolled back");
    wait.for_service(host, &name, Change::Rollback).await?;
    Ok(ExitCode::SUCCESS)
}

fn resolve<'a>(view: &'a ServicesView, reference: &str) -> anyhow::Result<&'a Object<ServiceSpec>> {
    Ok(view.service(reference)?)
}

async fn scale(host: &Host, scales: &[String], wait: Wait) -> anyhow::Result<ExitCode> {
    let mut wanted = Vec::new();
    for scale in scales {
        let (name, replicas) = scale
            .split_once('=')
            .with_context(|| format!("invalid scale {scale:?}: expected SERVICE=REPLICAS"))?;
        let replicas: u64 = replicas
            .parse()
            .with_context(|| format!("invalid scale {scale:?}: the replicas must be a number"))?;
        wanted.push((name.to_owned(), replicas));
    }
    let mut client = client::connect(host).await?;
    let wanted_names = wanted.clone();
    for (name, replicas) in wanted {
        // Read, change, write with the version and spec read: a concurrent change to the
        // service is not lost (the server changes the replicas again over it).
        let view = view(host).await?;
        let service = resolve(&view, &name)?;
        let mut spec = service.spec.clone();
        spec.mode = spec.mode.scaled(replicas).with_context(|| {
            format!(
                "{name}: scale can only be used with replicated or replicated-job mode (this service is {})",
                spec.mode.display_name()
            )
        })?;
        client
            .update_service(UpdateServiceRequest {
                service: service.id.clone().unwrap_or_default(),
                spec_json: serde_json::to_string(&spec)?,
                version: view.version,
                // If the service changes meanwhile, the server scales it again over its
                // new spec.
                base_spec_json: serde_json::to_string(&service.spec)?,
                registry_auth_json: String::new(),
            })
            .await
            .map_err(client::explain)?;
        println!("{name} scaled to {replicas}");
    }
    for (name, _) in &wanted_names {
        wait.for_service(host, name, Change::Update).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `swarm service update`: the service's spec as read, changed by the flags, written with
/// the version and spec read (a concurrent change to the service is not lost: the server
/// makes the flags' changes again over it).
async fn update(host: &Host, args: UpdateArgs) -> anyhow::Result<ExitCode> {
    if args.roll_back {
        // As Docker: the rollback is the whole change.
        if args.flags() != flags::UpdateFlags::default() || args.with_registry_auth {
            anyhow::bail!(
                "other flags may not be combined with --rollback: roll back first, then update"
            );
        }
        return roll_back(host, args.service, args.wait).await;
    }
    let view = view(host).await?;
    let service = resolve(&view, &args.service)?;
    let mut spec = service.spec.clone();
    args.flags().apply(&mut spec)?;
    let registry_auth_json = registry_auth_json(args.with_registry_auth, &spec)?;
    if spec == service.spec && !args.with_registry_auth {
        println!("{}: nothing to change", service.spec.name);
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = client::connect(host).await?;
    client
        .update_service(UpdateServiceRequest {
            service: service.id.clone().unwrap_or_default(),
            spec_json: serde_json::to_string(&spec)?,
            version: view.version,
            // If the service changes meanwhile, the server makes the same changes over its
            // new spec.
            base_spec_json: serde_json::to_string(&service.spec)?,
            registry_auth_json,
        })
        .await
        .map_err(client::explain)?;
    println!("{}", service.spec.name);
    args.wait
        .for_service(host, &service.spec.name, Change::Update)
        .await?;
    Ok(ExitCode::SUCCESS)
}

impl UpdateArgs {
    /// The flags that change the spec, for the library.
    fn flags(&self) -> flags::UpdateFlags {
        let settings = flags::UpdateFlags {
            image: self.image.clone(),
            replicas: self.replicas,
            max_concurrent: self.max_concurrent,
            env_add: self.env_add.clone(),
            env_rm: self.env_rm.clone(),
            constraint_add: self.constraint_add.clone(),
            constraint_rm: self.constraint_rm.clone(),
            limit_cpu: self.limit_cpu.clone(),
            limit_memory: self.limit_memory.clone(),
            limit_pids: self.limit_pids,
            reserve_cpu: self.reserve_cpu.clone(),
            reserve_memory: self.reserve_memory.clone(),
            stop_grace_period: self.stop_grace_period.clone(),
            update_parallelism: self.update_parallelism,
            update_order: self.update_order.clone(),
            update_delay: self.update_delay,
            update_failure_action: self.update_failure_action.clone(),
            update_monitor: self.update_monitor,
            update_max_failure_ratio: self.update_max_failure_ratio,
            entrypoint: self.entrypoint.clone(),
            rollback: self.rollback.flags(),
            force: self.force,
            ..flags::UpdateFlags::default()
        };
        self.container.flags(settings)
    }
}

impl CreateArgs {
    /// The flags that make the spec, for the library.
    fn flags(&self, name: &str) -> flags::CreateFlags {
        flags::CreateFlags {
            name: name.to_owned(),
            mode: self.mode.clone(),
            replicas: self.replicas,
            max_concurrent: self.max_concurrent,
            publish: self.publish.clone(),
            env: self.env.clone(),
            label: self.label.clone(),
            container_label: self.container_label.clone(),
            constraint: self.constraint.clone(),
            placement_pref: self.placement_pref.clone(),
            network: self.network.clone(),
            secret: self.secret.clone(),
            config: self.config.clone(),
            mount: self.mount.clone(),
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            sysctl: self.sysctl.clone(),
            ulimit: self.ulimit.clone(),
            read_only: self.read_only,
            group: self.group.clone(),
            log_driver: self.log_driver.clone(),
            log_opt: self.log_opt.clone(),
            host: self.add_host.clone(),
            dns: self.dns.clone(),
            dns_search: self.dns_search.clone(),
            dns_option: self.dns_option.clone(),
            init: self.init,
            tty: self.tty,
            oom_score_adj: self.oom_score_adj,
            endpoint_mode: self.endpoint_mode.clone(),
            replicas_max_per_node: self.replicas_max_per_node,
            reserve_cpu: self.reserve_cpu.clone(),
            reserve_memory: self.reserve_memory.clone(),
            limit_cpu: self.limit_cpu.clone(),
            limit_memory: self.limit_memory.clone(),
            limit_pids: self.limit_pids,
            restart_condition: self.restart_condition.clone(),
            restart_delay: self.restart_delay.clone(),
            restart_max_attempts: self.restart_max_attempts,
            restart_window: self.restart_window.clone(),
            update_parallelism: self.update_parallelism,
            update_delay: self.update_delay.clone(),
            update_order: self.update_order.clone(),
            update_failure_action: self.update_failure_action.clone(),
            update_monitor: self.update_monitor.clone(),
            update_max_failure_ratio: self.update_max_failure_ratio,
            rollback: self.rollback.flags(),
            health_cmd: self.health_cmd.clone(),
            health_interval: self.health_interval.clone(),
            health_timeout: self.health_timeout.clone(),
            health_retries: self.health_retries,
            health_start_period: self.health_start_period.clone(),
            health_start_interval: self.health_start_interval.clone(),
            stop_grace_period: self.stop_grace_period.clone(),
            stop_signal: self.stop_signal.clone(),
            hostname: self.hostname.clone(),
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            entrypoint: self.entrypoint.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
        }
    }
}

async fn create(host: &Host, mut args: CreateArgs) -> anyhow::Result<ExitCode> {
    let mut env = Vec::new();
    for path in &args.env_file {
        env.extend(env_file(path, &|key| std::env::var(key).ok())?);
    }
    env.append(&mut args.env);
    args.env = env;
    let mut client = client::connect(host).await?;
    // A generated name taken already is drawn again, a few times.
    let mut attempts = if args.name.is_some() { 1 } else { 5 };
    let (id, name) = loop {
        let name = args.name.clone().unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let seed = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            flags::generated_name(seed)
        });
        let spec = args.flags(&name).spec()?;
        let registry_auth_json = registry_auth_json(args.with_registry_auth, &spec)?;
        let created = client
            .create_service(CreateServiceRequest {
                spec_json: serde_json::to_string(&spec)?,
                registry_auth_json,
            })
            .await;
        attempts -= 1;
        match created {
            Ok(response) => break (response.into_inner().id, name),
            Err(status) if status.code() == tonic::Code::AlreadyExists && attempts > 0 => {}
            Err(status) => return Err(client::explain(status)),
        }
    };
    println!("{id}");
    if args.name.is_none() {
        eprintln!("service {name} created (no --name given)");
    }
    args.wait.for_service(host, &name, Change::Update).await?;
    Ok(ExitCode::SUCCESS)
}

/// The registry credentials for `spec`'s image as the request carries them, when asked
/// for (`--with-registry-auth`); empty otherwise (the service keeps its own).
fn registry_auth_json(wanted: bool, spec: &ServiceSpec) -> anyhow::Result<String> {
    if !wanted {
        return Ok(String::new());
    }
    let auth = crate::registry_auth::for_image(&spec.task.container.image)?;
    Ok(serde_json::to_string(&auth)?)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ServiceCommand,
    }

    fn parse(args: &[&str]) -> ServiceCommand {
        let mut argv = vec!["service"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().command
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    /// Every flag of `create`, each with a value of its own, reaches its own field.
    #[test]
    fn create_arguments_reach_the_library_flags() {
        let ServiceCommand::Create(args) = parse(&[
            "create",
            "--name",
            "web",
            "--mode",
            "global",
            "--replicas",
            "2",
            "-p",
            "80:80",
            "-e",
            "A=1",
            "-l",
            "team=a",
            "--container-label",
            "tier=front",
            "--constraint",
            "node.role==worker",
            "--placement-pref",
            "spread=node.labels.zone",
            "--network",
            "back",
            "--network",
            "name=front,alias=www",
            "--secret",
            "db_pw",
            "--config",
            "source=site,target=/etc/site.conf,mode=0440",
            "--mount",
            "type=volume,source=db,target=/data",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "MKNOD",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--ulimit",
            "nofile=1024:2048",
            "--read-only",
            "--group",
            "audio",
            "--log-driver",
            "local",
            "--log-opt",
            "max-size=5m",
            "--add-host",
            "db:10.0.0.5",
            "--dns",
            "10.0.0.53",
            "--dns-search",
            "corp.example",
            "--dns-option",
            "ndots:2",
            "--init",
            "-t",
            "--endpoint-mode",
            "dnsrr",
            "--replicas-max-per-node",
            "3",
            "--reserve-cpu",
            "0.1",
            "--reserve-memory",
            "1M",
            "--limit-cpu",
            "0.2",
            "--limit-memory",
            "2M",
            "--restart-condition",
            "any",
            "--restart-delay",
            "1s",
            "--restart-max-attempts",
            "4",
            "--restart-window",
            "2s",
            "--update-parallelism",
            "5",
            "--update-delay",
            "3s",
            "--update-order",
            "start-first",
            "--update-failure-action",
            "pause",
            "--update-monitor",
            "4s",
            "--update-max-failure-ratio",
            "0.5",
            "--rollback-parallelism",
            "6",
            "--health-cmd",
            "true",
            "--health-interval",
            "5s",
            "--health-timeout",
            "6s",
            "--health-retries",
            "7",
            "--health-start-period",
            "7s",
            "--health-start-interval",
            "2s",
            "--limit-pids",
            "64",
            "--stop-grace-period",
            "8s",
            "--stop-signal",
            "SIGUSR1",
            "--hostname",
            "h",
            "-w",
            "/w",
            "-u",
            "u",
            "--entrypoint",
            "sh -c",
            "--oom-score-adj",
            "-500",
            "nginx:1",
            "httpd",
            "-f",
        ]) else {
            panic!("not create");
        };
        let want = flags::CreateFlags {
            name: "web".into(),
            mode: "global".into(),
            replicas: Some(2),
            max_concurrent: None,
            publish: strings(&["80:80"]),
            env: strings(&["A=1"]),
            label: strings(&["team=a"]),
            container_label: strings(&["tier=front"]),
            constraint: strings(&["node.role==worker"]),
            placement_pref: strings(&["spread=node.labels.zone"]),
            network: strings(&["back", "name=front,alias=www"]),
            secret: strings(&["db_pw"]),
            config: strings(&["source=site,target=/etc/site.conf,mode=0440"]),
            mount: strings(&["type=volume,source=db,target=/data"]),
            cap_add: strings(&["NET_ADMIN"]),
            cap_drop: strings(&["MKNOD"]),
            sysctl: strings(&["net.core.somaxconn=1024"]),
            ulimit: strings(&["nofile=1024:2048"]),
            read_only: true,
            group: strings(&["audio"]),
            log_driver: Some("local".into()),
            log_opt: strings(&["max-size=5m"]),
            host: strings(&["db:10.0.0.5"]),
            dns: strings(&["10.0.0.53"]),
            dns_search: strings(&["corp.example"]),
            dns_option: strings(&["ndots:2"]),
            init: true,
            tty: true,
            oom_score_adj: Some(-500),
            endpoint_mode: Some("dnsrr".into()),
            replicas_max_per_node: Some(3),
            reserve_cpu: Some("0.1".into()),
            reserve_memory: Some("1M".into()),
            limit_cpu: Some("0.2".into()),
            limit_memory: Some("2M".into()),
            limit_pids: Some(64),
            restart_condition: Some("any".into()),
            restart_delay: Some("1s".into()),
            restart_max_attempts: Some(4),
            restart_window: Some("2s".into()),
            update_parallelism: Some(5),
            update_delay: Some("3s".into()),
            update_order: Some("start-first".into()),
            update_failure_action: Some("pause".into()),
            update_monitor: Some("4s".into()),
            update_max_failure_ratio: Some(0.5),
            rollback: flags::RollbackFlags {
                parallelism: Some(6),
                ..Default::default()
            },
            health_cmd: Some("true".into()),
            health_interval: Some("5s".into()),
            health_timeout: Some("6s".into()),
            health_retries: Some(7),
            health_start_period: Some("7s".into()),
            health_start_interval: Some("2s".into()),
            stop_grace_period: Some("8s".into()),
            stop_signal: Some("SIGUSR1".into()),
            hostname: Some("h".into()),
            workdir: Some("/w".into()),
            user: Some("u".into()),
            entrypoint: Some("sh -c".into()),
            image: "nginx:1".into(),
            command: strings(&["httpd", "-f"]),
        };
        assert_eq!(args.flags(args.name.as_deref().unwrap()), want);
    }

    /// Every flag of `update`, each with a value of its own, reaches its own field.
    #[test]
    fn update_arguments_reach_the_library_flags() {
        let ServiceCommand::Update(args) = parse(&[
            "update",
            "--image",
            "web:2",
            "--replicas",
            "2",
            "--env-add",
            "A=1",
            "--env-rm",
            "B",
            "--constraint-add",
            "node.role==worker",
            "--constraint-rm",
            "node.role==manager",
            "--secret-add",
            "db_pw",
            "--secret-rm",
            "old_pw",
            "--config-add",
            "site",
            "--config-rm",
            "old_site",
            "--network-add",
            "name=back,alias=b",
            "--network-rm",
            "front",
            "--mount-add",
            "type=tmpfs,target=/cache",
            "--mount-rm",
            "/old",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "MKNOD",
            "--sysctl-add",
            "net.core.somaxconn=1024",
            "--sysctl-rm",
            "net.ipv4.ip_forward",
            "--ulimit-add",
            "nofile=1024",
            "--ulimit-rm",
            "nproc",
            "--read-only=false",
            "--group-add",
            "audio",
            "--group-rm",
            "video",
            "--host-add",
            "db:10.0.0.5",
            "--host-rm",
            "old",
            "--dns-add",
            "10.0.0.53",
            "--dns-rm",
            "10.0.0.54",
            "--dns-search-add",
            "corp.example",
            "--dns-search-rm",
            "old.example",
            "--dns-option-add",
            "ndots:2",
            "--dns-option-rm",
            "edns0",
            "--init=false",
            "--tty",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-file=2",
            "--endpoint-mode",
            "vip",
            "--limit-cpu",
            "0.2",
            "--limit-memory",
            "2M",
            "--reserve-cpu",
            "0.1",
            "--reserve-memory",
            "1M",
            "--stop-grace-period",
            "8s",
            "--update-parallelism",
            "5",
            "--update-order",
            "start-first",
            "--update-delay",
            "3s",
            "--update-failure-action",
            "pause",
            "--update-monitor",
            "4s",
            "--update-max-failure-ratio",
            "0.5",
            "--entrypoint",
            "sh -c",
            "--rollback-parallelism",
            "1",
            "--rollback-delay",
            "1s",
            "--rollback-failure-action",
            "continue",
            "--rollback-monitor",
            "2s",
            "--rollback-max-failure-ratio",
            "0.25",
            "--rollback-order",
            "stop-first",
            "--args",
            "httpd -f",
            "--label-add",
            "l=1",
            "--label-rm",
            "m",
            "--container-label-add",
            "c=1",
            "--container-label-rm",
            "d",
            "--publish-add",
            "80:80",
            "--publish-rm",
            "53/udp",
            "--restart-condition",
            "any",
            "--restart-delay",
            "9s",
            "--restart-max-attempts",
            "4",
            "--restart-window",
            "10s",
            "--health-cmd",
            "true",
            "--health-interval",
            "5s",
            "--health-timeout",
            "6s",
            "--health-retries",
            "7",
            "--health-start-period",
            "7s",
            "--health-start-interval",
            "2s",
            "--limit-pids",
            "0",
            "--hostname",
            "h",
            "-u",
            "u",
            "-w",
            "/w",
            "--stop-signal",
            "SIGUSR1",
            "--placement-pref-add",
            "spread=node.labels.a",
            "--placement-pref-rm",
            "spread=node.labels.b",
            "--replicas-max-per-node",
            "3",
            "--oom-score-adj",
            "-1",
            "--force",
            "web",
        ]) else {
            panic!("not update");
        };
        let duration = |text: &str| Some(text.parse::<GoDuration>().unwrap());
        let want = flags::UpdateFlags {
            image: Some("web:2".into()),
            replicas: Some(2),
            max_concurrent: None,
            env_add: strings(&["A=1"]),
            env_rm: strings(&["B"]),
            constraint_add: strings(&["node.role==worker"]),
            constraint_rm: strings(&["node.role==manager"]),
            limit_cpu: Some("0.2".into()),
            limit_memory: Some("2M".into()),
            limit_pids: Some(0),
            reserve_cpu: Some("0.1".into()),
            reserve_memory: Some("1M".into()),
            stop_grace_period: Some("8s".into()),
            update_parallelism: Some(5),
            update_order: Some("start-first".into()),
            update_delay: duration("3s"),
            update_failure_action: Some("pause".into()),
            update_monitor: duration("4s"),
            update_max_failure_ratio: Some(0.5),
            entrypoint: Some("sh -c".into()),
            rollback: flags::RollbackFlags {
                parallelism: Some(1),
                delay: duration("1s"),
                failure_action: Some("continue".into()),
                monitor: duration("2s"),
                max_failure_ratio: Some(0.25),
                order: Some("stop-first".into()),
            },
            args: Some("httpd -f".into()),
            label_add: strings(&["l=1"]),
            label_rm: strings(&["m"]),
            container_label_add: strings(&["c=1"]),
            container_label_rm: strings(&["d"]),
            publish_add: strings(&["80:80"]),
            publish_rm: strings(&["53/udp"]),
            restart_condition: Some("any".into()),
            restart_delay: duration("9s"),
            restart_max_attempts: Some(4),
            restart_window: duration("10s"),
            health_cmd: Some("true".into()),
            health_interval: duration("5s"),
            health_timeout: duration("6s"),
            health_retries: Some(7),
            health_start_period: duration("7s"),
            health_start_interval: duration("2s"),
            no_healthcheck: false,
            hostname: Some("h".into()),
            user: Some("u".into()),
            workdir: Some("/w".into()),
            stop_signal: Some("SIGUSR1".into()),
            placement_pref_add: strings(&["spread=node.labels.a"]),
            placement_pref_rm: strings(&["spread=node.labels.b"]),
            secret_add: strings(&["db_pw"]),
            secret_rm: strings(&["old_pw"]),
            config_add: strings(&["site"]),
            config_rm: strings(&["old_site"]),
            network_add: strings(&["name=back,alias=b"]),
            network_rm: strings(&["front"]),
            mount_add: strings(&["type=tmpfs,target=/cache"]),
            mount_rm: strings(&["/old"]),
            cap_add: strings(&["NET_ADMIN"]),
            cap_drop: strings(&["MKNOD"]),
            sysctl_add: strings(&["net.core.somaxconn=1024"]),
            sysctl_rm: strings(&["net.ipv4.ip_forward"]),
            ulimit_add: strings(&["nofile=1024"]),
            ulimit_rm: strings(&["nproc"]),
            read_only: Some(false),
            group_add: strings(&["audio"]),
            group_rm: strings(&["video"]),
            log_driver: Some("json-file".into()),
            log_opt: strings(&["max-file=2"]),
            host_add: strings(&["db:10.0.0.5"]),
            host_rm: strings(&["old"]),
            dns_add: strings(&["10.0.0.53"]),
            dns_rm: strings(&["10.0.0.54"]),
            dns_search_add: strings(&["corp.example"]),
            dns_search_rm: strings(&["old.example"]),
            dns_option_add: strings(&["ndots:2"]),
            dns_option_rm: strings(&["edns0"]),
            init: Some(false),
            tty: Some(true),
            oom_score_adj: Some(-1),
            endpoint_mode: Some("vip".into()),
            replicas_max_per_node: Some(3),
            force: true,
        };
        assert_eq!(args.flags(), want);
        let ServiceCommand::Update(args) = parse(&["update", "--no-healthcheck", "web"]) else {
            panic!("not update");
        };
        assert!(args.flags().no_healthcheck);
        // A flag that may take a value takes it after `=` only: the service's name follows
        // it, as Docker users write it.
        for (given, tty, init) in [
            (&["update", "--tty", "web"][..], Some(true), None),
            (
                &["update", "-t", "--init", "web"][..],
                Some(true),
                Some(true),
            ),
            (&["update", "--tty=false", "web"][..], Some(false), None),
        ] {
            let ServiceCommand::Update(args) = parse(given) else {
                panic!("not update");
            };
            let flags = args.flags();
            assert_eq!((flags.tty, flags.init), (tty, init), "{given:?}");
            assert_eq!(args.service, "web", "{given:?}");
        }
    }

    /// An --env-file is read as Docker reads one, and --env wins over it.
    #[test]
    fn an_env_file_is_read_as_dockers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.env");
        std::fs::write(
            &path,
            "\u{feff}# settings\n\nMODE=prod\n  PRICE=$5 \"as is\"\nHOME\nUNSET\nEMPTY=\n",
        )
        .unwrap();
        let lookup = |key: &str| (key == "HOME").then(|| "/home/ops".to_owned());
        assert_eq!(
            env_file(&path, &lookup).unwrap(),
            [
                "MODE=prod",
                "PRICE=$5 \"as is\"",
                "HOME=/home/ops",
                "EMPTY="
            ]
        );
        std::fs::write(&path, "GOOD=1\nBAD KEY=2\n").unwrap();
        let error = env_file(&path, &lookup).unwrap_err().to_string();
        assert!(error.ends_with("app.env:2: invalid variable name \"BAD KEY\": write KEY=VALUE, or KEY alone to pass this command's value"), "{error}");
        let missing = env_file(&dir.path().join("none.env"), &lookup).unwrap_err();
        assert!(
            missing.to_string().starts_with("cannot read --env-file"),
            "{missing}"
        );
    }

    /// `update --rollback` is `service rollback`, and takes no other change (as Docker);
    /// refused before any daemon is asked.
    #[tokio::test]
    async fn update_rollback_takes_no_other_change() {
        let ServiceCommand::Update(args) = parse(&["update", "--rollback", "-d", "web"]) else {
            panic!("not update");
        };
        assert!(args.roll_back);
        assert_eq!(args.flags(), flags::UpdateFlags::default());
        let ServiceCommand::Update(args) =
            parse(&["update", "--rollback", "--image", "web:2", "web"])
        else {
            panic!("not update");
        };
        let nowhere = Host {
            uri: "unix:///nonexistent/swarm.sock".into(),
            tls_dir: std::path::PathBuf::new(),
        };
        let error = update(&nowhere, *args).await.unwrap_err().to_string();
        assert!(
            error.starts_with("other flags may not be combined with --rollback"),
            "{error}"
        );
    }
}
