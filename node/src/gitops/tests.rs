//! The watcher over a real single-replica Raft store (an in-memory log) and a real bare
//! repository on disk as the remote, committed to by the test with git2.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use swarm_api::gitops::{
    DeploymentOutcome, Repository, RepositoryRecord, RepositorySecrets, Trigger,
};
use swarm_api::plan::{Action, Kind, ObjectSpec, Op};
use swarm_api::spec::ServiceMode;
use swarm_api::store::{Cluster, Command};
use swarm_controller::raft::driver::{self, DriverConfig, RaftHandle, Transport, Unreachable};
use swarm_controller::raft::log::{DurableLog, Location};
use swarm_controller::raft::replica::{Config, Replica, StateMachine};
use swarm_controller::store::Store;
use swarm_controller::store::client::StoreClient;

use super::run;

const WEB: &str = "services:\n  site:\n    image: nginx:1.27\n    deploy:\n      replicas: 2\n";
const PROXY: &str = "services:\n  edge:\n    image: proxy:1\n    ports:\n      - \"8080:80\"\n";
const AUTO: &str = "services:\n  api:\n    image: api:1\n    deploy:\n      replicas: 1\n";

/// A single voter sends nothing.
struct Alone;

impl Transport for Alone {
    fn send(&mut self, _: raft::prelude::Message) -> Result<(), Unreachable> {
        Err(Unreachable)
    }
}

/// A one-manager store, leading, with a cluster in it.
async fn store() -> (RaftHandle<Store>, driver::DriverTask) {
    let mut log = DurableLog::open(Location::Memory).unwrap();
    log.bootstrap(&[1], Store::default().snapshot()).unwrap();
    let replica = Replica::open(&Config::new(1), log, Store::default()).unwrap();
    let (raft, task) = driver::spawn(replica, |_| Alone, DriverConfig::default());
    let client = StoreClient::new(raft.clone());
    let init = Command::InitCluster(Cluster {
        id: "c".into(),
        created_at: 0,
        heartbeat_period_ms: 1000,
        missed_heartbeats_for_down: 3,
        certificate_validity_ms: 1,
        worker_token_secret: String::new(),
        manager_token_secret: String::new(),
        address_pool: Default::default(),
    });
    for _ in 0..100 {
        match client.propose(&init).await {
            Ok(_) => return (raft, task),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("the single replica never led");
}

/// A bare repository whose `main` the test commits whole trees to.
struct Remote {
    git: git2::Repository,
}

impl Remote {
    fn new(path: &Path) -> Remote {
        Remote {
            git: git2::Repository::init_bare(path).unwrap(),
        }
    }

    /// Commits exactly `files` on `main`, after `parent` (the head when `None`).
    fn commit_after(&self, parent: Option<&str>, message: &str, files: &[(&str, &str)]) -> String {
        let mut root = self.git.treebuilder(None).unwrap();
        let dirs: BTreeSet<&str> = files
            .iter()
            .filter_map(|(p, _)| p.split_once('/'))
            .map(|(d, _)| d)
            .collect();
        for dir in dirs {
            let mut sub = self.git.treebuilder(None).unwrap();
            for (path, content) in files {
                if let Some(name) = path.strip_prefix(&format!("{dir}/")) {
                    let blob = self.git.blob(content.as_bytes()).unwrap();
                    sub.insert(name, blob, 0o100644).unwrap();
                }
            }
            root.insert(dir, sub.write().unwrap(), 0o040000).unwrap();
        }
        let tree = self.git.find_tree(root.write().unwrap()).unwrap();
        let signature = git2::Signature::now("Ada Lovelace", "ada@example.org").unwrap();
        let parent = match parent {
            Some(id) => Some(self.git.find_commit(id.parse().unwrap()).unwrap()),
            None => self
                .git
                .find_reference("refs/heads/main")
                .ok()
                .and_then(|r| r.peel_to_commit().ok()),
        };
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = self
            .git
            .commit(None, &signature, &signature, message, &tree, &parents)
            .unwrap();
        // Set the branch by hand: a force push moves it to a commit that does not follow.
        self.git
            .reference("refs/heads/main", id, true, message)
            .unwrap();
        id.to_string()
    }

    fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        self.commit_after(None, message, files)
    }
}

fn repository(name: &str, url: &Path, path: &str, self_heal: bool) -> Command {
    Command::AddRepository {
        repository: Repository {
            name: name.into(),
            url: url.to_string_lossy().into_owned(),
            branch: "main".into(),
            path: path.into(),
            interval_ms: 1000,
            self_heal,
            prune: false,
            notify: None,
            created_at: 1,
        },
        secrets: RepositorySecrets::default(),
    }
}

async fn read<R: Send + 'static>(
    raft: &RaftHandle<Store>,
    query: impl FnOnce(&Store) -> R + Send + 'static,
) -> R {
    raft.local_read(query).await.unwrap()
}

