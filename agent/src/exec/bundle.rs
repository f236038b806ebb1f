//! The OCI bundle's config.json, made as Docker makes it (moby's `oci/defaults.go` and
//! `caps/defaults.go`): the same mounts, masked and read-only paths, capabilities and
//! namespaces. Pure: `runc.rs` writes the result.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::runtime::{ContainerConfig, DataMount, LogConfig, ProcessOptions, RuntimeError};

/// Docker's PATH for a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period Docker uses for `--cpus`.
const CFS_PERIOD_MICROS: u64 = 100_000;

/// Docker's default capability set.
const CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths Docker hides from containers (bind-mounted over with /dev/null or an empty tmpfs).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker leaves visible but read-only.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The container's out-of-memory score adjustment: the one asked, raised to the lowest the
/// daemon may give (said when the service asked for less; the default 0 raised is what
/// the container inherited before it could be asked).
fn oom_score_adj(config: &ContainerConfig, limits: DaemonLimits) -> i32 {
    let asked = config.options.oom_score_adj;
    if asked < limits.oom_score_adj_floor && asked != 0 {
        tracing::warn!(
            container = %config.id,
            asked,
            given = limits.oom_score_adj_floor,
            "oom_score_adj raised to the daemon's own: without CAP_SYS_RESOURCE the daemon \
             cannot give a container a lower one"
        );
    }
    asked.max(limits.oom_score_adj_floor)
}

/// Open files: soft 1024 for programs that still use select(2), hard 524288 for those that
/// raise their own limit — systemd's defaults, which Docker inherits since 25.0.
const NOFILE_SOFT: u64 = 1024;
pub const NOFILE_HARD: u64 = 524_288;

/// Annotations that carry what a restarted daemon needs to take a container back.
const ANNOTATION_STDOUT: &str = "io.swarm.log.stdout";
const ANNOTATION_STDERR: &str = "io.swarm.log.stderr";
const ANNOTATION_MAX_BYTES: &str = "io.swarm.log.max-bytes";
const ANNOTATION_MAX_FILES: &str = "io.swarm.log.max-files";

/// The container's cgroup, under one parent per node so that several nodes on one machine
/// never share a cgroup.
pub fn cgroups_path(node_id: &str, container_id: &str) -> String {
    format!("/{}/{container_id}", node_cgroup(node_id))
}

/// The cgroup (relative to each hierarchy's root) holding all of a node's containers.
pub fn node_cgroup(node_id: &str) -> String {
    format!("swarm-{node_id}")
}

/// What the daemon's own process lets runc give a container. Without CAP_SYS_RESOURCE
/// (as in some VMs and containers) runc can neither raise the open-file limit above the
/// daemon's nor lower the out-of-memory score below it: the kernel refuses, and the
/// container would not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonLimits {
    /// The hard open-file limit, at most `NOFILE_HARD`.
    pub nofile_hard: u64,
    /// The lowest `oom_score_adj` a container may be given: -1000 with CAP_SYS_RESOURCE
    /// in the host's user namespace, else the daemon's own (read at each start).
    pub oom_score_adj_floor: i32,
}

#[cfg(test)]
impl DaemonLimits {
    /// A daemon that may give what Docker gives.
    pub const PRIVILEGED: DaemonLimits = DaemonLimits {
        nofile_hard: NOFILE_HARD,
        oom_score_adj_floor: -1000,
    };
}

