//! Container log files: the container writes its stdout and stderr straight into them
//! (opened with O_APPEND and handed to runc as the container's stdio), so logging needs no
//! process of ours between the container and the disk, and survives a daemon restart.
//!
//! Nothing stamps a line as it is written, so the runtime's watcher (`LogWatch`, polled
//! every check interval) records in `NAME.times` how far the file had grown at each look:
//! a line's time is the first look that saw it, at most one interval late (after a daemon
//! restart, the first look of the new daemon). Rotation copies the live file to `NAME.1`
//! and truncates it (logrotate's copytruncate): the container's O_APPEND writes go on at
//! the new end, but a line written between the copy and the truncation is lost.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    suffixed(path, &format!(".{n}"))
}

/// The time index of a log file.
pub fn times_path(path: &Path) -> PathBuf {
    suffixed(path, ".times")
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A line of a log, with the time it was first seen on disk (`None` for output no look
/// has seen yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub text: String,
    pub time: Option<SystemTime>,
}

/// Watches one log file: indexes its growth and rotates it by size.
#[derive(Debug)]
pub struct LogWatch {
    path: PathBuf,
    max_bytes: u64,
    max_files: u32,
    /// The size at the last look; output beyond it is new.
    seen: u64,
}

impl LogWatch {
    /// Starts watching, from where the index ends: output written while no daemon watched
    /// gets the time of the first look.
    pub fn new(path: &Path, max_bytes: u64, max_files: u32) -> io::Result<Self> {
        let indexed = match fs::read_to_string(times_path(path)) {
            Ok(text) => parse_times(&text).last().map_or(0, |(size, _)| *size),
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(error),
        };
        let size = size_of(path)?.unwrap_or(0);
        Ok(Self {
            path: path.to_path_buf(),
            max_bytes,
            max_files,
            // An index beyond the file belongs to output truncated since.
            seen: if indexed <= size { indexed } else { 0 },
        })
    }

    /// One look at `now`: records new output in the index, and rotates the file once it
    /// is larger than `max_bytes`; says whether it rotated.
    pub fn look(&mut self, now: SystemTime) -> io::Result<bool> {
        let Some(size) = size_of(&self.path)? else {
            return Ok(false);
        };
        if size < self.seen {
            // Truncated by someone else: start over.
            self.seen = 0;
        }
        if size > self.seen {
            record(&self.path, size, now)?;
            self.seen = size;
        }
        if size <= self.max_bytes {
            return Ok(false);
        }
        let copied = rotate(&self.path, self.max_files)?;
        if copied > size {
            // Written between this look and the copy: seen now as well.
            record(&rotated_path(&self.path, 1), copied, now)?;
        }
        self.seen = 0;
        Ok(true)
    }
}

/// Appends to the index of `path`: the file held `size` bytes at `time`.
fn record(path: &Path, size: u64, time: SystemTime) -> io::Result<()> {
    let nanos = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut index = OpenOptions::new()
        .create(true)
        .append(true)
        .open(times_path(path))?;
    writeln!(index, "{size} {nanos}")
}

fn size_of(path: &Path) -> io::Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata.len())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Shifts `NAME.k` to `NAME.k+1` (dropping the oldest), copies the live file to `NAME.1`
/// and truncates it, keeping `max_files` files in all; each file's index moves with it.
/// Returns how many bytes went to `NAME.1`.
pub fn rotate(path: &Path, max_files: u32) -> io::Result<u64> {
    let mut copied = 0;
    if max_files > 1 {
        for n in (1..max_files - 1).rev() {
            let (from, to) = (rotated_path(path, n), rotated_path(path, n + 1));
            rename_if_present(&from, &to)?;
            rename_if_present(&times_path(&from), &times_path(&to))?;
        }
        let first = rotated_path(path, 1);
        copied = fs::copy(path, &first)?;
        rename_if_present(&times_path(path), &times_path(&first))?;
    } else {
        remove_if_present(&times_path(path))?;
    }
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(copied)
}

