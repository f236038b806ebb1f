//! Plans as the commands that make, show and apply them share them (`plan`, `apply`, `stack
//! deploy|rm`): the findings and verdict of a planning run, the plan rendered, saved to a
//! file and read back, and the daemon's side — the cluster's state to plan against, the
//! plan sent as one `ApplyPlan`, and the wait for the services it changed.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;
use swarm_api::auth::RegistryAuth;
use swarm_api::grpc::control::{ApplyPlanRequest, ExportStateRequest};
use swarm_api::plan::{Kind, ObjectSpec, Op, PLAN_FORMAT, Plan};
use swarm_api::state::ClusterState;
use swarm_controller::deploy::{Outcome, Side, StackSource, Verdict};
use swarm_controller::plan::render;

use crate::client::{self, Host};
use crate::converge::{Change, Wait};
use crate::output::print_diagnostics;

/// Exit status when the plan has changes, or `apply` applied some (like `terraform plan
/// -detailed-exitcode`); 0 means nothing to do, 1 an error.
pub const EXIT_CHANGES: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

/// The paths to plan: those given, else `stacks/` if it exists, else `.`.
pub fn paths_or_default(paths: &[PathBuf]) -> Vec<PathBuf> {
    if !paths.is_empty() {
        return paths.to_vec();
    }
    let stacks = PathBuf::from("stacks");
    if stacks.is_dir() {
        vec![stacks]
    } else {
        vec![PathBuf::from(".")]
    }
}

/// The plan of a planning run, once its findings are printed; or why there is none.
/// `base` is the revision the current side was read at, for its warning; `explicit` says
/// the paths were given (a directory given with nothing to plan in it is then an error).
pub fn planned(
    outcome: Outcome,
    desired: &dyn StackSource,
    base: Option<&str>,
    explicit: bool,
) -> anyhow::Result<Plan> {
    if let Some(dir) = outcome.empty.first() {
        let what = format!(
            "{}: no stack files here (*.yml or *.yaml files, or a folder's compose.yaml or docker-compose.yml)",
            dir.display()
        );
        if explicit {
            bail!(what);
        }
        eprintln!("note: {what}");
    }
    if let Some(current) = &outcome.current {
        print_findings(current);
        if current.invalid() > 0 {
            let rev = base.unwrap_or_default();
            eprintln!(
                "warning: {} stack file(s) at {rev} are invalid and were never applied; they count as absent on the current side",
                current.invalid()
            );
        }
    }
    match outcome.verdict {
        Verdict::Missing(missing) => {
            let place = desired
                .revision()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default();
            bail!("{}: no such file or directory{place}", missing[0].display());
        }
        Verdict::Invalid(errors) => {
            print_findings(&outcome.desired);
            bail!("{errors} stack file(s) are invalid; nothing was planned");
        }
        Verdict::Conflict(conflict) => {
            print_findings(&outcome.desired);
            Err(conflict.into())
        }
        Verdict::Planned(plan) => {
            print_findings(&outcome.desired);
            Ok(plan)
        }
    }
}

/// Each file's findings, as it was loaded.
fn print_findings(side: &Side) {
    for file in &side.files {
        print_diagnostics(&file.findings);
    }
}

/// Whether text output is coloured.
pub fn use_color(choice: Color) -> bool {
    match choice {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stdout().is_terminal()
        }
    }
}

