//! What several commands print the same way: tables, the services list, findings about
//! stack files, times ago.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use swarm_api::units::GoDuration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// `--format` of the listing commands: Docker's table, JSON, or a template of Docker's
/// common forms (`{{.Name}}`, `table {{.Name}}\t{{.Replicas}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
    Template(Template),
}

impl std::str::FromStr for ListFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "table" => Ok(ListFormat::Table),
            "json" => Ok(ListFormat::Json),
            _ => Template::parse(text).map(ListFormat::Template),
        }
    }
}

/// A listing's table: its columns' headers and a row per item, printed as a table or
/// through a template (whose fields are the headers in Go's spelling: `DESIRED STATE` is
/// `{{.DesiredState}}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rows<const N: usize> {
    pub header: [&'static str; N],
    pub rows: Vec<[String; N]>,
}

impl<const N: usize> Rows<N> {
    pub fn table(&self) -> String {
        table(self.header, &self.rows)
    }

    /// The rows as `format` prints them (JSON is the caller's: it prints the items).
    pub fn render(&self, format: &ListFormat) -> anyhow::Result<String> {
        match format {
            ListFormat::Template(template) => template.render(&self.header, &self.rows),
            ListFormat::Table | ListFormat::Json => Ok(self.table()),
        }
    }
}

/// A listing as `ls` prints it: JSON, only each item's name with `-q`, the table, or each
/// item through a template.
pub fn print_listing<T: serde::Serialize, const N: usize>(
    items: &[T],
    format: &ListFormat,
    quiet: bool,
    name: impl Fn(&T) -> &str,
    rows: impl FnOnce(&[T]) -> Rows<N>,
) -> anyhow::Result<()> {
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(items)?),
        _ if quiet => {
            for item in items {
                println!("{}", name(item));
            }
        }
        format => print!("{}", rows(items).render(format)?),
    }
    Ok(())
}

/// A line per item from literal text and `{{.Field}}`s; `\t` and `\n` are a tab and a
/// newline; `table ` first adds a header line and aligns the tab-separated columns. No Go
/// template engine: functions, pipelines and conditions are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    table: bool,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(String),
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let (table, mut rest) = match text.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with([' ', '\t']) => {
                (true, rest.trim_start())
            }
            _ => (false, text),
        };
        let mut parts = Vec::new();
        let literal = |text: &str| Part::Text(text.replace("\\t", "\t").replace("\\n", "\n"));
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(literal(&rest[..open]));
            }
            let Some(close) = rest[open..].find("}}") else {
                return Err(format!(
                    "invalid --format {text:?}: a {{{{ without its }}}}"
                ));
            };
            let action = rest[open + 2..open + close].trim();
            let field = action
                .strip_prefix('.')
                .filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric()));
            let Some(field) = field else {
                return Err(format!(
                    "invalid --format {text:?}: {{{{{action}}}}} is not a field; only {{{{.Field}}}} and literal text are understood"
                ));
            };
            parts.push(Part::Field(field.to_owned()));
            rest = &rest[open + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(literal(rest));
        }
        Ok(Template { table, parts })
    }

    /// Each row through the template, after a header line if it is a `table`.
    pub fn render<const N: usize>(
        &self,
        header: &[&str; N],
        rows: &[[String; N]],
    ) -> anyhow::Result<String> {
        let fields = header.map(go_field);
        let mut columns = Vec::new();
        for part in &self.parts {
            if let Part::Field(field) = part {
                let Some(column) = fields.iter().position(|f| f == field) else {
                    let known: Vec<String> = fields.iter().map(|f| format!(".{f}")).collect();
                    bail!(
                        "unknown field .{field} in --format: this listing has {}",
                        known.join(", ")
                    );
                };
                columns.push(column);
            }
        }
        let line = |cell: &dyn Fn(usize) -> String| {
            let mut columns = columns.iter();
            let mut line = String::new();
            for part in &self.parts {
                match part {
                    Part::Text(text) => line.push_str(text),
                    Part::Field(_) => {
                        line.push_str(&cell(*columns.next().expect("a column per field")))
                    }
                }
            }
            line
        };
        let mut lines = Vec::new();
        if self.table {
            lines.push(line(&|column| header[column].to_owned()));
        }
        for row in rows {
            lines.push(line(&|column| row[column].clone()));
        }
        if !self.table {
            return Ok(lines.into_iter().map(|l| l + "\n").collect());
        }
        Ok(aligned(&lines))
    }
}

