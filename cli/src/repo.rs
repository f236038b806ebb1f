//! `swarm repo add|ls|inspect|rm|sync`: the git repositories the leader watches.
//!
//! Credentials and the webhook secret are read from the files the flags name
//! (`gitops::RepoOptions`) and sent once, in `AddRepository`; the daemon never sends them
//! back, so nothing here prints them.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use swarm_api::gitops::RepositoryStatus;
use swarm_api::grpc::control::{RemoveRepositoryRequest, SyncRepositoryRequest};
use swarm_api::units::GoDuration;
use swarm_controller::gitops::redact_url;
use swarm_node::repos::RepositoryView;

use crate::client::{self, Host};
use crate::gitops::{
    RepoOptions, add, deployments_table, inspect, list, now_ms, one_line, positive_duration,
};
use crate::output::{Format, ListFormat, Rows, ago, print_listing, short_id};

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Declare a git repository: the leader fetches it, and deploys the stacks under its
    /// path at each new commit of its branch
    Add(Box<AddArgs>),
    /// List the repositories and where each stands
    #[command(alias = "list")]
    Ls {
        /// Only the names
        #[arg(long, short)]
        quiet: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.ID}}\t{{.Name}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show a repository: its declaration (no secret), status, drift and last deployments
    Inspect {
        name: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Forget a repository; its services keep running, unmanaged, unless --prune
    #[command(alias = "remove")]
    Rm {
        name: String,
        /// Also remove the stacks the repository deployed
        #[arg(long)]
        prune: bool,
    },
    /// Ask the leader to fetch a repository now
    Sync {
        name: String,
        /// Wait until the fetched head is processed (a Deployment recorded for it)
        #[arg(long)]
        wait: bool,
        /// How long --wait waits at most
        #[arg(long, default_value = "60s", value_parser = positive_duration)]
        timeout: Duration,
    },
}

/// `swarm repo add NAME URL`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// The repository's name in the cluster (letters, digits, '_', '.', '-')
    name: String,
    /// A local path, file://, https://, ssh:// or user@host:path (no password in it)
    url: String,
    #[command(flatten)]
    options: RepoOptions,
}

