//! What the CLI's end-to-end tests share: daemons as child processes in a temp dir, the
//! `swarm` command against their sockets, bounded waits, and clean-up guards.
// Each test binary uses its own part of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon process, killed when the test ends however it ends.
pub struct Daemon {
    pub child: Child,
    /// Its data dir, when it runs in this machine's own namespace: its node's canaries are
    /// removed with it (a test host's go with the host's namespace).
    pub data_dir: Option<std::path::PathBuf>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(node_id) = self.data_dir.as_deref().and_then(node_id_in) {
            let _ = swarm_agent::network::remove_canary(&node_id);
        }
    }
}

/// The id of the node whose data dir is `data_dir`, once it has one.
pub fn node_id_in(data_dir: &Path) -> Option<String> {
    let state = std::fs::read_to_string(data_dir.join("node.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&state).ok()?;
    state["node_id"].as_str().map(str::to_owned)
}

/// SIGKILLs a daemon: nothing of its own clean-up runs, as when a node crashes. The process
/// stays a zombie until its `Daemon` drops (so its pid is not reused meanwhile).
pub fn kill_hard(daemon: &Daemon) {
    let pid = daemon.child.id().to_string();
    let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// Whether a daemon's process still runs (a killed one not yet reaped is a zombie: not).
pub fn is_alive(daemon: &Daemon) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", daemon.child.id()));
    // The state follows the parenthesised command name: `pid (comm) S …`.
    stat.ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free on every address now: a loopback daemon's data path port (daemons
/// sharing a network namespace cannot share one for the same VXLAN network).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a daemon whose files (data dir, socket, log) live in `dir`, named after `dir`,
/// with a data path port of its own (the same at every start in `dir`).
pub fn start(dir: &Path, port: u16) -> Daemon {
    start_with(dir, port, &[])
}

/// Like `start`, with more `swarm daemon` arguments.
pub fn start_with(dir: &Path, port: u16, daemon_args: &[&str]) -> Daemon {
    // Kept across restarts: the cluster recorded the port when the node joined.
    let port_file = dir.join("data-path-port");
    let data_path_port = match std::fs::read_to_string(&port_file) {
        Ok(port) => port,
        Err(_) => {
            let port = free_udp_port().to_string();
            std::fs::write(&port_file, &port).unwrap();
            port
        }
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("daemon.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(["daemon", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}"), "--socket"])
        .arg(dir.join("swarm.sock"))
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--hostname")
        .arg(dir.file_name().unwrap())
        .args(["--data-path-port", &data_path_port])
        .args(daemon_args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        data_dir: Some(dir.join("data")),
    };
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

pub fn swarm(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swarm"))
        .args(args)
        .env("SWARM_HOST", format!("unix://{}", socket.display()))
        .output()
        .unwrap()
}

/// Runs `command` with `input` on its stdin, and returns its output.
pub fn output_with_input(command: &mut Command, input: &str) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Waits (at most `limit`) until `check` gives something.
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `node ls` line of the node named `hostname`.
pub fn node_line(table: &str, hostname: &str) -> Option<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == hostname))
        .map(str::to_owned)
}

