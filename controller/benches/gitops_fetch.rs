//! What an unchanged repository costs the leader per poll (issue 11: ≤ 5 ms of CPU): a
//! fetch into a mirror that is already current, from a file:// remote of 20 stack files,
//! beside `git fetch` (the git CLI) into the same mirror in the same run; and 100 callers
//! polling one URL at once, then one after another within an interval (argo-cd#9017: one
//! fetch per URL, not one per repository).
//!
//!     cargo bench -p swarm-controller --bench gitops_fetch
//!
//! Then a new commit changes one of the 20 files, and the stacks at the two commits are
//! loaded and planned in turn (against an empty cluster: 1,000 creates, more work than
//! the one update the watcher would plan): parsing every file, or only the changed one
//! (`gitops::LoadCache`).
//!
//! Wall time per poll is the harness's median; CPU time per poll is the process's user +
//! system time (for the git CLI, its children's) over all runs, divided by the runs.

#[allow(dead_code)]
#[path = "support/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use harness::{measure, report};
use swarm_controller::deploy::{Current, StackSource, Verdict, plan_paths};
use swarm_controller::gitops::{CachedRevision, Credentials, LoadCache, Mirrors};
use swarm_testkit::git;

const FILES: usize = 20;
const SERVICES_PER_FILE: usize = 50;
const RUNS: usize = 201;
const CALLERS: usize = 100;

fn stack_file(file: usize) -> String {
    let mut out = String::from("services:\n");
    for service in 0..SERVICES_PER_FILE {
        out.push_str(&format!(
            "  svc{file}-{service}:\n    image: registry.example.org/app{service}:1.{file}\n    environment:\n      MODE: production\n    deploy:\n      replicas: 3\n"
        ));
    }
    out
}

/// (user + system CPU of this process, of its waited-for children) in ms, from
/// /proc/self/stat (clock ticks of 10 ms: meaningful over many runs only).
fn cpu_ms() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<f64> = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14–17 of the line, 12–15 after the name.
    let tick_ms = 10.0;
    (
        (fields[11] + fields[12]) * tick_ms,
        (fields[13] + fields[14]) * tick_ms,
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote.git");
    let work = dir.path().join("work");
    std::fs::create_dir_all(work.join("stacks")).unwrap();
    git(
        dir.path(),
        &["init", "-q", "--bare", remote.to_str().unwrap()],
    );
    git(&work, &["init", "-q"]);
    for file in 0..FILES {
        std::fs::write(
            work.join(format!("stacks/app{file}.yaml")),
            stack_file(file),
        )
        .unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "20 stack files"]);
    git(
        &work,
        &["push", "-q", remote.to_str().unwrap(), "HEAD:main"],
    );

    let url = format!("file://{}", remote.display());
    let mirrors = Arc::new(Mirrors::new(dir.path().join("mirrors")));
    let mirror = mirrors.mirror(&url);
    let first = Instant::now();
    let head = mirror.fetch("main", &Credentials::Anonymous).unwrap();
    println!(
        "first fetch (20 files, {} services): {:.2} ms, head {head}",
        FILES * SERVICES_PER_FILE,
        first.elapsed().as_secs_f64() * 1e3
    );

    let (cpu_before, _) = cpu_ms();
    let swarm = measure(RUNS, 3, || {
        let fetched = mirror.fetch("main", &Credentials::Anonymous).unwrap();
        assert_eq!(fetched, head);
    });
    let (cpu_after, _) = cpu_ms();
    let runs = swarm.samples.len() + 3;
    report("swarm fetch, mirror current", Some(5.0), &swarm);
    println!(
        "{:<34} cpu    {:>8.2} ms per poll ({runs} polls)",
        "",
        (cpu_after - cpu_before) / runs as f64
    );

    let mirror_dir = mirror.path().to_str().unwrap().to_owned();
    let (_, children_before) = cpu_ms();
    let cli = measure(RUNS, 3, || {
        git(
            dir.path(),
            &[
                "--git-dir",
                &mirror_dir,
                "fetch",
                "-q",
                "--prune",
                "--no-tags",
                &url,
                "+refs/heads/*:refs/heads/*",
            ],
        )
    });
    let (_, children_after) = cpu_ms();
    let runs = cli.samples.len() + 3;
    report("git fetch (CLI), mirror current", None, &cli);
    println!(
        "{:<34} cpu    {:>8.2} ms per poll ({runs} polls, the git processes' own)",
        "",
        (children_after - children_before) / runs as f64
    );

    // 100 repository objects on one URL, polled at the same moment.
    let before = mirror.fetches();
    let barrier = Arc::new(Barrier::new(CALLERS));
    let started = Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (mirrors, barrier, url) = (mirrors.clone(), barrier.clone(), url.clone());
            std::thread::spawn(move || {
                let mirror = mirrors.mirror(&url);
                barrier.wait();
                mirror.fetch("main", &Credentials::Anonymous).unwrap()
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap(), head);
    }
    println!(
        "{CALLERS} callers polling one URL at once: {} fetches, {:.2} ms in all",
        mirror.fetches() - before,
        started.elapsed().as_secs_f64() * 1e3
    );

    // 100 repository objects on one URL, each polled at its own moment of one interval.
    let interval_start = Instant::now();
    let before = mirror.fetches();
    for _ in 0..CALLERS {
        let polled = mirrors
            .mirror(&url)
            .fetch_since("main", &Credentials::Anonymous, interval_start)
            .unwrap();
        assert_eq!(polled, head);
    }
    println!(
        "{CALLERS} callers polling one URL in turn in an interval: {} fetches, {:.2} ms in all",
        mirror.fetches() - before,
        interval_start.elapsed().as_secs_f64() * 1e3
    );

    // A one-file change: the stacks at the two commits, in turn.
    std::fs::write(
        work.join("stacks/app7.yaml"),
        stack_file(7).replace("replicas: 3", "replicas: 4"),
    )
    .unwrap();
    git(&work, &["commit", "-q", "-am", "app7: four replicas"]);
    git(
        &work,
        &["push", "-q", remote.to_str().unwrap(), "HEAD:main"],
    );
    let changed = mirror.fetch("main", &Credentials::Anonymous).unwrap();
    let repo = mirror.open().unwrap();
    let commits = [repo.commit(&head).unwrap(), repo.commit(&changed).unwrap()];
    let paths = [PathBuf::from("stacks")];
    let no_env = |_: &str| None;
    let plan = |source: &dyn StackSource| match plan_paths(&paths, source, Current::Empty, &no_env)
        .unwrap()
        .verdict
    {
        Verdict::Planned(plan) => plan.actions.len(),
        other => panic!("{other:?}"),
    };
    let mut turn = 0;
    let parsed = measure(21, 2, || {
        turn += 1;
        plan(&commits[turn % 2])
    });
    report("load + plan at a commit, parsed", Some(200.0), &parsed);
    let cache = LoadCache::new();
    let cached = measure(21, 2, || {
        turn += 1;
        plan(&CachedRevision {
            revision: &commits[turn % 2],
            cache: &cache,
        })
    });
    report("load + plan at a commit, cached", Some(200.0), &cached);
    let (hits, misses) = cache.counts();
    println!("{:<34} {hits} files from the cache, {misses} parsed", "");
}