pub async fn run(host: &Host, command: RepoCommand) -> anyhow::Result<ExitCode> {
    match command {
        RepoCommand::Add(args) => {
            let request = args.options.request(args.name, args.url)?;
            add(host, request).await
        }
        RepoCommand::Ls { quiet, format } => {
            let repositories = list(host).await?;
            print_listing(
                &repositories,
                &format,
                quiet,
                |r| r.repository.name.as_str(),
                repositories_table,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Inspect { name, format } => {
            let view = inspect(host, &name).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
                Format::Table => print!("{}", describe(&view, now_ms())),
            }
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Rm { name, prune } => {
            let mut client = client::connect(host).await?;
            let removed = client
                .remove_repository(RemoveRepositoryRequest {
                    name: name.clone(),
                    prune,
                })
                .await
                .map_err(client::explain)?
                .into_inner()
                .removed;
            for object in removed {
                println!("Removed {object}");
            }
            println!("Removed repository {name}");
            Ok(ExitCode::SUCCESS)
        }
        RepoCommand::Sync {
            name,
            wait,
            timeout,
        } => sync(host, &name, wait, timeout).await,
    }
}

/// How long a sync with `--wait` accepts an unchanged, processed head as the answer: the
/// watcher writes nothing when a fetch finds the head it had.
const SETTLE: Duration = Duration::from_secs(5);

async fn sync(host: &Host, name: &str, wait: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    let mut client = client::connect(host).await?;
    let at = client
        .sync_repository(SyncRepositoryRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(client::explain)?
        .into_inner()
        .at;
    println!("Sync of repository {name} requested");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    loop {
        let view = inspect(host, name).await?;
        match sync_progress(&view.status, at, start.elapsed() >= SETTLE) {
            SyncProgress::Done(commit) => {
                let outcome = view
                    .deployments
                    .iter()
                    .find(|d| d.commit.id == commit)
                    .map(|d| format!(" (deployment {}: {})", d.id, d.outcome.as_str()))
                    .unwrap_or_default();
                println!("Repository {name} is at {}{outcome}", short_id(&commit));
                return Ok(ExitCode::SUCCESS);
            }
            SyncProgress::Failed(message) => bail!("repository {name}: {message}"),
            SyncProgress::Waiting => {}
        }
        if start.elapsed() >= timeout {
            bail!(
                "repository {name} did not finish syncing within {}: `swarm repo inspect {name}` shows where it stands",
                GoDuration(timeout)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SyncProgress {
    /// The fetched head (this commit) is processed.
    Done(String),
    /// A fetch or deployment failed after the request.
    Failed(String),
    Waiting,
}

/// Where a sync requested at `at` stands: done once a head fetched since is processed (or,
/// once `settled`, the head fetched before, which the fetch found unchanged).
fn sync_progress(status: &RepositoryStatus, at: u64, settled: bool) -> SyncProgress {
    if let Some(error) = status.error.as_ref().filter(|e| e.since >= at) {
        return SyncProgress::Failed(error.message.clone());
    }
    let Some(fetched) = &status.fetched else {
        return SyncProgress::Waiting;
    };
    let processed = status.processed.as_ref() == Some(&fetched.commit);
    if processed && (fetched.at >= at || settled) {
        SyncProgress::Done(fetched.commit.clone())
    } else {
        SyncProgress::Waiting
    }
}

fn commit_cell(commit: Option<&String>) -> String {
    commit.map_or_else(|| "-".to_owned(), |c| short_id(c).to_owned())
}

fn repositories_table(repositories: &[RepositoryView]) -> Rows<9> {
    let rows: Vec<[String; 9]> = repositories
        .iter()
        .map(|view| {
            let repository = &view.repository;
            let status = &view.status;
            [
                repository.name.clone(),
                redact_url(&repository.url),
                repository.branch.clone(),
                if repository.path.is_empty() {
                    "/".to_owned()
                } else {
                    repository.path.clone()
                },
                commit_cell(status.fetched.as_ref().map(|f| &f.commit)),
                commit_cell(status.applied.as_ref()),
                view.state.as_str().to_owned(),
                status.drift.len().to_string(),
                status
                    .error
                    .as_ref()
                    .map(|e| one_line(&e.message, 60))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    Rows {
        header: [
            "NAME",
            "URL",
            "BRANCH",
            "PATH",
            "FETCHED",
            "APPLIED",
            "STATE",
            "DRIFT",
            "LAST ERROR",
        ],
        rows,
    }
}

/// `repo inspect` for people.
fn describe(view: &RepositoryView, now: u64) -> String {
    let repository = &view.repository;
    let status = &view.status;
    let since = |at: u64| format!("{} ago", ago(now.saturating_sub(at)));
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<16}{value}\n"));
    line("Name:", repository.name.clone());
    line("URL:", redact_url(&repository.url));
    line("Branch:", repository.branch.clone());
    line(
        "Path:",
        if repository.path.is_empty() {
            "/ (the root)".to_owned()
        } else {
            repository.path.clone()
        },
    );
    line(
        "Interval:",
        GoDuration(Duration::from_millis(repository.interval_ms)).to_string(),
    );
    line("Self-heal:", repository.self_heal.to_string());
    line("Prune:", repository.prune.to_string());
    if let Some(notify) = &repository.notify {
        line("Notify:", redact_url(notify));
    }
    line(
        "Credentials:",
        view.credentials
            .clone()
            .unwrap_or_else(|| "none".to_owned()),
    );
    line(
        "Webhook secret:",
        if view.webhook_secret { "set" } else { "none" }.to_owned(),
    );
    line("State:", view.state.as_str().to_owned());
    if let Some(fetched) = &status.fetched {
        line(
            "Fetched:",
            format!("{} ({})", short_id(&fetched.commit), since(fetched.at)),
        );
    }
    line("Processed:", commit_cell(status.processed.as_ref()));
    line("Applied:", commit_cell(status.applied.as_ref()));
    if !status.stacks.is_empty() {
        line(
            "Stacks:",
            status.stacks.iter().cloned().collect::<Vec<_>>().join(", "),
        );
    }
    if let Some(sync) = &status.sync {
        line(
            "Sync asked:",
            format!("{} ({})", since(sync.at), sync.trigger.as_str()),
        );
    }
    if let Some(error) = &status.error {
        line(
            "Last error:",
            format!(
                "{} (since {}, {} attempt{})",
                error.message,
                since(error.since),
                error.attempts,
                if error.attempts == 1 { "" } else { "s" }
            ),
        );
    }
    if !view.services.is_empty() {
        out.push_str("Services:\n");
        let width = view.services.keys().map(String::len).max().unwrap_or(0);
        for (service, commit) in &view.services {
            let drifted = if status.drift.contains_key(service) {
                "   drifted"
            } else {
                ""
            };
            out.push_str(&format!(
                "  {service:<width$}   {}{drifted}\n",
                short_id(commit)
            ));
        }
    }
    if !status.drift.is_empty() {
        out.push_str("Drift (git → cluster):\n");
        out.push_str(&drift_lines(&status.drift));
    }
    if !view.deployments.is_empty() {
        out.push_str("Deployments:\n");
        let table = deployments_table(&view.deployments, now).table();
        for row in table.lines() {
            out.push_str(&format!("  {row}\n"));
        }
    }
    out
}

fn drift_lines(drift: &BTreeMap<String, Vec<swarm_api::plan::FieldChange>>) -> String {
    let value = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map_or_else(|| "(none)".to_owned(), |v| v.to_string())
    };
    let mut out = String::new();
    for (service, changes) in drift {
        out.push_str(&format!("  {service}:\n"));
        for change in changes {
            out.push_str(&format!(
                "    {}: {} → {}\n",
                change.path,
                value(&change.before),
                value(&change.after)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{Fetched, Repository, RepositoryError};
    use swarm_api::plan::FieldChange;
    use swarm_node::repos::RepositoryState;

    use super::*;

    fn view() -> RepositoryView {
        RepositoryView {
            repository: Repository {
                name: "app".into(),
                url: "https://me:oops@git.example.com/app.git".into(),
                branch: "main".into(),
                path: "stacks".into(),
                interval_ms: 15_000,
                self_heal: true,
                prune: false,
                notify: None,
                created_at: 0,
            },
            credentials: Some("token".into()),
            webhook_secret: true,
            state: RepositoryState::Drifted,
            status: RepositoryStatus {
                fetched: Some(Fetched {
                    commit: "1a2b3c4d5e6f7a8b9c0d".into(),
                    at: 1_000,
                }),
                processed: Some("1a2b3c4d5e6f7a8b9c0d".into()),
                applied: Some("1a2b3c4d5e6f7a8b9c0d".into()),
                drift: [(
                    "web_site".to_owned(),
                    vec![FieldChange {
                        path: "mode.replicated.replicas".into(),
                        before: Some(2.into()),
                        after: Some(5.into()),
                    }],
                )]
                .into(),
                ..RepositoryStatus::default()
            },
            services: [("web_site".to_owned(), "1a2b3c4d5e6f7a8b9c0d".to_owned())].into(),
            deployments: Vec::new(),
        }
    }

    #[test]
    fn the_table_shows_short_commits_a_redacted_url_and_the_state() {
        let table = repositories_table(&[view()]).table();
        let mut lines = table.lines();
        assert!(lines.next().unwrap().starts_with("NAME   URL"));
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "app",
                "https://me:<redacted>@git.example.com/app.git",
                "main",
                "stacks",
                "1a2b3c4d5e6f",
                "1a2b3c4d5e6f",
                "drifted",
                "1"
            ]
        );
    }

    #[test]
    fn inspect_shows_the_kind_of_credentials_and_the_drift() {
        let text = describe(&view(), 61_000);
        assert!(text.contains("Credentials:    token\n"), "{text}");
        assert!(text.contains("Webhook secret: set\n"), "{text}");
        assert!(
            text.contains("Fetched:        1a2b3c4d5e6f (About a minute ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("  web_site   1a2b3c4d5e6f   drifted\n"),
            "{text}"
        );
        assert!(
            text.contains("    mode.replicated.replicas: 2 → 5\n"),
            "{text}"
        );
        assert!(!text.contains("oops"), "{text}");
    }

    #[test]
    fn a_sync_is_done_when_a_head_fetched_since_is_processed() {
        let mut status = view().status;
        // Fetched before the request: only once settled.
        assert_eq!(sync_progress(&status, 2_000, false), SyncProgress::Waiting);
        assert_eq!(
            sync_progress(&status, 2_000, true),
            SyncProgress::Done("1a2b3c4d5e6f7a8b9c0d".into())
        );
        status.fetched = Some(Fetched {
            commit: "ffff".into(),
            at: 2_500,
        });
        assert_eq!(sync_progress(&status, 2_000, true), SyncProgress::Waiting);
        status.processed = Some("ffff".into());
        assert_eq!(
            sync_progress(&status, 2_000, false),
            SyncProgress::Done("ffff".into())
        );
        status.error = Some(RepositoryError {
            message: "cannot reach the remote".into(),
            since: 2_600,
            attempts: 1,
        });
        assert_eq!(
            sync_progress(&status, 2_000, false),
            SyncProgress::Failed("cannot reach the remote".into())
        );
    }
}
