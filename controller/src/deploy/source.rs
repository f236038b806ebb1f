//! Where one side's stack files come from, and how they are named: in findings, as the user
//! can open them; as objects' sources, as the cluster records them.

use std::io;
use std::path::Path;

use crate::gitops::{GitRevision, Repo};
use crate::source::{SourceTree, WorkTree};
use crate::stack::{self, Loaded};

/// Stack files at one revision: the working tree, a git commit, or (for the GitOps
/// watcher) a commit fetched into a mirror. The loader reads only through `SourceTree`.
pub trait StackSource: SourceTree {
    /// The commit the files are at (a plan's basis); `None` for a working tree.
    fn commit(&self) -> Option<String>;

    /// `path` as findings name it (`stacks/web.yaml`, `HEAD~1:stacks/web.yaml`).
    fn display(&self, path: &Path) -> String;

    /// `path` as an object's origin records it: from the repository root when there is a
    /// repository, so both sides of a plan and the cluster's records agree.
    fn source_name(&self, path: &Path) -> String;

    /// The revision as the user spelled it (for "no such file … at REV"); `None` for a
    /// working tree.
    fn revision(&self) -> Option<&str>;

    /// Loads the stack file at `path`, named as `display` says. A source that can tell a
    /// file (and what its load read) is unchanged since an earlier commit may answer from a
    /// cache instead of parsing it again (`gitops::CachedRevision`).
    fn load(&self, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Loaded {
        stack::load(&Tree(self), path, &self.display(path), env)
    }
}

/// A `StackSource` of any size as the `SourceTree` the loader takes.
struct Tree<'s, S: ?Sized>(&'s S);

impl<S: StackSource + ?Sized> SourceTree for Tree<'_, S> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.0.read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        self.0.list(dir)
    }

    fn absolute(&self, path: &Path) -> std::path::PathBuf {
        self.0.absolute(path)
    }
}

/// The working tree (paths relative to the current directory), inside `repo` if there is
/// one.
#[derive(Clone, Copy, Default)]
pub struct WorkingCopy<'r> {
    pub repo: Option<&'r Repo>,
}

impl SourceTree for WorkingCopy<'_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        WorkTree.read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        WorkTree.list(dir)
    }
}

impl StackSource for WorkingCopy<'_> {
    fn commit(&self) -> Option<String> {
        None
    }

    fn display(&self, path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }

    fn source_name(&self, path: &Path) -> String {
        repo_relative(self.repo, path)
    }

    fn revision(&self) -> Option<&str> {
        None
    }
}

impl StackSource for GitRevision<'_> {
    fn commit(&self) -> Option<String> {
        Some(self.commit_id())
    }

    fn display(&self, path: &Path) -> String {
        format!("{}:{}", self.name(), self.source_name(path))
    }

    fn source_name(&self, path: &Path) -> String {
        repo_relative(Some(self.repo()), path)
    }

    fn revision(&self) -> Option<&str> {
        Some(self.name())
    }
}

fn repo_relative(repo: Option<&Repo>, path: &Path) -> String {
    repo.and_then(|repo| repo.relative(path).ok())
        .unwrap_or_else(|| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}
