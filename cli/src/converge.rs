//! Waiting for a service to converge after `service create|update|scale|rollback` and
//! `stack deploy`: every task it should run runs its current spec and its update (if one
//! began) completed. An update that pauses or rolls back ends the wait at once, with the
//! update status's reason; so does the timeout, with what is still missing.

use anyhow::Context as _;
pub use swarm_api::converge::{Change, ConvergeError, Progress, progress};
use swarm_api::grpc::control::WatchServiceRequest;
use swarm_api::task::{ServicesView, TaskState};
use swarm_api::units::GoDuration;

use crate::client::Host;

/// How long the commands wait by default (`--timeout`), as Docker's CLI does.
const DEFAULT_TIMEOUT: &str = "2m";

/// How long a converged view must hold. The wait sees every change, and a task that exits at
/// once is reported running first, its failure a report later (40–100+ ms on a loaded
/// machine): as long as the poll this wait replaced, so a failing task is caught at least as
/// surely as it was. (Docker's CLI verifies that the tasks stay up for 5 s.)
const STABLE: std::time::Duration = std::time::Duration::from_millis(200);

/// How the commands that change services (`create`, `update`, `scale`, `rollback`, `stack
/// deploy`) wait for them: `-d` not at all, otherwise at most `--timeout` each.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Wait {
    /// Return at once instead of waiting for the tasks to run
    #[arg(long, short)]
    detach: bool,
    /// Wait without showing the progress (a failure is still said)
    #[arg(long, short)]
    quiet: bool,
    /// How long to wait for a service's tasks to run and its update to complete
    #[arg(long, default_value = DEFAULT_TIMEOUT)]
    timeout: GoDuration,
}

impl Wait {
    /// Waits for service `name` to converge after `change`, unless detached.
    pub async fn for_service(&self, host: &Host, name: &str, change: Change) -> anyhow::Result<()> {
        if self.detach {
            return Ok(());
        }
        converge(host, name, change, self.timeout, self.quiet).await
    }
}

