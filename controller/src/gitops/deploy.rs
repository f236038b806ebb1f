//! What the leader's watcher does with one commit, as a pure function: the stack files at
//! the commit (loaded through the repository's [`LoadCache`]) planned against the objects of
//! the stacks the repository owns, as the Deployment to propose in one `Deploy` command.
//! The same planning, for the applied commit against the cluster as it is now, tells which
//! services drifted from git and the plan that heals them.
//!
//! Only objects of stacks the repository owns are planned against: objects of a stack
//! deployed by hand or owned by another repository are never in the plan (a commit that
//! declares such a stack is refused by the store, which records it so).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use swarm_api::gitops::{Commit, Deployment, DeploymentOutcome, Repository, Trigger};
use swarm_api::plan::{FieldChange, Kind, Op, PLAN_FORMAT, Plan};
use swarm_api::state::{ClusterState, Object, Origin};
use swarm_api::store::Command;
use swarm_api::units::Millis;

use super::cache::{CachedRevision, LoadCache};
use super::revision::{GitError, Repo};
use crate::deploy::{Current, DeployError, Outcome, Verdict, plan_paths};
use crate::stack::Severity;

#[derive(Debug, thiserror::Error)]
pub enum DeployDecisionError {
    #[error(transparent)]
    Git(#[from] GitError),
    /// Reading the commit's files failed (not a missing file: that is a finding).
    #[error("repository {repository}: reading commit {commit}: {source}")]
    Read {
        repository: String,
        commit: String,
        source: Box<DeployError>,
    },
}

/// One commit planned: the Deployment to record (its id is given by the store) and what the
/// `Deploy` command carries with it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub deployment: Deployment,
    /// The stacks the commit's files declare (empty unless its files are valid).
    pub stacks: BTreeSet<String>,
    /// The version of the state the plan was made against.
    pub expected_version: u64,
    /// The contents of the configs and secrets the plan creates or changes.
    pub file_contents: swarm_api::files::FileContents,
}

impl Decision {
    pub fn command(self) -> Command {
        Command::Deploy {
            expected_version: self.expected_version,
            deployment: Box::new(self.deployment),
            stacks: self.stacks,
            file_contents: self.file_contents,
        }
    }

    /// The same Deployment refused with `reason` and nothing to apply: what the watcher
    /// records when the store's checks refused the plan, so the commit is not tried again.
    pub fn refused(mut self, reason: String) -> Decision {
        self.deployment.plan.actions.clear();
        self.deployment.outcome = DeploymentOutcome::Refused { reason };
        self.file_contents.clear();
        self
    }

    /// The services whose spec in the cluster differs from this commit's, each with the
    /// fields that differ (`before`: git, `after`: the cluster); a service missing on one
    /// side differs as a whole (path `""`). Meaningful for a planned commit only.
    pub fn drift(&self) -> BTreeMap<String, Vec<FieldChange>> {
        let whole = |git: bool| {
            let present = Some(serde_json::Value::String("present".to_owned()));
            vec![FieldChange {
                path: String::new(),
                before: if git { present.clone() } else { None },
                after: if git { None } else { present },
            }]
        };
        self.deployment
            .plan
            .actions
            .iter()
            .filter(|action| action.kind == Kind::Service)
            .map(|action| {
                let changes = match action.op {
                    Op::Create => whole(true),
                    Op::Remove => whole(false),
                    Op::Update | Op::Scale => action
                        .changes
                        .iter()
                        .map(|change| FieldChange {
                            path: change.path.clone(),
                            before: change.after.clone(),
                            after: change.before.clone(),
                        })
                        .collect(),
                };
                (action.name.clone(), changes)
            })
            .collect()
    }
}

/// What is known of the repository and the cluster when a commit is planned.
pub struct Target<'a> {
    pub repository: &'a Repository,
    /// The stacks the repository owns (`RepositoryStatus::stacks`).
    pub owned: &'a BTreeSet<String>,
    /// The cluster's objects now.
    pub state: &'a ClusterState,
}

