//! The store's rules for GitOps: which repository owns which stack, a commit processed once,
//! the Deployment history kept bounded. Deterministic like the rest of `apply`: the time
//! and the commit's metadata come in the command.

use std::collections::BTreeSet;

use swarm_api::gitops::{
    DEPLOYMENT_HISTORY, Deployment, DeploymentOutcome, Repository, RepositoryError,
    RepositoryRecord, RepositorySecrets, RepositoryStatus, Trigger,
};
use swarm_api::plan::{Action, Kind, Op};
use swarm_api::spec::Named;
use swarm_api::state::Object;
use swarm_api::store::{Rejection, StoreData};
use swarm_api::units::Millis;

use super::{Change, Event, event, object_named};

/// The stack of each object an action touches: the stack it is in now (updates, removals)
/// and the one the action puts it in (creations).
fn stacks_touched<'a>(data: &'a StoreData, actions: &'a [Action]) -> BTreeSet<&'a str> {
    fn stack_of<'d, S: Named>(list: &'d [Object<S>], name: &str) -> Option<&'d str> {
        object_named(list, name).and_then(|o| o.origin.stack.as_deref())
    }
    let objects = &data.objects;
    let mut stacks = BTreeSet::new();
    for action in actions {
        stacks.extend(action.origin.stack.as_deref());
        let now = match action.kind {
            Kind::Service => stack_of(&objects.services, &action.name),
            Kind::Network => stack_of(&objects.networks, &action.name),
            Kind::Config => stack_of(&objects.configs, &action.name),
            Kind::Secret => stack_of(&objects.secrets, &action.name),
        };
        stacks.extend(now);
    }
    stacks
}

/// Refuses a plan made outside git (`stack deploy`, `stack rm`, `swarm apply`) that touches
/// a stack a repository owns.
pub(super) fn check_unmanaged(data: &StoreData, actions: &[Action]) -> Result<(), Rejection> {
    let reasons: Vec<String> = stacks_touched(data, actions)
        .into_iter()
        .filter_map(|stack| {
            let owner = data.stack_owner(stack)?;
            Some(format!(
                "stack {stack} is managed by repository {owner}: change it in git (or `swarm apply --force` changes it here, drifted from git until git agrees)"
            ))
        })
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Rejection::Invalid { reasons })
    }
}

/// Forgets the commit of services that are gone or no longer managed by a repository.
pub(super) fn forget_unmanaged_commits(data: &mut StoreData) {
    if data.service_commits.is_empty() {
        return;
    }
    let managed: BTreeSet<&str> = data
        .objects
        .services
        .iter()
        .filter(|o| {
            o.origin
                .stack
                .as_deref()
                .is_some_and(|stack| data.stack_owner(stack).is_some())
        })
        .filter_map(|o| o.id.as_deref())
        .collect();
    let keep: BTreeSet<String> = managed.into_iter().map(str::to_owned).collect();
    data.service_commits.retain(|id, _| keep.contains(id));
}

