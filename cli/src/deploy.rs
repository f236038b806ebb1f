//! `swarm deploy ls|show|rollback`: the Deployments the leader recorded, one per commit it
//! processed, and how to roll one back (a `git revert`, which the watcher applies like any
//! commit).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use swarm_api::gitops::{Commit, DeploymentOutcome};
use swarm_api::grpc::control::{ListDeploymentsRequest, ShowDeploymentRequest};
use swarm_api::plan::Op;
use swarm_controller::gitops::{
    Answer, Credentials, Refusal, answer, normalise_url, offers_secret, redact_url,
};
use swarm_controller::plan::render;
use swarm_node::repos::{DeploymentDetail, DeploymentSummary, ServiceConvergence};
use time::OffsetDateTime;

use crate::client::{self, Host};
use crate::gitops::{CredentialFlags, deployments_table, now_ms};
use crate::output::{Format, ListFormat, ago, print_listing, short_id, table};

#[derive(Debug, Subcommand)]
pub enum DeployCommand {
    /// List the Deployments, newest first
    #[command(alias = "list")]
    Ls {
        /// Only this repository's
        #[arg(long)]
        repo: Option<String>,
        /// Only the IDs
        #[arg(long, short)]
        quiet: bool,
        /// table, json, or a template: `{{.Name}}`, `table {{.ID}}\t{{.Name}}`
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show a Deployment: its commit, outcome, plan and how its services converge
    Show {
        /// A Deployment's ID, or 4 or more hex digits of its commit
        deployment: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Roll a Deployment back by reverting its commit in git: prints the commands, or with
    /// --push makes the revert in the clone this runs in and pushes it
    Rollback(Box<RollbackArgs>),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// A Deployment's ID or commit [default: the repository's last applied Deployment]
    deployment: Option<String>,
    /// The repository whose last applied Deployment to roll back (needed when there are
    /// several)
    #[arg(long)]
    repo: Option<String>,
    /// Make the revert commit on the current branch of the clone this runs in, and push it
    #[arg(long)]
    push: bool,
    /// The clone's remote to push to (with --push)
    #[arg(long, default_value = "origin", requires = "push")]
    remote: String,
    #[command(flatten, next_help_heading = "With --push")]
    credentials: CredentialFlags,
}

pub async fn run(host: &Host, command: DeployCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeployCommand::Ls {
            repo,
            quiet,
            format,
        } => {
            let deployments = list(host, repo.unwrap_or_default()).await?;
            print_listing(
                &deployments,
                &format,
                quiet,
                |d| d.id.as_str(),
                |d| deployments_table(d, now_ms()),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Show { deployment, format } => {
            let detail = show(host, &deployment).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
                Format::Table => print!("{}", describe(&detail, now_ms())),
            }
            Ok(ExitCode::SUCCESS)
        }
        DeployCommand::Rollback(args) => rollback(host, *args).await,
    }
}

async fn list(host: &Host, repository: String) -> anyhow::Result<Vec<DeploymentSummary>> {
    let mut client = client::connect(host).await?;
    let json = client
        .list_deployments(ListDeploymentsRequest { repository })
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a list of deployments")
}

async fn show(host: &Host, reference: &str) -> anyhow::Result<DeploymentDetail> {
    let mut client = client::connect(host).await?;
    let json = client
        .show_deployment(ShowDeploymentRequest {
            deployment: reference.to_owned(),
        })
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a deployment")
}

/// A commit's time (seconds since the epoch) in UTC.
fn date(seconds: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => seconds.to_string(),
    }
}

/// The outcome with what it says beyond its name, one line per finding.
fn outcome_lines(outcome: &DeploymentOutcome) -> String {
    match outcome {
        DeploymentOutcome::Failed { reason } | DeploymentOutcome::Refused { reason } => {
            format!("{}: {reason}\n", outcome.as_str())
        }
        DeploymentOutcome::Invalid { findings } => {
            let mut text = format!("{} ({} finding(s)):\n", outcome.as_str(), findings.len());
            for finding in findings {
                text.push_str(&format!("  {finding}\n"));
            }
            text
        }
        other => format!("{}\n", other.as_str()),
    }
}

/// Where one service of the plan stands now.
fn convergence_row(service: &ServiceConvergence) -> [String; 5] {
    let update = match (&service.update, service.exists) {
        (_, false) if service.op == Op::Remove => "removed".to_owned(),
        (_, false) => "gone".to_owned(),
        (Some(update), true) => {
            let state = serde_json::to_value(update.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            if update.message.is_empty() {
                state
            } else {
                format!("{state}: {}", update.message)
            }
        }
        (None, true) => "-".to_owned(),
    };
    [
        service.name.clone(),
        service.op.as_str().to_owned(),
        if service.exists {
            format!("{}/{}", service.running, service.desired)
        } else {
            "-".to_owned()
        },
        service
            .commit
            .as_deref()
            .map_or_else(|| "-".to_owned(), |c| short_id(c).to_owned()),
        update,
    ]
}

/// `deploy show` for people.
fn describe(detail: &DeploymentDetail, now: u64) -> String {
    let deployment = &detail.deployment;
    let commit = &deployment.commit;
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<12}{value}\n"));
    line("Deployment:", deployment.id.clone());
    line("Repository:", deployment.repository.clone());
    line("Commit:", commit.id.clone());
    line(
        "Author:",
        format!("{} <{}>", commit.author_name, commit.author_email),
    );
    line("Date:", date(commit.time));
    line("Message:", commit.summary.clone());
    line("Trigger:", deployment.trigger.as_str().to_owned());
    line(
        "Recorded:",
        format!(
            "{} ago (outcome {} ago)",
            ago(now.saturating_sub(deployment.created_at)),
            ago(now.saturating_sub(deployment.updated_at))
        ),
    );
    line(
        "Outcome:",
        outcome_lines(&deployment.outcome).trim_end().to_owned(),
    );
    out.push('\n');
    if deployment.plan.actions.is_empty() {
        out.push_str("Plan: no changes\n");
    } else {
        out.push_str("Plan:\n");
        out.push_str(&render::text(&deployment.plan, false));
    }
    if !detail.services.is_empty() {
        out.push_str("\nServices:\n");
        let rows: Vec<[String; 5]> = detail.services.iter().map(convergence_row).collect();
        out.push_str(&table(
            ["NAME", "ACTION", "TASKS", "COMMIT", "UPDATE"],
            &rows,
        ));
    }
    out
}

async fn rollback(host: &Host, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let reference = match args.deployment {
        Some(reference) => reference,
        None => last_applied(host, args.repo).await?,
    };
    if !args.push && args.credentials.given() {
        bail!("credentials are for pushing the revert: add --push");
    }
    let detail = show(host, &reference).await?;
    if !args.push {
        print!("{}", revert_instructions(&detail));
        return Ok(ExitCode::SUCCESS);
    }
    let repository = crate::gitops::inspect(host, &detail.deployment.repository).await?;
    let credentials = args.credentials.for_git()?;
    let target = Target {
        url: &repository.repository.url,
        branch: &repository.repository.branch,
        remote: &args.remote,
    };
    let deployment = &detail.deployment;
    let revert = revert_and_push(
        &std::env::current_dir()?,
        &deployment.commit,
        &target,
        &credentials,
    )?;
    println!(
        "Pushed {} (Revert {:?}) to {} {}: the leader applies it at its next fetch (`swarm repo sync {}` for now)",
        short_id(&revert),
        deployment.commit.summary,
        args.remote,
        target.branch,
        deployment.repository
    );
    Ok(ExitCode::SUCCESS)
}

/// Where a revert goes: the repository's URL (the clone's remote must be it) and branch.
struct Target<'a> {
    url: &'a str,
    branch: &'a str,
    remote: &'a str,
}

