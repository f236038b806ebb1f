//! A task's life on its node, as a pure state machine: the agent's task controller tells it
//! what happened (`Event`), and it answers with the task's new state and what to do next
//! (`Action`). States only move forward (preparing → starting → running → complete |
//! failed | shutdown); a healthcheck, when the task has one, gates starting → running.

use swarm_api::task::{DesiredState, TaskState};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// What the managers want, at every assignment.
    Desired(DesiredState),
    /// The image is pulled, the network and the root filesystem are ready; `healthcheck`
    /// says whether a check (the service's, or else the image's, known only now) gates
    /// "running".
    Prepared { healthcheck: bool },
    /// Preparing or starting failed.
    Failed(String),
    /// The container's process runs.
    Started,
    /// The healthcheck passed.
    Healthy,
    /// The healthcheck failed its retries.
    Unhealthy(String),
    /// The container's process ended (by itself, or because it was stopped).
    Exited { code: Option<i32>, oom_killed: bool },
}

/// What the controller must do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Pull the image, make the network and the root filesystem.
    Prepare,
    /// Create and start the container.
    Start,
    /// Stop the container (stop signal, then SIGKILL after the grace period).
    Stop,
    /// The task is over: remove what was made for it (the logs stay).
    CleanUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    state: TaskState,
    healthcheck: bool,
    /// A stop was asked: the exit that follows is a shutdown, whatever its code.
    stopping: bool,
    message: &'static str,
    error: Option<String>,
    exit_code: Option<i32>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// A task as assigned to this node.
    pub fn new() -> Self {
        Lifecycle {
            state: TaskState::Assigned,
            healthcheck: false,
            stopping: false,
            message: "assigned",
            error: None,
            exit_code: None,
        }
    }

    /// A task found running after a daemon restart (its container re-adopted).
    pub fn adopted() -> Self {
        Lifecycle {
            state: TaskState::Running,
            healthcheck: false,
            stopping: false,
            message: "re-adopted after an agent restart",
            error: None,
            exit_code: None,
        }
    }

    pub fn state(&self) -> TaskState {
        self.state
    }

    pub fn message(&self) -> &'static str {
        self.message
    }

    /// Why the task failed (the ERROR column of `service ps`).
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    pub fn is_over(&self) -> bool {
        self.state.is_terminal()
    }

    /// Takes an event; returns what to do. Events that make no sense in the current state
    /// (a late health result, a second exit) change nothing.
    pub fn on(&mut self, event: Event) -> Action {
        use TaskState::*;
        if self.state.is_terminal() {
            return Action::Nothing;
        }
        match (self.state, event) {
            (New | Pending | Assigned | Accepted, Event::Desired(DesiredState::Running)) => {
                self.enter(Preparing, "preparing");
                Action::Prepare
            }
            // Nothing runs yet: there is nothing to stop.
            (
                New | Pending | Assigned | Accepted | Preparing,
                Event::Desired(DesiredState::Shutdown),
            ) => {
                self.enter(Shutdown, "shut down before it started");
                Action::CleanUp
            }
            (_, Event::Desired(DesiredState::Shutdown)) => {
                if self.stopping {
                    return Action::Nothing;
                }
                self.stopping = true;
                self.message = "stopping";
                Action::Stop
            }
            (_, Event::Desired(DesiredState::Running)) => Action::Nothing,
            (Preparing, Event::Prepared { healthcheck }) => {
                self.healthcheck = healthcheck;
                self.enter(Starting, "starting");
                Action::Start
            }
            // Running, a failure is the runtime losing the container: waiting again would
            // fail again at once.
            (Preparing | Starting | Running, Event::Failed(error)) => {
                self.fail(error);
                Action::CleanUp
            }
            (Starting, Event::Started) if self.healthcheck => {
                self.message = "waiting for the healthcheck to pass";
                Action::Nothing
            }
            (Starting, Event::Started) | (Starting, Event::Healthy) => {
                self.enter(Running, "running");
                Action::Nothing
            }
            (Starting | Running, Event::Unhealthy(error)) => {
                self.stopping = true;
                self.fail(format!("unhealthy container: {error}"));
                Action::Stop
            }
            (Starting | Running, Event::Exited { code, oom_killed }) => {
                self.exit_code = code;
                if self.stopping {
                    self.enter(Shutdown, "shut down");
                } else if oom_killed {
                    self.fail(format!(
                        "task: the container ran out of memory and was killed (exit {})",
                        code.map_or("unknown".to_owned(), |c| c.to_string())
                    ));
                } else {
                    match code {
                        Some(0) => self.enter(Complete, "finished"),
                        Some(code) => self.fail(format!("task: non-zero exit ({code})")),
                        // Only a container this agent did not start (adopted after a
                        // restart) has no code: its parent, not us, reaped it.
                        None => self.fail(
                            "task: the container exited with an unknown code (it was started before the agent restarted)"
                                .to_owned(),
                        ),
                    }
                }
                Action::CleanUp
            }
            (
                _,
                Event::Prepared { .. } | Event::Started | Event::Healthy | Event::Exited { .. },
            ) => Action::Nothing,
            (_, Event::Failed(_) | Event::Unhealthy(_)) => Action::Nothing,
        }
    }

    fn enter(&mut self, state: TaskState, message: &'static str) {
        debug_assert!(state >= self.state, "{state:?} after {:?}", self.state);
        self.state = state;
        self.message = message;
    }

    fn fail(&mut self, error: String) {
        self.enter(TaskState::Failed, "failed");
        self.error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::task::TaskState::*;

    /// Runs `events`; `Prepared` stands for the one with `healthcheck`.
    fn run(healthcheck: bool, events: Vec<Event>) -> (Lifecycle, Vec<Action>) {
        let mut task = Lifecycle::new();
        let actions = events
            .into_iter()
            .map(|event| match event {
                Event::Prepared { .. } => task.on(Event::Prepared { healthcheck }),
                other => task.on(other),
            })
            .collect();
        (task, actions)
    }

    /// Prepared, with the healthcheck `run` is given.
    const PREPARED: Event = Event::Prepared { healthcheck: false };

    fn exited(code: i32) -> Event {
        Event::Exited {
            code: Some(code),
            oom_killed: false,
        }
    }

    #[test]
    fn lives_are_table_driven() {
        let running = Event::Desired(DesiredState::Running);
        let shutdown = Event::Desired(DesiredState::Shutdown);
        /// Name, healthcheck, events → state, actions, error.
        type Case = (
            &'static str,
            bool,
            Vec<Event>,
            TaskState,
            Vec<Action>,
            Option<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "runs to completion",
                false,
                vec![running.clone(), PREPARED, Event::Started, exited(0)],
                Complete,
                vec![
                    Action::Prepare,
                    Action::Start,
                    Action::Nothing,
                    Action::CleanUp,
                ],
                None,
            ),
            (
                "fails with its exit code",
                false,
                vec![running.clone(), PREPARED, Event::Started, exited(3)],
                Failed,
                vec![
                    Action::Prepare,
                    Action::Start,
                    Action::Nothing,
                    Action::CleanUp,
                ],
                Some("task: non-zero exit (3)"),
            ),
            (
                "a pull error fails the task",
                false,
                vec![running.clone(), Event::Failed("image x not found".into())],
                Failed,
                vec![Action::Prepare, Action::CleanUp],
                Some("image x not found"),
            ),
            (
                "stopped while running is a shutdown, whatever the code",
                false,
                vec![
                    running.clone(),
                    PREPARED,
                    Event::Started,
                    shutdown.clone(),
                    shutdown.clone(),
                    exited(137),
                ],
                Shutdown,
                vec![
                    Action::Prepare,
                    Action::Start,
                    Action::Nothing,
                    Action::Stop,
                    Action::Nothing,
                    Action::CleanUp,
                ],
                None,
            ),
            (
                "shut down before it started",
                false,
                vec![running.clone(), shutdown.clone()],
                Shutdown,
                vec![Action::Prepare, Action::CleanUp],
                None,
            ),
            (
                "an unhealthy task fails and is stopped",
                true,
                vec![
                    running.clone(),
                    PREPARED,
                    Event::Started,
                    Event::Unhealthy("exit 1".into()),
                    exited(143),
                ],
                Failed,
                vec![
                    Action::Prepare,
                    Action::Start,
                    Action::Nothing,
                    Action::Stop,
                    Action::Nothing,
                ],
                Some("unhealthy container: exit 1"),
            ),
            (
                "out of memory",
                false,
                vec![
                    running,
                    PREPARED,
                    Event::Started,
                    Event::Exited {
                        code: Some(137),
                        oom_killed: true,
                    },
                ],
                Failed,
                vec![
                    Action::Prepare,
                    Action::Start,
                    Action::Nothing,
                    Action::CleanUp,
                ],
                Some("task: the container ran out of memory and was killed (exit 137)"),
            ),
        ];
        for (name, healthcheck, events, state, actions, error) in cases {
            let (task, taken) = run(healthcheck, events);
            assert_eq!(task.state(), state, "{name}");
            assert_eq!(taken, actions, "{name}");
            assert_eq!(task.error(), error, "{name}");
        }
    }

    /// The check may be the image's, known only once the image is pulled.
    #[test]
    fn a_healthcheck_known_when_prepared_gates_running() {
        let (mut task, _) = run(
            true,
            vec![
                Event::Desired(DesiredState::Running),
                PREPARED,
                Event::Started,
            ],
        );
        assert_eq!(task.state(), Starting);
        assert_eq!(task.on(Event::Healthy), Action::Nothing);
        assert_eq!(task.state(), Running);
    }

    #[test]
    fn an_adopted_container_runs_until_it_exits_or_is_stopped() {
        let mut task = Lifecycle::adopted();
        assert_eq!(
            task.on(Event::Desired(DesiredState::Running)),
            Action::Nothing
        );
        assert_eq!(task.state(), Running);
        let unknown = Event::Exited {
            code: None,
            oom_killed: false,
        };
        assert_eq!(task.on(unknown), Action::CleanUp);
        assert_eq!(task.state(), Failed);
        assert_eq!(
            task.error(),
            Some(
                "task: the container exited with an unknown code (it was started before the agent restarted)"
            )
        );
        let mut stopped = Lifecycle::adopted();
        assert_eq!(
            stopped.on(Event::Desired(DesiredState::Shutdown)),
            Action::Stop
        );
        stopped.on(exited(143));
        assert_eq!((stopped.state(), stopped.error()), (Shutdown, None));
    }

    #[test]
    fn a_running_task_whose_container_is_lost_fails() {
        let mut task = Lifecycle::new();
        task.on(Event::Desired(DesiredState::Running));
        task.on(Event::Prepared { healthcheck: false });
        task.on(Event::Started);
        assert_eq!(task.state(), Running);
        let action = task.on(Event::Failed(
            "container x does not exist on this node".into(),
        ));
        assert_eq!((task.state(), action), (Failed, Action::CleanUp));
        assert_eq!(
            task.error(),
            Some("container x does not exist on this node")
        );
    }

    #[test]
    fn states_never_go_back() {
        let (mut task, _) = run(false, vec![Event::Desired(DesiredState::Running)]);
        task.on(Event::Failed("x".into()));
        for event in [
            PREPARED,
            Event::Started,
            Event::Desired(DesiredState::Running),
            exited(0),
        ] {
            assert_eq!(task.on(event), Action::Nothing);
            assert_eq!(task.state(), Failed);
        }
    }
}
