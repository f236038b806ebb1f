//! Bare mirrors of remote repositories under one directory: one per remote URL (named by a
//! hash of the URL, normalised), so every repository object that points at a URL shares its
//! mirror and its fetch. A fetch brings every branch (force-pushed ones included: the new head
//! replaces the old) and drops the branches the remote deleted.
//!
//! The URL and credentials are given to each fetch and never written into the mirror (an
//! anonymous remote): a token is not left on disk.
//!
//! Bounds: a fetch stops past [`MAX_FETCH_BYTES`] received or [`FETCH_DEADLINE`] spent;
//! connecting gives up after 10 s and a stalled connection after 30 s.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use git2::{AutotagOption, Cred, ErrorClass, ErrorCode, FetchOptions, FetchPrune, Repository};
use sha2::{Digest, Sha256};

use super::credentials::{self, Answer, Credentials, Refusal};
use super::flight::Flight;
use super::revision::{GitError, Repo};

/// The most a fetch may receive: a stack repository is text, and 512 MiB is far past any
/// we expect while still well inside a manager's disk and memory. A repository carrying
/// large binaries belongs elsewhere (or behind a narrower repository for the stacks).
pub const MAX_FETCH_BYTES: u64 = 512 * 1024 * 1024;

/// The longest a fetch may take, start to end.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(300);

const CONNECT_TIMEOUT_MS: i32 = 10_000;
const STALL_TIMEOUT_MS: i32 = 30_000;

/// The refs a mirror keeps: the remote's branches, as they are (`+`: a force push wins).
const BRANCHES: &str = "+refs/heads/*:refs/heads/*";

/// Branch name → head commit id, as the mirror has them after a fetch.
pub type Heads = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot reach {url}: {detail} (check the URL, and that its host is up and reachable from the leader)"
    )]
    Unreachable { url: String, detail: String },
    #[error(
        "{url} refused the credentials: {detail} (check the token, password or key given to `swarm repo add`, and that it may read the repository)"
    )]
    AuthRefused { url: String, detail: String },
    #[error(
        "{url} asks for {wanted}, and the repository has {have} (give --token-file, --username with --password-file, or --ssh-key to `swarm repo add`)"
    )]
    CredentialsNeeded {
        url: String,
        wanted: String,
        have: &'static str,
    },
    #[error("{url} is not a git repository: {detail}")]
    NotARepository { url: String, detail: String },
    #[error("{url} has no branch {branch:?}; its branches: {}", list(.existing))]
    MissingBranch {
        url: String,
        branch: String,
        existing: Vec<String>,
    },
    #[error(
        "fetching {url} stopped past {bound} bytes received: the repository is larger than a mirror takes (keep the stack files in a smaller repository)"
    )]
    TooLarge { url: String, bound: u64 },
    #[error("fetching {url} took longer than {} s; it is tried again on the next pass", .limit.as_secs())]
    TimedOut { url: String, limit: Duration },
    #[error("cannot use the mirror of {url} at {path}: {detail}")]
    Mirror {
        url: String,
        path: PathBuf,
        detail: String,
    },
    #[error("fetching {url} failed: {detail}")]
    Failed { url: String, detail: String },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none (the repository is empty)".to_owned()
    } else {
        names.join(", ")
    }
}

/// Brings a mirror up to date with its remote: the IO a [`Mirror`] does, behind a trait so
/// the serialising and sharing of fetches is tested on its own.
pub trait Fetch: Send + Sync {
    /// Updates the bare repository at `mirror` (creating it if needed) from `url`, and
    /// returns every branch's head.
    fn fetch(
        &self,
        mirror: &Path,
        url: &str,
        credentials: &Credentials,
    ) -> Result<Heads, FetchError>;
}

/// All the mirrors under one directory (the leader's data dir), one per remote URL.
pub struct Mirrors {
    dir: PathBuf,
    fetch: Arc<dyn Fetch>,
    mirrors: Mutex<HashMap<String, Arc<Mirror>>>,
}

