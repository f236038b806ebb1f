//! A service's runtime keys (`cap_add`, `cap_drop`, `sysctls`, `ulimits`, `read_only`,
//! `group_add`, `logging`, `extra_hosts`, `dns`, `dns_search`, `dns_opt`, `init`, `tty`,
//! `stdin_open`, `oom_score_adj`) into its `RuntimeOptions`, checked as Docker checks them.
//! The checks of single values are shared with the store's guard ([`refusals`]), so a spec
//! a client made holds what a stack file's would.

use std::collections::BTreeMap;
use std::net::IpAddr;

use swarm_api::spec::{
    CAPABILITIES, DnsConfig, ExtraHost, HostAddress, LogDriver, RuntimeOptions, Ulimit,
};
use swarm_api::stackfile::{self as file, ListOrMap, StringOrList, StringOrNumber, UlimitValue};
use swarm_api::units::ByteSize;

use super::{Converter, Loc, key_values};

/// The sysctls a container may set (its own namespaces'), as Docker allows them.
const SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];
const SYSCTL_PREFIXES: [&str; 2] = ["fs.mqueue.", "net."];

/// The process limits `ulimits` may name (setrlimit's, as Docker spells them).
const ULIMITS: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Log drivers whose logs stay on the node, where `service logs` reads them.
const LOCAL_LOG_DRIVERS: [&str; 2] = ["json-file", "local"];

/// A runtime value Docker refuses: what is wrong, and how to write it instead (when the
/// message does not say it already).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub message: String,
    pub help: Option<String>,
}

impl Refusal {
    fn new(message: String, help: impl Into<String>) -> Refusal {
        Refusal {
            message,
            help: Some(help.into()),
        }
    }
}

/// A capability as Docker takes it (`net_admin`, `CAP_NET_ADMIN`, `ALL`), written
/// `CAP_NAME` (or `ALL`).
pub(crate) fn capability(name: &str) -> Result<String, Refusal> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if CAPABILITIES.contains(&bare) {
        Ok(format!("CAP_{bare}"))
    } else {
        Err(Refusal::new(
            format!("unknown capability {name:?}"),
            "write a Linux capability such as NET_ADMIN or SYS_PTRACE (see capabilities(7)), or ALL",
        ))
    }
}

/// A kernel parameter a container may set: its own namespaces', with a value (returned).
pub(crate) fn sysctl<'v>(key: &str, value: Option<&'v str>) -> Result<&'v str, Refusal> {
    let allowed = SYSCTLS.contains(&key) || SYSCTL_PREFIXES.iter().any(|p| key.starts_with(p));
    if !allowed {
        return Err(Refusal::new(
            format!("sysctl {key:?} is not allowed in a container"),
            "only the container's own namespaces may be set: net.*, fs.mqueue.*, kernel.shm*, kernel.msg*, kernel.sem",
        ));
    }
    value.ok_or_else(|| {
        Refusal::new(
            format!("sysctl {key:?} has no value"),
            "write KEY=VALUE, or KEY: VALUE in a map",
        )
    })
}

/// A process limit setrlimit knows, its soft limit at most its hard one.
pub(crate) fn ulimit(name: &str, limit: Ulimit) -> Result<(), Refusal> {
    if !ULIMITS.contains(&name) {
        return Err(Refusal::new(
            format!("unknown ulimit {name:?}"),
            format!("use one of {}", ULIMITS.join(", ")),
        ));
    }
    let Ulimit { soft, hard } = limit;
    if soft > hard {
        return Err(Refusal::new(
            format!("ulimit {name}: the soft limit {soft} is above the hard limit {hard}"),
            "the soft limit is at most the hard one",
        ));
    }
    Ok(())
}

/// An option of the `json-file`/`local` log drivers; `None` for an option they ignore.
pub(crate) fn log_option(key: &str, value: &str) -> Option<Result<(), Refusal>> {
    match key {
        "max-size" => Some(
            value
                .parse::<ByteSize>()
                .map(drop)
                .map_err(|error| Refusal {
                    message: format!("max-size: {error}"),
                    help: None,
                }),
        ),
        "max-file" => Some(if value.parse::<u32>().is_ok_and(|n| n >= 1) {
            Ok(())
        } else {
            Err(Refusal::new(
                format!("max-file {value:?} is not a number of files"),
                "write how many files to keep, at least 1",
            ))
        }),
        _ => None,
    }
}