async fn record(raft: &RaftHandle<Store>, name: &str) -> RepositoryRecord {
    let name = name.to_owned();
    read(raft, move |s| s.data().repositories[&name].clone()).await
}

/// Waits (at most 20 s) until `done` holds of repository `name`'s record.
async fn until(
    raft: &RaftHandle<Store>,
    name: &str,
    what: &str,
    done: impl Fn(&RepositoryRecord) -> bool,
) -> RepositoryRecord {
    for _ in 0..400 {
        let record = record(raft, name).await;
        if done(&record) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: {:#?}", record(raft, name).await.status);
}

async fn replicas(raft: &RaftHandle<Store>, service: &str) -> Option<u64> {
    let service = service.to_owned();
    read(raft, move |s| {
        s.export()
            .services
            .iter()
            .find(|o| o.spec.name == service)
            .and_then(|o| o.spec.replicas())
    })
    .await
}

/// `service scale NAME=REPLICAS`, overriding git.
async fn scale_by_hand(client: &StoreClient, service: &str, replicas: u64) {
    let name = service.to_owned();
    let object = read(client.raft(), move |s| {
        s.export()
            .services
            .into_iter()
            .find(|o| o.spec.name == name)
            .unwrap()
    })
    .await;
    let mut spec = object.spec.clone();
    spec.mode = ServiceMode::Replicated { replicas };
    let action = Action {
        op: Op::Scale,
        kind: Kind::Service,
        name: service.to_owned(),
        origin: object.origin.clone(),
        changes: Vec::new(),
        spec: Some(ObjectSpec::Service(Box::new(spec))),
    };
    client
        .propose(&Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: vec![action],
            registry_auth: Default::default(),
            override_git: true,
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_become_deployments_once_and_drift_is_reported_or_healed() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("remote.git");
    let remote = Remote::new(&url);
    let first = remote.commit("site", &[("stacks/web.yaml", WEB), ("auto/api.yaml", AUTO)]);
    let (raft, _driver) = store().await;
    let client = StoreClient::new(raft.clone());
    client
        .propose(&repository("app", &url, "stacks", false))
        .await
        .unwrap();
    client
        .propose(&repository("auto", &url, "auto", true))
        .await
        .unwrap();
    let watcher = tokio::spawn(run(raft.clone(), 1, dir.path().join("leader-1")));

    // Just added: fetched at once, its commit deployed.
    let app = until(&raft, "app", "first commit applied", |r| {
        r.status.applied.as_deref() == Some(first.as_str())
    })
    .await;
    let deployment = &app.deployments[0];
    assert_eq!(deployment.trigger, Trigger::Sync);
    assert_eq!(deployment.outcome, DeploymentOutcome::Applied);
    assert_eq!(deployment.commit.summary, "site");
    assert_eq!(app.status.fetched.as_ref().unwrap().commit, first);
    assert_eq!(app.status.stacks, BTreeSet::from(["web".to_owned()]));
    assert_eq!(replicas(&raft, "web_site").await, Some(2));
    until(&raft, "auto", "auto applied", |r| {
        r.status.applied.is_some()
    })
    .await;

    // A new commit, seen at once through a sync request (a webhook).
    let scaled = WEB.replace("replicas: 2", "replicas: 5");
    let second = remote.commit(
        "scale",
        &[("stacks/web.yaml", &scaled), ("auto/api.yaml", AUTO)],
    );
    client
        .propose(&Command::SyncRepository {
            name: "app".into(),
            trigger: Trigger::Webhook,
            at: 1,
        })
        .await
        .unwrap();
    let app = until(&raft, "app", "second commit applied", |r| {
        r.status.applied.as_deref() == Some(second.as_str())
    })
    .await;
    let deployment = app.deployments.last().unwrap();
    assert_eq!(deployment.trigger, Trigger::Webhook);
    assert!(deployment.plan.actions.iter().any(|a| a.op == Op::Scale));
    assert_eq!(replicas(&raft, "web_site").await, Some(5));

    // Invalid YAML: recorded invalid with its findings; nothing changes; not retried.
    let third = remote.commit(
        "broken",
        &[
            (
                "stacks/web.yaml",
                "services:\n  site:\n    deploy:\n      replicas: many\n",
            ),
            ("auto/api.yaml", AUTO),
        ],
    );
    let app = until(&raft, "app", "invalid commit processed", |r| {
        r.status.processed.as_deref() == Some(third.as_str())
    })
    .await;
    let DeploymentOutcome::Invalid { findings } = &app.deployments.last().unwrap().outcome else {
        panic!("{:?}", app.deployments.last().unwrap().outcome);
    };
    assert!(
        findings[0].starts_with(&format!("{}:stacks/web.yaml:", &third[..12])),
        "{findings:?}"
    );
    assert_eq!(app.status.applied.as_deref(), Some(second.as_str()));
    assert!(
        app.status
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("invalid")
    );
    assert_eq!(replicas(&raft, "web_site").await, Some(5));

    // Polls of an unchanged repository write nothing.
    // (`auto` follows the same branch: it records each commit too, as a no-op.)
    until(&raft, "auto", "auto saw the invalid commit", |r| {
        r.status.processed.as_deref() == Some(third.as_str())
    })
    .await;
    let version = read(&raft, |s| s.data().version).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        read(&raft, |s| s.data().version).await,
        version,
        "an unchanged poll wrote"
    );
    assert_eq!(record(&raft, "app").await.deployments.len(), 3);

    // A force push (the broken commit dropped, its parent's child instead) is processed.
    let forced = remote.commit_after(
        Some(&second),
        "fix",
        &[("stacks/web.yaml", WEB), ("auto/api.yaml", AUTO)],
    );
    let app = until(&raft, "app", "force-pushed head applied", |r| {
        r.status.applied.as_deref() == Some(forced.as_str())
    })
    .await;
    assert_eq!(app.deployments.last().unwrap().trigger, Trigger::Poll);
    assert_eq!(app.status.error, None);
    assert_eq!(replicas(&raft, "web_site").await, Some(2));

    // Drift: reported for `app`; healed for `auto`, which asks for it.
    scale_by_hand(&client, "web_site", 7).await;
    let app = until(&raft, "app", "drift reported", |r| {
        r.status.drift.contains_key("web_site")
    })
    .await;
    let changes = &app.status.drift["web_site"];
    assert_eq!(changes[0].before, Some(serde_json::json!(2)));
    assert_eq!(changes[0].after, Some(serde_json::json!(7)));
    assert_eq!(replicas(&raft, "web_site").await, Some(7), "not healed");
    until(&raft, "auto", "auto saw the forced push", |r| {
        r.status.applied.as_deref() == Some(forced.as_str())
    })
    .await;
    scale_by_hand(&client, "api_api", 4).await;
    let auto = until(&raft, "auto", "healed", |r| {
        r.deployments.last().unwrap().trigger == Trigger::SelfHeal
    })
    .await;
    assert_eq!(auto.deployments.last().unwrap().commit.id, forced);
    assert_eq!(replicas(&raft, "api_api").await, Some(1));

    // A new leader (a fresh mirror) resumes from the store: nothing is applied twice.
    watcher.abort();
    let _ = watcher.await;
    let counts = |r: &RepositoryRecord| r.deployments.len();
    let (app_before, auto_before) = (
        counts(&record(&raft, "app").await),
        counts(&record(&raft, "auto").await),
    );
    let watcher = tokio::spawn(run(raft.clone(), 1, dir.path().join("leader-2")));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(counts(&record(&raft, "app").await), app_before);
    assert_eq!(counts(&record(&raft, "auto").await), auto_before);
    assert!(
        record(&raft, "app")
            .await
            .status
            .drift
            .contains_key("web_site")
    );
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_remote_is_recorded_with_its_attempts_and_a_failed_rollout_is_not_healed() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, _driver) = store().await;
    let client = StoreClient::new(raft.clone());
    client
        .propose(&repository(
            "gone",
            &dir.path().join("nowhere.git"),
            "",
            false,
        ))
        .await
        .unwrap();
    let url = dir.path().join("remote.git");
    let remote = Remote::new(&url);
    let commit = remote.commit("api", &[("auto/api.yaml", AUTO)]);
    client
        .propose(&repository("auto", &url, "auto", true))
        .await
        .unwrap();
    let Command::AddRepository {
        repository: mut declared,
        secrets,
    } = repository("release", &url, "auto", false)
    else {
        unreachable!()
    };
    declared.branch = "release".into();
    client
        .propose(&Command::AddRepository {
            repository: declared,
            secrets,
        })
        .await
        .unwrap();
    let watcher = tokio::spawn(run(raft.clone(), 1, dir.path().join("leader")));

    let gone = until(&raft, "gone", "failures recorded", |r| {
        r.status.error.as_ref().is_some_and(|e| e.attempts >= 2)
    })
    .await;
    let error = gone.status.error.unwrap();
    assert!(error.message.contains("nowhere.git"), "{}", error.message);
    assert!(gone.deployments.is_empty());
    let release = until(&raft, "release", "missing branch recorded", |r| {
        r.status.error.is_some()
    })
    .await;
    let message = release.status.error.unwrap().message;
    assert!(
        message.contains("has no branch \"release\"; its branches: main"),
        "{message}"
    );

    // The rollout of the applied commit fails (paused): recorded failed, and the drift
    // an automatic rollback leaves is not fought.
    let auto = until(&raft, "auto", "applied", |r| {
        r.status.applied.as_deref() == Some(commit.as_str())
    })
    .await;
    let id = auto.deployments[0].id.clone();
    let service_id = read(&raft, |s| s.export().services[0].id.clone().unwrap()).await;
    let expected_version = read(&raft, |s| s.data().tasks_version).await;
    client
        .propose(&Command::WriteTasks {
            expected_version,
            changes: vec![swarm_api::store::TaskChange::UpdateStatus {
                service_id,
                status: swarm_api::rollout::UpdateStatus {
                    state: swarm_api::rollout::UpdateState::Paused,
                    started_at: 1,
                    completed_at: None,
                    message: "task exited".into(),
                },
            }],
        })
        .await
        .unwrap();
    let auto = until(&raft, "auto", "failed", |r| {
        matches!(r.deployments[0].outcome, DeploymentOutcome::Failed { .. })
    })
    .await;
    let DeploymentOutcome::Failed { reason } = &auto.deployments[0].outcome else {
        unreachable!()
    };
    assert!(
        reason.starts_with("api_api: update paused: task exited"),
        "{reason} ({id})"
    );
    scale_by_hand(&client, "api_api", 3).await;
    until(&raft, "auto", "drift reported", |r| {
        r.status.drift.contains_key("api_api")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replicas(&raft, "api_api").await,
        Some(3),
        "healed over a failed rollout"
    );
    assert_eq!(record(&raft, "auto").await.deployments.len(), 1);

    // A plan the store refuses (it publishes a port that a service deployed by hand, in
    // another stack, publishes): recorded refused, so it is not tried on every pass.
    let by_hand = dir.path().join("legacy.yaml");
    std::fs::write(&by_hand, PROXY).unwrap();
    let stack = swarm_controller::stack::load(
        &swarm_controller::source::WorkTree,
        &by_hand,
        "legacy.yaml",
        &|_| None,
    )
    .stack
    .unwrap();
    let current = read(&raft, |s| s.export()).await;
    let plan = swarm_controller::deploy::plan_stack(&stack, &current, false).unwrap();
    client
        .propose(&Command::ApplyPlan {
            file_contents: Default::default(),
            expected_version: None,
            actions: plan.actions,
            registry_auth: Default::default(),
            override_git: false,
        })
        .await
        .unwrap();
    let refused = remote.commit(
        "edge",
        &[("auto/api.yaml", AUTO), ("edge/proxy.yaml", PROXY)],
    );
    client
        .propose(&repository("edge", &url, "edge", false))
        .await
        .unwrap();
    let edge = until(&raft, "edge", "refused", |r| {
        r.status.processed.as_deref() == Some(refused.as_str())
    })
    .await;
    let DeploymentOutcome::Refused { reason } = &edge.deployments[0].outcome else {
        panic!("{:?}", edge.deployments[0].outcome);
    };
    assert!(
        reason.contains(
            "port 8080/tcp is published by more than one service (legacy_edge, proxy_edge)"
        ),
        "{reason}"
    );
    assert!(edge.deployments[0].plan.actions.is_empty());
    assert_eq!(edge.status.applied, None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(record(&raft, "edge").await.deployments.len(), 1);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_converged_once_its_tasks_ran_for_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, _driver) = store().await;
    let client = StoreClient::new(raft.clone());
    let url = dir.path().join("remote.git");
    let remote = Remote::new(&url);
    let commit = remote.commit("api", &[("auto/api.yaml", AUTO)]);
    client
        .propose(&repository("auto", &url, "auto", false))
        .await
        .unwrap();
    let watcher = tokio::spawn(run(raft.clone(), 1, dir.path().join("leader")));
    until(&raft, "auto", "applied", |r| {
        r.status.applied.as_deref() == Some(commit.as_str())
    })
    .await;

    // The orchestrator's and the agent's part, written here: one task of the spec, running.
    let service = read(&raft, |s| s.export().services[0].clone()).await;
    let expected_version = read(&raft, |s| s.data().tasks_version).await;
    let task = swarm_api::task::Task {
        id: "t1".into(),
        service_id: service.id.clone().unwrap(),
        service_name: service.spec.name.clone(),
        slot: Some(1),
        node_id: Some("n1".into()),
        spec: service.spec.task.clone(),
        desired: swarm_api::task::DesiredState::Running,
        status: swarm_api::task::TaskStatus::new(swarm_api::task::TaskState::Running, 1),
        created_at: 1,
        started_at: Some(1),
        networks: Vec::new(),
    };
    let ran = crate::millis(std::time::SystemTime::now());
    client
        .propose(&Command::WriteTasks {
            expected_version,
            changes: vec![swarm_api::store::TaskChange::Create(Box::new(task))],
        })
        .await
        .unwrap();
    let auto = until(&raft, "auto", "converged", |r| {
        r.deployments[0].outcome == DeploymentOutcome::Converged
    })
    .await;
    let held = auto.deployments[0].updated_at - ran;
    assert!(
        (1000..5000).contains(&held),
        "converged {held} ms after its task ran"
    );
    watcher.abort();
}

/// Counts the fetches made through it.
struct Counting {
    fetch: swarm_controller::gitops::Git2Fetch,
    count: std::sync::atomic::AtomicUsize,
}

impl swarm_controller::gitops::Fetch for Counting {
    fn fetch(
        &self,
        mirror: &Path,
        url: &str,
        credentials: &swarm_controller::gitops::Credentials,
    ) -> Result<swarm_controller::gitops::Heads, swarm_controller::gitops::FetchError> {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.fetch.fetch(mirror, url, credentials)
    }
}

/// argo-cd#9017: many repositories on one URL, each polled on its own timer, cost one
/// fetch per interval, not one per repository.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_on_one_url_share_one_fetch_per_interval() {
    const REPOSITORIES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let (raft, _driver) = store().await;
    let client = StoreClient::new(raft.clone());
    let url = dir.path().join("remote.git");
    let remote = Remote::new(&url);
    let commit = remote.commit("api", &[("auto/api.yaml", AUTO)]);
    for n in 0..REPOSITORIES {
        // Each on a path of its own that names nothing: recorded invalid once, then polled.
        let path = format!("stacks-{n}");
        client
            .propose(&repository(&format!("r{n}"), &url, &path, false))
            .await
            .unwrap();
    }
    let counting = std::sync::Arc::new(Counting {
        fetch: Default::default(),
        count: Default::default(),
    });
    let mirrors =
        swarm_controller::gitops::Mirrors::with_fetch(dir.path().join("mirrors"), counting.clone());
    let ctx = super::pass::Context::with_mirrors(client.clone(), mirrors, dir.path().join("keys"));
    let watcher = tokio::spawn(super::watch(raft.clone(), 1, ctx));
    for n in 0..REPOSITORIES {
        until(&raft, &format!("r{n}"), "processed", |r| {
            r.status.processed.as_deref() == Some(commit.as_str())
        })
        .await;
    }
    let first = counting.count.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        first <= 3,
        "{first} fetches for the first round of {REPOSITORIES}"
    );
    // Three intervals of 1 s: 60 polls.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let polls = counting.count.load(std::sync::atomic::Ordering::SeqCst) - first;
    eprintln!(
        "{REPOSITORIES} repositories on one URL: {first} fetches for the first round, {polls} over 3 intervals"
    );
    assert!(
        (1..=6).contains(&polls),
        "{polls} fetches for {REPOSITORIES} repositories over 3 intervals"
    );
    watcher.abort();
}
