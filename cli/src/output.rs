//! What several commands print the same way: tables, the services list, findings about
//! stack files, times ago.

use std::io::Write;

use swarm_api::spec::ServiceMode;
use swarm_api::task::{DesiredState, ServicesView, TaskState};
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

/// An id as listings show it: its first 12 characters, as Docker's.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The services of `view` as `service ls` prints them.
pub fn print_services(view: &ServicesView, quiet: bool, format: Format) -> anyhow::Result<()> {
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
                .filter(|t| t.status.state == TaskState::Running)
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