/// Makes the revert of `commit` on the current branch of the clone `cwd` is in (which must
/// be `target`'s branch, clean, with `commit` in its history) and pushes the branch to
/// `target`'s remote. Returns the revert commit's id.
fn revert_and_push(
    cwd: &std::path::Path,
    commit: &Commit,
    target: &Target<'_>,
    credentials: &Credentials,
) -> anyhow::Result<String> {
    let repo = git2::Repository::discover(cwd).with_context(|| {
        format!(
            "{} is not in a git clone: run `deploy rollback --push` from a clone of {}",
            cwd.display(),
            redact_url(target.url)
        )
    })?;
    let mut remote = repo
        .find_remote(target.remote)
        .with_context(|| format!("this clone has no remote {:?} (--remote)", target.remote))?;
    let remote_url = remote.url().unwrap_or_default().to_owned();
    if normalise_url(&remote_url) != normalise_url(target.url) {
        bail!(
            "remote {} of this clone is {}, not the repository's URL {}: run from a clone of it, or name its remote with --remote",
            target.remote,
            redact_url(&remote_url),
            redact_url(target.url)
        );
    }
    let head = repo
        .head()
        .context("this clone has no commit checked out")?;
    let branch = head.shorthand().unwrap_or_default().to_owned();
    if !head.is_branch() || branch != target.branch {
        bail!(
            "this clone is not on branch {} (the repository's): `git checkout {}` first",
            target.branch,
            target.branch
        );
    }
    let mut status = git2::StatusOptions::new();
    status.include_untracked(false);
    if !repo.statuses(Some(&mut status))?.is_empty() {
        bail!("the clone has uncommitted changes: commit or stash them first");
    }
    let head_commit = head.peel_to_commit()?;
    let reverted = git2::Oid::from_str(&commit.id)
        .and_then(|oid| repo.find_commit(oid))
        .with_context(|| {
            format!(
                "commit {} is not in this clone: `git pull` first",
                short_id(&commit.id)
            )
        })?;
    let on_branch = reverted.id() == head_commit.id()
        || repo.graph_descendant_of(head_commit.id(), reverted.id())?;
    if !on_branch {
        bail!(
            "commit {} is not on branch {}: `git pull` first",
            short_id(&commit.id),
            target.branch
        );
    }
    // A merge is reverted against its first parent, the branch it was merged into.
    let mainline = if reverted.parent_count() > 1 { 1 } else { 0 };
    let mut index = repo.revert_commit(&reverted, &head_commit, mainline, None)?;
    if index.has_conflicts() {
        bail!(
            "reverting {} conflicts with later commits: revert it by hand (`git revert {}`)",
            short_id(&commit.id),
            commit.id
        );
    }
    let tree = repo.find_tree(index.write_tree_to(&repo)?)?;
    let signature = repo
        .signature()
        .context("git needs your name and email for the commit: `git config user.name …` and `git config user.email …`")?;
    let message = format!(
        "Revert \"{}\"\n\nThis reverts commit {}.\n",
        commit.summary, commit.id
    );
    let revert = repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        &message,
        &tree,
        &[&head_commit],
    )?;
    // The tree was clean: the work tree follows the new commit.
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))?;
    push(&mut remote, &branch, credentials).with_context(|| {
        format!(
            "the revert commit {} is made on {branch}, but pushing it failed: push it with `git push {} {branch}`",
            short_id(&revert.to_string()),
            target.remote
        )
    })?;
    Ok(revert.to_string())
}