fn rename_if_present(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => remove_if_present(to),
        other => other,
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes a log with its rotated files and indexes (when its container's task goes).
pub fn remove(path: &Path, max_files: u32) -> io::Result<()> {
    for n in 0..max_files.max(1) {
        let file = if n == 0 {
            path.to_path_buf()
        } else {
            rotated_path(path, n)
        };
        remove_if_present(&times_path(&file))?;
        remove_if_present(&file)?;
    }
    Ok(())
}

/// The last `n` lines of a log, reading back into rotated files as needed.
pub fn tail(path: &Path, max_files: u32, n: usize) -> io::Result<Vec<LogLine>> {
    tail_before(path, max_files, n, u64::MAX)
}

/// The last `n` lines of a log whose live file ends at `live_end` bytes: what a reader
/// sees before following from `live_end` on (`Follower::from_offset`), without a line
/// twice or none lost in between.
pub fn tail_before(
    path: &Path,
    max_files: u32,
    n: usize,
    live_end: u64,
) -> io::Result<Vec<LogLine>> {
    let mut lines: VecDeque<LogLine> = VecDeque::new();
    for index in 0..max_files.max(1) {
        if lines.len() == n {
            break;
        }
        let file = if index == 0 {
            path.to_path_buf()
        } else {
            rotated_path(path, index)
        };
        let content = match fs::read(&file) {
            Ok(mut content) if index == 0 => {
                content.truncate(usize::try_from(live_end).unwrap_or(usize::MAX));
                content
            }
            Ok(content) => content,
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) => return Err(error),
        };
        let times = match fs::read_to_string(times_path(&file)) {
            Ok(text) => parse_times(&text),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error),
        };
        for line in stamped_lines(&content, &times).into_iter().rev() {
            if lines.len() == n {
                break;
            }
            lines.push_front(line);
        }
    }
    Ok(lines.into())
}

/// The index's records: (size of the file, time it was seen at that size).
fn parse_times(text: &str) -> Vec<(u64, SystemTime)> {
    text.lines()
        .filter_map(|line| {
            let (size, nanos) = line.split_once(' ')?;
            let nanos: u64 = nanos.parse().ok()?;
            Some((size.parse().ok()?, UNIX_EPOCH + Duration::from_nanos(nanos)))
        })
        .collect()
}

/// The complete lines of `content` (a last line without its newline counts), each with
/// the time of the first record that covers its end.
fn stamped_lines(content: &[u8], times: &[(u64, SystemTime)]) -> Vec<LogLine> {
    let mut lines = Vec::new();
    let mut start = 0;
    while start < content.len() {
        let end = content[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |at| start + at + 1);
        let text = content[start..end]
            .strip_suffix(b"\n")
            .unwrap_or(&content[start..end]);
        let time = times
            .iter()
            .find(|(size, _)| *size >= end as u64)
            .map(|(_, time)| *time);
        lines.push(LogLine {
            text: String::from_utf8_lossy(text).into_owned(),
            time,
        });
        start = end;
    }
    lines
}

/// Follows a log file as it grows, across rotations.
pub struct Follower {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    ready: VecDeque<String>,
}

impl Follower {
    /// Follows from the current end: only lines written from now on.
    pub fn from_end(path: &Path) -> io::Result<Self> {
        Ok(Self::at(path, size_of(path)?.unwrap_or(0)))
    }

    /// Follows from the start of the live file.
    pub fn from_start(path: &Path) -> Self {
        Self::at(path, 0)
    }

    /// Follows from `offset` bytes into the live file (where a `tail_before` ended).
    pub fn from_offset(path: &Path, offset: u64) -> Self {
        Self::at(path, offset)
    }

