//! Test hosts: N network namespaces on one bridge, each with its own address and hostname,
//! for the tests (and benchmarks) that need several machines: overlay networks, the routing
//! mesh, a host killed or cut off.
//!
//! A [`Hosts`] holds a bridge `swtNNN` in the root namespace (address `198.18.NNN.1/24`, in
//! the benchmarking range) and, for host `i`, a namespace `swtNNNhI` joined to the bridge by
//! a veth pair (`swtNNNhI` in the root namespace, `eth0` inside, `198.18.NNN.(10+i)/24`,
//! default route through the bridge). Creating the bridge claims its number, so harnesses of
//! tests running at once never collide; a harness whose process died is swept by the next
//! one (its pid is kept under [`STATE_DIR`]). Dropping a `Hosts` kills what ran in it and
//! removes every namespace, link, qdisc and firewall rule it made, even when the test failed.
//!
//! Processes enter a host with `nsenter --net` (not `ip netns exec`, which remounts /sys and
//! hides the cgroup tree runc needs) under `unshare --uts` with the host's own hostname.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

/// Where each live harness records its owner's pid (by bridge number).
pub const STATE_DIR: &str = "/run/swarm-testhosts";

/// Bridge numbers tried: 198.18.0.0/24 to 198.18.127.0/24 (198.18.128.0/17 and 198.19.0.0/16
/// are left to the clusters' task address pools).
const NUMBERS: u32 = 128;

#[derive(Debug, thiserror::Error)]
pub enum HostsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("`{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error(
        "this kernel has no netem (sch_netem): delay cannot be added; `Hosts::loss` drops packets instead"
    )]
    NoNetem,
    #[error("no free test bridge number: {NUMBERS} harnesses are live (see {STATE_DIR})")]
    Exhausted,
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<Output, HostsError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HostsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(HostsError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output)
}

/// Runs a teardown step: what is already gone is not an error.
fn quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether traffic between the bridge's ports needs a FORWARD rule: the machine's iptables
/// drops forwarded bridge traffic when Docker's engine ran (policy DROP with
/// bridge-nf-call-iptables).
fn iptables_available() -> bool {
    crate::has_program("iptables")
}

/// N test hosts on one bridge; removed on drop.
#[derive(Debug)]
pub struct Hosts {
    number: u32,
    count: usize,
    processes: Mutex<Vec<(usize, Child)>>,
    forward_rule: bool,
}

