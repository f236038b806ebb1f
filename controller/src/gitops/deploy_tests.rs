//! The watcher's decisions over real repositories made here with git2 (a bare repository,
//! commits written straight into it), applied to a real store.

use std::collections::BTreeSet;

use swarm_api::gitops::{DeploymentOutcome, Repository, RepositorySecrets, Trigger};
use swarm_api::plan::{Kind, Op};
use swarm_api::store::{Command, Outcome};

use super::*;
use crate::store::Store;

const WEB: &str = "services:\n  site:\n    image: nginx:1.27\n    deploy:\n      replicas: 2\n";
const SHOP: &str = "services:\n  cart:\n    image: shop:1\n";

/// A bare repository whose `main` branch the test commits whole trees to.
struct Remote {
    _dir: tempfile::TempDir,
    git: git2::Repository,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let git = git2::Repository::init_bare(dir.path().join("remote.git")).unwrap();
        Remote { _dir: dir, git }
    }

    /// Commits exactly `files` (path → content) on `main`, after its current head.
    fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        let tree = self.tree(files, "");
        let signature = git2::Signature::new(
            "Ada Lovelace",
            "ada@example.org",
            &git2::Time::new(1_700_000_000, 0),
        )
        .unwrap();
        let parent = self
            .git
            .find_reference("refs/heads/main")
            .ok()
            .and_then(|r| r.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let tree = self.git.find_tree(tree).unwrap();
        self.git
            .commit(
                Some("refs/heads/main"),
                &signature,
                &signature,
                message,
                &tree,
                &parents,
            )
            .unwrap()
            .to_string()
    }

    /// The tree of the files under `prefix` (`""` or `dir/`).
    fn tree(&self, files: &[(&str, &str)], prefix: &str) -> git2::Oid {
        let mut builder = self.git.treebuilder(None).unwrap();
        let mut dirs = BTreeSet::new();
        for (path, content) in files {
            let Some(rest) = path.strip_prefix(prefix) else {
                continue;
            };
            match rest.split_once('/') {
                Some((dir, _)) => {
                    dirs.insert(dir.to_owned());
                }
                None => {
                    let blob = self.git.blob(content.as_bytes()).unwrap();
                    builder.insert(rest, blob, 0o100644).unwrap();
                }
            }
        }
        for dir in dirs {
            let sub = self.tree(files, &format!("{prefix}{dir}/"));
            builder.insert(&dir, sub, 0o040000).unwrap();
        }
        builder.write().unwrap()
    }

    fn open(&self) -> Repo {
        Repo::open_bare(self.git.path()).unwrap()
    }
}

fn repository(name: &str) -> Repository {
    Repository {
        name: name.into(),
        url: format!("/srv/git/{name}.git"),
        branch: "main".into(),
        path: "stacks".into(),
        interval_ms: 15_000,
        self_heal: false,
        prune: false,
        notify: None,
        created_at: 1,
    }
}

/// A store holding repositories `app` and `other`, at version 3.
fn store() -> Store {
    let mut store = Store::default();
    store.apply_command(1, crate::store::fixtures::cluster());
    for (index, name) in [(2, "app"), (3, "other")] {
        let add = Command::AddRepository {
            repository: repository(name),
            secrets: RepositorySecrets::default(),
        };
        assert_eq!(
            store.apply_command(index, add),
            Outcome::Applied { version: index }
        );
    }
    store
}

/// Plans `commit` for repository `app` against `store` as it is.
fn decide_for(store: &Store, repo: &Repo, commit: &str, cache: &LoadCache) -> Decision {
    decide_as(store, repo, commit, cache, "app", Trigger::Poll)
}

fn decide_as(
    store: &Store,
    repo: &Repo,
    commit: &str,
    cache: &LoadCache,
    name: &str,
    trigger: Trigger,
) -> Decision {
    let record = &store.data().repositories[name];
    let state = store.export();
    let target = Target {
        repository: &record.repository,
        owned: &record.status.stacks,
        state: &state,
    };
    decide(repo, commit, &target, cache, trigger, 42).unwrap()
}

fn apply(store: &mut Store, decision: Decision) -> Outcome {
    let index = store.data().version + 1;
    store.apply_command(index, decision.command())
}

fn findings_of(decision: &Decision) -> Vec<String> {
    match &decision.deployment.outcome {
        DeploymentOutcome::Invalid { findings } => findings.clone(),
        other => panic!("not invalid: {other:?}"),
    }
}

