//! The rules for config and secret contents, in the deterministic apply. Contents are kept
//! by digest beside the objects (`StoreData::file_contents`): a plan brings the contents of
//! the objects it creates or changes, each is checked against its digest and Docker's size
//! limits, and a version stays while an object, a service (or the spec a rollback would go
//! back to) or a task that has not stopped names it. So a stack whose secret file changed
//! keeps the old version for the tasks still running it until the rollout replaced them.

use std::collections::BTreeSet;

use swarm_api::files::{FileContents, MAX_CONFIG_BYTES, MAX_SECRET_BYTES, digest_of};
use swarm_api::plan::{Kind, Op};
use swarm_api::spec::FileReference;
use swarm_api::state::ClusterState;
use swarm_api::store::StoreData;

/// Why the contents a plan brings, or the file objects it creates or changes, are not
/// allowed: a content not matching its digest, a name with a `/`, a content over the
/// kind's limit, a version whose content neither the plan brings nor the store `kept`.
pub(super) fn plan_reasons(
    after: &ClusterState,
    touched: &[(Kind, String, Op)],
    brought: &FileContents,
    kept: &FileContents,
) -> Vec<String> {
    let mut reasons = Vec::new();
    for (digest, content) in brought {
        let actual = digest_of(content.bytes());
        if &actual != digest {
            reasons.push(format!("the content given as {digest} has digest {actual}"));
        }
    }
    for (kind, name, op) in touched {
        if *op == Op::Remove {
            continue;
        }
        let (list, limit) = match kind {
            Kind::Secret => (&after.secrets, MAX_SECRET_BYTES),
            Kind::Config => (&after.configs, MAX_CONFIG_BYTES),
            Kind::Service | Kind::Network => continue,
        };
        let what = kind.as_str();
        if name.contains('/') {
            reasons.push(format!("{what} {name}: a name cannot contain '/'"));
        }
        let Some(object) = super::object_named(list, name) else {
            continue;
        };
        let digest = &object.spec.digest;
        if !brought.contains_key(digest) && !kept.contains_key(digest) {
            reasons.push(format!(
                "{what} {name}: its content ({digest}) was not given: deploy its stack (`swarm stack deploy`, `swarm apply` from the stack files) rather than a saved plan"
            ));
        }
        let size = brought.get(digest).map(|content| content.bytes().len());
        if let Some(size) = size.filter(|size| *size > limit) {
            reasons.push(format!(
                "{what} {name} is {size} bytes: the limit is {} KiB",
                limit / 1024
            ));
        }
    }
    reasons
}

/// The services that name the config or secret `name`, by service name.
pub(super) fn users(objects: &ClusterState, kind: Kind, name: &str) -> Vec<String> {
    objects
        .services
        .iter()
        .filter(|service| {
            let container = &service.spec.task.container;
            let references = match kind {
                Kind::Secret => &container.secrets,
                _ => &container.configs,
            };
            references.iter().any(|r| r.source == name)
        })
        .map(|service| service.spec.name.clone())
        .collect()
}

/// Adds the contents a plan brought and drops every version nothing names any more.
pub(super) fn keep(data: &mut StoreData, brought: FileContents) {
    data.file_contents.extend(brought);
    prune(data);
}

