//! The files that give a container its network identity: /etc/hosts, /etc/resolv.conf and
//! /etc/hostname. Built by pure functions, then written into the task's directory for the
//! runtime to bind-mount over the image's own.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use swarm_api::spec::{DnsConfig, ExtraHost, HostAddress};

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the node's resolver configuration {path}: {source}")]
    ReadResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The contents of a task's network files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFiles {
    pub hosts: String,
    pub resolv_conf: String,
    pub hostname: String,
}

/// Where [`ContainerFiles::write_to`] put each file: bind-mount them at /etc/hosts,
/// /etc/resolv.conf and /etc/hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFilePaths {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// The kernel's limit for a hostname (HOST_NAME_MAX).
const HOSTNAME_MAX: usize = 64;

impl ContainerFiles {
    /// The files of a task named `hostname` (and `aliases`) at `address`. `node_resolv_conf`
    /// is the node's /etc/resolv.conf; `nameservers`, when not empty, replace its
    /// nameservers (like `docker run --dns`).
    pub fn new(
        hostname: &str,
        aliases: &[String],
        address: Ipv4Addr,
        node_resolv_conf: &str,
        nameservers: &[IpAddr],
    ) -> Result<Self, FilesError> {
        check_name("hostname", hostname, HOSTNAME_MAX)?;
        for alias in aliases {
            check_name("alias", alias, 253)?;
        }
        Ok(ContainerFiles {
            hosts: hosts(hostname, aliases, address),
            resolv_conf: resolv_conf(node_resolv_conf, nameservers, &DnsConfig::default()),
            hostname: format!("{hostname}\n"),
        })
    }

    /// The task's resolv.conf. A task on overlay networks (`through`: the node's DNS
    /// server, at the node bridge's address, the task's gateway) has that server as its
    /// only nameserver: it answers the cluster's names and forwards the rest to the
    /// service's nameservers, or the node's; `ndots:0` makes a bare service name (`back`)
    /// asked as it is first, not after each search domain of the node (each a forward that
    /// may wait on the resolvers). Otherwise the service's nameservers replace the node's.
    /// The service's search domains and options replace the node's (as `docker run
    /// --dns-search`, `--dns-option`).
    pub fn with_dns(
        mut self,
        node_resolv_conf: &str,
        through: Option<Ipv4Addr>,
        dns: &DnsConfig,
    ) -> Self {
        self.resolv_conf = match through {
            Some(server) => node_dns_resolv_conf(node_resolv_conf, server, dns),
            None => resolv_conf(node_resolv_conf, &dns.nameservers, dns),
        };
        self
    }

    /// The service's `extra_hosts` as lines of /etc/hosts after the task's own, in order;
    /// `host-gateway` is the node's address on the task's bridge, `gateway`.
    pub fn with_extra_hosts(
        mut self,
        extra: &[ExtraHost],
        gateway: Ipv4Addr,
    ) -> Result<Self, FilesError> {
        for host in extra {
            check_name("extra host", &host.name, 253)?;
            let address = match host.address {
                HostAddress::Ip(address) => address,
                HostAddress::HostGateway => gateway.into(),
            };
            self.hosts.push_str(&format!("{address}\t{}\n", host.name));
        }
        Ok(self)
    }

    /// Writes the three files into `dir` (made if missing).
    pub fn write_to(&self, dir: &Path) -> Result<ContainerFilePaths, FilesError> {
        std::fs::create_dir_all(dir).map_err(|source| FilesError::Write {
            path: dir.to_owned(),
            source,
        })?;
        let paths = ContainerFilePaths {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
        };
        for (path, content) in [
            (&paths.hosts, &self.hosts),
            (&paths.resolv_conf, &self.resolv_conf),
            (&paths.hostname, &self.hostname),
        ] {
            std::fs::write(path, content).map_err(|source| FilesError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(paths)
    }
}

/// The node's resolver configuration: /etc/resolv.conf, or when that names only loopback
/// servers (a local cache such as systemd-resolved's 127.0.0.53, unreachable from a task's
/// namespace) and systemd-resolved's list of upstream servers exists, that list.
pub fn node_resolv_conf() -> Result<String, FilesError> {
    resolv_conf_between(
        Path::new("/etc/resolv.conf"),
        Path::new("/run/systemd/resolve/resolv.conf"),
    )
}

fn resolv_conf_between(etc: &Path, upstream: &Path) -> Result<String, FilesError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| FilesError::ReadResolvConf {
            path: path.to_owned(),
            source,
        })
    };
    let etc_text = read(etc)?;
    if task_nameservers(&etc_text).is_empty() && upstream.is_file() {
        return read(upstream);
    }
    Ok(etc_text)
}

