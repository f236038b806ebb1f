//! Mirrors over real repositories made here: a bare "remote" on disk, commits pushed to it
//! with the git CLI, fetched by the mirror with git2.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;

use super::*;
use crate::deploy::{Current, Verdict, plan_paths};
use swarm_testkit::git;

const WEB: &str = "services:\n  web:\n    image: nginx:1.27\n    deploy:\n      replicas: 2\n";

/// A bare remote and a clone of it to commit in.
struct Remote {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    mirrors: PathBuf,
}

impl Remote {
    fn new() -> Remote {
        let dir = tempfile::tempdir().unwrap();
        let bare = dir.path().join("remote.git");
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        git(
            dir.path(),
            &["init", "-q", "--bare", bare.to_str().unwrap()],
        );
        git(&work, &["init", "-q"]);
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        Remote {
            bare,
            work,
            mirrors: dir.path().join("mirrors"),
            _dir: dir,
        }
    }

    /// Writes `files` (path, text; an empty text deletes), commits and pushes `branch`.
    fn commit(&self, branch: &str, message: &str, files: &[(&str, &str)]) -> String {
        for (path, text) in files {
            let path = self.work.join(path);
            if text.is_empty() {
                std::fs::remove_file(path).unwrap();
            } else {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
        }
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(
            &self.work,
            &["push", "-q", "--force", "origin", &format!("HEAD:{branch}")],
        );
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        self.bare.to_string_lossy().into_owned()
    }
}

fn anonymous() -> Credentials {
    Credentials::Anonymous
}

#[test]
fn a_fetch_yields_the_branch_head_and_a_force_push_the_new_one() {
    let remote = Remote::new();
    let first = remote.commit("main", "web: two replicas", &[("stacks/web.yaml", WEB)]);
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&remote.url());
    assert_eq!(mirror.fetch("main", &anonymous()).unwrap(), first);

    let second = remote.commit(
        "main",
        "web: three replicas",
        &[(
            "stacks/web.yaml",
            &WEB.replace("replicas: 2", "replicas: 3"),
        )],
    );
    assert_eq!(mirror.fetch("main", &anonymous()).unwrap(), second);

    // History rewritten: the remote's main no longer contains `second`.
    git(&remote.work, &["reset", "-q", "--hard", &first]);
    let rewritten = remote.commit(
        "main",
        "web: four replicas",
        &[(
            "stacks/web.yaml",
            &WEB.replace("replicas: 2", "replicas: 4"),
        )],
    );
    assert_eq!(mirror.fetch("main", &anonymous()).unwrap(), rewritten);
    assert_eq!(mirror.fetches(), 3);
}

#[test]
fn a_file_url_and_the_path_share_one_mirror_and_deleted_branches_go() {
    let remote = Remote::new();
    let main = remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    let staging = remote.commit("staging", "staging", &[("stacks/extra.yaml", WEB)]);
    let mirrors = Mirrors::new(&remote.mirrors);
    let by_url = mirrors.mirror(&format!("file://{}", remote.url()));
    let by_path = mirrors.mirror(&format!("{}/", remote.url()));
    assert!(Arc::ptr_eq(&by_url, &by_path));
    let heads = by_url
        .fetch_all(&anonymous(), std::time::Instant::now())
        .unwrap();
    assert_eq!(heads.get("staging"), Some(&staging));
    assert_eq!(heads.get("main"), Some(&main));

    git(&remote.bare, &["branch", "-D", "staging"]);
    let heads = by_path
        .fetch_all(&anonymous(), std::time::Instant::now())
        .unwrap();
    assert_eq!(heads.keys().collect::<Vec<_>>(), ["main"]);
}

#[test]
fn a_missing_branch_names_the_branches_there_are() {
    let remote = Remote::new();
    remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    remote.commit(
        "staging",
        "second",
        &[("stacks/web.yaml", WEB.replace("2", "5").as_str())],
    );
    let mirrors = Mirrors::new(&remote.mirrors);
    let err = mirrors
        .mirror(&remote.url())
        .fetch("mian", &anonymous())
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::MissingBranch {
            url: remote.url(),
            branch: "mian".into(),
            existing: vec!["main".into(), "staging".into()],
        }
    );
}

