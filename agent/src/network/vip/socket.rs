//! Socket-level balancing of the VIPs: an eBPF program (`bpf/vip_connect.c`) on the cgroup
//! v2 root's `connect4` hook rewrites a task's `connect()` to a VIP into a connection to
//! one of the service's serving tasks, before its first packet exists. The connection
//! then runs to the task's own address exactly as a direct one: no DNAT, no second pass
//! through the bridge, no conntrack NAT on any packet (the nftables path costs the local
//! keep-alive case 5–10 %, BENCHMARKS.md). Cilium's kube-proxy replacement does the same.
//!
//! The nftables DNAT (`super::render`) stays beside it and takes what this path does not:
//! UDP (a resolver that checks its answer's source would drop one from the task's
//! address), a service with more serving tasks than [`MAX_BACKENDS`], a task whose
//! namespace the node has not registered yet, every connection while the daemon is away
//! (the program is attached by a link the daemon's process holds: it goes with the
//! process, and stale backends never outlive it), and a kernel that cannot load it.
//!
//! The program runs for every process of the machine, so it rewrites only a connection
//! whose socket is in the network namespace of one of this node's tasks on the VIP's
//! network (by namespace cookie and VNI): another node's tasks, on this machine or not,
//! and the host are left alone. Every node on a machine attaches its own program and maps.
//!
//! What a task sees: `getpeername()` on such a socket gives the VIP, as through the DNAT
//! (a `getpeername4` program answers from the VIP each rewritten socket asked for, by
//! socket cookie, as Cilium does), but for a connection made before the daemon last
//! started (the map went with the last process) or older than the map's last 16,384,
//! which show the task's address; connections open to a task that stops serving drain,
//! as they are plain connections to it. What takes the DNAT all the same: an IPv6 socket
//! connecting to `::ffff:VIP` (the `connect6` hook, not attached) and MPTCP.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, Pod};

use super::NodeVips;

/// Serving tasks a map value holds; keep in step with `MAX_BACKENDS` in
/// `bpf/vip_connect.c`. A service with more is balanced by the nftables DNAT alone.
pub const MAX_BACKENDS: usize = 128;

/// The compiled program (`build.rs`), aligned as the ELF reader needs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vip_connect.o"));

/// A value of the `SERVICES` map: `struct service` in the program.
#[repr(C)]
#[derive(Clone, Copy)]
struct ServiceValue {
    network: u32,
    count: u32,
    backends: [u32; MAX_BACKENDS],
}

// SAFETY: plain integers, no padding (4-byte fields), any bit pattern valid.
unsafe impl Pod for ServiceValue {}

/// A key of the `MEMBERSHIPS` map: `struct membership` in the program.
#[repr(C)]
#[derive(Clone, Copy)]
struct MembershipKey {
    netns: u64,
    network: u32,
    padding: u32,
}

// SAFETY: plain integers, the padding explicit and always zero, any bit pattern valid.
unsafe impl Pod for MembershipKey {}

/// What the balancer holds: pure data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketVips {
    /// Each VIP with 1 to [`MAX_BACKENDS`] serving tasks: its network's VNI and their
    /// addresses.
    pub services: BTreeMap<Ipv4Addr, (u32, Vec<Ipv4Addr>)>,
    /// The node's tasks on the VIPs' networks: (namespace cookie, VNI).
    pub members: BTreeSet<(u64, u32)>,
}

impl SocketVips {
    /// The balancer's state for `desired`; `cookie` gives a local task's namespace cookie
    /// by task id, `None` when its namespace is not there (yet). The flag says whether
    /// every local task was found: a task left out connects through the DNAT meanwhile.
    pub fn of(
        desired: &NodeVips,
        mut cookie: impl FnMut(&str) -> Option<u64>,
    ) -> (SocketVips, bool) {
        let mut state = SocketVips::default();
        let mut complete = true;
        for network in desired.networks.values() {
            for (vip, backends) in &network.vips {
                if (1..=MAX_BACKENDS).contains(&backends.len()) {
                    state.services.insert(*vip, (network.vni, backends.clone()));
                }
            }
            for task in &network.local_tasks {
                match cookie(task) {
                    Some(netns) => {
                        state.members.insert((netns, network.vni));
                    }
                    None => complete = false,
                }
            }
        }
        (state, complete)
    }
}

/// Why the balancer cannot be set: the VIPs still work, through the DNAT.
#[derive(Debug, thiserror::Error)]
#[error("socket-level balancing of VIPs: {what}: {detail}")]
pub struct SocketError {
    what: String,
    detail: String,
}