/// A header as Go names the field: `DESIRED STATE` → `DesiredState`, `ID` → `ID`.
fn go_field(header: &str) -> String {
    header
        .split([' ', '_'])
        .filter(|word| !word.is_empty())
        .map(|word| {
            if word == "ID" {
                return word.to_owned();
            }
            let mut chars = word.chars();
            let first = chars.next().expect("a word is not empty");
            first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
        })
        .collect()
}

/// Tab-separated cells in columns padded to their widest, three spaces apart.
fn aligned(lines: &[String]) -> String {
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for line in &cells {
        for (i, cell) in line.iter().enumerate() {
            if i + 1 < line.len() {
                if widths.len() <= i {
                    widths.resize(i + 1, 0);
                }
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i + 1 == line.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// An id as listings show it: its first 12 characters, as Docker's.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// An id as a listing with `--no-trunc` shows it: whole when asked.
pub fn listed_id(id: &str, no_trunc: bool) -> String {
    if no_trunc { id } else { short_id(id) }.to_owned()
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
pub fn print_services(
    view: &ServicesView,
    quiet: bool,
    format: &ListFormat,
    no_trunc: bool,
) -> anyhow::Result<()> {
    print_services_from(view, &Sources::new(), quiet, format, no_trunc)
}

/// The services of `view` as `service ls` prints them: with a SOURCE column (a `Source`
/// field in JSON) for those a repository manages.
pub fn print_services_from(
    view: &ServicesView,
    sources: &Sources,
    quiet: bool,
    format: &ListFormat,
    no_trunc: bool,
) -> anyhow::Result<()> {
    if *format == ListFormat::Json {
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
        print!("{}", services_table(view, sources, format, no_trunc)?);
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

/// The services' rows through `format`: Docker's columns, and SOURCE when a service is
/// git-managed.
fn services_table(
    view: &ServicesView,
    sources: &Sources,
    format: &ListFormat,
    no_trunc: bool,
) -> anyhow::Result<String> {
    let rows = services_rows(view, sources, no_trunc);
    if !sources.is_empty() {
        return rows.render(format);
    }
    // Without a git-managed service, the columns Docker prints.
    let [id, name, mode, replicas, image, ports, _] = rows.header;
    Rows {
        header: [id, name, mode, replicas, image, ports],
        rows: rows
            .rows
            .into_iter()
            .map(|[id, name, mode, replicas, image, ports, _]| {
                [id, name, mode, replicas, image, ports]
            })
            .collect(),
    }
    .render(format)
}

fn services_rows(view: &ServicesView, sources: &Sources, no_trunc: bool) -> Rows<7> {
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
                listed_id(id, no_trunc),
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
    Rows {
        header: ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS", "SOURCE"],
        rows,
    }
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

/// A time flag (`--since`, `--until`): a duration ago, an RFC 3339 time or Unix seconds;
/// in Unix nanoseconds.
pub fn parse_time(flag: &str, text: &str, now: SystemTime) -> anyhow::Result<u64> {
    let seconds = text
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0);
    let time = if let Ok(ago) = text.parse::<GoDuration>() {
        now.checked_sub(ago.0).unwrap_or(UNIX_EPOCH)
    } else if let Some(seconds) = seconds {
        UNIX_EPOCH + Duration::from_secs_f64(seconds)
    } else if let Some(time) = parse_rfc3339(text) {
        time
    } else {
        bail!(
            "invalid {flag} {text:?}: give a duration (10m, 1h30m), an RFC 3339 time (2026-01-02T15:04:05Z) or Unix seconds"
        );
    };
    let nanos = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // 0 means "from the start": a time at the epoch asks for the same.
    Ok(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// A time as Docker prints log timestamps: RFC 3339 in UTC with nine fraction digits.
pub fn timestamp(unix_nanos: u64) -> String {
    let time = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos))
        .expect("a u64 of nanoseconds is within the years time represents");
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.nanosecond()
    )
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

    fn rows() -> Rows<4> {
        Rows {
            header: ["ID", "NAME", "REPLICAS", "DESIRED STATE"],
            rows: vec![
                ["abc".into(), "web".into(), "2/3".into(), "running".into()],
                [
                    "defghi".into(),
                    "database".into(),
                    "1/1".into(),
                    "shutdown".into(),
                ],
            ],
        }
    }

    fn render(format: &str) -> Result<String, String> {
        let format: ListFormat = format.parse()?;
        rows().render(&format).map_err(|e| e.to_string())
    }

    #[test]
    fn templates_take_dockers_common_forms() {
        assert_eq!(render("{{.Name}}").unwrap(), "web\ndatabase\n");
        assert_eq!(
            render("{{.ID}}: {{ .Name }} ({{.Replicas}})").unwrap(),
            "abc: web (2/3)\ndefghi: database (1/1)\n"
        );
        assert_eq!(
            render(r"{{.Name}}\t{{.DesiredState}}").unwrap(),
            "web\trunning\ndatabase\tshutdown\n",
            "a tab without `table` stays a tab"
        );
        assert_eq!(
            render(r"table {{.Name}}\t{{.Replicas}}").unwrap(),
            "NAME       REPLICAS\nweb        2/3\ndatabase   1/1\n"
        );
        assert_eq!(render("table").unwrap(), rows().table());
        assert_eq!(
            render("json").unwrap(),
            rows().table(),
            "json is the caller's"
        );
    }

    #[test]
    fn template_errors_name_the_field_and_the_known_ones() {
        assert_eq!(
            render("{{.Nmae}}").unwrap_err(),
            "unknown field .Nmae in --format: this listing has .ID, .Name, .Replicas, .DesiredState"
        );
        assert!(
            render("{{json .}}")
                .unwrap_err()
                .contains("{{json .}} is not a field")
        );
        assert!(render("{{.Name").unwrap_err().contains("without its }}"));
    }

    #[test]
    fn since_takes_durations_times_and_unix_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let cases = [
            ("10m", Some(1_699_999_400_000_000_000)),
            ("1h30m", Some(1_699_994_600_000_000_000)),
            ("1700000000", Some(1_700_000_000_000_000_000)),
            ("1700000000.5", Some(1_700_000_000_500_000_000)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000_000_000)),
            ("2023-11-14T22:13:20.25Z", Some(1_700_000_000_250_000_000)),
            ("2023-11-14T23:13:20+01:00", Some(1_700_000_000_000_000_000)),
            ("2023-11-14T21:13:20-01:00", Some(1_700_000_000_000_000_000)),
            ("2023-13-14T22:13:20Z", None),
            ("2023-11-14T22:13:20", None),
            ("yesterday", None),
            ("inf", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_time("--since", text, now).ok(), expected, "{text}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_nanoseconds() {
        let cases = [
            (0, "1970-01-01T00:00:00.000000000Z"),
            (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123456789Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000000000Z"),
        ];
        for (nanos, expected) in cases {
            assert_eq!(timestamp(nanos), expected);
            assert_eq!(
                parse_rfc3339(expected),
                Some(UNIX_EPOCH + Duration::from_nanos(nanos))
            );
        }
    }

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
        let text = services_table(&view(), &sources, &ListFormat::Table, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("PORTS   SOURCE"), "{text}");
        assert!(lines[1].ends_with("app@1a2b3c4d5e6f (drifted)"), "{text}");
        assert!(
            lines[2].contains("web_tools") && lines[2].ends_with("busybox"),
            "{text}"
        );
        // Without one, Docker's columns.
        let text = services_table(&view(), &Sources::new(), &ListFormat::Table, false).unwrap();
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
        let text = services_table(&view, &Sources::new(), &ListFormat::Table, false).unwrap();
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
