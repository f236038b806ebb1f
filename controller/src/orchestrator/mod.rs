//! The orchestrator's pure core: from the store (services, nodes, tasks) and the time, the
//! task decisions of one pass — tasks to create for empty slots and eligible nodes, tasks
//! to stop (scaled down, outdated, on a drained node, of a removed service), replacements
//! for failed tasks (restart policy) and for tasks on lost nodes, history to drop — then
//! where the new and pending tasks go (`scheduler`) — and how each service's update or
//! rollback stands (`rollout`). The leader runs a pass whenever the store changes, and
//! proposes its decisions as one `WriteTasks` entry.

mod depends;
mod global;
mod jobs;
mod placement;
mod replicated;
mod rollout;
mod scope;

pub use scope::{Dirty, Scope};

use std::collections::{BTreeMap, HashMap};

use swarm_api::plan::Kind;
use swarm_api::rollout::UpdateStatus;
use swarm_api::spec::{RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec};
use swarm_api::state::Object;
use swarm_api::store::{Node, NodeStatus, StoreData, TaskChange};
use swarm_api::task::{DesiredState, Task, TaskState, TaskStatus};
use swarm_api::units::Millis;

use crate::store::Store;

/// Tasks kept per slot (or per node, for global services), the live one included, as
/// Docker's default task history retention limit.
pub const HISTORY: usize = 5;

/// One pass: every decision for the store as it is at `now`. `new_id` names new tasks.
pub fn pass(now: Millis, data: &StoreData, new_id: &mut dyn FnMut() -> String) -> Vec<TaskChange> {
    full(now, data, new_id).changes
}

/// A pass's decisions, and when it must look again at services whose next decision waits
/// for time to pass (a restart delay, an update's delay or monitor period), by service id.
#[derive(Debug, Default, PartialEq)]
pub struct Pass {
    pub changes: Vec<TaskChange>,
    pub wake: BTreeMap<String, Millis>,
}

/// A pass over `scope` of the store as it is at `now`. Over some services, it costs their
/// tasks (and, only when it has tasks to place, a count of every node's load).
pub fn pass_over(
    now: Millis,
    store: &Store,
    scope: &Scope,
    new_id: &mut dyn FnMut() -> String,
) -> Pass {
    let ids = match scope {
        Scope::All => return full(now, store.data(), new_id),
        Scope::Services(ids) => ids,
    };
    let data = store.data();
    let mut decisions = Decisions::new(now, new_id);
    let mut scoped: Vec<&Task> = Vec::new();
    let mut tasks_of = |id: &str| {
        let mut tasks: Vec<&Task> = store.tasks_of(id).collect();
        tasks.sort_by_key(|t| (t.created_at, t.id.as_str()));
        scoped.extend(tasks.iter().copied());
        tasks
    };
    // In the order a full pass takes them, so that both decide alike.
    let mut removed = ids.clone();
    for object in &data.objects.services {
        let Some(id) = object.id.as_deref().filter(|id| removed.remove(*id)) else {
            continue;
        };
        reconcile(id, object, data, &tasks_of(id), &mut decisions);
    }
    for id in &removed {
        removed_service(&tasks_of(id), &data.nodes, &mut decisions);
    }
    let tasks_of_dependency = |id: &str| store.tasks_of(id).collect();
    placement::place(data, &mut decisions, Some(&scoped), &tasks_of_dependency);
    decisions.into_pass()
}

fn full(now: Millis, data: &StoreData, new_id: &mut dyn FnMut() -> String) -> Pass {
    let mut decisions = Decisions::new(now, new_id);
    let mut by_service: HashMap<&str, Vec<&Task>> = HashMap::new();
    for task in data.tasks.values() {
        by_service.entry(&task.service_id).or_default().push(task);
    }
    for tasks in by_service.values_mut() {
        tasks.sort_by_key(|t| (t.created_at, t.id.as_str()));
    }
    // The placement reads the tasks of services others depend on.
    let all_by_service = by_service.clone();
    for service in &data.objects.services {
        let Some(id) = service.id.as_deref() else {
            continue;
        };
        let tasks = by_service.remove(id).unwrap_or_default();
        reconcile(id, service, data, &tasks, &mut decisions);
    }
    let orphans: Vec<&Task> = by_service.into_values().flatten().collect();
    removed_service(&orphans, &data.nodes, &mut decisions);
    let tasks_of_dependency = |id: &str| all_by_service.get(id).cloned().unwrap_or_default();
    placement::place(data, &mut decisions, None, &tasks_of_dependency);
    decisions.into_pass()
}