impl SocketError {
    fn new(what: impl Into<String>, detail: impl ToString) -> SocketError {
        SocketError {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// The program attached, its maps, and what they hold. Dropped, the program is detached
/// and the maps freed.
pub struct SocketBalancer {
    services: BpfMap<MapData, u32, ServiceValue>,
    members: BpfMap<MapData, MembershipKey, u8>,
    /// What the maps hold; `None` after a failed update: the next one rewrites them whole.
    current: Option<SocketVips>,
    /// Holds the programs, their links and the `ASKED` map.
    _object: Ebpf,
}

impl std::fmt::Debug for SocketBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketBalancer")
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl SocketBalancer {
    /// Loads the program and attaches it to the cgroup v2 root, with empty maps. Needs
    /// Linux 5.14 (a socket's namespace cookie read from user space) and a cgroup v2 mount.
    pub fn attach() -> Result<SocketBalancer, SocketError> {
        // Without it no task could be registered: the program would run for nothing.
        netns_cookie(Path::new("/proc/self/ns/net")).map_err(|error| {
            SocketError::new(
                "this kernel does not give a socket's namespace cookie (SO_NETNS_COOKIE, \
                 Linux 5.14)",
                error,
            )
        })?;
        let root = cgroup2_root()?;
        let mut object = Ebpf::load(OBJECT)
            .map_err(|error| SocketError::new("cannot load the program", error))?;
        let cgroup = File::open(&root).map_err(|error| {
            SocketError::new(
                format!("cannot open the cgroup v2 root {}", root.display()),
                error,
            )
        })?;
        // getpeername's first: a connection the other rewrites must never show its task.
        for name in ["vip_getpeername4", "vip_connect4"] {
            let program: &mut CgroupSockAddr = object
                .program_mut(name)
                .expect("the object has its programs")
                .try_into()
                .expect("cgroup sock_addr programs");
            program
                .load()
                .map_err(|error| SocketError::new(format!("the kernel refused {name}"), error))?;
            // Through a link, which coexists with any other node's and goes with this
            // process.
            program
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(|error| {
                    SocketError::new(format!("cannot attach to {}", root.display()), error)
                })?;
        }
        let map =
            |object: &mut Ebpf, name: &str| object.take_map(name).expect("the object has its maps");
        let services = BpfMap::try_from(map(&mut object, "SERVICES"))
            .map_err(|error| SocketError::new("the SERVICES map", error))?;
        let members = BpfMap::try_from(map(&mut object, "MEMBERSHIPS"))
            .map_err(|error| SocketError::new("the MEMBERSHIPS map", error))?;
        Ok(SocketBalancer {
            services,
            members,
            current: Some(SocketVips::default()),
            _object: object,
        })
    }

    /// Brings the maps to `desired`: only the entries that changed are written (each
    /// write replaces one entry atomically: a connect sees the old backends or the new).
    pub fn reconcile(&mut self, desired: SocketVips) -> Result<(), SocketError> {
        let outcome = self.update(&desired);
        self.current = outcome.is_ok().then_some(desired);
        outcome
    }

    fn update(&mut self, desired: &SocketVips) -> Result<(), SocketError> {
        let current = match self.current.take() {
            Some(current) => current,
            // Unknown: whatever the maps hold is removed unless desired, the rest rewritten.
            None => SocketVips {
                services: self
                    .services
                    .keys()
                    .flatten()
                    .map(|vip| (Ipv4Addr::from(u32::from_be(vip)), (0, Vec::new())))
                    .collect(),
                members: self
                    .members
                    .keys()
                    .flatten()
                    .map(|key| (key.netns, key.network))
                    .collect(),
            },
        };
        for (vip, service) in &desired.services {
            if current.services.get(vip) != Some(service) {
                self.services
                    .insert(vip_key(*vip), service_value(service), 0)
                    .map_err(|error| SocketError::new(format!("cannot set VIP {vip}"), error))?;
            }
        }
        for &(netns, network) in desired.members.difference(&current.members) {
            self.members
                .insert(membership_key(netns, network), 1, 0)
                .map_err(|error| SocketError::new("cannot add a task", error))?;
        }
        for vip in current.services.keys() {
            if !desired.services.contains_key(vip) {
                remove(self.services.remove(&vip_key(*vip)))
                    .map_err(|error| SocketError::new(format!("cannot remove VIP {vip}"), error))?;
            }
        }
        for &(netns, network) in current.members.difference(&desired.members) {
            remove(self.members.remove(&membership_key(netns, network)))
                .map_err(|error| SocketError::new("cannot remove a task", error))?;
        }
        Ok(())
    }
}

/// The node's socket balancer as its VIP follower keeps it: attached at the first VIP the
/// node balances (a node without one leaves the machine's `connect()` alone) if the
/// kernel lets it (else the DNAT alone serves, said once), and fed from the node's VIPs
/// with its tasks' namespace cookies (read once per namespace). It stays attached after
/// the last VIP: detached, its `ASKED` map would go, and connections still draining would
/// show their task as their peer; and a node whose only task on a network restarts would
/// reload the program each time.
#[derive(Debug)]
pub struct NodeSocketBalancer {
    node_id: String,
    netns_dir: PathBuf,
    balancer: Balancer,
    /// By task id and the namespace file's (device, inode): a namespace made again has
    /// another inode, and a freed inode that another task's namespace reuses comes with
    /// another task id.
    cookies: std::collections::HashMap<(String, u64, u64), u64>,
    /// Said once each, not at every change.
    last_unreadable: Option<String>,
    last_error: Option<String>,
}

#[derive(Debug)]
enum Balancer {
    NotYet,
    Attached(Box<SocketBalancer>),
    /// The kernel refused it: the DNAT serves.
    Refused,
}

impl NodeSocketBalancer {
    /// For a node whose task namespaces are `netns_dir/TASK`; nothing attached yet.
    pub fn new(node_id: &str, netns_dir: PathBuf) -> NodeSocketBalancer {
        NodeSocketBalancer {
            node_id: node_id.to_owned(),
            netns_dir,
            balancer: Balancer::NotYet,
            cookies: Default::default(),
            last_unreadable: None,
            last_error: None,
        }
    }

    /// Brings the balancer to `desired`; whether it holds every local task and VIP (false:
    /// a task's namespace is not made yet, or an update failed: try again soon). Errors
    /// are logged: what the balancer misses, the DNAT takes.
    pub fn reconcile(&mut self, desired: &NodeVips) -> bool {
        if matches!(self.balancer, Balancer::NotYet) && !desired.networks.is_empty() {
            // A panic in the loader (aya reads the kernel's version) must not take the
            // follower, and the DNAT with it.
            let attached =
                std::panic::catch_unwind(SocketBalancer::attach).unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    Err(SocketError::new("the loader panicked", message))
                });
            self.balancer = match attached {
                Ok(balancer) => {
                    tracing::info!(
                        node = self.node_id,
                        "tasks' TCP connections to VIPs are balanced at connect()"
                    );
                    Balancer::Attached(Box::new(balancer))
                }
                Err(error) => {
                    tracing::warn!(
                        node = self.node_id,
                        %error,
                        "tasks' connections to VIPs go through the nftables DNAT alone"
                    );
                    Balancer::Refused
                }
            };
        }
        let Balancer::Attached(balancer) = &mut self.balancer else {
            return true;
        };
        let mut seen = std::collections::HashMap::new();
        let mut unreadable = None;
        let (state, complete) = SocketVips::of(desired, |task| {
            use std::os::unix::fs::MetadataExt;
            let path = self.netns_dir.join(task);
            // Missing: the task's namespace is not made yet, or gone already.
            let file = std::fs::metadata(&path).ok()?;
            let id = (task.to_owned(), file.dev(), file.ino());
            let cookie = match seen.get(&id).or_else(|| self.cookies.get(&id)) {
                Some(cookie) => *cookie,
                None => match netns_cookie(&path) {
                    Ok(cookie) => cookie,
                    // A plain file, not a namespace: the task's namespace is being
                    // mounted there or was just unmounted.
                    Err(error) if error.raw_os_error() == Some(libc::EINVAL) => return None,
                    Err(error) => {
                        unreadable = Some(format!("{}: {error}", path.display()));
                        return None;
                    }
                },
            };
            seen.insert(id, cookie);
            Some(cookie)
        });
        self.cookies = seen;
        if let Some(message) = &unreadable
            && self.last_unreadable.as_ref() != Some(message)
        {
            tracing::warn!(%message, "cannot read a task's namespace cookie");
        }
        self.last_unreadable = unreadable;
        match balancer.reconcile(state) {
            Ok(()) => {
                self.last_error = None;
                complete
            }
            Err(error) => {
                let message = error.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    tracing::warn!(%message, "cannot update the VIPs' socket balancer");
                }
                self.last_error = Some(message);
                false
            }
        }
    }
}

