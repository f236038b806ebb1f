//! Encryption at rest and autolock end to end, on a real daemon: a secret's and a config's
//! bytes are nowhere in the manager's data dir (nor their base64), with or without autolock;
//! `cluster update --autolock=true` prints a key that `unlock-key -q` repeats; the restarted
//! manager refuses every call but `unlock`, refuses a wrong key and a malformed one, and
//! after the right key (from stdin) serves the secret again; a rotated key replaces the old
//! one; with autolock off a restart needs no key. Turning autolock on rotates the log's data
//! key: the key file from before it (its key-encryption key beside it) opens nothing of the
//! log after. A second manager follows the cluster's
//! unlock key: it rewraps its own key file and, restarted, waits for the key too.
//!
//! Address pools inside 198.18.218.0/23 (no other test uses it), one per test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use swarm_controller::raft::crypt::KeyFile;
use swarm_controller::raft::log::{DurableLog, Location, LogError};

const LOCKED: &str = "this manager is locked: run `swarm unlock`";

/// `init` arguments for a pool of /26s (the tests share 198.18.218.0/23).
fn small_pool<'a>(pool: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    pool_args(pool, "26", more)
}

/// The files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                pending.push(entry.path());
            }
        } else if meta.is_file()
            && std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// Asserts that no file of the manager's data dir holds `secret`, plainly or in base64.
fn assert_nowhere(cluster: &Cluster, secret: &str) {
    let data = cluster.data(0);
    let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
    for needle in [secret, encoded.as_str()] {
        let found = files_containing(&data, needle.as_bytes());
        assert!(found.is_empty(), "{needle:?} is in {found:?}");
    }
}

/// The `SWMKEY-1-…` key in a command's output.
fn unlock_key_in(output: &str) -> String {
    output
        .split_whitespace()
        .find(|word| word.starts_with("SWMKEY-1-"))
        .unwrap_or_else(|| panic!("no unlock key in {output:?}"))
        .to_owned()
}

fn restart(cluster: &mut Cluster) {
    restart_node(cluster, 0);
}

fn restart_node(cluster: &mut Cluster, n: usize) {
    drop(cluster.daemons[n].take());
    // The killed daemon's socket: `start` waits for the new one.
    std::fs::remove_file(cluster.socket(n)).unwrap();
    cluster.daemons[n] = Some(start(&cluster.nodes[n].0, cluster.nodes[n].1));
}

fn unlock(cluster: &Cluster, key: &str) -> std::process::Output {
    unlock_node(cluster, 0, key)
}

/// `swarm unlock` on node `n`, the key on its stdin.
fn unlock_node(cluster: &Cluster, n: usize, key: &str) -> std::process::Output {
    output_with_input(
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(n).display()),
            )
            .arg("unlock"),
        &format!("{key}\n"),
    )
}

/// Waits until the manager's key file is wrapped as autolock `on` says (the manager rewraps
/// it when it sees the store's unlock key change).
fn wait_for_key_file(cluster: &Cluster, on: bool) {
    let path = cluster.data(0).join("raft.key");
    wait_for("the key file rewrapped", Duration::from_secs(10), || {
        let file = std::fs::read_to_string(&path).ok()?;
        (file.contains("\"kek\"") != on).then_some(())
    });
}