/// Waits for service `name` to converge, showing the progress and each task error once. It
/// follows the manager's stream of the service's view (sent again on each change of the
/// service or its tasks), so it sees a change as soon as the manager applies it; converged
/// once a converged view held for `STABLE`. `quiet`: nothing shown but the outcome's error.
async fn converge(
    host: &Host,
    name: &str,
    change: Change,
    timeout: GoDuration,
    quiet: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout.0;
    let mut shown_progress = None;
    let mut shown_errors = std::collections::HashSet::new();
    let mut last_error = None;
    let mut views = crate::client::connect(host)
        .await?
        .watch_service(WatchServiceRequest {
            service: name.to_owned(),
        })
        .await
        .map_err(crate::client::explain)?
        .into_inner();
    let mut next = async || -> anyhow::Result<ServicesView> {
        let message = views
            .message()
            .await
            .map_err(crate::client::explain)?
            .ok_or_else(|| anyhow::anyhow!("the manager stopped following service {name}"))?;
        serde_json::from_str(&message.json).context("the daemon's answer is not a services view")
    };
    let mut view = next().await?;
    loop {
        let service = view.service(name)?;
        let id = service.id.as_deref().unwrap_or_default();
        for task in view.tasks.iter().filter(|t| t.service_id == id) {
            let problem = match (&task.status.error, task.status.state) {
                (Some(error), _) => Some(error.clone()),
                (None, TaskState::Pending) => Some(format!("pending: {}", task.status.message)),
                _ => None,
            };
            if let Some(problem) = problem
                && shown_errors.insert((task.id.clone(), problem.clone()))
            {
                if !quiet {
                    eprintln!("{}: {problem}", task.name());
                }
                last_error = Some(problem);
            }
        }
        let missing = match progress(&view, service, change)? {
            Progress::Converged => match tokio::time::timeout(STABLE, next()).await {
                Err(_) => {
                    if !quiet {
                        eprintln!("{name}: converged");
                    }
                    return Ok(());
                }
                Ok(changed) => {
                    view = changed?;
                    continue;
                }
            },
            Progress::Waiting {
                running,
                wanted,
                counted,
                missing,
            } => {
                if !quiet && shown_progress != Some((running, wanted)) {
                    eprintln!("{name}: {running}/{wanted} {counted}");
                    shown_progress = Some((running, wanted));
                }
                missing
            }
        };
        match tokio::time::timeout_at(deadline, next()).await {
            Ok(changed) => view = changed?,
            Err(_) => {
                return Err(ConvergeError::Timeout {
                    service: name.to_owned(),
                    timeout,
                    missing,
                    last_error,
                }
                .into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::rollout::{UpdateState, UpdateStatus};
    use swarm_api::state::Object;
    use swarm_api::task::{DesiredState, Task, TaskStatus};

    use super::*;

    /// A two-replica service, with tasks of image `image` in `state`.
    fn view(tasks: &[(&str, TaskState)], status: Option<UpdateState>) -> ServicesView {
        let spec = swarm_controller::deploy::flags::load_service_document(
            "s_web",
            serde_json::json!({ "image": "new", "deploy": { "replicas": 2 } }),
        )
        .unwrap();
        let tasks = tasks
            .iter()
            .enumerate()
            .map(|(i, (image, state))| {
                let mut task_spec = spec.task.clone();
                task_spec.container.image = (*image).to_owned();
                Task {
                    id: format!("t{i}"),
                    service_id: "s1".into(),
                    service_name: "web".into(),
                    slot: Some(i as u64 + 1),
                    node_id: Some("n1".into()),
                    spec: task_spec,
                    desired: DesiredState::Running,
                    status: TaskStatus::new(*state, 0),
                    created_at: 0,
                    started_at: None,
                    networks: Vec::new(),
                }
            })
            .collect();
        ServicesView {
            version: 1,
            services: vec![Object {
                id: Some("s1".into()),
                origin: Default::default(),
                spec,
            }],
            tasks,
            nodes: Default::default(),
            update_status: status
                .map(|state| {
                    let status = UpdateStatus {
                        state,
                        started_at: 0,
                        completed_at: None,
                        message: "because".into(),
                    };
                    ("s1".to_owned(), status)
                })
                .into_iter()
                .collect(),
            virtual_ips: Default::default(),
            assigned_ports: Default::default(),
        }
    }

    /// Tasks (image, state), the update state, what the command changed, and converged or
    /// the error's start.
    type Case<'a> = (
        &'a [(&'a str, TaskState)],
        Option<UpdateState>,
        Change,
        Result<bool, &'a str>,
    );

    #[test]
    fn progress_waits_for_the_spec_and_the_update_and_stops_at_a_pause_or_rollback() {
        use TaskState::{Preparing, Running};
        let running = [("new", Running), ("new", Running)];
        let cases: [Case; 13] = [
            (&running, None, Change::Update, Ok(true)),
            (
                &running,
                Some(UpdateState::Completed),
                Change::Update,
                Ok(true),
            ),
            // Every task runs, but the update still watches them.
            (
                &running,
                Some(UpdateState::Updating),
                Change::Update,
                Ok(false),
            ),
            (
                &[("new", Running), ("old", Running)],
                Some(UpdateState::Updating),
                Change::Update,
                Ok(false),
            ),
            (
                &[("new", Running), ("new", Preparing)],
                None,
                Change::Update,
                Ok(false),
            ),
            (
                &running,
                Some(UpdateState::Paused),
                Change::Update,
                Err("s_web: update paused: because"),
            ),
            (
                &running,
                Some(UpdateState::RollbackStarted),
                Change::Update,
                Err("s_web: rollback: because"),
            ),
            (
                &running,
                Some(UpdateState::RollbackCompleted),
                Change::Update,
                Err("s_web: rollback: because"),
            ),
            (
                &running,
                Some(UpdateState::RollbackPaused),
                Change::Update,
                Err("s_web: rollback paused: because"),
            ),
            // `service rollback`: the rollback states are its progress.
            (
                &running,
                Some(UpdateState::RollbackStarted),
                Change::Rollback,
                Ok(false),
            ),
            (
                &running,
                Some(UpdateState::RollbackCompleted),
                Change::Rollback,
                Ok(true),
            ),
            (
                &running,
                Some(UpdateState::RollbackPaused),
                Change::Rollback,
                Err("s_web: rollback paused: because"),
            ),
            (
                &running,
                Some(UpdateState::Paused),
                Change::Rollback,
                Err("s_web: update paused: because"),
            ),
        ];
        for (tasks, status, change, expected) in cases {
            let view = view(tasks, status);
            let outcome = progress(&view, &view.services[0], change);
            match (outcome, expected) {
                (Ok(progress), Ok(converged)) => {
                    assert_eq!(
                        progress == Progress::Converged,
                        converged,
                        "{tasks:?} {status:?}"
                    )
                }
                (Err(error), Err(message)) => {
                    assert!(error.to_string().starts_with(message), "{error}")
                }
                (outcome, expected) => {
                    panic!("{tasks:?} {status:?}: {outcome:?}, not {expected:?}")
                }
            }
        }
    }

    /// A job of `deploy` section `mode` with tasks (job iteration, state).
    fn job_view(mode: serde_json::Value, states: &[(u64, TaskState)]) -> ServicesView {
        let spec = swarm_controller::deploy::flags::load_service_document(
            "s_job",
            serde_json::json!({ "image": "busybox", "deploy": mode }),
        )
        .unwrap();
        let mut view = view(&[], None);
        view.tasks = states
            .iter()
            .enumerate()
            .map(|(i, (iteration, state))| {
                let mut task_spec = spec.task.clone();
                task_spec.job_iteration = *iteration;
                let mut status = TaskStatus::new(*state, 0);
                status.error = (*state == TaskState::Failed).then(|| "exit code 3".into());
                Task {
                    id: format!("t{i}"),
                    service_id: "s1".into(),
                    service_name: "s_job".into(),
                    slot: Some(i as u64 + 1),
                    node_id: Some("n1".into()),
                    spec: task_spec,
                    desired: DesiredState::Running,
                    status,
                    created_at: 0,
                    started_at: None,
                    networks: Vec::new(),
                }
            })
            .collect();
        view.services[0].spec = spec;
        view
    }

    /// The job's `deploy`, its tasks (iteration, state), and what is missing ("" when
    /// converged) or the error.
    type JobCase<'a> = (
        &'a serde_json::Value,
        &'a [(u64, TaskState)],
        Result<&'a str, &'a str>,
    );

    #[test]
    fn a_job_converges_once_its_iteration_completed() {
        use TaskState::{Complete, Failed, Running};
        let three = serde_json::json!({ "mode": "replicated-job", "replicas": 3 });
        let never = serde_json::json!({
            "mode": "replicated-job", "replicas": 3, "restart_policy": { "condition": "none" }
        });
        let global = serde_json::json!({ "mode": "global-job" });
        let cases: [JobCase; 7] = [
            (
                &three,
                &[(2, Complete), (2, Complete), (2, Complete)],
                Ok(""),
            ),
            (
                &three,
                &[(2, Complete), (2, Running), (2, Failed)],
                Ok("1/3 tasks completed (1 running, 1 failed)"),
            ),
            (
                &three,
                &[(1, Complete), (1, Complete), (1, Complete), (2, Running)],
                Ok("0/3 tasks completed (1 running)"),
            ),
            (
                &never,
                &[(2, Complete), (2, Failed)],
                Err("s_job: job failed: task s_job.2 failed: exit code 3"),
            ),
            (&global, &[(2, Complete), (2, Complete)], Ok("")),
            (
                &global,
                &[(2, Complete), (2, Running)],
                Ok("1/2 tasks completed (1 running)"),
            ),
            (&global, &[], Ok("0/0 tasks completed")),
        ];
        for (mode, states, expected) in cases {
            let view = job_view(mode.clone(), states);
            let outcome = progress(&view, &view.services[0], Change::Update);
            match (outcome, expected) {
                (Ok(Progress::Converged), Ok("")) => {}
                (
                    Ok(Progress::Waiting {
                        missing, counted, ..
                    }),
                    Ok(want),
                ) => {
                    assert_eq!((missing.as_str(), counted), (want, "tasks completed"))
                }
                (Err(error), Err(want)) => assert_eq!(error.to_string(), want),
                (outcome, expected) => panic!("{mode} {states:?}: {outcome:?}, not {expected:?}"),
            }
        }
    }

    #[test]
    fn a_job_fails_once_a_slot_used_up_its_attempts() {
        use TaskState::Failed;
        let two_attempts = serde_json::json!({
            "mode": "replicated-job", "replicas": 1,
            "restart_policy": { "condition": "on-failure", "max_attempts": 2 }
        });
        // Slot 1 failed `tasks` times: the replaced tasks are shut down, the last one is
        // left as it ended.
        let slot_failed = |tasks: usize, mode: &serde_json::Value| {
            let mut view = job_view(mode.clone(), &vec![(1, Failed); tasks]);
            let last = view.tasks.len() - 1;
            for (i, task) in view.tasks.iter_mut().enumerate() {
                task.slot = Some(1);
                if i < last {
                    task.desired = DesiredState::Shutdown;
                }
            }
            let outcome = progress(&view, &view.services[0], Change::Update);
            outcome.map_err(|e| e.to_string())
        };
        assert!(matches!(
            slot_failed(2, &two_attempts),
            Ok(Progress::Waiting { .. })
        ));
        assert_eq!(
            slot_failed(3, &two_attempts).unwrap_err(),
            "s_job: job failed: task s_job.1 failed: exit code 3"
        );
        // With a window the attempts age out: the orchestrator tries again later.
        let windowed = serde_json::json!({
            "mode": "replicated-job", "replicas": 1,
            "restart_policy": { "condition": "on-failure", "max_attempts": 2, "window": "1m" }
        });
        assert!(matches!(
            slot_failed(3, &windowed),
            Ok(Progress::Waiting { .. })
        ));
    }

    #[test]
    fn waiting_says_what_is_missing() {
        let view = view(
            &[("new", TaskState::Preparing), ("old", TaskState::Running)],
            Some(UpdateState::Updating),
        );
        let Ok(Progress::Waiting { missing, .. }) =
            progress(&view, &view.services[0], Change::Update)
        else {
            panic!("waiting");
        };
        assert_eq!(
            missing,
            "0/2 tasks running (1 preparing), 1 of the previous spec still to replace"
        );
        let error = ConvergeError::Timeout {
            service: "web".into(),
            timeout: "3s".parse().unwrap(),
            missing,
            last_error: Some("exec: no such file".into()),
        };
        assert_eq!(
            error.to_string(),
            "web did not converge within 3s: 0/2 tasks running (1 preparing), 1 of the previous spec still to replace; last task error: exec: no such file"
        );
    }
}