    fn at(path: &Path, offset: u64) -> Self {
        Self {
            path: path.to_path_buf(),
            offset,
            partial: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next complete line, stamped with the time this follower saw it; waits for it as
    /// long as it takes (bound it with a timeout).
    pub async fn next_line(&mut self) -> io::Result<LogLine> {
        loop {
            if let Some(text) = self.ready.pop_front() {
                return Ok(LogLine {
                    text,
                    time: Some(SystemTime::now()),
                });
            }
            if !self.read_new()? {
                tokio::time::sleep(FOLLOW_POLL).await;
            }
        }
    }

    /// Reads what was appended since the last read; says whether there was anything.
    fn read_new(&mut self) -> io::Result<bool> {
        let Some(size) = size_of(&self.path)? else {
            return Ok(false);
        };
        let mut bytes = Vec::new();
        if size < self.offset {
            // Rotated: the lines after our offset were copied into NAME.1 before the
            // truncation.
            append_from(&rotated_path(&self.path, 1), self.offset, &mut bytes)?;
            self.offset = 0;
        }
        self.offset += append_from(&self.path, self.offset, &mut bytes)?;
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

/// The bytes of `path` from `offset` on.
pub fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    append_from(path, offset, &mut bytes)?;
    Ok(bytes)
}

/// Appends the bytes of `path` from `offset` to `into`; returns how many.
fn append_from(path: &Path, offset: u64, into: &mut Vec<u8>) -> io::Result<u64> {
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
    use super::*;

    fn append(path: &Path, text: &str) {
        open_for_append(path)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn texts(lines: &[LogLine]) -> Vec<&str> {
        lines.iter().map(|line| line.text.as_str()).collect()
    }

    #[test]
    fn watch_rotates_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let mut watch = LogWatch::new(&log, 5, 3).unwrap();
        assert!(!watch.look(at(1)).unwrap(), "no file yet");
        for round in 0..4 {
            append(&log, &format!("round {round}\n"));
            assert!(watch.look(at(10 + round)).unwrap());
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
        assert!(!times_path(&rotated_path(&log, 3)).exists());
        append(&log, "tiny\n");
        assert!(!watch.look(at(20)).unwrap());
        let lines = tail(&log, 3, 3).unwrap();
        let expected = [("round 2", 12), ("round 3", 13), ("tiny", 20)];
        assert_eq!(lines.len(), 3);
        for (line, (text, second)) in lines.iter().zip(expected) {
            assert_eq!((line.text.as_str(), line.time), (text, Some(at(second))));
        }
        remove(&log, 3).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_new_watch_goes_on_from_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "before\n");
        let mut watch = LogWatch::new(&log, 1 << 20, 2).unwrap();
        watch.look(at(1)).unwrap();
        append(&log, "while down\n");
        // A restarted daemon watches again.
        let mut watch = LogWatch::new(&log, 1 << 20, 2).unwrap();
        watch.look(at(5)).unwrap();
        let times: Vec<_> = tail(&log, 2, 10)
            .unwrap()
            .into_iter()
            .map(|line| (line.text, line.time))
            .collect();
        assert_eq!(
            times,
            [
                ("before".to_string(), Some(at(1))),
                ("while down".to_string(), Some(at(5)))
            ]
        );
    }

    #[test]
    fn one_file_only_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "0123456789\n");
        let mut watch = LogWatch::new(&log, 5, 1).unwrap();
        assert!(watch.look(at(1)).unwrap());
        assert_eq!(fs::metadata(&log).unwrap().len(), 0);
        assert!(!rotated_path(&log, 1).exists());
        assert!(!times_path(&log).exists());
    }

    #[test]
    fn lines_take_the_time_of_the_first_look_that_saw_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let mut watch = LogWatch::new(&log, 1 << 20, 2).unwrap();
        append(&log, "a\nb\n");
        watch.look(at(1)).unwrap();
        watch.look(at(2)).unwrap(); // nothing new: no record
        append(&log, "c\nd");
        watch.look(at(3)).unwrap();
        append(&log, "e\nf\n");
        let lines = tail(&log, 2, 10).unwrap();
        assert_eq!(texts(&lines), ["a", "b", "c", "de", "f"]);
        let times: Vec<_> = lines.iter().map(|line| line.time).collect();
        // "de" was half seen at 3 s, complete only later: not seen yet, like "f".
        assert_eq!(times, [Some(at(1)), Some(at(1)), Some(at(3)), None, None]);
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
            assert_eq!(texts(&tail(&log, 3, n).unwrap()), expected, "n = {n}");
        }
        // Only max_files files are read.
        assert_eq!(texts(&tail(&log, 2, 10).unwrap()), ["c", "d", "e"]);
    }

    #[tokio::test]
    async fn tail_before_and_a_follower_from_its_end_see_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        append(&log, "a\nb\n");
        let end = fs::metadata(&log).unwrap().len();
        append(&log, "c\n");
        assert_eq!(texts(&tail_before(&log, 2, 10, end).unwrap()), ["a", "b"]);
        let mut follower = Follower::from_offset(&log, end);
        assert_eq!(next(&mut follower).await, "c");
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
