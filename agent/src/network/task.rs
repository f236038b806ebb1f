//! A network namespace per task, wired to the node's bridge by a veth pair.
//!
//! Where the namespaces live: each is a bind mount of an nsfs file at
//! `<node's netns dir>/<task id>`, not a named namespace under /run/netns. The directory
//! belongs to one node, so listing it after a restart lists exactly this node's tasks, by
//! their ids, and several nodes on one machine (test hosts share the mount namespace, and
//! with it /run/netns) never see each other's. It also keeps `ip netns exec` out of reach:
//! it remounts /sys and hides the cgroups from runc. The runtime joins a namespace by its
//! path; commands inside one run under `nsenter --net=PATH`.
//!
//! Order of making, and of unmaking in reverse, so that any crash leaves state `detach`
//! recognises: the namespace file, then the veth (made atomically with its host end on the
//! bridge and up, its other end named `eth0` inside the namespace), then the addresses and
//! routes inside. No lease file: after a restart the address is read back from `eth0`.

use std::collections::{BTreeSet, HashSet};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;

use super::bridge::{Bridge, hex_digest};
use super::command::{delete_link, run};
use super::ipam::{Ipam, IpamError};
use super::{NetworkError, NodeOverlays, Overlay, every_part};

/// What a node's task networking needs to know.
#[derive(Debug, Clone)]
pub struct NodeNetworkConfig {
    pub node_id: String,
    /// The subnet the managers leased to this node.
    pub subnet: Ipv4Net,
    /// This node's directory of task namespaces (one file per task, named by its id),
    /// e.g. `/run/swarm/<node>/netns`; made if missing. Under /run, a reboot empties it
    /// along with the namespaces.
    pub netns_dir: PathBuf,
}

/// A task's network, ready for its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNetwork {
    pub task_id: String,
    /// The namespace for the container (the OCI config's network namespace path).
    pub netns_path: PathBuf,
    /// The task's address on `eth0`, with the subnet's prefix length.
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The veth end on the node's bridge.
    pub host_veth: String,
}

/// The task networking of one node. Methods block on a few short subprocesses (about
/// 10 ms per attach): from async code, call them in `spawn_blocking`. Calls for different
/// tasks may run concurrently.
#[derive(Debug)]
pub struct NodeNetwork {
    node_id: String,
    bridge: Bridge,
    netns_dir: PathBuf,
    ipam: Mutex<Ipam>,
}

/// The host end of a task's veth: `swv` and 12 hex digits of the SHA-256 of node and task
/// ids (15 characters, the kernel's limit). The node id is in it because two nodes on one
/// host namespace may run tasks of the same id (two clusters in tests).
pub fn host_veth_name(node_id: &str, task_id: &str) -> String {
    format!(
        "swv{}",
        &hex_digest(format!("{node_id}\0{task_id}").as_bytes())[..12]
    )
}

impl NodeNetwork {
    /// Sets the node up: its bridge (idempotent) and its namespace directory. After a
    /// daemon restart, follow with [`list`](Self::list), [`adopt`](Self::adopt) for the
    /// tasks the node still runs, and [`sweep`](Self::sweep) for the rest.
    pub fn setup(config: NodeNetworkConfig) -> Result<NodeNetwork, NetworkError> {
        let ipam = Ipam::new(config.subnet)?;
        let gateway = Ipv4Net::new(ipam.gateway(), config.subnet.prefix_len())
            .expect("the prefix comes from a valid subnet");
        std::fs::create_dir_all(&config.netns_dir).map_err(|source| NetworkError::Io {
            action: "cannot make the namespace directory",
            path: config.netns_dir.clone(),
            source,
        })?;
        let bridge = Bridge::setup(&config.node_id, gateway)?;
        Ok(NodeNetwork {
            node_id: config.node_id,
            bridge,
            netns_dir: config.netns_dir,
            ipam: Mutex::new(ipam),
        })
    }

    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// The path of `task_id`'s namespace (whether or not it exists).
    pub fn netns_path(&self, task_id: &str) -> Result<PathBuf, NetworkError> {
        check_task_id(task_id)?;
        Ok(self.netns_dir.join(task_id))
    }