fn reconcile(
    id: &str,
    object: &Object<ServiceSpec>,
    data: &StoreData,
    tasks: &[&Task],
    decisions: &mut Decisions<'_>,
) {
    let job_iteration = if object.spec.is_job() {
        // Any change of the service is a new iteration, as Docker's `JobIteration`.
        data.object_versions
            .get(&Kind::Service)
            .and_then(|versions| versions.get(&object.spec.name))
            .copied()
            .unwrap_or_default()
    } else {
        0
    };
    let service = Service {
        id,
        object,
        status: data.update_status.get(id),
        has_previous: data.previous_specs.contains_key(id),
        job_iteration,
    };
    match service.object.spec.mode {
        ServiceMode::Replicated { replicas } => {
            replicated::reconcile(&service, replicas, tasks, &data.nodes, decisions)
        }
        ServiceMode::Global => global::reconcile(&service, tasks, &data.nodes, decisions),
        ServiceMode::ReplicatedJob {
            max_concurrent,
            total_completions,
        } => jobs::replicated(
            &service,
            max_concurrent,
            total_completions,
            tasks,
            &data.nodes,
            decisions,
        ),
        ServiceMode::GlobalJob => jobs::global(&service, tasks, &data.nodes, decisions),
    }
}

/// Tasks of removed services stop, and go once stopped.
fn removed_service(tasks: &[&Task], nodes: &BTreeMap<String, Node>, d: &mut Decisions<'_>) {
    for task in tasks {
        if task.is_live() {
            d.stop(task);
        } else if task.status.state.is_terminal() || lost(nodes, task) {
            d.remove(task);
        }
    }
}

/// A service, its id, and where its rollout stands.
struct Service<'a> {
    id: &'a str,
    object: &'a Object<ServiceSpec>,
    status: Option<&'a UpdateStatus>,
    /// Whether it has a spec to roll back to.
    has_previous: bool,
    /// A job's current iteration (0 for other services).
    job_iteration: u64,
}

impl Service<'_> {
    fn spec(&self) -> &ServiceSpec {
        &self.object.spec
    }

    /// The spec of the tasks it makes now: its task spec, for a job with the iteration.
    fn task_spec(&self) -> TaskSpec {
        TaskSpec {
            job_iteration: self.job_iteration,
            ..self.spec().task.clone()
        }
    }
}

/// The decisions of a pass, as they are made.
struct Decisions<'a> {
    now: Millis,
    new_id: &'a mut dyn FnMut() -> String,
    changes: Vec<TaskChange>,
    /// Tasks made in this pass; the scheduler places them before they are written.
    created: Vec<Task>,
    /// Services' update statuses and automatic rollbacks.
    rollouts: Vec<TaskChange>,
    wake: BTreeMap<String, Millis>,
}

impl<'a> Decisions<'a> {
    fn new(now: Millis, new_id: &'a mut dyn FnMut() -> String) -> Self {
        Decisions {
            now,
            new_id,
            changes: Vec::new(),
            created: Vec::new(),
            rollouts: Vec::new(),
            wake: BTreeMap::new(),
        }
    }

    /// Service `service_id` has a decision to make at `at`.
    fn wake(&mut self, service_id: &str, at: Millis) {
        let due = self.wake.entry(service_id.to_owned()).or_insert(at);
        *due = (*due).min(at);
    }