impl Mirrors {
    /// Mirrors fetched with git2 under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Mirrors {
        Mirrors::with_fetch(dir, Arc::new(Git2Fetch::default()))
    }

    pub fn with_fetch(dir: impl Into<PathBuf>, fetch: Arc<dyn Fetch>) -> Mirrors {
        Mirrors {
            dir: dir.into(),
            fetch,
            mirrors: Mutex::new(HashMap::new()),
        }
    }

    /// The mirror of `url` (the same one for every spelling that normalises alike).
    pub fn mirror(&self, url: &str) -> Arc<Mirror> {
        let key = normalise_url(url);
        let mut mirrors = self
            .mirrors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        mirrors
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Mirror {
                    url: redact_url(url.trim()),
                    remote: url.trim().to_owned(),
                    path: self.dir.join(mirror_name(&key)),
                    fetch: self.fetch.clone(),
                    flight: Flight::new(),
                })
            })
            .clone()
    }
}

impl Mirrors {
    /// Forgets the mirrors of URLs that are not in `urls` (no repository points at them any
    /// more) and removes them from disk; returns the directories removed.
    pub fn retain<'u>(&self, urls: impl IntoIterator<Item = &'u str>) -> Vec<PathBuf> {
        let keep: std::collections::BTreeSet<String> =
            urls.into_iter().map(normalise_url).collect();
        let names: std::collections::BTreeSet<String> =
            keep.iter().map(|key| mirror_name(key)).collect();
        self.mirrors
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|key, _| keep.contains(key));
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only what a mirror is named like: the directory may hold other things.
            if name.ends_with(".git") && !names.contains(&name) {
                let path = entry.path();
                if std::fs::remove_dir_all(&path).is_ok() {
                    removed.push(path);
                }
            }
        }
        removed
    }
}

/// One remote's bare mirror. Fetches are one at a time; callers asking while one runs share
/// the next (see `flight`).
pub struct Mirror {
    /// The URL as shown (in errors, to the watcher): a password in it redacted.
    url: String,
    /// The URL as given, to fetch from.
    remote: String,
    path: PathBuf,
    fetch: Arc<dyn Fetch>,
    flight: Flight<Result<Heads, FetchError>>,
}

impl Mirror {
    /// The URL, with a password written into it redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bare repository on disk.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many fetches this mirror has made.
    pub fn fetches(&self) -> u64 {
        self.flight.runs()
    }

    /// Fetches (or shares a fetch that started after this call) and returns `branch`'s
    /// head commit id. Blocks: from async code, use [`Mirror::fetch_async`].
    pub fn fetch(&self, branch: &str, credentials: &Credentials) -> Result<String, FetchError> {
        self.fetch_since(branch, credentials, Instant::now())
    }

    /// `branch`'s head as a fetch that started at or after `not_before` found it: a poll
    /// passes the start of its interval, so repositories on one URL polled at different
    /// moments share one fetch per interval; a webhook passes the moment it arrived.
    pub fn fetch_since(
        &self,
        branch: &str,
        credentials: &Credentials,
        not_before: Instant,
    ) -> Result<String, FetchError> {
        let heads = self.fetch_all(credentials, not_before)?;
        heads
            .get(branch)
            .cloned()
            .ok_or_else(|| FetchError::MissingBranch {
                url: self.url.clone(),
                branch: branch.to_owned(),
                existing: heads.keys().cloned().collect(),
            })
    }

    /// Every branch's head, from a fetch that started at or after `not_before`. The fetch
    /// uses the credentials of whichever caller runs it: repositories sharing a URL are
    /// expected to share its access.
    pub fn fetch_all(
        &self,
        credentials: &Credentials,
        not_before: Instant,
    ) -> Result<Heads, FetchError> {
        self.flight.run(
            not_before,
            || self.fetch.fetch(&self.path, &self.remote, credentials),
            || {
                Err(FetchError::Failed {
                    url: self.url.clone(),
                    detail: "the fetch this call waited for panicked".to_owned(),
                })
            },
        )
    }