/// Pushes `branch` to `remote`, answering its requests for credentials once.
fn push(
    remote: &mut git2::Remote<'_>,
    branch: &str,
    credentials: &Credentials,
) -> anyhow::Result<()> {
    let offered = std::cell::Cell::new(false);
    let rejected: std::cell::RefCell<Option<String>> = Default::default();
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(|_url, username, allowed| {
        let answer = answer(credentials, username, allowed, offered.get());
        offered.set(offered.get() || offers_secret(&answer));
        match answer {
            Answer::UserPass { username, password } => {
                git2::Cred::userpass_plaintext(username, password)
            }
            Answer::SshKey {
                username,
                key,
                passphrase,
            } => git2::Cred::ssh_key(username, None, key, passphrase),
            Answer::Username(username) => git2::Cred::username(username),
            Answer::Refuse(Refusal::Rejected) => Err(git2::Error::from_str(
                "the remote refused the credentials (--token-file, --username/--password-file, --ssh-key)",
            )),
            Answer::Refuse(Refusal::Unsuitable { wanted, have }) => Err(git2::Error::from_str(
                &format!("the remote wants {wanted}, and the flags give {have}"),
            )),
        }
    });
    callbacks.push_update_reference(|reference, status| {
        if let Some(status) = status {
            *rejected.borrow_mut() = Some(format!("{reference}: {status}"));
        }
        Ok(())
    });
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks);
    remote.push(
        &[format!("refs/heads/{branch}:refs/heads/{branch}")],
        Some(&mut options),
    )?;
    if let Some(rejection) = rejected.take() {
        bail!("the remote refused {rejection}");
    }
    Ok(())
}

/// The id of the last Deployment that applied a plan in `repository` (the only repository
/// if none is named).
async fn last_applied(host: &Host, repository: Option<String>) -> anyhow::Result<String> {
    let name = match repository {
        Some(name) => name,
        None => {
            let repositories = crate::gitops::list(host).await?;
            match repositories.as_slice() {
                [one] => one.repository.name.clone(),
                [] => bail!("no repository: `swarm repo add` declares one"),
                _ => bail!(
                    "there are {} repositories: name one with --repo, or give a deployment",
                    repositories.len()
                ),
            }
        }
    };
    let deployments = list(host, name.clone()).await?;
    deployments
        .iter()
        .find(|d| {
            d.changes > 0
                && matches!(
                    d.outcome,
                    DeploymentOutcome::Applied
                        | DeploymentOutcome::Converged
                        | DeploymentOutcome::Failed { .. }
                )
        })
        .map(|d| d.id.clone())
        .with_context(|| format!("repository {name} has no deployment that changed the cluster"))
}