#[test]
fn a_path_that_is_not_a_repository_says_so() {
    let remote = Remote::new();
    let plain = remote.mirrors.parent().unwrap().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let mirrors = Mirrors::new(&remote.mirrors);
    for path in [plain.clone(), plain.join("absent")] {
        let err = mirrors
            .mirror(path.to_str().unwrap())
            .fetch("main", &anonymous())
            .unwrap_err();
        assert!(
            matches!(err, FetchError::NotARepository { .. }),
            "{path:?}: {err:?}"
        );
        assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");
    }
}

#[test]
fn an_unreachable_remote_says_so() {
    let remote = Remote::new();
    let mirrors = Mirrors::new(&remote.mirrors);
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    for url in [
        "https://127.0.0.1:1/acme/stacks.git",
        "ssh://git@127.0.0.1:1/acme/stacks.git",
    ] {
        let err = mirrors.mirror(url).fetch("main", &anonymous()).unwrap_err();
        assert!(
            matches!(err, FetchError::Unreachable { .. }),
            "{url}: {err:?}"
        );
        assert!(
            err.to_string().starts_with(&format!("cannot reach {url}")),
            "{err}"
        );
    }
}

#[test]
fn a_fetch_past_the_size_bound_stops_with_a_clear_error() {
    let remote = Remote::new();
    let big: String = (0..20_000)
        .map(|i| format!("# line {i} of padding\n"))
        .collect();
    remote.commit(
        "main",
        "big",
        &[("stacks/web.yaml", &format!("{WEB}{big}"))],
    );
    let mirrors = Mirrors::with_fetch(
        &remote.mirrors,
        Arc::new(Git2Fetch {
            max_bytes: 1024,
            ..Git2Fetch::default()
        }),
    );
    let err = mirrors
        .mirror(&remote.url())
        .fetch("main", &anonymous())
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::TooLarge {
            url: remote.url(),
            bound: 1024
        }
    );
}

#[test]
fn a_fetch_past_its_deadline_stops_with_a_clear_error() {
    let remote = Remote::new();
    remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    let mirrors = Mirrors::with_fetch(
        &remote.mirrors,
        Arc::new(Git2Fetch {
            deadline: std::time::Duration::ZERO,
            ..Git2Fetch::default()
        }),
    );
    let err = mirrors
        .mirror(&remote.url())
        .fetch("main", &anonymous())
        .unwrap_err();
    assert_eq!(
        err,
        FetchError::TimedOut {
            url: remote.url(),
            limit: std::time::Duration::ZERO
        }
    );
    // The next fetch, within bounds, finds the mirror usable.
    let mirrors = Mirrors::new(&remote.mirrors);
    assert!(
        mirrors
            .mirror(&remote.url())
            .fetch("main", &anonymous())
            .is_ok()
    );
}

#[test]
fn callers_of_one_url_share_its_fetches() {
    let remote = Remote::new();
    let head = remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    let mirrors = Arc::new(Mirrors::new(&remote.mirrors));
    const CALLERS: usize = 8;
    let barrier = Arc::new(Barrier::new(CALLERS));
    // The interval these polls belong to began before any of them.
    let interval_start = std::time::Instant::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|i| {
            let mirrors = mirrors.clone();
            let barrier = barrier.clone();
            // Two spellings of the URL, as two repository objects might have it.
            let url = if i % 2 == 0 {
                remote.url()
            } else {
                format!("file://{}", remote.url())
            };
            thread::spawn(move || {
                let mirror = mirrors.mirror(&url);
                barrier.wait();
                mirror.fetch_since("main", &Credentials::Anonymous, interval_start)
            })
        })
        .collect();
    for caller in callers {
        assert_eq!(caller.join().unwrap().unwrap(), head);
    }
    assert_eq!(mirrors.mirror(&remote.url()).fetches(), 1);
}

