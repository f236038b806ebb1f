//! The runc runtime against real runc, as root, with busybox root filesystems. Every test
//! makes its own node (node id, runc state dir, bundles, cgroup parent), removes what it
//! made, and checks that nothing is left: no runc container, bundle, cgroup or mount.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use swarm_agent::exec::cgroup::mounts_under;
use swarm_agent::exec::logs;
use swarm_agent::exec::{
    ContainerConfig, DataMount, ExecRequest, Exit, FileMount, LogConfig, Resources, RuncConfig,
    RuncRuntime, Runtime, RuntimeError, Status, User,
};

/// The longest any test waits for a container.
const BOUND: Duration = Duration::from_secs(30);

/// One node's runtime over a temporary data directory with a busybox rootfs. Dropping it
/// deletes whatever containers are left (a failed test) and the node's cgroup parent.
struct Node {
    runtime: RuncRuntime,
    rootfs: PathBuf,
    dir: tempfile::TempDir,
}

impl Node {
    /// `None` (the test skips) when root, runc or busybox is missing outside CI.
    fn new(test: &str) -> Option<Self> {
        let ready = swarm_testkit::is_root()
            && swarm_testkit::has_program("runc")
            && Path::new("/bin/busybox").is_file();
        if !swarm_testkit::require(test, ready, "root, runc and busybox-static") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        swarm_testkit::busybox_rootfs(&rootfs).unwrap();
        let mut config = RuncConfig::new(&node_id(test), &dir.path().join("data"));
        config.log_check_interval = Duration::from_millis(50);
        let runtime = RuncRuntime::new(config).unwrap();
        Some(Self {
            runtime,
            rootfs,
            dir,
        })
    }

    /// Replaces the runtime with a new one over the same node, as a daemon restart does:
    /// the old one, and what it watched, goes.
    fn restart(&mut self) {
        self.runtime = RuncRuntime::new(self.runtime.config().clone()).unwrap();
    }

    fn config(&self, id: &str, args: &[&str]) -> ContainerConfig {
        let logs = self.dir.path().join("logs");
        ContainerConfig {
            id: id.to_string(),
            rootfs: self.rootfs.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: vec!["GREETING=hello".into()],
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

    fn sh(&self, id: &str, script: &str) -> ContainerConfig {
        self.config(id, &["sh", "-c", script])
    }

    async fn wait(&self, id: &str) -> swarm_agent::exec::ExitStatus {
        tokio::time::timeout(BOUND, self.runtime.wait(id))
            .await
            .expect("the container exits in time")
            .unwrap()
    }

    /// Waits until the container's stdout has a line `line`.
    async fn wait_for_line(&self, config: &ContainerConfig, line: &str) {
        let mut follower = logs::Follower::from_start(&config.logs.stdout);
        tokio::time::timeout(BOUND, async {
            while follower.next_line().await.unwrap().text != line {}
        })
        .await
        .unwrap_or_else(|_| panic!("{} never printed {line:?}", config.id));
    }

    /// Asserts that the node holds nothing any more: no container, bundle, cgroup or mount.
    async fn assert_clean(&self) {
        assert_eq!(self.runtime.list().await.unwrap(), vec![]);
        let bundles: Vec<_> = fs::read_dir(&self.runtime.config().bundle_dir)
            .unwrap()
            .collect();
        assert!(bundles.is_empty(), "bundles left: {bundles:?}");
        self.runtime.remove_node_cgroups().unwrap();
        assert_eq!(self.runtime.node_cgroup_dirs(), Vec::<PathBuf>::new());
        assert_eq!(
            mounts_under(self.dir.path()).unwrap(),
            Vec::<PathBuf>::new()
        );
        assert_no_lasting_zombies().await;
    }
}

/// Asserts that no child of this process stays a zombie: every container init is reaped.
/// Tests run at once, so a zombie may be seen between an exit and its reaping by another
/// test's runtime (whose watcher waits while that test blocks); one that is still there ten
/// seconds later was leaked.
async fn assert_no_lasting_zombies() {
    let zombies = || -> Vec<i32> {
        let me = std::process::id().to_string();
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // "PID (COMM) STATE PPID …"; COMM may hold spaces, so read after ')'.
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    let fields: Vec<&str> = stat
                        .rsplit_once(')')
                        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
                    fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
                })
            })
            .collect()
    };
    let seen = zombies();
    if seen.is_empty() {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let lasting: Vec<i32> = zombies()
            .into_iter()
            .filter(|pid| seen.contains(pid))
            .collect();
        if lasting.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "zombie children left: {lasting:?}"
        );
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let config = self.runtime.config();
        let runc = |args: &[&str]| {
            Command::new(&config.runc)
                .arg("--root")
                .arg(&config.state_dir)
                .args(args)
                .output()
        };
        if let Ok(output) = runc(&["list", "-q"]) {
            for id in String::from_utf8_lossy(&output.stdout).lines() {
                let _ = runc(&["delete", "--force", id]);
                for dir in self.runtime.cgroup_dirs(id) {
                    let _ = fs::remove_dir(dir);
                }
            }
        }
        let _ = self.runtime.remove_node_cgroups();
    }
}

