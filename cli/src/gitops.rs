//! What the GitOps commands share (`repo`, `deploy`, `init --repo`, `service ls`): the
//! repository flags and the files they name, the calls that declare and read repositories,
//! and how repositories' services and Deployments are shown.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use swarm_api::gitops::DEFAULT_INTERVAL_MS;
use swarm_api::grpc::control::{
    AddRepositoryRequest, InspectRepositoryRequest, ListRepositoriesRequest, RepositoryCredentials,
};
use swarm_api::units::GoDuration;
use swarm_node::repos::{DeploymentSummary, RepositoryView};

use crate::client::{self, Host};
use crate::output::{Rows, Source, Sources, ago, short_id};

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
    #[command(flatten)]
    pub credentials: CredentialFlags,
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
            || self.credentials.given()
            || self.webhook_secret_file.is_some()
            || self.self_heal
            || self.prune
            || self.notify.is_some()
    }

    /// The request that declares repository `name` at `url`, with the secrets read from
    /// their files.
    pub fn request(self, name: String, url: String) -> anyhow::Result<AddRepositoryRequest> {
        let credentials = self.credentials.read()?;
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
            webhook_secret: read_optional("--webhook-secret-file", &self.webhook_secret_file)?,
        })
    }
}

/// How to authenticate to a git remote: `repo add` (for the leader's fetches) and `deploy
/// rollback --push`.
#[derive(Debug, Args, Default)]
pub struct CredentialFlags {
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
}

impl CredentialFlags {
    pub fn given(&self) -> bool {
        self.ssh_key.is_some()
            || self.ssh_passphrase_file.is_some()
            || self.token_file.is_some()
            || self.username.is_some()
            || self.password_file.is_some()
    }

    /// The credentials as `AddRepository` carries them, read from their files.
    fn read(&self) -> anyhow::Result<RepositoryCredentials> {
        let ssh_private_key = match &self.ssh_key {
            // A key file's content as it is: its last newline belongs to the PEM.
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --ssh-key {}", path.display()))?,
            None => String::new(),
        };
        Ok(RepositoryCredentials {
            token: read_optional("--token-file", &self.token_file)?,
            username: self.username.clone().unwrap_or_default(),
            password: read_optional("--password-file", &self.password_file)?,
            ssh_private_key,
            ssh_passphrase: read_optional("--ssh-passphrase-file", &self.ssh_passphrase_file)?,
        })
    }

    /// The credentials for a fetch or push from here (the key stays in its file).
    pub fn for_git(&self) -> anyhow::Result<swarm_controller::gitops::Credentials> {
        use swarm_controller::gitops::Credentials;
        let secrets = self.read()?;
        Ok(if let Some(key) = &self.ssh_key {
            Credentials::SshKey {
                key: key.clone(),
                passphrase: Some(secrets.ssh_passphrase).filter(|p| !p.is_empty()),
            }
        } else if !secrets.token.is_empty() {
            Credentials::Token(secrets.token)
        } else if !secrets.username.is_empty() {
            Credentials::Basic {
                username: secrets.username,
                password: secrets.password,
            }
        } else {
            Credentials::Anonymous
        })
    }
}

fn read_optional(flag: &str, path: &Option<PathBuf>) -> anyhow::Result<String> {
    match path {
        Some(path) => read_secret(flag, path),
        None => Ok(String::new()),
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
pub fn read_secret(flag: &str, path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {flag} {}", path.display()))?;
    let secret = text.trim_end_matches(['\n', '\r']).to_owned();
    if secret.is_empty() {
        bail!("{flag} {} is empty", path.display());
    }
    Ok(secret)
}

/// A duration as Docker writes them, longer than zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    let parsed: GoDuration = text
        .parse()
        .map_err(|e: swarm_api::units::UnitError| e.to_string())?;
    if parsed.0.is_zero() {
        return Err("must be longer than zero".to_owned());
    }
    Ok(parsed.0)
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

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// The Deployments as `deploy ls` prints them.
pub fn deployments_table(deployments: &[DeploymentSummary], now: u64) -> Rows<8> {
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
    Rows {
        header: [
            "ID", "REPO", "COMMIT", "AUTHOR", "MESSAGE", "TRIGGER", "OUTCOME", "AGE",
        ],
        rows,
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{Repository, RepositoryStatus};
    use swarm_node::repos::RepositoryState;

    use super::*;

    fn view(name: &str, services: &[(&str, &str)], drifted: &[&str]) -> RepositoryView {
        RepositoryView {
            repository: Repository {
                name: name.into(),
                url: format!("/srv/git/{name}"),
                branch: "main".into(),
                path: String::new(),
                interval_ms: 15_000,
                self_heal: false,
                prune: false,
                notify: None,
                created_at: 0,
            },
            credentials: None,
            webhook_secret: false,
            state: RepositoryState::Synced,
            status: RepositoryStatus {
                drift: drifted
                    .iter()
                    .map(|s| (s.to_string(), Vec::new()))
                    .collect(),
                ..RepositoryStatus::default()
            },
            services: services
                .iter()
                .map(|(s, c)| (s.to_string(), c.to_string()))
                .collect(),
            deployments: Vec::new(),
        }
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
        let app = view(
            "app",
            &[("web_site", "1a2b3c4d5e6f7a8b9c0d")],
            &["web_site"],
        );
        let ops = view("ops", &[("ops_dns", "99aa")], &[]);
        let sources = sources_of(&[app, ops]);
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