pub(super) fn add_repository(
    data: &mut StoreData,
    repository: Repository,
    secrets: RepositorySecrets,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let name = repository.name.clone();
    let mut reasons = Vec::new();
    if data.repositories.contains_key(&name) {
        reasons.push(format!(
            "repository {name} already exists: `swarm repo rm {name}` first, or choose another name"
        ));
    }
    if !crate::stack::convert::valid_name(&name) {
        reasons.push(format!(
            "repository name {name:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    if repository.url.trim().is_empty() {
        reasons.push(format!("repository {name}: the URL is empty"));
    }
    if repository.branch.trim().is_empty() {
        reasons.push(format!("repository {name}: the branch is empty"));
    }
    if repository.interval_ms < 1000 {
        reasons.push(format!(
            "repository {name}: the interval must be at least 1s (webhooks make changes immediate)"
        ));
    }
    if !reasons.is_empty() {
        return Err(Rejection::Invalid { reasons });
    }
    data.repositories.insert(
        name.clone(),
        RepositoryRecord {
            repository,
            secrets,
            status: RepositoryStatus::default(),
            deployments: Vec::new(),
        },
    );
    events.push(event("repository", &name, Change::Created));
    Ok(())
}

/// A repository's removal may remove only objects of the stacks it owns.
pub(super) fn check_removal(
    data: &StoreData,
    name: &str,
    actions: &[Action],
) -> Result<(), Rejection> {
    let record = record(data, name)?;
    if let Some(action) = actions.iter().find(|a| a.op != Op::Remove) {
        return Err(Rejection::invalid(format!(
            "removing repository {name} may only remove objects, not {} {} {}",
            action.op.as_str(),
            action.kind.as_str(),
            action.name
        )));
    }
    let foreign: Vec<&str> = stacks_touched(data, actions)
        .into_iter()
        .filter(|stack| !record.status.stacks.contains(*stack))
        .collect();
    if !foreign.is_empty() {
        return Err(Rejection::invalid(format!(
            "removing repository {name} may only remove its own stacks, not {}",
            foreign.join(", ")
        )));
    }
    Ok(())
}

fn record<'d>(data: &'d StoreData, name: &str) -> Result<&'d RepositoryRecord, Rejection> {
    data.repositories
        .get(name)
        .ok_or_else(|| Rejection::invalid(format!("no repository {name}")))
}

pub(super) fn status_mut<'d>(
    data: &'d mut StoreData,
    name: &str,
) -> Result<&'d mut RepositoryStatus, Rejection> {
    data.repositories
        .get_mut(name)
        .map(|record| &mut record.status)
        .ok_or_else(|| Rejection::invalid(format!("no repository {name}")))
}

/// Whether a Deployment may be recorded: an error if the command is stale or malformed
/// (the watcher decides again), `Some(reason)` if it is to be recorded as refused (a stack
/// owned elsewhere or deployed by hand), `None` if its plan may be applied.
pub(super) fn check_deploy(
    data: &StoreData,
    deployment: &Deployment,
    stacks: &BTreeSet<String>,
) -> Result<Option<String>, Rejection> {
    let name = &deployment.repository;
    let record = record(data, name)?;
    let commit = &deployment.commit.id;
    let status = &record.status;
    if deployment.trigger == Trigger::SelfHeal {
        if status.applied.as_ref() != Some(commit) {
            return Err(Rejection::invalid(format!(
                "repository {name}: a heal restores the applied commit, and {commit} is not it"
            )));
        }
    } else if status.processed.as_ref() == Some(commit) {
        return Err(Rejection::invalid(format!(
            "repository {name}: commit {commit} was already processed"
        )));
    }
    let actions = &deployment.plan.actions;
    let touched = stacks_touched(data, actions);
    let strays: Vec<&str> = touched
        .iter()
        .copied()
        .filter(|stack| !stacks.contains(*stack) && !status.stacks.contains(*stack))
        .collect();
    if !strays.is_empty() {
        return Err(Rejection::invalid(format!(
            "repository {name}: the plan touches stacks its files do not declare: {}",
            strays.join(", ")
        )));
    }
    let claimed: BTreeSet<&str> = stacks.iter().map(String::as_str).chain(touched).collect();
    let mut reasons = Vec::new();
    for stack in claimed {
        match data.stack_owner(stack) {
            Some(owner) if owner != name => reasons.push(format!(
                "stack {stack} is owned by repository {owner}: declare it in one repository only"
            )),
            Some(_) => {}
            None if deployed_by_hand(data, stack) => reasons.push(format!(
                "stack {stack} was deployed by hand: remove it first (`swarm stack rm {stack}`) for repository {name} to own it"
            )),
            None => {}
        }
    }
    Ok((!reasons.is_empty()).then(|| reasons.join("; ")))
}

/// Whether objects of `stack` exist while no repository owns it.
fn deployed_by_hand(data: &StoreData, stack: &str) -> bool {
    let objects = &data.objects;
    let in_stack = |origin: &swarm_api::state::Origin| origin.stack.as_deref() == Some(stack);
    objects.services.iter().any(|o| in_stack(&o.origin))
        || objects.networks.iter().any(|o| in_stack(&o.origin))
        || objects.configs.iter().any(|o| in_stack(&o.origin))
        || objects.secrets.iter().any(|o| in_stack(&o.origin))
}