    fn create(&mut self, service: &Service<'_>, slot: Option<u64>, node_id: Option<&str>) {
        let (state, message) = match node_id {
            // A global task is made for its node.
            Some(_) => (TaskState::Assigned, "scheduled"),
            None => (TaskState::New, "created"),
        };
        let mut status = TaskStatus::new(state, self.now);
        status.message = message.to_owned();
        self.created.push(Task {
            id: (self.new_id)(),
            service_id: service.id.to_owned(),
            service_name: service.spec().name.clone(),
            slot,
            node_id: node_id.map(str::to_owned),
            spec: service.task_spec(),
            desired: DesiredState::Running,
            status,
            created_at: self.now,
            started_at: None,
            networks: Vec::new(),
        });
    }

    fn stop(&mut self, task: &Task) {
        self.changes.push(TaskChange::Desire {
            id: task.id.clone(),
            desired: DesiredState::Shutdown,
        });
    }

    /// A task whose node is gone or down: stopped, and marked orphaned (nobody can say what
    /// became of it until the node is back).
    fn orphan(&mut self, task: &Task) {
        self.stop(task);
        if !task.status.state.is_terminal() {
            let mut status = TaskStatus::new(TaskState::Orphaned, self.now);
            status.message = "its node is down".to_owned();
            self.changes.push(TaskChange::Status {
                id: task.id.clone(),
                status,
            });
        }
    }

    fn remove(&mut self, task: &Task) {
        self.changes.push(TaskChange::Remove {
            id: task.id.clone(),
        });
    }

    /// Drops the oldest stopped tasks of a slot beyond the history limit.
    fn trim_history(&mut self, tasks: &[&Task], nodes: &BTreeMap<String, Node>) {
        let stopped: Vec<&&Task> = tasks
            .iter()
            .filter(|t| !t.is_live() && (t.status.state.is_terminal() || lost(nodes, t)))
            .collect();
        let keep = HISTORY.saturating_sub(tasks.len() - stopped.len());
        if stopped.len() > keep {
            for task in &stopped[..stopped.len() - keep] {
                self.remove(task);
            }
        }
    }

    /// The services' changes first: a pass too big for one entry is cut at its end, and
    /// the next pass decides the rest again.
    fn into_pass(self) -> Pass {
        let mut changes = self.rollouts;
        changes.extend(
            self.created
                .into_iter()
                .map(|task| TaskChange::Create(Box::new(task))),
        );
        changes.extend(self.changes);
        Pass {
            changes,
            wake: self.wake,
        }
    }
}

/// Whether a task's node is gone from the cluster or down.
fn lost(nodes: &BTreeMap<String, Node>, task: &Task) -> bool {
    match task.node_id.as_ref().map(|id| nodes.get(id)) {
        None => false,
        Some(None) => true,
        Some(Some(node)) => node.status == NodeStatus::Down,
    }
}

/// What the restart policy says of a finished task.
#[derive(Debug, PartialEq, Eq)]
enum Restart {
    Now,
    /// Not before `at`: the policy's delay, or the end of the window that holds too many
    /// restarts.
    Later {
        at: Millis,
    },
    Never,
}

/// `task` finished (it is the latest of its slot, or node); `history` is every task of the
/// slot, oldest first, `task` included.
fn restart(policy: &RestartPolicy, task: &Task, history: &[&Task], now: Millis) -> Restart {
    let succeeded = task.status.state == TaskState::Complete;
    if policy.condition == RestartCondition::OnFailure && succeeded {
        return Restart::Never;
    }
    // Restarts are the slot's tasks after its first.
    if policy.gives_up(history.len().saturating_sub(1) as u64) {
        return Restart::Never;
    }
    let window = policy.window.0.as_millis() as u64;
    if policy.max_attempts > 0 && window > 0 {
        // Only the restarts within the window count; the oldest of them leaves it then.
        let counted: Vec<Millis> = history
            .iter()
            .skip(1)
            .filter(|t| t.created_at + window >= now)
            .map(|t| t.created_at)
            .collect();
        if counted.len() as u64 >= policy.max_attempts
            && let Some(oldest) = counted.iter().min()
        {
            return Restart::Later {
                at: oldest + window + 1,
            };
        }
    }
    let delay = policy.delay.0.as_millis() as u64;
    let at = task.status.since + delay;
    if now >= at {
        Restart::Now
    } else {
        Restart::Later { at }
    }
}

#[cfg(test)]
mod tests;