/// The OCI runtime spec of a container, within what the daemon may give (`limits`).
pub fn spec(
    config: &ContainerConfig,
    cgroups_path: &str,
    limits: DaemonLimits,
) -> Result<Spec, RuntimeError> {
    let nofile_hard = limits.nofile_hard;
    let invalid = |error: oci_spec::OciSpecError| RuntimeError::Config {
        id: config.id.clone(),
        detail: error.to_string(),
    };
    if config.args.is_empty() {
        return Err(RuntimeError::Config {
            id: config.id.clone(),
            detail: "no command: give the service a command or the image an entrypoint".into(),
        });
    }
    let options = &config.options;
    if (options.tty || options.stdin_open) && options.init.is_none() {
        return Err(RuntimeError::Config {
            id: config.id.clone(),
            detail: "a terminal or an open stdin is held by swarm-init: the container needs it"
                .into(),
        });
    }
    // With an init, it is PID 1 and the command its arguments (`--` ends its own); it
    // holds the command's terminal or open stdin when there is one.
    let args: Vec<String> = match &options.init {
        Some(_) => [super::init::CONTAINER_PATH]
            .into_iter()
            .chain(options.tty.then_some("--tty"))
            .chain(options.stdin_open.then_some("--stdin-open"))
            .chain(["--"])
            .map(str::to_owned)
            .chain(config.args.iter().cloned())
            .collect(),
        None => config.args.clone(),
    };
    let mut env = config.env.clone();
    if !env.iter().any(|pair| pair.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    // Docker names the terminal for programs that look (TERM), unless the service does.
    if options.tty && !env.iter().any(|pair| pair.starts_with("TERM=")) {
        env.push("TERM=xterm".to_owned());
    }
    let capabilities = capabilities(&config.options).map_err(|detail| RuntimeError::Config {
        id: config.id.clone(),
        detail,
    })?;
    let mut rlimits = vec![
        PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(NOFILE_SOFT.min(nofile_hard))
            .hard(nofile_hard.min(NOFILE_HARD))
            .build()
            .map_err(invalid)?,
    ];
    for (name, limit) in &config.options.ulimits {
        let typ: PosixRlimitType = format!("RLIMIT_{}", name.to_ascii_uppercase())
            .parse()
            .map_err(|_| RuntimeError::Config {
                id: config.id.clone(),
                detail: format!("unknown ulimit {name:?}"),
            })?;
        // -1 is "unlimited", as Docker reads it.
        let value = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
        let rlimit = PosixRlimitBuilder::default()
            .typ(typ)
            .soft(value(limit.soft))
            .hard(value(limit.hard))
            .build()
            .map_err(invalid)?;
        rlimits.retain(|r| r.typ() != typ);
        rlimits.push(rlimit);
    }
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(
            UserBuilder::default()
                .uid(config.user.uid)
                .gid(config.user.gid)
                .additional_gids(config.user.additional_gids.clone())
                .build()
                .map_err(invalid)?,
        )
        .args(args)
        .env(env)
        .cwd(&config.cwd)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(capabilities.clone())
                .effective(capabilities.clone())
                .permitted(capabilities)
                // The builder's defaults would fill these two; Docker leaves them empty.
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .map_err(invalid)?,
        )
        .rlimits(rlimits)
        .oom_score_adj(oom_score_adj(config, limits))
        .no_new_privileges(true)
        .build()
        .map_err(invalid)?;

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(invalid)?,
        );
    }
    let mut network = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = &config.netns {
        network = network.path(path.clone());
    }
    namespaces.push(network.build().map_err(invalid)?);

    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; runc adds the default ones (null, zero, full, tty, random,
        // urandom, pts) as Docker does.
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(invalid)?,
    ]);
    if let Some(bytes) = config.resources.memory_bytes {
        let limit = i64::try_from(bytes).map_err(|_| RuntimeError::Config {
            id: config.id.clone(),
            detail: format!("memory limit {bytes} is too large"),
        })?;
        // Swap equal to the limit means no swap: Docker's --memory-swap default (twice the
        // limit) would let an OOM test pass or fail depending on the host's swap.
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(nano_cpus) = config.resources.nano_cpus {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .period(CFS_PERIOD_MICROS)
                .quota(cfs_quota(nano_cpus))
                .build()
                .map_err(invalid)?,
        );
    }
    if let Some(pids) = config.resources.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(i64::try_from(pids).unwrap_or(i64::MAX))
                .build()
                .map_err(invalid)?,
        );
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources.build().map_err(invalid)?)
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec())
        .sysctl(
            config
                .options
                .sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
        .build()
        .map_err(invalid)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(config.rootfs.clone())
                .readonly(config.options.read_only_rootfs)
                .build()
                .map_err(invalid)?,
        )
        .process(process)
        .hostname(config.hostname.clone())
        .mounts(mounts(config).map_err(invalid)?)
        .linux(linux)
        .annotations(log_annotations(&config.logs))
        .build()
        .map_err(invalid)
}