/// The plan's actions on services (a stack's default network comes and goes with it).
fn ops(decision: &Decision) -> Vec<(Op, String)> {
    decision
        .deployment
        .plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Service)
        .map(|a| (a.op, a.name.clone()))
        .collect()
}

#[test]
fn a_commit_is_planned_with_its_metadata_and_stacks_and_the_next_one_scales() {
    let remote = Remote::new();
    let first = remote.commit(
        "Deploy the site\n\nwith two replicas",
        &[("stacks/web.yaml", WEB), ("README.md", "hello")],
    );
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();

    let decision = decide_for(&store, &repo, &first, &cache);
    let deployment = &decision.deployment;
    assert_eq!(deployment.outcome, DeploymentOutcome::Applied);
    assert_eq!(deployment.commit.id, first);
    assert_eq!(deployment.commit.author_name, "Ada Lovelace");
    assert_eq!(deployment.commit.summary, "Deploy the site");
    assert_eq!(deployment.commit.time, 1_700_000_000);
    assert_eq!(
        (deployment.trigger, deployment.created_at),
        (Trigger::Poll, 42)
    );
    assert_eq!(ops(&decision), [(Op::Create, "web_site".to_owned())]);
    assert_eq!(
        deployment.plan.actions[0].origin.source.as_deref(),
        Some("stacks/web.yaml")
    );
    assert_eq!(decision.stacks, BTreeSet::from(["web".to_owned()]));
    assert_eq!(apply(&mut store, decision), Outcome::Applied { version: 4 });
    assert_eq!(store.data().stack_owner("web"), Some("app"));

    let second = remote.commit(
        "Scale the site",
        &[
            (
                "stacks/web.yaml",
                &WEB.replace("replicas: 2", "replicas: 5"),
            ),
            ("README.md", "hello"),
        ],
    );
    let decision = decide_for(&store, &repo, &second, &cache);
    assert_eq!(ops(&decision), [(Op::Scale, "web_site".to_owned())]);
    assert_eq!(decision.expected_version, 4);
    assert_eq!(apply(&mut store, decision), Outcome::Applied { version: 5 });
    assert_eq!(store.export().services[0].spec.replicas(), Some(5));

    // A commit that changes nothing under the path is a no-op, loaded from the cache.
    let third = remote.commit(
        "Docs",
        &[
            (
                "stacks/web.yaml",
                &WEB.replace("replicas: 2", "replicas: 5"),
            ),
            ("README.md", "hello again"),
        ],
    );
    let (hits, _) = cache.counts();
    let decision = decide_for(&store, &repo, &third, &cache);
    assert_eq!(decision.deployment.outcome, DeploymentOutcome::NoOp);
    assert_eq!(cache.counts().0, hits + 1);
}

#[test]
fn invalid_yaml_and_a_missing_path_are_invalid_with_their_findings() {
    let remote = Remote::new();
    let good = remote.commit("good", &[("stacks/web.yaml", WEB)]);
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &good, &cache);
    apply(&mut store, decision);

    let broken = remote.commit(
        "broken",
        &[(
            "stacks/web.yaml",
            "services:\n  site:\n    image: nginx\n    deploy:\n      replicas: many\n",
        )],
    );
    let decision = decide_for(&store, &repo, &broken, &cache);
    let findings = findings_of(&decision);
    let short = &broken[..12];
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with(&format!("{short}:stacks/web.yaml:5:"))
                && f.contains(": error: ")),
        "{findings:?}"
    );
    assert!(decision.deployment.plan.actions.is_empty());
    assert!(decision.stacks.is_empty());
    let before = store.export().services.clone();
    apply(&mut store, decision);
    assert_eq!(store.export().services, before, "nothing changed");
    let status = &store.data().repositories["app"].status;
    assert_eq!(status.applied.as_deref(), Some(good.as_str()));
    assert_eq!(status.processed.as_deref(), Some(broken.as_str()));

    let unparsable = remote.commit("tabs", &[("stacks/web.yaml", "services: [\n")]);
    let findings = findings_of(&decide_for(&store, &repo, &unparsable, &cache));
    assert!(
        findings[0].starts_with(&format!("{}:stacks/web.yaml:", &unparsable[..12])),
        "{findings:?}"
    );

    let moved = remote.commit("moved", &[("deploy/web.yaml", WEB)]);
    let findings = findings_of(&decide_for(&store, &repo, &moved, &cache));
    assert_eq!(findings.len(), 1);
    assert!(
        findings[0].starts_with(&format!("{}:stacks: error: no such file", &moved[..12])),
        "{findings:?}"
    );
}