    /// [`Mirror::fetch_since`] on tokio's blocking pool, for the watcher's async loop.
    pub async fn fetch_async(
        self: Arc<Self>,
        branch: String,
        credentials: Credentials,
        not_before: Instant,
    ) -> Result<String, FetchError> {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || self.fetch_since(&branch, &credentials, not_before))
            .await
            .unwrap_or_else(|e| {
                Err(FetchError::Failed {
                    url,
                    detail: format!("the fetch task failed: {e}"),
                })
            })
    }

    /// The mirror as a repository, to read commits from.
    pub fn open(&self) -> Result<Repo, GitError> {
        Repo::open_bare(&self.path)
    }
}

/// A URL as mirrors are keyed by: scheme and host in lower case, no password, no trailing
/// slash, and for network URLs no `.git` suffix (forges serve both spellings); local paths and file://
/// URLs are the same path (where `.git` is part of the directory's name).
pub fn normalise_url(url: &str) -> String {
    let url = url.trim().trim_end_matches('/');
    if let Some(path) = url.strip_prefix("file://") {
        return format!("file://{path}");
    }
    if url.starts_with('/') {
        return format!("file://{url}");
    }
    let url = url.strip_suffix(".git").unwrap_or(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // The password is no part of which repository it is.
        let (user, host) = match authority.rsplit_once('@') {
            Some((user_info, host)) => {
                let user = user_info.split(':').next().unwrap_or_default();
                (format!("{user}@"), host)
            }
            None => (String::new(), authority),
        };
        return format!(
            "{}://{user}{}/{path}",
            scheme.to_ascii_lowercase(),
            host.to_ascii_lowercase()
        );
    }
    // scp-like ssh: `git@host:owner/repo`.
    if let Some((authority, path)) = url.split_once(':') {
        let (user, host) = authority.rsplit_once('@').unwrap_or(("", authority));
        let user = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        return format!("{user}{}:{path}", host.to_ascii_lowercase());
    }
    url.to_owned()
}

/// `url` with the password of its user info (`https://user:secret@host/…`) redacted.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((user_info, host)) if user_info.contains(':') => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!(
                "{scheme}://{user}:<redacted>@{host}{}",
                &rest[authority_end..]
            )
        }
        _ => url.to_owned(),
    }
}

/// The mirror's directory name: 32 hex digits of the SHA-256 of the normalised URL.
fn mirror_name(normalised: &str) -> String {
    let digest = Sha256::digest(normalised.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.git")
}

/// Fetches with git2 (libgit2): file:// URLs and local paths, https, ssh.
pub struct Git2Fetch {
    /// The most a fetch may receive.
    pub max_bytes: u64,
    /// The longest a fetch may take.
    pub deadline: Duration,
}

impl Default for Git2Fetch {
    fn default() -> Self {
        Git2Fetch {
            max_bytes: MAX_FETCH_BYTES,
            deadline: FETCH_DEADLINE,
        }
    }
}

/// Why a fetch was stopped from inside a callback.
#[derive(Clone, Copy)]
enum Stop {
    TooLarge,
    TimedOut,
}

impl Fetch for Git2Fetch {
    fn fetch(
        &self,
        mirror: &Path,
        url: &str,
        credentials: &Credentials,
    ) -> Result<Heads, FetchError> {
        set_network_timeouts();
        let remote_url = url;
        // Errors name the URL as shown: a password written into it stays out of them.
        let url = redact_url(remote_url);
        let url = url.as_str();
        if let Some(path) = local_path(remote_url).filter(|path| !path.exists()) {
            // libgit2 takes a path that does not exist for an unknown kind of URL.
            return Err(FetchError::NotARepository {
                url: url.to_owned(),
                detail: format!("{} does not exist", path.display()),
            });
        }
        let repo = open_or_init(mirror, url)?;
        let mirror_error = |e: git2::Error| FetchError::Mirror {
            url: url.to_owned(),
            path: mirror.to_path_buf(),
            detail: e.message().to_owned(),
        };
        let mut remote = repo
            .remote_anonymous(remote_url)
            .map_err(|e| FetchError::Failed {
                url: url.to_owned(),
                detail: e.message().to_owned(),
            })?;

        let started = Instant::now();
        let stop: Cell<Option<Stop>> = Cell::new(None);
        let offered = Cell::new(false);
        let refusal: Cell<Option<Refusal>> = Cell::new(None);
        let mut callbacks = git2::RemoteCallbacks::new();
        callbacks.credentials(|_url, url_username, allowed| {
            let answer = credentials::answer(credentials, url_username, allowed, offered.get());
            offered.set(offered.get() || credentials::offers_secret(&answer));
            match answer {
                Answer::UserPass { username, password } => {
                    Cred::userpass_plaintext(username, password)
                }
                Answer::SshKey {
                    username,
                    key,
                    passphrase,
                } => Cred::ssh_key(username, None, key, passphrase),
                Answer::Username(username) => Cred::username(username),
                Answer::Refuse(why) => {
                    refusal.set(Some(why));
                    Err(git2::Error::from_str("no credentials to offer"))
                }
            }
        });
        callbacks.transfer_progress(|progress| {
            if progress.received_bytes() as u64 > self.max_bytes {
                stop.set(Some(Stop::TooLarge));
            } else if started.elapsed() > self.deadline {
                stop.set(Some(Stop::TimedOut));
            }
            stop.get().is_none()
        });
        callbacks.sideband_progress(|_| {
            if started.elapsed() > self.deadline {
                stop.set(Some(Stop::TimedOut));
            }
            stop.get().is_none()
        });
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None);
        let fetched = remote.fetch(&[BRANCHES], Some(&mut options), None);
        drop(options);
        if let Err(e) = fetched {
            return Err(classify(
                url,
                e,
                stop.get(),
                refusal.take(),
                offered.get(),
                self,
            ));
        }
        drop(remote);
        let mut heads = Heads::new();
        for reference in repo.references_glob("refs/heads/*").map_err(mirror_error)? {
            let reference = reference.map_err(mirror_error)?;
            if let (Ok(name), Some(target)) = (reference.shorthand(), reference.target()) {
                heads.insert(name.to_owned(), target.to_string());
            }
        }
        Ok(heads)
    }
}