/// A removal of an entry already gone is no failure.
fn remove(outcome: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match outcome {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(error))
            if error.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// The program compares `user_ip4`, in network byte order, as the map's key.
fn vip_key(vip: Ipv4Addr) -> u32 {
    u32::from(vip).to_be()
}

fn service_value((network, backends): &(u32, Vec<Ipv4Addr>)) -> ServiceValue {
    let mut value = ServiceValue {
        network: *network,
        count: backends.len() as u32,
        backends: [0; MAX_BACKENDS],
    };
    for (slot, backend) in value.backends.iter_mut().zip(backends) {
        *slot = u32::from(*backend).to_be();
    }
    value
}

fn membership_key(netns: u64, network: u32) -> MembershipKey {
    MembershipKey {
        netns,
        network,
        padding: 0,
    }
}

/// The cookie of the network namespace at `netns` (a bind mount or `/proc/PID/ns/net`):
/// what the program's `bpf_get_netns_cookie` gives for a socket in it. Read from a socket
/// made there, on a thread that joins the namespace and ends.
pub fn netns_cookie(netns: &Path) -> std::io::Result<u64> {
    crate::network::in_namespace(netns, || {
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .or_else(|_| std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))?;
        socket_cookie(&socket)
    })?
}

/// `SO_NETNS_COOKIE` (Linux 5.14; the same number on every architecture the agent runs
/// on), which the libc crate does not name yet.
const SO_NETNS_COOKIE: libc::c_int = 71;

