//! Secrets and configs end to end: `swarm secret create|ls|inspect|rm` on a real daemon, and
//! a stack whose service reads its secret from /run/secrets (a tmpfs, mode 0444) and its
//! config at its target with the mode asked for; the node's data dir holds no copy of the
//! secret's bytes outside memory; a changed secret file rolls the service and the new task
//! reads the new content.
//!
//! Address pool 198.18.200.0/23 (no other test uses it); the cluster, dropped, removes
//! containers, mounts and bridges even when the test fails.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;

/// How long a task may take to reach a state, with room for parallel tests on two cores.
const TASK_WAIT: Duration = Duration::from_secs(60);

/// The id of the one running task of `service`, once it runs and is not `previous`.
fn running_task(cluster: &Cluster, service: &str, previous: Option<&str>) -> String {
    wait_for("a new running task", TASK_WAIT, || {
        let tasks = live_tasks(cluster, service);
        let task = tasks.first()?;
        let id = task["id"].as_str()?;
        (tasks.len() == 1 && task["status"]["state"] == "running" && Some(id) != previous)
            .then(|| id.to_owned())
    })
}

/// The content of `path` once it holds `count` lines.
fn once_written(path: &Path, count: usize) -> Vec<String> {
    wait_for(&format!("{}", path.display()), TASK_WAIT, || {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= count).then_some(lines)
    })
}

/// The files under `dir` on the same filesystem as `dir` (a tmpfs mounted inside is
/// memory, not the node's disk) that contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let device = std::fs::metadata(dir).unwrap().dev();
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != device {
            continue;
        }
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

fn sha256(text: &str) -> String {
    swarm_api::files::digest_of(text.as_bytes())
        .trim_start_matches("sha256:")
        .to_owned()
}

const STACK: &str = "services:
  api:
    image: IMAGE
    entrypoint: [/bin/sh, -c]
    command:
      - >-
        sha256sum /run/secrets/token | cut -d' ' -f1 > /out/token-sum;
        stat -c '%a %u' /run/secrets/token > /out/token-mode;
        grep ' /run/secrets/token ' /proc/mounts | cut -d' ' -f3,4 > /out/token-mount;
        sha256sum /run/secrets/imported | cut -d' ' -f1 > /out/imported;
        cat /etc/site.conf > /out/site;
        stat -c '%a' /etc/site.conf > /out/site-mode;
        echo done >> /out/runs;
        while true; do sleep 1; done
    stop_grace_period: 1s
    volumes: [out:/out]
    secrets:
      - token
      - {source: imported, target: imported}
    configs:
      - {source: site, target: /etc/site.conf, mode: 0440}
volumes:
  out:
secrets:
  token:
    file: ./token.txt
  imported:
    external: true
    name: imported
configs:
  site:
    file: ./site.conf
";