fn hosts(hostname: &str, aliases: &[String], address: Ipv4Addr) -> String {
    let mut names = hostname.to_owned();
    for alias in aliases.iter().filter(|alias| alias.as_str() != hostname) {
        names.push(' ');
        names.push_str(alias);
    }
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         {address}\t{names}\n"
    )
}

/// The node's configuration with its nameservers replaced by `nameservers`, or when none
/// are given, by the node's own minus those a task cannot reach: loopback ones (they would
/// be the task's own loopback) and IPv6 ones (tasks have IPv4 only). With none left, the
/// file names no nameserver; `search` and `options` lines are kept unless `dns` gives its
/// own.
fn resolv_conf(node: &str, nameservers: &[IpAddr], dns: &DnsConfig) -> String {
    let servers: Vec<IpAddr> = if nameservers.is_empty() {
        task_nameservers(node)
    } else {
        nameservers.to_vec()
    };
    let mut out = String::new();
    for server in servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    for line in node.lines() {
        let line = line.trim();
        match line.split_whitespace().next() {
            Some("search" | "domain") if dns.search.is_empty() => {}
            Some("options") if dns.options.is_empty() => {}
            _ => continue,
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&own_lines(dns));
    out
}

/// The node's configuration with `server` as its only nameserver and `ndots:0` (unless the
/// service sets ndots); its `search` and `domain` lines and its other options are kept,
/// unless `dns` gives its own.
fn node_dns_resolv_conf(node: &str, server: Ipv4Addr, dns: &DnsConfig) -> String {
    let mut out = format!("nameserver {server}\n");
    for line in node.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search" | "domain") if dns.search.is_empty() => {
                out.push_str(line.trim());
                out.push('\n');
            }
            Some("options") if dns.options.is_empty() => {
                let options: Vec<&str> = words.filter(|o| !o.starts_with("ndots:")).collect();
                if !options.is_empty() {
                    out.push_str(&format!("options {}\n", options.join(" ")));
                }
            }
            _ => {}
        }
    }
    out.push_str(&own_lines(dns));
    if !dns.options.iter().any(|o| o.starts_with("ndots:")) {
        out.push_str("options ndots:0\n");
    }
    out
}

/// The service's own `search` and `options` lines, when it gives them; a search of `.`
/// alone is none (the node's lines dropped, no line written), as Docker writes it.
fn own_lines(dns: &DnsConfig) -> String {
    let mut out = String::new();
    for (keyword, words) in [("search", &dns.search), ("options", &dns.options)] {
        let none = keyword == "search" && words.iter().all(|w| w == ".");
        if !words.is_empty() && !none {
            out.push_str(&format!("{keyword} {}\n", words.join(" ")));
        }
    }
    out
}

/// The nameservers of a resolv.conf that a task's namespace can reach.
fn task_nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf_nameservers(resolv_conf)
        .into_iter()
        .filter(|server| server.is_ipv4() && !server.is_loopback())
        .collect()
}

/// Every nameserver a resolv.conf names, in its order (lines that do not parse skipped).
pub fn resolv_conf_nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|server| server.parse::<IpAddr>().ok())
        .collect()
}

