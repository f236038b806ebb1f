//! A task's logs as `swarm service logs` reads them on the task's node: its stdout and
//! stderr files (kept apart on disk, see `exec::logs`) merged into one sequence of lines
//! by time, selected by `--since` and `--tail`, then followed as they grow.
//!
//! The logs of a task stay in `tasks/<id>/logs/` after its container is gone, so a
//! stopped task's lines can still be read while its directory remains.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::exec::logs::{self, Follower, LogLine};

/// How many files each stream keeps (the live one and its rotated copies).
pub const MAX_FILES: u32 = 3;

/// Which of the container's outputs a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a task's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskLine {
    pub stream: Stream,
    /// When the line was first seen on disk.
    pub time: SystemTime,
    pub text: String,
}

/// Which of the lines already written to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only the last this many (of those since `since`); `None` for all.
    pub tail: Option<usize>,
    /// Only those first seen at or after this time.
    pub since: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum TaskLogError {
    #[error("{0:?} is not a task id: task ids are lower-case letters and digits")]
    BadId(String),
    #[error("task {0} has no logs on this node (its directory was removed, or it never ran)")]
    Missing(String),
    #[error("cannot read the log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A task's log files (stdout, stderr), in its task directory.
pub fn log_paths(task_dir: &Path) -> (PathBuf, PathBuf) {
    let logs = task_dir.join("logs");
    (logs.join("stdout.log"), logs.join("stderr.log"))
}

/// A task's logs on this node.
#[derive(Debug, Clone)]
pub struct TaskLogs {
    stdout: PathBuf,
    stderr: PathBuf,
}

impl TaskLogs {
    /// The logs of task `id` in the node data dir `data_dir`. The id becomes a path: only
    /// an id made of letters and digits is taken.
    pub fn of(data_dir: &Path, id: &str) -> Result<Self, TaskLogError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(TaskLogError::BadId(id.to_owned()));
        }
        let (stdout, stderr) = log_paths(&data_dir.join("tasks").join(id));
        if !stdout.parent().is_some_and(Path::is_dir) {
            return Err(TaskLogError::Missing(id.to_owned()));
        }
        Ok(TaskLogs { stdout, stderr })
    }

    /// The lines written so far that `selection` takes, and a follower that goes on from
    /// where they end.
    pub fn read(
        &self,
        selection: Selection,
    ) -> Result<(Vec<TaskLine>, TaskFollower), TaskLogError> {
        let (stdout, stdout_end) = read_stream(&self.stdout)?;
        let (stderr, stderr_end) = read_stream(&self.stderr)?;
        let lines = select(stdout, stderr, selection);
        let follower = TaskFollower {
            stdout: Follower::from_offset(&self.stdout, stdout_end),
            stderr: Follower::from_offset(&self.stderr, stderr_end),
        };
        Ok((lines, follower))
    }
}

