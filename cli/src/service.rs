//! `swarm service create|ls|ps|inspect|scale|rm` and `swarm node ps`.
//!
//! A service's spec is made the way a stack file's is: the flags become a one-service
//! Compose document, which the stack loader validates and normalises, so `service create`
//! and `stack deploy` give equal specs for equal intents and share every check and default.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};
use swarm_api::grpc::control::{
    CreateServiceRequest, ListServicesRequest, RemoveServiceRequest, RollbackServiceRequest,
    UpdateServiceRequest,
};
use swarm_api::spec::{ServiceMode, ServiceSpec};
use swarm_api::state::Object;
use swarm_api::task::{DesiredState, ServicesView, Task};
use swarm_api::units::GoDuration;
use swarm_controller::source::SourceTree;

use crate::client::{self, Host};
use crate::cluster::table;
use crate::converge::{Change, Wait};
use crate::rollback_flags::RollbackFlags;

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
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// List the tasks of services
    Ps {
        #[arg(required = true)]
        services: Vec<String>,
        /// Only tasks in this desired state: `desired-state=running|shutdown`
        #[arg(long, short)]
        filter: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show services in detail (JSON, with their update status)
    Inspect {
        #[arg(required = true)]
        services: Vec<String>,
        /// A summary for people instead of JSON
        #[arg(long)]
        pretty: bool,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The service: its name, id or a unique id prefix
    service: String,
    /// A new image
    #[arg(long)]
    image: Option<String>,
    /// Number of tasks (replicated mode)
    #[arg(long)]
    replicas: Option<u64>,
    /// Add or change environment variables: KEY=VALUE
    #[arg(long)]
    env_add: Vec<String>,
    /// Remove environment variables: KEY
    #[arg(long)]
    env_rm: Vec<String>,
    /// Add placement constraints
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
    #[command(flatten)]
    wait: Wait,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The service's name
    #[arg(long)]
    name: String,
    /// replicated or global
    #[arg(long, default_value = "replicated")]
    mode: String,
    /// Number of tasks (replicated mode)
    #[arg(long)]
    replicas: Option<u64>,
    /// Publish a port: [mode=host,]PUBLISHED:TARGET[/udp], or published=P,target=T,mode=M,protocol=P
    #[arg(long, short)]
    publish: Vec<String>,
    /// Environment variables: KEY=VALUE
    #[arg(long, short)]
    env: Vec<String>,
    /// Service labels: KEY=VALUE
    #[arg(long, short)]
    label: Vec<String>,
    /// Container labels: KEY=VALUE
    #[arg(long)]
    container_label: Vec<String>,
    /// Placement constraints, e.g. node.labels.zone==a
    #[arg(long)]
    constraint: Vec<String>,
    /// Placement preferences: spread=node.labels.X
    #[arg(long)]
    placement_pref: Vec<String>,
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
        ServiceCommand::Ls { quiet, format } => {
            print_services(&view(host).await?, quiet, format)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Ps {
            services,
            filter,
            format,
        } => {
            let desired = desired_filter(filter.as_deref())?;
            let view = view(host).await?;
            let mut tasks: Vec<&Task> = Vec::new();
            for reference in &services {
                let service = resolve(&view, reference)?;
                tasks.extend(
                    view.tasks
                        .iter()
                        .filter(|t| Some(&t.service_id) == service.id.as_ref())
                        .filter(|t| desired.is_none_or(|d| t.desired == d)),
                );
            }
            print_tasks(&view, tasks, format)?;
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Inspect { services, pretty } => {
            let view = view(host).await?;
            let found = services
                .iter()
                .map(|reference| resolve(&view, reference))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if pretty {
                print!("{}", crate::inspect::pretty(&view, &found));
            } else {
                println!("{}", crate::inspect::json(&view, &found)?);
            }
            Ok(ExitCode::SUCCESS)
        }
        ServiceCommand::Update(args) => update(host, *args).await,
        ServiceCommand::Rollback { service, wait } => {
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

/// `swarm node ps NODE…`: the tasks on nodes.
pub async fn node_ps(
    host: &Host,
    nodes: &[String],
    filter: Option<&str>,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let desired = desired_filter(filter)?;
    let view = view(host).await?;
    let mut tasks = Vec::new();
    for reference in nodes {
        let matching: Vec<&String> = view
            .nodes
            .iter()
            .filter(|(id, hostname)| {
                *id == reference || *hostname == reference || id.starts_with(reference.as_str())
            })
            .map(|(id, _)| id)
            .collect();
        let [id] = matching.as_slice() else {
            anyhow::bail!(
                "node {reference} matches {} nodes: give its id or hostname (`swarm node ls`)",
                matching.len()
            );
        };
        tasks.extend(
            view.tasks
                .iter()
                .filter(|t| t.node_id.as_ref() == Some(*id))
                .filter(|t| desired.is_none_or(|d| t.desired == d)),
        );
    }
    print_tasks(&view, tasks, format)?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn desired_filter(filter: Option<&str>) -> anyhow::Result<Option<DesiredState>> {
    match filter {
        None => Ok(None),
        Some("desired-state=running") => Ok(Some(DesiredState::Running)),
        Some("desired-state=shutdown") => Ok(Some(DesiredState::Shutdown)),
        Some(other) => anyhow::bail!(
            "unsupported filter {other:?}: use desired-state=running or desired-state=shutdown"
        ),
    }
}

pub(crate) async fn view(host: &Host) -> anyhow::Result<ServicesView> {
    let mut client = client::connect(host).await?;
    let json = client
        .list_services(ListServicesRequest {})
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a services view")
}

fn resolve<'a>(view: &'a ServicesView, reference: &str) -> anyhow::Result<&'a Object<ServiceSpec>> {
    Ok(view.service(reference)?)
}

pub(crate) fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The services of `view` as `service ls` prints them.
pub(crate) fn print_services(
    view: &ServicesView,
    quiet: bool,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&view.services)?);
    } else if quiet {
        for service in &view.services {
            println!("{}", service.id.as_deref().unwrap_or_default());
        }
    } else {
        print!("{}", services_table(view));
    }
    Ok(())
}

fn services_table(view: &ServicesView) -> String {
    let rows: Vec<[String; 6]> = view
        .services
        .iter()
        .map(|service| {
            let id = service.id.as_deref().unwrap_or_default();
            let running = view
                .tasks
                .iter()
                .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
                .filter(|t| t.status.state == swarm_api::task::TaskState::Running)
                .count();
            let (mode, replicas) = match service.spec.mode {
                ServiceMode::Replicated { replicas } => {
                    ("replicated", format!("{running}/{replicas}"))
                }
                ServiceMode::Global => {
                    let wanted = view
                        .tasks
                        .iter()
                        .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
                        .count();
                    ("global", format!("{running}/{wanted}"))
                }
            };
            let ports: Vec<String> = service
                .spec
                .endpoint
                .ports
                .iter()
                .map(|p| p.to_string())
                .collect();
            [
                short_id(id).to_owned(),
                service.spec.name.clone(),
                mode.to_owned(),
                replicas,
                service.spec.task.container.image.clone(),
                ports.join(", "),
            ]
        })
        .collect();
    table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"], &rows)
}

pub(crate) fn print_tasks(
    view: &ServicesView,
    mut tasks: Vec<&Task>,
    format: Format,
) -> anyhow::Result<()> {
    // Docker's order: by name (slot), the live task first, then its history, newest first.
    tasks.sort_by(|a, b| {
        (
            &a.service_name,
            a.slot,
            &a.node_id,
            b.desired == DesiredState::Running,
        )
            .cmp(&(
                &b.service_name,
                b.slot,
                &b.node_id,
                a.desired == DesiredState::Running,
            ))
            .then(b.created_at.cmp(&a.created_at))
    });
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut previous: Option<String> = None;
    let rows: Vec<[String; 8]> = tasks
        .iter()
        .map(|task| {
            let name = match task.slot {
                Some(slot) => format!("{}.{slot}", task.service_name),
                None => format!(
                    "{}.{}",
                    task.service_name,
                    short_id(task.node_id.as_deref().unwrap_or_default())
                ),
            };
            // History lines are marked as Docker marks them.
            let shown = if previous.as_ref() == Some(&name) {
                format!(" \\_ {name}")
            } else {
                name.clone()
            };
            previous = Some(name);
            let node = task
                .node_id
                .as_ref()
                .map(|id| view.nodes.get(id).cloned().unwrap_or_else(|| id.clone()))
                .unwrap_or_default();
            let desired = match task.desired {
                DesiredState::Running => "Running",
                DesiredState::Shutdown => "Shutdown",
            };
            let state = task.status.state.as_str();
            let current = format!(
                "{}{} {} ago",
                state[..1].to_uppercase(),
                &state[1..],
                ago(now.saturating_sub(task.status.since))
            );
            let error = match (&task.status.error, task.status.state) {
                (Some(error), _) => error.clone(),
                (None, swarm_api::task::TaskState::Pending) => task.status.message.clone(),
                (None, _) => String::new(),
            };
            // Host-mode ports are bound where the task runs, so they are the task's.
            let ports: Vec<String> = view
                .services
                .iter()
                .find(|s| s.id.as_ref() == Some(&task.service_id))
                .map(|s| &s.spec.endpoint.ports[..])
                .unwrap_or_default()
                .iter()
                .filter(|p| p.mode == swarm_api::spec::PublishMode::Host)
                .map(|p| p.to_string())
                .collect();
            [
                short_id(&task.id).to_owned(),
                shown,
                task.spec.container.image.clone(),
                node,
                desired.to_owned(),
                current,
                error,
                ports.join(","),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            [
                "ID",
                "NAME",
                "IMAGE",
                "NODE",
                "DESIRED STATE",
                "CURRENT STATE",
                "ERROR",
                "PORTS"
            ],
            &rows
        )
    );
    Ok(())
}

/// Docker's "2 minutes" style.
pub(crate) fn ago(ms: u64) -> String {
    let seconds = ms / 1000;
    match seconds {
        0..=1 => "Less than a second".to_owned(),
        2..=59 => format!("{seconds} seconds"),
        60..=119 => "About a minute".to_owned(),
        120..=3599 => format!("{} minutes", seconds / 60),
        3600..=7199 => "About an hour".to_owned(),
        _ => format!("{} hours", seconds / 3600),
    }
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
        match spec.mode {
            ServiceMode::Replicated { .. } => spec.mode = ServiceMode::Replicated { replicas },
            ServiceMode::Global => anyhow::bail!(
                "{name}: scale can only be used with replicated mode (this service is global)"
            ),
        }
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
    let view = view(host).await?;
    let service = resolve(&view, &args.service)?;
    let mut spec = service.spec.clone();
    apply_update(&mut spec, &args)?;
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

pub(crate) fn parsed<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid --{flag} {value:?}: {e}"))
}

fn apply_update(spec: &mut ServiceSpec, args: &UpdateArgs) -> anyhow::Result<()> {
    let task = &mut spec.task;
    if let Some(image) = &args.image {
        task.container.image = image.clone();
    }
    if let Some(replicas) = args.replicas {
        match spec.mode {
            ServiceMode::Replicated { .. } => spec.mode = ServiceMode::Replicated { replicas },
            ServiceMode::Global => {
                anyhow::bail!(
                    "--replicas can only be used with replicated mode (this service is global)"
                )
            }
        }
    }
    for (key, value) in key_values(&args.env_add, "env-add")? {
        task.container.env.insert(key, value);
    }
    for key in &args.env_rm {
        task.container.env.remove(key);
    }
    let constraints = &mut task.placement.constraints;
    for text in &args.constraint_add {
        let constraint = parsed("constraint-add", text)?;
        if !constraints.contains(&constraint) {
            constraints.push(constraint);
        }
    }
    for text in &args.constraint_rm {
        let constraint: swarm_api::spec::Constraint = parsed("constraint-rm", text)?;
        constraints.retain(|c| *c != constraint);
    }
    constraints.sort();
    let resources = &mut task.resources;
    if let Some(cpus) = &args.limit_cpu {
        resources.limits.cpus = Some(parsed("limit-cpu", cpus)?);
    }
    if let Some(memory) = &args.limit_memory {
        resources.limits.memory = Some(parsed("limit-memory", memory)?);
    }
    if let Some(cpus) = &args.reserve_cpu {
        resources.reservations.cpus = Some(parsed("reserve-cpu", cpus)?);
    }
    if let Some(memory) = &args.reserve_memory {
        resources.reservations.memory = Some(parsed("reserve-memory", memory)?);
    }
    if let Some(grace) = &args.stop_grace_period {
        task.container.stop_grace_period = parsed("stop-grace-period", grace)?;
    }
    if let Some(parallelism) = args.update_parallelism {
        spec.update.parallelism = parallelism;
    }
    if let Some(order) = &args.update_order {
        spec.update.order = serde_json::from_value(json!(order)).map_err(|_| {
            anyhow::anyhow!("invalid --update-order {order:?}: use start-first or stop-first")
        })?;
    }
    if let Some(delay) = args.update_delay {
        spec.update.delay = delay;
    }
    if let Some(action) = &args.update_failure_action {
        spec.update.failure_action = serde_json::from_value(json!(action)).map_err(|_| {
            anyhow::anyhow!(
                "invalid --update-failure-action {action:?}: use pause, continue or rollback"
            )
        })?;
    }
    if let Some(monitor) = args.update_monitor {
        spec.update.monitor = monitor;
    }
    if let Some(ratio) = args.update_max_failure_ratio {
        anyhow::ensure!(
            (0.0..=1.0).contains(&ratio),
            "invalid --update-max-failure-ratio {ratio}: use a number from 0 to 1"
        );
        spec.update.max_failure_ratio = ratio;
    }
    if let Some(entrypoint) = &args.entrypoint {
        spec.task.container.entrypoint = match entrypoint.as_str() {
            "" => None,
            line => Some(
                shlex::split(line)
                    .with_context(|| format!("invalid --entrypoint {line:?}: unbalanced quotes"))?,
            ),
        };
    }
    args.rollback.apply(&mut spec.rollback)?;
    args.container.apply(spec)?;
    if args.force {
        spec.task.force_update += 1;
    }
    Ok(())
}

async fn create(host: &Host, args: CreateArgs) -> anyhow::Result<ExitCode> {
    let spec = spec_from_flags(&args)?;
    let registry_auth_json = registry_auth_json(args.with_registry_auth, &spec)?;
    let mut client = client::connect(host).await?;
    let id = client
        .create_service(CreateServiceRequest {
            spec_json: serde_json::to_string(&spec)?,
            registry_auth_json,
        })
        .await
        .map_err(client::explain)?
        .into_inner()
        .id;
    println!("{id}");
    args.wait
        .for_service(host, &args.name, Change::Update)
        .await?;
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

/// The name the one-service document is loaded under: every object is named
/// `<stack>_<service>`, and the service is then given its own name back.
const STACK: &str = "cli";

/// A normalised spec from the flags, through the stack loader.
fn spec_from_flags(args: &CreateArgs) -> anyhow::Result<ServiceSpec> {
    load_service_document(&args.name, service_document(args)?)
}

/// The spec of a one-service Compose document built from flags (`service`: the service's
/// mapping), checked and completed by the stack loader; errors name the flags.
pub(crate) fn load_service_document(name: &str, service: Value) -> anyhow::Result<ServiceSpec> {
    let mut document = json!({ "services": { name: service } });
    // Flags are taken as written (the shell has expanded what it meant to): a `$` is not
    // the stack file's interpolation.
    escape_dollars(&mut document);
    let tree = OneFile(serde_json::to_vec(&document)?);
    let loaded =
        swarm_controller::stack::load(&tree, Path::new("cli.yaml"), "command line", &|_| None);
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == swarm_controller::stack::Severity::Error)
        .map(|d| {
            let field = d.path.trim_start_matches(&format!("services.{name}."));
            format!("{}: {}", flag_of(field), d.message)
        })
        .collect();
    let Some(mut stack) = loaded.stack.filter(|_| errors.is_empty()) else {
        anyhow::bail!("invalid service:\n  {}", errors.join("\n  "));
    };
    let mut spec = stack.services.remove(0);
    spec.name = name.to_owned();
    // The loader attaches a stack's services to the stack's default network, which an
    // imperative service does not have.
    spec.task
        .networks
        .retain(|n| !n.target.starts_with(&format!("{STACK}_")));
    Ok(spec)
}

/// Every `$` of the document's strings written `$$`, which the loader reads as a `$`.
fn escape_dollars(value: &mut Value) {
    match value {
        Value::String(text) => *text = text.replace('$', "$$"),
        Value::Array(items) => items.iter_mut().for_each(escape_dollars),
        Value::Object(entries) => entries.values_mut().for_each(escape_dollars),
        _ => {}
    }
}

/// The flag that sets a field of the one-service document, for error messages.
fn flag_of(field: &str) -> String {
    const FLAGS: &[(&str, &str)] = &[
        ("deploy.replicas", "--replicas"),
        ("deploy.mode", "--mode"),
        ("deploy.labels", "--label"),
        ("deploy.placement.constraints", "--constraint"),
        ("deploy.placement.preferences", "--placement-pref"),
        (
            "deploy.placement.max_replicas_per_node",
            "--replicas-max-per-node",
        ),
        ("deploy.resources.limits.cpus", "--limit-cpu"),
        ("deploy.resources.limits.memory", "--limit-memory"),
        ("deploy.resources.reservations.cpus", "--reserve-cpu"),
        ("deploy.resources.reservations.memory", "--reserve-memory"),
        ("deploy.restart_policy", "--restart-"),
        ("deploy.update_config", "--update-"),
        ("deploy.rollback_config", "--rollback-"),
        ("healthcheck", "--health-"),
        ("ports", "--publish"),
        ("environment", "--env"),
        ("labels", "--container-label"),
        ("image", "IMAGE"),
        ("command", "COMMAND"),
        ("entrypoint", "--entrypoint"),
        ("stop_grace_period", "--stop-grace-period"),
        ("stop_signal", "--stop-signal"),
        ("working_dir", "--workdir"),
        ("user", "--user"),
        ("hostname", "--hostname"),
    ];
    for (prefix, flag) in FLAGS {
        if let Some(rest) = field.strip_prefix(prefix) {
            // `--restart-` + `condition` → `--restart-condition`.
            return match flag.strip_suffix('-') {
                Some(_) => format!("{flag}{}", rest.trim_start_matches('.').replace('_', "-")),
                None => (*flag).to_owned(),
            };
        }
    }
    field.to_owned()
}

pub(crate) fn key_values(items: &[String], flag: &str) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => anyhow::bail!("invalid --{flag} {item:?}: expected KEY=VALUE"),
        })
        .collect()
}

