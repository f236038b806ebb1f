//! `swarm daemon` as a real process, driven by the real `swarm` commands over its unix
//! socket: init, node ls, join-token, and a restart from the data dir.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon process, killed when the test ends however it ends.
struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path, port: u16) -> Daemon {
    let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["daemon", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}"), "--socket"])
        .arg(dir.join("swarm.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Daemon { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("swarm.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}

fn swarm(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .env("SWARM_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Retries a command until it succeeds (a restarted manager elects itself first).
fn eventually(socket: &Path, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = swarm(socket, args);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn init_then_list_nodes_and_tokens_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("swarm.sock");
    let port = free_port();
    let mut daemon = start(dir.path(), port);

    let out = swarm(&socket, &["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a swarm manager: run `swarm init`"),
        "{}",
        text(&out.stderr)
    );

    let out = swarm(&socket, &["init"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with("Swarm initialized: current node ("),
        "{printed}"
    );
    let worker_token = printed
        .split_whitespace()
        .skip_while(|w| *w != "--token")
        .nth(1)
        .expect("the join command carries a token")
        .to_owned();
    assert!(worker_token.starts_with("SWMTKN-1-"), "{worker_token}");
    assert!(
        printed.contains(&format!("{worker_token} 127.0.0.1:{port}")),
        "{printed}"
    );

    let out = swarm(&socket, &["init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("already part of a swarm"));

    let out = swarm(&socket, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("MANAGER STATUS"),
        "{table}"
    );
    assert!(
        lines[1].contains(" * ")
            && lines[1].contains("Ready")
            && lines[1].contains("Active")
            && lines[1].ends_with("Leader"),
        "{table}"
    );

    let out = swarm(&socket, &["join-token", "worker", "-q"]);
    assert_eq!(text(&out.stdout).trim(), worker_token);
    let out = swarm(&socket, &["join-token", "worker", "--rotate", "-q"]);
    let rotated = text(&out.stdout).trim().to_owned();
    assert!(
        rotated.starts_with("SWMTKN-1-") && rotated != worker_token,
        "{rotated}"
    );
    // The CA digest part stays: only the secret changes.
    assert_eq!(
        rotated.rsplit_once('-').unwrap().0,
        worker_token.rsplit_once('-').unwrap().0
    );

    // SIGTERM: the daemon stops cleanly and removes its socket.
    let pid = daemon.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!socket.exists());

    // Restarted from its data dir, the node is still the manager of its cluster.
    let _daemon = start(dir.path(), port);
    let out = eventually(&socket, &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("Leader")
    );
    let out = swarm(&socket, &["join-token", "worker", "-q"]);
    assert_eq!(
        text(&out.stdout).trim(),
        rotated,
        "the rotated token survived the restart"
    );
}

#[test]
fn a_missing_daemon_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = swarm(&dir.path().join("nothing.sock"), &["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is `swarm daemon` running?"),
        "{}",
        text(&out.stderr)
    );
}
