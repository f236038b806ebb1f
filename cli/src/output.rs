//! What several commands print the same way: tables, the services list, findings about
//! stack files, times ago.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use swarm_api::spec::ServiceMode;
use swarm_api::task::{DesiredState, ServicesView, Task, TaskState};
use swarm_controller::stack::{Diagnostic, Severity};

/// `--format` of the listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Columns padded to their widest cell, separated by three spaces, as Docker prints them.
pub fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths: [usize; N] = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// A listing as `ls` prints it: JSON, only each item's name with `-q`, or the table.
pub fn print_listing<T: serde::Serialize>(
    items: &[T],
    format: Format,
    quiet: bool,
    name: impl Fn(&T) -> &str,
    table: impl FnOnce(&[T]) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(items)?),
        Format::Table if quiet => {
            for item in items {
                println!("{}", name(item));
            }
        }
        Format::Table => print!("{}", table(items)),
    }
    Ok(())
}

/// An id as listings show it: its first 12 characters, as Docker's.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Where a git-managed service comes from, by service name: what `service ls` shows of it.
pub type Sources = BTreeMap<String, Source>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Source {
    pub repository: String,
    /// The commit that last changed the service.
    pub commit: String,
    /// Whether its spec differs from git's.
    pub drifted: bool,
}

impl Source {
    /// `app@1a2b3c4d5e6f`, with ` (drifted)` when it is.
    fn label(&self) -> String {
        let drifted = if self.drifted { " (drifted)" } else { "" };
        format!("{}@{}{drifted}", self.repository, short_id(&self.commit))
    }
}

/// The services of `view` as `stack services` prints them.
pub fn print_services(view: &ServicesView, quiet: bool, format: Format) -> anyhow::Result<()> {
    print_services_from(view, &Sources::new(), quiet, format)
}

/// The services of `view` as `service ls` prints them: with a SOURCE column (a `Source`
/// field in JSON) for those a repository manages.
pub fn print_services_from(
    view: &ServicesView,
    sources: &Sources,
    quiet: bool,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        let mut services = serde_json::to_value(&view.services)?;
        for service in services.as_array_mut().into_iter().flatten() {
            let name = service["spec"]["name"].as_str().unwrap_or_default();
            if let Some(source) = sources.get(name) {
                service["Source"] = serde_json::to_value(source)?;
            }
        }
        println!("{}", serde_json::to_string_pretty(&services)?);
    } else if quiet {
        for service in &view.services {
            println!("{}", service.id.as_deref().unwrap_or_default());
        }
    } else {
        print!("{}", services_table(view, sources));
    }
    Ok(())
}

/// A job's REPLICAS as Docker's `service ls` shows it: its tasks running of those it
/// wants running now, then its completions of the total (`1/2 (3/5 completed)`). `live`
/// are the service's live tasks: the orchestrator stops those of earlier iterations, and
/// until it has, the latest iteration is the one that counts.
fn job_replicas(mode: ServiceMode, live: &[&Task]) -> String {
    let iteration = live.iter().map(|t| t.spec.job_iteration).max();
    let current: Vec<&&Task> = live
        .iter()
        .filter(|t| Some(t.spec.job_iteration) == iteration)
        .collect();
    let count = |state: TaskState| current.iter().filter(|t| t.status.state == state).count();
    let (running, completed) = (count(TaskState::Running), count(TaskState::Complete));
    let (desired, total) = match mode {
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => {
            let left = total_completions.saturating_sub(completed as u64);
            (
                max_concurrent.min(left) as usize,
                total_completions as usize,
            )
        }
        // Docker's arithmetic: the nodes still to complete, and those done.
        _ => {
            let left = current.len() - completed;
            (left, left + completed)
        }
    };
    format!("{running}/{desired} ({completed}/{total} completed)")
}