/// A node id unique on this machine, so that tests running at once never share anything.
fn node_id(test: &str) -> String {
    format!("t{}-{test}", std::process::id())
}

#[tokio::test]
async fn runs_to_completion_with_exit_codes_and_logs() {
    let Some(node) = Node::new("completion") else {
        return;
    };
    let zero = node.sh("zero", "echo $GREETING from $(hostname); exit 0");
    let three = node.sh("three", "echo out; echo err >&2; exit 3");
    node.runtime.start(&zero).await.unwrap();
    node.runtime.start(&three).await.unwrap();
    assert_eq!(node.wait("zero").await.exit, Exit::Code(0));
    let status = node.wait("three").await;
    assert_eq!(status.exit, Exit::Code(3));
    assert!(!status.oom_killed);
    assert_eq!(
        node.runtime.state("three").await.unwrap().status,
        Status::Stopped
    );
    assert_eq!(
        fs::read_to_string(&zero.logs.stdout).unwrap(),
        "hello from zero\n"
    );
    assert_eq!(fs::read_to_string(&three.logs.stdout).unwrap(), "out\n");
    assert_eq!(fs::read_to_string(&three.logs.stderr).unwrap(), "err\n");
    let check = ExecRequest {
        args: vec!["true".into()],
        timeout: Duration::from_secs(10),
        max_output: 100,
    };
    let error = node.runtime.exec("three", &check).await.unwrap_err();
    assert!(matches!(error, RuntimeError::NotRunning { .. }), "{error}");
    for id in ["zero", "three"] {
        assert!(!node.runtime.cgroup_dirs(id).is_empty());
        node.runtime.delete(id).await.unwrap();
        assert_eq!(node.runtime.cgroup_dirs(id), Vec::<PathBuf>::new());
    }
    assert!(matches!(
        node.runtime.state("zero").await,
        Err(RuntimeError::NotFound { .. })
    ));
    node.runtime.delete("zero").await.unwrap();
    node.assert_clean().await;
}

/// A named volume keeps what one container wrote for the next (filled first from the
/// image), a bind mount shows the host's directory (read-only when asked), and a tmpfs
/// mount is a tmpfs with its size and mode.
#[tokio::test]
async fn volumes_binds_and_tmpfs_reach_the_container() {
    let Some(node) = Node::new("mounts") else {
        return;
    };
    fs::create_dir_all(node.rootfs.join("var/lib/app")).unwrap();
    fs::write(node.rootfs.join("var/lib/app/seed"), "seeded\n").unwrap();
    let host_dir = node.dir.path().join("host");
    fs::create_dir_all(&host_dir).unwrap();
    fs::write(host_dir.join("greeting"), "from the host\n").unwrap();
    let volumes = swarm_agent::volume::Volumes::new(node.dir.path().join("volumes"));
    let spec_mounts =
        |kind, source: Option<&str>, target: &str, read_only| swarm_api::spec::Mount {
            kind,
            source: source.map(str::to_owned),
            target: target.to_owned(),
            read_only,
            volume: None,
            no_copy: false,
            propagation: None,
            tmpfs: None,
        };
    use swarm_api::spec::MountKind;
    let mut tmpfs = spec_mounts(MountKind::Tmpfs, None, "/scratch", false);
    tmpfs.tmpfs = Some(swarm_api::spec::TmpfsOptions {
        size_bytes: Some(2 << 20),
        mode: Some(0o700),
        exec: true,
    });
    let wanted = [
        spec_mounts(
            MountKind::Bind,
            Some(host_dir.to_str().unwrap()),
            "/host",
            true,
        ),
        tmpfs,
        spec_mounts(MountKind::Volume, Some("appdata"), "/var/lib/app", false),
    ];
    let task_dir = node.dir.path().join("task");
    let mounts = volumes.mounts(&wanted, &task_dir, &node.rootfs).unwrap();
    assert!(matches!(&mounts[1], DataMount::Tmpfs { .. }));

    let mut writer = node.sh(
        "writer",
        "cat /var/lib/app/seed; echo written >> /var/lib/app/seed; cat /host/greeting; \
         touch /host/x 2>/dev/null && echo host-writable || echo host-read-only; \
         grep ' /scratch ' /proc/mounts; stat -c %a /scratch; \
         printf '#!/bin/sh\\necho ran from scratch\\n' > /scratch/run; chmod +x /scratch/run; \
         /scratch/run",
    );
    writer.mounts = mounts.clone();
    node.runtime.start(&writer).await.unwrap();
    assert_eq!(node.wait("writer").await.exit, Exit::Code(0));
    let out = fs::read_to_string(&writer.logs.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..3],
        ["seeded", "from the host", "host-read-only"],
        "{out}"
    );
    assert!(
        lines[3].starts_with("tmpfs /scratch tmpfs") && lines[3].contains("size=2048k"),
        "{out}"
    );
    assert_eq!(lines[4], "700", "{out}");
    assert_eq!(lines[5], "ran from scratch", "exec: {out}");

    let mut reader = node.sh("reader", "cat /var/lib/app/seed");
    reader.mounts = volumes.mounts(&wanted, &task_dir, &node.rootfs).unwrap();
    node.runtime.start(&reader).await.unwrap();
    assert_eq!(node.wait("reader").await.exit, Exit::Code(0));
    assert_eq!(
        fs::read_to_string(&reader.logs.stdout).unwrap(),
        "seeded\nwritten\n"
    );
    for id in ["writer", "reader"] {
        node.runtime.delete(id).await.unwrap();
    }
    node.assert_clean().await;
}