pub fn print_plan(plan: &Plan, format: Format, color: bool) -> anyhow::Result<()> {
    let text = match format {
        Format::Text => render::text(plan, color),
        Format::Markdown => render::markdown(plan),
        Format::Json => serde_json::to_string_pretty(plan)? + "\n",
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Saves `plan`, with its basis, for a later `swarm apply --plan FILE`.
pub fn save(plan: &Plan, file: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(plan)? + "\n";
    std::fs::write(file, json)
        .with_context(|| format!("cannot write the plan to {}", file.display()))
}

/// A plan saved by `swarm plan --cluster --out FILE`, ready to apply: one made offline has
/// no state version to check the cluster against, and is refused.
pub fn read_saved(file: &Path) -> anyhow::Result<Plan> {
    let plan: Plan = read_versioned(
        file,
        "plan",
        ("plan", PLAN_FORMAT),
        "save one with `swarm plan --cluster --out FILE`",
    )?;
    if plan.basis.state_version.is_none() {
        bail!(
            "{}: this plan was not made against a cluster (no state version), so nothing tells whether the cluster changed since; make it with `swarm plan --cluster --out FILE`",
            file.display()
        );
    }
    Ok(plan)
}

/// A swarm file (`what`: a plan, a state export) of the format `name` `format`: the format
/// is checked before the shape, so a file from a newer swarm says so. `how` says how to
/// make one.
pub fn read_versioned<T: serde::de::DeserializeOwned>(
    file: &Path,
    what: &str,
    (name, format): (&str, u32),
    how: &str,
) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the {what} {}", file.display()))?;
    #[derive(serde::Deserialize)]
    struct Header {
        format: Option<u64>,
    }
    let header: Header = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", file.display()))?;
    match header.format {
        Some(found) if found == u64::from(format) => {}
        Some(found) => bail!(
            "{}: {name} format {found} is not supported by this swarm (it reads format {format})",
            file.display()
        ),
        None => bail!(
            "{}: not a swarm {what} (no `format` field); {how}",
            file.display()
        ),
    }
    serde_json::from_str(&text).with_context(|| format!("{}: invalid {what}", file.display()))
}

/// The cluster's objects and their version, as `swarm state export` gives them (a
/// linearizable read on the manager).
pub async fn cluster_state(host: &Host) -> anyhow::Result<ClusterState> {
    let mut client = client::connect(host).await?;
    let json = client
        .export_state(ExportStateRequest {})
        .await
        .map_err(client::explain)?
        .into_inner()
        .json;
    serde_json::from_str(&json).context("the daemon's answer is not a state export")
}

/// How a plan is sent.
#[derive(Debug, Default)]
pub struct Sending {
    /// Registry credentials by service name (`--with-registry-auth`); none keeps theirs.
    pub registry_auth: BTreeMap<String, RegistryAuth>,
    /// Change stacks a git repository owns too (`swarm apply --force`).
    pub force: bool,
    /// The contents of the configs and secrets the plan creates or changes, by digest.
    pub file_contents: swarm_api::files::FileContents,
}

/// Sends `plan` to the control API's `ApplyPlan`: applied as one entry, or refused whole.
pub async fn apply(host: &Host, plan: &Plan, sending: Sending) -> anyhow::Result<()> {
    let registry_auth_json = if sending.registry_auth.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&sending.registry_auth)?
    };
    let mut client = client::connect(host).await?;
    client
        .apply_plan(ApplyPlanRequest {
            plan_json: serde_json::to_string(plan)?,
            registry_auth_json,
            force: sending.force,
            file_contents: sending
                .file_contents
                .into_iter()
                .map(|(digest, content)| (digest, content.into_bytes()))
                .collect(),
        })
        .await
        .map_err(client::explain)?;
    Ok(())
}

/// The credentials of Docker's client config for each `(service, image)`.
pub fn registry_auth<'a>(
    services: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> anyhow::Result<BTreeMap<String, RegistryAuth>> {
    let mut auth = BTreeMap::new();
    for (service, image) in services {
        auth.insert(service.to_owned(), crate::registry_auth::for_image(image)?);
    }
    Ok(auth)
}

/// The services `plan` creates, updates or scales, with their images: what runs new tasks
/// once it is applied.
pub fn changed_services(plan: &Plan) -> Vec<(&str, &str)> {
    plan.actions
        .iter()
        .filter(|a| a.kind == Kind::Service && a.op != Op::Remove)
        .filter_map(|a| match &a.spec {
            Some(ObjectSpec::Service(spec)) => {
                Some((a.name.as_str(), spec.task.container.image.as_str()))
            }
            _ => None,
        })
        .collect()
}

