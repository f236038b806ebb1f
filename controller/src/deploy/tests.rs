//! The workflow over in-memory revisions: what each verdict carries, as data.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use swarm_api::plan::{Kind, Op};
use swarm_api::state::ClusterState;

use super::*;
use crate::source::SourceTree;

/// Files at a pretend commit (or a working tree when `commit` is `None`).
struct Revision {
    name: &'static str,
    commit: Option<&'static str>,
    files: BTreeMap<PathBuf, &'static str>,
}

fn at(
    name: &'static str,
    commit: Option<&'static str>,
    files: &[(&str, &'static str)],
) -> Revision {
    Revision {
        name,
        commit,
        files: files.iter().map(|(p, t)| (PathBuf::from(p), *t)).collect(),
    }
}

impl SourceTree for Revision {
    fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.get(path).map(|text| text.as_bytes().to_vec()))
    }

    fn list(&self, dir: &Path) -> io::Result<Option<Vec<String>>> {
        let mut names: Vec<String> = self
            .files
            .keys()
            .filter_map(|p| {
                let inside = p.strip_prefix(dir).ok()?;
                let mut parts = inside.components();
                let first = parts.next()?.as_os_str().to_string_lossy().into_owned();
                Some(if parts.next().is_some() {
                    format!("{first}/")
                } else {
                    first
                })
            })
            .collect();
        names.sort();
        names.dedup();
        Ok((!names.is_empty()).then_some(names))
    }
}

impl StackSource for Revision {
    fn commit(&self) -> Option<String> {
        self.commit.map(str::to_owned)
    }

    fn display(&self, path: &Path) -> String {
        format!("{}:{}", self.name, path.display())
    }

    fn source_name(&self, path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }

    fn revision(&self) -> Option<&str> {
        Some(self.name)
    }
}

const WEB: &str = "services:\n  site:\n    image: nginx:1\n    deploy:\n      replicas: 2\n";
const WEB_SCALED: &str = "services:\n  site:\n    image: nginx:1\n    deploy:\n      replicas: 3\n";
const API: &str = "services:\n  app:\n    image: api:1\n";
const BAD: &str =
    "services:\n  site:\n    image: nginx\n    deploy:\n      replicas: -1\n      modee: global\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

fn planned(outcome: &Outcome) -> &swarm_api::plan::Plan {
    match &outcome.verdict {
        Verdict::Planned(plan) => plan,
        other => panic!("not planned: {other:?}"),
    }
}

fn summary(plan: &swarm_api::plan::Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| format!("{:?} {:?} {}", a.op, a.kind, a.name))
        .collect()
}

#[test]
fn a_commit_is_planned_against_its_parent_with_its_basis() {
    let base = at("HEAD~1", Some("aaa"), &[("stacks/web.yaml", WEB)]);
    let head = at(
        "HEAD",
        Some("bbb"),
        &[("stacks/web.yaml", WEB_SCALED), ("stacks/api.yaml", API)],
    );
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::Source(&base), &no_env).unwrap();
    let plan = planned(&outcome);
    assert_eq!(plan.basis.base_commit.as_deref(), Some("aaa"));
    assert_eq!(plan.basis.head_commit.as_deref(), Some("bbb"));
    assert_eq!(plan.basis.state_version, None);
    assert_eq!(
        summary(plan),
        [
            "Create Network api_default",
            "Create Service api_app",
            "Scale Service web_site"
        ]
    );
    assert_eq!(
        plan.actions[1].origin.source.as_deref(),
        Some("stacks/api.yaml")
    );
    assert_eq!(outcome.current.unwrap().files.len(), 1);
    assert_eq!(outcome.desired.files.len(), 2);
}

#[test]
fn a_deleted_stack_is_removed_and_a_missing_path_is_data() {
    let base = at("HEAD~1", Some("aaa"), &[("stacks/web.yaml", WEB)]);
    let head = at("HEAD", Some("bbb"), &[("other.yaml", API)]);
    let outcome = plan_paths(
        &paths(&["stacks/web.yaml"]),
        &head,
        Current::Source(&base),
        &no_env,
    )
    .unwrap();
    let plan = planned(&outcome);
    assert!(plan.actions.iter().all(|a| a.op == Op::Remove), "{plan:?}");
    assert_eq!(
        summary(plan),
        ["Remove Service web_site", "Remove Network web_default"]
    );

    let outcome = plan_paths(&paths(&["nope.yaml"]), &head, Current::Empty, &no_env).unwrap();
    match outcome.verdict {
        Verdict::Missing(missing) => assert_eq!(missing, paths(&["nope.yaml"])),
        other => panic!("{other:?}"),
    }
}