/// Added and dropped capabilities, sysctls, ulimits, a read-only root, supplementary
/// groups and an out-of-memory score adjustment reach the container's process.
#[tokio::test]
async fn process_options_reach_the_container() {
    let Some(node) = Node::new("options") else {
        return;
    };
    let script = "grep CapEff /proc/self/status; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; \
                  ulimit -n; ulimit -Hn; touch /x 2>/dev/null && echo root-writable || echo root-read-only; \
                  id -G; cat /proc/self/oom_score_adj";
    let mut config = node.sh("opts", script);
    config.user.additional_gids = vec![7, 42];
    config.options = swarm_agent::exec::ProcessOptions {
        capability_add: vec!["CAP_NET_ADMIN".into()],
        capability_drop: vec!["ALL".into()],
        sysctls: [(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "80".to_owned(),
        )]
        .into(),
        ulimits: [(
            "nofile".to_owned(),
            swarm_api::spec::Ulimit {
                soft: 256,
                hard: 512,
            },
        )]
        .into(),
        read_only_rootfs: true,
        init: None,
        tty: false,
        stdin_open: false,
        oom_score_adj: 500,
    };
    node.runtime.start(&config).await.unwrap();
    assert_eq!(node.wait("opts").await.exit, Exit::Code(0));
    let out = fs::read_to_string(&config.logs.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    // Only CAP_NET_ADMIN (bit 12) is left.
    assert_eq!(
        lines[0].split_whitespace().nth(1),
        Some("0000000000001000"),
        "{out}"
    );
    assert_eq!(lines[1..5], ["80", "256", "512", "root-read-only"], "{out}");
    assert_eq!(lines[5], "0 7 42", "{out}");
    assert_eq!(lines[6], "500", "{out}");
    node.runtime.delete("opts").await.unwrap();
    node.assert_clean().await;
}

/// An adjustment below the daemon's own starts the container: given as asked when the
/// daemon has CAP_SYS_RESOURCE, else raised to the daemon's own (the kernel would refuse
/// runc the write, and the container would not start).
#[tokio::test]
async fn a_lower_oom_score_adj_than_the_daemons_starts_the_container() {
    let Some(node) = Node::new("oom") else {
        return;
    };
    let mut config = node.sh("oom", "cat /proc/self/oom_score_adj");
    config.options.oom_score_adj = -500;
    node.runtime.start(&config).await.unwrap();
    assert_eq!(node.wait("oom").await.exit, Exit::Code(0));
    // -1000 with CAP_SYS_RESOURCE in the host's user namespace, else the daemon's own
    // (the rule itself is runc.rs's unit test).
    let floor = node.runtime.daemon_limits().unwrap().oom_score_adj_floor;
    assert_eq!(
        fs::read_to_string(&config.logs.stdout).unwrap(),
        format!("{}\n", (-500).max(floor)),
        "the daemon's floor: {floor}"
    );
    node.runtime.delete("oom").await.unwrap();
    node.assert_clean().await;
}

/// A service's `extra_hosts` and resolver settings are what the container reads in its
/// /etc/hosts and /etc/resolv.conf.
#[tokio::test]
async fn extra_hosts_and_resolver_settings_reach_the_container() {
    let Some(node) = Node::new("resolver") else {
        return;
    };
    let extra = [swarm_api::spec::ExtraHost {
        name: "db".into(),
        address: "10.0.0.5".parse().unwrap(),
    }];
    let dns = swarm_api::spec::DnsConfig {
        nameservers: vec!["192.0.2.53".parse().unwrap()],
        search: vec!["lab.example".into()],
        options: vec!["ndots:2".into()],
    };
    let node_resolv = "nameserver 10.0.0.2\nsearch corp.example\n";
    let paths = swarm_agent::network::ContainerFiles::new(
        "resolver",
        &[],
        "198.18.248.2".parse().unwrap(),
        node_resolv,
        &[],
    )
    .and_then(|files| files.with_extra_hosts(&extra, "198.18.248.1".parse().unwrap()))
    .unwrap()
    .with_dns(node_resolv, None, &dns)
    .write_to(&node.dir.path().join("etc"))
    .unwrap();
    let mut config = node.sh(
        "resolver",
        "grep -v localhost /etc/hosts; cat /etc/resolv.conf",
    );
    config.files = [
        (paths.hosts, "/etc/hosts"),
        (paths.resolv_conf, "/etc/resolv.conf"),
    ]
    .into_iter()
    .map(|(source, destination)| FileMount {
        source,
        destination: destination.into(),
        read_only: false,
    })
    .collect();
    node.runtime.start(&config).await.unwrap();
    assert_eq!(node.wait("resolver").await.exit, Exit::Code(0));
    assert_eq!(
        fs::read_to_string(&config.logs.stdout).unwrap(),
        "198.18.248.2\tresolver\n10.0.0.5\tdb\n\
         nameserver 192.0.2.53\nsearch lab.example\noptions ndots:2\n"
    );
    node.runtime.delete("resolver").await.unwrap();
    node.assert_clean().await;
}

/// With swarm-init, PID 1 is the init: an orphan that exits is reaped, and SIGTERM sent to
/// the container reaches the command, whose status the container ends with. The command
/// (`sleep`, exec'd) neither reaps nor handles SIGTERM: as PID 1 it would leave the zombie
/// and the kernel would drop the signal.
#[tokio::test]
async fn an_init_reaps_orphans_and_forwards_signals() {
    let Some(node) = Node::new("init") else {
        return;
    };
    let init = swarm_agent::exec::init::install(&node.dir.path().join("data")).unwrap();
    // The subshell leaves a short sleep behind it, which PID 1 inherits.
    let mut config = node.sh("init", "(sleep 0.2 &); echo ready; exec sleep 600");
    config.options.init = Some(init);
    config.options.read_only_rootfs = true;
    node.runtime.start(&config).await.unwrap();
    node.wait_for_line(&config, "ready").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let look = ExecRequest {
        args: vec![
            "sh".into(),
            "-c".into(),
            "cat /proc/1/comm; cat /proc/[0-9]*/stat | awk '$3 == \"Z\"' | wc -l".into(),
        ],
        timeout: Duration::from_secs(10),
        max_output: 4096,
    };
    let output = node.runtime.exec("init", &look).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.output),
        "swarm-init\n0\n",
        "PID 1, and the zombies left"
    );
    node.runtime.kill("init", libc::SIGTERM).await.unwrap();
    let exit = node.wait("init").await.exit;
    assert_eq!(exit, Exit::Code(128 + libc::SIGTERM), "{exit:?}");
    node.runtime.delete("init").await.unwrap();
    node.assert_clean().await;
}

