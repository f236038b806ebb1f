//! The control plane's benchmarks (BENCHMARKS.md, "Control plane (issue 3)"), run by
//! `bench/control-plane.sh`.
//!
//! `load`: concurrent clients, each over its own mutual-TLS connection to a manager's control
//! API, change a node label (`UpdateNode`: a Raft proposal, fsynced by a majority, applied)
//! for a bounded count and time; prints throughput and p50/p90/p99.
//!
//! `failover`: three `swarm daemon` processes on loopback; the leader is SIGKILLed while a
//! writer writes through a surviving manager, then restarted from its data dir; prints
//! kill → first acknowledged write for each kill and its p50/p90/p99.

// The CLI's own client module: the benchmark's writes take the path `swarm --host tcp://…`
// takes. The example uses only part of it.
#[allow(dead_code)]
#[path = "../src/client.rs"]
mod client;

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use swarm_api::grpc::control::control_client::ControlClient;
use swarm_api::grpc::control::{ListNodesRequest, UpdateNodeRequest};
use tonic::transport::Channel;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    Load(LoadArgs),
    Failover(FailoverArgs),
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The manager's cluster address (host:port).
    #[arg(long)]
    manager: String,
    /// Where ca.pem, cert.pem and key.pem of an admin certificate are (`swarm client-cert`).
    #[arg(long)]
    tls_dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Timed writes in all, after the warm-up.
    #[arg(long, default_value_t = 20_000)]
    writes: u64,
    /// The timed phase stops after this many seconds even if writes remain.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Untimed writes per client before the timed phase (connections, TLS, caches).
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// The node whose label changes: `self` (the manager that answers; one proposal) or a
    /// node id (a linearizable read to resolve it, then the proposal).
    #[arg(long, default_value = "self")]
    node: String,
}

#[derive(clap::Args)]
struct FailoverArgs {
    /// The `swarm` binary to run the daemons with.
    #[arg(long)]
    swarm: PathBuf,
    /// An empty directory for the daemons' data, sockets and logs.
    #[arg(long)]
    dir: PathBuf,
    /// The managers listen on this port and the next two (loopback).
    #[arg(long, default_value_t = 24771)]
    base_port: u16,
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The writer's timeout for one write before it tries again.
    #[arg(long, default_value_t = 250)]
    attempt_timeout_ms: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.bench {
        Bench::Load(args) => runtime.block_on(load(args)),
        Bench::Failover(args) => runtime.block_on(failover(args)),
    }
}

/// The value at quantile `q` of sorted samples (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = (q * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

async fn connect_tcp(address: &str, tls_dir: &Path) -> anyhow::Result<ControlClient<Channel>> {
    client::connect(&client::Host {
        uri: format!("tcp://{address}"),
        tls_dir: tls_dir.to_owned(),
    })
    .await
}

/// One label change on `node`, each with a value of its own so that every write changes
/// the store.
fn label_write(node: &str, value: String) -> UpdateNodeRequest {
    UpdateNodeRequest {
        node: node.to_owned(),
        label_add: HashMap::from([("bench".to_owned(), value)]),
        ..UpdateNodeRequest::default()
    }
}

async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(connect_tcp(&args.manager, &args.tls_dir).await?);
    }
    let issued = Arc::new(AtomicU64::new(0));
    let warmed_up = Arc::new(tokio::sync::Barrier::new(args.clients + 1));
    let mut tasks = Vec::new();
    for (index, mut client) in clients.into_iter().enumerate() {
        let (issued, warmed_up) = (issued.clone(), warmed_up.clone());
        let (node, writes, warmup) = (args.node.clone(), args.writes, args.warmup);
        let limit = Duration::from_secs(args.seconds);
        tasks.push(tokio::spawn(async move {
            for n in 0..warmup {
                client
                    .update_node(label_write(&node, format!("warmup-{index}-{n}")))
                    .await
                    .map_err(client::explain)
                    .context("warm-up write")?;
            }
            warmed_up.wait().await;
            let deadline = Instant::now() + limit;
            let mut latencies = Vec::new();
            let mut errors = Vec::new();
            let mut last = Instant::now();
            while Instant::now() < deadline {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= writes {
                    break;
                }
                let start = Instant::now();
                match client.update_node(label_write(&node, format!("{n}"))).await {
                    Ok(_) => latencies.push(start.elapsed()),
                    Err(status) => errors.push(status.message().to_owned()),
                }
                last = Instant::now();
            }
            anyhow::Ok((latencies, errors, last))
        }));
    }
    warmed_up.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = Vec::new();
    let mut end = start;
    for task in tasks {
        let (client_latencies, client_errors, last) = task.await??;
        latencies.extend(client_latencies);
        errors.extend(client_errors);
        end = end.max(last);
    }
    if latencies.is_empty() {
        bail!("no write succeeded: {:?}", errors.first());
    }
    latencies.sort();
    let elapsed = end - start;
    println!(
        "swarm-load clients={} writes={} errors={} seconds={:.2} throughput={:.0} p50_ms={:.2} p90_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        args.clients,
        latencies.len(),
        errors.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        ms(quantile(&latencies, 0.5)),
        ms(quantile(&latencies, 0.9)),
        ms(quantile(&latencies, 0.99)),
        ms(*latencies.last().unwrap()),
    );
    if let Some(error) = errors.first() {
        eprintln!("first error: {error}");
    }
    Ok(())
}

