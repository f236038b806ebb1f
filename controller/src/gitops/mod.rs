//! Git: stack files at a revision (`revision`). The watcher that fetches, plans and applies
//! on the leader will live here too.

mod revision;

pub use revision::{GitError, GitRevision, Repo};
