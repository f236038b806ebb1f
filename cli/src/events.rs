//! `swarm events`: the cluster's events as the manager asked derives them from its store
//! (`Control.Events`), one a line as Docker's `docker events` prints them, or one JSON
//! object a line.

use std::io::Write;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use clap::Args;
use swarm_api::events::{Event, EventFilter};
use swarm_api::grpc::control::events_message::Message;
use swarm_api::grpc::control::{EventsGap, EventsRequest};
use tokio::signal::unix::{SignalKind, signal};

use crate::client::{self, Host};
use crate::output::{parse_time, timestamp};

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only events matching KEY=VALUE: type (service, node, task, network, secret, config,
    /// deployment, repository), event (the action: create, update, remove, running, down…),
    /// service, node, network, secret, config, repository (a name or id), id, name;
    /// repeat a key for alternatives, different keys must all match
    #[arg(long, short)]
    filter: Vec<String>,
    /// Replay the kept events since a time (RFC 3339, or Unix seconds) or a duration ago
    /// (10m); each manager keeps its latest 10,000
    #[arg(long)]
    since: Option<String>,
    /// Stop at a time (RFC 3339, or Unix seconds) or a duration ago; without --since, the
    /// kept events before it
    #[arg(long)]
    until: Option<String>,
    /// `json`: one JSON object a line; otherwise Docker's line
    #[arg(long)]
    format: Option<EventFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EventFormat {
    Json,
}

pub async fn run(host: &Host, args: EventsArgs) -> anyhow::Result<ExitCode> {
    // Checked here too, so a typo fails before anything is asked.
    EventFilter::parse(&args.filter)?;
    let now = SystemTime::now();
    let nano = |flag: &str, text: &Option<String>| -> anyhow::Result<Option<i64>> {
        text.as_deref()
            .map(|text| Ok(i64::try_from(parse_time(flag, text, now)?).unwrap_or(i64::MAX)))
            .transpose()
    };
    let request = EventsRequest {
        filters: args.filter,
        since_nano: nano("--since", &args.since)?,
        until_nano: nano("--until", &args.until)?,
    };
    let mut client = client::connect(host).await?;
    let mut stream = client
        .events(request)
        .await
        .map_err(client::explain)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    // One listener for the whole stream: a Ctrl-C noticed in the turn a message won is kept
    // for the next one (a `ctrl_c()` made anew each turn was dropped with it, and lost).
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
    loop {
        let message = tokio::select! {
            message = stream.message() => message.map_err(client::explain)?,
            // Ctrl-C ends the stream as its end would: what was printed is complete.
            _ = interrupt.recv() => break,
        };
        let Some(message) = message else { break };
        match message.message {
            Some(Message::Event(json)) => {
                let event: Event = serde_json::from_str(&json)
                    .with_context(|| format!("the daemon sent an event that is not one: {json}"))?;
                let line = match args.format {
                    Some(EventFormat::Json) => json_line(&event)?,
                    None => line(&event),
                };
                writeln!(out, "{line}")?;
                out.flush()?;
            }
            Some(Message::Gap(gap)) => eprintln!("{}", gap_notice(&gap)),
            None => {}
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn time(event: &Event) -> String {
    timestamp(u64::try_from(event.time_nano).unwrap_or_default())
}

/// Docker's line: `TIME TYPE ACTION ID (name=NAME, KEY=VALUE, …)`.
fn line(event: &Event) -> String {
    let mut attributes = vec![format!("name={}", event.name)];
    attributes.extend(event.attributes.iter().map(|(k, v)| format!("{k}={v}")));
    format!(
        "{} {} {} {} ({})",
        time(event),
        event.kind.as_str(),
        event.action,
        event.id,
        attributes.join(", ")
    )
}

/// The event with its time in RFC 3339 first.
fn json_line(event: &Event) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Printed<'a> {
        time: String,
        #[serde(flatten)]
        event: &'a Event,
    }
    Ok(serde_json::to_string(&Printed {
        time: time(event),
        event,
    })?)
}

fn gap_notice(gap: &EventsGap) -> String {
    match gap.kept_since_nano {
        Some(kept) => format!(
            "warning: the manager keeps events from {} on only (its latest 10,000, since it became a manager or last caught up): earlier ones are not shown",
            timestamp(u64::try_from(kept).unwrap_or_default())
        ),
        None => format!(
            "warning: {} events lost: they came faster than this client read them",
            gap.lost
        ),
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::events::EventType;

    use super::*;

    fn event() -> Event {
        Event {
            time_nano: 1_796_493_600_000_000_000,
            kind: EventType::Service,
            action: "update".into(),
            id: "abc123".into(),
            name: "web".into(),
            attributes: [("replicas.new".to_owned(), "3".to_owned())].into(),
            index: 7,
        }
    }

    #[test]
    fn events_print_as_dockers_line_or_one_json_object() {
        assert_eq!(
            line(&event()),
            "2026-12-05T18:00:00.000000000Z service update abc123 (name=web, replicas.new=3)"
        );
        let json: serde_json::Value = serde_json::from_str(&json_line(&event()).unwrap()).unwrap();
        assert_eq!(json["time"], "2026-12-05T18:00:00.000000000Z");
        assert_eq!(json["type"], "service");
        assert_eq!(json["action"], "update");
        assert_eq!(json["name"], "web");
        assert_eq!(json["attributes"]["replicas.new"], "3");
        assert!(!json_line(&event()).unwrap().contains('\n'));
    }

    #[test]
    fn gaps_say_what_is_missing() {
        let kept = EventsGap {
            kept_since_nano: Some(1_796_493_600_000_000_000),
            lost: 0,
        };
        assert!(gap_notice(&kept).contains("from 2026-12-05T18:00:00.000000000Z on only"));
        let lost = EventsGap {
            kept_since_nano: None,
            lost: 12,
        };
        assert!(gap_notice(&lost).contains("12 events lost"));
    }
}