/// Retries a command until it succeeds (a restarted manager elects itself first).
pub fn eventually(socket: &Path, args: &[&str]) -> Output {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = swarm(socket, args);
        if out.status.success() || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` daemons in a temp dir, node `n` named `node{n+1}`; the first inits a cluster
/// with `init_args`. Returns the temp dir, the daemons and their (dir, port).
pub fn cluster(count: usize, init_args: &[&str]) -> Cluster {
    cluster_with(count, init_args, &[])
}

/// Like `cluster`, each daemon started with `daemon_args` too.
pub fn cluster_with(count: usize, init_args: &[&str], daemon_args: &[&str]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<(std::path::PathBuf, u16)> = (1..=count)
        .map(|n| {
            let node_dir = dir.path().join(format!("node{n}"));
            std::fs::create_dir(&node_dir).unwrap();
            (node_dir, free_port())
        })
        .collect();
    let daemons = nodes
        .iter()
        .map(|(d, p)| Some(start_with(d, *p, daemon_args)))
        .collect();
    let pools = init_args
        .windows(2)
        .filter(|pair| pair[0] == "--default-addr-pool")
        .map(|pair| pair[1].parse().expect("an address pool"))
        .collect();
    let cluster = Cluster {
        _dir: dir,
        nodes,
        daemons,
        pools,
        hosts: None,
    };
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    let out = swarm(&cluster.socket(0), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster
}

pub struct Cluster {
    pub _dir: tempfile::TempDir,
    pub nodes: Vec<(std::path::PathBuf, u16)>,
    pub daemons: Vec<Option<Daemon>>,
    /// The address pools given to `init`: the nodes' bridges hold addresses in them.
    pub pools: Vec<swarm_agent::network::Ipv4Net>,
    /// The test hosts the daemons run in (node `n` on host `n`), if not all on loopback;
    /// removed last.
    pub hosts: Option<swarm_testkit::Hosts>,
}

/// The cluster port of daemons on test hosts.
pub const HOST_PORT: u16 = 2377;

/// Starts node `n`'s daemon on test host `n` (named `node{n+1}`, listening on the host's
/// address, its files in `node_dir`, its log appended to), pulling from `registry` over
/// plain http, and waits for its socket (a killed daemon's must be removed first).
pub fn daemon_on_host(
    hosts: &swarm_testkit::Hosts,
    n: usize,
    node_dir: &Path,
    registry: &str,
) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(node_dir.join("daemon.log"))
        .unwrap();
    let listen = format!("{}:{HOST_PORT}", hosts.address(n));
    let data = node_dir.join("data").display().to_string();
    let socket = node_dir.join("swarm.sock");
    let socket_arg = socket.display().to_string();
    let run = node_dir.join("run").display().to_string();
    let hostname = format!("node{}", n + 1);
    let mut command = hosts.command(
        n,
        env!("CARGO_BIN_EXE_swarm"),
        &[
            "daemon",
            "--data-dir",
            &data,
            "--socket",
            &socket_arg,
            "--run-dir",
            &run,
            "--listen-addr",
            &listen,
            "--hostname",
            &hostname,
            "--insecure-registry",
            registry,
        ],
    );
    let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
    let daemon = Daemon {
        child,
        data_dir: None,
    };
    wait_for("a daemon's socket", Duration::from_secs(10), || {
        socket.exists().then_some(())
    });
    daemon
}

/// `count` daemons, node `n` on test host `n` of `hosts` (named `node{n+1}`, listening on
/// the host's address), pulling from `registry` over plain http; the first inits a
/// cluster with `init_args`. The CLI reaches them through their sockets, as on loopback.
pub fn cluster_on_hosts(
    hosts: swarm_testkit::Hosts,
    registry: &str,
    init_args: &[&str],
) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    let mut daemons = Vec::new();
    for n in 0..hosts.len() {
        let node_dir = dir.path().join(format!("node{}", n + 1));
        std::fs::create_dir(&node_dir).unwrap();
        daemons.push(Some(daemon_on_host(&hosts, n, &node_dir, registry)));
        nodes.push((node_dir, HOST_PORT));
    }
    let pools = init_args
        .windows(2)
        .filter(|pair| pair[0] == "--default-addr-pool")
        .map(|pair| pair[1].parse().expect("an address pool"))
        .collect();
    let cluster = Cluster {
        _dir: dir,
        nodes,
        daemons,
        pools,
        hosts: Some(hosts),
    };
    let mut args = vec!["init"];
    args.extend_from_slice(init_args);
    let out = swarm(&cluster.socket(0), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster
}

/// Whether `test` can run containers on test hosts: root, runc and busybox, and each of
/// `more` programs; says what is missing otherwise (a failure under CI=true).
pub fn hosts_can_run_containers(test: &str, more: &[&str]) -> bool {
    swarm_testkit::require(test, swarm_testkit::is_root(), "root")
        && ["runc", "busybox"].iter().chain(more).all(|program| {
            swarm_testkit::require(test, swarm_testkit::has_program(program), program)
        })
}

/// `count` test hosts named `{prefix}-N`, a registry on their gateway holding the test
/// images, and a cluster on them: node 1 inits with `init_args`, the others join as
/// workers. Returned once every node is Ready (within 20 s).
pub fn workers_on_hosts(
    prefix: &str,
    count: usize,
    init_args: &[&str],
) -> (Cluster, swarm_testkit::Registry) {
    let hosts = swarm_testkit::Hosts::create(prefix, count).expect("test hosts");
    let registry = swarm_testkit::Registry::start_on(hosts.gateway().into()).expect("a registry");
    registry.push_test_images().expect("the test images");
    let cluster = cluster_on_hosts(hosts, &registry.addr(), init_args);
    for n in 1..count {
        cluster.join(n, "worker", 0);
    }
    wait_for("every node Ready", Duration::from_secs(20), || {
        (cluster.listing(0).matches("Ready").count() == count).then_some(())
    });
    (cluster, registry)
}

impl Cluster {
    pub fn socket(&self, n: usize) -> std::path::PathBuf {
        self.nodes[n].0.join("swarm.sock")
    }

    pub fn address(&self, n: usize) -> String {
        match &self.hosts {
            Some(hosts) => format!("{}:{}", hosts.address(n), self.nodes[n].1),
            None => format!("127.0.0.1:{}", self.nodes[n].1),
        }
    }

    pub fn data(&self, n: usize) -> std::path::PathBuf {
        self.nodes[n].0.join("data")
    }

    /// Node `n` joins through node `through` with the token of `role`.
    pub fn join(&self, n: usize, role: &str, through: usize) {
        let token = text(&swarm(&self.socket(through), &["join-token", role, "-q"]).stdout)
            .trim()
            .to_owned();
        let out = swarm(
            &self.socket(n),
            &["join", "--token", &token, &self.address(through)],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    pub fn listing(&self, n: usize) -> String {
        let out = eventually(&self.socket(n), &["node", "ls"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    }

    /// The id of node `n`, once it is in a cluster (from its state file).
    pub fn node_id(&self, n: usize) -> Option<String> {
        node_id_in(&self.data(n))
    }

    pub fn log(&self, n: usize) -> String {
        std::fs::read_to_string(self.nodes[n].0.join("daemon.log")).unwrap_or_default()
    }
}

/// The tasks `swarm service ps SERVICE --format json` lists that should run.
pub fn live_tasks(cluster: &Cluster, service: &str) -> Vec<serde_json::Value> {
    let out = swarm(
        &cluster.socket(0),
        &[
            "service",
            "ps",
            service,
            "--filter",
            "desired-state=running",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `swarm ARGS` through node 0's socket, which must succeed: its stdout.
pub fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let out = swarm(&cluster.socket(0), args);
    assert!(
        out.status.success(),
        "swarm {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Task `task_id`'s network namespace on node `n`.
fn task_netns(cluster: &Cluster, n: usize, task_id: &str) -> Option<std::path::PathBuf> {
    let node_id = cluster.node_id(n)?;
    Some(
        cluster.nodes[n]
            .0
            .join("run")
            .join(node_id)
            .join("netns")
            .join(task_id),
    )
}

/// `GET http://ADDRESS/` from inside task `task_id`'s network namespace on node `n`
/// (bounded): the page, if it answered.
pub fn fetch_from_task(
    cluster: &Cluster,
    n: usize,
    task_id: &str,
    address: &str,
) -> Option<String> {
    let netns = task_netns(cluster, n, task_id)?;
    // Bounded by `timeout`: Debian's busybox 1.35 wget crashes with `-T`.
    let out = Command::new("timeout")
        .arg("5")
        .arg("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args([
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{address}/"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| text(&out.stdout).trim().to_owned())
}

/// A TCP connection to `address:80` made in task `task_id`'s network namespace on node
/// `n`, if it connected within 2 s: the peer the task is told (`getpeername`) and the
/// address the kernel's socket runs to (`ss` in the namespace), which differ when the node
/// balanced the connection at `connect()`.
pub fn peer_and_route_from_task(
    cluster: &Cluster,
    n: usize,
    task_id: &str,
    address: &str,
) -> Option<(std::net::IpAddr, String)> {
    let netns = task_netns(cluster, n, task_id)?;
    let to: std::net::SocketAddr = format!("{address}:80").parse().ok()?;
    let stream = swarm_agent::network::in_namespace(&netns, || {
        std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
    })
    .ok()?
    .ok()?;
    let route = swarm_testkit::established_peer(&netns, stream.local_addr().ok()?)?;
    Some((stream.peer_addr().ok()?.ip(), route.to_string()))
}

/// `GET /` of a task's httpd at its address, bounded.
pub fn http_get(address: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &format!("{address}:80").parse().unwrap(),
        Duration::from_secs(1),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: task\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split("\r\n\r\n")
        .nth(1)
        .map(|b| b.trim().to_owned())
}

/// A dropped cluster removes, even when the test fails, what real tasks leave on the host
/// when their daemons are killed instead of leaving: containers, mounts under the cluster's
/// directory, the nodes' bridges (and their iptables rules), overlay links, VIP, mesh and
/// canary tables, and cgroups. The cluster's daemons are killed first, so that none makes anything
/// again meanwhile; its test hosts go last.
impl Drop for Cluster {
    fn drop(&mut self) {
        let cluster = &*self;
        if std::thread::panicking() {
            // What the daemons said last: the temp dir goes with the test.
            for (dir, _) in &cluster.nodes {
                let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- {}/daemon.log (last 60 lines)", dir.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
        }
        for daemon in cluster.daemons.iter().flatten() {
            if is_alive(daemon) {
                kill_hard(daemon);
            }
        }
        // A node that left has forgotten its id: its bridge is found by its subnet.
        for bridge in links_in(&cluster.pools) {
            let _ = Command::new("ip").args(["link", "del", &bridge]).status();
            swarm_agent::network::remove_bridge_rules(&bridge);
        }
        for n in 0..cluster.nodes.len() {
            for id in containers(cluster, n) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(cluster.data(n).join("runc"))
                    .args(["delete", "--force", &id])
                    .status();
            }
            if let Some(node_id) = cluster.node_id(n) {
                // Its bridge, overlay links and their rules, found by the node's names
                // (usually gone already: the node left).
                let _ = swarm_agent::network::remove_node_links(&node_id);
                // Its VIPs' table and rules (a killed daemon leaves them, as a stopped one).
                let _ = swarm_agent::network::Vips::new(&node_id).teardown();
                // Its published ports' table (kept by a stopped daemon for its tasks).
                let _ = swarm_agent::network::Mesh::new(&node_id).teardown();
                // Its canaries.
                let _ = swarm_agent::network::remove_canary(&node_id);
                // Empty once runc deleted the containers.
                for dir in node_cgroup_dirs(&node_id) {
                    let _ = std::fs::remove_dir(dir);
                }
            }
        }
        let root = cluster.nodes[0]
            .0
            .parent()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&root))
            .collect();
        // Innermost first.
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            let _ = Command::new("umount").args(["-l", point]).status();
        }
    }
}