/// One `swarm daemon` of the failover cluster: its files live in `dir`.
struct Manager {
    dir: PathBuf,
    port: u16,
    hostname: String,
    child: Option<Child>,
}

impl Manager {
    fn socket(&self) -> PathBuf {
        self.dir.join("swarm.sock")
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the daemon (again, from its data dir) and waits for its socket.
    fn start(&mut self, swarm: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // A killed daemon leaves its socket behind; its successor's must be told apart.
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))?;
        let mut command = Command::new(swarm);
        command
            .args(["daemon", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-addr", &self.address(), "--socket"])
            .arg(self.socket())
            .args(["--hostname", &self.hostname])
            .stdout(Stdio::null())
            .stderr(log);
        // The daemon dies with the benchmark even when the benchmark is killed (a timeout's
        // SIGTERM runs no Drop). The thread that spawns it (main: `block_on`) lives as
        // long as the process.
        // SAFETY: prctl is async-signal-safe, and the closure allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot run {}", swarm.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket().exists() {
            if Instant::now() > deadline {
                bail!("{} did not open its socket within 10 s", self.hostname);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// The last lines of the daemon's log, to explain a failure.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL (what `Child::kill` sends on Unix), and reaps the process.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a `swarm` command against this daemon's socket; its stdout on success.
    fn swarm(&self, swarm: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(swarm)
            .args(args)
            .env("SWARM_HOST", format!("unix://{}", self.socket().display()))
            .output()?;
        if !out.status.success() {
            bail!(
                "swarm {} on {}: {}",
                args.join(" "),
                self.hostname,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The three managers, killed when the benchmark ends however it ends.
struct Cluster {
    managers: Vec<Manager>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for manager in &mut self.managers {
            manager.kill();
        }
    }
}

/// What one write attempt of the failover writer came to.
struct Attempt {
    started: Instant,
    ended: Instant,
    outcome: Result<(), String>,
}

/// Writes through `client` until `stop`, one attempt at a time, each bounded by `timeout`.
async fn write_continuously(
    mut client: ControlClient<Channel>,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            timeout,
            client.update_node(label_write("self", n.to_string())),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(status)) => Err(status.message().to_owned()),
            Err(_) => Err("client timeout".to_owned()),
        };
        let failed = outcome.is_err();
        attempts.lock().unwrap().push(Attempt {
            started,
            ended: Instant::now(),
            outcome,
        });
        if failed {
            // Refusals (no leader yet) come at once: do not spin on them.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The hostname of the leader, as a manager that answers a linearizable read says.
async fn leader(clients: &mut [ControlClient<Channel>]) -> Option<String> {
    for client in clients {
        let Ok(Ok(nodes)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.list_nodes(ListNodesRequest {}),
        )
        .await
        else {
            continue;
        };
        if let Some(node) = nodes
            .into_inner()
            .nodes
            .into_iter()
            .find(|n| n.manager_status == "leader")
        {
            return Some(node.hostname);
        }
    }
    None
}

/// Waits, at most `limit`, until `check` holds.
async fn wait_until<F: Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !check().await {
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn failover(args: FailoverArgs) -> anyhow::Result<()> {
    let swarm = &args.swarm;
    let mut cluster = Cluster {
        managers: (0..3)
            .map(|n| Manager {
                dir: args.dir.join(format!("m{n}")),
                port: args.base_port + n as u16,
                hostname: format!("bench-m{n}"),
                child: None,
            })
            .collect(),
    };
    for manager in &mut cluster.managers {
        manager.start(swarm)?;
    }
    let managers = &cluster.managers;
    managers[0].swarm(swarm, &["init"])?;
    let token = managers[0].swarm(swarm, &["join-token", "manager", "-q"])?;
    for joiner in &managers[1..] {
        joiner.swarm(
            swarm,
            &["join", "--token", token.trim(), &managers[0].address()],
        )?;
    }
    let tls_dir = args.dir.join("admin");
    managers[0].swarm(
        swarm,
        &[
            "client-cert",
            "--out",
            tls_dir.to_str().context("utf-8 dir")?,
        ],
    )?;
    let mut clients = Vec::new();
    for manager in managers {
        clients.push(connect_tcp(&manager.address(), &tls_dir).await?);
    }
    let timeout = Duration::from_millis(args.attempt_timeout_ms);
    let mut failovers = Vec::new();
    println!("kill  leader   writer   kill->ack_ms  failed_attempts(timeouts)");
    for round in 1..=args.kills {
        let deadline = Instant::now() + Duration::from_secs(30);
        let leader_name = loop {
            if let Some(name) = leader(&mut clients).await {
                break name;
            }
            if Instant::now() > deadline {
                bail!("no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let killed = cluster
            .managers
            .iter()
            .position(|m| m.hostname == leader_name)
            .with_context(|| format!("the leader {leader_name} is not one of ours"))?;
        let writer = (killed + 1) % 3;

        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let writing = tokio::spawn(write_continuously(
            clients[writer].clone(),
            timeout,
            stop.clone(),
            attempts.clone(),
        ));
        // The writer's path works before the kill.
        wait_until("writes before the kill", Duration::from_secs(10), || {
            let acked = attempts
                .lock()
                .unwrap()
                .iter()
                .filter(|a: &&Attempt| a.outcome.is_ok())
                .count();
            async move { acked >= 20 }
        })
        .await?;
        let kill = Instant::now();
        cluster.managers[killed].kill();
        // The first write acknowledged that was sent after the kill.
        let mut acked = None;
        wait_until(
            "a write acknowledged after the kill",
            Duration::from_secs(30),
            || {
                acked = attempts
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|a| a.started >= kill && a.outcome.is_ok())
                    .map(|a| a.ended);
                let done = acked.is_some();
                async move { done }
            },
        )
        .await?;
        stop.store(true, Ordering::Relaxed);
        writing.await?;
        let failover = acked.expect("found above") - kill;
        let failed: Vec<String> = attempts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.ended >= kill && a.ended <= kill + failover)
            .filter_map(|a| a.outcome.clone().err())
            .collect();
        let timeouts = failed
            .iter()
            .filter(|e| e.as_str() == "client timeout")
            .count();
        println!(
            "{round:>4}  {leader_name}  {}  {:>12.0}  {} ({timeouts})",
            cluster.managers[writer].hostname,
            ms(failover),
            failed.len(),
        );
        failovers.push(failover);

        // Back to three managers: the killed one restarts from its data dir and has caught
        // up once it answers a linearizable read (ReadIndex: applied up to the leader's
        // commit index).
        cluster.managers[killed].start(swarm)?;
        let restarted = client::Host {
            uri: format!("unix://{}", cluster.managers[killed].socket().display()),
            tls_dir: tls_dir.clone(),
        };
        let caught_up = wait_until(
            "the restarted manager caught up",
            Duration::from_secs(30),
            || {
                let restarted = restarted.clone();
                async move {
                    match client::connect(&restarted).await {
                        Ok(mut control) => control.list_nodes(ListNodesRequest {}).await.is_ok(),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
        if let Err(error) = caught_up {
            let manager = &mut cluster.managers[killed];
            return Err(error.context(format!(
                "{} (exit status {:?}); the end of its log:\n{}",
                manager.hostname,
                manager.child.as_mut().map(|child| child.try_wait()),
                manager.log_tail()
            )));
        }
    }
    failovers.sort();
    println!(
        "swarm-failover kills={} p50_ms={:.0} p90_ms={:.0} p99_ms={:.0} max_ms={:.0} min_ms={:.0}",
        failovers.len(),
        ms(quantile(&failovers, 0.5)),
        ms(quantile(&failovers, 0.9)),
        ms(quantile(&failovers, 0.99)),
        ms(*failovers.last().expect("at least one kill")),
        ms(failovers[0]),
    );
    Ok(())
}
