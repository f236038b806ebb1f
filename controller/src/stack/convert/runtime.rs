//! A service's runtime keys (`cap_add`, `cap_drop`, `sysctls`, `ulimits`, `read_only`,
//! `group_add`, `logging`) into its `RuntimeOptions`, checked as Docker checks them.

use std::collections::BTreeMap;

use swarm_api::spec::{CAPABILITIES, LogDriver, RuntimeOptions, Ulimit};
use swarm_api::stackfile::{self as file, ListOrMap, StringOrNumber, UlimitValue};
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
        }
    }

    /// Capability names as Docker takes them (`net_admin`, `CAP_NET_ADMIN`, `ALL`), each
    /// written `CAP_NAME`, sorted.
    fn capabilities(&mut self, names: Option<&[String]>, loc: &Loc) -> Vec<String> {
        let mut out = Vec::new();
        for (i, name) in names.unwrap_or_default().iter().enumerate() {
            let upper = name.trim().to_ascii_uppercase();
            if upper == "ALL" {
                out.push(upper);
                continue;
            }
            let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
            if CAPABILITIES.contains(&bare) {
                out.push(format!("CAP_{bare}"));
            } else {
                let at = loc.index(i);
                self.diags
                    .error(at.span(), &at.path, format!("unknown capability {name:?}"))
                    .help("write a Linux capability such as NET_ADMIN or SYS_PTRACE (see capabilities(7)), or ALL");
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
            let allowed = SYSCTLS.contains(&key.as_str())
                || SYSCTL_PREFIXES.iter().any(|p| key.starts_with(p));
            if !allowed {
                self.diags
                    .error(at.span(), &at.path, format!("sysctl {key:?} is not allowed in a container"))
                    .help("only the container's own namespaces may be set: net.*, fs.mqueue.*, kernel.shm*, kernel.msg*, kernel.sem");
                continue;
            }
            let Some(value) = value else {
                self.diags
                    .error(at.span(), &at.path, format!("sysctl {key:?} has no value"))
                    .help("write KEY=VALUE, or KEY: VALUE in a map");
                continue;
            };
            out.insert(key, value);
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
            let at = loc.key(name);
            if !ULIMITS.contains(&name.as_str()) {
                self.diags
                    .error(at.span(), &at.path, format!("unknown ulimit {name:?}"))
                    .help(format!("use one of {}", ULIMITS.join(", ")));
                continue;
            }
            let (soft, hard) = match *value {
                UlimitValue::Single(both) => (both, both),
                UlimitValue::Pair { soft, hard } => (soft, hard),
            };
            if soft > hard {
                self.diags
                    .error(
                        at.span(),
                        &at.path,
                        format!(
                            "ulimit {name}: the soft limit {soft} is above the hard limit {hard}"
                        ),
                    )
                    .help("the soft limit is at most the hard one");
                continue;
            }
            out.insert(name.clone(), Ulimit { soft, hard });
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
            match key.as_str() {
                "max-size" => {
                    if let Err(error) = value.parse::<ByteSize>() {
                        self.diags
                            .error(at.span(), &at.path, format!("max-size: {error}"));
                    }
                }
                "max-file" => {
                    if !value.parse::<u32>().is_ok_and(|n| n >= 1) {
                        self.diags
                            .error(
                                at.span(),
                                &at.path,
                                format!("max-file {value:?} is not a number of files"),
                            )
                            .help("write how many files to keep, at least 1");
                    }
                }
                _ => {
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
}
