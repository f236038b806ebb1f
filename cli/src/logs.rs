//! `swarm service logs`: the lines of a service's tasks (or of one task) from every node,
//! printed as Docker prints them: `name.slot.taskid@node    | line`, stdout lines on
//! stdout and stderr lines on stderr.

use std::io::{ErrorKind, Write};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{Context, bail};
use clap::Args;
use swarm_api::grpc::control::{ServiceLogLine, ServiceLogsRequest};
use swarm_api::task::ServicesView;

use crate::client::{self, Host, view};
use crate::output::{parse_time, short_id, timestamp};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new lines (until interrupted)
    #[arg(long, short)]
    follow: bool,
    /// Only this many lines from the end of each task's log, or `all`
    #[arg(long, short = 'n', default_value = "all")]
    tail: String,
    /// Show when each line was written
    #[arg(long, short)]
    timestamps: bool,
    /// Only lines since a time (RFC 3339, e.g. 2026-01-02T15:04:05Z, or Unix seconds) or
    /// since a duration ago (e.g. 10m)
    #[arg(long)]
    since: Option<String>,
    /// Leave the task ids out of the prefixes
    #[arg(long)]
    no_task_ids: bool,
    /// Print the lines alone, without their task and node
    #[arg(long)]
    raw: bool,
    /// A service (id, unique id prefix or name), or a task (id or unique id prefix)
    target: String,
}

pub async fn run(host: &Host, args: LogsArgs) -> anyhow::Result<ExitCode> {
    let tail = parse_tail(&args.tail)?;
    let since_ns = match &args.since {
        Some(since) => parse_time("--since", since, SystemTime::now())?,
        None => 0,
    };
    // For the prefixes: the tasks' names and the nodes' hostnames.
    let mut view = if args.raw {
        ServicesView::default()
    } else {
        view(host).await?
    };
    // Tasks the view did not know yet (started while following), read once more each.
    let mut looked_up = std::collections::HashSet::new();
    let mut client = client::connect(host).await?;
    let mut stream = client
        .service_logs(ServiceLogsRequest {
            target: args.target.clone(),
            follow: args.follow,
            tail,
            since_ns,
        })
        .await
        .map_err(client::explain)?
        .into_inner();
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    while let Some(message) = stream.message().await.map_err(client::explain)? {
        for warning in &message.warnings {
            // Best effort: a closed stderr must not stop the lines.
            let _ = writeln!(stderr, "warning: {warning}");
        }
        for line in &message.lines {
            let known = view.tasks.iter().any(|t| t.id == line.task_id);
            if !args.raw && !known && looked_up.insert(line.task_id.clone()) {
                view = client::view(host).await?;
            }
            let prefix = (!args.raw).then(|| prefix(&view, line, args.no_task_ids));
            let time = args.timestamps.then_some(line.time_ns);
            let text = format_line(prefix.as_deref(), time, &line.data);
            let out: &mut dyn Write = if line.stderr {
                &mut stderr
            } else {
                &mut stdout
            };
            match out.write_all(&text).and_then(|()| out.flush()) {
                Ok(()) => {}
                // The reader went away (`| head`): done, like Docker.
                Err(error) if error.kind() == ErrorKind::BrokenPipe => {
                    return Ok(ExitCode::SUCCESS);
                }
                Err(error) => return Err(error).context("cannot write the logs"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--tail`: a count, or `all` (negative on the wire).
fn parse_tail(text: &str) -> anyhow::Result<i64> {
    if text == "all" {
        return Ok(-1);
    }
    match text.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => bail!("invalid --tail {text:?}: give a number of lines, or `all`"),
    }
}

/// Where a line comes from, from the view read before the lines.
fn prefix(view: &ServicesView, line: &ServiceLogLine, no_task_ids: bool) -> String {
    let hostname = view.nodes.get(&line.node_id).unwrap_or(&line.node_id);
    let name = view
        .tasks
        .iter()
        .find(|t| t.id == line.task_id)
        .map(|t| t.name());
    task_prefix(name.as_deref(), &line.task_id, hostname, no_task_ids)
}

/// Where a line comes from, as Docker names it: `service.slot.taskid@node` (a global
/// service's task is named `service.nodeid`), without the task id if asked; a task
/// unknown to the view (made after it was read) by its id alone.
fn task_prefix(name: Option<&str>, task_id: &str, hostname: &str, no_task_ids: bool) -> String {
    match name {
        None => format!("{}@{hostname}", short_id(task_id)),
        Some(name) if no_task_ids => format!("{name}@{hostname}"),
        Some(name) => format!("{name}.{}@{hostname}", short_id(task_id)),
    }
}

/// One line as printed: `PREFIX    | [TIME ]TEXT\n`.
fn format_line(prefix: Option<&str>, time_ns: Option<u64>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 80);
    if let Some(prefix) = prefix {
        out.extend_from_slice(prefix.as_bytes());
        out.extend_from_slice(b"    | ");
    }
    if let Some(time) = time_ns {
        out.extend_from_slice(timestamp(time).as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(data);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_is_a_count_or_all() {
        let cases = [
            ("all", Some(-1)),
            ("0", Some(0)),
            ("25", Some(25)),
            ("-1", None),
            ("x", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_tail(text).ok(), expected, "{text}");
        }
    }

    #[test]
    fn lines_are_prefixed_as_docker_prefixes_them() {
        let id = "aaaaaaaaaaaaaaaaaaaaaaaaa";
        let cases = [
            (Some("web.2"), false, "web.2.aaaaaaaaaaaa@host1"),
            (Some("web.2"), true, "web.2@host1"),
            (Some("web.n2"), false, "web.n2.aaaaaaaaaaaa@host1"),
            (None, false, "aaaaaaaaaaaa@host1"),
        ];
        for (name, no_task_ids, expected) in cases {
            assert_eq!(task_prefix(name, id, "host1", no_task_ids), expected);
        }
        let cases: [(Option<&str>, Option<u64>, &str); 3] = [
            (Some("web.1@h"), None, "web.1@h    | hi\n"),
            (
                Some("web.1@h"),
                Some(0),
                "web.1@h    | 1970-01-01T00:00:00.000000000Z hi\n",
            ),
            (None, None, "hi\n"),
        ];
        for (prefix, time, expected) in cases {
            assert_eq!(
                String::from_utf8(format_line(prefix, time, b"hi")).unwrap(),
                expected
            );
        }
    }
}