/// What `deploy rollback` prints: the revert to push, and what it undoes.
fn revert_instructions(detail: &DeploymentDetail) -> String {
    let deployment = &detail.deployment;
    let commit = &deployment.commit;
    let mut out = format!(
        "Deployment {} applied commit {} ({:?} by {}), outcome {}.\n\n",
        deployment.id,
        short_id(&commit.id),
        commit.summary,
        commit.author_name,
        deployment.outcome.as_str()
    );
    out.push_str(
        "Roll it back in git: revert the commit on the repository's branch and push; the\nleader applies the revert like any commit (nothing fights it).\n\n",
    );
    out.push_str(&format!(
        "    git revert --no-edit {}\n    git push\n\n",
        commit.id
    ));
    if deployment.plan.actions.is_empty() {
        out.push_str(
            "Its plan changed nothing in the cluster: the revert changes nothing either.\n",
        );
    } else {
        out.push_str(&format!(
            "Its plan, which the revert undoes ({}):\n",
            render::summary(&deployment.plan)
        ));
        for action in &deployment.plan.actions {
            out.push_str(&format!(
                "  {} {} {}\n",
                action.op.as_str(),
                action.kind.as_str(),
                action.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{Commit, Deployment, Trigger};
    use swarm_api::plan::{Action, Kind, PLAN_FORMAT, Plan};
    use swarm_api::rollout::{UpdateState, UpdateStatus};

    use super::*;

    fn detail(outcome: DeploymentOutcome) -> DeploymentDetail {
        DeploymentDetail {
            deployment: Deployment {
                id: "app-42".into(),
                repository: "app".into(),
                commit: Commit {
                    id: "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b".into(),
                    author_name: "Ada".into(),
                    author_email: "ada@example.com".into(),
                    summary: "scale the site".into(),
                    time: 1_764_928_800,
                },
                trigger: Trigger::Webhook,
                created_at: 1_000,
                updated_at: 4_000,
                plan: Plan {
                    format: PLAN_FORMAT,
                    basis: Default::default(),
                    actions: vec![Action {
                        op: Op::Remove,
                        kind: Kind::Service,
                        name: "web_old".into(),
                        origin: Default::default(),
                        changes: Vec::new(),
                        spec: None,
                    }],
                },
                outcome,
            },
            services: vec![
                ServiceConvergence {
                    name: "web_site".into(),
                    op: Op::Scale,
                    exists: true,
                    update: Some(UpdateStatus {
                        state: UpdateState::Completed,
                        started_at: 1_000,
                        completed_at: Some(3_000),
                        message: String::new(),
                    }),
                    running: 3,
                    desired: 3,
                    commit: Some("1a2b3c4d5e6f7a8b".into()),
                },
                ServiceConvergence {
                    name: "web_old".into(),
                    op: Op::Remove,
                    exists: false,
                    update: None,
                    running: 0,
                    desired: 0,
                    commit: None,
                },
            ],
        }
    }

    #[test]
    fn show_gives_the_commit_outcome_plan_and_convergence() {
        let text = describe(
            &detail(DeploymentOutcome::Failed {
                reason: "service web_site: update paused".into(),
            }),
            5_000,
        );
        assert!(
            text.contains("Author:     Ada <ada@example.com>\n"),
            "{text}"
        );
        assert!(
            text.contains("Date:       2025-12-05 10:00:00 UTC\n"),
            "{text}"
        );
        assert!(text.contains("Trigger:    webhook\n"), "{text}");
        assert!(
            text.contains("Outcome:    failed: service web_site: update paused\n"),
            "{text}"
        );
        assert!(
            text.contains("Plan:\n") && text.contains("- remove service web_old"),
            "{text}"
        );
        let rows: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| *l != "Services:")
            .skip(2)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["web_site", "scale", "3/3", "1a2b3c4d5e6f", "completed"],
                vec!["web_old", "remove", "-", "-", "removed"],
            ]
        );
    }

    #[test]
    fn invalid_outcomes_list_their_findings() {
        let text = outcome_lines(&DeploymentOutcome::Invalid {
            findings: vec!["stacks/web.yaml:3:5: error: unknown key".into()],
        });
        assert_eq!(
            text,
            "invalid (1 finding(s)):\n  stacks/web.yaml:3:5: error: unknown key\n"
        );
    }

    #[test]
    fn a_rollback_is_a_revert_of_the_deployments_commit() {
        let text = revert_instructions(&detail(DeploymentOutcome::Converged));
        assert!(
            text.contains("    git revert --no-edit 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "Its plan, which the revert undoes (1 to remove):\n  remove service web_old\n"
            ),
            "{text}"
        );
    }

    /// A work tree on branch `main` with `stacks/web.yaml` at 2 replicas then 5 (the
    /// commit a Deployment applied), pushed to a bare remote. Returns the temp dir, the
    /// work tree, the remote's URL and the second commit.
    fn clones() -> (tempfile::TempDir, std::path::PathBuf, String, Commit) {
        let dir = tempfile::tempdir().unwrap();
        let remote = dir.path().join("remote.git");
        git2::Repository::init_bare(&remote).unwrap();
        let url = format!("file://{}", remote.display());
        let work = dir.path().join("work");
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head("main");
        let repo = git2::Repository::init_opts(&work, &options).unwrap();
        let mut config = repo.config().unwrap();
        config.set_str("user.name", "Ada").unwrap();
        config.set_str("user.email", "ada@example.com").unwrap();
        repo.remote("origin", &url).unwrap();
        std::fs::create_dir(work.join("stacks")).unwrap();
        let commit = |replicas: u32, message: &str| {
            std::fs::write(
                work.join("stacks/web.yaml"),
                format!("services:\n  site:\n    image: busybox\n    deploy:\n      replicas: {replicas}\n"),
            )
            .unwrap();
            let mut index = repo.index().unwrap();
            index
                .add_path(std::path::Path::new("stacks/web.yaml"))
                .unwrap();
            index.write().unwrap();
            let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
            let signature = repo.signature().unwrap();
            let parents: Vec<git2::Commit<'_>> = repo
                .head()
                .ok()
                .map(|h| h.peel_to_commit().unwrap())
                .into_iter()
                .collect();
            let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
            repo.commit(
                Some("HEAD"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
        };
        commit(2, "two sites");
        let scaled = commit(5, "scale the site");
        repo.find_remote("origin")
            .unwrap()
            .push(&["refs/heads/main:refs/heads/main"], None)
            .unwrap();
        let commit = Commit {
            id: scaled.to_string(),
            author_name: "Ada".into(),
            author_email: "ada@example.com".into(),
            summary: "scale the site".into(),
            time: 0,
        };
        (dir, work, url, commit)
    }

    #[test]
    fn a_pushed_rollback_is_a_revert_commit_on_the_branch() {
        let (dir, work, url, commit) = clones();
        let target = Target {
            url: &url,
            branch: "main",
            remote: "origin",
        };
        let revert = revert_and_push(
            &work.join("stacks"),
            &commit,
            &target,
            &Credentials::Anonymous,
        )
        .unwrap();
        let remote = git2::Repository::open_bare(dir.path().join("remote.git")).unwrap();
        let head = remote
            .find_reference("refs/heads/main")
            .unwrap()
            .peel_to_commit()
            .unwrap();
        assert_eq!(head.id().to_string(), revert);
        assert_eq!(
            head.message().unwrap(),
            format!(
                "Revert \"scale the site\"\n\nThis reverts commit {}.\n",
                commit.id
            )
        );
        // The revert's tree is the one before the reverted commit.
        let reverted = remote
            .find_commit(git2::Oid::from_str(&commit.id).unwrap())
            .unwrap();
        assert_eq!(head.tree_id(), reverted.parent(0).unwrap().tree_id());
        let file = std::fs::read_to_string(work.join("stacks/web.yaml")).unwrap();
        assert!(file.contains("replicas: 2"), "{file}");
    }

    #[test]
    fn a_rollback_is_not_pushed_from_the_wrong_clone_or_a_dirty_one() {
        let (_dir, work, url, commit) = clones();
        let elsewhere = Target {
            url: "https://git.example.com/other.git",
            branch: "main",
            remote: "origin",
        };
        let error = revert_and_push(&work, &commit, &elsewhere, &Credentials::Anonymous)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not the repository's URL https://git.example.com/other.git"),
            "{error}"
        );
        let other_branch = Target {
            url: &url,
            branch: "prod",
            remote: "origin",
        };
        let error = revert_and_push(&work, &commit, &other_branch, &Credentials::Anonymous)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not on branch prod"), "{error}");
        std::fs::write(work.join("stacks/web.yaml"), "changed\n").unwrap();
        let target = Target {
            url: &url,
            branch: "main",
            remote: "origin",
        };
        let error = revert_and_push(&work, &commit, &target, &Credentials::Anonymous)
            .unwrap_err()
            .to_string();
        assert!(error.contains("uncommitted changes"), "{error}");
    }
}