#[tokio::test]
async fn the_watcher_fetches_from_tokio() {
    let remote = Remote::new();
    let head = remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&remote.url());
    let now = std::time::Instant::now();
    let (a, b) = tokio::join!(
        mirror.clone().fetch_async("main".into(), anonymous(), now),
        mirror.clone().fetch_async("main".into(), anonymous(), now),
    );
    assert_eq!(a.unwrap(), head);
    assert_eq!(b.unwrap(), head);
    // Both started at `now` or after: at most the first, and one shared by the second.
    assert!((1..=2).contains(&mirror.fetches()));
    // A poll later in the interval takes the interval's fetch; a push asks for a new one.
    let pushed = remote.commit("main", "second", &[("stacks/api.yaml", WEB)]);
    let fetches = mirror.fetches();
    let polled = mirror.clone().fetch_async("main".into(), anonymous(), now);
    assert_eq!(polled.await.unwrap(), head);
    assert_eq!(mirror.fetches(), fetches);
    let hooked = mirror
        .clone()
        .fetch_async("main".into(), anonymous(), std::time::Instant::now());
    assert_eq!(hooked.await.unwrap(), pushed);
    assert_eq!(mirror.fetches(), fetches + 1);
}

#[test]
fn stacks_at_a_fetched_commit_plan_as_in_a_clone() {
    let remote = Remote::new();
    remote.commit("main", "web", &[("stacks/web.yaml", WEB)]);
    let head = remote.commit(
        "main",
        "api and a broken file\n\nThe body of the message.",
        &[
            ("stacks/api.yaml", &WEB.replace("web:", "api:")),
            (
                "stacks/broken.yaml",
                "services:\n  db:\n    image: 12\n    replicas: x\n",
            ),
        ],
    );
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&remote.url());
    assert_eq!(mirror.fetch("main", &anonymous()).unwrap(), head);
    let mirrored = mirror.open().unwrap();
    let at_mirror = mirrored.commit(&head).unwrap();

    let clone = Repo::discover(&remote.work).unwrap();
    let at_clone = clone.revision("HEAD").unwrap();

    let env = |_: &str| None;
    let paths = [PathBuf::from("stacks")];
    let from_mirror = plan_paths(&paths, &at_mirror, Current::Empty, &env).unwrap();
    let from_clone = plan_paths(&paths, &at_clone, Current::Empty, &env).unwrap();
    // The broken file makes both invalid, with the same findings named by each revision.
    assert!(
        matches!(from_mirror.verdict, Verdict::Invalid(1)),
        "{:?}",
        from_mirror.verdict
    );
    assert!(matches!(from_clone.verdict, Verdict::Invalid(1)));
    let findings = |outcome: &crate::deploy::Outcome, prefix: &str| -> Vec<String> {
        outcome
            .desired
            .files
            .iter()
            .flat_map(|file| &file.findings)
            .map(|finding| {
                let text = finding.to_string();
                text.strip_prefix(prefix)
                    .unwrap_or_else(|| panic!("{text}"))
                    .to_owned()
            })
            .collect()
    };
    let short = &head[..12];
    let mirror_findings = findings(&from_mirror, &format!("{short}:stacks/broken.yaml"));
    assert!(!mirror_findings.is_empty());
    assert_eq!(
        mirror_findings,
        findings(&from_clone, "HEAD:stacks/broken.yaml")
    );

    // Without the broken file, both plan the same two services from the same sources.
    let fixed = remote.commit(
        "main",
        "drop the broken file",
        &[("stacks/broken.yaml", "")],
    );
    assert_eq!(mirror.fetch("main", &anonymous()).unwrap(), fixed);
    let mirrored = mirror.open().unwrap();
    let at_mirror = mirrored.commit(&fixed).unwrap();
    let at_clone = clone.revision("HEAD").unwrap();
    let planned = |desired: &dyn crate::deploy::StackSource| match plan_paths(
        &paths,
        desired,
        Current::Empty,
        &env,
    )
    .unwrap()
    .verdict
    {
        Verdict::Planned(plan) => serde_json::to_value(plan).unwrap(),
        other => panic!("{other:?}"),
    };
    let plan = planned(&at_mirror);
    assert_eq!(plan, planned(&at_clone));
    let text = plan.to_string();
    for expected in ["stacks/api.yaml", "stacks/web.yaml", &fixed] {
        assert!(text.contains(expected), "{expected} not in {text}");
    }

    // What a Deployment records.
    let info = mirrored.commit(&head).unwrap().info().unwrap();
    assert_eq!(info.id, head);
    assert_eq!(info.author_name, "Ada Lovelace");
    assert_eq!(info.author_email, "ada@example.org");
    assert_eq!(info.summary, "api and a broken file");
    let committed: i64 = git(&remote.work, &["log", "-1", "--format=%ct", &head])
        .parse()
        .unwrap();
    assert_eq!(info.time, committed);
}

