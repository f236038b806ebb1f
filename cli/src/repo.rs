//! `swarm repo add|ls|inspect|rm|sync`: the git repositories the leader watches.
//!
//! Credentials and the webhook secret are read here from the files the flags name and sent
//! once, in `AddRepository`; the daemon never sends them back, so nothing here prints them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use swarm_api::gitops::{DEFAULT_INTERVAL_MS, RepositoryStatus};
use swarm_api::grpc::control::{
    AddRepositoryRequest, InspectRepositoryRequest, ListRepositoriesRequest,
    RemoveRepositoryRequest, RepositoryCredentials, SyncRepositoryRequest,
};
use swarm_api::units::GoDuration;
use swarm_controller::gitops::redact_url;
use swarm_node::repos::{DeploymentSummary, RepositoryView};

use crate::client::{self, Host};
use crate::output::{Format, Source, Sources, ago, short_id, table};

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
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
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

/// What `repo add` and `init --repo` declare of a repository besides its URL and name.
#[derive(Debug, Args, Default)]
pub struct RepoOptions {
    /// The branch to follow
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// The directory (or file) of the stack files, from the repository's root [default: the root]
    #[arg(long, default_value = "", hide_default_value = true)]
    pub path: String,
    /// How often to fetch (a webhook makes a push immediate)
    #[arg(long, default_value = "15s", value_parser = positive_duration)]
    pub interval: Duration,
    /// An ssh private key for ssh:// and user@host:path URLs
    #[arg(long, conflicts_with_all = ["token_file", "username", "password_file"])]
    pub ssh_key: Option<PathBuf>,
    /// The ssh key's passphrase, in a file
    #[arg(long, requires = "ssh_key")]
    pub ssh_passphrase_file: Option<PathBuf>,
    /// An access token for https URLs, in a file
    #[arg(long, conflicts_with_all = ["username", "password_file"])]
    pub token_file: Option<PathBuf>,
    /// The user name for https basic authentication (with --password-file)
    #[arg(long, requires = "password_file")]
    pub username: Option<String>,
    /// The password for https basic authentication, in a file
    #[arg(long, requires = "username")]
    pub password_file: Option<PathBuf>,
    /// The secret push webhooks are signed with, in a file
    #[arg(long)]
    pub webhook_secret_file: Option<PathBuf>,
    /// Restore git's spec of a service changed by hand
    #[arg(long)]
    pub self_heal: bool,
    /// `repo rm` removes the repository's stacks too
    #[arg(long)]
    pub prune: bool,
    /// POST each deployment's state changes to this URL (JSON)
    #[arg(long)]
    pub notify: Option<String>,
}

impl RepoOptions {
    /// Whether any option differs from its default (`init` takes them only with `--repo`).
    pub fn given(&self) -> bool {
        self.branch != "main"
            || !self.path.is_empty()
            || self.interval != Duration::from_millis(DEFAULT_INTERVAL_MS)
            || self.ssh_key.is_some()
            || self.ssh_passphrase_file.is_some()
            || self.token_file.is_some()
            || self.username.is_some()
            || self.password_file.is_some()
            || self.webhook_secret_file.is_some()
            || self.self_heal
            || self.prune
            || self.notify.is_some()
    }

    /// The request that declares repository `name` at `url`, with the secrets read from
    /// their files.
    pub fn request(self, name: String, url: String) -> anyhow::Result<AddRepositoryRequest> {
        let read = |flag: &str, path: &Option<PathBuf>| -> anyhow::Result<String> {
            match path {
                Some(path) => read_secret(flag, path),
                None => Ok(String::new()),
            }
        };
        let ssh_private_key = match &self.ssh_key {
            // A key file's content as it is: its last newline belongs to the PEM.
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --ssh-key {}", path.display()))?,
            None => String::new(),
        };
        let credentials = RepositoryCredentials {
            token: read("--token-file", &self.token_file)?,
            username: self.username.unwrap_or_default(),
            password: read("--password-file", &self.password_file)?,
            ssh_private_key,
            ssh_passphrase: read("--ssh-passphrase-file", &self.ssh_passphrase_file)?,
        };
        Ok(AddRepositoryRequest {
            name,
            url,
            branch: self.branch,
            path: self.path,
            interval_ms: self.interval.as_millis() as u64,
            self_heal: self.self_heal,
            prune: self.prune,
            notify: self.notify.unwrap_or_default(),
            credentials: Some(credentials),
            webhook_secret: read("--webhook-secret-file", &self.webhook_secret_file)?,
        })
    }
}

/// A repository's name made of its URL's last part (`https://host/team/app.git` → `app`),
/// for `init --repo` without `--repo-name`; none when nothing of it is usable.
pub fn name_from_url(url: &str) -> Option<String> {
    let url = url.trim().trim_end_matches('/');
    let last = url.rsplit(['/', ':']).next().unwrap_or(url);
    let last = last.strip_suffix(".git").unwrap_or(last);
    let name: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_start_matches(['.', '-', '_']).to_owned();
    (!name.is_empty()).then_some(name)
}

/// A one-line secret from a file, without its trailing newline; an empty file is an error.
fn read_secret(flag: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        bail!("{flag} {} is empty", path.display());
    }
    Ok(secret)
}

/// A duration as Docker writes them, longer than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let parsed: GoDuration = text
        .parse()
        .map_err(|e: swarm_api::units::UnitError| e.to_string())?;
    if parsed.0.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(parsed.0)
}