#[test]
fn findings_are_data_with_positions_and_nothing_is_planned() {
    let head = at("HEAD", Some("bbb"), &[("stacks/web.yaml", BAD)]);
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::Empty, &no_env).unwrap();
    assert!(
        matches!(outcome.verdict, Verdict::Invalid(1)),
        "{:?}",
        outcome.verdict
    );
    let lines: Vec<String> = outcome.desired.files[0]
        .findings
        .iter()
        .map(|d| d.to_string().lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            "HEAD:stacks/web.yaml:5:17: error: services.site.deploy.replicas: -1 is less than the minimum 0",
            "HEAD:stacks/web.yaml:6:7: error: services.site.deploy: unknown key `modee` in `services.site.deploy`",
        ]
    );
    assert!(outcome.desired.stacks.is_empty());
}

#[test]
fn an_invalid_current_file_counts_as_absent() {
    let base = at("HEAD~1", Some("aaa"), &[("stacks/web.yaml", BAD)]);
    let head = at("HEAD", None, &[("stacks/web.yaml", WEB)]);
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::Source(&base), &no_env).unwrap();
    assert_eq!(outcome.current.as_ref().unwrap().invalid(), 1);
    let plan = planned(&outcome);
    assert_eq!(
        summary(plan),
        ["Create Network web_default", "Create Service web_site"]
    );
    assert_eq!(plan.basis.head_commit, None, "a working tree has no commit");
}

#[test]
fn a_state_is_the_current_side_and_two_files_of_one_stack_conflict() {
    let head = at("HEAD", None, &[("stacks/web.yaml", WEB)]);
    let mut state = ClusterState::empty();
    state.version = 7;
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::State(state), &no_env).unwrap();
    assert_eq!(planned(&outcome).basis.state_version, Some(7));

    let twice = at("HEAD", None, &[("a/web.yaml", WEB), ("b/web.yaml", WEB)]);
    let outcome = plan_paths(&paths(&["a", "b"]), &twice, Current::Empty, &no_env).unwrap();
    assert!(
        matches!(
            outcome.verdict,
            Verdict::Conflict(PlanError::DuplicateStack { .. })
        ),
        "{:?}",
        outcome.verdict
    );
}

#[test]
fn a_named_stack_deploys_and_prunes_only_when_asked() {
    let tree = at("work", None, &[("web.yaml", WEB), ("prod.yaml", API)]);
    let loaded = load_stack(&tree, &paths(&["web.yaml", "prod.yaml"]), "shop", &no_env);
    let stack = loaded.stack.expect("valid");
    assert_eq!(stack.name, "shop");
    assert_eq!(stack.source, "work:web.yaml + work:prod.yaml");
    let names: Vec<&str> = stack.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["shop_app", "shop_site"]);

    let mut current = crate::stack::as_state(std::slice::from_ref(&stack));
    current.version = 9;
    let only_site = load_stack(&tree, &paths(&["web.yaml"]), "shop", &no_env)
        .stack
        .unwrap();
    let kept = plan_stack(&only_site, &current, false).unwrap();
    assert!(!kept.has_changes(), "{kept:?}");
    assert_eq!(kept.basis.state_version, Some(9));
    let pruned = plan_stack(&only_site, &current, true).unwrap();
    assert_eq!(summary(&pruned), ["Remove Service shop_app"]);
}

#[test]
fn removing_stacks_removes_all_they_own_or_names_the_unknown_one() {
    let tree = at("work", None, &[("web.yaml", WEB)]);
    let stack = load_stack(&tree, &paths(&["web.yaml"]), "shop", &no_env)
        .stack
        .unwrap();
    let current = crate::stack::as_state(&[stack]);
    let plan = plan_removal(&["shop".to_owned()], &current).unwrap();
    assert!(plan.actions.iter().all(|a| a.op == Op::Remove));
    assert!(plan.actions.iter().any(|a| a.kind == Kind::Network));
    let error = plan_removal(&["shop".to_owned(), "gone".to_owned()], &current).unwrap_err();
    assert_eq!(
        error.to_string(),
        "nothing found in stack gone: `swarm stack ls` lists the stacks"
    );
}