/// Records a checked Deployment (its plan, if any, already applied at `index`) and what it
/// says of its repository.
pub(super) fn record_deployment(
    data: &mut StoreData,
    index: u64,
    mut deployment: Deployment,
    stacks: BTreeSet<String>,
    events: &mut Vec<Event>,
) {
    let name = deployment.repository.clone();
    deployment.id = format!("{name}-{index}");
    let commit = deployment.commit.id.clone();
    let changed_services: Vec<String> = deployment
        .plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Service && a.op != Op::Remove)
        .map(|a| a.name.clone())
        .collect();
    let record = data
        .repositories
        .get_mut(&name)
        .expect("checked by check_deploy");
    let status = &mut record.status;
    status.processed = Some(commit.clone());
    match &deployment.outcome {
        DeploymentOutcome::Applied | DeploymentOutcome::NoOp => {
            status.applied = Some(commit.clone());
            status.stacks = stacks;
            status.error = None;
        }
        DeploymentOutcome::Invalid { findings } => {
            status.error = Some(RepositoryError {
                message: format!(
                    "commit {} is invalid ({} finding{}): `swarm deploy show {}` lists them",
                    short(&commit),
                    findings.len(),
                    if findings.len() == 1 { "" } else { "s" },
                    deployment.id
                ),
                since: deployment.created_at,
                attempts: 1,
            });
        }
        DeploymentOutcome::Refused { reason } => {
            status.error = Some(RepositoryError {
                message: format!("commit {} was refused: {reason}", short(&commit)),
                since: deployment.created_at,
                attempts: 1,
            });
        }
        DeploymentOutcome::Converged | DeploymentOutcome::Failed { .. } => {}
    }
    record.deployments.push(deployment);
    let excess = record.deployments.len().saturating_sub(DEPLOYMENT_HISTORY);
    record.deployments.drain(..excess);
    for service in changed_services {
        if let Some(id) = object_named(&data.objects.services, &service).and_then(|o| o.id.clone())
        {
            data.service_commits.insert(id, commit.clone());
        }
    }
    forget_unmanaged_commits(data);
    events.push(event("repository", &name, Change::Updated));
}

/// A commit id as `git log --oneline` shows it.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

pub(super) fn set_outcome(
    data: &mut StoreData,
    repository: &str,
    id: &str,
    outcome: DeploymentOutcome,
    at: Millis,
    events: &mut Vec<Event>,
) -> Result<(), Rejection> {
    let record = data
        .repositories
        .get_mut(repository)
        .ok_or_else(|| Rejection::invalid(format!("no repository {repository}")))?;
    let deployment = record
        .deployments
        .iter_mut()
        .find(|d| d.id == id)
        .ok_or_else(|| Rejection::invalid(format!("no deployment {id} in {repository}")))?;
    if deployment.outcome.is_final() {
        return Err(Rejection::invalid(format!(
            "deployment {id} is already {}",
            deployment.outcome.as_str()
        )));
    }
    deployment.outcome = outcome;
    deployment.updated_at = at;
    events.push(event("repository", repository, Change::Updated));
    Ok(())
}

#[cfg(test)]
mod tests {
    use swarm_api::gitops::{Commit, RepositoryRecord};
    use swarm_api::plan::{Basis, Plan};
    use swarm_api::state::ClusterState;
    use swarm_api::store::{Command, NodeRole, Outcome};

    use super::*;
    use crate::store::Store;
    use crate::store::fixtures::{cluster, node};

    fn repository(name: &str) -> Command {
        Command::AddRepository {
            repository: Repository {
                name: name.into(),
                url: format!("/srv/git/{name}.git"),
                branch: "main".into(),
                path: "stacks".into(),
                interval_ms: 15_000,
                self_heal: false,
                prune: false,
                notify: None,
                created_at: 5,
            },
            secrets: RepositorySecrets::default(),
        }
    }