/// The containers runc knows on node `n`.
pub fn containers(cluster: &Cluster, n: usize) -> Vec<String> {
    let out = Command::new("runc")
        .arg("--root")
        .arg(cluster.data(n).join("runc"))
        .args(["list", "-q"])
        .output()
        .unwrap();
    text(&out.stdout).lines().map(str::to_owned).collect()
}

/// The cgroup directories (one per hierarchy) that hold node `node_id`'s containers.
pub fn node_cgroup_dirs(node_id: &str) -> Vec<std::path::PathBuf> {
    let cgroups = swarm_agent::exec::cgroup::Cgroups::detect().expect("the cgroup mounts");
    cgroups.existing(&swarm_agent::exec::bundle::node_cgroup(node_id))
}

/// The links that hold an IPv4 address in one of `pools`.
pub fn links_in(pools: &[swarm_agent::network::Ipv4Net]) -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "address", "show"])
        .output()
        .unwrap();
    // "7: swb1234abcd    inet 198.18.230.1/24 brd … scope global swb1234abcd\ …"
    let mut links: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address: swarm_agent::network::Ipv4Net = fields.get(3)?.parse().ok()?;
            pools
                .iter()
                .any(|pool| pool.contains(&address.addr()))
                .then(|| fields[1].to_owned())
        })
        .collect();
    links.dedup();
    links
}