/// What a failed fetch means, for the person who must fix it.
fn classify(
    url: &str,
    error: git2::Error,
    stop: Option<Stop>,
    refusal: Option<Refusal>,
    offered: bool,
    bounds: &Git2Fetch,
) -> FetchError {
    let url = url.to_owned();
    let detail = error.message().to_owned();
    match (stop, refusal) {
        (Some(Stop::TooLarge), _) => {
            return FetchError::TooLarge {
                url,
                bound: bounds.max_bytes,
            };
        }
        (Some(Stop::TimedOut), _) => {
            return FetchError::TimedOut {
                url,
                limit: bounds.deadline,
            };
        }
        (None, Some(Refusal::Rejected)) => return FetchError::AuthRefused { url, detail },
        (None, Some(Refusal::Unsuitable { wanted, have })) => {
            return FetchError::CredentialsNeeded { url, wanted, have };
        }
        (None, None) => {}
    }
    if error.code() == ErrorCode::Auth || (offered && error.class() == ErrorClass::Http) {
        return FetchError::AuthRefused { url, detail };
    }
    if is_not_a_repository(&error) {
        return FetchError::NotARepository { url, detail };
    }
    match error.class() {
        ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Ssl | ErrorClass::Os => {
            FetchError::Unreachable { url, detail }
        }
        _ => FetchError::Failed { url, detail },
    }
}

/// The directory a file:// URL or a local path names.
fn local_path(url: &str) -> Option<&Path> {
    let path = url.strip_prefix("file://").unwrap_or(url);
    (path.starts_with('/') || path.starts_with('.')).then(|| Path::new(path))
}

fn is_not_a_repository(error: &git2::Error) -> bool {
    let message = error.message();
    message.contains("could not find repository")
        || message.contains("not a git repository")
        || message.contains("repository not found")
        || message.contains("failed to resolve path")
}