/// Every line of one stream's files, stamped (a line no look has indexed yet gets the
/// file's modification time: it was written by then), and where the live file ended.
fn read_stream(path: &Path) -> Result<(Vec<TaskLine>, u64), TaskLogError> {
    let io_error = |source| TaskLogError::Io {
        path: path.to_path_buf(),
        source,
    };
    let (end, modified) = match std::fs::metadata(path) {
        Ok(metadata) => (metadata.len(), metadata.modified().map_err(io_error)?),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (0, SystemTime::now()),
        Err(error) => return Err(io_error(error)),
    };
    let stream = if path.ends_with("stderr.log") {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    let lines = logs::tail_before(path, MAX_FILES, usize::MAX, end)
        .map_err(io_error)?
        .into_iter()
        .map(|LogLine { text, time }| TaskLine {
            stream,
            time: time.unwrap_or(modified),
            text,
        })
        .collect();
    Ok((lines, end))
}

/// Both streams merged by time (each stream's own order kept; stdout first on a tie),
/// then `selection` applied: the lines since `since`, the last `tail` of those.
pub fn select(stdout: Vec<TaskLine>, stderr: Vec<TaskLine>, selection: Selection) -> Vec<TaskLine> {
    let mut merged = Vec::with_capacity(stdout.len() + stderr.len());
    let mut stdout = stdout.into_iter().peekable();
    let mut stderr = stderr.into_iter().peekable();
    loop {
        let next = match (stdout.peek(), stderr.peek()) {
            (Some(out), Some(err)) if err.time < out.time => stderr.next(),
            (Some(_), _) => stdout.next(),
            (None, _) => stderr.next(),
        };
        match next {
            Some(line) => merged.push(line),
            None => break,
        }
    }
    if let Some(since) = selection.since {
        merged.retain(|line| line.time >= since);
    }
    if let Some(tail) = selection.tail {
        merged.drain(..merged.len().saturating_sub(tail));
    }
    merged
}

/// Follows both streams of a task.
pub struct TaskFollower {
    stdout: Follower,
    stderr: Follower,
}

impl TaskFollower {
    /// The next line of either stream; waits as long as it takes (drop it to stop).
    pub async fn next_line(&mut self) -> Result<TaskLine, std::io::Error> {
        // Cancelling a follower's wait loses nothing: it only ever awaits a sleep.
        let (stream, line) = tokio::select! {
            line = self.stdout.next_line() => (Stream::Stdout, line?),
            line = self.stderr.next_line() => (Stream::Stderr, line?),
        };
        Ok(TaskLine {
            stream,
            time: line.time.unwrap_or_else(SystemTime::now),
            text: line.text,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn line(stream: Stream, second: u64, text: &str) -> TaskLine {
        TaskLine {
            stream,
            time: UNIX_EPOCH + Duration::from_secs(second),
            text: text.to_owned(),
        }
    }

    fn texts(lines: &[TaskLine]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn selection_merges_by_time_then_takes_since_and_tail() {
        let out = || {
            vec![
                line(Stream::Stdout, 1, "o1"),
                line(Stream::Stdout, 3, "o3"),
                line(Stream::Stdout, 3, "o3b"),
                line(Stream::Stdout, 5, "o5"),
            ]
        };
        let err = || vec![line(Stream::Stderr, 2, "e2"), line(Stream::Stderr, 3, "e3")];
        let at = |s| Some(UNIX_EPOCH + Duration::from_secs(s));
        let cases = [
            (None, None, vec!["o1", "e2", "o3", "o3b", "e3", "o5"]),
            (Some(2), None, vec!["e3", "o5"]),
            (Some(0), None, vec![]),
            (Some(100), None, vec!["o1", "e2", "o3", "o3b", "e3", "o5"]),
            (None, at(3), vec!["o3", "o3b", "e3", "o5"]),
            (Some(3), at(2), vec!["o3b", "e3", "o5"]),
            (None, at(6), vec![]),
        ];
        for (tail, since, expected) in cases {
            let selected = select(out(), err(), Selection { tail, since });
            assert_eq!(texts(&selected), expected, "tail {tail:?} since {since:?}");
        }
    }

    #[test]
    fn only_task_ids_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "..", "a/b", "../../etc", "x y"] {
            assert!(
                matches!(TaskLogs::of(dir.path(), bad), Err(TaskLogError::BadId(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            TaskLogs::of(dir.path(), "abc123"),
            Err(TaskLogError::Missing(_))
        ));
    }

    #[tokio::test]
    async fn a_task_is_read_then_followed_on_both_streams() {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = log_paths(&dir.path().join("tasks/t1"));
        let write = |path: &Path, text: &str| {
            logs::open_for_append(path)
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        };
        write(&stdout, "out 1\n");
        write(&stderr, "err 1\n");
        let task = TaskLogs::of(dir.path(), "t1").unwrap();
        let (lines, mut follower) = task.read(Selection::default()).unwrap();
        let mut got: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
        got.sort_by_key(|(_, text)| text.to_owned());
        assert_eq!(got, [(Stream::Stderr, "err 1"), (Stream::Stdout, "out 1")]);
        write(&stderr, "err 2\n");
        let next = tokio::time::timeout(Duration::from_secs(5), follower.next_line())
            .await
            .expect("a line within 5 s")
            .unwrap();
        assert_eq!((next.stream, next.text.as_str()), (Stream::Stderr, "err 2"));
        let (tail, _) = task
            .read(Selection {
                tail: Some(1),
                since: None,
            })
            .unwrap();
        assert_eq!(tail.len(), 1);
    }
}