/// A name of /etc/hosts: letters, digits, `-`, `_` and `.` (nothing that could end its line).
pub(crate) fn host_name(name: &str) -> Result<(), Refusal> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Refusal::new(
            format!("invalid host name {name:?}"),
            "a host name has letters, digits, '-', '_' and '.', and starts with a letter or digit",
        ))
    }
}

/// An `extra_hosts` entry: `HOST:ADDRESS` or `HOST=ADDRESS` (an IPv6 address may be in
/// brackets, and `host-gateway` is the node's address), as Docker's `ValidateExtraHost` reads it.
pub(crate) fn extra_host(text: &str) -> Result<ExtraHost, Refusal> {
    let (name, address) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(|| {
            Refusal::new(
                format!("extra host {text:?} has no address"),
                "write HOST:ADDRESS, e.g. db:10.0.0.5",
            )
        })?;
    extra_host_of(name.trim(), address.trim())
}

/// An `extra_hosts` entry from its name and address.
pub(crate) fn extra_host_of(name: &str, address: &str) -> Result<ExtraHost, Refusal> {
    host_name(name)?;
    let bare = address
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(address);
    let address = bare.parse::<HostAddress>().map_err(|_| {
        Refusal::new(
            format!("extra host {name}: {address:?} is not an IP address"),
            "write HOST:ADDRESS, e.g. db:10.0.0.5, db:[2001:db8::5], or host.docker.internal:host-gateway (the node's address on the task's network)",
        )
    })?;
    Ok(ExtraHost {
        name: name.to_owned(),
        address,
    })
}

/// A nameserver: an IP address.
pub(crate) fn nameserver(text: &str) -> Result<IpAddr, Refusal> {
    text.trim().parse::<IpAddr>().map_err(|_| {
        Refusal::new(
            format!("dns server {text:?} is not an IP address"),
            "write a nameserver's address, e.g. 10.0.0.53",
        )
    })
}

/// A search domain: a domain name (labels of letters, digits and `-`), or `.` for none.
pub(crate) fn search_domain(domain: &str) -> Result<(), Refusal> {
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if domain == "." || (domain.len() <= 253 && trimmed.split('.').all(label)) {
        Ok(())
    } else {
        Err(Refusal::new(
            format!("invalid search domain {domain:?}"),
            "write a domain name such as corp.example",
        ))
    }
}

/// A resolver option: one word of resolv.conf's `options` line (`ndots:2`, `edns0`).
pub(crate) fn resolver_option(option: &str) -> Result<(), Refusal> {
    let valid = !option.is_empty()
        && option
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(Refusal::new(
            format!("invalid resolver option {option:?}"),
            "write one option of resolv.conf(5) such as ndots:2, timeout:1 or edns0",
        ))
    }
}

/// An out-of-memory score adjustment, in the kernel's range.
pub(crate) fn oom_score_adj(value: i64) -> Result<i32, Refusal> {
    match i32::try_from(value) {
        Ok(adj) if (-1000..=1000).contains(&adj) => Ok(adj),
        _ => Err(Refusal::new(
            format!("{value} is outside the kernel's range, -1000..1000"),
            "write -1000 (never chosen by the OOM killer) to 1000 (chosen first)",
        )),
    }
}

/// Why `options` would not come out of the stack loader as they are: every value checked
/// as the loader checks it, each reason naming its key. Empty when they would.
pub(crate) fn refusals(options: &RuntimeOptions) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut check = |key: &str, result: Result<(), Refusal>| {
        if let Err(refusal) = result {
            reasons.push(format!("{key}: {}", refusal.message));
        }
    };
    for (key, names) in [
        ("cap_add", &options.capability_add),
        ("cap_drop", &options.capability_drop),
    ] {
        for name in names {
            let written = capability(name).and_then(|c| {
                if c == *name {
                    Ok(())
                } else {
                    Err(Refusal {
                        message: format!("capability {name:?} is not written {c}"),
                        help: None,
                    })
                }
            });
            check(key, written);
        }
    }
    for (key, value) in &options.sysctls {
        check("sysctls", sysctl(key, Some(value)).map(drop));
    }
    for (name, limit) in &options.ulimits {
        check("ulimits", ulimit(name, *limit));
    }
    if let Some(driver) = &options.log_driver
        && LOCAL_LOG_DRIVERS.contains(&driver.name.as_str())
    {
        for (key, value) in &driver.options {
            check("logging", log_option(key, value).unwrap_or(Ok(())));
        }
    }
    for host in &options.extra_hosts {
        check("extra_hosts", host_name(&host.name));
    }
    for domain in &options.dns.search {
        check("dns_search", search_domain(domain));
    }
    for option in &options.dns.options {
        check("dns_opt", resolver_option(option));
    }
    check(
        "oom_score_adj",
        oom_score_adj(i64::from(options.oom_score_adj)).map(drop),
    );
    reasons
}