impl Hosts {
    /// Makes `count` hosts (at most 100), each named `{prefix}-{i}` (its hostname).
    pub fn create(prefix: &str, count: usize) -> Result<Hosts, HostsError> {
        assert!((1..=100).contains(&count), "1 to 100 hosts");
        std::fs::create_dir_all(STATE_DIR).map_err(|source| HostsError::Io {
            path: STATE_DIR.into(),
            source,
        })?;
        sweep_dead();
        let number = claim()?;
        let mut hosts = Hosts {
            number,
            count: 0,
            processes: Mutex::new(Vec::new()),
            forward_rule: false,
        };
        let bridge = hosts.bridge();
        let state = Path::new(STATE_DIR).join(number.to_string());
        std::fs::write(&state, format!("{}\n{prefix}\n", std::process::id())).map_err(
            |source| HostsError::Io {
                path: state.clone(),
                source,
            },
        )?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", hosts.gateway()),
                "dev",
                &bridge,
            ],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        if iptables_available() {
            run(
                "iptables",
                &[
                    "-I", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
                ],
            )?;
            hosts.forward_rule = true;
        }
        for i in 0..count {
            hosts.add_host(i, &format!("{prefix}-{i}"))?;
            hosts.count = i + 1;
        }
        Ok(hosts)
    }

    fn add_host(&self, i: usize, hostname: &str) -> Result<(), HostsError> {
        let namespace = self.namespace(i);
        let veth = self.veth(i);
        run("ip", &["netns", "add", &namespace])?;
        let hostname_file = self.hostname_file(i);
        std::fs::write(&hostname_file, hostname).map_err(|source| HostsError::Io {
            path: hostname_file,
            source,
        })?;
        run(
            "ip",
            &[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &namespace,
            ],
        )?;
        run(
            "ip",
            &["link", "set", &veth, "master", &self.bridge(), "up"],
        )?;
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", namespace.as_str()];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&[
            "addr",
            "add",
            &format!("{}/24", self.address(i)),
            "dev",
            "eth0",
        ])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The bridge, in the root namespace.
    pub fn bridge(&self) -> String {
        format!("swt{}", self.number)
    }

    /// The bridge's address: how a host reaches the root namespace (a registry for the
    /// hosts listens there).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.number as u8, 1)
    }

    /// Host `i`'s address.
    pub fn address(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, self.number as u8, 10 + i as u8)
    }

    /// Host `i`'s network namespace (`/var/run/netns/NAME`).
    pub fn namespace(&self, i: usize) -> String {
        format!("swt{}h{i}", self.number)
    }

    /// Host `i`'s end of its link, in the root namespace: cut, slowed or lossy here.
    pub fn veth(&self, i: usize) -> String {
        self.namespace(i)
    }

    fn hostname_file(&self, i: usize) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{}.h{i}.hostname", self.number))
    }

    /// The command that runs `program args` on host `i`: in its network namespace, with its
    /// hostname. Spawn it yourself (for its output), or use [`Hosts::spawn`].
    pub fn command(&self, i: usize, program: &str, args: &[&str]) -> Command {
        assert!(i < self.count, "host {i} of {}", self.count);
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/var/run/netns/{}", self.namespace(i)))
            .args(["--", "unshare", "--uts", "--", "sh", "-c"])
            // The hostname from a file: no quoting of the caller's arguments is involved.
            .arg(r#"hostname "$(cat "$0")" && exec "$@""#)
            .arg(self.hostname_file(i))
            .arg(program)
            .args(args);
        command
    }

    /// Runs `work` on a thread of this process that entered host `i`'s network namespace
    /// (only that thread's): for a client written in the test itself.
    pub fn run_in<T: Send>(
        &self,
        i: usize,
        work: impl FnOnce() -> T + Send,
    ) -> Result<T, HostsError> {
        assert!(i < self.count, "host {i} of {}", self.count);
        let path = PathBuf::from(format!("/var/run/netns/{}", self.namespace(i)));
        let namespace = std::fs::File::open(&path).map_err(|source| HostsError::Io {
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns on an open namespace file changes this thread only.
                    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(HostsError::Io {
                            path,
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    Ok(work())
                })
                .join()
                .expect("the work in the namespace panicked")
        })
    }

    /// Starts `program args` on host `i`; it is killed with the host or the harness.
    pub fn spawn(&self, i: usize, mut command: Command) -> Result<u32, HostsError> {
        let child = command.spawn().map_err(|source| HostsError::Spawn {
            command: format!("{command:?}"),
            source,
        })?;
        let pid = child.id();
        self.processes.lock().unwrap().push((i, child));
        Ok(pid)
    }

    /// Runs `program args` on host `i` to completion.
    pub fn output(&self, i: usize, program: &str, args: &[&str]) -> Result<Output, HostsError> {
        let mut command = self.command(i, program, args);
        command.output().map_err(|source| HostsError::Spawn {
            command: format!("{program} {}", args.join(" ")),
            source,
        })
    }

    /// Host `i` dies: every process in its network namespace is killed (SIGKILL), whoever
    /// started it (a daemon spawned by a test's own `Command` too), and its link goes down,
    /// so what lives on in namespaces of its own (its containers) is as unreachable as on
    /// a dead machine.
    pub fn kill(&self, i: usize) {
        let mut processes = self.processes.lock().unwrap();
        for (host, child) in processes.iter_mut() {
            if *host == i {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        processes.retain(|(host, _)| *host != i);
        kill_in_namespace(&self.namespace(i));
        let _ = self.set_link(i, false);
    }

    /// Cuts host `i` off the network (its link down), or brings it back.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), HostsError> {
        let state = if up { "up" } else { "down" };
        run("ip", &["link", "set", &self.veth(i), state]).map(drop)
    }

    /// Delays (or otherwise impairs) traffic towards host `i` with netem (`delay 50ms`), or
    /// with an empty `netem` clears it. Kernels without `sch_netem` (this machine kind's)
    /// refuse it: [`HostsError::NoNetem`]; [`Hosts::loss`] works everywhere.
    pub fn netem(&self, i: usize, netem: &[&str]) -> Result<(), HostsError> {
        let veth = self.veth(i);
        quietly("tc", &["qdisc", "del", "dev", &veth, "root"]);
        if netem.is_empty() {
            return Ok(());
        }
        let mut args = vec!["qdisc", "add", "dev", veth.as_str(), "root", "netem"];
        args.extend_from_slice(netem);
        match run("tc", &args) {
            Err(HostsError::Command { stderr, .. }) if stderr.contains("qdisc kind is unknown") => {
                Err(HostsError::NoNetem)
            }
            other => other.map(drop),
        }
    }

    /// Drops `percent` of the packets host `i` receives (nftables in its namespace, random
    /// per packet); 0 clears it.
    pub fn loss(&self, i: usize, percent: u8) -> Result<(), HostsError> {
        assert!(percent <= 100, "a percentage");
        let script = if percent == 0 {
            "delete table inet swt_impair\n".to_owned()
        } else {
            let below = percent - 1;
            format!(
                "table inet swt_impair {{}}\ndelete table inet swt_impair\ntable inet swt_impair {{\n chain input {{\n  type filter hook input priority 0\n  iif eth0 numgen random mod 100 <= {below} drop\n }}\n}}\n"
            )
        };
        let mut nft = Command::new("nsenter");
        nft.arg(format!("--net=/var/run/netns/{}", self.namespace(i)))
            .args(["--", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = nft.spawn().map_err(|source| HostsError::Spawn {
            command: "nft -f -".into(),
            source,
        })?;
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())
            .map_err(|source| HostsError::Io {
                path: "nft stdin".into(),
                source,
            })?;
        let output = child
            .wait_with_output()
            .map_err(|source| HostsError::Spawn {
                command: "nft -f -".into(),
                source,
            })?;
        if !output.status.success() && percent != 0 {
            return Err(HostsError::Command {
                command: format!("nft -f - ({script})"),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        Ok(())
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (_, mut child) in self.processes.lock().unwrap().drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Processes the harness did not start itself (a daemon's containers) die with
        // their namespace's last link only if they are gone: kill what is left in it.
        for i in 0..self.count {
            kill_in_namespace(&self.namespace(i));
        }
        remove(self.number, self.forward_rule);
    }
}

/// Kills every process whose network namespace is `namespace`.
fn kill_in_namespace(namespace: &str) {
    if let Ok(output) = Command::new("ip")
        .args(["netns", "pids", namespace])
        .output()
    {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill has no memory effects; a pid that is gone is an error we ignore.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Removes harness `number`'s namespaces, links, rule and state, whatever is left of them.
fn remove(number: u32, forward_rule: bool) {
    let bridge = format!("swt{number}");
    let prefix = format!("swt{number}h");
    if let Ok(output) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if name
                .strip_prefix(&prefix)
                .is_some_and(|i| i.parse::<u32>().is_ok())
            {
                kill_in_namespace(name);
                quietly("ip", &["link", "del", name]);
                quietly("ip", &["netns", "del", name]);
            }
        }
    }
    if forward_rule {
        quietly(
            "iptables",
            &[
                "-D", "FORWARD", "-i", &bridge, "-o", &bridge, "-j", "ACCEPT",
            ],
        );
    }
    quietly("ip", &["link", "del", &bridge]);
    if let Ok(entries) = std::fs::read_dir(STATE_DIR) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == number.to_string() || name.starts_with(&format!("{number}.")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Claims a bridge number by creating its bridge (which fails if it exists).
fn claim() -> Result<u32, HostsError> {
    let start = std::process::id() % NUMBERS;
    for offset in 0..NUMBERS {
        let number = (start + offset) % NUMBERS;
        let created = Command::new("ip")
            .args(["link", "add", &format!("swt{number}"), "type", "bridge"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if created {
            return Ok(number);
        }
    }
    Err(HostsError::Exhausted)
}

/// Removes the harnesses whose process is gone (a test killed before its drop ran).
fn sweep_dead() {
    let Ok(entries) = std::fs::read_dir(STATE_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(number) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let owner = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| text.lines().next()?.parse::<i32>().ok());
        // SAFETY: signal 0 only checks that the process exists.
        let alive = owner.is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0);
        if !alive {
            remove(number, iptables_available());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(test: &str) -> bool {
        crate::require(test, crate::is_root(), "root (network namespaces)")
            && crate::require(
                test,
                crate::has_program("busybox"),
                "busybox (busybox-static)",
            )
    }

    fn text(output: &Output) -> String {
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    #[test]
    fn hosts_reach_each_other_by_address_with_their_own_hostnames() {
        if !usable("hosts_reach_each_other_by_address_with_their_own_hostnames") {
            return;
        }
        let hosts = Hosts::create("reach", 2).unwrap();
        for i in 0..2 {
            let output = hosts.output(i, "hostname", &[]).unwrap();
            assert_eq!(text(&output), format!("reach-{i}"));
        }
        // A web server on host 0, fetched from host 1 and from the root namespace.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "hello from 0\n").unwrap();
        let server = format!("{}:8080", hosts.address(0));
        let httpd = hosts.command(
            0,
            "busybox",
            &[
                "httpd",
                "-f",
                "-p",
                &server,
                "-h",
                dir.path().to_str().unwrap(),
            ],
        );
        hosts.spawn(0, httpd).unwrap();
        let url = format!("http://{server}/");
        let fetch = |hosts: &Hosts| {
            hosts
                // Bounded by `timeout`: Debian's busybox 1.35 wget crashes with `-T`.
                .output(
                    1,
                    "timeout",
                    &["2", "busybox", "wget", "-q", "-O", "-", &url],
                )
                .map(|output| text(&output))
                .unwrap_or_default()
        };
        let mut answer = String::new();
        for _ in 0..50 {
            answer = fetch(&hosts);
            if !answer.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(answer, "hello from 0");
        assert!(
            std::net::TcpStream::connect_timeout(
                &server.parse().unwrap(),
                std::time::Duration::from_secs(1)
            )
            .is_ok()
        );

        // Cut off, host 0 does not answer; back, it does.
        hosts.set_link(0, false).unwrap();
        assert_eq!(fetch(&hosts), "");
        hosts.set_link(0, true).unwrap();
        let mut back = String::new();
        for _ in 0..50 {
            back = fetch(&hosts);
            if !back.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(back, "hello from 0");

        // All of host 0's packets lost: no answer; none: answers again.
        hosts.loss(0, 100).unwrap();
        assert_eq!(fetch(&hosts), "");
        hosts.loss(0, 0).unwrap();
        assert_eq!(fetch(&hosts), "hello from 0");

        // 200 ms of delay towards host 0 is seen from host 1, where the kernel has netem.
        match hosts.netem(0, &["delay", "200ms"]) {
            Ok(()) => {
                let started = std::time::Instant::now();
                assert_eq!(fetch(&hosts), "hello from 0");
                assert!(started.elapsed() >= std::time::Duration::from_millis(200));
                hosts.netem(0, &[]).unwrap();
            }
            Err(error) => assert!(matches!(error, HostsError::NoNetem), "{error}"),
        }

        // A killed host's processes are gone.
        hosts.kill(0);
        assert_eq!(fetch(&hosts), "");
    }

    #[test]
    fn dropping_the_harness_removes_everything_it_made() {
        if !usable("dropping_the_harness_removes_everything_it_made") {
            return;
        }
        let hosts = Hosts::create("gone", 3).unwrap();
        let (bridge, namespaces) = (
            hosts.bridge(),
            (0..3).map(|i| hosts.namespace(i)).collect::<Vec<_>>(),
        );
        let sleeper = hosts.command(2, "sleep", &["60"]);
        let pid = hosts.spawn(2, sleeper).unwrap();
        drop(hosts);
        let links = text(&run("ip", &["-br", "link"]).unwrap());
        assert!(!links.contains(&bridge), "{links}");
        let listed = text(&run("ip", &["netns", "list"]).unwrap());
        for namespace in namespaces {
            assert!(!listed.contains(&namespace), "{listed}");
        }
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        if iptables_available() {
            let rules = text(&run("iptables", &["-S", "FORWARD"]).unwrap());
            assert!(!rules.contains(&bridge), "{rules}");
        }
    }
}