    /// Gives `task_id` a namespace, an address and a veth into the bridge. Leftovers of an
    /// earlier attempt for the task that no lease covers (a crash half-way, in this
    /// process or before a restart without adoption) are removed first.
    pub fn attach(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let path = self.netns_path(task_id)?;
        let address = self.ipam().lease(task_id).map_err(|error| match error {
            IpamError::TaskAlreadyLeased { task, address } => NetworkError::AlreadyAttached {
                task,
                address: self.with_prefix(address),
            },
            other => other.into(),
        })?;
        let made = self
            .remove_leftovers(task_id, &path)
            .and_then(|()| self.make(task_id, &path, address));
        match made {
            Ok(network) => {
                tracing::debug!(task = task_id, address = %network.address, "task network attached");
                Ok(network)
            }
            Err(error) => {
                // Leave nothing half-made behind; the first error is the one to report.
                if let Err(cleanup) = self.remove_leftovers(task_id, &path) {
                    tracing::warn!(task = task_id, error = %cleanup, "cleanup after a failed attach failed");
                }
                self.ipam().release(task_id);
                Err(error)
            }
        }
    }

    /// Deletes the default route of `task_id`'s namespace (see
    /// `TaskNetworks::close_route_out`); a route already gone is no error.
    pub fn close_route_out(&self, task_id: &str) -> Result<(), NetworkError> {
        let path = self.netns_path(task_id)?;
        let net_arg = format!("--net={}", path.display());
        let script = "route flush exact 0.0.0.0/0\n";
        run("nsenter", &[&net_arg, "ip", "-batch", "-"], Some(script))?;
        Ok(())
    }

