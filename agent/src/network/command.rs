//! Running the network tools (`ip`, `bridge`, `nft`, `iptables`, `sysctl`, `nsenter`):
//! output on success, the command line, exit status and stderr on failure, and a kill
//! after `COMMAND_TIMEOUT` for one that hangs.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::NetworkError;

/// How long a network tool may take before it is killed. They answer in milliseconds; a
/// whole ruleset of thousands of rules in about a second; `iptables -w 5` waits up to 5 s
/// for another writer's lock. One that takes longer is stuck (a hung netlink peer, a lock
/// never released), and the daemon must not hang with it: a leave, a reconcile or a
/// reload waits on these commands.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args…`, feeding `stdin` (an `ip -batch -` script) when given, and returns
/// its stdout; kills it after [`COMMAND_TIMEOUT`].
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetworkError> {
    run_within(program, args, stdin, COMMAND_TIMEOUT)
}

fn run_within(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, NetworkError> {
    let command_line = |stderr: &str| {
        let mut line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(script) = stdin {
            line.push_str(&format!(" <<< {:?}", script_excerpt(script, stderr)));
        }
        line
    };
    let spawn_error = |source| NetworkError::Spawn {
        command: command_line(""),
        program: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        // Messages in one language: some failures are told apart by their text.
        .env("LC_ALL", "C")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let deadline = Instant::now() + timeout;
    let exchanged =
        exchange(&mut child, stdin.unwrap_or_default().as_bytes(), deadline).and_then(|output| {
            let Some((stdout, stderr)) = output else {
                return Ok(None);
            };
            Ok(exited_by(&child, deadline)?.map(|()| (stdout, stderr)))
        });
    let (stdout, stderr) = match exchanged {
        Ok(Some(output)) => output,
        failed => {
            // Killed whatever went wrong, so that no tool runs on unowned. One blocked in
            // the kernel (waiting for a lock) dies only once it wakes: it is reaped on a
            // thread of its own, not waited for here.
            let _ = child.kill();
            std::thread::spawn(move || child.wait());
            return Err(match failed {
                Err(source) => NetworkError::Pipe {
                    command: command_line(""),
                    source,
                },
                Ok(_) => NetworkError::TimedOut {
                    command: command_line(""),
                    after: timeout,
                },
            });
        }
    };
    // It has exited (`exited_by`): this reaps it.
    let status = child.wait().map_err(spawn_error)?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
        return Err(NetworkError::Command {
            command: command_line(&stderr),
            status: status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Feeds `input` to `child` while reading its stdout and stderr, all three pipes
/// non-blocking under one `poll` (written first, then read, a long script could fill the
/// child's stderr pipe while the child still waits for the rest of its input: both would
/// wait for ever). Returns both outputs once the child has closed them, or `None` when
/// `deadline` passes first. What `wait_with_output` does, with a deadline and no thread.
fn exchange(
    child: &mut Child,
    mut input: &[u8],
    deadline: Instant,
) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    // Dropping a pipe closes it: the child's stdin when the input is all written (or it
    // stopped reading), our ends of its output at their end.
    let mut writer = child.stdin.take().filter(|_| !input.is_empty());
    let mut readers = [
        child
            .stdout
            .take()
            .map(|pipe| File::from(OwnedFd::from(pipe))),
        child
            .stderr
            .take()
            .map(|pipe| File::from(OwnedFd::from(pipe))),
    ];
    let mut outputs = [Vec::new(), Vec::new()];
    let fds = writer
        .as_ref()
        .map(AsRawFd::as_raw_fd)
        .into_iter()
        .chain(readers[0].as_ref().map(AsRawFd::as_raw_fd))
        .chain(readers[1].as_ref().map(AsRawFd::as_raw_fd));
    for fd in fds {
        set_nonblocking(fd)?;
    }
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let mut polled = Vec::with_capacity(3);
        if let Some(pipe) = &writer {
            polled.push(pollfd(pipe.as_raw_fd(), libc::POLLOUT));
        }
        for pipe in readers.iter().flatten() {
            polled.push(pollfd(pipe.as_raw_fd(), libc::POLLIN));
        }
        if polled.is_empty() {
            let [stdout, stderr] = outputs;
            return Ok(Some((stdout, stderr)));
        }
        if !poll(&mut polled, deadline)? {
            return Ok(None);
        }
        if let Some(pipe) = &mut writer {
            match pipe.write(input) {
                Ok(written) => input = &input[written..],
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                // The program exited, or closed its input: its status and stderr tell why.
                Err(_) => input = &[],
            }
            if input.is_empty() {
                writer = None;
            }
        }
        for (reader, output) in readers.iter_mut().zip(&mut outputs) {
            let Some(pipe) = reader else { continue };
            match pipe.read(&mut buffer) {
                Ok(0) => *reader = None,
                Ok(read) => output.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Waits until `child` has exited (without reaping it: `Some`) or `deadline` passes
/// (`None`). Asked once its output is closed, when it is exiting: a pidfd says when, where
/// the kernel has them (5.3 and later), else short looks.
fn exited_by(child: &Child, deadline: Instant) -> std::io::Result<Option<()>> {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits pid_t");
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if let Ok(raw) = i32::try_from(pidfd)
        && raw >= 0
    {
        // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut polled = [pollfd(pidfd.as_raw_fd(), libc::POLLIN)];
        return Ok(poll(&mut polled, deadline)?.then_some(()));
    }
    let mut pause = Duration::from_micros(50);
    loop {
        // SAFETY: siginfo_t is plain data, valid all zeroes.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid fills `info`; WNOWAIT leaves the child to be reaped by
        // `Child::wait`.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if waited != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: waitid filled `info`; si_pid is 0 while the child runs.
        if unsafe { info.si_pid() } != 0 {
            return Ok(Some(()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Polls `fds` until one is ready (`true`) or `deadline` passes (`false`), through signals.
fn poll(fds: &mut [libc::pollfd], deadline: Instant) -> std::io::Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        // Rounded up: a poll for 0 ms would spin through the last millisecond.
        let millis = libc::c_int::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX);
        let count = libc::nfds_t::try_from(fds.len()).expect("a few descriptors");
        // SAFETY: `fds` is a valid slice of pollfd for the duration of the call.
        match unsafe { libc::poll(fds.as_mut_ptr(), count, millis) } {
            -1 => {
                let error = std::io::Error::last_os_error();
                if error.kind() != ErrorKind::Interrupted {
                    return Err(error);
                }
            }
            0 => {}
            _ => return Ok(true),
        }
    }
}

fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor this process owns, with plain integer arguments.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags == -1 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Deletes link `name`, whether or not it exists.
pub(crate) fn delete_link(name: &str) -> Result<(), NetworkError> {
    match run("ip", &["link", "del", "dev", name], None) {
        Err(error) if error.is_missing_link() => Ok(()),
        other => other.map(drop),
    }
}

/// `outcome` of removing what a tool set, with the tool missing counted as done: without
/// it, nothing of its was set (a node without nft or iptables).
pub(crate) fn unless_tool_missing(outcome: Result<(), NetworkError>) -> Result<(), NetworkError> {
    match outcome {
        Err(NetworkError::Spawn { .. }) => Ok(()),
        other => other,
    }
}

/// Deletes nftables table `ip TABLE`, whether or not it exists (made empty first, so the
/// delete always has one to take, in the same transaction).
pub(crate) fn delete_table(table: &str) -> Result<(), NetworkError> {
    let script = format!("table ip {table} {{}}\ndelete table ip {table}\n");
    run("nft", &["-f", "-"], Some(&script)).map(drop)
}

/// Lines of a long batch script shown with a failure.
const SCRIPT_LINES_SHOWN: usize = 20;

/// The part of a batch `script` worth showing with its failure: a batch failure names only
/// line numbers (`Command failed -:2` in `stderr`), so those lines; the whole script when
/// short, else its start (a batch may hold thousands of entries).
fn script_excerpt(script: &str, stderr: &str) -> String {
    let lines: Vec<&str> = script.lines().collect();
    if lines.len() <= SCRIPT_LINES_SHOWN {
        return script.to_owned();
    }
    let failed: Vec<String> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("Command failed -:")?.trim().parse().ok())
        .filter_map(|n: usize| Some(format!("line {n}: {}", lines.get(n.checked_sub(1)?)?)))
        .take(SCRIPT_LINES_SHOWN)
        .collect();
    if !failed.is_empty() {
        return format!("{} lines, failed: {}", lines.len(), failed.join("; "));
    }
    format!(
        "{}\n… {} more lines",
        lines[..SCRIPT_LINES_SHOWN].join("\n"),
        lines.len() - SCRIPT_LINES_SHOWN
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_with_much_error_output_does_not_hang() {
        // `sh` reads its script line by line and writes 64 KiB to stderr per line, more
        // than a pipe holds, before it reads the next: the script (2 MiB) must be fed while
        // stderr is read.
        let line = "head -c 65536 /dev/zero >&2\n";
        let script = line.repeat(32) + &format!("#{}\n", "x".repeat(2 << 20)) + "echo done\n";
        let started = Instant::now();
        let stdout = run("sh", &["-s"], Some(&script)).unwrap();
        assert_eq!(stdout, "done\n");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_command_that_does_not_finish_is_killed_and_named() {
        let started = Instant::now();
        let error = run_within("sleep", &["30"], None, Duration::from_millis(200)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(error, NetworkError::TimedOut { .. }), "{error}");
        assert_eq!(
            error.to_string(),
            "`sleep 30` did not finish within 200ms and was killed (another tool holding \
             the kernel's lock?); run it by hand to see why"
        );
    }

    #[test]
    fn a_command_that_closes_its_output_and_stays_is_killed() {
        let started = Instant::now();
        let error = run_within(
            "sh",
            &["-c", "exec >&- 2>&- sleep 30"],
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert!(matches!(error, NetworkError::TimedOut { .. }), "{error}");
    }

    #[test]
    fn an_empty_script_and_one_the_tool_never_reads_both_end() {
        // stdin closed at once: `cat` sees its end.
        assert_eq!(run("cat", &[], Some("")).unwrap(), "");
        // The tool exits without reading 1 MiB of input: the write fails (EPIPE), the
        // exit status is what counts.
        let script = "x".repeat(1 << 20);
        assert_eq!(run("true", &[], Some(&script)).unwrap(), "");
        let error = run("false", &[], Some(&script)).unwrap_err();
        assert!(matches!(error, NetworkError::Command { .. }), "{error}");
    }

    #[test]
    fn a_failure_keeps_its_status_and_stderr() {
        let error = run("sh", &["-c", "echo out; echo bad >&2; exit 3"], None).unwrap_err();
        let NetworkError::Command { status, stderr, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(status, "exit status: 3");
        assert_eq!(stderr, "bad");
    }

    #[test]
    fn a_long_script_is_shown_by_its_failed_lines_or_its_start() {
        let short = "neigh del 10.0.0.2 dev x\n";
        assert_eq!(script_excerpt(short, ""), short);
        let long: String = (1..=25)
            .map(|i| format!("neigh del 10.0.0.{i} dev x\n"))
            .collect();
        let failed = "RTNETLINK answers: Invalid argument\nCommand failed -:23";
        assert_eq!(
            script_excerpt(&long, failed),
            "25 lines, failed: line 23: neigh del 10.0.0.23 dev x"
        );
        let shown = script_excerpt(&long, "Cannot open netlink socket");
        assert!(shown.starts_with("neigh del 10.0.0.1 dev x\n"));
        assert!(
            shown.ends_with("neigh del 10.0.0.20 dev x\n… 5 more lines"),
            "{shown}"
        );
    }
}