/// A `--publish` value as a Compose long-syntax port.
pub(crate) fn port_document(publish: &str) -> anyhow::Result<Value> {
    let mut port = Map::new();
    for part in publish.split(',') {
        match part.split_once('=') {
            Some((key @ ("mode" | "protocol"), value)) => {
                port.insert(key.to_owned(), json!(value));
            }
            Some((key @ ("published" | "target"), value)) => {
                let number: u16 = value.parse().with_context(|| {
                    format!("invalid --publish {publish:?}: {key} must be a port number")
                })?;
                port.insert(key.to_owned(), json!(number));
            }
            Some((key, _)) => anyhow::bail!(
                "invalid --publish {publish:?}: unknown key {key:?} (published, target, mode, protocol)"
            ),
            None => {
                let (ports, protocol) = match part.split_once('/') {
                    Some((ports, protocol)) => (ports, Some(protocol)),
                    None => (part, None),
                };
                let (published, target) = match ports.split_once(':') {
                    Some((published, target)) => (Some(published), target),
                    None => (None, ports),
                };
                let number = |text: &str| -> anyhow::Result<u16> {
                    text.parse().with_context(|| {
                        format!("invalid --publish {publish:?}: {text:?} is not a port number")
                    })
                };
                port.insert("target".into(), json!(number(target)?));
                if let Some(published) = published {
                    port.insert("published".into(), json!(number(published)?));
                }
                if let Some(protocol) = protocol {
                    port.insert("protocol".into(), json!(protocol));
                }
            }
        }
    }
    if !port.contains_key("target") {
        anyhow::bail!("invalid --publish {publish:?}: the target port is missing");
    }
    Ok(Value::Object(port))
}