fn socket_cookie(socket: &impl AsRawFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut length = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the option writes at most `length` bytes into `cookie`.
    let done = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut length,
        )
    };
    if done != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Where the cgroup v2 hierarchy's root is mounted (`/sys/fs/cgroup` on a v2 system,
/// `/sys/fs/cgroup/unified` on a hybrid one), from this process's mount table.
fn cgroup2_root() -> Result<PathBuf, SocketError> {
    let table = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|error| SocketError::new("cannot read /proc/self/mountinfo", error))?;
    cgroup2_root_in(&table).ok_or_else(|| {
        SocketError::new(
            "no cgroup v2 hierarchy is mounted",
            "mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) for tasks' connections \
             to VIPs to skip the DNAT",
        )
    })
}

/// The first cgroup2 mount of the hierarchy's root in a mountinfo table.
fn cgroup2_root_in(table: &str) -> Option<PathBuf> {
    table.lines().find_map(|line| {
        let (mount, filesystem) = line.split_once(" - ")?;
        if filesystem.split(' ').next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = mount.split(' ').collect();
        // id parent major:minor root mount-point …
        let mount_point = fields.get(4)?;
        (fields.get(3) == Some(&"/")).then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// A mountinfo path with its octal escapes (`\040` for a space) read back.
fn unescape(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::vip::NetworkVips;

    fn addr(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn the_balancer_takes_vips_with_serving_tasks_and_the_nodes_tasks() {
        let many: Vec<Ipv4Addr> = (0..=MAX_BACKENDS as u32)
            .map(|i| Ipv4Addr::from(0x0a00_1000 + i))
            .collect();
        let network = NetworkVips {
            vni: 4100,
            subnet: "10.0.0.0/16".parse().unwrap(),
            vips: [
                (addr("10.0.0.2"), vec![addr("10.0.0.6"), addr("10.0.0.5")]),
                // No serving task: refused by the DNAT path.
                (addr("10.0.0.3"), vec![]),
                // More than a map value holds: balanced by the DNAT path.
                (addr("10.0.0.4"), many),
            ]
            .into(),
            endpoints: BTreeSet::new(),
            local_tasks: ["t1".to_owned(), "t2".to_owned()].into(),
        };
        let desired = NodeVips {
            networks: [("net".to_owned(), network)].into(),
        };
        let cookies = |task: &str| (task == "t1").then_some(77);
        let (state, complete) = SocketVips::of(&desired, cookies);
        assert_eq!(
            state.services,
            [(
                addr("10.0.0.2"),
                (4100, vec![addr("10.0.0.6"), addr("10.0.0.5")])
            )]
            .into()
        );
        assert_eq!(state.members, [(77, 4100)].into());
        // t2's namespace is not there yet.
        assert!(!complete);
        let (_, complete) = SocketVips::of(&desired, |_| Some(1));
        assert!(complete);
    }

    #[test]
    fn map_values_are_in_network_byte_order() {
        let value = service_value(&(9, vec![addr("10.1.2.3")]));
        assert_eq!(value.count, 1);
        assert_eq!(value.backends[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(value.backends[1], 0);
        assert_eq!(vip_key(addr("10.9.8.7")).to_ne_bytes(), [10, 9, 8, 7]);
    }

    #[test]
    fn the_cgroup2_root_is_found_in_hybrid_and_unified_tables() {
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(
            cgroup2_root_in(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A mount of a sub-cgroup is not the root; a space in a path is escaped.
        let other = "30 1 0:23 /nested /mnt/nested rw - cgroup2 cgroup2 rw\n\
                     31 1 0:23 / /mnt/my\\040cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_root_in(other),
            Some(PathBuf::from("/mnt/my cgroup"))
        );
        assert_eq!(cgroup2_root_in("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn this_process_has_a_namespace_cookie() {
        let here = netns_cookie(Path::new("/proc/self/ns/net")).unwrap();
        let socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        assert_eq!(here, socket_cookie(&socket).unwrap());
    }
}
