//! From a task to a container: the image pulled, the network attached (its overlay
//! networks too, before its process starts), the root filesystem mounted, the network files
//! written, the volumes made, and the `ContainerConfig` the runtime starts — the
//! service's spec over the image's defaults, as Docker combines them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use swarm_api::spec::Mount;
use swarm_api::task::Task;
use swarm_api::template::{self, TaskPlaceholders};

use super::{Shared, logs};
use crate::exec::{ContainerConfig, FileMount, LogConfig, ProcessOptions, Resources, User};
use crate::image::{Credentials, Healthcheck, ImageConfig};
use crate::network::ContainerFiles;
use crate::volume::Volumes;

/// Log files rotate at this size; `logs::MAX_FILES` are kept per stream (Docker's
/// json-file driver with max-size=10m, max-file=3).
const LOG_MAX_BYTES: u64 = 10 << 20;

/// A task ready to start.
pub struct Prepared {
    pub config: ContainerConfig,
    pub address: std::net::Ipv4Addr,
    pub image_stop_signal: Option<String>,
    pub image_healthcheck: Option<Healthcheck>,
}

pub(super) async fn prepare(shared: &Shared, task: &Task) -> Result<Prepared, String> {
    let container = &task.spec.container;
    let Expanded {
        hostname,
        env,
        mounts,
    } = expand_templates(task, &shared.config.node_id, &shared.config.node_hostname)?;
    let credentials = service_credentials(shared, &task.service_id);
    let image = shared
        .images
        .pull_with(&container.image, &credentials)
        .await
        .map_err(|e| e.to_string())?;
    shared
        .image_use
        .lock()
        .expect("not poisoned")
        .used(&task.id, &image.digest);
    let dir = shared.task_dir(&task.id);
    record_image(&dir, &image.digest)?;
    let args = command(task, &image.config)?;
    let network = shared.ensure_network().await?;
    let attached = network.attach(&task.id).await.map_err(|e| e.to_string())?;
    if only_internal(&shared.network_view.borrow(), task) {
        network
            .close_route_out(&task.id)
            .await
            .map_err(|e| e.to_string())?;
    }
    shared
        .attach_overlays(task, attached.netns_path.clone())
        .await?;
    let rootfs = shared
        .images
        .mount_rootfs(&image, &dir.join("fs"))
        .map_err(|e| e.to_string())?;
    let short_service = task
        .service_name
        .rsplit_once('_')
        .map_or(task.service_name.as_str(), |(_, name)| name);
    let resolv = crate::network::node_resolv_conf().unwrap_or_default();
    // A task on overlay networks finds services by name through the node's DNS server,
    // which listens on its gateway (the node bridge's address) and forwards the rest to the
    // service's nameservers, or the node's.
    let through = (!task.spec.networks.is_empty()).then_some(attached.gateway);
    let files = ContainerFiles::new(
        &hostname,
        &[short_service.to_owned()],
        attached.address.addr(),
        &resolv,
        &[],
    )
    .and_then(|files| files.with_extra_hosts(&container.runtime.extra_hosts, attached.gateway))
    .map_err(|e| e.to_string())?
    .with_dns(&resolv, through, &container.runtime.dns)
    .write_to(&dir.join("etc"))
    .map_err(|e| e.to_string())?;
    let user = user(
        container.user.as_deref().or(image.config.user.as_deref()),
        &rootfs,
    )?;
    let runtime = &container.runtime;
    let mut user = user;
    user.additional_gids = groups(&runtime.groups, &rootfs)?;
    let mounts = Volumes::new(shared.config.data_dir.join("volumes"))
        .mounts(&mounts, &dir, &rootfs)
        .map_err(|e| e.to_string())?;
    let contents = shared.file_contents.lock().expect("not poisoned").clone();
    let file_objects = super::secrets::prepare(&dir, container, &contents)?;
    let limits = &task.spec.resources.limits;
    let (stdout_log, stderr_log) = logs::log_paths(&dir);
    let logs = stdout_log.parent().expect("log files are in a directory");
    std::fs::create_dir_all(logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let config = ContainerConfig {
        id: task.id.clone(),
        rootfs,
        args,
        env: environment(&image.config.env, &env),
        cwd: container
            .working_dir
            .clone()
            .or_else(|| image.config.working_dir.clone())
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_owned()),
        user,
        hostname,
        netns: Some(attached.netns_path),
        files: [
            bind(&files.hosts, "/etc/hosts"),
            bind(&files.resolv_conf, "/etc/resolv.conf"),
            bind(&files.hostname, "/etc/hostname"),
        ]
        .into_iter()
        .chain(file_objects)
        .collect(),
        mounts,
        options: ProcessOptions {
            capability_add: runtime.capability_add.clone(),
            capability_drop: runtime.capability_drop.clone(),
            sysctls: runtime.sysctls.clone(),
            ulimits: runtime.ulimits.clone(),
            read_only_rootfs: runtime.read_only,
            // A terminal and an open stdin are held by swarm-init: either brings it.
            init: (runtime.init || runtime.tty || runtime.stdin_open)
                .then(|| init_binary(shared))
                .transpose()?,
            tty: runtime.tty,
            stdin_open: runtime.stdin_open,
            oom_score_adj: runtime.oom_score_adj,
        },
        resources: Resources {
            memory_bytes: limits.memory.map(|m| m.0),
            nano_cpus: limits.cpus.map(|c| c.0),
            pids: limits.pids,
        },
        logs: log_config(runtime.log_driver.as_ref(), stdout_log, stderr_log),
    };
    Ok(Prepared {
        config,
        address: attached.address.addr(),
        image_stop_signal: image.config.stop_signal.clone(),
        image_healthcheck: image.config.healthcheck.clone(),
    })
}