fn service_document(args: &CreateArgs) -> anyhow::Result<Value> {
    let env = key_values(&args.env, "env")?;
    let container_labels = key_values(&args.container_label, "container-label")?;
    let mut service = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            service.insert(key.to_owned(), value);
        }
    };
    put("image", Some(json!(args.image)));
    put(
        "command",
        (!args.command.is_empty()).then(|| json!(args.command)),
    );
    // A string, split by the loader as Compose splits it.
    put("entrypoint", args.entrypoint.as_ref().map(|e| json!(e)));
    put("environment", (!env.is_empty()).then(|| json!(env)));
    put(
        "labels",
        (!container_labels.is_empty()).then(|| json!(container_labels)),
    );
    put("hostname", args.hostname.as_ref().map(|v| json!(v)));
    put("working_dir", args.workdir.as_ref().map(|v| json!(v)));
    put("user", args.user.as_ref().map(|v| json!(v)));
    put(
        "stop_grace_period",
        args.stop_grace_period.as_ref().map(|v| json!(v)),
    );
    put("stop_signal", args.stop_signal.as_ref().map(|v| json!(v)));
    let ports = args
        .publish
        .iter()
        .map(|p| port_document(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    put("ports", (!ports.is_empty()).then(|| json!(ports)));
    if let Some(cmd) = &args.health_cmd {
        let health = section([
            ("test", Some(json!(["CMD-SHELL", cmd]))),
            ("interval", args.health_interval.as_ref().map(|v| json!(v))),
            ("timeout", args.health_timeout.as_ref().map(|v| json!(v))),
            (
                "start_period",
                args.health_start_period.as_ref().map(|v| json!(v)),
            ),
            ("retries", args.health_retries.map(|v| json!(v))),
        ]);
        put("healthcheck", health);
    }
    service.insert("deploy".into(), deploy_document(args)?);
    Ok(Value::Object(service))
}

/// A mapping of the entries that have a value; none when no entry has one.
fn section<'a>(entries: impl IntoIterator<Item = (&'a str, Option<Value>)>) -> Option<Value> {
    let map: Map<String, Value> = entries
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_owned(), value?)))
        .collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

