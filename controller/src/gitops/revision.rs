//! Stack files as they are at a git revision, read with git2 straight from the object
//! database: no checkout, the working tree is left alone.

use std::io;
use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Oid, Repository};

use crate::source::SourceTree;

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{path} is not inside a git repository: {source}")]
    NotARepository { path: PathBuf, source: git2::Error },
    #[error("the repository at {path} is bare: it has no working tree to resolve paths against")]
    Bare { path: PathBuf },
    #[error("unknown revision {rev:?}: {source}")]
    UnknownRevision { rev: String, source: git2::Error },
    #[error("{path} is outside the repository at {root}")]
    OutsideRepository { path: PathBuf, root: PathBuf },
    #[error("cannot resolve {path}: {source}")]
    Path { path: PathBuf, source: io::Error },
}

/// A git repository, and how paths map into it: the one that holds the current directory
/// (paths relative to it), or a bare mirror (paths from the repository root).
pub struct Repo {
    repo: Repository,
    /// The working tree root, canonical; `/` for a bare repository.
    root: PathBuf,
    /// The current directory, canonical; `/` for a bare repository.
    cwd: PathBuf,
}

impl Repo {
    /// The repository that holds `cwd` (searching upwards, as git does).
    pub fn discover(cwd: &Path) -> Result<Repo, GitError> {
        let repo = Repository::discover(cwd).map_err(|source| GitError::NotARepository {
            path: cwd.to_path_buf(),
            source,
        })?;
        let root = repo
            .workdir()
            .ok_or_else(|| GitError::Bare {
                path: repo.path().to_path_buf(),
            })?
            .to_path_buf();
        let canonical = |path: &Path| {
            path.canonicalize().map_err(|source| GitError::Path {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Repo {
            root: canonical(&root)?,
            cwd: canonical(cwd)?,
            repo,
        })
    }

    /// The bare repository at `path` (a mirror the watcher fetched into): paths given to
    /// its revisions are from the repository root.
    pub fn open_bare(path: &Path) -> Result<Repo, GitError> {
        let repo = Repository::open_bare(path).map_err(|source| GitError::NotARepository {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Repo {
            repo,
            root: PathBuf::from("/"),
            cwd: PathBuf::from("/"),
        })
    }

    /// `path` (relative to the current directory, or absolute) as a path from the
    /// repository root, resolved lexically: the file need not exist on disk.
    pub fn relative(&self, path: &Path) -> Result<PathBuf, GitError> {
        let outside = || GitError::OutsideRepository {
            path: path.to_path_buf(),
            root: self.root.clone(),
        };
        let joined = normalise(&self.cwd.join(path)).ok_or_else(outside)?;
        joined
            .strip_prefix(&self.root)
            .map(Path::to_path_buf)
            .map_err(|_| outside())
    }

    /// The tree of `rev` (anything `git rev-parse` takes: a branch, `HEAD~1`, a commit id).
    pub fn revision(&self, rev: &str) -> Result<GitRevision<'_>, GitError> {
        self.resolve(rev, rev.to_owned())
    }

    /// The tree of the commit `id` (a full id, as a fetch returns), named in findings by
    /// its first 12 digits (`0123456789ab:stacks/web.yaml`).
    pub fn commit(&self, id: &str) -> Result<GitRevision<'_>, GitError> {
        let short = id.get(..SHORT_ID).unwrap_or(id).to_owned();
        self.resolve(id, short)
    }

    fn resolve(&self, rev: &str, name: String) -> Result<GitRevision<'_>, GitError> {
        let unknown = |source| GitError::UnknownRevision {
            rev: rev.to_owned(),
            source,
        };
        let commit = self
            .repo
            .revparse_single(rev)
            .and_then(|object| object.peel_to_commit())
            .map_err(unknown)?;
        Ok(GitRevision {
            repo: self,
            name,
            commit: commit.id(),
            tree: commit.tree().map_err(unknown)?.id(),
        })
    }

    pub(super) fn git(&self) -> &Repository {
        &self.repo
    }
}

/// How many digits of a commit id name a fetched commit in findings.
const SHORT_ID: usize = 12;

/// Removes `.` and resolves `..` without touching the file system; `None` when `..`
/// climbs above the start.
fn normalise(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// The files of one commit. Paths given to it are relative to the current directory, like
/// paths on disk, so the loader reads a revision exactly as it reads the working tree.
pub struct GitRevision<'r> {
    repo: &'r Repo,
    /// The revision as it was spelled (`HEAD~1`), for findings.
    name: String,
    commit: Oid,
    tree: Oid,
}

impl GitRevision<'_> {
    pub fn commit_id(&self) -> String {
        self.commit.to_string()
    }

    pub(super) fn oid(&self) -> Oid {
        self.commit
    }

    /// The revision as it was spelled (`origin/main`, `HEAD~1`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn repo(&self) -> &Repo {
        self.repo
    }

    /// The id (content hash) of the file at `path`, found in the tree without reading the
    /// file; `None` when there is no file there.
    pub fn blob_id(&self, path: &Path) -> io::Result<Option<Oid>> {
        let Ok(relative) = self.repo.relative(path) else {
            return Ok(None);
        };
        let tree = self
            .repo
            .repo
            .find_tree(self.tree)
            .map_err(io::Error::other)?;
        match tree.get_path(&relative) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => Ok(Some(entry.id())),
            Ok(_) => Ok(None),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    }

    fn entry_object(&self, path: &Path) -> io::Result<Option<git2::Object<'_>>> {
        let Ok(relative) = self.repo.relative(path) else {
            return Ok(None);
        };
        let tree = self
            .repo
            .repo
            .find_tree(self.tree)
            .map_err(io::Error::other)?;
        if relative.as_os_str().is_empty() {
            return Ok(Some(tree.into_object()));
        }
        match tree.get_path(&relative) {
            Ok(entry) => Ok(Some(
                entry.to_object(&self.repo.repo).map_err(io::Error::other)?,
            )),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

impl SourceTree for GitRevision<'_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .entry_object(path)?
            .and_then(|object| object.into_blob().ok())
            .map(|blob| blob.content().to_vec()))
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        let Some(object) = self.entry_object(dir)? else {
            return Ok(None);
        };
        let Ok(tree) = object.into_tree() else {
            return Ok(None);
        };
        let mut names: Vec<String> = tree
            .iter()
            .filter_map(|entry| {
                let name = entry.name().ok()?;
                match entry.kind()? {
                    ObjectType::Blob => Some(name.to_owned()),
                    ObjectType::Tree => Some(format!("{name}/")),
                    _ => None,
                }
            })
            .collect();
        names.sort();
        Ok(Some(names))
    }

    /// From the directory paths are named from: in a work tree's repository the current
    /// directory, as Docker's client resolves a relative bind; in a bare mirror the
    /// repository's root taken as `/` (`./data` in `stacks/web.yaml` is `/stacks/data`), so
    /// every manager's watcher resolves it alike, whatever its own directory.
    fn absolute(&self, path: &Path) -> std::path::PathBuf {
        self.repo().cwd.join(path)
    }
}