/// The mirror's bare repository, made on first use. One that cannot be opened (an
/// interrupted first fetch, a damaged disk) is only a cache: it is made anew.
fn open_or_init(path: &Path, url: &str) -> Result<Repository, FetchError> {
    let failed = |e: git2::Error| FetchError::Mirror {
        url: url.to_owned(),
        path: path.to_path_buf(),
        detail: e.message().to_owned(),
    };
    if path.exists() {
        match Repository::open_bare(path) {
            Ok(repo) => return Ok(repo),
            Err(e) => {
                tracing::warn!(mirror = %path.display(), %url, error = %e, "the mirror cannot be opened: making it anew");
                std::fs::remove_dir_all(path).map_err(|e| FetchError::Mirror {
                    url: url.to_owned(),
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                })?;
            }
        }
    }
    Repository::init_bare(path).map_err(failed)
}

/// libgit2's network timeouts are process-wide options, set once before the first fetch.
fn set_network_timeouts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: libgit2 documents these options as not thread-safe against concurrent
        // network operations; `Once` runs this before any fetch of this process starts.
        unsafe {
            let connect =
                git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let stall = git2::opts::set_server_timeout_in_milliseconds(STALL_TIMEOUT_MS);
            if let Err(e) = connect.and(stall) {
                tracing::warn!(error = %e, "cannot set git's network timeouts");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_remote_share_a_mirror() {
        let same = [
            (
                "https://GitHub.com/acme/stacks.git",
                "https://github.com/acme/stacks",
            ),
            (
                "https://github.com/acme/stacks/",
                "https://github.com/acme/stacks",
            ),
            (
                "ssh://git@Example.org/acme/stacks.git",
                "ssh://git@example.org/acme/stacks",
            ),
            (
                "git@GitHub.com:acme/stacks.git",
                "git@github.com:acme/stacks",
            ),
            (
                "https://ci:hunter2@Git.example.org/a/b",
                "https://ci@git.example.org/a/b",
            ),
            ("/srv/git/stacks.git/", "file:///srv/git/stacks.git"),
            ("file:///srv/git/stacks.git", "file:///srv/git/stacks.git"),
        ];
        for (spelling, normalised) in same {
            assert_eq!(normalise_url(spelling), normalised, "{spelling}");
        }
        // A local directory's `.git` is part of its name.
        assert_ne!(normalise_url("/srv/x.git"), normalise_url("/srv/x"));
        // Paths keep their case; owners differ.
        assert_ne!(
            normalise_url("https://github.com/Acme/stacks"),
            normalise_url("https://github.com/acme/stacks")
        );
    }

    #[test]
    fn a_password_in_a_url_is_never_shown() {
        let cases = [
            (
                "https://ci:hunter2@git.example.org/acme/stacks.git",
                "https://ci:<redacted>@git.example.org/acme/stacks.git",
            ),
            (
                "https://oauth2:tok@en@gitlab.example.org/a/b",
                "https://oauth2:<redacted>@gitlab.example.org/a/b",
            ),
            (
                "ssh://git@example.org/acme/stacks.git",
                "ssh://git@example.org/acme/stacks.git",
            ),
            (
                "git@example.org:acme/stacks.git",
                "git@example.org:acme/stacks.git",
            ),
            ("/srv/git/stacks.git", "/srv/git/stacks.git"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let mirrors = Mirrors::new("/data/mirrors");
        let mirror = mirrors.mirror("https://ci:hunter2@git.example.org/acme/stacks.git");
        assert!(!mirror.url().contains("hunter2"));
    }

    #[test]
    fn mirrors_are_named_by_the_normalised_url() {
        let mirrors = Mirrors::new("/data/mirrors");
        let a = mirrors.mirror("https://GitHub.com/acme/stacks.git");
        let b = mirrors.mirror("https://github.com/acme/stacks");
        let c = mirrors.mirror("https://github.com/acme/other");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.path(), b.path());
        assert_ne!(a.path(), c.path());
        let name = a.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 32 + ".git".len(), "{name}");
        assert!(a.path().starts_with("/data/mirrors"));
    }

    #[test]
    fn a_missing_branch_lists_the_branches_there_are() {
        let error = FetchError::MissingBranch {
            url: "file:///srv/stacks".into(),
            branch: "mian".into(),
            existing: vec!["main".into(), "staging".into()],
        };
        assert_eq!(
            error.to_string(),
            "file:///srv/stacks has no branch \"mian\"; its branches: main, staging"
        );
    }
}