/// Docker's default capabilities with the service's added and dropped, as Docker's
/// `TweakCapabilities` combines them: `ALL` added gives every capability but the dropped
/// ones; `ALL` dropped leaves only the added ones; otherwise the defaults less the dropped,
/// plus the added.
fn capabilities(options: &ProcessOptions) -> Result<HashSet<Capability>, String> {
    let parse = |name: &str| {
        serde_json::from_value::<Capability>(serde_json::Value::String(name.to_owned()))
            .map_err(|_| format!("unknown capability {name:?}"))
    };
    let named = |names: &[String]| {
        names
            .iter()
            .filter(|name| *name != "ALL")
            .map(|name| parse(name))
            .collect::<Result<HashSet<_>, _>>()
    };
    let has_all = |names: &[String]| names.iter().any(|name| name == "ALL");
    let added = named(&options.capability_add)?;
    let dropped = named(&options.capability_drop)?;
    Ok(if has_all(&options.capability_add) {
        let all = swarm_api::spec::CAPABILITIES
            .iter()
            .map(|name| parse(&format!("CAP_{name}")))
            .collect::<Result<HashSet<_>, _>>()?;
        all.difference(&dropped).copied().collect()
    } else if has_all(&options.capability_drop) {
        added
    } else {
        CAPABILITIES
            .into_iter()
            .filter(|c| !dropped.contains(c))
            .chain(added)
            .collect()
    })
}

/// `--cpus` as a CFS quota over Docker's 100 ms period; at least 1 ms, the kernel's minimum.
fn cfs_quota(nano_cpus: u64) -> i64 {
    let quota = u128::from(nano_cpus) * u128::from(CFS_PERIOD_MICROS) / 1_000_000_000;
    i64::try_from(quota).unwrap_or(i64::MAX).max(1000)
}

fn mounts(config: &ContainerConfig) -> Result<Vec<Mount>, oci_spec::OciSpecError> {
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ];
    let system = mounts.len();
    if let Some(init) = &config.options.init {
        mounts.push(mount(
            super::init::CONTAINER_PATH,
            "bind",
            &init.to_string_lossy(),
            &["rbind", "rprivate", "ro"],
        )?);
    }
    for file in &config.files {
        let mut options = vec!["rbind", "rprivate"];
        if file.read_only {
            options.push("ro");
        }
        mounts.push(mount(
            &file.destination,
            "bind",
            &file.source.to_string_lossy(),
            &options,
        )?);
    }
    for data in &config.mounts {
        mounts.push(match data {
            DataMount::Bind {
                source,
                destination,
                read_only,
                propagation,
            } => {
                let mut options = vec!["rbind", propagation.as_str()];
                if *read_only {
                    options.push("ro");
                }
                mount(destination, "bind", &source.to_string_lossy(), &options)?
            }
            DataMount::Tmpfs {
                destination,
                read_only,
                size_bytes,
                mode,
                exec,
            } => {
                let mut options = vec![
                    "nosuid".to_owned(),
                    "nodev".to_owned(),
                    if *exec { "exec" } else { "noexec" }.to_owned(),
                    format!("mode={mode:o}"),
                ];
                if let Some(size) = size_bytes {
                    options.push(format!("size={size}"));
                }
                if *read_only {
                    options.push("ro".to_owned());
                }
                let options: Vec<&str> = options.iter().map(String::as_str).collect();
                mount(destination, "tmpfs", "tmpfs", &options)?
            }
        });
    }
    // Parents before what lies inside them, as Docker sorts them: a tmpfs at /run must not
    // hide the secrets bound under /run/secrets. Stable: equal depths keep their order.
    mounts[system..].sort_by_key(|m| m.destination().components().count());
    Ok(mounts)
}

fn log_annotations(logs: &LogConfig) -> HashMap<String, String> {
    HashMap::from([
        (
            ANNOTATION_STDOUT.to_string(),
            logs.stdout.to_string_lossy().into_owned(),
        ),
        (
            ANNOTATION_STDERR.to_string(),
            logs.stderr.to_string_lossy().into_owned(),
        ),
        (ANNOTATION_MAX_BYTES.to_string(), logs.max_bytes.to_string()),
        (ANNOTATION_MAX_FILES.to_string(), logs.max_files.to_string()),
    ])
}