/// Plans commit `commit` of the mirror `repo` for `target`, as a Deployment made by
/// `trigger` at `now`: applied (or a no-op) with its plan, or invalid with its findings
/// (`file:line:column: error: …`) and nothing to apply.
pub fn decide(
    repo: &Repo,
    commit: &str,
    target: &Target,
    cache: &LoadCache,
    trigger: Trigger,
    now: Millis,
) -> Result<Decision, DeployDecisionError> {
    let repository = target.repository;
    let revision = repo.commit(commit)?;
    let info = revision.info()?;
    let source = CachedRevision {
        revision: &revision,
        cache,
    };
    let path = if repository.path.trim().is_empty() {
        ".".to_owned()
    } else {
        repository.path.clone()
    };
    let current = owned_objects(target.state, target.owned);
    let expected_version = current.version;
    // The leader's own environment is no part of a repository: `${VAR}` resolves from the
    // repository's `.env` files only.
    let outcome = plan_paths(
        &[PathBuf::from(&path)],
        &source,
        Current::State(current),
        &|_| None,
    )
    .map_err(|source| DeployDecisionError::Read {
        repository: repository.name.clone(),
        commit: info.id.clone(),
        source: Box::new(source),
    })?;
    let display = |missing: &PathBuf| {
        format!(
            "{}:{}: error: no such file or directory at this commit (the repository's path is {:?})",
            revision.name(),
            missing.display(),
            repository.path
        )
    };
    let Outcome {
        desired, verdict, ..
    } = outcome;
    let mut file_contents = swarm_api::files::FileContents::new();
    let (plan, stacks, outcome) = match verdict {
        Verdict::Planned(plan) => {
            let stacks = desired.stacks.iter().map(|s| s.name.clone()).collect();
            file_contents = crate::plan::contents(&plan, &desired.stacks);
            let outcome = if plan.actions.is_empty() {
                DeploymentOutcome::NoOp
            } else {
                DeploymentOutcome::Applied
            };
            (plan, stacks, outcome)
        }
        Verdict::Missing(paths) => (
            empty_plan(),
            BTreeSet::new(),
            DeploymentOutcome::Invalid {
                findings: paths.iter().map(display).collect(),
            },
        ),
        Verdict::Invalid(_) => (
            empty_plan(),
            BTreeSet::new(),
            DeploymentOutcome::Invalid {
                findings: desired
                    .files
                    .iter()
                    .flat_map(|file| &file.findings)
                    .filter(|finding| finding.severity == Severity::Error)
                    .map(ToString::to_string)
                    .collect(),
            },
        ),
        Verdict::Conflict(conflict) => (
            empty_plan(),
            BTreeSet::new(),
            DeploymentOutcome::Invalid {
                findings: vec![format!("{}: error: {conflict}", revision.name())],
            },
        ),
    };
    Ok(Decision {
        deployment: Deployment {
            id: String::new(),
            repository: repository.name.clone(),
            commit: Commit {
                id: info.id,
                author_name: info.author_name,
                author_email: info.author_email,
                summary: info.summary,
                time: info.time,
            },
            trigger,
            created_at: now,
            updated_at: now,
            plan,
            outcome,
        },
        stacks,
        expected_version,
        file_contents,
    })
}

fn empty_plan() -> Plan {
    Plan {
        format: PLAN_FORMAT,
        basis: Default::default(),
        actions: Vec::new(),
    }
}

/// The objects of `state` in the stacks `owned`: all a repository's plan may see.
pub fn owned_objects(state: &ClusterState, owned: &BTreeSet<String>) -> ClusterState {
    fn keep<S: Clone>(objects: &[Object<S>], owned: &BTreeSet<String>) -> Vec<Object<S>> {
        let owned_by = |origin: &Origin| {
            origin
                .stack
                .as_deref()
                .is_some_and(|stack| owned.contains(stack))
        };
        objects
            .iter()
            .filter(|object| owned_by(&object.origin))
            .cloned()
            .collect()
    }
    ClusterState {
        format: state.format,
        version: state.version,
        services: keep(&state.services, owned),
        networks: keep(&state.networks, owned),
        configs: keep(&state.configs, owned),
        secrets: keep(&state.secrets, owned),
    }
}

#[cfg(test)]
#[path = "deploy_tests.rs"]
mod tests;