    /// The plan that deploys stack `stack` (one service, `replicas`) over `current`.
    fn plan(stack: &str, replicas: u64, current: &ClusterState) -> Plan {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{stack}.yaml"));
        std::fs::write(
            &path,
            format!(
                "services:\n  site:\n    image: nginx\n    deploy:\n      replicas: {replicas}\n"
            ),
        )
        .unwrap();
        let file = format!("stacks/{stack}.yaml");
        let stack = crate::stack::load(&crate::source::WorkTree, &path, &file, &|_| None)
            .stack
            .unwrap();
        crate::plan::plan(&[stack], current, &Default::default(), Basis::default()).unwrap()
    }

    fn empty_plan() -> Plan {
        Plan {
            format: swarm_api::plan::PLAN_FORMAT,
            basis: Basis::default(),
            actions: Vec::new(),
        }
    }

    fn deployment(repository: &str, commit: &str, plan: Plan, trigger: Trigger) -> Deployment {
        Deployment {
            id: String::new(),
            repository: repository.into(),
            commit: Commit {
                id: commit.into(),
                author_name: "Ada".into(),
                author_email: "ada@example.com".into(),
                summary: "deploy".into(),
                time: 1,
            },
            trigger,
            created_at: 10,
            updated_at: 10,
            plan,
            outcome: DeploymentOutcome::Applied,
        }
    }

    fn deploy(
        store: &Store,
        repository: &str,
        commit: &str,
        stack: &str,
        replicas: u64,
    ) -> Command {
        let current = store.export();
        Command::Deploy {
            file_contents: Default::default(),
            expected_version: current.version,
            deployment: Box::new(deployment(
                repository,
                commit,
                plan(stack, replicas, &current),
                Trigger::Poll,
            )),
            stacks: BTreeSet::from([stack.to_owned()]),
        }
    }

    fn started() -> Store {
        let mut store = Store::default();
        store.apply_command(1, cluster());
        store.apply_command(2, node("m", NodeRole::Manager));
        assert_eq!(
            store.apply_command(3, repository("app")),
            Outcome::Applied { version: 3 }
        );
        store
    }