/// Waits for each of `services` to converge after a plan changed them, one after the other.
pub async fn wait_for<'a>(
    host: &Host,
    wait: &Wait,
    services: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<()> {
    for service in services {
        wait.for_service(host, service, Change::Update).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use swarm_api::plan::Basis;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The services a plan runs new tasks for: created, updated or scaled ones, not removed
    /// ones, nor other kinds.
    #[test]
    fn changed_services_are_those_with_a_new_spec() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            swarm_controller::stack::load(&swarm_controller::source::WorkTree, &path, name, &|_| {
                None
            })
            .stack
            .unwrap()
        };
        let before = write(
            "app.yaml",
            "services:\n  a:\n    image: a:1\n  b:\n    image: b:1\n  gone:\n    image: g:1\n",
        );
        let basis = Basis {
            state_version: Some(0),
            ..Basis::default()
        };
        let plan_over = |stack, state: &ClusterState| {
            let scope = Default::default();
            swarm_controller::plan::plan(&[stack], state, &scope, basis.clone()).unwrap()
        };
        let created = plan_over(before, &ClusterState::empty());
        assert_eq!(
            changed_services(&created),
            [("app_a", "a:1"), ("app_b", "b:1"), ("app_gone", "g:1")]
        );
        let mut state = ClusterState::empty();
        for action in created.actions {
            match action.spec {
                Some(ObjectSpec::Service(spec)) => state.services.push(swarm_api::state::Object {
                    id: Some(action.name.clone()),
                    origin: action.origin,
                    spec: *spec,
                }),
                Some(ObjectSpec::Network(spec)) => state.networks.push(swarm_api::state::Object {
                    id: Some(action.name.clone()),
                    origin: action.origin,
                    spec,
                }),
                _ => {}
            }
        }
        let after = write(
            "app.yaml",
            "services:\n  a:\n    image: a:2\n  b:\n    image: b:1\n    deploy:\n      replicas: 3\n  c:\n    image: c:1\n",
        );
        let changed = plan_over(after, &state);
        assert!(
            changed
                .actions
                .iter()
                .any(|a| a.op == Op::Remove && a.name == "app_gone"),
            "{changed:?}"
        );
        assert_eq!(
            changed_services(&changed),
            [("app_a", "a:2"), ("app_b", "b:1"), ("app_c", "c:1")]
        );
    }

    #[test]
    fn a_saved_plan_is_read_back_only_with_a_state_version() {
        let dir = tempfile::tempdir().unwrap();
        let mut plan = Plan {
            format: PLAN_FORMAT,
            basis: Basis {
                state_version: Some(12),
                ..Basis::default()
            },
            actions: Vec::new(),
        };
        let file = dir.path().join("plan.json");
        save(&plan, &file).unwrap();
        assert_eq!(read_saved(&file).unwrap(), plan);

        plan.basis.state_version = None;
        save(&plan, &file).unwrap();
        let error = read_saved(&file).unwrap_err().to_string();
        assert!(error.contains("not made against a cluster"), "{error}");

        let cases = [
            ("{\"format\": 7}", "plan format 7 is not supported"),
            ("{}", "not a swarm plan"),
            ("[", "not valid JSON"),
            ("{\"format\": 1, \"actions\": []}", "invalid plan"),
        ];
        for (text, expected) in cases {
            let file = write(dir.path(), "bad.json", text);
            let error = format!("{:#}", read_saved(&file).unwrap_err());
            assert!(error.contains(expected), "{text}: {error}");
        }
        let error = read_saved(&dir.path().join("absent.json")).unwrap_err();
        assert!(
            error.to_string().contains("cannot read the plan"),
            "{error}"
        );
    }
}
