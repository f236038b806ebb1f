//! Loaded stack files by content: at a new commit, a file whose load would read the same
//! blobs (the file, its `.env`, the config and secret files it names) with the same
//! environment is not parsed again. A commit that changes one file of twenty parses one.
//!
//! Only loads with no finding are kept: findings name the file by its commit
//! (`0123456789ab:stacks/web.yaml`), so a load with findings is redone to name the new one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use git2::Oid;

use super::revision::GitRevision;
use crate::deploy::StackSource;
use crate::source::SourceTree;
use crate::stack::{self, Loaded};

/// Past this many files kept, the cache starts again (a repository's stack files are far
/// fewer; paths deleted from the repository would otherwise stay forever).
const MAX_ENTRIES: usize = 10_000;

/// The loads of one repository's stack files, shared by the commits read through it.
#[derive(Default)]
pub struct LoadCache {
    entries: Mutex<HashMap<PathBuf, Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// A path a load read, with the blob found there (`None`: no file).
type Read = (PathBuf, Option<Oid>);

/// One file's load and everything it depended on.
struct Entry {
    reads: Vec<Read>,
    /// Every variable the load looked up, with the value it had.
    variables: Vec<(String, Option<String>)>,
    loaded: Loaded,
}

impl LoadCache {
    pub fn new() -> LoadCache {
        LoadCache::default()
    }

    /// The files loaded from the cache so far, and those parsed.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A commit whose stack files load through a [`LoadCache`]; otherwise the same source as
/// the [`GitRevision`] it wraps.
pub struct CachedRevision<'a, 'r> {
    pub revision: &'a GitRevision<'r>,
    pub cache: &'a LoadCache,
}

impl CachedRevision<'_, '_> {
    fn unchanged(&self, entry: &Entry, env: &dyn Fn(&str) -> Option<String>) -> bool {
        entry
            .reads
            .iter()
            .all(|(path, blob)| matches!(self.revision.blob_id(path), Ok(found) if found == *blob))
            && entry
                .variables
                .iter()
                .all(|(name, value)| env(name) == *value)
    }
}

impl SourceTree for CachedRevision<'_, '_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.revision.read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        self.revision.list(dir)
    }
}

impl StackSource for CachedRevision<'_, '_> {
    fn commit(&self) -> Option<String> {
        self.revision.commit()
    }

    fn display(&self, path: &Path) -> String {
        self.revision.display(path)
    }

    fn source_name(&self, path: &Path) -> String {
        self.revision.source_name(path)
    }

    fn revision(&self) -> Option<&str> {
        StackSource::revision(self.revision)
    }

    fn load(&self, path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Loaded {
        if let Some(entry) = self.cache.entries().get(path)
            && self.unchanged(entry, env)
        {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            return entry.loaded.clone();
        }
        self.cache.misses.fetch_add(1, Ordering::Relaxed);
        let recording = Recording {
            revision: self.revision,
            reads: RefCell::new(Vec::new()),
        };
        let variables = RefCell::new(Vec::new());
        let recorded_env = |name: &str| {
            let value = env(name);
            variables
                .borrow_mut()
                .push((name.to_owned(), value.clone()));
            value
        };
        let loaded = stack::load(&recording, path, &self.display(path), &recorded_env);
        if loaded.diagnostics.is_empty() {
            let reads = recording.reads.into_inner();
            // A read whose blob could not be told apart from an error is not cached.
            if let Some(reads) = reads.into_iter().collect::<Option<Vec<_>>>() {
                let mut entries = self.cache.entries();
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
                entries.insert(
                    path.to_path_buf(),
                    Entry {
                        reads,
                        variables: variables.into_inner(),
                        loaded: loaded.clone(),
                    },
                );
            }
        }
        loaded
    }
}

/// The revision, noting each path read and the blob found there.
struct Recording<'a, 'r> {
    revision: &'a GitRevision<'r>,
    /// `None` for a read whose blob id could not be had, or a directory listed.
    reads: RefCell<Vec<Option<Read>>>,
}

impl SourceTree for Recording<'_, '_> {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        let blob = self.revision.blob_id(path).ok();
        self.reads
            .borrow_mut()
            .push(blob.map(|blob| (path.to_path_buf(), blob)));
        self.revision.read(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        // The loader reads files by name; were it ever to list a directory, what it found
        // would be a dependency this cache does not key on: such a load is not kept.
        self.reads.borrow_mut().push(None);
        self.revision.list(dir)
    }
}
