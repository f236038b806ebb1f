//! What a Deployment records about the commit it applied: id, author, message, time.

use super::revision::{GitError, GitRevision};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    /// The full commit id.
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// The message's first paragraph, on one line (`git log --oneline`'s text).
    pub summary: String,
    /// When it was committed, in seconds since the Unix epoch (UTC).
    pub time: i64,
}

impl GitRevision<'_> {
    /// The commit's metadata.
    pub fn info(&self) -> Result<CommitInfo, GitError> {
        let commit = self
            .repo()
            .git()
            .find_commit(self.oid())
            .map_err(|source| GitError::UnknownRevision {
                rev: self.commit_id(),
                source,
            })?;
        let author = commit.author();
        Ok(CommitInfo {
            id: commit.id().to_string(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            summary: commit
                .summary_bytes()
                .map(|summary| String::from_utf8_lossy(summary).into_owned())
                .unwrap_or_default(),
            time: commit.time().seconds(),
        })
    }
}