#[test]
fn two_files_declaring_one_stack_are_invalid() {
    let remote = Remote::new();
    let commit = remote.commit(
        "twice",
        &[
            ("stacks/a.yaml", &format!("name: web\n{WEB}")),
            ("stacks/b.yaml", &format!("name: web\n{SHOP}")),
        ],
    );
    let decision = decide_for(&store(), &remote.open(), &commit, &LoadCache::new());
    let findings = findings_of(&decision);
    assert!(findings[0].contains("declared by both"), "{findings:?}");
}

#[test]
fn a_deleted_file_removes_its_stack_and_nothing_owned_elsewhere_is_touched() {
    let remote = Remote::new();
    let both = remote.commit(
        "two stacks",
        &[("stacks/web.yaml", WEB), ("stacks/shop.yaml", SHOP)],
    );
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &both, &cache);
    apply(&mut store, decision);

    // Repository `other` owns stack `blog`, declared in a file of the same name under the
    // same path; stack `misc` was deployed by hand from `stacks/misc.yaml`.
    let theirs = Remote::new();
    let blog = theirs.commit(
        "blog",
        &[(
            "stacks/blog.yaml",
            "services:\n  posts:\n    image: blog:1\n",
        )],
    );
    let decision = decide_as(
        &store,
        &theirs.open(),
        &blog,
        &LoadCache::new(),
        "other",
        Trigger::Poll,
    );
    assert_eq!(decision.deployment.outcome, DeploymentOutcome::Applied);
    apply(&mut store, decision);
    let dir = tempfile::tempdir().unwrap();
    let misc = dir.path().join("misc.yaml");
    std::fs::write(&misc, "services:\n  tool:\n    image: tool:1\n").unwrap();
    let loaded = crate::stack::load(&crate::source::WorkTree, &misc, "stacks/misc.yaml", &|_| {
        None
    });
    let mut by_hand = loaded.stack.unwrap();
    by_hand.source = "stacks/misc.yaml".into();
    let plan = crate::deploy::plan_stack(&by_hand, &store.export(), false).unwrap();
    let index = store.data().version + 1;
    let outcome = store.apply_command(
        index,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: plan.actions,
            registry_auth: Default::default(),
            override_git: false,
        },
    );
    assert_eq!(outcome, Outcome::Applied { version: index });
    assert_eq!(store.export().services.len(), 4);

    let only_web = remote.commit("drop the shop", &[("stacks/web.yaml", WEB)]);
    let decision = decide_for(&store, &repo, &only_web, &cache);
    assert_eq!(ops(&decision), [(Op::Remove, "shop_cart".to_owned())]);
    assert_eq!(decision.stacks, BTreeSet::from(["web".to_owned()]));
    apply(&mut store, decision);
    let mut names: Vec<String> = store
        .export()
        .services
        .iter()
        .map(|s| s.spec.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["blog_posts", "misc_tool", "web_site"]);
    assert_eq!(
        store.data().repositories["app"].status.stacks,
        BTreeSet::from(["web".to_owned()])
    );

    // A commit claiming the other repository's stack: the store refuses it, naming it.
    let claim = remote.commit(
        "claim the blog",
        &[
            ("stacks/web.yaml", WEB),
            (
                "stacks/blog.yaml",
                "services:\n  posts:\n    image: blog:2\n",
            ),
        ],
    );
    let decision = decide_for(&store, &repo, &claim, &cache);
    assert!(
        decision
            .deployment
            .plan
            .actions
            .iter()
            .all(|a| a.name != "misc_tool"),
    );
    apply(&mut store, decision);
    let last = store.data().repositories["app"].deployments.last().unwrap();
    let DeploymentOutcome::Refused { reason } = &last.outcome else {
        panic!("{:?}", last.outcome);
    };
    assert!(reason.contains("owned by repository other"), "{reason}");
    assert_eq!(
        store
            .export()
            .services
            .iter()
            .find(|s| s.spec.name == "blog_posts")
            .unwrap()
            .spec
            .task
            .container
            .image,
        "blog:1"
    );
}

