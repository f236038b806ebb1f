//! Task networking on real namespaces, veths, bridges and iptables (root). Every test uses
//! its own node id (so its own bridge and veth names) and its own subnet of 198.18.0.0/15
//! (kept apart from the default pool 198.19.0.0/16 another test on the machine might use),
//! and cleans up through guards even when it fails. Listeners are busybox httpd inside the
//! task namespaces; clients are busybox wget from the node or from another task.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarm_agent::network::{
    Ipv4Net, NetworkError, NodeNetwork, NodeNetworkConfig, TaskNetwork, bridge_name, host_veth_name,
};

const PORT: u16 = 8080;

fn prerequisites(test: &str) -> bool {
    let programs = ["ip", "iptables", "nsenter", "unshare", "busybox"];
    swarm_testkit::require(
        test,
        swarm_testkit::is_root() && programs.iter().all(|p| swarm_testkit::has_program(p)),
        "root and ip (iproute2), iptables, nsenter and unshare (util-linux), busybox",
    )
}

/// A unique node id: this test's name, the process and a counter.
fn node_id(test: &str) -> String {
    format!("{test}-{}-{:?}", std::process::id(), Instant::now())
}

/// A node set up over a temporary namespace directory. On drop, removes what the node may
/// have made, by name, whatever state the code under test left.
struct TestNode {
    node_id: String,
    netns_dir: PathBuf,
    network: Option<NodeNetwork>,
    // Dropped after the network's cleanup, which unmounts the files inside.
    _dir: tempfile::TempDir,
    task_ids: Vec<String>,
}

impl TestNode {
    fn setup(test: &str, subnet: &str) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let node_id = node_id(test);
        let netns_dir = dir.path().join("netns");
        let mut node = TestNode {
            node_id,
            netns_dir,
            network: None,
            _dir: dir,
            task_ids: Vec::new(),
        };
        node.network = Some(node.start(subnet));
        node
    }

    /// A NodeNetwork over this node's id and directory: first setup, or after a restart.
    fn start(&self, subnet: &str) -> NodeNetwork {
        NodeNetwork::setup(NodeNetworkConfig {
            node_id: self.node_id.clone(),
            subnet: subnet.parse().unwrap(),
            netns_dir: self.netns_dir.clone(),
        })
        .unwrap()
    }

    fn network(&self) -> &NodeNetwork {
        self.network.as_ref().unwrap()
    }

    fn bridge(&self) -> String {
        bridge_name(&self.node_id)
    }

    /// Attaches `task_id`, remembering it for the cleanup.
    fn attach(&mut self, task_id: &str) -> TaskNetwork {
        self.task_ids.push(task_id.to_owned());
        self.network().attach(task_id).unwrap()
    }

    fn veth(&self, task_id: &str) -> String {
        host_veth_name(&self.node_id, task_id)
    }

    fn teardown(&mut self) {
        if let Some(network) = self.network.take() {
            network.teardown().unwrap();
        }
    }

    /// Asserts that nothing of this node is left: links, namespace files and mounts,
    /// iptables rule.
    fn assert_nothing_left(&self) {
        let links = ip_links();
        assert!(!links.contains(&self.bridge()), "bridge left: {links:?}");
        for task_id in &self.task_ids {
            let veth = self.veth(task_id);
            assert!(!links.contains(&veth), "veth {veth} left: {links:?}");
        }
        assert!(
            !self.netns_dir.exists(),
            "{} left",
            self.netns_dir.display()
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let dir = self.netns_dir.to_str().unwrap();
        assert!(!mounts.contains(dir), "mounts left under {dir}:\n{mounts}");
        assert!(
            !forward_rules().contains(&self.bridge()),
            "iptables rule left: {}",
            forward_rules()
        );
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(network) = self.network.take()
            && let Err(error) = network.teardown()
        {
            eprintln!("teardown of {} failed: {error}", self.node_id);
        }
        // Whatever the code under test left, by name.
        for task_id in &self.task_ids {
            quiet("ip", &["link", "del", "dev", &self.veth(task_id)]);
            let path = self.netns_dir.join(task_id);
            quiet("umount", &["-l", path.to_str().unwrap()]);
        }
        quiet("ip", &["link", "del", "dev", &self.bridge()]);
        swarm_agent::network::remove_bridge_rules(&self.bridge());
    }
}

