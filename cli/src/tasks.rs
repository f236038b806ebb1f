//! Task listings: `service ps`, `stack ps` and `node ps` print tasks alike.

use std::process::ExitCode;

use swarm_api::spec::PublishMode;
use swarm_api::task::{DesiredState, ServicesView, Task, TaskState};

use crate::client::{Host, view};
use crate::filter::TaskFilter;
use crate::output::{ListFormat, Rows, ago, listed_id, short_id};

/// The flags every task listing takes (`service ps`, `node ps`, `stack ps`).
#[derive(Debug, clap::Args)]
pub struct TaskListArgs {
    /// Only tasks matching KEY=VALUE: id (a prefix), name (a prefix, `web.1`), node (id
    /// prefix or hostname), desired-state (running, shutdown or accepted); repeat a key for
    /// alternatives
    #[arg(long, short)]
    filter: Vec<String>,
    /// Only the IDs
    #[arg(long, short)]
    quiet: bool,
    /// Whole ids
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a template: `{{.Name}}`, `table {{.Name}}\t{{.CurrentState}}`
    #[arg(long, default_value = "table")]
    format: ListFormat,
}

impl TaskListArgs {
    pub fn filter(&self) -> anyhow::Result<TaskFilter> {
        TaskFilter::parse(&self.filter)
    }

    /// Whether the tasks print as the default table, which notes under it the ports
    /// another process holds.
    pub fn is_table(&self) -> bool {
        !self.quiet && self.format == ListFormat::Table
    }
}

/// `swarm node ps NODE…`: the tasks on nodes.
pub async fn node_ps(
    host: &Host,
    nodes: &[String],
    listing: &TaskListArgs,
) -> anyhow::Result<ExitCode> {
    let filter = listing.filter()?;
    let view = view(host).await?;
    let mut tasks = Vec::new();
    let mut ids = Vec::new();
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
        ids.push((*id).clone());
        tasks.extend(
            view.tasks
                .iter()
                .filter(|t| t.node_id.as_ref() == Some(*id))
                .filter(|t| filter.matches(t, hostname(&view, t))),
        );
    }
    print_tasks(&view, tasks, listing)?;
    if listing.is_table() {
        print_ports_taken(host, |node, _| ids.iter().any(|id| id == node)).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The hostname of `task`'s node, as `view` knows it.
pub fn hostname<'a>(view: &'a ServicesView, task: &Task) -> Option<&'a str> {
    view.nodes.get(task.node_id.as_ref()?).map(String::as_str)
}

/// After a task table, a line per published port another process holds on a node (its
/// routing mesh leaves the port to that process; the other nodes answer it), for the
/// (node id, `8080/tcp`) pairs `wanted` picks.
pub async fn print_ports_taken(
    host: &Host,
    wanted: impl Fn(&str, &str) -> bool,
) -> anyhow::Result<()> {
    let mut client = crate::client::connect(host).await?;
    let nodes = client
        .list_nodes(swarm_api::grpc::control::ListNodesRequest {})
        .await
        .map_err(crate::client::explain)?
        .into_inner()
        .nodes;
    for node in &nodes {
        for port in node.ports_taken.iter().filter(|p| wanted(&node.id, p)) {
            println!(
                "port {port} taken by another process on node {}",
                node.hostname
            );
        }
    }
    Ok(())
}

/// `tasks` as `docker service ps` prints them (JSON with `--format json`).
pub fn print_tasks(
    view: &ServicesView,
    mut tasks: Vec<&Task>,
    listing: &TaskListArgs,
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
    if listing.format == ListFormat::Json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    if listing.quiet {
        for task in &tasks {
            println!("{}", task.id);
        }
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
                // A job's task is meant to run to completion, as Docker shows it.
                DesiredState::Running if task.spec.job_iteration > 0 => "Complete",
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
                (None, TaskState::Pending) => task.status.message.clone(),
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
                .filter(|p| p.mode == PublishMode::Host)
                .map(|p| p.to_string())
                .collect();
            [
                listed_id(&task.id, listing.no_trunc),
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
    let rows = Rows {
        header: [
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
            "PORTS",
        ],
        rows,
    };
    print!("{}", rows.render(&listing.format)?);
    Ok(())
}
