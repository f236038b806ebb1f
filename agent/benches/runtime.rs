//! The runc runtime's cost over bare runc, on this machine, in one run:
//!
//! - `start`: `RuncRuntime::start` (bundle written, log files opened, `runc create`, pidfd,
//!   `runc start`) until the container runs, against `runc run -d` of the same bundle
//!   (config.json from the same builder, same log files) — alternated, 30 of each.
//! - 20 `start`s at once until all 20 run, against 20 `runc run -d` at once; 5 rounds.
//!
//! Needs root, runc and busybox-static. Run with `cargo bench -p swarm-agent --bench runtime`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use swarm_agent::exec::cgroup::Cgroups;
use swarm_agent::exec::logs;
use swarm_agent::exec::{
    ContainerConfig, LogConfig, Resources, RuncConfig, RuncRuntime, Runtime, Status, User,
};

const ITERATIONS: usize = 30;
const CONCURRENT: usize = 20;
const ROUNDS: usize = 5;

fn main() {
    let ready = swarm_testkit::is_root()
        && swarm_testkit::has_program("runc")
        && Path::new("/bin/busybox").is_file();
    if !swarm_testkit::require("bench runtime", ready, "root, runc and busybox-static") {
        return;
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio.block_on(run());
}

struct Bench {
    dir: tempfile::TempDir,
    rootfs: PathBuf,
    runtime: RuncRuntime,
}

impl Bench {
    fn config(&self, id: &str) -> ContainerConfig {
        let logs = self.dir.path().join("logs");
        ContainerConfig {
            id: id.to_string(),
            rootfs: self.rootfs.clone(),
            args: vec!["sleep".into(), "600".into()],
            env: vec![],
            cwd: "/".into(),
            user: User::default(),
            hostname: id.to_string(),
            netns: None,
            files: vec![],
            mounts: vec![],
            options: Default::default(),
            resources: Resources {
                memory_bytes: Some(64 << 20),
                nano_cpus: Some(500_000_000),
                pids: Some(100),
            },
            logs: LogConfig {
                stdout: logs.join(format!("{id}.out")),
                stderr: logs.join(format!("{id}.err")),
                max_bytes: 1 << 20,
                max_files: 2,
            },
        }
    }

    fn bare_cgroup(&self) -> String {
        format!("swarm-{}-bare", self.runtime.config().node_id)
    }

    fn bare_root(&self) -> PathBuf {
        self.dir.path().join("bare-runc")
    }

    /// `runc run -d` of the bundle the runtime would write; returns the time it took.
    fn bare_run(&self, id: &str) -> Duration {
        let config = self.config(id);
        let bundle_dir = self.dir.path().join("bare-bundles").join(id);
        fs::create_dir_all(&bundle_dir).unwrap();
        // The same config.json, except a fresh cgroup of its own, as the runtime's has.
        let mut spec = self.runtime.bundle_spec(&config).unwrap();
        if let Some(linux) = spec.linux_mut() {
            linux.set_cgroups_path(Some(PathBuf::from(format!("/{}/{id}", self.bare_cgroup()))));
        }
        fs::write(
            bundle_dir.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        let started = Instant::now();
        let status = Command::new("runc")
            .arg("--root")
            .arg(self.bare_root())
            .args(["run", "-d", "--pid-file"])
            .arg(bundle_dir.join("init.pid"))
            .arg("--bundle")
            .arg(&bundle_dir)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(logs::open_for_append(&config.logs.stdout).unwrap())
            .stderr(logs::open_for_append(&config.logs.stderr).unwrap())
            .status()
            .unwrap();
        let elapsed = started.elapsed();
        assert!(status.success(), "runc run -d {id} failed");
        elapsed
    }

    fn bare_delete(&self, id: &str) {
        let bundle_dir = self.dir.path().join("bare-bundles").join(id);
        let pid: i32 = fs::read_to_string(bundle_dir.join("init.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let status = Command::new("runc")
            .arg("--root")
            .arg(self.bare_root())
            .args(["delete", "--force", id])
            .status()
            .unwrap();
        assert!(status.success(), "runc delete {id} failed");
        // This process is the subreaper the init was re-parented to: reap it.
        // SAFETY: waitpid writes only the status integer we pass.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        fs::remove_dir_all(bundle_dir).unwrap();
    }
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    swarm_testkit::busybox_rootfs(&rootfs).unwrap();
    let node_id = format!("bench{}", std::process::id());
    let runtime = RuncRuntime::new(RuncConfig::new(&node_id, &dir.path().join("data"))).unwrap();
    let bench = Bench {
        dir,
        rootfs,
        runtime,
    };

    // One untimed round of each warms the page cache (runc's binary, busybox).
    bench.runtime.start(&bench.config("warm")).await.unwrap();
    bench.runtime.delete("warm").await.unwrap();
    bench.bare_run("warm");
    bench.bare_delete("warm");

    let mut agent = Vec::new();
    let mut bare = Vec::new();
    for i in 0..ITERATIONS {
        let id = format!("seq{i}");
        let started = Instant::now();
        bench.runtime.start(&bench.config(&id)).await.unwrap();
        agent.push(started.elapsed());
        assert_eq!(
            bench.runtime.state(&id).await.unwrap().status,
            Status::Running
        );
        bench.runtime.delete(&id).await.unwrap();

        bare.push(bench.bare_run(&id));
        bench.bare_delete(&id);
    }

    let mut concurrent = Vec::new();
    let mut bare_concurrent = Vec::new();
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..CONCURRENT).map(|i| format!("r{round}c{i}")).collect();
        let started = Instant::now();
        let mut starts = Vec::new();
        for id in &ids {
            let runtime = bench.runtime.clone();
            let config = bench.config(id);
            starts.push(tokio::spawn(async move { runtime.start(&config).await }));
        }
        for start in starts {
            start.await.unwrap().unwrap();
        }
        concurrent.push(started.elapsed());
        for id in &ids {
            assert_eq!(
                bench.runtime.state(id).await.unwrap().status,
                Status::Running
            );
        }
        for id in &ids {
            bench.runtime.delete(id).await.unwrap();
        }

        // The peer: 20 `runc run -d` at once, from 20 threads.
        let ids: Vec<String> = (0..CONCURRENT).map(|i| format!("b{round}c{i}")).collect();
        let started = Instant::now();
        std::thread::scope(|scope| {
            for id in &ids {
                let bench = &bench;
                scope.spawn(move || bench.bare_run(id));
            }
        });
        bare_concurrent.push(started.elapsed());
        for id in &ids {
            bench.bare_delete(id);
        }
    }
    assert!(bench.runtime.list().await.unwrap().is_empty());
    bench.runtime.remove_node_cgroups().unwrap();
    Cgroups::detect()
        .unwrap()
        .remove(&bench.bare_cgroup())
        .unwrap();

    // Each agent start is paired with the bare run right after it: the median of the
    // differences is less sensitive to the machine's drift than a difference of medians.
    let mut paired: Vec<f64> = agent
        .iter()
        .zip(&bare)
        .map(|(agent, bare)| millis(*agent) - millis(*bare))
        .collect();
    paired.sort_by(f64::total_cmp);
    let paired_p50 = paired[paired.len() / 2];
    let (agent_p50, agent_p90) = percentiles(&mut agent);
    let (bare_p50, bare_p90) = percentiles(&mut bare);
    let (concurrent_p50, concurrent_p90) = percentiles(&mut concurrent);
    let (bare_concurrent_p50, bare_concurrent_p90) = percentiles(&mut bare_concurrent);
    println!("case                              n    p50        p90");
    println!(
        "agent start → running            {ITERATIONS:<4} {:<10} {}",
        ms(agent_p50),
        ms(agent_p90)
    );
    println!(
        "runc run -d (peer)               {ITERATIONS:<4} {:<10} {}",
        ms(bare_p50),
        ms(bare_p90)
    );
    println!(
        "overhead (p50 − p50)                  {:.1} ms",
        millis(agent_p50) - millis(bare_p50)
    );
    println!("overhead (median of pairs)            {paired_p50:.1} ms");
    println!(
        "{CONCURRENT} concurrent starts → running  {ROUNDS:<4} {:<10} {}",
        ms(concurrent_p50),
        ms(concurrent_p90)
    );
    println!(
        "{CONCURRENT} concurrent runc run -d (peer) {ROUNDS:<4} {:<10} {}",
        ms(bare_concurrent_p50),
        ms(bare_concurrent_p90)
    );
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.9))
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", millis(duration))
}
