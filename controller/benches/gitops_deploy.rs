//! What the GitOps watcher costs once a fetch is done (issue 11): a repository of 1,000
//! services in 20 files whose new commit changes one file (50 services: replicas 3 → 4),
//! planned against a store that runs the previous commit, through the repository's load
//! cache, and applied to the store as the one `Deploy` command the leader proposes
//! (target ≤ 200 ms). Commits A and B alternate, so every run is a real change of the one
//! file (its load is never cached) over a store holding all 1,000 services.
//!
//! Then an unchanged poll as the watcher makes it: a fetch into a current mirror, and the
//! read of the repository's record that finds the head unchanged (target ≤ 5 ms of CPU).
//!
//!     cargo bench -p swarm-controller --bench gitops_deploy

#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use harness::{measure, report};
use swarm_api::gitops::{DeploymentOutcome, Repository, RepositorySecrets, Trigger};
use swarm_api::store::{AddressPool, Cluster, Command, Outcome};
use swarm_controller::gitops::{Credentials, LoadCache, Mirrors, Target, decide};
use swarm_controller::store::Store;

const FILES: usize = 20;
const SERVICES_PER_FILE: usize = 50;
const CHANGED_FILE: usize = 7;
const RUNS: usize = 101;

fn stack_file(file: usize, replicas: u64) -> String {
    let mut out = String::from("services:\n");
    for service in 0..SERVICES_PER_FILE {
        out.push_str(&format!(
            "  svc{file}-{service}:\n    image: registry.example.org/app{service}:1.{file}\n    environment:\n      MODE: production\n    deploy:\n      replicas: {replicas}\n"
        ));
    }
    out
}

/// Commits the 20 files (file `CHANGED_FILE` with `replicas`) on `main` of the bare `git`.
fn commit(git: &git2::Repository, replicas: u64, message: &str) -> String {
    let mut stacks = git.treebuilder(None).unwrap();
    for file in 0..FILES {
        let replicas = if file == CHANGED_FILE { replicas } else { 3 };
        let blob = git.blob(stack_file(file, replicas).as_bytes()).unwrap();
        stacks
            .insert(format!("app{file}.yaml"), blob, 0o100644)
            .unwrap();
    }
    let mut root = git.treebuilder(None).unwrap();
    root.insert("stacks", stacks.write().unwrap(), 0o040000)
        .unwrap();
    let tree = git.find_tree(root.write().unwrap()).unwrap();
    let signature = git2::Signature::now("bench", "bench@example.org").unwrap();
    let parent = git
        .find_reference("refs/heads/main")
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    git.commit(
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

fn repository(url: &Path) -> Repository {
    Repository {
        name: "app".into(),
        url: format!("file://{}", url.display()),
        branch: "main".into(),
        path: "stacks".into(),
        interval_ms: 15_000,
        self_heal: false,
        prune: false,
        notify: None,
        created_at: 1,
    }
}

/// (user + system CPU of this process) in ms, from /proc/self/stat (10 ms ticks:
/// meaningful over many runs only).
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields[11] + fields[12]) * 10.0
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.git");
    let git = git2::Repository::init_bare(&remote).unwrap();
    let commits = [
        commit(&git, 3, "three replicas"),
        commit(&git, 4, "app7: four replicas"),
    ];
    let repository = repository(&remote);
    let mirrors = Mirrors::new(dir.path().join("mirrors"));
    let mirror = mirrors.mirror(&repository.url);
    let head = mirror.fetch("main", &Credentials::Anonymous).unwrap();
    assert_eq!(head, commits[1]);
    let repo = mirror.open().unwrap();

    let mut store = Store::default();
    let mut index = 0;
    let mut apply = |store: &mut Store, command: Command| {
        index += 1;
        store.apply_command(index, command)
    };
    apply(
        &mut store,
        Command::InitCluster(Cluster {
            id: "bench".into(),
            created_at: 0,
            heartbeat_period_ms: 1000,
            missed_heartbeats_for_down: 3,
            certificate_validity_ms: 1,
            worker_token_secret: String::new(),
            manager_token_secret: String::new(),
            address_pool: AddressPool::default(),
        }),
    );
    apply(
        &mut store,
        Command::AddRepository {
            repository: repository.clone(),
            secrets: RepositorySecrets::default(),
        },
    );
    let cache = LoadCache::new();
    // What the leader does with one commit: read the state, plan, propose (here: apply).
    let mut deploy = |store: &mut Store, commit: &str| {
        let status = &store.data().repositories["app"].status;
        let owned: BTreeSet<String> = status.stacks.clone();
        let state = store.export();
        let target = Target {
            repository: &repository,
            owned: &owned,
            state: &state,
        };
        let decision = decide(&repo, commit, &target, &cache, Trigger::Poll, 1).unwrap();
        let actions = decision.deployment.plan.actions.len();
        let planned = Instant::now();
        let outcome = apply(store, decision.command());
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
        (actions, planned)
    };
    let first = Instant::now();
    let (created, _) = deploy(&mut store, &commits[0]);
    println!(
        "first commit: {created} actions ({} services) planned and applied in {:.1} ms",
        store.export().services.len(),
        first.elapsed().as_secs_f64() * 1e3
    );

    let mut turn = 0;
    let mut plan_ms = Vec::new();
    let mut apply_ms = Vec::new();
    let total = measure(RUNS, 2, || {
        turn += 1;
        let start = Instant::now();
        let (actions, planned) = deploy(&mut store, &commits[turn % 2]);
        plan_ms.push((planned - start).as_secs_f64() * 1e3);
        apply_ms.push(planned.elapsed().as_secs_f64() * 1e3);
        assert_eq!(actions, SERVICES_PER_FILE);
    });
    let last = store.data().repositories["app"].deployments.last().unwrap();
    assert_eq!(last.outcome, DeploymentOutcome::Applied);
    report("one file of 20 changed: plan+apply", Some(200.0), &total);
    for (name, mut samples) in [
        ("  of which plan (cached)", plan_ms),
        ("  of which store apply", apply_ms),
    ] {
        samples.sort_by(f64::total_cmp);
        println!(
            "{name:<34} median {:>8.2} ms",
            harness::quantile(&samples, 0.5)
        );
    }
    let (hits, misses) = cache.counts();
    println!("{:<34} {hits} files from the cache, {misses} parsed", "");

    // An unchanged poll: the fetch, then the record's head compared (nothing written).
    let processed = store.data().repositories["app"].status.processed.clone();
    let before = cpu_ms();
    let poll = measure(RUNS * 2, 3, || {
        let fetched = mirror.fetch("main", &Credentials::Anonymous).unwrap();
        let record = store.data().repositories.get("app").unwrap();
        let status = record.status.clone();
        assert_eq!(status.processed, processed);
        fetched == head
    });
    let polls = poll.samples.len() + 3;
    report("unchanged poll: fetch + compare", Some(5.0), &poll);
    println!(
        "{:<34} cpu    {:>8.2} ms per poll ({polls} polls)",
        "",
        (cpu_ms() - before) / polls as f64
    );
}