/// swarm-init's path on the node, written by the first task that wants it.
fn init_binary(shared: &Shared) -> Result<PathBuf, String> {
    let mut installed = shared.init.lock().expect("not poisoned");
    if let Some(path) = &*installed {
        return Ok(path.clone());
    }
    let path = crate::exec::init::install(&shared.config.data_dir).map_err(|e| e.to_string())?;
    *installed = Some(path.clone());
    Ok(path)
}

/// Whether every network the task is on is `--internal` (Docker's rule: one network with a
/// way out gives the task one).
fn only_internal(view: &swarm_api::endpoints::NetworkView, task: &Task) -> bool {
    !task.networks.is_empty()
        && task.networks.iter().all(|attachment| {
            view.networks
                .get(&attachment.network)
                .is_some_and(|network| network.internal)
        })
}

/// The credentials the task's service brought, by registry.
fn service_credentials(shared: &Shared, service_id: &str) -> HashMap<String, Credentials> {
    let auth = shared.registry_auth.lock().expect("not poisoned");
    auth.get(service_id)
        .into_iter()
        .flatten()
        .map(|(registry, credentials)| (registry.clone(), credentials.clone()))
        .collect()
}

/// Where a task's directory records the manifest digest of the image it was pulled as.
pub(super) fn recorded_image_path(task_dir: &Path) -> PathBuf {
    task_dir.join("image-digest")
}

/// Records the task's image digest before its container exists, so that a restarted
/// daemon adopting the container finds the image's config (healthcheck, stop signal)
/// even when the task names its image by tag. Written aside and renamed: a crash leaves
/// the old record or the new one.
fn record_image(task_dir: &Path, digest: &str) -> Result<(), String> {
    let path = recorded_image_path(task_dir);
    let tmp = task_dir.join(".image-digest.tmp");
    std::fs::create_dir_all(task_dir)
        .and_then(|()| std::fs::write(&tmp, digest))
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot record the task's image in {}: {e}", path.display()))
}

/// The image digest recorded for the task whose directory is `task_dir`, if any.
pub(super) fn recorded_image(task_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(recorded_image_path(task_dir)).ok()?;
    Some(text.trim().to_owned())
}

fn bind(source: &Path, destination: &str) -> FileMount {
    FileMount {
        source: source.to_path_buf(),
        destination: destination.to_owned(),
        read_only: false,
    }
}

/// Docker's rule: the service's entrypoint replaces the image's, and then the image's CMD
/// is dropped unless the service gives a command.
fn command(task: &Task, image: &ImageConfig) -> Result<Vec<String>, String> {
    let container = &task.spec.container;
    let entrypoint = container
        .entrypoint
        .clone()
        .unwrap_or_else(|| image.entrypoint.clone());
    let cmd = match (&container.command, &container.entrypoint) {
        (Some(command), _) => command.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(format!(
            "no command to run: image {} has no ENTRYPOINT or CMD, and the service gives none",
            container.image
        ));
    }
    Ok(args)
}

/// The image's environment, overridden by the service's.
fn environment(image: &[String], service: &BTreeMap<String, String>) -> Vec<String> {
    let mut env: Vec<String> = image
        .iter()
        .filter(|pair| {
            let key = pair.split_once('=').map_or(pair.as_str(), |(k, _)| k);
            !service.contains_key(key)
        })
        .cloned()
        .collect();
    env.extend(service.iter().map(|(k, v)| format!("{k}={v}")));
    env
}