#[test]
fn a_bare_repository_reads_paths_from_its_root_only() {
    let remote = Remote::new();
    let head = remote.commit("main", "web", &[("stacks/web.yaml", WEB)]);
    let repo = Repo::open_bare(&remote.bare).unwrap();
    assert_eq!(
        repo.relative(Path::new("./stacks/../stacks/web.yaml"))
            .unwrap(),
        Path::new("stacks/web.yaml")
    );
    assert!(matches!(
        repo.relative(Path::new("../outside.yaml")),
        Err(GitError::OutsideRepository { .. })
    ));
    let revision = repo.commit(&head).unwrap();
    use crate::deploy::StackSource;
    assert_eq!(
        revision.display(Path::new("stacks/web.yaml")),
        format!("{}:stacks/web.yaml", &head[..12])
    );
    assert_eq!(
        revision.source_name(Path::new("stacks/web.yaml")),
        "stacks/web.yaml"
    );
    // A relative bind is from the repository's root taken as `/`, whatever the daemon's
    // directory: every manager's watcher plans it alike.
    let bind = "services:\n  web:\n    image: nginx\n    volumes: [./data:/data]\n";
    let head = remote.commit("main", "bind", &[("stacks/web.yaml", bind)]);
    let revision = repo.commit(&head).unwrap();
    let loaded = revision.load(Path::new("stacks/web.yaml"), &|_| None);
    let mounts = &loaded.stack.expect("a stack").services[0]
        .task
        .container
        .mounts;
    assert_eq!(mounts[0].source.as_deref(), Some("/stacks/data"));
    // `discover` still refuses a bare repository: the CLI has no work tree to read there.
    assert!(matches!(
        Repo::discover(&remote.bare),
        Err(GitError::Bare { .. })
    ));
}

#[test]
fn an_unchanged_file_at_a_new_commit_is_not_parsed_again() {
    const API: &str = "services:\n  api:\n    image: nginx:${TAG}\n    configs: [nginx]\nconfigs:\n  nginx:\n    file: ./nginx.conf\n";
    let remote = Remote::new();
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&remote.url());
    let cache = LoadCache::new();
    let paths = [PathBuf::from("stacks")];
    let no_env = |_: &str| None;
    // Plans the head with the cache, checks it equals the plan without, returns it.
    let plan_head = |env: &dyn Fn(&str) -> Option<String>| -> serde_json::Value {
        let head = mirror.fetch("main", &anonymous()).unwrap();
        let repo = mirror.open().unwrap();
        let revision = repo.commit(&head).unwrap();
        let cached = CachedRevision {
            revision: &revision,
            cache: &cache,
        };
        let plan = |source: &dyn crate::deploy::StackSource| match plan_paths(
            &paths,
            source,
            Current::Empty,
            env,
        )
        .unwrap()
        .verdict
        {
            Verdict::Planned(plan) => serde_json::to_value(plan).unwrap(),
            other => panic!("{other:?}"),
        };
        let with_cache = plan(&cached);
        assert_eq!(with_cache, plan(&revision));
        with_cache
    };

    remote.commit(
        "main",
        "two stacks",
        &[
            ("stacks/web.yaml", WEB),
            ("stacks/api.yaml", API),
            ("stacks/.env", "TAG=1.27\n"),
            ("stacks/nginx.conf", "worker_processes 1;\n"),
        ],
    );
    plan_head(&no_env);
    assert_eq!(cache.counts(), (0, 2));

    // One file changed: only it is parsed.
    remote.commit(
        "main",
        "web: three",
        &[(
            "stacks/web.yaml",
            &WEB.replace("replicas: 2", "replicas: 3"),
        )],
    );
    let plan = plan_head(&no_env);
    assert_eq!(cache.counts(), (1, 3));
    assert!(plan.to_string().contains("nginx:1.27"), "{plan}");

    // What a file reads counts as the file: its config, its .env.
    remote.commit(
        "main",
        "nginx: two workers",
        &[("stacks/nginx.conf", "worker_processes 2;\n")],
    );
    plan_head(&no_env);
    assert_eq!(cache.counts(), (2, 4), "the api stack reads nginx.conf");
    remote.commit("main", "tag 1.28", &[("stacks/.env", "TAG=1.28\n")]);
    let plan = plan_head(&no_env);
    assert_eq!(cache.counts(), (2, 6), "both stacks read the .env");
    assert!(plan.to_string().contains("nginx:1.28"), "{plan}");

    // So does the environment a load looked a variable up in.
    let tag = |name: &str| (name == "TAG").then(|| "1.29".to_owned());
    let plan = plan_head(&tag);
    assert!(plan.to_string().contains("nginx:1.29"), "{plan}");
    assert_eq!(
        cache.counts().0,
        2 + 1,
        "only web.yaml, which reads no variable, is kept"
    );
}