/// The log configuration recorded in a container's annotations (as `runc state` returns
/// them), or `None` when the container was not made by this runtime.
pub fn log_config_from_annotations(annotations: &HashMap<String, String>) -> Option<LogConfig> {
    Some(LogConfig {
        stdout: Path::new(annotations.get(ANNOTATION_STDOUT)?).to_path_buf(),
        stderr: Path::new(annotations.get(ANNOTATION_STDERR)?).to_path_buf(),
        max_bytes: annotations.get(ANNOTATION_MAX_BYTES)?.parse().ok()?,
        max_files: annotations.get(ANNOTATION_MAX_FILES)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::exec::runtime::{FileMount, Resources, User};

    fn config() -> ContainerConfig {
        ContainerConfig {
            id: "web.1.abc".into(),
            rootfs: "/data/rootfs/web".into(),
            args: vec!["httpd".into(), "-f".into()],
            env: vec!["A=1".into()],
            cwd: "/srv".into(),
            user: User {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![5],
            },
            hostname: "web-1".into(),
            netns: None,
            files: vec![],
            mounts: vec![],
            options: Default::default(),
            resources: Resources::default(),
            logs: LogConfig {
                stdout: "/data/logs/web.out".into(),
                stderr: "/data/logs/web.err".into(),
                max_bytes: 10 << 20,
                max_files: 3,
            },
        }
    }

    fn json_of(config: &ContainerConfig) -> Value {
        let spec = spec(
            config,
            &cgroups_path("n1", &config.id),
            DaemonLimits::PRIVILEGED,
        )
        .unwrap();
        serde_json::to_value(spec).unwrap()
    }

    fn sorted(value: &Value) -> Vec<String> {
        let mut items: Vec<String> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        items.sort();
        items
    }

    #[test]
    fn process_as_docker_makes_it() {
        let json = json_of(&config());
        let process = &json["process"];
        assert_eq!(process["args"], json!(["httpd", "-f"]));
        assert_eq!(process["env"], json!(["A=1", DEFAULT_PATH]));
        assert_eq!(process["cwd"], "/srv");
        assert_eq!(
            process["user"],
            json!({"uid": 1000, "gid": 1001, "additionalGids": [5]})
        );
        assert_eq!(process["terminal"], false);
        assert_eq!(process["noNewPrivileges"], true);
        assert_eq!(
            process["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024}])
        );
        let docker_caps = [
            "CAP_AUDIT_WRITE",
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FOWNER",
            "CAP_FSETID",
            "CAP_KILL",
            "CAP_MKNOD",
            "CAP_NET_BIND_SERVICE",
            "CAP_NET_RAW",
            "CAP_SETFCAP",
            "CAP_SETGID",
            "CAP_SETPCAP",
            "CAP_SETUID",
            "CAP_SYS_CHROOT",
        ];
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(sorted(&process["capabilities"][set]), docker_caps, "{set}");
        }
        assert_eq!(process["capabilities"]["inheritable"], json!([]));
        assert_eq!(process["capabilities"]["ambient"], json!([]));
        assert_eq!(json["hostname"], "web-1");
        assert_eq!(
            json["root"],
            json!({"path": "/data/rootfs/web", "readonly": false})
        );
    }

    /// With an init, swarm-init is PID 1, bound read-only from the node, and the command
    /// its arguments after `--`.
    #[test]
    fn an_init_runs_the_command() {
        let mut config = config();
        config.options.init = Some("/data/swarm-init".into());
        let json = json_of(&config);
        assert_eq!(
            json["process"]["args"],
            json!(["/sbin/swarm-init", "--", "httpd", "-f"])
        );
        let init = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sbin/swarm-init")
            .expect("swarm-init is mounted");
        assert_eq!(
            *init,
            json!({
                "destination": "/sbin/swarm-init",
                "type": "bind",
                "source": "/data/swarm-init",
                "options": ["rbind", "rprivate", "ro"],
            })
        );
    }

    /// With a tty, swarm-init holds the terminal (`--tty`) and TERM names it, unless the
    /// service does; without swarm-init there is no terminal to give.
    #[test]
    fn a_tty_is_held_by_the_init() {
        let mut config = config();
        config.options.init = Some("/data/swarm-init".into());
        config.options.tty = true;
        let json = json_of(&config);
        assert_eq!(
            json["process"]["args"],
            json!(["/sbin/swarm-init", "--tty", "--", "httpd", "-f"])
        );
        assert_eq!(json["process"]["terminal"], false, "runc gives no console");
        assert_eq!(
            json["process"]["env"],
            json!(["A=1", DEFAULT_PATH, "TERM=xterm"])
        );
        config.env.push("TERM=dumb".into());
        let env = json_of(&config)["process"]["env"].clone();
        assert_eq!(env, json!(["A=1", "TERM=dumb", DEFAULT_PATH]));
        config.options.init = None;
        let error = spec(&config, "c", DaemonLimits::PRIVILEGED).unwrap_err();
        assert!(error.to_string().contains("needs it"), "{error}");
        config.options.init = Some("/data/swarm-init".into());
        config.options.tty = false;
        config.options.stdin_open = true;
        assert_eq!(
            json_of(&config)["process"]["args"],
            json!(["/sbin/swarm-init", "--stdin-open", "--", "httpd", "-f"])
        );
    }

    #[test]
    fn open_files_within_the_daemon_limit() {
        let cases = [
            (
                NOFILE_HARD,
                json!({"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024}),
            ),
            (
                1 << 30,
                json!({"type": "RLIMIT_NOFILE", "hard": 524288, "soft": 1024}),
            ),
            (
                20000,
                json!({"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 1024}),
            ),
            (
                512,
                json!({"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512}),
            ),
        ];
        for (daemon_hard, expected) in cases {
            let limits = DaemonLimits {
                nofile_hard: daemon_hard,
                ..DaemonLimits::PRIVILEGED
            };
            let spec = spec(&config(), "/swarm-n1/x", limits).unwrap();
            let json = serde_json::to_value(spec).unwrap();
            assert_eq!(
                json["process"]["rlimits"],
                json!([expected]),
                "{daemon_hard}"
            );
        }
    }

    /// The adjustment asked is given when the daemon may; otherwise the daemon's own is
    /// the lowest a container gets, the default 0 included.
    #[test]
    fn oom_score_adj_within_what_the_daemon_may_give() {
        let cases = [
            (0, -1000, 0),
            (-500, -1000, -500),
            (500, -1000, 500),
            (-500, 0, 0),
            (0, 100, 100),
            (300, 100, 300),
        ];
        for (asked, floor, given) in cases {
            let mut config = config();
            config.options.oom_score_adj = asked;
            let limits = DaemonLimits {
                oom_score_adj_floor: floor,
                ..DaemonLimits::PRIVILEGED
            };
            let spec = spec(&config, "/swarm-n1/x", limits).unwrap();
            let json = serde_json::to_value(spec).unwrap();
            assert_eq!(json["process"]["oomScoreAdj"], given, "{asked} {floor}");
        }
    }

    #[test]
    fn image_path_is_kept() {
        let mut config = config();
        config.env = vec!["PATH=/opt/bin".into()];
        assert_eq!(json_of(&config)["process"]["env"], json!(["PATH=/opt/bin"]));
    }

    #[test]
    fn mounts_as_docker_makes_them() {
        let mut config = config();
        config.files = vec![
            FileMount {
                source: "/data/tasks/t1/hosts".into(),
                destination: "/etc/hosts".into(),
                read_only: false,
            },
            FileMount {
                source: "/data/tasks/t1/resolv.conf".into(),
                destination: "/etc/resolv.conf".into(),
                read_only: true,
            },
        ];
        config.mounts = vec![
            DataMount::Bind {
                source: "/data/volumes/db/_data".into(),
                destination: "/var/lib/db".into(),
                read_only: false,
                propagation: swarm_api::spec::Propagation::Rprivate,
            },
            DataMount::Bind {
                source: "/srv/shared".into(),
                destination: "/shared".into(),
                read_only: true,
                propagation: swarm_api::spec::Propagation::Rslave,
            },
            DataMount::Tmpfs {
                destination: "/cache".into(),
                read_only: false,
                size_bytes: Some(64 << 20),
                mode: 0o1770,
                exec: false,
            },
            DataMount::Tmpfs {
                destination: "/scratch".into(),
                read_only: false,
                size_bytes: None,
                mode: 0o1777,
                exec: true,
            },
        ];
        let json = json_of(&config);
        let mounts: Vec<(String, String, String, Vec<String>)> = json["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["destination"].as_str().unwrap().to_string(),
                    m["type"].as_str().unwrap().to_string(),
                    m["source"].as_str().unwrap().to_string(),
                    m["options"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|o| o.as_str().unwrap().to_string())
                        .collect(),
                )
            })
            .collect();
        let expected: Vec<(&str, &str, &str, &[&str])> = vec![
            ("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
            (
                "/dev",
                "tmpfs",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            (
                "/dev/pts",
                "devpts",
                "devpts",
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            (
                "/sys",
                "sysfs",
                "sysfs",
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            (
                "/sys/fs/cgroup",
                "cgroup",
                "cgroup",
                &["ro", "nosuid", "noexec", "nodev"],
            ),
            (
                "/dev/mqueue",
                "mqueue",
                "mqueue",
                &["nosuid", "noexec", "nodev"],
            ),
            (
                "/dev/shm",
                "tmpfs",
                "shm",
                &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            ),
            ("/shared", "bind", "/srv/shared", &["rbind", "rslave", "ro"]),
            (
                "/cache",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "noexec", "mode=1770", "size=67108864"],
            ),
            (
                "/scratch",
                "tmpfs",
                "tmpfs",
                &["nosuid", "nodev", "exec", "mode=1777"],
            ),
            (
                "/etc/hosts",
                "bind",
                "/data/tasks/t1/hosts",
                &["rbind", "rprivate"],
            ),
            (
                "/etc/resolv.conf",
                "bind",
                "/data/tasks/t1/resolv.conf",
                &["rbind", "rprivate", "ro"],
            ),
            (
                "/var/lib/db",
                "bind",
                "/data/volumes/db/_data",
                &["rbind", "rprivate"],
            ),
        ];
        assert_eq!(mounts.len(), expected.len());
        for (got, want) in mounts.iter().zip(&expected) {
            assert_eq!(got.0, want.0);
            assert_eq!(got.1, want.1, "{}", want.0);
            assert_eq!(got.2, want.2, "{}", want.0);
            assert_eq!(got.3, want.3, "{}", want.0);
        }
        assert_eq!(json["linux"]["maskedPaths"], json!(MASKED_PATHS));
        assert_eq!(json["linux"]["readonlyPaths"], json!(READONLY_PATHS));
    }

    #[test]
    fn namespaces_new_or_joined() {
        let cases = [
            (None, json!({"type": "network"})),
            (
                Some(PathBuf::from("/var/run/netns/t1")),
                json!({"type": "network", "path": "/var/run/netns/t1"}),
            ),
        ];
        for (netns, network) in cases {
            let mut config = config();
            config.netns = netns;
            let json = json_of(&config);
            assert_eq!(
                json["linux"]["namespaces"],
                json!([
                    {"type": "pid"},
                    {"type": "ipc"},
                    {"type": "uts"},
                    {"type": "mount"},
                    network,
                ])
            );
        }
    }

    #[test]
    fn resources_become_cgroup_limits() {
        let deny_all = json!([{"allow": false, "access": "rwm"}]);
        let cases = [
            (Resources::default(), json!({"devices": deny_all})),
            (
                Resources {
                    memory_bytes: Some(16 << 20),
                    nano_cpus: Some(1_500_000_000),
                    pids: Some(100),
                },
                json!({
                    "devices": deny_all,
                    "memory": {"limit": 16777216, "swap": 16777216},
                    "cpu": {"quota": 150000, "period": 100000},
                    "pids": {"limit": 100},
                }),
            ),
            (
                // Below the kernel's 1 ms minimum quota.
                Resources {
                    nano_cpus: Some(1_000_000),
                    ..Resources::default()
                },
                json!({"devices": deny_all, "cpu": {"quota": 1000, "period": 100000}}),
            ),
        ];
        for (resources, expected) in cases {
            let mut config = config();
            config.resources = resources;
            assert_eq!(
                json_of(&config)["linux"]["resources"],
                expected,
                "{resources:?}"
            );
        }
    }

    #[test]
    fn cgroup_per_node() {
        let json = json_of(&config());
        assert_eq!(json["linux"]["cgroupsPath"], "/swarm-n1/web.1.abc");
        assert_ne!(cgroups_path("n1", "c"), cgroups_path("n2", "c"));
    }

    #[test]
    fn log_config_round_trips_through_annotations() {
        let config = config();
        let json = json_of(&config);
        let annotations: HashMap<String, String> =
            serde_json::from_value(json["annotations"].clone()).unwrap();
        assert_eq!(log_config_from_annotations(&annotations), Some(config.logs));
        assert_eq!(log_config_from_annotations(&HashMap::new()), None);
    }

    #[test]
    fn no_command_is_refused() {
        let mut config = config();
        config.args.clear();
        let error = spec(&config, "/swarm-n1/x", DaemonLimits::PRIVILEGED).unwrap_err();
        assert!(error.to_string().contains("web.1.abc"), "{error}");
    }
}