#[test]
fn a_task_reads_its_secrets_from_a_tmpfs_and_a_changed_secret_rolls_it() {
    let test = "a_task_reads_its_secrets_from_a_tmpfs_and_a_changed_secret_rolls_it";
    let Some(registry) = registry_for(test) else {
        return;
    };
    let image = format!("{}/swarm/hello:1", registry.addr());
    let cluster = cluster(1, &init_args("198.18.200.0/23", &[]));
    let socket = cluster.socket(0);
    let work = tempfile::tempdir().unwrap();

    // An imperative secret, from stdin; never shown back.
    let imported = "imported-e2e-0c9f3a";
    let out = output_with_input(
        std::process::Command::new(env!("CARGO_BIN_EXE_swarm"))
            .env("SWARM_HOST", format!("unix://{}", socket.display()))
            .args(["secret", "create", "--label", "team=web", "imported", "-"]),
        imported,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    for args in [
        &["secret", "ls"][..],
        &["secret", "inspect", "imported"],
        &["secret", "inspect", "imported", "--format", "json"],
    ] {
        let out = swarm(&socket, args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let shown = text(&out.stdout);
        assert!(shown.contains("imported"), "{shown}");
        assert!(!shown.contains(imported), "{shown}");
    }
    // Bad input: a name with a slash, a secret over Docker's limit; nothing is stored.
    std::fs::write(work.path().join("big"), vec![b'x'; 500 * 1024 + 1]).unwrap();
    let big = work.path().join("big").display().to_string();
    for (args, error) in [
        (
            ["secret", "create", "a/b", big.as_str()],
            "secret a/b: a name cannot contain '/'",
        ),
        (
            ["secret", "create", "big", big.as_str()],
            "secret big is 512001 bytes: the limit is 500 KiB",
        ),
    ] {
        let out = swarm(&socket, &args);
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(error), "{}", text(&out.stderr));
    }
    let out = swarm(&socket, &["secret", "ls", "-q"]);
    assert_eq!(text(&out.stdout), "imported\n");

    // A service given them by flags: the secret at a relative target with its mode, a
    // config made by `config create` at its target.
    std::fs::write(work.path().join("imp.conf"), "made by hand\n").unwrap();
    let imp = work.path().join("imp.conf").display().to_string();
    let out = swarm(&socket, &["config", "create", "imp_conf", &imp]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(
        &socket,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "reader",
            "--stop-grace-period",
            "1s",
            "--secret",
            "source=imported,target=key,mode=0400",
            "--config",
            "source=imp_conf,target=/etc/imp.conf",
            "--mount",
            "type=volume,source=reader_out,target=/out",
            "--entrypoint",
            "/bin/sh -c",
            &image,
            "stat -c '%a' /run/secrets/key > /out/key-mode; cat /etc/imp.conf > /out/imp; \
             while true; do sleep 1; done",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    running_task(&cluster, "reader", None);
    let reader_out = cluster.data(0).join("volumes/reader_out/_data");
    assert_eq!(once_written(&reader_out.join("key-mode"), 1), ["400"]);
    assert_eq!(once_written(&reader_out.join("imp"), 1), ["made by hand"]);

    // A stack with a secret file, the imported secret and a config.
    let first = "first-e2e-secret-7d1be2";
    std::fs::write(work.path().join("token.txt"), first).unwrap();
    std::fs::write(work.path().join("site.conf"), "listen 8080;\n").unwrap();
    let file = work.path().join("vault.yaml");
    std::fs::write(&file, STACK.replace("IMAGE", &image)).unwrap();
    let file = file.display().to_string();
    let out = swarm(&socket, &["stack", "deploy", "-d", "-c", &file, "vault"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(first), "{}", text(&out.stdout));
    let task = running_task(&cluster, "vault_api", None);

    let out_dir = cluster.data(0).join("volumes/vault_out/_data");
    assert_eq!(once_written(&out_dir.join("runs"), 1), ["done"]);
    assert_eq!(once_written(&out_dir.join("token-sum"), 1), [sha256(first)]);
    assert_eq!(once_written(&out_dir.join("token-mode"), 1), ["444 0"]);
    let mount = once_written(&out_dir.join("token-mount"), 1);
    assert!(
        mount[0].starts_with("tmpfs ro,"),
        "the secret is a read-only file of a tmpfs: {mount:?}"
    );
    assert_eq!(
        once_written(&out_dir.join("imported"), 1),
        [sha256(imported)]
    );
    assert_eq!(once_written(&out_dir.join("site"), 1), ["listen 8080;"]);
    assert_eq!(once_written(&out_dir.join("site-mode"), 1), ["440"]);

    // The node's disk holds no copy of the secrets (their tmpfs is memory).
    for secret in [first, imported] {
        let found = files_containing(&cluster.data(0), secret.as_bytes());
        assert!(found.is_empty(), "{secret} found in {found:?}");
    }

    // Removal while in use names the service; a stack's secret goes with its stack.
    let out = swarm(&socket, &["secret", "rm", "imported"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("secret imported is in use by service reader, vault_api"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&socket, &["secret", "rm", "vault_token"]);
    assert!(
        text(&out.stderr).contains("belongs to stack vault"),
        "{}",
        text(&out.stderr)
    );
    let out = swarm(&socket, &["service", "inspect", "vault_api"]);
    assert!(
        text(&out.stdout).contains("vault_token"),
        "{}",
        text(&out.stdout)
    );

    // A changed secret file: the secret and the service are updated, the service rolls,
    // and the new task reads the new content.
    let second = "second-e2e-secret-42aa90";
    std::fs::write(work.path().join("token.txt"), second).unwrap();
    let out = swarm(&socket, &["stack", "deploy", "-d", "-c", &file, "vault"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("update secret vault_token") && shown.contains("update service vault_api"),
        "{shown}"
    );
    assert!(!shown.contains(second) && !shown.contains(first), "{shown}");
    running_task(&cluster, "vault_api", Some(&task));
    assert_eq!(once_written(&out_dir.join("runs"), 2), ["done", "done"]);
    assert_eq!(
        once_written(&out_dir.join("token-sum"), 1),
        [sha256(second)]
    );
    let found = files_containing(&cluster.data(0), second.as_bytes());
    assert!(found.is_empty(), "found in {found:?}");

    // The stack goes with its secrets and config; the imported secret is free again.
    let out = swarm(&socket, &["stack", "rm", "vault"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&socket, &["service", "rm", "reader"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&socket, &["config", "rm", "imp_conf"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&socket, &["secret", "rm", "imported"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = swarm(&socket, &["secret", "ls", "-q"]);
    assert_eq!(text(&out.stdout), "");
    let out = swarm(&socket, &["config", "ls", "-q"]);
    assert_eq!(text(&out.stdout), "");
}