#[test]
fn a_change_by_hand_is_drift_and_the_applied_commit_heals_it() {
    let remote = Remote::new();
    let commit = remote.commit("site", &[("stacks/web.yaml", WEB)]);
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &commit, &cache);
    apply(&mut store, decision);
    let clean = decide_as(&store, &repo, &commit, &cache, "app", Trigger::SelfHeal);
    assert!(clean.drift().is_empty());
    assert!(clean.deployment.plan.actions.is_empty());

    // `service scale web_site=5`, overriding git.
    let mut scaled = store.export().services[0].spec.clone();
    scaled.mode = swarm_api::spec::ServiceMode::Replicated { replicas: 5 };
    let scale = swarm_api::plan::Action {
        op: Op::Scale,
        kind: Kind::Service,
        name: "web_site".into(),
        origin: store.export().services[0].origin.clone(),
        changes: Vec::new(),
        spec: Some(swarm_api::plan::ObjectSpec::Service(Box::new(scaled))),
    };
    let index = store.data().version + 1;
    let outcome = store.apply_command(
        index,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: vec![scale],
            registry_auth: Default::default(),
            override_git: true,
        },
    );
    assert_eq!(outcome, Outcome::Applied { version: index });

    let heal = decide_as(&store, &repo, &commit, &cache, "app", Trigger::SelfHeal);
    let drift = heal.drift();
    let changes = &drift["web_site"];
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].path.contains("replicas"), "{changes:?}");
    assert_eq!(changes[0].before, Some(serde_json::json!(2)));
    assert_eq!(changes[0].after, Some(serde_json::json!(5)));
    assert_eq!(ops(&heal), [(Op::Scale, "web_site".to_owned())]);

    assert!(matches!(apply(&mut store, heal), Outcome::Applied { .. }));
    assert_eq!(store.export().services[0].spec.replicas(), Some(2));
    let last = store.data().repositories["app"].deployments.last().unwrap();
    assert_eq!(last.trigger, Trigger::SelfHeal);
    let after = decide_as(&store, &repo, &commit, &cache, "app", Trigger::SelfHeal);
    assert!(after.drift().is_empty());
}

#[test]
fn a_service_removed_by_hand_drifts_as_a_whole() {
    let remote = Remote::new();
    let commit = remote.commit("site", &[("stacks/web.yaml", WEB)]);
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &commit, &cache);
    apply(&mut store, decision);
    let removal = crate::deploy::plan_removal(&["web".to_owned()], &store.export()).unwrap();
    let index = store.data().version + 1;
    store.apply_command(
        index,
        Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: removal.actions,
            registry_auth: Default::default(),
            override_git: true,
        },
    );
    let drift = decide_as(&store, &repo, &commit, &cache, "app", Trigger::SelfHeal).drift();
    assert_eq!(drift["web_site"][0].path, "");
    assert_eq!(drift["web_site"][0].after, None);
}

#[test]
fn the_root_of_the_repository_is_a_path_too() {
    let remote = Remote::new();
    let commit = remote.commit("root", &[("web.yaml", WEB)]);
    let mut store = store();
    let mut record = store.data().repositories["app"].clone();
    record.repository.path = String::new();
    let state = store.export();
    let target = Target {
        repository: &record.repository,
        owned: &record.status.stacks,
        state: &state,
    };
    let decision = decide(
        &remote.open(),
        &commit,
        &target,
        &LoadCache::new(),
        Trigger::Sync,
        1,
    )
    .unwrap();
    assert_eq!(ops(&decision), [(Op::Create, "web_site".to_owned())]);
    assert!(matches!(
        apply(&mut store, decision),
        Outcome::Applied { .. }
    ));
}

/// Writes running tasks of the current spec for service `name` (`count` of them).
fn run_tasks(store: &mut Store, name: &str, count: u64) {
    let service = store
        .export()
        .services
        .into_iter()
        .find(|s| s.spec.name == name)
        .unwrap();
    let id = service.id.clone().unwrap();
    let changes = (1..=count)
        .map(|slot| {
            swarm_api::store::TaskChange::Create(Box::new(swarm_api::task::Task {
                id: format!("{name}-{slot}-{}", store.data().version),
                service_id: id.clone(),
                service_name: name.to_owned(),
                slot: Some(slot),
                node_id: Some("n1".into()),
                spec: service.spec.task.clone(),
                desired: swarm_api::task::DesiredState::Running,
                status: swarm_api::task::TaskStatus::new(swarm_api::task::TaskState::Running, 1),
                created_at: 1,
                started_at: Some(1),
                networks: Vec::new(),
            }))
        })
        .collect();
    let index = store.data().version + 1;
    let outcome = store.apply_command(
        index,
        Command::WriteTasks {
            expected_version: store.data().tasks_version,
            changes,
        },
    );
    assert_eq!(outcome, Outcome::Applied { version: index });
}

