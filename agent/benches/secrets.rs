//! What configs, secrets and volumes add to a task's start, on this machine, in one run: a
//! task with 3 secrets and 3 configs (`worker::secrets::prepare`: a tmpfs mounted, six files
//! written, owned and moded) and 2 named volumes (`Volumes::mounts`: each made at its first
//! use and filled from the image's content at its target, Docker's copy-up — the costliest
//! case, a volume's first task), then `RuncRuntime::start` with the eight binds, against the
//! same task without them (`RuncRuntime::start` only) — alternated, each first in turn, 30
//! of each, until the container runs. The files' release (unmount, removal) is timed apart.
//!
//! Needs root, runc and busybox-static. Run with `cargo bench -p swarm-agent --bench secrets`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use swarm_agent::exec::{
    ContainerConfig, LogConfig, Resources, RuncConfig, RuncRuntime, Runtime, Status, User,
};
use swarm_agent::volume::Volumes;
use swarm_agent::worker::secrets;
use swarm_api::files::{FileContent, FileContents};
use swarm_api::spec::ContainerSpec;

const ITERATIONS: usize = 30;

fn main() {
    let ready = swarm_testkit::is_root()
        && swarm_testkit::has_program("runc")
        && Path::new("/bin/busybox").is_file();
    if !swarm_testkit::require("bench secrets", ready, "root, runc and busybox-static") {
        return;
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(run());
}

fn config(dir: &Path, rootfs: &Path, id: &str) -> ContainerConfig {
    let logs = dir.join("logs");
    ContainerConfig {
        id: id.to_string(),
        rootfs: rootfs.to_path_buf(),
        args: vec!["sleep".into(), "600".into()],
        env: vec![],
        cwd: "/".into(),
        user: User::default(),
        hostname: id.to_string(),
        netns: None,
        files: vec![],
        mounts: vec![],
        options: Default::default(),
        resources: Resources::default(),
        logs: LogConfig {
            stdout: logs.join(format!("{id}.out")),
            stderr: logs.join(format!("{id}.err")),
            max_bytes: 1 << 20,
            max_files: 2,
        },
    }
}

/// A container spec with 3 secrets and 3 configs of a few KiB each, and their contents.
/// (Its volumes are per iteration: see [`volumes`].)
fn with_files() -> (ContainerSpec, FileContents) {
    let mut contents = FileContents::new();
    let mut reference = |kind: &str, i: usize, target: String| {
        let content = FileContent::new(format!("{kind}{i}-").repeat(1000).into_bytes());
        let digest = content.digest();
        contents.insert(digest.clone(), content);
        serde_json::json!({
            "source": format!("{kind}{i}"), "target": target,
            "uid": "0", "gid": "0", "mode": 0o444, "digest": digest,
        })
    };
    let secrets: Vec<_> = (0..3)
        .map(|i| reference("secret", i, format!("/run/secrets/s{i}")))
        .collect();
    let configs: Vec<_> = (0..3)
        .map(|i| reference("config", i, format!("/etc/c{i}.conf")))
        .collect();
    let spec = serde_json::from_value(serde_json::json!({
        "image": "busybox", "env": {}, "labels": {}, "stop_grace_period": "10s",
        "mounts": [], "configs": configs, "secrets": secrets,
    }))
    .expect("a container spec");
    (spec, contents)
}

/// Two named volumes new to the node, one over the image's `/etc` (copied up) and one over
/// a path the image lacks.
fn volumes(iteration: usize) -> Vec<swarm_api::spec::Mount> {
    serde_json::from_value(serde_json::json!([
        {"type": "volume", "source": format!("etc{iteration}"), "target": "/etc", "read_only": false, "no_copy": false},
        {"type": "volume", "source": format!("data{iteration}"), "target": "/data", "read_only": false, "no_copy": false},
    ]))
    .expect("volume mounts")
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    swarm_testkit::busybox_rootfs(&rootfs).unwrap();
    let node_id = format!("benchsec{}", std::process::id());
    let runtime = RuncRuntime::new(RuncConfig::new(&node_id, &dir.path().join("data"))).unwrap();
    let (spec, contents) = with_files();
    let task_dir = |id: &str| -> PathBuf { dir.path().join("tasks").join(id) };
    let node_volumes = Volumes::new(dir.path().join("volumes"));

    // One untimed start warms the page cache (runc's binary, busybox).
    runtime
        .start(&config(dir.path(), &rootfs, "warm"))
        .await
        .unwrap();
    runtime.delete("warm").await.unwrap();

    let (mut plain, mut files, mut released) = (Vec::new(), Vec::new(), Vec::new());
    // Which case goes first alternates, so neither always follows the other's clean-up.
    for i in 0..ITERATIONS {
        for with_files in [i % 2 == 0, i % 2 == 1] {
            let id = format!("{}{i}", if with_files { "files" } else { "plain" });
            let mut container = config(dir.path(), &rootfs, &id);
            let started = Instant::now();
            if with_files {
                container.files = secrets::prepare(&task_dir(&id), &spec, &contents).unwrap();
                container.mounts = node_volumes
                    .mounts(&volumes(i), &task_dir(&id), &rootfs)
                    .unwrap();
            }
            runtime.start(&container).await.unwrap();
            let elapsed = started.elapsed();
            assert_eq!(runtime.state(&id).await.unwrap().status, Status::Running);
            runtime.delete(&id).await.unwrap();
            if with_files {
                files.push(elapsed);
                let started = Instant::now();
                secrets::release(&task_dir(&id)).unwrap();
                released.push(started.elapsed());
            } else {
                plain.push(elapsed);
            }
        }
    }
    let (plain_p50, plain_p90) = percentiles(&mut plain);
    let (files_p50, files_p90) = percentiles(&mut files);
    let (release_p50, release_p90) = percentiles(&mut released);
    println!("case                                  n    p50        p90");
    println!(
        "start, none of them                  {ITERATIONS:>2}    {:<10} {}",
        ms(plain_p50),
        ms(plain_p90)
    );
    println!(
        "start, 3 secrets, 3 configs, 2 vols  {ITERATIONS:>2}    {:<10} {}",
        ms(files_p50),
        ms(files_p90)
    );
    println!(
        "their release (unmount, remove)      {ITERATIONS:>2}    {:<10} {}",
        ms(release_p50),
        ms(release_p90)
    );
    println!(
        "added to the start (p50 − p50)            {:.1} ms",
        (files_p50.as_secs_f64() - plain_p50.as_secs_f64()) * 1000.0
    );
}
