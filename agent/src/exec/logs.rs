//! Container log files: the container writes its stdout and stderr straight into them
//! (opened with O_APPEND and handed to runc as the container's stdio), so logging needs no
//! process of ours between the container and the disk, and survives a daemon restart.
//!
//! The price: nothing stamps each line when it is written. Rotation copies the live file to
//! `NAME.1` and truncates it (logrotate's copytruncate): the container's O_APPEND writes go
//! on at the new end, but a line written between the copy and the truncation is lost. The
//! reader gives the time a line was seen to followed lines; lines read back from history have
//! no time.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often a follower looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Opens (creating) a log file for the container to append to.
pub fn open_for_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// The `n`th rotated file of `path` (1 is the most recent).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Rotates `path` when it has grown beyond `max_bytes`; says whether it did.
pub fn rotate_if_larger(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<bool> {
    let size = match fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    if size <= max_bytes {
        return Ok(false);
    }
    rotate(path, max_files)?;
    Ok(true)
}

/// Shifts `NAME.k` to `NAME.k+1` (dropping the oldest), copies the live file to `NAME.1`
/// and truncates it, keeping `max_files` files in all.
pub fn rotate(path: &Path, max_files: u32) -> io::Result<()> {
    if max_files > 1 {
        for n in (1..max_files - 1).rev() {
            match fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        fs::copy(path, rotated_path(path, 1))?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)
}

/// The last `n` lines of a log, reading back into rotated files as needed.
pub fn tail(path: &Path, max_files: u32, n: usize) -> io::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    for index in 0..max_files.max(1) {
        let file = if index == 0 {
            path.to_path_buf()
        } else {
            rotated_path(path, index)
        };
        let content = match fs::read(&file) {
            Ok(content) => content,
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) => return Err(error),
        };
        let mut older = split_lines(&content);
        let wanted = n - lines.len();
        if older.len() > wanted {
            older.drain(..older.len() - wanted);
        }
        older.append(&mut lines);
        lines = older;
        if lines.len() == n {
            break;
        }
    }
    Ok(lines)
}

fn split_lines(content: &[u8]) -> Vec<String> {
    let content = content.strip_suffix(b"\n").unwrap_or(content);
    if content.is_empty() {
        return Vec::new();
    }
    content
        .split(|&b| b == b'\n')
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect()
}

/// A line of a followed log, with the time it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub text: String,
    pub seen: SystemTime,
}

/// Follows a log file as it grows, across rotations.
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    ready: std::collections::VecDeque<String>,
}

impl Follower {
    /// Follows from the current end: only lines written from now on.
    pub fn from_end(path: &Path) -> io::Result<Self> {
        let offset = match fs::metadata(path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        Ok(Self::at(path, offset))
    }

    /// Follows from the start of the live file.
    pub fn from_start(path: &Path) -> Self {
        Self::at(path, 0)
    }

    fn at(path: &Path, offset: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
            ready: Default::default(),
        }
    }

    /// The next complete line; waits for it as long as it takes (bound it with a timeout).
    pub async fn next_line(&mut self) -> io::Result<LogLine> {
        loop {
            if let Some(text) = self.ready.pop_front() {
                return Ok(LogLine {
                    text,
                    seen: SystemTime::now(),
                });
            }
            if !self.read_new()? {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }

    /// Reads what was appended since the last read; says whether there was anything.
    fn read_new(&mut self) -> io::Result<bool> {
        let size = match fs::metadata(&self.path) {
            Ok(metadata) => metadata.len(),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(error) => return Err(error),
        };
        let mut bytes = Vec::new();
        if size < self.offset {
            // Rotated: the lines after our offset were copied into NAME.1 before the
            // truncation.
            read_from(&rotated_path(&self.path, 1), self.offset, &mut bytes)?;
            self.offset = 0;
        }
        self.offset += read_from(&self.path, self.offset, &mut bytes)?;
        if bytes.is_empty() {
            return Ok(false);
        }
        self.partial.extend_from_slice(&bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.ready
                .push_back(String::from_utf8_lossy(&line[..end]).into_owned());
        }
        Ok(true)
    }
}

/// Appends the bytes of `path` from `offset` to `into`; returns how many.
fn read_from(path: &Path, offset: u64, into: &mut Vec<u8>) -> io::Result<u64> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error),
    };
    file.seek(SeekFrom::Start(offset))?;
    let read = file.read_to_end(into)?;
    Ok(read as u64)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn append(path: &Path, text: &str) {
        open_for_append(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        for round in 0..4 {
            append(&log, &format!("round {round}\n"));
            assert!(rotate_if_larger(&log, 5, 3).unwrap());
            assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        }
        assert_eq!(
            fs::read_to_string(rotated_path(&log, 1)).unwrap(),
            "round 3\n"
        );
        assert_eq!(
            fs::read_to_string(rotated_path(&log, 2)).unwrap(),
            "round 2\n"
        );
        assert!(!rotated_path(&log, 3).exists());
        append(&log, "tiny\n");
        assert!(!rotate_if_larger(&log, 5, 3).unwrap());
        assert!(!rotate_if_larger(&dir.path().join("absent"), 5, 3).unwrap());
    }

    #[test]
    fn one_file_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "0123456789\n");
        assert!(rotate_if_larger(&log, 5, 1).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert!(!rotated_path(&log, 1).exists());
    }

    #[test]
    fn tail_reads_back_across_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "a\nb\n");
        rotate(&log, 3).unwrap();
        append(&log, "c\nd\n");
        rotate(&log, 3).unwrap();
        append(&log, "e\n");
        let cases = [
            (0, vec![]),
            (1, vec!["e"]),
            (3, vec!["c", "d", "e"]),
            (4, vec!["b", "c", "d", "e"]),
            (10, vec!["a", "b", "c", "d", "e"]),
        ];
        for (n, expected) in cases {
            assert_eq!(tail(&log, 3, n).unwrap(), expected, "n = {n}");
        }
        // Only max_files files are read.
        assert_eq!(tail(&log, 2, 10).unwrap(), vec!["c", "d", "e"]);
    }

    async fn next(follower: &mut Follower) -> String {
        tokio::time::timeout(Duration::from_secs(5), follower.next_line())
            .await
            .expect("no line within 5 s")
            .unwrap()
            .text
    }

    #[tokio::test]
    async fn follower_sees_new_lines_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "old\n");
        let mut follower = Follower::from_end(&log).unwrap();
        append(&log, "one\ntw");
        assert_eq!(next(&mut follower).await, "one");
        append(&log, "o\nthree\n");
        rotate(&log, 2).unwrap();
        append(&log, "four\n");
        assert_eq!(next(&mut follower).await, "two");
        assert_eq!(next(&mut follower).await, "three");
        assert_eq!(next(&mut follower).await, "four");
        let mut from_start = Follower::from_start(&log);
        assert_eq!(next(&mut from_start).await, "four");
    }
}