#[test]
fn an_applied_deployment_converges_when_its_services_run_and_fails_when_one_pauses() {
    let remote = Remote::new();
    let commit = remote.commit("site", &[("stacks/web.yaml", WEB)]);
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &commit, &cache);
    apply(&mut store, decision);
    let deployment = store.data().repositories["app"].deployments[0].clone();
    assert_eq!(crate::gitops::judge(&store, &deployment), None);
    run_tasks(&mut store, "web_site", 1);
    assert_eq!(crate::gitops::judge(&store, &deployment), None, "1 of 2");
    run_tasks(&mut store, "web_site", 1);
    assert_eq!(
        crate::gitops::judge(&store, &deployment),
        Some(DeploymentOutcome::Converged)
    );

    let id = store.export().services[0].id.clone().unwrap();
    let index = store.data().version + 1;
    let paused = swarm_api::store::TaskChange::UpdateStatus {
        service_id: id,
        status: swarm_api::rollout::UpdateStatus {
            state: swarm_api::rollout::UpdateState::Paused,
            started_at: 1,
            completed_at: None,
            message: "update paused due to failure or early termination of task x".into(),
        },
    };
    store.apply_command(
        index,
        Command::WriteTasks {
            expected_version: store.data().tasks_version,
            changes: vec![paused],
        },
    );
    let Some(DeploymentOutcome::Failed { reason }) = crate::gitops::judge(&store, &deployment)
    else {
        panic!("not failed");
    };
    assert!(reason.starts_with("web_site: update paused"), "{reason}");
}

#[test]
fn a_new_global_service_converges_once_it_has_tasks() {
    let remote = Remote::new();
    let global = "services:\n  agent:\n    image: agent:1\n    deploy:\n      mode: global\n";
    let commit = remote.commit("agent", &[("stacks/agent.yaml", global)]);
    let repo = remote.open();
    let mut store = store();
    let decision = decide_for(&store, &repo, &commit, &LoadCache::new());
    apply(&mut store, decision);
    let deployment = store.data().repositories["app"].deployments[0].clone();
    assert_eq!(
        crate::gitops::judge(&store, &deployment),
        None,
        "no task yet"
    );
    run_tasks(&mut store, "agent_agent", 1);
    assert_eq!(
        crate::gitops::judge(&store, &deployment),
        Some(DeploymentOutcome::Converged)
    );
}

/// A commit's secret file travels with its Deployment's entry, beside the plan (never in
/// it), and a later commit that changes the file brings the new version and rolls the
/// service that pins it.
#[test]
fn a_commits_secret_contents_ride_beside_its_plan_and_a_change_rolls_the_service() {
    const VAULT: &str = "services:\n  api:\n    image: nginx\n    secrets: [token]\nsecrets:\n  token:\n    file: ./token.txt\n";
    let remote = Remote::new();
    let first = remote.commit(
        "Vault",
        &[
            ("stacks/vault.yaml", VAULT),
            ("stacks/token.txt", "git-one"),
        ],
    );
    let repo = remote.open();
    let cache = LoadCache::new();
    let mut store = store();
    let decision = decide_for(&store, &repo, &first, &cache);
    let digest = swarm_api::files::digest_of(b"git-one");
    assert_eq!(decision.file_contents.keys().collect::<Vec<_>>(), [&digest]);
    let plan_json = serde_json::to_string(&decision.deployment.plan).unwrap();
    assert!(!plan_json.contains("git-one"), "{plan_json}");
    assert_eq!(apply(&mut store, decision), Outcome::Applied { version: 4 });
    assert_eq!(store.data().file_contents[&digest].bytes(), b"git-one");

    let second = remote.commit(
        "Rotate the token",
        &[
            ("stacks/vault.yaml", VAULT),
            ("stacks/token.txt", "git-two"),
        ],
    );
    let decision = decide_for(&store, &repo, &second, &cache);
    assert_eq!(ops(&decision), [(Op::Update, "vault_api".to_owned())]);
    let secret_ops: Vec<(Op, &str)> = decision
        .deployment
        .plan
        .actions
        .iter()
        .filter(|a| a.kind == Kind::Secret)
        .map(|a| (a.op, a.name.as_str()))
        .collect();
    assert_eq!(secret_ops, [(Op::Update, "vault_token")]);
    assert_eq!(apply(&mut store, decision), Outcome::Applied { version: 5 });
    let new = swarm_api::files::digest_of(b"git-two");
    assert_eq!(store.data().file_contents[&new].bytes(), b"git-two");
}