    /// Removes `task_id`'s veth and namespace and releases its address. Idempotent, and
    /// tolerant of half-made state.
    pub fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        let path = self.netns_path(task_id)?;
        self.remove_leftovers(task_id, &path)?;
        self.ipam().release(task_id);
        tracing::debug!(task = task_id, "task network detached");
        Ok(())
    }

    /// The tasks that have a namespace file in this node's directory, complete or not.
    pub fn list(&self) -> Result<BTreeSet<String>, NetworkError> {
        let entries = std::fs::read_dir(&self.netns_dir).map_err(|source| NetworkError::Io {
            action: "cannot list the namespace directory",
            path: self.netns_dir.clone(),
            source,
        })?;
        let mut tasks = BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|source| NetworkError::Io {
                action: "cannot list the namespace directory",
                path: self.netns_dir.clone(),
                source,
            })?;
            match entry.file_name().to_str() {
                Some(name) if check_task_id(name).is_ok() => {
                    tasks.insert(name.to_owned());
                }
                _ => {
                    tracing::warn!(path = %entry.path().display(), "not a task namespace; left alone")
                }
            }
        }
        Ok(tasks)
    }

    /// Takes over `task_id`'s existing network after a daemon restart: checks that it is
    /// complete (namespace mounted, veth on the bridge, an address of the subnet on
    /// `eth0`) and restores the address's lease.
    pub fn adopt(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let path = self.netns_path(task_id)?;
        let incomplete = |what: String| NetworkError::Incomplete {
            task: task_id.to_owned(),
            path: path.clone(),
            what,
        };
        if !is_namespace(&path) {
            return Err(incomplete("no network namespace is mounted there".into()));
        }
        let host_veth = host_veth_name(&self.node_id, task_id);
        let master = match run("ip", &["-o", "link", "show", "dev", &host_veth], None) {
            Ok(output) => parse_master(&output),
            Err(error) if error.is_missing_link() => None,
            Err(error) => return Err(error),
        };
        if master.as_deref() != Some(self.bridge.name()) {
            return Err(incomplete(format!(
                "its veth {host_veth} is missing or not on bridge {}",
                self.bridge.name()
            )));
        }
        let net_arg = format!("--net={}", path.display());
        let output = run(
            "nsenter",
            &[&net_arg, "ip", "-o", "-4", "address", "show", "dev", "eth0"],
            None,
        )?;
        let subnet = self.ipam().subnet();
        let address = parse_inet(&output)
            .filter(|address| address.trunc() == subnet)
            .ok_or_else(|| incomplete(format!("eth0 has no address in {subnet}")))?;
        self.ipam().restore(task_id, address.addr())?;
        Ok(self.task_network(task_id, path, address.addr()))
    }

    /// Detaches every task in this node's directory that `owned` does not claim, and
    /// returns their ids.
    pub fn sweep(&self, owned: impl Fn(&str) -> bool) -> Result<Vec<String>, NetworkError> {
        let mut removed = Vec::new();
        for task_id in self.list()? {
            if !owned(&task_id) {
                self.detach(&task_id)?;
                tracing::info!(
                    task = task_id,
                    "removed the network of a task this node no longer runs"
                );
                removed.push(task_id);
            }
        }
        Ok(removed)
    }

    /// Removes everything the node made: every task's network, the bridge and its rules,
    /// the namespace directory, each tried whatever another's outcome (the first error is
    /// returned). For a node leaving, once its tasks have stopped.
    pub fn teardown(&self) -> Result<(), NetworkError> {
        let (listed, tasks) = match self.list() {
            Ok(tasks) => (Ok(()), tasks),
            Err(error) => (Err(error), BTreeSet::new()),
        };
        let detached = tasks.iter().map(|task_id| self.detach(task_id));
        let directory = || match std::fs::remove_dir(&self.netns_dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::Io {
                action: "cannot remove the namespace directory",
                path: self.netns_dir.clone(),
                source: error,
            }),
            _ => Ok(()),
        };
        // In order: the tasks' veths leave the bridge before it goes, the directory is
        // empty only once every task's namespace file is gone.
        every_part(
            std::iter::once(listed)
                .chain(detached)
                .chain(std::iter::once_with(|| self.bridge.teardown()))
                .chain(std::iter::once_with(directory)),
        )
    }

    fn make(
        &self,
        task_id: &str,
        path: &Path,
        address: Ipv4Addr,
    ) -> Result<TaskNetwork, NetworkError> {
        create_namespace(path)?;
        let network = self.task_network(task_id, path.to_owned(), address);
        let path_arg = path.to_str().ok_or_else(|| NetworkError::Io {
            action: "cannot pass to ip a namespace path that is not UTF-8:",
            path: path.to_owned(),
            source: std::io::ErrorKind::InvalidInput.into(),
        })?;
        // One command makes both ends: the host end already on the bridge and up, the
        // other end born inside the namespace as eth0. A crash leaves both or neither.
        run(
            "ip",
            &[
                "link",
                "add",
                "name",
                &network.host_veth,
                "up",
                "master",
                self.bridge.name(),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &super::overlay::endpoint_mac(address),
                "netns",
                path_arg,
            ],
            None,
        )?;
        let script = format!(
            "link set lo up\n\
             address add {} dev eth0\n\
             link set eth0 up\n\
             route add default via {} dev eth0\n",
            network.address, network.gateway
        );
        let net_arg = format!("--net={path_arg}");
        run("nsenter", &[&net_arg, "ip", "-batch", "-"], Some(&script))?;
        Ok(network)
    }

    /// Removes whatever exists of `task_id`'s network: the veth first (deleting one end
    /// deletes both), then the namespace mount and file, the second tried even when the
    /// first fails (the namespace's end goes with the namespace, and the pair with it).
    fn remove_leftovers(&self, task_id: &str, path: &Path) -> Result<(), NetworkError> {
        if std::fs::symlink_metadata(path).is_err() {
            // The file is made first and removed last: without it there is nothing.
            return Ok(());
        }
        let host_veth = host_veth_name(&self.node_id, task_id);
        every_part([delete_link(&host_veth), remove_namespace(path)])
    }

    fn task_network(&self, task_id: &str, netns_path: PathBuf, address: Ipv4Addr) -> TaskNetwork {
        TaskNetwork {
            task_id: task_id.to_owned(),
            netns_path,
            address: self.with_prefix(address),
            gateway: self.bridge.gateway().addr(),
            host_veth: host_veth_name(&self.node_id, task_id),
        }
    }

    fn with_prefix(&self, address: Ipv4Addr) -> Ipv4Net {
        Ipv4Net::new(address, self.bridge.gateway().prefix_len())
            .expect("the prefix comes from a valid subnet")
    }

    fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        // The lock guards only pure map updates, which cannot leave the maps half-changed.
        self.ipam
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Task ids name files and (hashed) links: keep them to a safe alphabet.
fn check_task_id(task_id: &str) -> Result<(), NetworkError> {
    let valid = (1..=128).contains(&task_id.len())
        && !task_id.starts_with('.')
        && task_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(NetworkError::InvalidTaskId(task_id.to_owned()))
    }
}