pub async fn run(host: &Host, command: RepoCommand) -> anyhow::Result<ExitCode> {
    match command {
        RepoCommand::Add(args) => {
            let request = args.options.request(args.name, args.url)?;
            add(host, request).await
        }
        RepoCommand::Ls { quiet, format } => {
            let repositories = list(host).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&repositories)?),
                Format::Table if quiet => {
                    for view in &repositories {
                        println!("{}", view.repository.name);
                    }
                }
                Format::Table => print!("{}", repositories_table(&repositories)),
            }
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

/// Declares a repository and says what happens next.
pub async fn add(host: &Host, request: AddRepositoryRequest) -> anyhow::Result<ExitCode> {
    let name = request.name.clone();
    let mut client = client::connect(host).await?;
    client
        .add_repository(request)
        .await
        .map_err(client::explain)?;
    println!(
        "Repository {name} added: the leader fetches it and deploys its stacks (`swarm repo ls`, `swarm deploy ls --repo {name}`)"
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn list(host: &Host) -> anyhow::Result<Vec<RepositoryView>> {
    let mut client = client::connect(host).await?;
    let json = client
        .list_repositories(ListRepositoriesRequest {})
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a list of repositories")
}

pub async fn inspect(host: &Host, name: &str) -> anyhow::Result<RepositoryView> {
    let mut client = client::connect(host).await?;
    let json = client
        .inspect_repository(InspectRepositoryRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a repository")
}

/// Where each git-managed service comes from, for `service ls`.
pub async fn sources(host: &Host) -> anyhow::Result<Sources> {
    Ok(sources_of(&list(host).await?))
}

fn sources_of(repositories: &[RepositoryView]) -> Sources {
    repositories
        .iter()
        .flat_map(|view| {
            view.services.iter().map(|(service, commit)| {
                let source = Source {
                    repository: view.repository.name.clone(),
                    commit: commit.clone(),
                    drifted: view.status.drift.contains_key(service),
                };
                (service.clone(), source)
            })
        })
        .collect()
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn commit_cell(commit: Option<&String>) -> String {
    commit.map_or_else(|| "-".to_owned(), |c| short_id(c).to_owned())
}

fn repositories_table(repositories: &[RepositoryView]) -> String {
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
    table(
        [
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
        &rows,
    )
}

/// `text`'s first line, cut to `max` characters.
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= max {
        line.to_owned()
    } else {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
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
        let table = deployments_table(&view.deployments, now);
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

/// The Deployments as `deploy ls` prints them.
pub fn deployments_table(deployments: &[DeploymentSummary], now: u64) -> String {
    let rows: Vec<[String; 8]> = deployments
        .iter()
        .map(|d| {
            [
                d.id.clone(),
                d.repository.clone(),
                short_id(&d.commit.id).to_owned(),
                d.commit.author_name.clone(),
                one_line(&d.commit.summary, 40),
                d.trigger.as_str().to_owned(),
                d.outcome.as_str().to_owned(),
                format!("{} ago", ago(now.saturating_sub(d.created_at))),
            ]
        })
        .collect();
    table(
        [
            "ID", "REPO", "COMMIT", "AUTHOR", "MESSAGE", "TRIGGER", "OUTCOME", "AGE",
        ],
        &rows,
    )
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
        let table = repositories_table(&[view()]);
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

    #[test]
    fn secret_files_lose_their_newline_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "tok-123\n").unwrap();
        assert_eq!(read_secret("--token-file", &token).unwrap(), "tok-123");
        let missing = dir.path().join("nope");
        let error = format!("{:#}", read_secret("--token-file", &missing).unwrap_err());
        assert!(
            error.starts_with(&format!("cannot read --token-file {}", missing.display())),
            "{error}"
        );
        std::fs::write(&token, "\n").unwrap();
        assert!(
            read_secret("--token-file", &token)
                .unwrap_err()
                .to_string()
                .ends_with("is empty")
        );
    }

    #[test]
    fn names_come_from_the_urls_last_part() {
        assert_eq!(
            name_from_url("https://git.example.com/team/app.git").as_deref(),
            Some("app")
        );
        assert_eq!(
            name_from_url("git@github.com:team/web-site.git").as_deref(),
            Some("web-site")
        );
        assert_eq!(name_from_url("/srv/git/ops/").as_deref(), Some("ops"));
        assert_eq!(
            name_from_url("file:///srv/my repo").as_deref(),
            Some("my-repo")
        );
        assert_eq!(name_from_url("/"), None);
    }

    #[test]
    fn services_show_their_repository_commit_and_drift() {
        let mut other = view();
        other.repository.name = "ops".into();
        other.status.drift.clear();
        other.services = [("ops_dns".to_owned(), "99aa".to_owned())].into();
        let sources = sources_of(&[view(), other]);
        assert_eq!(
            sources["web_site"],
            Source {
                repository: "app".into(),
                commit: "1a2b3c4d5e6f7a8b9c0d".into(),
                drifted: true
            }
        );
        assert!(!sources["ops_dns"].drifted);
        assert_eq!(sources.len(), 2);
    }

    #[test]
    fn long_messages_are_cut_to_one_line() {
        assert_eq!(one_line("fix\n\nbody", 10), "fix");
        assert_eq!(one_line("abcdefghijkl", 5), "abcd…");
    }
}