/// Whether the test can run here (root and runc), and if so a registry with the test
/// images.
pub fn registry_for(test: &str) -> Option<swarm_testkit::Registry> {
    registry_with(test, swarm_testkit::Registry::start)
}

/// Like `registry_for`, with a registry that wants basic authentication
/// (`swarm_testkit::TEST_USER`, `TEST_PASSWORD`) for every request, pulls included.
pub fn registry_with_auth_for(test: &str) -> Option<swarm_testkit::Registry> {
    registry_with(test, swarm_testkit::Registry::start_with_basic_auth)
}

fn registry_with(
    test: &str,
    start: fn() -> Result<swarm_testkit::Registry, swarm_testkit::RegistryError>,
) -> Option<swarm_testkit::Registry> {
    if !swarm_testkit::require(test, swarm_testkit::is_root(), "root")
        || !swarm_testkit::require(test, swarm_testkit::has_program("runc"), "runc")
    {
        return None;
    }
    let registry = start().expect("a loopback registry");
    registry.push_test_images().expect("the test images");
    Some(registry)
}

/// `swarm init` arguments giving the cluster `pool`, cut into /24s, and `more`.
pub fn init_args<'a>(pool: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    pool_args(pool, "24", more)
}

/// `swarm init` arguments giving the cluster `pool`, cut into subnets of `mask_length`
/// bits (one per node), and `more`.
pub fn pool_args<'a>(pool: &'a str, mask_length: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--default-addr-pool",
        pool,
        "--default-addr-pool-mask-length",
        mask_length,
    ];
    args.extend_from_slice(more);
    args
}