/// With `stdin_open`, the command's stdin is a pipe that stays open: a read waits (with
/// /dev/null it would end at once), until the container is stopped.
#[tokio::test]
async fn an_open_stdin_keeps_a_read_waiting() {
    let Some(node) = Node::new("stdin") else {
        return;
    };
    let init = swarm_agent::exec::init::install(&node.dir.path().join("data")).unwrap();
    let mut config = node.sh("stdin", "echo ready; read line; echo read $?");
    config.options.init = Some(init);
    config.options.stdin_open = true;
    node.runtime.start(&config).await.unwrap();
    node.wait_for_line(&config, "ready").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.runtime.state("stdin").await.unwrap().status,
        Status::Running,
        "the read waits"
    );
    let status = node
        .runtime
        .stop("stdin", libc::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.exit, Exit::Code(128 + libc::SIGTERM));
    assert_eq!(fs::read_to_string(&config.logs.stdout).unwrap(), "ready\n");
    node.runtime.delete("stdin").await.unwrap();
    node.assert_clean().await;
}

/// With a tty, the command's stdin, stdout and stderr are a terminal of the container's own
/// /dev/pts, TERM names it, and what it prints reaches the stdout log as a terminal writes
/// it (CRLF), stderr's lines among them; the command's status is the container's.
#[tokio::test]
async fn a_tty_gives_the_command_a_terminal_and_logs_what_it_prints() {
    let Some(node) = Node::new("tty") else {
        return;
    };
    let init = swarm_agent::exec::init::install(&node.dir.path().join("data")).unwrap();
    let mut config = node.sh(
        "tty",
        "test -t 0 && test -t 1 && test -t 2 && echo on a terminal; tty; echo $TERM; echo oops >&2; exit 4",
    );
    config.options.init = Some(init);
    config.options.tty = true;
    node.runtime.start(&config).await.unwrap();
    assert_eq!(node.wait("tty").await.exit, Exit::Code(4));
    let logged = fs::read_to_string(&config.logs.stdout).unwrap();
    let lines: Vec<&str> = logged.split_inclusive("\r\n").collect();
    assert_eq!(lines.len(), 4, "{logged:?}");
    assert_eq!(lines[0], "on a terminal\r\n");
    assert!(lines[1].starts_with("/dev/pts/"), "{logged:?}");
    assert_eq!(lines[2..], ["xterm\r\n", "oops\r\n"]);
    assert_eq!(fs::read_to_string(&config.logs.stderr).unwrap(), "");
    node.runtime.delete("tty").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn stop_with_grace_then_sigkill() {
    let Some(node) = Node::new("stop") else {
        return;
    };
    let polite = node.sh(
        "polite",
        "trap 'exit 0' TERM; echo ready; while true; do sleep 0.1; done",
    );
    // Init of a PID namespace: TERM without a handler is ignored.
    let stubborn = node.sh("stubborn", "echo ready; while true; do sleep 0.1; done");
    node.runtime.start(&polite).await.unwrap();
    node.runtime.start(&stubborn).await.unwrap();
    node.wait_for_line(&polite, "ready").await;
    node.wait_for_line(&stubborn, "ready").await;
    assert_eq!(
        node.runtime.state("polite").await.unwrap().status,
        Status::Running
    );

    let started = Instant::now();
    let status = node
        .runtime
        .stop("polite", libc::SIGTERM, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(status.exit, Exit::Code(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let grace = Duration::from_millis(800);
    let started = Instant::now();
    let status = node
        .runtime
        .stop("stubborn", libc::SIGTERM, grace)
        .await
        .unwrap();
    assert_eq!(status.exit, Exit::Signal(libc::SIGKILL));
    assert_eq!(status.code(), Some(137));
    assert!(started.elapsed() >= grace, "{:?}", started.elapsed());
    assert!(started.elapsed() < grace + Duration::from_secs(5));
    // Stopping again answers the same.
    assert_eq!(
        node.runtime
            .stop("stubborn", libc::SIGTERM, grace)
            .await
            .unwrap(),
        status
    );

    node.runtime.delete("polite").await.unwrap();
    node.runtime.delete("stubborn").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn oom_kill_under_a_memory_limit_is_reported() {
    let Some(node) = Node::new("oom") else {
        return;
    };
    let mut config = node.config("hog", &["tail", "/dev/zero"]);
    config.resources.memory_bytes = Some(16 << 20);
    node.runtime.start(&config).await.unwrap();
    let status = node.wait("hog").await;
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.exit, Exit::Signal(libc::SIGKILL));
    node.runtime.delete("hog").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn limits_files_and_identity_reach_the_container() {
    let Some(node) = Node::new("limits") else {
        return;
    };
    let hosts = node.dir.path().join("hosts");
    fs::write(&hosts, "127.0.0.1 localhost\n10.0.0.7 web\n").unwrap();
    let mut config = node.config("limited", &["sleep", "600"]);
    config.resources = Resources {
        memory_bytes: Some(64 << 20),
        nano_cpus: Some(500_000_000),
        pids: Some(50),
    };
    config.files = vec![FileMount {
        source: hosts,
        destination: "/etc/hosts".into(),
        read_only: true,
    }];
    config.user = User {
        uid: 65534,
        gid: 65534,
        additional_gids: vec![],
    };
    config.cwd = "/tmp".into();
    node.runtime.start(&config).await.unwrap();

    let cgroup_file = |controller: &str, file: &str| {
        let dir = node
            .runtime
            .cgroup_dirs("limited")
            .into_iter()
            .find(|dir| {
                dir.parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .is_some_and(|name| name.to_string_lossy().split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} cgroup"));
        fs::read_to_string(dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(cgroup_file("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(cgroup_file("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file("pids", "pids.max"), "50");

    let request = |script: &str| ExecRequest {
        args: vec!["sh".into(), "-c".into(), script.into()],
        timeout: Duration::from_secs(10),
        max_output: 4096,
    };
    let output = node
        .runtime
        .exec(
            "limited",
            &request("id -u; id -g; pwd; hostname; cat /etc/hosts; echo x > /etc/hosts"),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.output);
    let stdout: String = text
        .lines()
        .filter(|line| !line.contains("Read-only file system"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        stdout,
        "65534\n65534\n/tmp\nlimited\n127.0.0.1 localhost\n10.0.0.7 web\n"
    );
    assert!(
        text.contains("can't create /etc/hosts: Read-only file system"),
        "{text}"
    );
    assert_ne!(output.exit_code, Some(0));
    // Docker's masked paths are hidden.
    let output = node
        .runtime
        .exec("limited", &request("wc -c < /proc/timer_list"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.output).trim(), "0");

    node.runtime.delete("limited").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn exec_for_healthchecks() {
    let Some(node) = Node::new("exec") else {
        return;
    };
    let config = node.config("svc", &["sleep", "600"]);
    node.runtime.start(&config).await.unwrap();
    let request = |script: &str, timeout: Duration, max_output: usize| ExecRequest {
        args: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
        max_output,
    };
    let long = Duration::from_secs(10);

    let healthy = node
        .runtime
        .exec("svc", &request("echo ok; echo warn >&2", long, 100))
        .await
        .unwrap();
    assert_eq!(healthy.exit_code, Some(0));
    // runc copies the command's stdout and stderr separately: their order is not kept.
    let mut lines: Vec<&[u8]> = healthy.output.split(|&b| b == b'\n').collect();
    lines.sort();
    assert_eq!(lines, vec![&b""[..], b"ok", b"warn"]);
    assert!(!healthy.truncated);

    let unhealthy = node
        .runtime
        .exec("svc", &request("echo down; exit 2", long, 100))
        .await
        .unwrap();
    assert_eq!(unhealthy.exit_code, Some(2));
    assert_eq!(unhealthy.output, b"down\n");

    let chatty = node
        .runtime
        .exec("svc", &request("yes | head -c 100000", long, 100))
        .await
        .unwrap();
    assert_eq!(chatty.exit_code, Some(0));
    assert_eq!(chatty.output.len(), 100);
    assert!(chatty.truncated);

    let started = Instant::now();
    let hung = node
        .runtime
        .exec(
            "svc",
            &request("echo before; sleep 11", Duration::from_millis(500), 100),
        )
        .await
        .unwrap();
    assert_eq!(hung.exit_code, None);
    assert_eq!(hung.output, b"before\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The timed-out command was killed, not left running in the container.
    let processes = node
        .runtime
        .exec("svc", &request("ps -o args", long, 4096))
        .await
        .unwrap();
    let processes = String::from_utf8_lossy(&processes.output);
    assert!(!processes.contains("sleep 11"), "{processes}");

    let error = node
        .runtime
        .exec(
            "svc",
            &ExecRequest {
                args: vec!["no-such-check".into()],
                timeout: long,
                max_output: 100,
            },
        )
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no-such-check"), "{error}");

    node.runtime.delete("svc").await.unwrap();
    let error = node
        .runtime
        .exec("svc", &request("exit 0", long, 100))
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::NotFound { .. }), "{error}");
    node.assert_clean().await;
}

#[tokio::test]
async fn logs_are_captured_and_rotated() {
    let Some(node) = Node::new("logs") else {
        return;
    };
    let mut config = node.sh(
        "chatty",
        "for i in $(seq 1 150); do echo \"line $i padding-padding-padding\"; sleep 0.01; done",
    );
    config.logs.max_bytes = 1024;
    config.logs.max_files = 3;
    let test_started = SystemTime::now();
    node.runtime.start(&config).await.unwrap();
    let mut follower = logs::Follower::from_start(&config.logs.stdout);
    let mut seen = Vec::new();
    tokio::time::timeout(BOUND, async {
        while seen.len() < 150 {
            seen.push(follower.next_line().await.unwrap().text);
        }
    })
    .await
    .expect("150 lines followed");
    assert_eq!(node.wait("chatty").await.exit, Exit::Code(0));
    // Give the rotation task one more look at the last writes.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let stdout = &config.logs.stdout;
    assert!(logs::rotated_path(stdout, 1).exists());
    assert!(logs::rotated_path(stdout, 2).exists());
    assert!(!logs::rotated_path(stdout, 3).exists(), "max_files is 3");
    assert!(fs::metadata(stdout).unwrap().len() <= 1024);
    let last = logs::tail(stdout, 3, 2).unwrap();
    let texts: Vec<&str> = last.iter().map(|line| line.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "line 149 padding-padding-padding",
            "line 150 padding-padding-padding"
        ]
    );
    // Every line kept has the time it was first seen, in order, within the test's span.
    let all = logs::tail(stdout, 3, 1000).unwrap();
    let times: Vec<SystemTime> = all
        .iter()
        .map(|line| line.time.expect("every line is indexed"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
    assert!(times[0] >= test_started && *times.last().unwrap() <= SystemTime::now());
    // The follower lost nothing across rotations that it could see: lines come in order.
    let numbers: Vec<u32> = seen
        .iter()
        .map(|line| line.split(' ').nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(numbers.last(), Some(&150));

    node.runtime.delete("chatty").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn a_restarted_runtime_adopts_running_containers() {
    let Some(mut node) = Node::new("adopt") else {
        return;
    };
    let config = node.sh(
        "survivor",
        "echo ready; while [ ! -e /tmp/stop ]; do sleep 0.05; done; exit 5",
    );
    node.runtime.start(&config).await.unwrap();
    node.wait_for_line(&config, "ready").await;

    node.restart();
    let listed = node.runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "survivor");
    assert_eq!(listed[0].status, Status::Running);
    let waiting = {
        let runtime = node.runtime.clone();
        tokio::spawn(async move { runtime.wait("survivor").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    fs::write(node.rootfs.join("tmp/stop"), "").unwrap();
    let status = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the adopted container's exit is seen")
        .unwrap()
        .unwrap();
    // Still our child (the same process), so the code is known; after a real restart it
    // is Exit::Unknown (the process tests cover a process that is not our child).
    assert_eq!(status.exit, Exit::Code(5));
    node.runtime.delete("survivor").await.unwrap();
    node.assert_clean().await;
}

/// A child process killed and reaped when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_container_of_another_parent_is_adopted_with_an_unknown_exit_code() {
    let Some(node) = Node::new("foreign") else {
        return;
    };
    // As after a real restart, the container's init is not our child: here a foreground
    // `runc run` is its parent, and reaps it.
    let config = node.sh(
        "foreign",
        "echo ready; while [ ! -e /tmp/stop ]; do sleep 0.05; done; exit 5",
    );
    let bundle = node.runtime.config().bundle_dir.join("foreign");
    fs::create_dir_all(&bundle).unwrap();
    let spec = node.runtime.bundle_spec(&config).unwrap();
    fs::write(
        bundle.join("config.json"),
        serde_json::to_vec(&spec).unwrap(),
    )
    .unwrap();
    let mut parent = ChildGuard(
        Command::new("runc")
            .arg("--root")
            .arg(&node.runtime.config().state_dir)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg("foreign")
            .stdin(std::process::Stdio::null())
            .stdout(logs::open_for_append(&config.logs.stdout).unwrap())
            .stderr(logs::open_for_append(&config.logs.stderr).unwrap())
            .spawn()
            .unwrap(),
    );
    node.wait_for_line(&config, "ready").await;
    let listed = node.runtime.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, Status::Running);

    let waiting = {
        let runtime = node.runtime.clone();
        tokio::spawn(async move { runtime.wait("foreign").await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished());
    fs::write(node.rootfs.join("tmp/stop"), "").unwrap();
    let status = tokio::time::timeout(BOUND, waiting)
        .await
        .expect("the exit is seen")
        .unwrap()
        .unwrap();
    assert_eq!(status.exit, Exit::Unknown);
    assert_eq!(status.code(), None);
    // The code went to the real parent.
    assert_eq!(parent.0.wait().unwrap().code(), Some(5));

    node.runtime.delete("foreign").await.unwrap();
    node.assert_clean().await;
}

/// A process of a container whose `runc exec` died becomes the daemon's (a subreaper's)
/// child; killed with its container, it stays a zombie of the daemon, and the container's
/// init cannot finish exiting until that zombie is reaped: the orphan reaper does it, so
/// the container stops.
#[tokio::test]
async fn a_container_stops_even_when_an_exec_left_an_orphan() {
    let Some(node) = Node::new("exec-orphan") else {
        return;
    };
    let config = node.config("orphaned", &["sleep", "600"]);
    node.runtime.start(&config).await.unwrap();
    let mut exec = ChildGuard(
        Command::new("runc")
            .arg("--root")
            .arg(&node.runtime.config().state_dir)
            .args(["exec", "orphaned", "sleep", "601"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let exec_pid = exec.0.id() as i32;
    let deadline = Instant::now() + BOUND;
    // The exec'd `sleep 601` runs (as runc's child) before runc is killed.
    while !fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        fs::read_to_string(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.split('\0').eq(["sleep", "601", ""]))
    }) {
        assert!(Instant::now() < deadline, "the exec never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // SAFETY: kill has no memory effects; the pid is our child, not yet reaped.
    unsafe { libc::kill(exec_pid, libc::SIGKILL) };
    exec.0.wait().unwrap();

    let stopped = tokio::time::timeout(
        BOUND,
        node.runtime
            .stop("orphaned", libc::SIGTERM, Duration::from_millis(200)),
    )
    .await
    .expect("the stop ends in time")
    .expect("the container stops");
    assert_eq!(stopped.exit, Exit::Signal(libc::SIGKILL));
    node.runtime.delete("orphaned").await.unwrap();
    node.assert_clean().await;
}

#[tokio::test]
async fn a_missing_command_fails_clearly_and_leaves_nothing() {
    let Some(node) = Node::new("missing") else {
        return;
    };
    let config = node.config("broken", &["no-such-program", "--serve"]);
    let error = node.runtime.start(&config).await.unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, RuntimeError::Runc { command: "run", .. }),
        "{message}"
    );
    assert!(message.contains("broken"), "{message}");
    assert!(message.contains("no-such-program"), "{message}");
    assert!(message.contains("not found"), "{message}");
    assert_eq!(node.runtime.cgroup_dirs("broken"), Vec::<PathBuf>::new());
    node.assert_clean().await;

    let error = node
        .runtime
        .start(&node.config("bad/id", &["true"]))
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::InvalidId { .. }), "{error}");
}

#[tokio::test]
async fn two_nodes_on_one_machine_do_not_collide() {
    let (Some(first), Some(second)) = (Node::new("twin-a"), Node::new("twin-b")) else {
        return;
    };
    for node in [&first, &second] {
        node.runtime
            .start(&node.config("web", &["sleep", "600"]))
            .await
            .unwrap();
    }
    for (node, other) in [(&first, &second), (&second, &first)] {
        let listed = node.runtime.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, Status::Running);
        assert_ne!(listed[0].pid, other.runtime.list().await.unwrap()[0].pid);
        let dirs = node.runtime.cgroup_dirs("web");
        assert!(!dirs.is_empty());
        assert!(
            dirs.iter()
                .all(|dir| !other.runtime.cgroup_dirs("web").contains(dir))
        );
    }
    assert!(matches!(
        first.runtime.start(&first.config("web", &["true"])).await,
        Err(RuntimeError::AlreadyExists { .. })
    ));
    let first_pid = first.runtime.state("web").await.unwrap().pid.unwrap();
    first.runtime.delete("web").await.unwrap();
    // Reaped, not a zombie.
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists());
    assert_eq!(
        second.runtime.state("web").await.unwrap().status,
        Status::Running
    );
    second.runtime.delete("web").await.unwrap();
    first.assert_clean().await;
    second.assert_clean().await;
}

/// A network namespace made for one test, deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new(name: String) -> Self {
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?} failed");
        };
        ip(&["netns", "add", &name]);
        let netns = Self(name);
        ip(&[
            "-n", &netns.0, "link", "add", "swrt0", "type", "veth", "peer", "name", "swrt1",
        ]);
        netns
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

#[tokio::test]
async fn joins_the_given_network_namespace_or_gets_an_empty_one() {
    let Some(node) = Node::new("netns") else {
        return;
    };
    if !swarm_testkit::require("netns", swarm_testkit::has_program("ip"), "iproute2") {
        return;
    }
    let netns = NetNs::new(format!("swrt-{}", std::process::id()));
    let mut joined = node.config("joined", &["sleep", "600"]);
    joined.netns = Some(netns.path());
    let isolated = node.config("isolated", &["sleep", "600"]);
    node.runtime.start(&joined).await.unwrap();
    node.runtime.start(&isolated).await.unwrap();
    let interfaces = |id: &'static str| {
        let runtime = node.runtime.clone();
        async move {
            let output = runtime
                .exec(
                    id,
                    &ExecRequest {
                        args: vec!["cat".into(), "/proc/net/dev".into()],
                        timeout: Duration::from_secs(10),
                        max_output: 4096,
                    },
                )
                .await
                .unwrap();
            let mut names: Vec<String> = String::from_utf8_lossy(&output.output)
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(name, _)| name.trim().to_string())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(interfaces("joined").await, vec!["lo", "swrt0", "swrt1"]);
    assert_eq!(interfaces("isolated").await, vec!["lo"]);
    node.runtime.delete("joined").await.unwrap();
    node.runtime.delete("isolated").await.unwrap();
    node.assert_clean().await;
}
