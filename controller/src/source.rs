//! Where stack files are read from: the working tree, or a git revision (`gitops::revision`).
//! The loader sees only this trait, so a plan reads both sides of a diff the same way.

use std::io;
use std::path::{Path, PathBuf};

pub trait SourceTree {
    /// The file's bytes; `None` when there is no file at `path`.
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;

    /// The names of the entries of a directory, a subdirectory's with a trailing `/`;
    /// `None` when `path` is not a directory.
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
            let name = entry.file_name().to_string_lossy().into_owned();
            // Followed, as git and Compose do: a link to a folder is a folder.
            // A broken link is neither.
            let Ok(kind) = std::fs::metadata(entry.path()) else {
                continue;
            };
            if kind.is_file() {
                names.push(name);
            } else if kind.is_dir() {
                names.push(format!("{name}/"));
            }
        }
        names.sort();
        Ok(Some(names))
    }
}

/// The file names Compose looks for in a folder, in its order of preference.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The stack files that `paths` name: files as given; in directories, the `*.yml`/`*.yaml`
/// files directly inside, and in each folder directly inside, its Compose file (a layout
/// of one folder per stack: `web/docker-compose.yml`, `db/compose.yaml`); sorted. Paths that
/// do not exist are returned in `missing`.
pub fn find_stack_files(tree: &dyn SourceTree, paths: &[&Path]) -> io::Result<StackFiles> {
    let mut found = StackFiles::default();
    for path in paths {
        if let Some(names) = tree.list(path)? {
            let before = found.files.len();
            for name in names {
                if let Some(folder) = name.strip_suffix('/') {
                    if let Some(file) = compose_file_in(tree, &path.join(folder))? {
                        found.files.push(file);
                    }
                } else if name.ends_with(".yml") || name.ends_with(".yaml") {
                    found.files.push(path.join(name));
                }
            }
            if found.files.len() == before {
                found.empty.push(path.to_path_buf());
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

/// The Compose file of `folder`, the first of [`COMPOSE_FILE_NAMES`] there.
fn compose_file_in(tree: &dyn SourceTree, folder: &Path) -> io::Result<Option<PathBuf>> {
    for name in COMPOSE_FILE_NAMES {
        let file = folder.join(name);
        if tree.read(&file)?.is_some() {
            return Ok(Some(file));
        }
    }
    Ok(None)
}

/// Whether `file` is one of the stack files `path` names (see [`find_stack_files`]): the
/// path itself, a file directly inside it, or the Compose file of a folder directly inside.
pub fn names_stack_file(path: &Path, file: &Path) -> bool {
    let parent = file.parent();
    file == path
        || parent == Some(path)
        || (is_compose_file_name(file) && parent.and_then(Path::parent) == Some(path))
}

/// Whether the file has one of Compose's default names: its stack is named after its folder.
pub fn is_compose_file_name(file: &Path) -> bool {
    file.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| COMPOSE_FILE_NAMES.contains(&name))
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StackFiles {
    pub files: Vec<std::path::PathBuf>,
    pub missing: Vec<std::path::PathBuf>,
    /// The directories among the paths that hold no stack file.
    pub empty: Vec<std::path::PathBuf>,
}