/// Runs `request` in a loop while `change` runs (a `service update` that waits for its
/// tasks, say), from 200 answers before it until 200 after it (bounded in count and time):
/// the answers in order and how many requests failed.
pub fn load_while(
    request: impl Fn() -> Option<String> + Sync,
    change: impl FnOnce(),
) -> (Vec<String>, usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let (answered, changing) = (AtomicUsize::new(0), AtomicBool::new(true));
    let (pages, failures) = std::thread::scope(|scope| {
        let load = scope.spawn(|| {
            let (mut pages, mut failures, mut after) = (Vec::new(), 0, 0);
            let deadline = Instant::now() + Duration::from_secs(180);
            while after < 200 && pages.len() < 50_000 && Instant::now() < deadline {
                match request() {
                    Some(page) => pages.push(page),
                    None => failures += 1,
                }
                answered.store(pages.len(), Ordering::Relaxed);
                if !changing.load(Ordering::Relaxed) {
                    after += 1;
                }
            }
            (pages, failures)
        });
        let before = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::Relaxed) < 200 && Instant::now() < before {
            std::thread::sleep(Duration::from_millis(20));
        }
        change();
        changing.store(false, Ordering::Relaxed);
        load.join().unwrap()
    });
    assert!(pages.len() >= 400, "the loop ran: {} answered", pages.len());
    (pages, failures)
}