/// An http server on loopback that refuses every request with 401 (Basic), recording the
/// `Authorization` header of each: where libgit2 asks the credential callback.
struct Refusing {
    url: String,
    authorizations: Arc<std::sync::Mutex<Vec<Option<String>>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    server: Option<thread::JoinHandle<()>>,
}

impl Refusing {
    fn start() -> Refusing {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::Ordering;
        use std::time::{Duration, Instant};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/acme/stacks.git", listener.local_addr().unwrap());
        let authorizations = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = {
            let (authorizations, stop) = (authorizations.clone(), stop.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    let Ok((stream, _)) = listener.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    stream.set_nonblocking(false).unwrap();
                    stream
                        .set_read_timeout(Some(Duration::from_secs(5)))
                        .unwrap();
                    let mut reader = BufReader::new(&stream);
                    let mut authorization = None;
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("authorization")
                        {
                            authorization = Some(value.trim().to_owned());
                        }
                        line.clear();
                    }
                    authorizations.lock().unwrap().push(authorization);
                    let _ = (&stream).write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            })
        };
        Refusing {
            url,
            authorizations,
            stop,
            server: Some(server),
        }
    }

    fn authorizations(&self) -> Vec<Option<String>> {
        self.authorizations.lock().unwrap().clone()
    }
}

impl Drop for Refusing {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

#[test]
fn refused_credentials_are_sent_once_and_reported() {
    let remote = Remote::new();
    let server = Refusing::start();
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&server.url);

    let err = mirror
        .fetch("main", &Credentials::Token("t0ps3cret".into()))
        .unwrap_err();
    assert!(matches!(err, FetchError::AuthRefused { .. }), "{err:?}");
    assert!(!err.to_string().contains("t0ps3cret"), "{err}");
    // Asked without credentials, then once with the token (base64 of
    // `x-access-token:t0ps3cret`); the second refusal ends the fetch instead of a loop.
    assert_eq!(
        server.authorizations(),
        [
            None,
            Some("Basic eC1hY2Nlc3MtdG9rZW46dDBwczNjcmV0".to_owned())
        ]
    );

    let err = mirror.fetch("main", &Credentials::Anonymous).unwrap_err();
    assert_eq!(
        err,
        FetchError::CredentialsNeeded {
            url: server.url.clone(),
            wanted: "a username and password or token".into(),
            have: "none",
        }
    );
    assert!(err.to_string().contains("--token-file"), "{err}");
}

#[test]
fn the_mirror_of_a_url_no_repository_uses_is_removed() {
    let remote = Remote::new();
    let head = remote.commit("main", "first", &[("stacks/web.yaml", WEB)]);
    let mirrors = Mirrors::new(&remote.mirrors);
    let mirror = mirrors.mirror(&format!("file://{}", remote.url()));
    mirror.fetch("main", &anonymous()).unwrap();
    std::fs::create_dir_all(remote.mirrors.join("not-a-mirror")).unwrap();

    // The same URL spelt otherwise keeps it.
    let path_spelling = format!("{}/", remote.url());
    assert!(mirrors.retain([path_spelling.as_str()]).is_empty());
    assert!(mirror.path().exists());

    assert_eq!(mirrors.retain([]), [mirror.path().to_path_buf()]);
    assert!(!mirror.path().exists());
    assert!(remote.mirrors.join("not-a-mirror").exists());
    // Wanted again, it is fetched again from nothing.
    let again = mirrors.mirror(&remote.url());
    assert!(!Arc::ptr_eq(&again, &mirror));
    assert_eq!(again.fetch("main", &anonymous()).unwrap(), head);
}