/// Runs a cleanup command, ignoring failure; true when it succeeded.
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn output(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The names of the links of the node (this test's network namespace).
fn ip_links() -> BTreeSet<String> {
    output("ip", &["-o", "link", "show"])
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap().to_owned())
        .collect()
}

/// The node's FORWARD and NAT rules.
fn forward_rules() -> String {
    output("iptables", &["-w", "5", "-S", "FORWARD"])
        + &output("iptables", &["-w", "5", "-t", "nat", "-S", "POSTROUTING"])
}

/// busybox httpd inside a task's namespace, serving `body` at /; killed on drop.
struct Listener {
    child: Child,
    _root: tempfile::TempDir,
}

impl Listener {
    fn start(network: &TaskNetwork, body: &str) -> Listener {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", network.netns_path.display()))
            .args(["busybox", "httpd", "-f", "-p", &PORT.to_string()]);
        Listener::spawn(command, body)
    }

    /// On the node, bound to `address` only (no clash with other tests' ports).
    fn start_on_node(address: Ipv4Addr, body: &str) -> Listener {
        let mut command = Command::new("busybox");
        command.args(["httpd", "-f", "-p", &format!("{address}:{PORT}")]);
        Listener::spawn(command, body)
    }

    fn spawn(mut httpd: Command, body: &str) -> Listener {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("index.html"), body).unwrap();
        let child = httpd
            .arg("-h")
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Listener { child, _root: root }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GETs http://ADDRESS:PORT/ from the node, or from inside `from`'s namespace.
fn fetch(from: Option<&TaskNetwork>, address: Ipv4Addr) -> Option<String> {
    let url = format!("http://{address}:{PORT}/");
    let mut command = match from {
        Some(network) => {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", network.netns_path.display()));
            command.arg("busybox");
            command
        }
        None => Command::new("busybox"),
    };
    // -Y off: no proxy from the environment. Not -T: this busybox's wget crashes with it;
    // the wait is bounded here instead.
    let mut child = command
        .args(["wget", "-q", "-Y", "off", "-O", "-", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(3);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Fetches until it answers (a listener takes a moment to bind), for at most 10 s.
fn fetch_eventually(from: Option<&TaskNetwork>, address: Ipv4Addr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(body) = fetch(from, address) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "no answer from {address}:{PORT} (from {:?})",
            from.map(|n| &n.task_id)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn in_netns(network: &TaskNetwork, args: &[&str]) -> String {
    let net = format!("--net={}", network.netns_path.display());
    let mut all = vec![net.as_str()];
    all.extend_from_slice(args);
    output("nsenter", &all)
}

#[test]
fn two_tasks_listen_on_one_port_answer_the_node_and_each_other() {
    if !prerequisites("two_tasks_listen_on_one_port_answer_the_node_and_each_other") {
        return;
    }
    let mut node = TestNode::setup("two-tasks", "198.18.101.0/24");
    let a = node.attach("task-a");
    let b = node.attach("task-b");
    assert_eq!(a.address, "198.18.101.2/24".parse::<Ipv4Net>().unwrap());
    assert_eq!(b.address, "198.18.101.3/24".parse::<Ipv4Net>().unwrap());
    assert_eq!(a.gateway, Ipv4Addr::new(198, 18, 101, 1));
    assert_eq!(a.netns_path, node.netns_dir.join("task-a"));

    // Inside: eth0 with the address, lo up, the default route via the gateway.
    let addresses = in_netns(&a, &["ip", "-o", "-4", "address", "show"]);
    assert!(addresses.contains("lo    inet 127.0.0.1/8"), "{addresses}");
    assert!(
        addresses.contains("eth0    inet 198.18.101.2/24"),
        "{addresses}"
    );
    let routes = in_netns(&a, &["ip", "route", "show"]);
    assert!(
        routes.contains("default via 198.18.101.1 dev eth0"),
        "{routes}"
    );
    // Outside: the host end on the bridge.
    let veth = output("ip", &["-o", "link", "show", "dev", &a.host_veth]);
    assert!(
        veth.contains(&format!("master {}", node.bridge())),
        "{veth}"
    );

    {
        let _listen_a = Listener::start(&a, "hello from a");
        let _listen_b = Listener::start(&b, "hello from b");
        assert_eq!(fetch_eventually(None, a.address.addr()), "hello from a");
        assert_eq!(fetch_eventually(None, b.address.addr()), "hello from b");
        assert_eq!(fetch_eventually(Some(&a), b.address.addr()), "hello from b");
        assert_eq!(fetch_eventually(Some(&b), a.address.addr()), "hello from a");
        // Each namespace has its own loopback and port space.
        let local = fetch_eventually(Some(&a), Ipv4Addr::LOCALHOST);
        assert_eq!(local, "hello from a");
    }

    // A second attach of an attached task is refused; detach is idempotent.
    assert!(matches!(
        node.network().attach("task-a"),
        Err(NetworkError::AlreadyAttached { .. })
    ));
    node.network().detach("task-a").unwrap();
    node.network().detach("task-a").unwrap();
    assert!(!a.netns_path.exists());
    assert!(!ip_links().contains(&a.host_veth));
    assert_eq!(
        node.network().list().unwrap(),
        BTreeSet::from(["task-b".to_owned()])
    );
    assert!(fetch(None, a.address.addr()).is_none());

    node.network().detach("task-b").unwrap();
    node.teardown();
    node.assert_nothing_left();
}

#[test]
fn a_restarted_node_adopts_its_tasks_and_sweeps_the_others() {
    if !prerequisites("a_restarted_node_adopts_its_tasks_and_sweeps_the_others") {
        return;
    }
    let subnet = "198.18.102.0/24";
    let mut node = TestNode::setup("restart", subnet);
    let a = node.attach("keep-a");
    let b = node.attach("keep-b");
    let gone = node.attach("gone");
    let _listen_a = Listener::start(&a, "still a");

    // "Restart": the old object goes away without teardown, a new one takes the same
    // node id and directory. Setup again changes nothing (each iptables rule once).
    node.network = None;
    node.network = Some(node.start(subnet));
    let rules = forward_rules();
    // Between ports (-i, -o), out (-i, ! -o), back in (-o), in for the mesh's DNAT (-o),
    // MASQUERADE (! -o).
    assert_eq!(rules.matches(&node.bridge()).count(), 7, "{rules}");

    let network = node.network();
    assert_eq!(
        network.list().unwrap(),
        BTreeSet::from(["gone".to_owned(), "keep-a".to_owned(), "keep-b".to_owned()])
    );
    assert_eq!(network.adopt("keep-a").unwrap(), a);
    assert_eq!(network.adopt("keep-b").unwrap(), b);
    let owned = ["keep-a", "keep-b"];
    let removed = network.sweep(|task| owned.contains(&task)).unwrap();
    assert_eq!(removed, vec!["gone".to_owned()]);
    assert!(!gone.netns_path.exists());
    assert!(!ip_links().contains(&gone.host_veth));

    // The adopted task still answers; a new task does not get an adopted address.
    assert_eq!(fetch_eventually(None, a.address.addr()), "still a");
    let c = node.attach("new-c");
    assert!(![a.address, b.address].contains(&c.address), "{c:?}");
    assert!(matches!(
        node.network().attach("keep-a"),
        Err(NetworkError::AlreadyAttached { .. })
    ));

    drop(_listen_a);
    node.teardown();
    node.assert_nothing_left();
}

#[test]
fn half_made_networks_are_cleaned_by_detach_sweep_and_attach() {
    if !prerequisites("half_made_networks_are_cleaned_by_detach_sweep_and_attach") {
        return;
    }
    let subnet = "198.18.103.0/24";
    let mut node = TestNode::setup("half-made", subnet);
    let dir = node.netns_dir.clone();
    let bridge = node.bridge();
    let path = |task: &str| dir.join(task);
    // Crash states, made with other tools than the code under test:
    // a namespace mounted, no veth;
    let namespace_only = |task: &str| {
        std::fs::write(path(task), "").unwrap();
        output(
            "unshare",
            &[&format!("--net={}", path(task).display()), "true"],
        );
    };
    // a file, no namespace mounted on it (a crash before the mount);
    let file_only = |task: &str| std::fs::write(path(task), "").unwrap();
    for task in ["ns-only", "file-only", "veth-no-address", "reattach"] {
        node.task_ids.push(task.to_owned());
    }
    namespace_only("ns-only");
    file_only("file-only");
    // a veth, but nothing configured inside (a crash before the addresses).
    namespace_only("veth-no-address");
    let veth = node.veth("veth-no-address");
    let netns = path("veth-no-address");
    output(
        "ip",
        &[
            "link",
            "add",
            "name",
            &veth,
            "up",
            "master",
            &bridge,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            netns.to_str().unwrap(),
        ],
    );
    namespace_only("reattach");
    // A restarted node finds them all, and adopts none.
    node.network = None;
    node.network = Some(node.start(subnet));
    let network = node.network();
    for task in ["ns-only", "file-only", "veth-no-address"] {
        let error = network.adopt(task).unwrap_err();
        assert!(
            matches!(error, NetworkError::Incomplete { .. }),
            "{task}: {error}"
        );
    }
    let error = network.adopt("veth-no-address").unwrap_err().to_string();
    assert!(
        error.contains("eth0 has no address in 198.18.103.0/24"),
        "{error}"
    );

    network.detach("ns-only").unwrap();
    assert!(!path("ns-only").exists());
    // Attach over leftovers makes a working network.
    let reattached = network.attach("reattach").unwrap();
    let _listen = Listener::start(&reattached, "reattached");
    assert_eq!(
        fetch_eventually(None, reattached.address.addr()),
        "reattached"
    );
    drop(_listen);

    let removed = network.sweep(|task| task == "reattach").unwrap();
    assert_eq!(
        removed,
        vec!["file-only".to_owned(), "veth-no-address".to_owned()]
    );
    assert!(!ip_links().contains(&veth));
    assert_eq!(
        network.list().unwrap(),
        BTreeSet::from(["reattach".to_owned()])
    );
    node.teardown();
    node.assert_nothing_left();
}

#[test]
fn a_teardown_that_cannot_remove_one_task_removes_the_rest() {
    if !prerequisites("a_teardown_that_cannot_remove_one_task_removes_the_rest") {
        return;
    }
    let mut node = TestNode::setup("teardown-every-part", "198.18.112.0/24");
    node.attach("web.1");
    // An entry named like a task that is no namespace and cannot be removed as one (a
    // directory with a file in it); it sorts before the real task.
    let stray = node.netns_dir.join("0-stray");
    std::fs::create_dir(&stray).unwrap();
    std::fs::write(stray.join("keep"), "").unwrap();

    let error = node
        .network
        .take()
        .unwrap()
        .teardown()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot remove the namespace file") && error.contains("0-stray"),
        "{error}"
    );
    // The first failure did not stop the rest: the real task's network, the bridge and its
    // rules are gone.
    let links = ip_links();
    assert!(!links.contains(&node.veth("web.1")), "veth left: {links:?}");
    assert!(!links.contains(&node.bridge()), "bridge left: {links:?}");
    assert!(
        !forward_rules().contains(&node.bridge()),
        "iptables rule left: {}",
        forward_rules()
    );
    assert!(!node.netns_dir.join("web.1").exists());
    std::fs::remove_dir_all(&stray).unwrap();
    std::fs::remove_dir(&node.netns_dir).unwrap();
    node.assert_nothing_left();
}

#[test]
fn two_nodes_on_one_machine_do_not_collide() {
    if !prerequisites("two_nodes_on_one_machine_do_not_collide") {
        return;
    }
    let mut one = TestNode::setup("node-one", "198.18.104.0/24");
    let mut two = TestNode::setup("node-two", "198.18.105.0/24");
    assert_ne!(one.bridge(), two.bridge());
    // The same task id on both nodes (two clusters on one machine).
    let on_one = one.attach("web.1");
    let on_two = two.attach("web.1");
    assert_ne!(on_one.host_veth, on_two.host_veth);
    assert_ne!(on_one.netns_path, on_two.netns_path);
    assert_eq!(on_one.address.addr(), Ipv4Addr::new(198, 18, 104, 2));
    assert_eq!(on_two.address.addr(), Ipv4Addr::new(198, 18, 105, 2));
    let _listen_one = Listener::start(&on_one, "one");
    let _listen_two = Listener::start(&on_two, "two");
    assert_eq!(fetch_eventually(None, on_one.address.addr()), "one");
    assert_eq!(fetch_eventually(None, on_two.address.addr()), "two");
    assert_eq!(one.network().list().unwrap().len(), 1);
    assert_eq!(two.network().list().unwrap().len(), 1);

    // Node one leaves; node two is untouched.
    drop(_listen_one);
    one.teardown();
    one.assert_nothing_left();
    assert_eq!(fetch_eventually(None, on_two.address.addr()), "two");
    assert!(forward_rules().contains(&two.bridge()));

    drop(_listen_two);
    two.teardown();
    two.assert_nothing_left();
}

#[test]
fn bad_inputs_are_refused_with_their_names() {
    if !prerequisites("bad_inputs_are_refused_with_their_names") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let refused = NodeNetwork::setup(NodeNetworkConfig {
        node_id: node_id("bad-inputs"),
        subnet: "198.18.106.1/24".parse().unwrap(),
        netns_dir: dir.path().join("netns"),
    })
    .unwrap_err()
    .to_string();
    assert!(
        refused.contains("198.18.106.1/24 has host bits set"),
        "{refused}"
    );

    let mut node = TestNode::setup("bad-inputs", "198.18.106.0/30");
    let error = node.network().attach("../escape").unwrap_err().to_string();
    assert!(error.contains("invalid task id \"../escape\""), "{error}");
    node.attach("only");
    node.task_ids.push("second".to_owned());
    let error = node.network().attach("second").unwrap_err().to_string();
    assert!(error.contains("198.18.106.0/30 is exhausted"), "{error}");
    // The refused attach left nothing.
    assert!(!node.netns_dir.join("second").exists());
    node.teardown();
    node.assert_nothing_left();
}

/// A network namespace standing for a machine (the way multi-node tests place each node),
/// bind-mounted at a temporary path; unmounted on drop.
struct TestHost {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestHost {
    fn new() -> TestHost {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host");
        std::fs::write(&path, "").unwrap();
        let host = TestHost { path, _dir: dir };
        output(
            "unshare",
            &[&format!("--net={}", host.path.display()), "true"],
        );
        host
    }

    /// Runs `body` on a thread of its own inside this host: the subprocesses it spawns,
    /// and the threads, start there too.
    fn run(&self, body: impl FnOnce() + Send + 'static) {
        let path = self.path.clone();
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: a valid namespace fd; only this thread changes namespace.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            body();
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        quiet("umount", &["-l", self.path.to_str().unwrap()]);
    }
}

#[test]
fn bridge_ports_talk_under_a_forward_drop_policy() {
    if !prerequisites("bridge_ports_talk_under_a_forward_drop_policy") {
        return;
    }
    // In a host of its own: the DROP policy must not touch the machine's other tests.
    let host = TestHost::new();
    host.run(|| {
        output("iptables", &["-w", "5", "-P", "FORWARD", "DROP"]);
        let subnet = "198.18.107.0/24";
        let mut node = TestNode::setup("forward-drop", subnet);
        let a = node.attach("task-a");
        let b = node.attach("task-b");
        let _listen_b = Listener::start(&b, "b behind DROP");
        assert_eq!(
            fetch_eventually(Some(&a), b.address.addr()),
            "b behind DROP"
        );

        // Without the rule, br_netfilter hands bridged traffic to FORWARD, which drops it.
        let bridge = node.bridge();
        let rule = [
            "-w", "5", "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
        ];
        output("iptables", &rule);
        let bridged_to_iptables =
            output("sysctl", &["-n", "net.bridge.bridge-nf-call-iptables"]).trim() == "1";
        if bridged_to_iptables {
            assert_eq!(fetch(Some(&a), b.address.addr()), None);
        }
        // Setup again (a restart) puts the rule back.
        node.network = None;
        node.network = Some(node.start(subnet));
        assert_eq!(
            fetch_eventually(Some(&a), b.address.addr()),
            "b behind DROP"
        );

        drop(_listen_b);
        node.teardown();
        node.assert_nothing_left();
    });
}

/// A runc container in a bundle of its own; deleted (forcibly) on drop.
struct Container {
    id: String,
    state_root: PathBuf,
}

impl Drop for Container {
    fn drop(&mut self) {
        let root = self.state_root.to_str().unwrap();
        quiet("runc", &["--root", root, "delete", "--force", &self.id]);
    }
}

#[test]
fn a_runc_container_runs_in_the_task_network_with_its_files() {
    let test = "a_runc_container_runs_in_the_task_network_with_its_files";
    if !prerequisites(test)
        || !swarm_testkit::require(test, swarm_testkit::has_program("runc"), "runc")
    {
        return;
    }
    let mut node = TestNode::setup("runc", "198.18.108.0/24");
    let task = node.attach("ctr-1");
    let work = tempfile::tempdir().unwrap();

    // The files, from a node whose resolver is a local cache (unreachable from the task).
    let files = swarm_agent::network::ContainerFiles::new(
        "ctr-1",
        &["web".to_owned()],
        task.address.addr(),
        "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\n",
        &[],
    )
    .unwrap()
    .write_to(&work.path().join("files"))
    .unwrap();

    // The node answers on its gateway address: the container reaches it over eth0.
    let _node_listener = Listener::start_on_node(task.gateway, "the node");
    // Listening before the container's one request.
    assert_eq!(fetch_eventually(None, task.gateway), "the node");

    // A bundle: busybox alone in the rootfs; runc's default spec with the task's network
    // namespace, its hostname and the three files bind-mounted.
    let bundle = work.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::copy(
        std::fs::canonicalize("/bin/busybox").unwrap(),
        bundle.join("rootfs/bin/busybox"),
    )
    .unwrap();
    output("runc", &["spec", "--bundle", bundle.to_str().unwrap()]);
    let config_path = bundle.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    let script = format!(
        "busybox ip -o -4 address show dev eth0; busybox cat /etc/hosts /etc/resolv.conf; \
         busybox hostname; busybox wget -q -Y off -O - http://{}:{PORT}/",
        task.gateway
    );
    config["process"]["terminal"] = false.into();
    config["process"]["args"] = serde_json::json!(["/bin/busybox", "sh", "-c", script]);
    config["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    config["hostname"] = "ctr-1".into();
    for namespace in config["linux"]["namespaces"].as_array_mut().unwrap() {
        if namespace["type"] == "network" {
            namespace["path"] = task.netns_path.to_str().unwrap().into();
        }
    }
    let mounts = config["mounts"].as_array_mut().unwrap();
    for (destination, source) in [
        ("/etc/hosts", &files.hosts),
        ("/etc/resolv.conf", &files.resolv_conf),
        ("/etc/hostname", &files.hostname),
    ] {
        mounts.push(serde_json::json!({
            "destination": destination, "type": "bind",
            "source": source, "options": ["rbind", "ro"],
        }));
    }
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();

    let container = Container {
        id: format!("swarm-net-test-{}", std::process::id()),
        state_root: work.path().join("runc-state"),
    };
    let mut child = Command::new("runc")
        .arg("--root")
        .arg(&container.state_root)
        .args(["run", "--bundle", bundle.to_str().unwrap(), &container.id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the container did not finish within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ran = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "runc run: {}\n{stdout}{}",
        ran.status,
        String::from_utf8_lossy(&ran.stderr)
    );
    for expected in [
        "eth0    inet 198.18.108.2/24",
        "127.0.0.1\tlocalhost\n",
        "198.18.108.2\tctr-1 web\n",
        "nameserver 10.0.0.2\nsearch corp.example\n",
        "\nctr-1\n",
        "the node",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("127.0.0.53"), "{stdout}");

    drop(container);
    drop(_node_listener);
    node.teardown();
    node.assert_nothing_left();
}

#[test]
fn a_failed_attach_leaves_nothing_and_says_what_failed() {
    if !prerequisites("a_failed_attach_leaves_nothing_and_says_what_failed") {
        return;
    }
    // Room for one task: the retry below succeeds only if the failed attempt released it.
    let mut node = TestNode::setup("failed-attach", "198.18.109.0/30");
    node.task_ids.push("doomed".to_owned());
    // The bridge vanishes under the node (an operator, a crash of another tool).
    output("ip", &["link", "del", "dev", &node.bridge()]);
    let error = node.network().attach("doomed").unwrap_err().to_string();
    let veth = node.veth("doomed");
    assert!(
        error.contains(&format!(
            "`ip link add name {veth} up master {}",
            node.bridge()
        )),
        "{error}"
    );
    assert!(error.contains("failed (exit status: "), "{error}");
    // The attempt is rolled back: no namespace, no veth, no lease.
    assert!(node.network().list().unwrap().is_empty());
    assert!(!ip_links().contains(&veth));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(node.netns_dir.to_str().unwrap()),
        "{mounts}"
    );

    // Once the bridge is back, the same node attaches the task.
    let bridge = node.bridge();
    output("ip", &["link", "add", "name", &bridge, "type", "bridge"]);
    output("ip", &["link", "set", &bridge, "up"]);
    let attached = node.attach("doomed");
    assert_eq!(attached.address.addr(), Ipv4Addr::new(198, 18, 109, 2));
    node.teardown();
    node.assert_nothing_left();
}