/// Names go into /etc/hosts and the kernel's hostname: letters, digits, '-', '_' and '.',
/// which also keeps a name from breaking a line of /etc/hosts.
fn check_name(what: &'static str, name: &str, max: usize) -> Result<(), FilesError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > max {
        Some("it is too long")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("use letters, digits, '-', '_' and '.'")
    } else if name.starts_with(['-', '.']) {
        Some("it must start with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(FilesError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 2);
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 19, 3, 1);

    #[test]
    fn hosts_names_the_task_and_localhost() {
        let files = ContainerFiles::new(
            "web-1",
            &["web".to_owned(), "web-1".to_owned(), "www".to_owned()],
            ADDRESS,
            "",
            &[],
        )
        .unwrap();
        assert_eq!(
            files.hosts,
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             198.19.3.2\tweb-1 web www\n"
        );
        assert_eq!(files.hostname, "web-1\n");
    }

    #[test]
    fn resolv_conf_keeps_only_reachable_nameservers() {
        let cases: &[(&str, &str, &[&str], &str)] = &[
            (
                "the node's servers",
                "# generated\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example\n",
                &[],
                "nameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch corp.example\n",
            ),
            (
                "loopback and IPv6 servers dropped",
                "nameserver 127.0.0.53\nnameserver ::1\nnameserver 2001:db8::1\nnameserver 10.0.0.2\noptions edns0 trust-ad\n",
                &[],
                "nameserver 10.0.0.2\noptions edns0 trust-ad\n",
            ),
            (
                "only loopback: none",
                "nameserver 127.0.0.53\nsearch .\n",
                &[],
                "search .\n",
            ),
            (
                "configured servers replace the node's",
                "nameserver 127.0.0.53\nnameserver 10.0.0.2\ndomain corp.example\n",
                &["192.0.2.53", "2001:db8::53"],
                "nameserver 192.0.2.53\nnameserver 2001:db8::53\ndomain corp.example\n",
            ),
            (
                "garbage ignored",
                "nameserver\nnameserver not-an-address\n  nameserver 10.0.0.9  \nsearching nothing\n",
                &[],
                "nameserver 10.0.0.9\n",
            ),
        ];
        for (name, node, configured, expected) in cases {
            let configured: Vec<IpAddr> = configured.iter().map(|s| s.parse().unwrap()).collect();
            let files = ContainerFiles::new("t", &[], ADDRESS, node, &configured).unwrap();
            assert_eq!(files.resolv_conf, *expected, "{name}");
        }
    }

    #[test]
    fn a_task_on_overlay_networks_asks_the_nodes_dns_server() {
        let cases: &[(&str, &str)] = &[
            ("", "nameserver 198.18.0.1\noptions ndots:0\n"),
            (
                "nameserver 10.0.0.2\nnameserver 127.0.0.53\nsearch corp.example\n",
                "nameserver 198.18.0.1\nsearch corp.example\noptions ndots:0\n",
            ),
            (
                "domain corp.example\noptions ndots:3 edns0\noptions ndots:2\n",
                "nameserver 198.18.0.1\ndomain corp.example\noptions edns0\noptions ndots:0\n",
            ),
        ];
        for (node, expected) in cases {
            let files = ContainerFiles::new("t", &[], ADDRESS, node, &[])
                .unwrap()
                .with_dns(
                    node,
                    Some(Ipv4Addr::new(198, 18, 0, 1)),
                    &DnsConfig::default(),
                );
            assert_eq!(files.resolv_conf, *expected, "{node}");
            assert_eq!(files.hostname, "t\n");
        }
    }

    #[test]
    fn a_services_dns_settings_replace_the_nodes() {
        let node = "nameserver 10.0.0.2\nsearch corp.example\noptions edns0 ndots:3\n";
        let dns = DnsConfig {
            nameservers: vec!["192.0.2.53".parse().unwrap()],
            search: vec!["lab.example".into(), "example".into()],
            options: vec!["ndots:2".into(), "timeout:1".into()],
        };
        let search_only = DnsConfig {
            nameservers: dns.nameservers.clone(),
            search: vec!["lab.example".into()],
            options: Vec::new(),
        };
        let no_search = DnsConfig {
            nameservers: dns.nameservers.clone(),
            search: vec![".".into()],
            options: Vec::new(),
        };
        let cases: &[(Option<Ipv4Addr>, &DnsConfig, &str)] = &[
            (
                None,
                &dns,
                "nameserver 192.0.2.53\nsearch lab.example example\noptions ndots:2 timeout:1\n",
            ),
            (
                None,
                &no_search,
                "nameserver 192.0.2.53\noptions edns0 ndots:3\n",
            ),
            (
                None,
                &search_only,
                "nameserver 192.0.2.53\noptions edns0 ndots:3\nsearch lab.example\n",
            ),
            // Through the node's server the nameservers are its forwarders, not the file's;
            // the service's ndots wins over ndots:0.
            (
                Some(Ipv4Addr::new(198, 18, 0, 1)),
                &dns,
                "nameserver 198.18.0.1\nsearch lab.example example\noptions ndots:2 timeout:1\n",
            ),
            (
                Some(Ipv4Addr::new(198, 18, 0, 1)),
                &search_only,
                "nameserver 198.18.0.1\noptions edns0\nsearch lab.example\noptions ndots:0\n",
            ),
        ];
        for (through, dns, expected) in cases {
            let files = ContainerFiles::new("t", &[], ADDRESS, node, &[])
                .unwrap()
                .with_dns(node, *through, dns);
            assert_eq!(files.resolv_conf, *expected, "{through:?} {dns:?}");
        }
    }

    #[test]
    fn extra_hosts_follow_the_tasks_own_line() {
        let extra = [
            ExtraHost {
                name: "db".into(),
                address: "10.0.0.5".parse().unwrap(),
            },
            ExtraHost {
                name: "cache".into(),
                address: "2001:db8::7".parse().unwrap(),
            },
            ExtraHost {
                name: "host.docker.internal".into(),
                address: "host-gateway".parse().unwrap(),
            },
        ];
        let files = ContainerFiles::new("web-1", &[], ADDRESS, "", &[])
            .unwrap()
            .with_extra_hosts(&extra, GATEWAY)
            .unwrap();
        assert_eq!(
            files.hosts,
            "127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             198.19.3.2\tweb-1\n\
             10.0.0.5\tdb\n\
             2001:db8::7\tcache\n\
             198.19.3.1\thost.docker.internal\n"
        );
        let evil = [ExtraHost {
            name: "x\n1.2.3.4 evil".into(),
            address: "10.0.0.5".parse().unwrap(),
        }];
        let error = ContainerFiles::new("web-1", &[], ADDRESS, "", &[])
            .unwrap()
            .with_extra_hosts(&evil, GATEWAY)
            .unwrap_err();
        assert!(error.to_string().contains("invalid extra host"), "{error}");
    }

    #[test]
    fn names_are_checked() {
        let long = "a".repeat(65);
        let cases: &[(&str, &[&str], Option<&str>)] = &[
            ("web.1_a-b", &["x.y"], None),
            ("", &[], Some("invalid hostname \"\": it is empty")),
            (&long, &[], Some("it is too long")),
            (
                "web 1",
                &[],
                Some("invalid hostname \"web 1\": use letters, digits, '-', '_' and '.'"),
            ),
            (
                "web",
                &["x\n1.2.3.4 evil"],
                Some("invalid alias \"x\\n1.2.3.4 evil\""),
            ),
            ("-web", &[], Some("it must start with a letter or digit")),
        ];
        for (hostname, aliases, expected) in cases {
            let aliases: Vec<String> = aliases.iter().map(|a| a.to_string()).collect();
            let got = ContainerFiles::new(hostname, &aliases, ADDRESS, "", &[]);
            match (got, expected) {
                (Ok(_), None) => {}
                (Err(error), Some(expected)) => {
                    assert!(error.to_string().contains(expected), "{error}")
                }
                (got, expected) => panic!("{hostname:?}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn the_node_resolver_skips_a_local_cache_for_its_upstream_list() {
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("upstream.conf");
        std::fs::write(&upstream, "nameserver 10.0.0.2\n").unwrap();
        let missing = dir.path().join("missing.conf");
        let cases: &[(&str, &Path, &str)] = &[
            (
                "nameserver 127.0.0.53\n",
                &upstream,
                "nameserver 10.0.0.2\n",
            ),
            (
                "nameserver 127.0.0.53\n",
                &missing,
                "nameserver 127.0.0.53\n",
            ),
            ("nameserver 10.9.9.9\n", &upstream, "nameserver 10.9.9.9\n"),
        ];
        for (etc_text, upstream, expected) in cases {
            let etc = dir.path().join("resolv.conf");
            std::fs::write(&etc, etc_text).unwrap();
            let got = resolv_conf_between(&etc, upstream).unwrap();
            assert_eq!(got, *expected, "{etc_text} with {}", upstream.display());
        }
        let error = resolv_conf_between(&missing, &upstream).unwrap_err();
        assert!(error.to_string().contains("missing.conf"), "{error}");
    }

    #[test]
    fn files_are_written_into_the_task_dir() {
        let dir = tempfile::tempdir().unwrap();
        let files = ContainerFiles::new("t1", &[], ADDRESS, "nameserver 10.0.0.2\n", &[]).unwrap();
        let paths = files.write_to(&dir.path().join("task-1")).unwrap();
        assert_eq!(std::fs::read_to_string(&paths.hosts).unwrap(), files.hosts);
        assert_eq!(
            std::fs::read_to_string(&paths.resolv_conf).unwrap(),
            "nameserver 10.0.0.2\n"
        );
        assert_eq!(std::fs::read_to_string(&paths.hostname).unwrap(), "t1\n");
    }
}
