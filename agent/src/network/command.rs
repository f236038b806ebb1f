//! Running the network tools (`ip`, `iptables`, `nsenter`): output on success, the command
//! line, exit status and stderr on failure.

use std::io::Write;
use std::process::{Command, Stdio};

use super::NetworkError;

/// Runs `program args…`, feeding `stdin` (an `ip -batch -` script) when given, and returns
/// its stdout.
pub(crate) fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
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
        .map_err(|source| NetworkError::Spawn {
            command: command_line(""),
            program: program.to_owned(),
            source,
        })?;
    if let Some(script) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        // A write error means the program exited early; its status and stderr tell why.
        let _ = pipe.write_all(script.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| NetworkError::Spawn {
            command: command_line(""),
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(NetworkError::Command {
            command: command_line(&stderr),
            status: output.status.to_string(),
            stderr,
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
