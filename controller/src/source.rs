//! Where stack files are read from: the working tree, or a git revision (`gitops::revision`).
//! The loader sees only this trait, so a plan reads both sides of a diff the same way.

use std::io;
use std::path::{Path, PathBuf};

pub trait SourceTree {
    /// The file's bytes; `None` when there is no file at `path`.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;

    /// The names of the entries of a directory; `None` when `path` is not a directory.
    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>>;

    /// `path` (as named to this tree) as an absolute path on this machine: what a relative
    /// bind source in a stack file means, as Docker's client resolves it.
    fn absolute(&self, path: &Path) -> PathBuf {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// The files on disk, relative to the current directory (or absolute).
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkTree;

impl SourceTree for WorkTree {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        if path.is_dir() {
            return Ok(None);
        }
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(Some(names))
    }
}

/// The stack files that `paths` name: files as given, and the `*.yml`/`*.yaml` files
/// directly inside directories, sorted. Paths that do not exist are returned in `missing`.
pub fn find_stack_files(tree: &dyn SourceTree, paths: &[&Path]) -> io::Result<StackFiles> {
    let mut found = StackFiles::default();
    for path in paths {
        if let Some(names) = tree.list(path)? {
            for name in names {
                if name.ends_with(".yml") || name.ends_with(".yaml") {
                    found.files.push(path.join(name));
                }
            }
        } else if tree.read(path)?.is_some() {
            found.files.push(path.to_path_buf());
        } else {
            found.missing.push(path.to_path_buf());
        }
    }
    found.files.sort();
    found.files.dedup();
    Ok(found)
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StackFiles {
    pub files: Vec<std::path::PathBuf>,
    pub missing: Vec<std::path::PathBuf>,
}