/// `USER[:GROUP]` by number or by name (looked up in the image's /etc/passwd and
/// /etc/group, as Docker does).
fn user(spec: Option<&str>, rootfs: &Path) -> Result<User, String> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else {
        return Ok(User::default());
    };
    let (name, group) = match spec.split_once(':') {
        Some((name, group)) => (name, Some(group)),
        None => (spec, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, Option<u32>)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&name)).then(|| {
                (
                    fields.get(2).and_then(|f| f.parse().ok()).unwrap_or(0),
                    fields.get(3).and_then(|f| f.parse().ok()),
                )
            })
        })
    };
    let (uid, primary_gid) = match name.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => lookup("etc/passwd", name)
            .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => primary_gid.unwrap_or(0),
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup("etc/group", group)
                    .ok_or_else(|| format!("group {group:?} is not in the image's /etc/group"))?
                    .0
            }
        },
    };
    Ok(User {
        uid,
        gid,
        additional_gids: Vec::new(),
    })
}

/// Supplementary groups by number or by name in the image's /etc/group.
fn groups(names: &[String], rootfs: &Path) -> Result<Vec<u32>, String> {
    let table = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
    names
        .iter()
        .map(|name| {
            if let Ok(gid) = name.parse::<u32>() {
                return Ok(gid);
            }
            table
                .lines()
                .find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.first() == Some(&name.as_str()))
                        .then(|| fields.get(2)?.parse().ok())
                        .flatten()
                })
                .ok_or_else(|| format!("group {name:?} is not in the image's /etc/group"))
        })
        .collect()
}

/// Where the task's output goes and how much is kept: the service's `max-size`/`max-file`
/// (json-file and local; the stack loader warned about other drivers), else swarm's.
fn log_config(
    driver: Option<&swarm_api::spec::LogDriver>,
    stdout: PathBuf,
    stderr: PathBuf,
) -> LogConfig {
    let option = |key: &str| driver.and_then(|d| d.options.get(key));
    LogConfig {
        stdout,
        stderr,
        max_bytes: option("max-size")
            .and_then(|size| size.parse::<swarm_api::units::ByteSize>().ok())
            .map_or(LOG_MAX_BYTES, |size| size.0.max(1)),
        max_files: option("max-file")
            .and_then(|files| files.parse::<u32>().ok())
            .map_or(logs::MAX_FILES, |files| files.max(1)),
    }
}

/// A task's hostname, environment and mounts, Swarm's templates filled.
struct Expanded {
    hostname: String,
    env: BTreeMap<String, String>,
    mounts: Vec<Mount>,
}

