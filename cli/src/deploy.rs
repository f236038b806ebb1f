//! `swarm deploy ls|show|rollback`: the Deployments the leader recorded, one per commit it
//! processed, and how to roll one back (a `git revert`, which the watcher applies like any
//! commit).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use swarm_api::gitops::DeploymentOutcome;
use swarm_api::grpc::control::{ListDeploymentsRequest, ShowDeploymentRequest};
use swarm_api::plan::Op;
use swarm_controller::plan::render;
use swarm_node::repos::{DeploymentDetail, DeploymentSummary, ServiceConvergence};
use time::OffsetDateTime;

use crate::client::{self, Host};
use crate::output::{Format, ago, short_id, table};
use crate::repo::{deployments_table, now_ms};

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
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show a Deployment: its commit, outcome, plan and how its services converge
    Show {
        /// A Deployment's ID, or 4 or more hex digits of its commit
        deployment: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Roll a Deployment back by reverting its commit in git: prints the commands
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// A Deployment's ID or commit [default: the repository's last applied Deployment]
    deployment: Option<String>,
    /// The repository whose last applied Deployment to roll back (needed when there are
    /// several)
    #[arg(long)]
    repo: Option<String>,
}

pub async fn run(host: &Host, command: DeployCommand) -> anyhow::Result<ExitCode> {
    match command {
        DeployCommand::Ls {
            repo,
            quiet,
            format,
        } => {
            let deployments = list(host, repo.unwrap_or_default()).await?;
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&deployments)?),
                Format::Table if quiet => {
                    for deployment in &deployments {
                        println!("{}", deployment.id);
                    }
                }
                Format::Table => print!("{}", deployments_table(&deployments, now_ms())),
            }
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
        DeployCommand::Rollback(args) => rollback(host, args).await,
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

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Create => "create",
        Op::Update => "update",
        Op::Scale => "scale",
        Op::Remove => "remove",
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
        op_name(service.op).to_owned(),
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
        out.push_str(&format!("Plan: {}\n", render::summary(&deployment.plan)));
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
    let detail = show(host, &reference).await?;
    print!("{}", revert_instructions(&detail));
    Ok(ExitCode::SUCCESS)
}

/// The id of the last Deployment that applied a plan in `repository` (the only repository
/// if none is named).
async fn last_applied(host: &Host, repository: Option<String>) -> anyhow::Result<String> {
    let name = match repository {
        Some(name) => name,
        None => {
            let repositories = crate::repo::list(host).await?;
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
            "The revert undoes its plan ({}):\n",
            render::summary(&deployment.plan)
        ));
        for action in &deployment.plan.actions {
            out.push_str(&format!(
                "  {} {} {}\n",
                op_name(action.op),
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
        assert!(text.contains("Plan: 1 to remove\n"), "{text}");
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
            text.contains("The revert undoes its plan (1 to remove):\n  remove service web_old\n"),
            "{text}"
        );
    }
}