/// Makes a new network namespace and bind-mounts it at `path` (a new file).
fn create_namespace(path: &Path) -> Result<(), NetworkError> {
    let io_error = |action, source| NetworkError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|source| io_error("cannot make the namespace file", source))?;
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(
            "a namespace path holds a NUL byte:",
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    // A thread of its own: unshare moves only the calling thread into the new namespace,
    // and this thread ends right after, so no other work ever runs inside it.
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: unshare(CLONE_NEWNET) changes only this thread's network namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both paths are NUL-terminated C strings that outlive the call.
        let mounted = unsafe {
            libc::mount(
                c"/proc/thread-self/ns/net".as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if mounted != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })
    .join()
    .expect("the namespace thread does not panic")
    .map_err(|source| io_error("cannot make and mount a network namespace at", source))
}

/// Unmounts the namespace at `path` (if mounted) and removes the file (if present).
fn remove_namespace(path: &Path) -> Result<(), NetworkError> {
    let io_error = |action, source| NetworkError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io_error(
            "a namespace path holds a NUL byte:",
            std::io::ErrorKind::InvalidInput.into(),
        )
    })?;
    // MNT_DETACH: a process still inside keeps the namespace alive, but the mount goes now.
    // Loop because an earlier crash may have mounted it more than once.
    for _ in 0..8 {
        // SAFETY: target is a NUL-terminated C string that outlives the call.
        if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                // Not a mount point (any more), or no file.
                Some(libc::EINVAL) | Some(libc::ENOENT) => break,
                _ => return Err(io_error("cannot unmount the network namespace", error)),
            }
        }
    }
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(io_error("cannot remove the namespace file", error))
        }
        _ => Ok(()),
    }
}

/// Whether `path` is a mounted namespace (a file of the nsfs filesystem).
fn is_namespace(path: &Path) -> bool {
    let Ok(target) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; target is a NUL-terminated C string.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(target.as_ptr(), &mut stat) == 0 && stat.f_type == libc::NSFS_MAGIC
    }
}

/// The address of `ip -o -4 address show` output ("2: eth0    inet 198.19.3.2/24 …").
fn parse_inet(output: &str) -> Option<Ipv4Net> {
    let mut words = output.split_whitespace();
    words.find(|word| *word == "inet")?;
    words.next()?.parse().ok()
}