fn services_table(view: &ServicesView, sources: &Sources) -> String {
    let rows: Vec<[String; 7]> = view
        .services
        .iter()
        .map(|service| {
            let id = service.id.as_deref().unwrap_or_default();
            let running = view
                .tasks
                .iter()
                .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
                .filter(|t| t.status.state == TaskState::Running)
                .count();
            let live: Vec<&Task> = view
                .tasks
                .iter()
                .filter(|t| t.service_id == id && t.desired == DesiredState::Running)
                .collect();
            let replicas = match service.spec.mode {
                ServiceMode::Replicated { replicas } => format!("{running}/{replicas}"),
                ServiceMode::Global => format!("{running}/{}", live.len()),
                ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob => {
                    job_replicas(service.spec.mode, &live)
                }
            };
            let mode = service.spec.mode.display_name();
            let ports: Vec<String> = view
                .ports_of(service)
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
                sources
                    .get(&service.spec.name)
                    .map(Source::label)
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS", "SOURCE"];
    if sources.is_empty() {
        // Without a git-managed service, the columns Docker prints.
        let rows: Vec<[String; 6]> = rows
            .into_iter()
            .map(|[id, name, mode, replicas, image, ports, _]| {
                [id, name, mode, replicas, image, ports]
            })
            .collect();
        return table(header[..6].try_into().expect("six columns"), &rows);
    }
    table(header, &rows)
}

/// Docker's "2 minutes" style.
pub fn ago(ms: u64) -> String {
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

/// Findings to stderr, one a line, then the count of errors when there are any.
pub fn print_diagnostics(diagnostics: &[Diagnostic]) {
    let mut stderr = std::io::stderr().lock();
    for diagnostic in diagnostics {
        let _ = writeln!(stderr, "{diagnostic}");
    }
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if errors > 0 {
        let _ = writeln!(stderr, "{errors} error(s) in {}", diagnostics[0].file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> ServicesView {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.yaml");
        let yaml = "services:\n  site:\n    image: busybox\n  tools:\n    image: busybox\n";
        std::fs::write(&path, yaml).unwrap();
        let stack = swarm_controller::stack::load(
            &swarm_controller::source::WorkTree,
            &path,
            "web.yaml",
            &|_| None,
        )
        .stack
        .unwrap();
        let services = stack
            .services
            .into_iter()
            .map(|spec| swarm_api::state::Object {
                id: Some(format!("{}-id", spec.name)),
                origin: Default::default(),
                spec,
            })
            .collect();
        ServicesView {
            version: 1,
            services,
            tasks: Vec::new(),
            nodes: Default::default(),
            update_status: Default::default(),
            virtual_ips: Default::default(),
            assigned_ports: Default::default(),
        }
    }

    #[test]
    fn git_managed_services_show_their_source() {
        let sources: Sources = [(
            "web_site".to_owned(),
            Source {
                repository: "app".into(),
                commit: "1a2b3c4d5e6f7a8b".into(),
                drifted: true,
            },
        )]
        .into();
        let text = services_table(&view(), &sources);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("PORTS   SOURCE"), "{text}");
        assert!(lines[1].ends_with("app@1a2b3c4d5e6f (drifted)"), "{text}");
        assert!(
            lines[2].contains("web_tools") && lines[2].ends_with("busybox"),
            "{text}"
        );
        // Without one, Docker's columns.
        let text = services_table(&view(), &Sources::new());
        assert!(
            text.lines().next().unwrap().ends_with("IMAGE     PORTS"),
            "{text}"
        );
    }

    #[test]
    fn jobs_show_their_completions_as_dockers_service_ls() {
        let mut view = view();
        view.services[0].spec.mode = ServiceMode::ReplicatedJob {
            max_concurrent: 2,
            total_completions: 5,
        };
        view.services[1].spec.mode = ServiceMode::GlobalJob;
        let task = |service: usize, iteration: u64, state: TaskState| {
            let object = &view.services[service];
            let mut spec = object.spec.task.clone();
            spec.job_iteration = iteration;
            Task {
                id: format!("t{service}{iteration}{state:?}"),
                service_id: object.id.clone().unwrap(),
                service_name: object.spec.name.clone(),
                slot: None,
                node_id: None,
                spec,
                desired: DesiredState::Running,
                status: swarm_api::task::TaskStatus::new(state, 0),
                created_at: 0,
                started_at: None,
                networks: Vec::new(),
            }
        };
        view.tasks = vec![
            task(0, 3, TaskState::Complete),
            task(0, 3, TaskState::Running),
            // Of the previous iteration, not stopped yet: it does not count.
            task(0, 2, TaskState::Complete),
            task(1, 3, TaskState::Complete),
            task(1, 3, TaskState::Complete),
        ];
        let text = services_table(&view, &Sources::new());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("replicated job   1/2 (1/5 completed)"),
            "{text}"
        );
        assert!(
            lines[2].contains("global job       0/0 (2/2 completed)"),
            "{text}"
        );
    }
}