/// Fills the templates of `task`'s hostname (by default the task id's first twelve
/// characters, as Docker names a container's host), environment values and mount sources
/// and targets, as swarmkit expands a container spec on its node. The stack file was
/// checked when read: an error here is a spec stored by another version.
fn expand_templates(task: &Task, node_id: &str, node_hostname: &str) -> Result<Expanded, String> {
    let slot = task
        .slot
        .map_or_else(|| node_id.to_owned(), |slot| slot.to_string());
    let task_name = task.name();
    let values = TaskPlaceholders {
        service_id: &task.service_id,
        service_name: &task.service_name,
        node_id,
        node_hostname,
        task_id: &task.id,
        task_name: &task_name,
        task_slot: &slot,
    };
    let fill = |what: &str, text: &str| {
        template::expand(text, &values).map_err(|error| format!("expanding the {what}: {error}"))
    };
    let container = &task.spec.container;
    let hostname = match &container.hostname {
        Some(text) => fill("hostname", text)?,
        None => task.id.chars().take(12).collect(),
    };
    let env = container
        .env
        .iter()
        .map(|(key, value)| Ok((key.clone(), fill(&format!("variable {key}"), value)?)))
        .collect::<Result<_, String>>()?;
    let mounts = container
        .mounts
        .iter()
        .map(|mount| {
            let source = mount
                .source
                .as_deref()
                .map(|source| fill("mount source", source))
                .transpose()?;
            let target = fill("mount target", &mount.target)?;
            Ok(Mount {
                source,
                target,
                ..mount.clone()
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(Expanded {
        hostname,
        env,
        mounts,
    })
}

/// The signal that stops the task, and how long it has before SIGKILL.
pub(super) fn stop_signal(task: &Task, image_stop_signal: Option<&str>) -> (i32, Duration) {
    let container = &task.spec.container;
    let signal = container
        .stop_signal
        .as_deref()
        .or(image_stop_signal)
        .and_then(signal_number)
        .unwrap_or(libc::SIGTERM);
    (signal, container.stop_grace_period.0)
}

/// `SIGTERM`, `TERM` or `15`.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    let name = name.trim_start_matches("SIG");
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_by_number_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:44::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let cases = [
            (None, Ok((0, 0))),
            (Some("1000"), Ok((1000, 0))),
            (Some("1000:7"), Ok((1000, 7))),
            (Some("web"), Ok((33, 44))),
            (Some("web:staff"), Ok((33, 50))),
            (
                Some("nobody"),
                Err("user \"nobody\" is not in the image's /etc/passwd"),
            ),
        ];
        for (spec, expected) in cases {
            let got = user(spec, dir.path()).map(|u| (u.uid, u.gid));
            assert_eq!(got, expected.map_err(str::to_owned), "{spec:?}");
        }
    }

    #[test]
    fn templates_are_filled_in_hostname_environment_and_mounts() {
        let spec = serde_json::json!({
            "container": {
                "image": "busybox", "labels": {}, "stop_grace_period": "10s",
                "hostname": "{{.Service.Name}}-{{ .Task.Slot }}",
                "env": { "NODE_ID": "{{.Node.ID}}", "WHERE": "{{.Node.Hostname}}/{{.Task.Name}}" },
                "mounts": [{ "type": "volume", "source": "data-{{.Task.Slot}}", "target": "/data/{{.Task.ID}}", "read_only": false }],
                "configs": [], "secrets": [],
            },
            "resources": { "limits": {}, "reservations": {} },
            "restart": { "condition": "any", "delay": "5s", "max_attempts": 0, "window": "0s" },
            "placement": { "constraints": [], "preferences": [], "max_replicas_per_node": 0 },
            "networks": [],
        });
        let mut task = Task {
            id: "t0123456789abcdef".to_owned(),
            service_id: "s1".to_owned(),
            service_name: "web_api".to_owned(),
            slot: Some(3),
            node_id: Some("node7".to_owned()),
            spec: serde_json::from_value(spec).unwrap(),
            desired: swarm_api::task::DesiredState::Running,
            status: swarm_api::task::TaskStatus::new(swarm_api::task::TaskState::Assigned, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        };
        let expanded = expand_templates(&task, "node7", "host-a").unwrap();
        assert_eq!(expanded.hostname, "web_api-3");
        assert_eq!(expanded.env["NODE_ID"], "node7");
        assert_eq!(expanded.env["WHERE"], "host-a/web_api.3");
        assert_eq!(expanded.mounts[0].source.as_deref(), Some("data-3"));
        assert_eq!(expanded.mounts[0].target, "/data/t0123456789abcdef");
        // A global service's task has no slot: its node id stands in, as in swarmkit.
        task.slot = None;
        task.spec.container.hostname = None;
        let expanded = expand_templates(&task, "node7", "host-a").unwrap();
        assert_eq!(expanded.mounts[0].source.as_deref(), Some("data-node7"));
        assert_eq!(expanded.hostname, "t0123456789a");
        // A spec stored by another version with a template this one does not know.
        task.spec.container.hostname = Some("{{.Node.Labels.zone}}".to_owned());
        let error = expand_templates(&task, "node7", "host-a").err().unwrap();
        assert!(
            error.starts_with("expanding the hostname: unknown template"),
            "{error}"
        );
    }

    #[test]
    fn the_service_environment_wins() {
        let image = ["PATH=/bin".to_owned(), "MODE=image".to_owned()];
        let service = BTreeMap::from([("MODE".to_owned(), "service".to_owned())]);
        assert_eq!(environment(&image, &service), ["PATH=/bin", "MODE=service"]);
    }

    #[test]
    fn a_task_image_record_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let task_dir = dir.path().join("tasks").join("t1");
        assert_eq!(recorded_image(&task_dir), None, "none before the pull");
        record_image(&task_dir, "sha256:aa").unwrap();
        record_image(&task_dir, "sha256:bb").unwrap();
        assert_eq!(recorded_image(&task_dir).as_deref(), Some("sha256:bb"));
        let names: Vec<_> = std::fs::read_dir(&task_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["image-digest"], "nothing left aside");
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("USR1"), Some(libc::SIGUSR1));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