fn deploy_document(args: &CreateArgs) -> anyhow::Result<Value> {
    let text = |value: &Option<String>| value.as_ref().map(|v| json!(v));
    let labels = (!args.label.is_empty())
        .then(|| key_values(&args.label, "label"))
        .transpose()?;
    let preferences = args
        .placement_pref
        .iter()
        .map(|p| match p.split_once('=') {
            Some(("spread", target)) => Ok(json!({ "spread": target })),
            _ => anyhow::bail!("invalid --placement-pref {p:?}: expected spread=node.labels.KEY"),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let placement = section([
        (
            "constraints",
            (!args.constraint.is_empty()).then(|| json!(args.constraint)),
        ),
        (
            "preferences",
            (!preferences.is_empty()).then(|| json!(preferences)),
        ),
        (
            "max_replicas_per_node",
            args.replicas_max_per_node.map(|m| json!(m)),
        ),
    ]);
    let resources = section([
        (
            "limits",
            section([
                ("cpus", text(&args.limit_cpu)),
                ("memory", text(&args.limit_memory)),
            ]),
        ),
        (
            "reservations",
            section([
                ("cpus", text(&args.reserve_cpu)),
                ("memory", text(&args.reserve_memory)),
            ]),
        ),
    ]);
    let restart = section([
        ("condition", text(&args.restart_condition)),
        ("delay", text(&args.restart_delay)),
        ("window", text(&args.restart_window)),
        ("max_attempts", args.restart_max_attempts.map(|m| json!(m))),
    ]);
    let update = section([
        ("delay", text(&args.update_delay)),
        ("order", text(&args.update_order)),
        ("failure_action", text(&args.update_failure_action)),
        ("monitor", text(&args.update_monitor)),
        ("parallelism", args.update_parallelism.map(|p| json!(p))),
        (
            "max_failure_ratio",
            args.update_max_failure_ratio.map(|r| json!(r)),
        ),
    ]);
    Ok(section([
        ("mode", Some(json!(args.mode))),
        ("replicas", args.replicas.map(|r| json!(r))),
        ("labels", labels.map(|l| json!(l))),
        ("placement", placement),
        ("resources", resources),
        ("restart_policy", restart),
        ("update_config", update),
        ("rollback_config", args.rollback.section()?),
    ])
    .expect("the mode is always there"))
}

/// The one-service document, as the loader reads files.
struct OneFile(Vec<u8>);

impl SourceTree for OneFile {
    fn read(&self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        Ok((path == Path::new("cli.yaml")).then(|| self.0.clone()))
    }

    fn list(&self, _dir: &Path) -> std::io::Result<Option<Vec<String>>> {
        Ok(None)
    }
}