/// One folder per stack: each folder's Compose file is a stack named after the folder, found
/// beside plain stack files; a deleted folder's stack is removed.
#[test]
fn a_folder_per_stack_names_each_stack_after_its_folder() {
    let base = at(
        "HEAD~1",
        Some("aaa"),
        &[
            ("stacks/web/docker-compose.yml", WEB),
            ("stacks/old/compose.yaml", API),
        ],
    );
    let head = at(
        "HEAD",
        Some("bbb"),
        &[
            ("stacks/web/docker-compose.yml", WEB_SCALED),
            ("stacks/web/prometheus.yml", "not: a stack\n"),
            ("stacks/db/compose.yaml", API),
            (
                "stacks/db/docker-compose.yml",
                "ignored: compose.yaml comes first\n",
            ),
            ("stacks/api.yaml", API),
            ("stacks/notes/readme.yaml", "not: a stack\n"),
        ],
    );
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::Source(&base), &no_env).unwrap();
    let files: Vec<String> = outcome
        .desired
        .files
        .iter()
        .map(|f| f.path.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        [
            "stacks/api.yaml",
            "stacks/db/compose.yaml",
            "stacks/web/docker-compose.yml"
        ]
    );
    assert_eq!(
        summary(planned(&outcome)),
        [
            "Create Network api_default",
            "Create Network db_default",
            "Create Service api_app",
            "Create Service db_app",
            "Scale Service web_site",
            "Remove Service old_app",
            "Remove Network old_default",
        ]
    );
}

/// An external object a service uses must exist in a cluster's state (or be made by a
/// planned stack); without a cluster to ask, it is not checked.
#[test]
fn an_external_object_missing_from_the_state_is_an_error() {
    const USES: &str = "services:\n  site:\n    image: nginx:1\n    networks: [proxy]\n    secrets: [token]\nnetworks:\n  proxy:\n    external: true\n    name: traefik-public\nsecrets:\n  token:\n    external: true\n";
    let head = at("HEAD", None, &[("stacks/web.yaml", USES)]);
    let plan_against = |state: ClusterState| {
        plan_paths(&paths(&["stacks"]), &head, Current::State(state), &no_env)
            .unwrap()
            .verdict
    };
    match plan_against(ClusterState::empty()) {
        Verdict::Conflict(error @ PlanError::MissingExternal { .. }) => assert_eq!(
            error.to_string(),
            "network `traefik-public` is declared `external: true` by stacks/web.yaml but does not exist in the cluster: create it first, or declare it in the stack without `external`"
        ),
        other => panic!("{other:?}"),
    }
    let provider = at(
        "HEAD",
        None,
        &[(
            "infra/proxy.yaml",
            "services:\n  proxy:\n    image: traefik:3\n    networks: [public]\nnetworks:\n  public:\n    name: traefik-public\nsecrets:\n  token:\n    file: proxy.yaml\n    name: token\n",
        )],
    );
    let mut state = crate::stack::as_state(
        &read_side(&provider, &paths(&["infra"]), &no_env)
            .unwrap()
            .stacks,
    );
    state.version = 7;
    assert!(matches!(plan_against(state), Verdict::Planned(_)));
    let outcome = plan_paths(&paths(&["stacks"]), &head, Current::Empty, &no_env).unwrap();
    planned(&outcome);
}

/// A directory with no stack file on either side is reported; one whose files were deleted
/// is a removal, not an empty directory.
#[test]
fn an_empty_directory_is_reported_unless_it_held_stacks() {
    let head = at("HEAD", Some("bbb"), &[("other/readme.txt", "hello")]);
    let outcome = plan_paths(&paths(&["other"]), &head, Current::Empty, &no_env).unwrap();
    assert_eq!(outcome.empty, paths(&["other"]));
    let base = at("HEAD~1", Some("aaa"), &[("other/web.yaml", WEB)]);
    let outcome = plan_paths(&paths(&["other"]), &head, Current::Source(&base), &no_env).unwrap();
    assert!(outcome.empty.is_empty());
    assert_eq!(
        summary(planned(&outcome)),
        ["Remove Service web_site", "Remove Network web_default"]
    );
}
