//! GitOps against one real daemon (issue 11, items 2, 3, 5 and 6): a bare repository on
//! disk is the remote, the test commits and pushes to it with git; the daemon's watcher
//! applies each commit. A pushed stack runs; a commit changing replicas scales it; invalid
//! YAML is recorded invalid and changes nothing; `git revert` goes back to the previous
//! spec; a service changed by hand is reported drifted, and healed in a repository that
//! asks for it. With three managers, the leader killed right after a sync was asked: the
//! commit is applied exactly once, by the new leader or before the old one died. Through
//! the daemon's webhook listener: a push signed with another secret is refused (401) and
//! fetches nothing, one signed with the repository's is applied at once; every state of
//! every Deployment reaches a `--notify` receiver, in order; `swarm apply` of a git-owned
//! stack is refused, and with `--force` applied and reported as drift.
//!
//! Each test's cluster has its own address pool (198.18.212.0/23, 198.18.214.0/23 and
//! 198.18.240.0/22, no other test uses them); the cluster, dropped, removes what the tasks
//! leave on the host.
//! The first test prints push → applied and push → converged times (`--nocapture`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, cluster, init_args, live_tasks, registry_for, text, wait_for};
use swarm_testkit::git;

fn stack(registry: &str, replicas: u32) -> String {
    format!(
        "services:\n  web:\n    image: {registry}/swarm/hello:1\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    deploy:\n      replicas: {replicas}\n"
    )
}

