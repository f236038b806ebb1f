//! Flags → specs, table-driven: what `service create` makes, what `service update` changes,
//! and that every bad value names its flag.

use serde_json::json;
use swarm_api::spec::{
    FailureAction, PublishMode, ServiceMode, ServiceSpec, UpdateOrder, UpdatePolicy,
};

use super::*;

fn create(name: &str, image: &str) -> CreateFlags {
    CreateFlags {
        name: name.to_owned(),
        mode: "replicated".to_owned(),
        image: image.to_owned(),
        ..CreateFlags::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn ports(spec: &ServiceSpec) -> Vec<String> {
    spec.endpoint.ports.iter().map(|p| p.to_string()).collect()
}

#[test]
fn create_flags_make_the_spec_a_stack_file_would() {
    let flags = CreateFlags {
        replicas: Some(3),
        publish: strings(&[
            "8080:80",
            "published=53,target=53,protocol=udp",
            "mode=host,target=9000",
            "published=8443,target=443,proxy-protocol=v2",
            "127.0.0.1:9100-9101:91",
        ]),
        env: strings(&["A=1", "PRICE=$5"]),
        label: strings(&["team=a"]),
        container_label: strings(&["tier=front"]),
        constraint: strings(&["node.role==worker", "node.labels.zone!=b"]),
        placement_pref: strings(&["spread=node.labels.rack"]),
        limit_cpu: Some("0.5".into()),
        limit_memory: Some("256M".into()),
        limit_pids: Some(100),
        reserve_memory: Some("64M".into()),
        health_cmd: Some("wget -q -O- localhost".into()),
        health_interval: Some("5s".into()),
        health_start_interval: Some("1s".into()),
        health_retries: Some(2),
        restart_condition: Some("on-failure".into()),
        update_order: Some("start-first".into()),
        rollback: RollbackFlags {
            parallelism: Some(0),
            ..RollbackFlags::default()
        },
        command: strings(&["httpd", "-f"]),
        ..create("web", "nginx:1")
    };
    let spec = flags.spec().unwrap();
    let container = &spec.task.container;
    assert_eq!(spec.name, "web");
    assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
    assert_eq!(
        ports(&spec),
        [
            "*:auto->9000/tcp (host)",
            "*:53->53/udp",
            "*:8080->80/tcp",
            "*:8443->443/tcp (proxy-protocol v2)",
            "*:9100->91/tcp",
            "*:9101->91/tcp"
        ]
    );
    assert_eq!(spec.endpoint.ports[0].mode, PublishMode::Host);
    assert_eq!(container.env["A"], "1");
    assert_eq!(
        container.env["PRICE"], "$5",
        "a flag's `$` is not interpolated"
    );
    assert_eq!(spec.labels["team"], "a");
    assert_eq!(container.labels["tier"], "front");
    let constraints: Vec<String> = spec
        .task
        .placement
        .constraints
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        constraints,
        ["node.role == worker", "node.labels.zone != b"]
    );
    assert_eq!(
        spec.task.placement.preferences[0].spread,
        "node.labels.rack"
    );
    assert_eq!(
        spec.task
            .resources
            .limits
            .cpus
            .map(|c| c.to_string())
            .as_deref(),
        Some("0.5")
    );
    assert!(spec.task.resources.limits.memory.is_some());
    assert_eq!(spec.task.resources.limits.pids, Some(100));
    assert!(spec.task.resources.reservations.memory.is_some());
    assert_eq!(spec.task.resources.reservations.cpus, None);
    let health = container.healthcheck.as_ref().unwrap();
    assert_eq!(health.test, ["CMD-SHELL", "wget -q -O- localhost"]);
    assert_eq!(health.interval.to_string(), "5s");
    assert_eq!(health.start_interval.to_string(), "1s");
    assert_eq!(health.retries, 2);
    assert_eq!(spec.update.order, UpdateOrder::StartFirst);
    assert_eq!(spec.rollback.parallelism, 0);
    assert_eq!(
        container.command.as_deref(),
        Some(&strings(&["httpd", "-f"])[..])
    );
    assert!(
        spec.task.networks.is_empty(),
        "no stack network for a service of its own"
    );

    // The defaults are a stack file's: the same intent as a document gives the same spec.
    let plain = create("web", "nginx:1").spec().unwrap();
    let document = load_service_document("web", json!({ "image": "nginx:1" })).unwrap();
    assert_eq!(plain, document);
    let global = CreateFlags {
        mode: "global".into(),
        ..create("agent", "busybox")
    };
    assert_eq!(global.spec().unwrap().mode, ServiceMode::Global);
}

/// A two-port, labelled service that updates change.
fn service() -> ServiceSpec {
    load_service_document(
        "web",
        json!({
            "image": "web:1",
            "ports": ["8080:80", "53:53/udp"],
            "environment": {"A": "1", "B": "2"},
            "labels": {"tier": "front"},
            "deploy": {"labels": {"team": "a"}, "placement": {"preferences": [{"spread": "node.labels.zone"}]}},
        }),
    )
    .unwrap()
}

fn updated(flags: UpdateFlags) -> Result<ServiceSpec, FlagError> {
    let mut spec = service();
    flags.apply(&mut spec)?;
    Ok(spec)
}

#[test]
fn update_flags_add_and_remove_ports_labels_and_env() {
    type Check = fn(&ServiceSpec);
    let cases: Vec<(&str, UpdateFlags, Check)> = vec![
        (
            "a port added",
            UpdateFlags {
                publish_add: strings(&["9090:90"]),
                ..UpdateFlags::default()
            },
            |s| {
                assert_eq!(
                    ports(s),
                    ["*:53->53/udp", "*:8080->80/tcp", "*:9090->90/tcp"]
                )
            },
        ),
        (
            "a process limit set, then lifted by 0 as in Docker",
            UpdateFlags {
                limit_pids: Some(50),
                ..UpdateFlags::default()
            },
            |s| {
                assert_eq!(s.task.resources.limits.pids, Some(50));
                let mut lifted = s.clone();
                UpdateFlags {
                    limit_pids: Some(0),
                    ..UpdateFlags::default()
                }
                .apply(&mut lifted)
                .unwrap();
                assert_eq!(lifted.task.resources.limits.pids, None);
            },
        ),
        (
            "a port with the same published port replaced",
            UpdateFlags {
                publish_add: strings(&["8080:8000"]),
                ..UpdateFlags::default()
            },
            |s| assert_eq!(ports(s), ["*:53->53/udp", "*:8080->8000/tcp"]),
        ),
        (
            "a port removed by target and protocol",
            UpdateFlags {
                publish_rm: strings(&["53/udp"]),
                ..UpdateFlags::default()
            },
            |s| assert_eq!(ports(s), ["*:8080->80/tcp"]),
        ),
        (
            "a port removed by target, any protocol",
            UpdateFlags {
                publish_rm: strings(&["80"]),
                ..UpdateFlags::default()
            },
            |s| assert_eq!(ports(s), ["*:53->53/udp"]),
        ),
        (
            "service labels added and removed",
            UpdateFlags {
                label_add: strings(&["team=b", "env=prod"]),
                label_rm: strings(&["team"]),
                ..UpdateFlags::default()
            },
            |s| {
                assert_eq!(
                    s.labels.iter().collect::<Vec<_>>(),
                    [(&"env".to_owned(), &"prod".to_owned())]
                )
            },
        ),
        (
            "container labels added and removed",
            UpdateFlags {
                container_label_add: strings(&["zone=a"]),
                container_label_rm: strings(&["tier"]),
                ..UpdateFlags::default()
            },
            |s| assert_eq!(s.task.container.labels.keys().collect::<Vec<_>>(), ["zone"]),
        ),
        (
            "env added, changed and removed",
            UpdateFlags {
                env_add: strings(&["A=10", "C=3"]),
                env_rm: strings(&["B"]),
                ..UpdateFlags::default()
            },
            |s| {
                let env: Vec<String> = s
                    .task
                    .container
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                assert_eq!(env, ["A=10", "C=3"]);
            },
        ),
        (
            "nothing given, nothing changed",
            UpdateFlags::default(),
            |s| assert_eq!(*s, service()),
        ),
        (
            "force moves only the force counter",
            UpdateFlags {
                force: true,
                ..UpdateFlags::default()
            },
            |s| {
                assert_eq!(s.task.force_update, 1);
                let mut back = s.clone();
                back.task.force_update = 0;
                assert_eq!(back, service());
            },
        ),
    ];
    for (name, flags, check) in cases {
        let spec = updated(flags).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(&spec);
    }
}

#[test]
fn flags_change_only_what_they_name() {
    let spec = updated(UpdateFlags {
        args: Some("httpd -f -p '8 0'".into()),
        label_add: strings(&["team=b"]),
        container_label_rm: strings(&["tier"]),
        publish_add: strings(&["8080:8000", "9090:90"]),
        publish_rm: strings(&["53/udp"]),
        restart_condition: Some("on-failure".into()),
        restart_max_attempts: Some(3),
        health_cmd: Some("wget -q -O- localhost".into()),
        health_retries: Some(2),
        hostname: Some("{{.Task.Slot}}".into()),
        stop_signal: Some("SIGUSR1".into()),
        placement_pref_rm: strings(&["spread=node.labels.zone"]),
        placement_pref_add: strings(&["spread=node.labels.rack"]),
        ..UpdateFlags::default()
    })
    .unwrap();
    let container = &spec.task.container;
    assert_eq!(
        container.command.as_deref(),
        Some(&["httpd".to_owned(), "-f".into(), "-p".into(), "8 0".into()][..])
    );
    assert_eq!(spec.labels["team"], "b");
    assert!(container.labels.is_empty());
    assert_eq!(ports(&spec), ["*:8080->8000/tcp", "*:9090->90/tcp"]);
    assert_eq!(spec.task.restart.max_attempts, 3);
    assert_eq!(spec.task.restart.delay.to_string(), "5s", "unchanged");
    let health = container.healthcheck.as_ref().unwrap();
    assert_eq!(health.test, ["CMD-SHELL", "wget -q -O- localhost"]);
    assert_eq!(health.retries, 2);
    assert_eq!(container.hostname.as_deref(), Some("{{.Task.Slot}}"));
    assert_eq!(container.stop_signal.as_deref(), Some("SIGUSR1"));
    let spreads: Vec<&str> = spec
        .task
        .placement
        .preferences
        .iter()
        .map(|p| p.spread.as_str())
        .collect();
    assert_eq!(spreads, ["node.labels.rack"]);
}

#[test]
fn bad_values_name_their_flag() {
    let update_cases: Vec<(UpdateFlags, &str)> = vec![
        (
            UpdateFlags {
                publish_add: strings(&["80:x"]),
                ..Default::default()
            },
            "--publish",
        ),
        (
            UpdateFlags {
                publish_rm: strings(&["http"]),
                ..Default::default()
            },
            "--publish-rm",
        ),
        (
            UpdateFlags {
                restart_condition: Some("sometimes".into()),
                ..Default::default()
            },
            "--restart-condition",
        ),
        (
            UpdateFlags {
                placement_pref_add: strings(&["node.labels.x"]),
                ..Default::default()
            },
            "--placement-pref-add",
        ),
        (
            UpdateFlags {
                health_interval: Some("5s".parse().unwrap()),
                ..Default::default()
            },
            "--health-cmd",
        ),
        (
            UpdateFlags {
                args: Some("sh -c 'oops".into()),
                ..Default::default()
            },
            "--args",
        ),
        (
            UpdateFlags {
                label_add: strings(&["novalue"]),
                ..Default::default()
            },
            "--label-add",
        ),
        (
            UpdateFlags {
                env_add: strings(&["=1"]),
                ..Default::default()
            },
            "invalid --env-add \"=1\": expected KEY=VALUE",
        ),
        (
            UpdateFlags {
                env_add: strings(&["ZONE={{.Node.Labels.zone}}"]),
                ..Default::default()
            },
            "invalid --env-add \"ZONE={{.Node.Labels.zone}}\": unknown template",
        ),
        (
            UpdateFlags {
                hostname: Some("{{.Task.Slto}}".into()),
                ..Default::default()
            },
            "invalid --hostname \"{{.Task.Slto}}\": unknown template",
        ),
        (
            UpdateFlags {
                limit_memory: Some("lots".into()),
                ..Default::default()
            },
            "invalid --limit-memory \"lots\"",
        ),
        (
            UpdateFlags {
                constraint_add: strings(&["node.colour==red"]),
                ..Default::default()
            },
            "invalid --constraint-add",
        ),
        (
            UpdateFlags {
                update_order: Some("sideways".into()),
                ..Default::default()
            },
            "invalid --update-order \"sideways\": use start-first or stop-first",
        ),
        (
            UpdateFlags {
                update_max_failure_ratio: Some(1.5),
                ..Default::default()
            },
            "invalid --update-max-failure-ratio 1.5: use a number from 0 to 1",
        ),
        (
            UpdateFlags {
                entrypoint: Some("'".into()),
                ..Default::default()
            },
            "invalid --entrypoint \"'\": unbalanced quotes",
        ),
        (
            UpdateFlags {
                stop_signal: Some("SIGNOPE".into()),
                ..Default::default()
            },
            "--stop-signal: ",
        ),
    ];
    for (flags, want) in update_cases {
        let error = updated(flags.clone()).unwrap_err().to_string();
        assert!(error.contains(want), "{flags:?}: {error}");
    }
    let mut global =
        load_service_document("g", json!({"image": "x", "deploy": {"mode": "global"}})).unwrap();
    let error = UpdateFlags {
        replicas: Some(2),
        ..Default::default()
    }
    .apply(&mut global)
    .unwrap_err();
    assert_eq!(error, FlagError::ReplicasOfGlobal { mode: "global" });

    let long = "a".repeat(64);
    let create_cases: Vec<(CreateFlags, &str)> = vec![
        (create(&long, "nginx"), "invalid --name \"aaaa"),
        (
            create("bad name", "nginx"),
            "invalid --name \"bad name\": use letters",
        ),
        (
            CreateFlags {
                publish: strings(&["80:x"]),
                ..create("w", "nginx")
            },
            "--publish: invalid port \"x\": ports are numbers from 1 to 65535",
        ),
        (
            CreateFlags {
                publish: strings(&["published=8080"]),
                ..create("w", "nginx")
            },
            "invalid --publish \"published=8080\": the target port is missing",
        ),
        (
            CreateFlags {
                publish: strings(&["port=80"]),
                ..create("w", "nginx")
            },
            "unknown key \"port\"",
        ),
        (
            CreateFlags {
                env: strings(&["NOVALUE"]),
                ..create("w", "nginx")
            },
            "invalid --env \"NOVALUE\": expected KEY=VALUE",
        ),
        (
            CreateFlags {
                placement_pref: strings(&["pack=x"]),
                ..create("w", "nginx")
            },
            "invalid --placement-pref \"pack=x\"",
        ),
        (
            CreateFlags {
                limit_memory: Some("lots".into()),
                ..create("w", "nginx")
            },
            "--limit-memory: ",
        ),
        (
            CreateFlags {
                restart_delay: Some("soon".into()),
                ..create("w", "nginx")
            },
            "--restart-delay: ",
        ),
        (
            CreateFlags {
                update_max_failure_ratio: Some(2.0),
                ..create("w", "nginx")
            },
            "--update-max-failure-ratio: ",
        ),
        (
            CreateFlags {
                health_cmd: Some("true".into()),
                health_timeout: Some("x".into()),
                ..create("w", "nginx")
            },
            "--health-timeout: ",
        ),
        (
            CreateFlags {
                replicas: Some(2),
                mode: "global".into(),
                ..create("w", "nginx")
            },
            "invalid service:",
        ),
        (
            CreateFlags {
                mode: "sometimes".into(),
                ..create("w", "nginx")
            },
            "--mode: ",
        ),
        (
            create("w", "Nginx"),
            "IMAGE: invalid image reference \"Nginx\": repository names are lowercase",
        ),
        (
            CreateFlags {
                constraint: strings(&["node.colour==red"]),
                ..create("w", "nginx")
            },
            "--constraint: ",
        ),
    ];
    for (flags, want) in create_cases {
        let error = flags.spec().unwrap_err().to_string();
        assert!(error.contains(want), "{flags:?}: {error}");
    }
    // The name is the user's: its limit is Docker's 63 characters, and no stack's name
    // shows in the message.
    let error = create(&long, "nginx").spec().unwrap_err().to_string();
    assert!(
        error.contains("at most 63 characters") && !error.contains("cli_"),
        "{error}"
    );
    assert_eq!(create(&long[1..], "nginx").spec().unwrap().name, long[1..]);
}

#[test]
fn rollback_flags_become_a_section_and_change_a_policy() {
    let flags = RollbackFlags {
        parallelism: Some(0),
        monitor: Some("2s".parse().unwrap()),
        failure_action: Some("continue".into()),
        order: Some("start-first".into()),
        ..Default::default()
    };
    assert_eq!(
        flags.section().unwrap(),
        Some(
            json!({"parallelism": 0, "monitor": "2s", "failure_action": "continue", "order": "start-first"})
        )
    );
    assert_eq!(RollbackFlags::default().section().unwrap(), None);
    let mut policy = UpdatePolicy::default();
    flags.apply(&mut policy).unwrap();
    assert_eq!(policy.parallelism, 0);
    assert_eq!(policy.monitor.to_string(), "2s");
    assert_eq!(policy.failure_action, FailureAction::Continue);
    assert_eq!(policy.order, UpdateOrder::StartFirst);
}

#[test]
fn bad_rollback_values_name_the_flag() {
    for (flags, message) in [
        (
            RollbackFlags {
                failure_action: Some("rollback".into()),
                ..Default::default()
            },
            "invalid --rollback-failure-action \"rollback\": use pause or continue",
        ),
        (
            RollbackFlags {
                order: Some("sideways".into()),
                ..Default::default()
            },
            "invalid --rollback-order \"sideways\": use start-first or stop-first",
        ),
        (
            RollbackFlags {
                max_failure_ratio: Some(2.0),
                ..Default::default()
            },
            "invalid --rollback-max-failure-ratio 2: use a number from 0 to 1",
        ),
    ] {
        let error = flags.apply(&mut UpdatePolicy::default()).unwrap_err();
        assert_eq!(error.to_string(), message);
    }
}

#[test]
fn generated_names_are_valid_service_names_and_vary() {
    let names: std::collections::BTreeSet<String> = (0..2000).map(generated_name).collect();
    assert!(names.len() > 1000, "{}", names.len());
    for name in &names {
        assert!(create(name, "nginx").spec().is_ok(), "{name}");
        assert!(name.contains('_'), "{name}");
    }
}

/// `--network` attaches to cluster networks by name (external to the one-service document),
/// with aliases; `--network-add|--network-rm` make the same attachments on an update.
#[test]
fn networks_are_attached_by_name_on_create_and_update() {
    let flags = CreateFlags {
        network: strings(&["back", "name=front,alias=www"]),
        ..create("web", "nginx:1")
    };
    let spec = flags.spec().unwrap();
    let attached: Vec<(String, Vec<String>)> = spec
        .task
        .networks
        .iter()
        .map(|n| (n.target.clone(), n.aliases.clone()))
        .collect();
    assert_eq!(
        attached,
        [
            ("back".to_owned(), strings(&["web"])),
            ("front".to_owned(), strings(&["web", "www"])),
        ]
    );
    // An update gives the spec the create would have.
    let mut updated = create("web", "nginx:1").spec().unwrap();
    UpdateFlags {
        network_add: strings(&["name=front,alias=www", "back", "gone"]),
        network_rm: strings(&["gone"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    UpdateFlags {
        network_rm: strings(&["gone"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    assert_eq!(updated, spec);
    let error = CreateFlags {
        network: strings(&["alias=x"]),
        ..create("web", "nginx:1")
    }
    .spec()
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid --network \"alias=x\": the network's name is missing"
    );
}

/// `--mount` reads Docker's syntax into the mounts a stack file's long syntax gives: a named
/// volume keeps its name (no stack prefix) and its driver options; `--mount-add` replaces a
/// mount on the same target and `--mount-rm` removes one by target.
#[test]
fn mounts_are_made_and_changed_by_flags() {
    use swarm_api::spec::{MountKind, Propagation, TmpfsOptions};
    let flags = CreateFlags {
        mount: strings(&[
            "type=volume,source=db,target=/var/lib/db,volume-nocopy,volume-opt=type=tmpfs,volume-opt=device=tmpfs",
            "type=bind,src=/srv/www,dst=/www,readonly,bind-propagation=rslave",
            "type=tmpfs,destination=/cache,tmpfs-size=64m,tmpfs-mode=1770",
        ]),
        ..create("db", "postgres:16")
    };
    let spec = flags.spec().unwrap();
    let mounts = &spec.task.container.mounts;
    assert_eq!(
        mounts.iter().map(|m| m.target.as_str()).collect::<Vec<_>>(),
        ["/cache", "/var/lib/db", "/www"]
    );
    assert_eq!(mounts[0].kind, MountKind::Tmpfs);
    assert_eq!(
        mounts[0].tmpfs,
        Some(TmpfsOptions {
            size_bytes: Some(64 << 20),
            mode: Some(0o1770),
            exec: false,
        })
    );
    assert_eq!(mounts[1].source.as_deref(), Some("db"));
    assert!(mounts[1].no_copy);
    let options = mounts[1].volume.as_ref().unwrap();
    assert_eq!(options.driver_opts["type"], "tmpfs");
    assert_eq!(
        (mounts[2].kind, mounts[2].read_only, mounts[2].propagation),
        (MountKind::Bind, true, Some(Propagation::Rslave))
    );

    let mut updated = spec.clone();
    UpdateFlags {
        mount_add: strings(&["type=tmpfs,target=/www"]),
        mount_rm: strings(&["/cache"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    let mounts = &updated.task.container.mounts;
    assert_eq!(
        mounts
            .iter()
            .map(|m| (m.target.as_str(), m.kind))
            .collect::<Vec<_>>(),
        [
            ("/var/lib/db", MountKind::Volume),
            ("/www", MountKind::Tmpfs)
        ]
    );

    for (text, said) in [
        (
            "type=nfs,target=/x",
            "type \"nfs\": use volume, bind or tmpfs",
        ),
        ("source=db", "the target is missing"),
        ("type=tmpfs,target=/x,tmpfs-mode=rw", "tmpfs-mode rw"),
        ("type=volume,target=/x,color=red", "unknown key \"color\""),
        (
            "type=volume,source=db,target=/x,bind-propagation=rshared",
            "--mount",
        ),
    ] {
        let error = CreateFlags {
            mount: strings(&[text]),
            ..create("db", "postgres:16")
        }
        .spec()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("--mount") && error.contains(said),
            "{text}: {error}"
        );
    }
}

/// The runtime flags make the runtime options a stack file's keys give, and `service
/// update` changes them as Docker's does: an added capability is no longer dropped, options
/// alone change the current log driver's.
#[test]
fn runtime_flags_set_and_change_the_runtime_options() {
    let spec = CreateFlags {
        cap_add: strings(&["net_admin"]),
        cap_drop: strings(&["MKNOD"]),
        sysctl: strings(&["net.core.somaxconn=1024"]),
        ulimit: strings(&["nofile=1024:4096", "nproc=512"]),
        read_only: true,
        group: strings(&["audio"]),
        log_driver: Some("local".into()),
        log_opt: strings(&["max-size=5m"]),
        ..create("app", "busybox")
    }
    .spec()
    .unwrap();
    let runtime = &spec.task.container.runtime;
    assert_eq!(runtime.capability_add, ["CAP_NET_ADMIN"]);
    assert_eq!(runtime.capability_drop, ["CAP_MKNOD"]);
    assert_eq!(
        (
            runtime.ulimits["nofile"].soft,
            runtime.ulimits["nofile"].hard
        ),
        (1024, 4096)
    );
    assert_eq!(runtime.ulimits["nproc"].hard, 512);
    assert!(runtime.read_only);
    assert_eq!(runtime.groups, ["audio"]);
    assert_eq!(runtime.log_driver.as_ref().unwrap().name, "local");

    let mut updated = spec.clone();
    UpdateFlags {
        cap_add: strings(&["MKNOD"]),
        cap_drop: strings(&["NET_ADMIN"]),
        sysctl_rm: strings(&["net.core.somaxconn"]),
        ulimit_rm: strings(&["nproc"]),
        read_only: Some(false),
        group_add: strings(&["42"]),
        group_rm: strings(&["audio"]),
        log_opt: strings(&["max-file=2"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    let runtime = &updated.task.container.runtime;
    assert_eq!(runtime.capability_add, ["CAP_MKNOD"]);
    assert_eq!(runtime.capability_drop, ["CAP_NET_ADMIN"]);
    assert!(runtime.sysctls.is_empty());
    assert_eq!(runtime.ulimits.keys().collect::<Vec<_>>(), ["nofile"]);
    assert!(!runtime.read_only);
    assert_eq!(runtime.groups, ["42"]);
    let driver = runtime.log_driver.as_ref().unwrap();
    assert_eq!(driver.name, "local");
    assert_eq!(driver.options["max-size"], "5m");
    assert_eq!(driver.options["max-file"], "2");

    for (flags, flag) in [
        (
            CreateFlags {
                cap_add: strings(&["FLY"]),
                ..create("app", "busybox")
            },
            "--cap-add",
        ),
        (
            CreateFlags {
                sysctl: strings(&["kernel.hostname=x"]),
                ..create("app", "busybox")
            },
            "--sysctl",
        ),
        (
            CreateFlags {
                ulimit: strings(&["nofile"]),
                ..create("app", "busybox")
            },
            "--ulimit",
        ),
        (
            CreateFlags {
                log_opt: strings(&["max-file=0"]),
                ..create("app", "busybox")
            },
            "--log-opt",
        ),
    ] {
        let error = flags.spec().unwrap_err().to_string();
        assert!(error.contains(flag), "{flag}: {error}");
    }
}

/// `--host`, `--dns`, `--dns-search`, `--dns-option`, `--init` and `--tty` make what the
/// stack keys make; update's -add/-rm pairs change them in place, keeping their order.
#[test]
fn host_dns_and_init_flags_set_and_change_the_runtime_options() {
    let spec = CreateFlags {
        host: strings(&["db:10.0.0.5", "db:10.0.0.6", "cache:10.0.0.7"]),
        dns: strings(&["10.0.0.53"]),
        dns_search: strings(&["corp.example"]),
        dns_option: strings(&["ndots:2"]),
        init: true,
        tty: true,
        ..create("app", "busybox")
    }
    .spec()
    .unwrap();
    let runtime = &spec.task.container.runtime;
    let hosts = |runtime: &swarm_api::spec::RuntimeOptions| -> Vec<String> {
        let lines = runtime.extra_hosts.iter();
        lines.map(|h| format!("{}={}", h.name, h.address)).collect()
    };
    assert_eq!(
        hosts(runtime),
        ["db=10.0.0.5", "db=10.0.0.6", "cache=10.0.0.7"]
    );
    assert_eq!(
        runtime.dns.nameservers,
        ["10.0.0.53".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(runtime.dns.search, ["corp.example"]);
    assert_eq!(runtime.dns.options, ["ndots:2"]);
    assert!(runtime.init && runtime.tty);

    let mut updated = spec.clone();
    UpdateFlags {
        host_rm: strings(&["db:10.0.0.6", "cache"]),
        host_add: strings(&["api:10.0.0.8", "db:10.0.0.5"]),
        dns_add: strings(&["10.0.0.54"]),
        dns_rm: strings(&["10.0.0.53"]),
        dns_search_rm: strings(&["corp.example"]),
        dns_search_add: strings(&["lab.example"]),
        dns_option_add: strings(&["edns0"]),
        init: Some(false),
        tty: Some(false),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    let runtime = &updated.task.container.runtime;
    assert_eq!(hosts(runtime), ["db=10.0.0.5", "api=10.0.0.8"]);
    assert_eq!(
        runtime.dns.nameservers,
        ["10.0.0.54".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(runtime.dns.search, ["lab.example"]);
    assert_eq!(runtime.dns.options, ["ndots:2", "edns0"]);
    assert!(!runtime.init && !runtime.tty);

    for (flags, flag) in [
        (
            CreateFlags {
                host: strings(&["db"]),
                ..create("app", "busybox")
            },
            "--add-host",
        ),
        (
            CreateFlags {
                dns: strings(&["dns.example"]),
                ..create("app", "busybox")
            },
            "--dns",
        ),
        (
            CreateFlags {
                dns_search: strings(&["a b"]),
                ..create("app", "busybox")
            },
            "--dns-search",
        ),
        (
            CreateFlags {
                dns_option: strings(&["ndots:1\nnameserver 1.1.1.1"]),
                ..create("app", "busybox")
            },
            "--dns-option",
        ),
    ] {
        let error = flags.spec().unwrap_err().to_string();
        assert!(error.contains(flag), "{flag}: {error}");
    }
    let error = UpdateFlags {
        dns_rm: strings(&["nowhere"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated.clone())
    .unwrap_err()
    .to_string();
    assert!(error.contains("dns-rm"), "{error}");
}

/// `--oom-score-adj` sets the adjustment as the stack key does; update changes it, 0 takes
/// it away, and a value outside the kernel's range names the flag.
#[test]
fn oom_score_adj_is_set_and_changed_by_flags() {
    let spec = CreateFlags {
        oom_score_adj: Some(-500),
        ..create("db", "postgres:16")
    }
    .spec()
    .unwrap();
    assert_eq!(spec.task.container.runtime.oom_score_adj, -500);
    let mut updated = spec.clone();
    UpdateFlags {
        oom_score_adj: Some(0),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    assert_eq!(updated.task.container.runtime, Default::default());
    UpdateFlags {
        cap_add: strings(&["NET_ADMIN"]),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    assert_eq!(updated.task.container.runtime.oom_score_adj, 0, "kept");

    let error = CreateFlags {
        oom_score_adj: Some(1001),
        ..create("db", "postgres:16")
    }
    .spec()
    .unwrap_err()
    .to_string();
    assert!(error.contains("--oom-score-adj"), "{error}");
    assert!(error.contains("outside the kernel's range"), "{error}");
    let error = UpdateFlags {
        oom_score_adj: Some(-1001),
        ..UpdateFlags::default()
    }
    .apply(&mut updated.clone())
    .unwrap_err()
    .to_string();
    assert!(error.contains("--oom-score-adj"), "{error}");
}

#[test]
fn endpoint_mode_is_set_and_changed_by_flags() {
    use swarm_api::spec::EndpointMode;
    let spec = CreateFlags {
        endpoint_mode: Some("dnsrr".into()),
        ..create("db", "postgres:16")
    }
    .spec()
    .unwrap();
    assert_eq!(spec.endpoint.mode, EndpointMode::Dnsrr);
    let mut updated = spec.clone();
    UpdateFlags {
        endpoint_mode: Some("vip".into()),
        ..UpdateFlags::default()
    }
    .apply(&mut updated)
    .unwrap();
    assert_eq!(updated.endpoint.mode, EndpointMode::Vip);
    let error = CreateFlags {
        endpoint_mode: Some("round-robin".into()),
        ..create("db", "postgres:16")
    }
    .spec()
    .unwrap_err()
    .to_string();
    assert!(error.contains("--endpoint-mode"), "{error}");
}

#[test]
fn job_modes_take_replicas_as_completions_and_max_concurrent_as_docker_does() {
    let job = |replicas, max_concurrent| {
        CreateFlags {
            mode: "replicated-job".into(),
            replicas,
            max_concurrent,
            ..create("job", "busybox")
        }
        .spec()
        .unwrap()
        .mode
    };
    let mode = |max_concurrent, total_completions| ServiceMode::ReplicatedJob {
        max_concurrent,
        total_completions,
    };
    assert_eq!(job(None, None), mode(1, 1));
    assert_eq!(
        job(Some(5), None),
        mode(5, 5),
        "--max-concurrent defaults to --replicas"
    );
    assert_eq!(job(Some(5), Some(2)), mode(2, 5));
    assert_eq!(
        job(None, Some(3)),
        mode(3, 3),
        "completions default to the concurrency"
    );
    let global = CreateFlags {
        mode: "global-job".into(),
        ..create("job", "busybox")
    }
    .spec()
    .unwrap();
    assert_eq!(global.mode, ServiceMode::GlobalJob);
    assert_eq!(
        global.task.restart.condition,
        swarm_api::spec::RestartCondition::OnFailure,
        "a job is restarted on failure only, by default"
    );
}

#[test]
fn job_flags_docker_refuses_are_refused() {
    let refused: Vec<(CreateFlags, &str)> = vec![
        (
            CreateFlags {
                max_concurrent: Some(2),
                ..create("web", "nginx")
            },
            "--max-concurrent can only be used with replicated-job mode",
        ),
        (
            CreateFlags {
                mode: "replicated-job".into(),
                update_parallelism: Some(2),
                ..create("job", "busybox")
            },
            "update and rollback configuration is not supported for jobs",
        ),
        (
            CreateFlags {
                mode: "global-job".into(),
                rollback: RollbackFlags {
                    parallelism: Some(0),
                    ..RollbackFlags::default()
                },
                ..create("job", "busybox")
            },
            "update and rollback configuration is not supported for jobs",
        ),
        (
            CreateFlags {
                mode: "global-job".into(),
                replicas: Some(2),
                ..create("job", "busybox")
            },
            "--replicas",
        ),
    ];
    for (flags, want) in refused {
        let error = flags.spec().unwrap_err().to_string();
        assert!(error.contains(want), "{flags:?}: {error}");
    }
    let mut job = load_service_document(
        "j",
        json!({"image": "x", "deploy": {"mode": "replicated-job", "replicas": 4}}),
    )
    .unwrap();
    UpdateFlags {
        replicas: Some(6),
        max_concurrent: Some(3),
        ..Default::default()
    }
    .apply(&mut job)
    .unwrap();
    assert_eq!(
        job.mode,
        ServiceMode::ReplicatedJob {
            max_concurrent: 3,
            total_completions: 6
        }
    );
    let refused_updates = [
        (
            UpdateFlags {
                update_parallelism: Some(2),
                ..Default::default()
            },
            FlagError::JobUpdatePolicy,
        ),
        (
            UpdateFlags {
                replicas: Some(2),
                ..Default::default()
            },
            FlagError::ReplicasOfGlobal { mode: "global job" },
        ),
    ];
    for (flags, want) in refused_updates {
        let mut global =
            load_service_document("g", json!({"image": "x", "deploy": {"mode": "global-job"}}))
                .unwrap();
        assert_eq!(flags.apply(&mut global).unwrap_err(), want);
    }
    let mut web = load_service_document("w", json!({"image": "x"})).unwrap();
    let error = UpdateFlags {
        max_concurrent: Some(2),
        ..Default::default()
    }
    .apply(&mut web)
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "--max-concurrent can only be used with replicated-job mode (this service is replicated)"
    );
}