#[test]
fn secrets_are_encrypted_at_rest_and_a_locked_manager_waits_for_its_key() {
    let mut cluster = cluster(1, &init_args("198.18.218.0/24", &[]));
    let secret = "the-database-password-7f3a9c";
    let config = "listen_port=8417 # config-content-b81e";
    let out = output_with_input(
        Command::new(env!("CARGO_BIN_EXE_swarm"))
            .env(
                "SWARM_HOST",
                format!("unix://{}", cluster.socket(0).display()),
            )
            .args(["secret", "create", "db_password", "-"]),
        secret,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config_file = cluster.nodes[0].0.join("app.conf");
    std::fs::write(&config_file, config).unwrap();
    ok(
        &cluster,
        &[
            "config",
            "create",
            "app_conf",
            config_file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&config_file).unwrap();
    // Without autolock: the log is encrypted all the same.
    assert_nowhere(&cluster, secret);
    assert_nowhere(&cluster, config);
    let out = swarm(&cluster.socket(0), &["unlock-key"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("autolock is off"), "{out:?}");

    let key_path = cluster.data(0).join("raft.key");
    let open_key_file = std::fs::read(&key_path).unwrap();
    let key = unlock_key_in(&ok(&cluster, &["cluster", "update", "--autolock=true"]));
    assert_eq!(ok(&cluster, &["unlock-key", "-q"]).trim(), key);
    wait_for_key_file(&cluster, true);
    wait_for("the data key rotated", Duration::from_secs(10), || {
        let file = std::fs::read_to_string(&key_path).ok()?;
        (!file.contains("pending")).then_some(())
    });
    assert!(files_containing(&cluster.data(0), key.as_bytes()).is_empty());

    // The key file from before autolock, as a copy of the data dir taken then would hold
    // it: its data key opens nothing of the log now.
    drop(cluster.daemons[0].take());
    let old_key = KeyFile::from_json(&open_key_file)
        .unwrap()
        .unwrap(None)
        .expect("an open key file unwraps alone");
    let opened = DurableLog::open(Location::File {
        path: &cluster.data(0).join("raft.redb"),
        durable: false,
        key: old_key,
    });
    assert!(
        matches!(opened, Err(LogError::WrongKey { .. })),
        "the old data key opened the log"
    );
    std::fs::remove_file(cluster.socket(0)).unwrap();
    cluster.daemons[0] = Some(start(&cluster.nodes[0].0, cluster.nodes[0].1));
    for args in [&["secret", "ls"][..], &["node", "ls"], &["unlock-key"]] {
        let out = swarm(&cluster.socket(0), args);
        assert!(!out.status.success(), "{args:?} answered while locked");
        assert!(text(&out.stderr).contains(LOCKED), "{args:?}: {out:?}");
    }
    // A wrong key (well formed) and a malformed one: refused, nothing changes.
    let mut wrong = key.clone().into_bytes();
    let at = "SWMKEY-1-".len() + 5;
    wrong[at] = if wrong[at] == b'A' { b'B' } else { b'A' };
    let out = unlock(&cluster, &String::from_utf8(wrong).unwrap());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the unlock key is wrong"),
        "{out:?}"
    );
    let out = unlock(&cluster, "hunter2");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not an unlock key"), "{out:?}");
    let out = swarm(&cluster.socket(0), &["secret", "ls"]);
    assert!(text(&out.stderr).contains(LOCKED), "{out:?}");

    let out = unlock(&cluster, &key);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = eventually(&cluster.socket(0), &["secret", "ls", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "db_password");
    assert!(ok(&cluster, &["config", "inspect", "app_conf"]).contains("app_conf"));
    let out = unlock(&cluster, &key);
    assert!(text(&out.stderr).contains("not locked"), "{out:?}");

    // A rotated key: the old one no longer opens the manager.
    let key_file = cluster.data(0).join("raft.key");
    let wrapped_for_old = std::fs::read_to_string(&key_file).unwrap();
    let rotated = ok(&cluster, &["unlock-key", "--rotate"]);
    assert!(rotated.contains("Successfully rotated"), "{rotated}");
    let rotated = unlock_key_in(&rotated);
    assert_ne!(rotated, key);
    wait_for("the key file rewrapped", Duration::from_secs(10), || {
        (std::fs::read_to_string(&key_file).ok()? != wrapped_for_old).then_some(())
    });
    restart(&mut cluster);
    let out = unlock(&cluster, &key);
    assert!(
        text(&out.stderr).contains("the unlock key is wrong"),
        "{out:?}"
    );
    let out = unlock(&cluster, &rotated);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Autolock off: a restart needs no key.
    let out = eventually(
        &cluster.socket(0),
        &["cluster", "update", "--autolock=false"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for_key_file(&cluster, false);
    restart(&mut cluster);
    let out = eventually(&cluster.socket(0), &["secret", "ls", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "db_password");
    assert_nowhere(&cluster, secret);
    assert_nowhere(&cluster, config);
}

#[test]
fn init_with_autolock_locks_the_manager_at_restart() {
    let mut cluster = cluster(1, &small_pool("198.18.219.0/25", &["--autolock"]));
    let key = ok(&cluster, &["unlock-key", "-q"]).trim().to_owned();
    assert!(key.starts_with("SWMKEY-1-"), "{key}");
    assert!(
        !std::fs::read_to_string(cluster.data(0).join("raft.key"))
            .unwrap()
            .contains("\"kek\""),
        "the key-encryption key is not stored"
    );
    restart(&mut cluster);
    let out = swarm(&cluster.socket(0), &["node", "ls"]);
    assert!(text(&out.stderr).contains(LOCKED), "{out:?}");
    let out = unlock(&cluster, &key);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = eventually(&cluster.socket(0), &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn every_manager_follows_the_clusters_unlock_key() {
    let mut cluster = cluster(2, &small_pool("198.18.219.128/25", &[]));
    cluster.join(1, "manager", 0);
    let key = unlock_key_in(&ok(&cluster, &["cluster", "update", "--autolock=true"]));
    // The second manager learns the key through the store and rewraps its own key file.
    let path = cluster.data(1).join("raft.key");
    wait_for("manager 2 rewrapped", Duration::from_secs(20), || {
        let file = std::fs::read_to_string(&path).ok()?;
        (!file.contains("\"kek\"")).then_some(())
    });
    restart_node(&mut cluster, 1);
    let out = swarm(&cluster.socket(1), &["node", "ls"]);
    assert!(text(&out.stderr).contains(LOCKED), "{out:?}");
    let out = unlock_node(&cluster, 1, &key);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = eventually(&cluster.socket(1), &["node", "ls"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("node2"), "{}", text(&out.stdout));
}
