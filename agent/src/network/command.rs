//! Running the network tools (`ip`, `bridge`, `nft`, `iptables`, `sysctl`, `nsenter`):
//! output on success, the command line, exit status and stderr on failure, and a kill
//! after `COMMAND_TIMEOUT` for one that hangs.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
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
    let exited = exchange(&mut child, stdin, deadline)
        .and_then(|(stdout, stderr)| Some((stdout, stderr, exited_by(&mut child, deadline)?)));
    let Some((stdout, stderr, status)) = exited else {
        // Killing it closes its ends of the pipes, which ends the threads' reads and
        // writes (a tool that left a child holding them leaves those threads blocked, not
        // the caller). One blocked in the kernel (waiting for a lock) dies only once it
        // wakes: it is reaped on a thread of its own, not waited for here.
        let _ = child.kill();
        std::thread::spawn(move || child.wait());
        return Err(NetworkError::TimedOut {
            command: command_line(""),
            after: timeout,
        });
    };
    let status = status.map_err(spawn_error)?;
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

/// Feeds `stdin` to `child` while reading its stdout and stderr, each on a thread of its
/// own (written first, then read, a long script could fill the child's stderr pipe while
/// the child still waits for the rest of its input: both would wait for ever). Returns
/// both outputs once the child has closed them, or `None` when `deadline` passes first.
fn exchange(
    child: &mut Child,
    stdin: Option<&str>,
    deadline: Instant,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if let (Some(script), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let script = script.to_owned();
        // A write error means the program exited early; its status and stderr tell why.
        std::thread::spawn(move || pipe.write_all(script.as_bytes()));
    }
    let (sender, outputs) = mpsc::channel();
    let read = |pipe: Option<Box<dyn Read + Send>>, stream: usize| {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = sender.send((stream, bytes));
        });
    };
    read(child.stdout.take().map(|p| Box::new(p) as _), 0);
    read(child.stderr.take().map(|p| Box::new(p) as _), 1);
    let mut streams = [Vec::new(), Vec::new()];
    for _ in 0..2 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (stream, bytes) = outputs.recv_timeout(wait).ok()?;
        streams[stream] = bytes;
    }
    let [stdout, stderr] = streams;
    Some((stdout, stderr))
}

/// `child`'s exit status once it has exited, or `None` when `deadline` passes first. Asked
/// for after its output closed, when it is exiting: the first looks come quickly.
fn exited_by(child: &mut Child, deadline: Instant) -> Option<std::io::Result<ExitStatus>> {
    let mut pause = Duration::from_micros(50);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(Ok(status)),
            Ok(None) => {}
            Err(error) => return Some(Err(error)),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(10));
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
