//! The stack files under some paths at one source, loaded: stacks, findings, and the paths
//! that name nothing there.

use std::path::{Path, PathBuf};

use super::DeployError;
use super::source::StackSource;
use crate::source::find_stack_files;
use crate::stack::{Diagnostic, Stack};

/// One side of a plan.
#[derive(Debug, Clone)]
pub struct Side {
    /// The commit the files were read at; `None` for a working tree.
    pub commit: Option<String>,
    /// The stack files found, sorted, each with its findings.
    pub files: Vec<StackFile>,
    /// The paths given that name nothing at this source.
    pub missing: Vec<PathBuf>,
    /// The directories given that hold no stack file at this source.
    pub empty: Vec<PathBuf>,
    /// The valid stacks, each with its source named as the cluster records it.
    pub stacks: Vec<Stack>,
}

/// One stack file as loaded.
#[derive(Debug, Clone)]
pub struct StackFile {
    /// As named to the source.
    pub path: PathBuf,
    /// Every finding (file:line:column, field path, message, help), in order.
    pub findings: Vec<Diagnostic>,
    /// Whether it yielded a stack (it has no errors).
    pub valid: bool,
}

impl Side {
    /// How many files have errors (they yield no stack).
    pub fn invalid(&self) -> usize {
        self.files.iter().filter(|file| !file.valid).count()
    }
}

/// Loads the stack files `paths` name at `source` (files, and the `*.yml`/`*.yaml` files
/// of directories). `env` gives the environment's variables, which win over `.env` files.
pub fn read_side(
    source: &dyn StackSource,
    paths: &[PathBuf],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Side, DeployError> {
    let path_refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let found = find_stack_files(source, &path_refs)?;
    let mut side = Side {
        commit: source.commit(),
        files: Vec::new(),
        missing: found.missing,
        empty: found.empty,
        stacks: Vec::new(),
    };
    for path in found.files {
        let loaded = source.load(&path, env);
        let valid = loaded.stack.is_some();
        if let Some(mut stack) = loaded.stack {
            stack.source = source.source_name(&path);
            side.stacks.push(stack);
        }
        side.files.push(StackFile {
            path,
            findings: loaded.diagnostics,
            valid,
        });
    }
    Ok(side)
}