impl Converter<'_> {
    pub(super) fn runtime_options(&mut self, service: &file::Service, loc: &Loc) -> RuntimeOptions {
        RuntimeOptions {
            capability_add: self.capabilities(service.cap_add.as_deref(), &loc.key("cap_add")),
            capability_drop: self.capabilities(service.cap_drop.as_deref(), &loc.key("cap_drop")),
            sysctls: self.sysctls(service.sysctls.as_ref(), &loc.key("sysctls")),
            ulimits: self.ulimits(service.ulimits.as_ref(), &loc.key("ulimits")),
            read_only: service.read_only.unwrap_or(false),
            groups: service
                .group_add
                .iter()
                .flatten()
                .map(|group| match group {
                    StringOrNumber::Number(n) => n.to_string(),
                    StringOrNumber::String(name) => name.clone(),
                })
                .collect(),
            log_driver: self.log_driver(service.logging.as_ref(), &loc.key("logging")),
            extra_hosts: self.extra_hosts(service.extra_hosts.as_ref(), &loc.key("extra_hosts")),
            dns: self.dns(service, loc),
            init: service.init.unwrap_or(false),
            tty: service.tty.unwrap_or(false),
            stdin_open: service.stdin_open.unwrap_or(false),
            oom_score_adj: self.oom_score_adj(service.oom_score_adj, &loc.key("oom_score_adj")),
        }
    }

    fn oom_score_adj(&mut self, value: Option<i64>, loc: &Loc) -> i32 {
        let Some(value) = value else { return 0 };
        match oom_score_adj(value) {
            Ok(adj) => adj,
            Err(refusal) => {
                self.refuse(loc, refusal);
                0
            }
        }
    }

    fn refuse(&mut self, at: &Loc, refusal: Refusal) {
        let diagnostic = self.diags.error(at.span(), &at.path, refusal.message);
        if let Some(help) = refusal.help {
            diagnostic.help(help);
        }
    }

    /// Capability names, each written `CAP_NAME`, sorted.
    fn capabilities(&mut self, names: Option<&[String]>, loc: &Loc) -> Vec<String> {
        let mut out = Vec::new();
        for (i, name) in names.unwrap_or_default().iter().enumerate() {
            match capability(name) {
                Ok(written) => out.push(written),
                Err(refusal) => self.refuse(&loc.index(i), refusal),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn sysctls(&mut self, sysctls: Option<&ListOrMap>, loc: &Loc) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (i, (key, value)) in key_values(sysctls).into_iter().enumerate() {
            let at = match sysctls {
                Some(ListOrMap::List(_)) => loc.index(i),
                _ => loc.key(&key),
            };
            match sysctl(&key, value.as_deref()) {
                Ok(value) => {
                    out.insert(key.clone(), value.to_owned());
                }
                Err(refusal) => self.refuse(&at, refusal),
            }
        }
        out
    }

    fn ulimits(
        &mut self,
        ulimits: Option<&BTreeMap<String, UlimitValue>>,
        loc: &Loc,
    ) -> BTreeMap<String, Ulimit> {
        let mut out = BTreeMap::new();
        for (name, value) in ulimits.into_iter().flatten() {
            let (soft, hard) = match *value {
                UlimitValue::Single(both) => (both, both),
                UlimitValue::Pair { soft, hard } => (soft, hard),
            };
            let limit = Ulimit { soft, hard };
            match ulimit(name, limit) {
                Ok(()) => {
                    out.insert(name.clone(), limit);
                }
                Err(refusal) => self.refuse(&loc.key(name), refusal),
            }
        }
        out
    }

    /// The log driver: `json-file` and `local` with `max-size`/`max-file` rotate the
    /// node's log files; another driver is a warning (the logs stay on the node).
    fn log_driver(&mut self, logging: Option<&file::Logging>, loc: &Loc) -> Option<LogDriver> {
        let logging = logging?;
        let name = logging
            .driver
            .clone()
            .unwrap_or_else(|| "json-file".to_owned());
        let mut options = BTreeMap::new();
        for (key, value) in logging.options.iter().flatten() {
            let value = match value {
                StringOrNumber::Number(n) => n.to_string(),
                StringOrNumber::String(s) => s.clone(),
            };
            options.insert(key.clone(), value);
        }
        if !LOCAL_LOG_DRIVERS.contains(&name.as_str()) {
            let at = loc.key("driver");
            self.diags
                .warning(
                    at.span(),
                    &at.path,
                    format!("log driver {name:?} is not available: the logs stay on the node (json-file), where `swarm service logs` reads them"),
                )
                .help("use json-file or local, with max-size and max-file options to bound them");
            return Some(LogDriver { name, options });
        }
        for (key, value) in &options {
            let at = loc.key("options").key(key);
            match log_option(key, value) {
                Some(Ok(())) => {}
                Some(Err(refusal)) => self.refuse(&at, refusal),
                None => {
                    self.diags
                        .warning(
                            at.span(),
                            &at.path,
                            format!("log option {key:?} is ignored"),
                        )
                        .help("swarm's log files take max-size and max-file");
                }
            }
        }
        Some(LogDriver { name, options })
    }

    /// `extra_hosts` in the order given: a list of `HOST:ADDRESS`, or a map.
    fn extra_hosts(&mut self, hosts: Option<&ListOrMap>, loc: &Loc) -> Vec<ExtraHost> {
        let mut out = Vec::new();
        match hosts {
            None => {}
            Some(ListOrMap::List(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match extra_host(item) {
                        Ok(host) => out.push(host),
                        Err(refusal) => self.refuse(&loc.index(i), refusal),
                    }
                }
            }
            Some(ListOrMap::Map(map)) => {
                for (name, address) in map {
                    match extra_host_of(name, address.as_deref().unwrap_or_default()) {
                        Ok(host) => out.push(host),
                        Err(refusal) => self.refuse(&loc.key(name), refusal),
                    }
                }
            }
        }
        out
    }

    /// `dns`, `dns_search` and `dns_opt`, each in the order given.
    fn dns(&mut self, service: &file::Service, loc: &Loc) -> DnsConfig {
        let items = |value: Option<&StringOrList>| match value {
            None => Vec::new(),
            Some(StringOrList::String(one)) => vec![one.clone()],
            Some(StringOrList::List(list)) => list.clone(),
        };
        // A single string sits at the key itself, a list's items at their index.
        let at = |key: &str, single: bool, i: usize| {
            if single {
                loc.key(key)
            } else {
                loc.key(key).index(i)
            }
        };
        let mut dns = DnsConfig::default();
        let single = matches!(service.dns, Some(StringOrList::String(_)));
        for (i, server) in items(service.dns.as_ref()).iter().enumerate() {
            match nameserver(server) {
                Ok(address) => dns.nameservers.push(address),
                Err(refusal) => self.refuse(&at("dns", single, i), refusal),
            }
        }
        let single = matches!(service.dns_search, Some(StringOrList::String(_)));
        for (i, domain) in items(service.dns_search.as_ref()).into_iter().enumerate() {
            // `dns_search: ""` is Docker's no search domain too (its engine writes none).
            let domain = if domain.is_empty() {
                ".".to_owned()
            } else {
                domain
            };
            match search_domain(&domain) {
                Ok(()) => dns.search.push(domain),
                Err(refusal) => self.refuse(&at("dns_search", single, i), refusal),
            }
        }
        for (i, option) in service.dns_opt.iter().flatten().enumerate() {
            match resolver_option(option) {
                Ok(()) => dns.options.push(option.clone()),
                Err(refusal) => self.refuse(&at("dns_opt", false, i), refusal),
            }
        }
        dns
    }
}
