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
    let command_line = || {
        let mut line = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(script) = stdin {
            // A batch failure names only a line number ("Command failed -:2"): show the
            // script it counts in.
            line.push_str(&format!(" <<< {script:?}"));
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
            command: command_line(),
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
            command: command_line(),
            program: program.to_owned(),
            source,
        })?;
    if !output.status.success() {
        return Err(NetworkError::Command {
            command: command_line(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