    fn record<'s>(store: &'s Store, name: &str) -> &'s RepositoryRecord {
        &store.data().repositories[name]
    }

    fn rejected(outcome: Outcome) -> String {
        match outcome {
            Outcome::Rejected(rejection) => rejection.to_string(),
            other => panic!("applied: {other:?}"),
        }
    }

    #[test]
    fn a_commit_is_applied_once_and_its_repository_owns_its_stacks() {
        let mut store = started();
        let command = deploy(&store, "app", "c1", "web", 2);
        assert_eq!(
            store.apply_command(4, command.clone()),
            Outcome::Applied { version: 4 }
        );
        let service = &store.export().services[0];
        assert_eq!(service.spec.name, "web_site");
        let app = record(&store, "app");
        assert_eq!(app.deployments[0].id, "app-4");
        assert_eq!(app.deployments[0].outcome, DeploymentOutcome::Applied);
        assert_eq!(app.status.applied.as_deref(), Some("c1"));
        assert_eq!(store.data().stack_owner("web"), Some("app"));
        let id = service.id.clone().unwrap();
        assert_eq!(store.data().service_commits[&id], "c1");

        // A new leader resuming proposes it again: refused, not applied twice.
        assert!(rejected(store.apply_command(5, command)).contains("already processed"));
        assert_eq!(record_len(&store, "app"), 1);

        // `stack deploy` of the stack is refused; a service update (override) is not.
        let by_hand = plan("web", 5, &store.export());
        let outcome = store.apply_command(
            6,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: None,
                actions: by_hand.actions.clone(),
                registry_auth: Default::default(),
                override_git: false,
            },
        );
        assert!(rejected(outcome).contains("stack web is managed by repository app"));
        let outcome = store.apply_command(
            7,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: None,
                actions: by_hand.actions,
                registry_auth: Default::default(),
                override_git: true,
            },
        );
        assert_eq!(outcome, Outcome::Applied { version: 7 });

        // The next commit with the same content is a no-op; the commit that changed the
        // service stays its commit.
        let command = Command::Deploy {
            file_contents: Default::default(),
            expected_version: 7,
            deployment: Box::new(deployment("app", "c2", empty_plan(), Trigger::Webhook)),
            stacks: BTreeSet::from(["web".to_owned()]),
        };
        store.apply_command(8, command);
        let app = record(&store, "app");
        assert_eq!(app.deployments[1].outcome, DeploymentOutcome::NoOp);
        assert_eq!(app.status.applied.as_deref(), Some("c2"));
        assert_eq!(store.data().service_commits[&id], "c1");
    }

    fn record_len(store: &Store, name: &str) -> usize {
        record(store, name).deployments.len()
    }

    #[test]
    fn a_stack_owned_elsewhere_or_deployed_by_hand_is_refused_and_recorded() {
        let mut store = started();
        store.apply_command(4, repository("other"));
        store.apply_command(5, deploy(&store, "app", "c1", "web", 2));
        let before = store.export().services.clone();

        store.apply_command(6, deploy(&store, "other", "o1", "web", 3));
        let other = record(&store, "other");
        let DeploymentOutcome::Refused { reason } = &other.deployments[0].outcome else {
            panic!("{:?}", other.deployments[0].outcome);
        };
        assert!(
            reason.contains("stack web is owned by repository app"),
            "{reason}"
        );
        assert!(other.deployments[0].plan.actions.is_empty());
        assert_eq!(other.status.processed.as_deref(), Some("o1"));
        assert_eq!(other.status.applied, None);
        assert!(
            other
                .status
                .error
                .as_ref()
                .unwrap()
                .message
                .contains("refused")
        );
        assert_eq!(store.export().services, before);

        // A stack deployed by hand.
        let by_hand = plan("shop", 1, &store.export());
        store.apply_command(
            7,
            Command::ApplyPlan {
                file_contents: Default::default(),
                expected_version: None,
                actions: by_hand.actions,
                registry_auth: Default::default(),
                override_git: false,
            },
        );
        store.apply_command(8, deploy(&store, "other", "o2", "shop", 4));
        let other = record(&store, "other");
        let DeploymentOutcome::Refused { reason } = &other.deployments[1].outcome else {
            panic!("{:?}", other.deployments[1].outcome);
        };
        assert!(reason.contains("`swarm stack rm shop`"), "{reason}");
    }

    #[test]
    fn an_invalid_commit_changes_nothing_and_is_not_retried() {
        let mut store = started();
        store.apply_command(4, deploy(&store, "app", "c1", "web", 2));
        let mut invalid = deployment("app", "c2", empty_plan(), Trigger::Poll);
        invalid.outcome = DeploymentOutcome::Invalid {
            findings: vec!["stacks/web.yaml:3:5: error: services.site: bad".into()],
        };
        let command = Command::Deploy {
            file_contents: Default::default(),
            expected_version: 4,
            deployment: Box::new(invalid),
            stacks: BTreeSet::new(),
        };
        assert_eq!(
            store.apply_command(5, command.clone()),
            Outcome::Applied { version: 5 }
        );
        let status = &record(&store, "app").status;
        assert_eq!(status.applied.as_deref(), Some("c1"));
        assert_eq!(status.processed.as_deref(), Some("c2"));
        assert_eq!(status.stacks, BTreeSet::from(["web".to_owned()]));
        assert!(
            status
                .error
                .as_ref()
                .unwrap()
                .message
                .contains("invalid (1 finding)")
        );
        assert!(rejected(store.apply_command(6, command)).contains("already processed"));
    }

    #[test]
    fn outcomes_move_once_and_history_is_bounded() {
        let mut store = started();
        store.apply_command(4, deploy(&store, "app", "c1", "web", 2));
        let converged = |id: &str| Command::SetDeploymentOutcome {
            repository: "app".into(),
            id: id.into(),
            outcome: DeploymentOutcome::Converged,
            at: 20,
        };
        assert_eq!(
            store.apply_command(5, converged("app-4")),
            Outcome::Applied { version: 5 }
        );
        assert_eq!(record(&store, "app").deployments[0].updated_at, 20);
        assert!(rejected(store.apply_command(6, converged("app-4"))).contains("already converged"));
        for (index, n) in (7..).zip(0..DEPLOYMENT_HISTORY + 5) {
            let command = Command::Deploy {
                file_contents: Default::default(),
                expected_version: index - 1,
                deployment: Box::new(deployment(
                    "app",
                    &format!("n{n}"),
                    empty_plan(),
                    Trigger::Poll,
                )),
                stacks: BTreeSet::from(["web".to_owned()]),
            };
            assert_eq!(
                store.apply_command(index, command),
                Outcome::Applied { version: index }
            );
        }
        let deployments = &record(&store, "app").deployments;
        assert_eq!(deployments.len(), DEPLOYMENT_HISTORY);
        assert_eq!(
            deployments.last().unwrap().commit.id,
            format!("n{}", DEPLOYMENT_HISTORY + 4)
        );
    }

    #[test]
    fn a_heal_restores_the_applied_commit_only() {
        let mut store = started();
        store.apply_command(4, deploy(&store, "app", "c1", "web", 2));
        let heal = |commit: &str, store: &Store| Command::Deploy {
            file_contents: Default::default(),
            expected_version: store.export().version,
            deployment: Box::new(deployment(
                "app",
                commit,
                plan("web", 2, &store.export()),
                Trigger::SelfHeal,
            )),
            stacks: BTreeSet::from(["web".to_owned()]),
        };
        assert!(rejected(store.apply_command(5, heal("c0", &store))).contains("heal"));
        // Healing the applied commit is allowed again and again (here: nothing to do).
        assert_eq!(
            store.apply_command(6, heal("c1", &store)),
            Outcome::Applied { version: 6 }
        );
        assert_eq!(
            store.apply_command(7, heal("c1", &store)),
            Outcome::Applied { version: 7 }
        );
        assert_eq!(
            record(&store, "app").deployments[2].outcome,
            DeploymentOutcome::NoOp
        );
    }

    #[test]
    fn removing_a_repository_keeps_or_prunes_only_its_stacks() {
        let mut store = started();
        store.apply_command(4, repository("other"));
        store.apply_command(5, deploy(&store, "app", "c1", "web", 2));
        store.apply_command(6, deploy(&store, "other", "o1", "shop", 1));
        let removal = |name: &str, stack: &str, store: &Store| Command::RemoveRepository {
            name: name.into(),
            expected_version: store.export().version,
            actions: crate::deploy::plan_removal(&[stack.to_owned()], &store.export())
                .unwrap()
                .actions,
        };
        let outcome = store.apply_command(7, removal("app", "shop", &store));
        assert!(rejected(outcome).contains("only remove its own stacks, not shop"));

        store.apply_command(8, removal("other", "shop", &store));
        assert!(!store.data().repositories.contains_key("other"));
        assert_eq!(store.export().services.len(), 1);

        let keep = Command::RemoveRepository {
            name: "app".into(),
            expected_version: 8,
            actions: Vec::new(),
        };
        assert_eq!(
            store.apply_command(9, keep),
            Outcome::Applied { version: 9 }
        );
        assert_eq!(store.export().services.len(), 1);
        assert_eq!(store.data().stack_owner("web"), None);
        assert!(store.data().service_commits.is_empty());
    }

    #[test]
    fn a_sync_request_is_recorded_with_its_index() {
        let mut store = started();
        let sync = |name: &str| Command::SyncRepository {
            name: name.into(),
            trigger: Trigger::Webhook,
            at: 30,
        };
        assert_eq!(
            store.apply_command(4, sync("app")),
            Outcome::Applied { version: 4 }
        );
        let request = record(&store, "app").status.sync.clone().unwrap();
        assert_eq!(
            (request.trigger, request.at, request.index),
            (Trigger::Webhook, 30, 4)
        );
        assert!(rejected(store.apply_command(5, sync("nope"))).contains("no repository nope"));
    }

    #[test]
    fn a_repository_is_declared_once_with_a_usable_name() {
        let mut store = started();
        assert!(rejected(store.apply_command(4, repository("app"))).contains("already exists"));
        assert!(rejected(store.apply_command(5, repository("-x"))).contains("repository name"));
    }
}