/// Drops the versions no object, service spec (current or previous) or task that has not
/// stopped names. Costs a look at the objects only while every version is an object's.
pub(super) fn prune(data: &mut StoreData) {
    let objects = &data.objects;
    let mut named: BTreeSet<&str> = objects
        .configs
        .iter()
        .chain(&objects.secrets)
        .map(|o| o.spec.digest.as_str())
        .collect();
    if data
        .file_contents
        .keys()
        .all(|digest| named.contains(digest.as_str()))
    {
        return;
    }
    let pinned = |references: &[FileReference]| -> Vec<String> {
        references.iter().filter_map(|r| r.digest.clone()).collect()
    };
    let mut extra = Vec::new();
    let specs = objects
        .services
        .iter()
        .map(|o| &o.spec.task)
        .chain(data.previous_specs.values().map(|s| &s.task))
        .chain(
            data.tasks
                .values()
                .filter(|t| !t.status.state.is_terminal())
                .map(|t| &t.spec),
        );
    for task in specs {
        extra.extend(pinned(&task.container.configs));
        extra.extend(pinned(&task.container.secrets));
    }
    named.extend(extra.iter().map(String::as_str));
    let keep: BTreeSet<String> = named.into_iter().map(str::to_owned).collect();
    data.file_contents.retain(|digest, _| keep.contains(digest));
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use swarm_api::files::FileContent;
    use swarm_api::plan::{Action, ObjectSpec, Plan};
    use swarm_api::spec::FileObjectSpec;
    use swarm_api::state::Origin;
    use swarm_api::store::{Command, Outcome, TaskChange};
    use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};

    use crate::plan::{contents, plan, render};
    use crate::raft::replica::StateMachine;
    use crate::stack::Stack;
    use crate::store::Store;
    use crate::store::fixtures::cluster;

    const STACK: &str = "services:\n  api:\n    image: nginx\n    secrets: [token]\n    configs:\n      - {source: site, target: /etc/site.conf, mode: 0440}\nsecrets:\n  token:\n    file: ./token.txt\nconfigs:\n  site:\n    file: ./site.conf\n";

    fn load(dir: &Path, token: &str) -> Stack {
        std::fs::write(dir.join("vault.yaml"), STACK).unwrap();
        std::fs::write(dir.join("token.txt"), token).unwrap();
        std::fs::write(dir.join("site.conf"), "listen 80;\n").unwrap();
        let path = dir.join("vault.yaml");
        let loaded = crate::stack::load(&crate::source::WorkTree, &path, "vault.yaml", &|_| None);
        loaded.stack.expect("the stack is valid")
    }

    fn deploy(store: &mut Store, index: u64, stack: &Stack) -> (Plan, Outcome) {
        let planned = plan(
            std::slice::from_ref(stack),
            &store.export(),
            &Default::default(),
            Default::default(),
        )
        .unwrap();
        let command = Command::ApplyPlan {
            expected_version: None,
            actions: planned.actions.clone(),
            registry_auth: Default::default(),
            file_contents: contents(&planned, std::slice::from_ref(stack)),
            override_git: false,
        };
        (planned, store.apply_command(index, command))
    }

    fn one_action(kind: Kind, op: Op, name: &str, spec: Option<ObjectSpec>) -> Command {
        Command::ApplyPlan {
            expected_version: None,
            actions: vec![Action {
                op,
                kind,
                name: name.into(),
                origin: Origin::default(),
                changes: Vec::new(),
                spec,
            }],
            registry_auth: Default::default(),
            file_contents: Default::default(),
            override_git: false,
        }
    }

    fn rejection(outcome: Outcome) -> String {
        match outcome {
            Outcome::Rejected(rejection) => rejection.to_string(),
            applied => panic!("applied: {applied:?}"),
        }
    }

    #[test]
    fn contents_are_kept_beside_the_objects_and_never_exported_or_planned() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        store.apply_command(1, cluster());
        let stack = load(dir.path(), "s3cr3t-token-value");
        let (planned, outcome) = deploy(&mut store, 2, &stack);
        assert_eq!(outcome, Outcome::Applied { version: 2 });
        let digest = digest_of(b"s3cr3t-token-value");
        assert_eq!(
            store.data().file_contents[&digest].bytes(),
            b"s3cr3t-token-value"
        );
        // The service pins the version it mounts.
        let service = &store.export().services[0].spec;
        assert_eq!(
            service.task.container.secrets[0].digest.as_deref(),
            Some(digest.as_str())
        );
        // No rendering of the plan, no export and no debug output holds the bytes.
        let shown = [
            render::text(&planned, false),
            render::markdown(&planned),
            serde_json::to_string(&planned).unwrap(),
            serde_json::to_string(&store.export()).unwrap(),
            format!("{:?}", store.data()),
        ];
        for text in shown {
            assert!(!text.contains("s3cr3t-token-value"), "{text}");
        }
        // A snapshot keeps them (base64, not the bytes as they are).
        let snapshot = store.snapshot();
        assert!(!String::from_utf8_lossy(&snapshot).contains("s3cr3t-token-value"));
        let mut replica = Store::default();
        replica.restore(&snapshot);
        assert_eq!(replica.data().file_contents, store.data().file_contents);
    }

    #[test]
    fn bad_contents_names_and_removals_in_use_are_refused_and_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        store.apply_command(1, cluster());
        deploy(&mut store, 2, &load(dir.path(), "one"));
        let before = store.data().clone();

        // A content that is not what its digest says.
        let spec = FileObjectSpec {
            name: "db".into(),
            labels: Default::default(),
            digest: digest_of(b"real"),
        };
        let mut command = one_action(
            Kind::Secret,
            Op::Create,
            "db",
            Some(ObjectSpec::File(spec.clone())),
        );
        // Without its content (a saved plan).
        let reason = rejection(store.apply_command(3, command.clone()));
        assert!(
            reason.contains("secret db: its content (sha256:") && reason.contains("was not given"),
            "{reason}"
        );
        if let Command::ApplyPlan { file_contents, .. } = &mut command {
            file_contents.insert(spec.digest.clone(), FileContent::new(b"forged".to_vec()));
        }
        let reason = rejection(store.apply_command(4, command));
        assert!(reason.contains("has digest"), "{reason}");

        // Over Docker's limit, naming the secret.
        let big = FileContent::new(vec![b'x'; MAX_SECRET_BYTES + 1]);
        let spec = FileObjectSpec {
            digest: big.digest(),
            ..spec
        };
        let mut command = one_action(
            Kind::Secret,
            Op::Create,
            "db",
            Some(ObjectSpec::File(spec.clone())),
        );
        if let Command::ApplyPlan { file_contents, .. } = &mut command {
            file_contents.insert(big.digest(), big);
        }
        let reason = rejection(store.apply_command(5, command));
        assert!(
            reason.contains("secret db is 512001 bytes: the limit is 500 KiB"),
            "{reason}"
        );

        // A name with a slash.
        let spec = FileObjectSpec {
            name: "a/b".into(),
            ..spec
        };
        let reason = rejection(store.apply_command(
            6,
            one_action(
                Kind::Secret,
                Op::Create,
                "a/b",
                Some(ObjectSpec::File(spec)),
            ),
        ));
        assert!(
            reason.contains("secret a/b: a name cannot contain '/'"),
            "{reason}"
        );

        // Removing what a service uses names the service.
        let reason = rejection(
            store.apply_command(7, one_action(Kind::Secret, Op::Remove, "vault_token", None)),
        );
        assert!(
            reason.contains("secret vault_token is in use by service vault_api"),
            "{reason}"
        );
        let reason = rejection(
            store.apply_command(8, one_action(Kind::Config, Op::Remove, "vault_site", None)),
        );
        assert!(
            reason.contains("config vault_site is in use by service vault_api"),
            "{reason}"
        );
        let mut after = store.data().clone();
        after.version = before.version;
        assert_eq!(after, before);
    }

    fn task(id: &str, spec: &swarm_api::spec::ServiceSpec) -> TaskChange {
        TaskChange::Create(Box::new(Task {
            id: id.into(),
            service_id: "s".into(),
            service_name: spec.name.clone(),
            slot: Some(1),
            node_id: None,
            spec: spec.task.clone(),
            desired: DesiredState::Running,
            status: TaskStatus {
                state: TaskState::New,
                since: 1,
                message: String::new(),
                error: None,
                exit_code: None,
                address: None,
            },
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }))
    }

    /// A changed secret file is a new version: the plan updates the secret and the service
    /// (whose reference pins the new digest), and the old version stays while a task of
    /// the old spec has not stopped.
    #[test]
    fn a_changed_content_is_a_new_version_kept_until_no_task_uses_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::default();
        store.apply_command(1, cluster());
        deploy(&mut store, 2, &load(dir.path(), "one"));
        let old_spec = store.export().services[0].spec.clone();
        store.apply_command(
            3,
            Command::WriteTasks {
                expected_version: 0,
                changes: vec![task("t1", &old_spec)],
            },
        );
        let (planned, outcome) = deploy(&mut store, 4, &load(dir.path(), "two"));
        assert_eq!(outcome, Outcome::Applied { version: 4 });
        let summary: Vec<(Op, Kind, &str)> = planned
            .actions
            .iter()
            .map(|a| (a.op, a.kind, a.name.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Op::Update, Kind::Secret, "vault_token"),
                (Op::Update, Kind::Service, "vault_api"),
            ]
        );
        let paths: Vec<&str> = planned.actions[1]
            .changes
            .iter()
            .map(|c| c.path.as_str())
            .collect();
        assert_eq!(paths, vec!["task.container.secrets"]);
        let (old, new) = (digest_of(b"one"), digest_of(b"two"));
        let kept =
            |store: &Store| -> Vec<String> { store.data().file_contents.keys().cloned().collect() };
        // The spec a rollback goes back to and the old task keep the old version.
        assert!(kept(&store).contains(&old) && kept(&store).contains(&new));
        // Once the service's previous spec is the new one and the old task stopped, the old
        // version goes.
        deploy(&mut store, 5, &load(dir.path(), "three"));
        assert!(kept(&store).contains(&old), "the old task has not stopped");
        let mut stopped = store.data().tasks["t1"].status.clone();
        stopped.state = TaskState::Shutdown;
        store.apply_command(
            6,
            Command::WriteTasks {
                expected_version: store.data().tasks_version,
                changes: vec![TaskChange::Status {
                    id: "t1".into(),
                    status: stopped,
                }],
            },
        );
        assert!(!kept(&store).contains(&old), "{:?}", kept(&store));
        assert!(
            kept(&store).contains(&new),
            "the previous spec's version stays"
        );
        assert!(kept(&store).contains(&digest_of(b"three")));
    }
}