/// The bridge of `ip -o link show` output ("7: swv…@if2: <…> mtu 1500 … master swb… …").
fn parse_master(output: &str) -> Option<String> {
    let mut words = output.split_whitespace();
    words.find(|word| *word == "master")?;
    words.next().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_are_checked() {
        let long = "t".repeat(129);
        let cases: &[(&str, bool)] = &[
            ("t1", true),
            ("2x9kq1mz0c.web_1-a", true),
            (&long[..128], true),
            ("", false),
            (&long, false),
            (".", false),
            ("..", false),
            ("../etc", false),
            ("a/b", false),
            ("a b", false),
        ];
        for (task_id, valid) in cases {
            assert_eq!(check_task_id(task_id).is_ok(), *valid, "{task_id:?}");
        }
    }

    #[test]
    fn task_macs_are_local_unicast_and_follow_the_address() {
        let cases = [
            ("198.18.231.3", "02:42:c6:12:e7:03"),
            ("10.0.0.2", "02:42:0a:00:00:02"),
            ("255.255.255.254", "02:42:ff:ff:ff:fe"),
        ];
        for (address, mac) in cases {
            assert_eq!(
                super::super::overlay::endpoint_mac(address.parse().unwrap()),
                mac,
                "{address}"
            );
        }
    }

    #[test]
    fn veth_names_fit_and_differ_by_node_and_task() {
        let name = host_veth_name("node-a", "task-1");
        assert_eq!(name.len(), 15, "{name}");
        assert!(name.starts_with("swv"), "{name}");
        assert_eq!(name, host_veth_name("node-a", "task-1"));
        assert_ne!(name, host_veth_name("node-b", "task-1"));
        assert_ne!(name, host_veth_name("node-a", "task-2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }

    #[test]
    fn ip_output_is_parsed() {
        let cases: &[(&str, Option<&str>, Option<&str>)] = &[
            (
                "2: eth0    inet 198.19.3.2/24 scope global eth0\\       valid_lft forever preferred_lft forever\n",
                Some("198.19.3.2/24"),
                None,
            ),
            ("", None, None),
            (
                "7: swv0123456789ab@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue master swb01234567 state UP mode DEFAULT group default qlen 1000\\    link/ether 6a:…\n",
                None,
                Some("swb01234567"),
            ),
            (
                "7: swv0123456789ab@if2: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN\n",
                None,
                None,
            ),
        ];
        for (output, inet, master) in cases {
            assert_eq!(
                parse_inet(output),
                inet.map(|text| text.parse().unwrap()),
                "{output}"
            );
            assert_eq!(parse_master(output).as_deref(), *master, "{output}");
        }
    }
}

/// The real networking: a `NodeNetwork` on this host, its blocking calls run in
/// `spawn_blocking`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostNetworking;

#[async_trait::async_trait]
impl super::Networking for HostNetworking {
    async fn setup(
        &self,
        config: NodeNetworkConfig,
    ) -> Result<Arc<dyn super::TaskNetworks>, NetworkError> {
        let mut overlay = Overlay::new(config.node_id.clone());
        let (network, overlay) = blocking(move || {
            let network = NodeNetwork::setup(config)?;
            // What an earlier run made may not match what the managers say now: the first
            // reconcile makes it afresh.
            overlay.teardown()?;
            Ok((network, overlay))
        })
        .await?;
        Ok(Arc::new(HostTaskNetworks {
            network: Arc::new(network),
            overlay: Arc::new(Mutex::new(overlay)),
        }))
    }
}

/// A `NodeNetwork` and the node's overlays behind the worker's boundary.
struct HostTaskNetworks {
    network: Arc<NodeNetwork>,
    overlay: Arc<Mutex<Overlay>>,
}

/// Runs a blocking network call off the async threads.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(call)
        .await
        .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()))
}

#[async_trait::async_trait]
impl super::TaskNetworks for HostTaskNetworks {
    async fn attach(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let (network, task) = (self.network.clone(), task_id.to_owned());
        blocking(move || network.attach(&task)).await
    }

    async fn close_route_out(&self, task_id: &str) -> Result<(), NetworkError> {
        let (network, task) = (self.network.clone(), task_id.to_owned());
        blocking(move || network.close_route_out(&task)).await
    }

    async fn detach(&self, task_id: &str) -> Result<(), NetworkError> {
        let (network, task) = (self.network.clone(), task_id.to_owned());
        blocking(move || network.detach(&task)).await
    }

    async fn adopt(&self, task_id: &str) -> Result<TaskNetwork, NetworkError> {
        let (network, task) = (self.network.clone(), task_id.to_owned());
        blocking(move || network.adopt(&task)).await
    }

    async fn sweep(&self, owned: HashSet<String>) -> Result<Vec<String>, NetworkError> {
        let network = self.network.clone();
        blocking(move || network.sweep(|id| owned.contains(id))).await
    }

    async fn reconcile_overlay(&self, desired: NodeOverlays) -> Result<(), NetworkError> {
        let overlay = self.overlay.clone();
        blocking(move || overlay.lock().expect("not poisoned").reconcile(desired)).await
    }

    async fn restore_rules(&self) -> Result<(), NetworkError> {
        let (network, overlay) = (self.network.clone(), self.overlay.clone());
        blocking(move || {
            network.bridge().restore_rules()?;
            overlay.lock().expect("not poisoned").restore_rules()
        })
        .await
    }

    async fn teardown(&self) -> Result<(), NetworkError> {
        let (network, overlay) = (self.network.clone(), self.overlay.clone());
        blocking(move || {
            let overlays = overlay.lock().expect("not poisoned").teardown();
            every_part(std::iter::once(overlays).chain(std::iter::once_with(|| network.teardown())))
        })
        .await
    }
}