/// A bare repository `remote.git` in `dir` as the remote, and a work tree `work` (with a
/// `stacks/` directory) whose `origin` it is.
fn remote_and_clone(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let remote = dir.join("remote.git");
    let work = dir.join("work");
    std::fs::create_dir_all(work.join("stacks")).unwrap();
    git(dir, &["init", "-q", "--bare", remote.to_str().unwrap()]);
    git(&work, &["init", "-q"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    (remote, work)
}

/// Commits everything in `work` and pushes it; returns the new head.
fn push(work: &Path, message: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "HEAD:main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// `swarm ARGS` against node 0.
fn ok(cluster: &Cluster, args: &[&str]) -> String {
    ok_on(cluster, 0, args)
}

/// `swarm ARGS` against node `n`.
fn ok_on(cluster: &Cluster, n: usize, args: &[&str]) -> String {
    let out = common::swarm(&cluster.socket(n), args);
    assert!(
        out.status.success(),
        "`swarm {}`: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    json_on(cluster, 0, args)
}

fn json_on(cluster: &Cluster, n: usize, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok_on(cluster, n, args)).unwrap()
}

/// Repository `repo`'s newest Deployment, as `deploy ls --format json` shows it.
fn latest(cluster: &Cluster, repo: &str) -> Option<serde_json::Value> {
    deployments_on(cluster, 0, repo).into_iter().next()
}

/// Repository `repo`'s Deployments, newest first, as node `n` shows them.
fn deployments_on(cluster: &Cluster, n: usize, repo: &str) -> Vec<serde_json::Value> {
    json_on(
        cluster,
        n,
        &["deploy", "ls", "--repo", repo, "--format", "json"],
    )
    .as_array()
    .cloned()
    .unwrap_or_default()
}

/// How long until `repo`'s newest Deployment is of `commit` and reached `outcome`
/// (checked every 20 ms, at most 60 s).
fn time_to(cluster: &Cluster, repo: &str, commit: &str, outcome: &str, since: Instant) -> Duration {
    let deadline = since + Duration::from_secs(60);
    loop {
        let reached = latest(cluster, repo)
            .is_some_and(|d| d["commit"]["id"] == commit && d["outcome"]["state"] == outcome);
        if reached {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{repo}: {commit} not {outcome} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `repo`'s newest Deployment is of `commit` and reached `outcome`.
fn reaches(cluster: &Cluster, repo: &str, commit: &str, outcome: &str) -> serde_json::Value {
    wait_for(
        &format!("{repo}: {commit} {outcome}"),
        Duration::from_secs(90),
        || {
            latest(cluster, repo)
                .filter(|d| d["commit"]["id"] == commit && d["outcome"]["state"] == outcome)
        },
    )
}

/// Service `name`'s replicas in the cluster's state.
fn replicas(cluster: &Cluster, name: &str) -> Option<u64> {
    let state = json(cluster, &["state", "export"]);
    state["services"]
        .as_array()?
        .iter()
        .find(|s| s["spec"]["name"] == name)
        .and_then(|s| s["spec"]["replicas"].as_u64())
}

fn running(cluster: &Cluster, service: &str) -> usize {
    live_tasks(cluster, service)
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count()
}

#[test]
fn commits_are_applied_scaled_refused_when_invalid_reverted_and_drift_is_healed() {
    let Some(registry) = registry_for("gitops_e2e") else {
        return;
    };
    let registry = registry.addr();
    let cluster = cluster(1, &init_args("198.18.212.0/23", &[]));
    let dir = tempfile::tempdir().unwrap();
    let (remote, work) = remote_and_clone(dir.path());
    std::fs::create_dir_all(work.join("auto")).unwrap();
    let app = work.join("stacks/app.yaml");
    std::fs::write(&app, stack(&registry, 1)).unwrap();
    std::fs::write(work.join("auto/api.yaml"), stack(&registry, 1)).unwrap();
    let first = push(&work, "deploy the app");

    // Two repositories on one remote: `site` reports drift, `auto` heals it.
    let url = remote.to_str().unwrap();
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "site",
            url,
            "--path",
            "stacks",
            "--interval",
            "2s",
        ],
    );
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "auto",
            url,
            "--path",
            "auto",
            "--interval",
            "2s",
            "--self-heal",
        ],
    );

    // Pushed: applied, then converged once its task runs.
    let deployment = reaches(&cluster, "site", &first, "converged");
    assert_eq!(deployment["commit"]["summary"], "deploy the app");
    assert_eq!(running(&cluster, "app_web"), 1);
    reaches(&cluster, "auto", &first, "converged");
    let service_ls = ok(&cluster, &["service", "ls"]);
    assert!(service_ls.contains("site@"), "{service_ls}");

    // Replicas changed in git: scaled (`repo sync`, as a webhook does, fetches at once).
    std::fs::write(&app, stack(&registry, 10)).unwrap();
    let scaled = push(&work, "ten replicas");
    let pushed = Instant::now();
    ok(&cluster, &["repo", "sync", "site"]);
    let applied = time_to(&cluster, "site", &scaled, "applied", pushed);
    let converged = time_to(&cluster, "site", &scaled, "converged", pushed);
    eprintln!(
        "push + sync -> applied {:.0} ms, -> 10 replicas running (converged) {:.0} ms",
        applied.as_secs_f64() * 1e3,
        converged.as_secs_f64() * 1e3
    );
    assert_eq!(replicas(&cluster, "app_web"), Some(10));
    assert_eq!(running(&cluster, "app_web"), 10);

    // Invalid YAML: recorded invalid with its findings; what runs is untouched.
    std::fs::write(
        &app,
        stack(&registry, 10).replace("replicas: 10", "replicas: many"),
    )
    .unwrap();
    let broken = push(&work, "broken");
    // Found by the poll (every 2 s), not a sync.
    let polled = time_to(&cluster, "site", &broken, "invalid", Instant::now());
    eprintln!(
        "push -> processed by polling (interval 2 s) {:.0} ms",
        polled.as_secs_f64() * 1e3
    );
    let invalid = reaches(&cluster, "site", &broken, "invalid");
    let findings = invalid["outcome"]["findings"].as_array().unwrap();
    assert!(
        findings[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:stacks/app.yaml:6:", &broken[..12])),
        "{findings:?}"
    );
    let status = json(&cluster, &["repo", "inspect", "site", "--format", "json"]);
    assert_eq!(status["status"]["applied"], scaled.as_str(), "{status}");
    assert_eq!(replicas(&cluster, "app_web"), Some(10));
    assert_eq!(running(&cluster, "app_web"), 10);

    // `git revert` of both commits: the spec before them runs again.
    git(&work, &["revert", "--no-edit", "HEAD", "HEAD~1"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let reverted = git(&work, &["rev-parse", "HEAD"]);
    ok(&cluster, &["repo", "sync", "site"]);
    reaches(&cluster, "site", &reverted, "converged");
    assert_eq!(replicas(&cluster, "app_web"), Some(1));
    wait_for("one task running", Duration::from_secs(60), || {
        (running(&cluster, "app_web") == 1 && live_tasks(&cluster, "app_web").len() == 1)
            .then_some(())
    });

    // Changed by hand: reported as drift with the field that differs, not healed.
    ok(&cluster, &["service", "scale", "-d", "app_web=2"]);
    let drift = wait_for("drift reported", Duration::from_secs(30), || {
        let status = json(&cluster, &["repo", "inspect", "site", "--format", "json"]);
        let drift = status["status"]["drift"]["app_web"].clone();
        (!drift.is_null()).then_some(drift)
    });
    assert_eq!(drift[0]["before"], 1, "{drift}");
    assert_eq!(drift[0]["after"], 2, "{drift}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        replicas(&cluster, "app_web"),
        Some(2),
        "healed without --self-heal"
    );
    let service_ls = ok(&cluster, &["service", "ls"]);
    assert!(service_ls.contains("(drifted)"), "{service_ls}");

    // With --self-heal: git's spec comes back, recorded as a Deployment saying so. (`auto`
    // follows the same branch: each commit is a no-op there.)
    reaches(&cluster, "auto", &reverted, "no-op");
    ok(&cluster, &["service", "scale", "-d", "api_web=3"]);
    let healed = wait_for("healed", Duration::from_secs(30), || {
        latest(&cluster, "auto").filter(|d| d["trigger"] == "self-heal")
    });
    assert_eq!(healed["commit"]["id"], reverted.as_str());
    wait_for(
        "api_web back to one replica",
        Duration::from_secs(30),
        || (replicas(&cluster, "api_web") == Some(1)).then_some(()),
    );
    wait_for("the drift cleared", Duration::from_secs(30), || {
        let status = json(&cluster, &["repo", "inspect", "auto", "--format", "json"]);
        status["status"]["drift"]
            .as_object()
            .is_none_or(|d| d.is_empty())
            .then_some(())
    });
}

/// The leader of a three-manager cluster killed right after a sync was asked: the new
/// leader processes the commit, once.
#[test]
fn a_commit_is_applied_exactly_once_when_the_leader_dies_during_its_sync() {
    let Some(registry) = registry_for("gitops_e2e_failover") else {
        return;
    };
    let registry = registry.addr();
    let cluster = cluster(3, &init_args("198.18.240.0/22", &[]));
    cluster.join(1, "manager", 0);
    cluster.join(2, "manager", 0);
    let dir = tempfile::tempdir().unwrap();
    let (remote, work) = remote_and_clone(dir.path());
    let app = work.join("stacks/app.yaml");
    std::fs::write(&app, stack(&registry, 1)).unwrap();
    let first = push(&work, "deploy the app");
    // A long interval: only the sync (and a new leader's first pass) fetch.
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "site",
            remote.to_str().unwrap(),
            "--path",
            "stacks",
            "--interval",
            "10m",
        ],
    );
    reaches(&cluster, "site", &first, "converged");
    let leader = cluster.listing(0);
    assert!(
        common::node_line(&leader, "node1").is_some_and(|l| l.ends_with("Leader")),
        "{leader}"
    );

    std::fs::write(&app, stack(&registry, 2)).unwrap();
    let second = push(&work, "two replicas");
    ok_on(&cluster, 1, &["repo", "sync", "site"]);
    common::kill_hard(cluster.daemons[0].as_ref().unwrap());

    let processed = wait_for(
        "the new leader processed the commit",
        Duration::from_secs(60),
        || {
            let out = common::swarm(
                &cluster.socket(1),
                &["deploy", "ls", "--repo", "site", "--format", "json"],
            );
            let all: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
            all.iter()
                .any(|d| d["commit"]["id"] == second.as_str())
                .then_some(all)
        },
    );
    // Past the new leader's first passes: still one Deployment of the commit.
    std::thread::sleep(Duration::from_secs(3));
    let all = deployments_on(&cluster, 1, "site");
    let of_second = all
        .iter()
        .filter(|d| d["commit"]["id"] == second.as_str())
        .count();
    assert_eq!(of_second, 1, "{all:#?} (first seen: {processed:#?})");
    assert_eq!(all.len(), 2, "{all:#?}");
    let state = json_on(&cluster, 1, &["state", "export"]);
    let web = state["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["spec"]["name"] == "app_web")
        .unwrap()
        .clone();
    assert_eq!(web["spec"]["replicas"], 2);
}

/// A tiny notification receiver: every POST body (JSON) it is sent, answered 204.
struct Receiver {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (kept, stopped) = (bodies.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 8192];
                let body = loop {
                    let Ok(n) = stream.read(&mut buffer) else {
                        break None;
                    };
                    if n == 0 {
                        break None;
                    }
                    request.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length: usize = head
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break Some(body[..length].to_owned());
                    }
                };
                if let Some(body) = body {
                    if let Ok(value) = serde_json::from_str(&body) {
                        kept.lock().unwrap().push(value);
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        });
        Receiver { addr, bodies, stop }
    }

    /// The (deployment commit, state) pairs received, in order.
    fn states(&self) -> Vec<(String, String)> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["commit"]["id"].as_str().unwrap_or_default().to_owned(),
                    b["outcome"]["state"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// POSTs a push event for `branch` to the daemon's webhook listener, signed as GitHub signs
/// with `secret`; the response's status code.
fn webhook(addr: &str, repo: &str, secret: &str, branch: &str) -> u16 {
    use hmac::{Hmac, Mac};
    use std::io::{Read, Write};
    let body = format!(r#"{{"ref":"refs/heads/{branch}","after":"0000"}}"#);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /hooks/git/{repo} HTTP/1.1\r\nHost: {addr}\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={signature}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn webhooks_are_verified_notifications_sent_and_apply_force_drifts_from_git() {
    let Some(registry) = registry_for("gitops_e2e") else {
        return;
    };
    let registry = registry.addr();
    let hook = format!("127.0.0.1:{}", common::free_port());
    let cluster = common::cluster_with(
        1,
        &init_args("198.18.214.0/23", &[]),
        &["--webhook-addr", &hook],
    );
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (remote, work) = remote_and_clone(dir.path());
    let app = work.join("stacks/app.yaml");
    std::fs::write(&app, stack(&registry, 1)).unwrap();
    let first = push(&work, "deploy the app");
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "s3cret").unwrap();
    let notify = format!("http://{}/deployments", receiver.addr);
    // An hour's interval: only the webhook brings the next commit in time.
    ok(
        &cluster,
        &[
            "repo",
            "add",
            "app",
            remote.to_str().unwrap(),
            "--path",
            "stacks",
            "--interval",
            "1h",
            "--webhook-secret-file",
            secret_file.to_str().unwrap(),
            "--notify",
            &notify,
        ],
    );
    reaches(&cluster, "app", &first, "converged");

    // A push announced with the wrong secret: refused, nothing fetched.
    std::fs::write(&app, stack(&registry, 2)).unwrap();
    let second = push(&work, "two replicas");
    assert_eq!(webhook(&hook, "app", "guess", "main"), 401);
    // A push to another branch: ignored.
    assert_eq!(webhook(&hook, "app", "s3cret", "dev"), 200);
    std::thread::sleep(Duration::from_secs(2));
    let repos = json(&cluster, &["repo", "ls", "--format", "json"]);
    assert_eq!(repos[0]["status"]["fetched"]["commit"], first, "{repos}");
    assert_eq!(latest(&cluster, "app").unwrap()["commit"]["id"], first);
    assert!(
        cluster.log(0).contains("webhook refused"),
        "the refusal is logged"
    );

    // Signed with the repository's secret: fetched and applied at once.
    let pushed = Instant::now();
    assert_eq!(webhook(&hook, "app", "s3cret", "main"), 202);
    let deployment = reaches(&cluster, "app", &second, "converged");
    assert_eq!(deployment["trigger"], "webhook");
    assert!(pushed.elapsed() < Duration::from_secs(30));
    assert_eq!(replicas(&cluster, "app_web"), Some(2));

    // Each state of each Deployment reached the receiver, in order.
    let expected = [
        (first.clone(), "applied".to_owned()),
        (first.clone(), "converged".to_owned()),
        (second.clone(), "applied".to_owned()),
        (second.clone(), "converged".to_owned()),
    ];
    wait_for("the notifications", Duration::from_secs(20), || {
        (receiver.states() == expected).then_some(())
    });

    // `swarm apply` of the stack from a checkout: refused, the stack is git's; with
    // --force applied, and the service drifts from git.
    let apply = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .arg("apply")
            .args(args)
            .current_dir(&work)
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(0).display()),
            )
            .output()
            .unwrap()
    };
    std::fs::write(&app, stack(&registry, 3)).unwrap();
    let refused = apply(&["--auto-approve", "stacks/app.yaml"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(
        text(&refused.stderr).contains("managed by repository app"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(replicas(&cluster, "app_web"), Some(2));
    let forced = apply(&["--auto-approve", "--force", "stacks/app.yaml"]);
    assert_eq!(forced.status.code(), Some(2), "{}", text(&forced.stderr));
    assert_eq!(replicas(&cluster, "app_web"), Some(3));
    let drift = wait_for("the drift recorded", Duration::from_secs(20), || {
        let repos = json(&cluster, &["repo", "ls", "--format", "json"]);
        let drift = repos[0]["status"]["drift"]["app_web"].clone();
        drift.is_array().then_some(drift)
    });
    assert!(drift.to_string().contains("replicas"), "{drift}");

    // The listings' quiet and filtered forms, as Docker users script them.
    assert_eq!(ok(&cluster, &["stack", "ls", "-q"]), "app\n");
    assert_eq!(ok(&cluster, &["node", "ls", "-q"]).lines().count(), 1);
    let ids = ok(&cluster, &["service", "ls", "-q", "--filter", "name=app_"]);
    assert_eq!(ids.lines().count(), 1, "{ids}");
    let none = ok(
        &cluster,
        &[
            "service",
            "ls",
            "-q",
            "-f",
            "name=app_",
            "-f",
            "mode=global",
        ],
    );
    assert_eq!(none, "");
    ok(&cluster, &["repo", "rm", "app", "--prune"]);
}
