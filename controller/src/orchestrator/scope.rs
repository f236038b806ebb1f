//! What the leader's next pass must look at, followed from the store's watch: the services
//! whose state changed, those whose next decision waits for a time that has come, and
//! those with tasks waiting for a place when capacity frees up; everything after a change
//! that can touch any service. So the leader's pass per entry costs what changed.

use std::collections::{BTreeMap, BTreeSet};

use swarm_api::spec::ServiceSpec;
use swarm_api::task::{Task, TaskState};
use swarm_api::units::Millis;

use super::Pass;
use crate::store::{Changed, Changes, Store};

/// What a pass looks at: everything, or some services (by id) whose state changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Services(BTreeSet<String>),
}

impl Scope {
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Services(ids) if ids.is_empty())
    }

    /// Widens the scope to what an entry's changes may give a pass to do: the services of
    /// changed tasks, a changed service; everything for a removed service (its tasks go,
    /// its ports and resources free up) or a changed node (tasks to place, to replace, or
    /// global tasks to make). Removed tasks and other objects give no work.
    pub fn add(&mut self, changes: &Changes) {
        for change in &changes.changed {
            let service = match change {
                Changed::Task {
                    task: Some(task), ..
                } => task.service_id.clone(),
                Changed::Service {
                    service: Some(service),
                    ..
                } => match &service.id {
                    Some(id) => id.clone(),
                    None => continue,
                },
                Changed::Service { service: None, .. } | Changed::Node { .. } => {
                    *self = Scope::All;
                    return;
                }
                Changed::Task { task: None, .. }
                | Changed::Network { .. }
                | Changed::Config { .. }
                | Changed::Secret { .. }
                | Changed::Repository { .. }
                | Changed::Credentials { .. }
                | Changed::FileContent { .. } => continue,
            };
            self.add_service(service);
        }
    }

    pub fn add_service(&mut self, id: String) {
        if let Scope::Services(ids) = self {
            ids.insert(id);
        }
    }
}

/// What the next pass must look at, as the entries come.
#[derive(Debug)]
pub struct Dirty {
    scope: Scope,
    /// Services whose next decision waits until a time: restart delays, an update's delay
    /// or monitor period.
    wake: BTreeMap<String, Millis>,
    /// Each service's tasks waiting for a node (unschedulable for now), by service id.
    waiting: BTreeMap<String, BTreeSet<String>>,
    /// Services whose update or rollback is under way or paused: the progress of their
    /// tasks drives it.
    rolling: BTreeSet<String>,
    /// The services others depend on, by name → those others, by id: a task of the first
    /// that starts (or runs, or stops) may let the others' tasks be placed.
    awaited: BTreeMap<String, BTreeSet<String>>,
}

/// A task waiting for a node.
fn waiting(task: &Task) -> bool {
    task.is_live() && task.node_id.is_none() && task.status.state <= TaskState::Pending
}

impl Dirty {
    /// Everything to look at, from the store as it is (call it where the store is, with the
    /// subscription that follows it).
    pub fn of(store: &Store) -> Self {
        let data = store.data();
        let mut dirty = Dirty {
            scope: Scope::All,
            wake: BTreeMap::new(),
            waiting: BTreeMap::new(),
            awaited: BTreeMap::new(),
            rolling: data
                .update_status
                .iter()
                .filter(|(_, status)| !status.state.is_completed())
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for service in &data.objects.services {
            if let Some(id) = &service.id {
                dirty.await_dependencies(id, &service.spec);
            }
        }
        for task in data.tasks.values().filter(|t| waiting(t)) {
            dirty
                .waiting
                .entry(task.service_id.clone())
                .or_default()
                .insert(task.id.clone());
        }
        dirty
    }

    /// Widens the scope to what an entry's changes may give a pass to do: the services of
    /// changed tasks, a changed service; the services with tasks waiting for a node when a
    /// task stops or goes (its node has room again); everything for a removed service (its
    /// tasks go, its ports free up) or a changed node (tasks to place or replace, global
    /// tasks to make). Other objects give no work; neither does a placed task that goes on
    /// towards running in a service with no rollout under way (see `quiet`).
    pub fn add(&mut self, changes: &Changes) {
        let mut freed = false;
        for change in &changes.changed {
            match change {
                Changed::Task { id, task } => {
                    if let Some(dependents) = task
                        .as_ref()
                        .and_then(|t| self.awaited.get(&t.service_name))
                    {
                        for dependent in dependents {
                            self.scope.add_service(dependent.clone());
                        }
                    }
                    match task {
                        Some(task) if waiting(task) => {
                            self.waiting
                                .entry(task.service_id.clone())
                                .or_default()
                                .insert(id.clone());
                        }
                        _ => self.placed(id),
                    }
                    match task {
                        Some(task) if self.quiet(task) => {}
                        Some(task) => {
                            freed |= !task.is_live() || task.status.state.is_terminal();
                            self.scope.add_service(task.service_id.clone());
                        }
                        None => freed = true,
                    }
                }
                Changed::Service {
                    service: Some(service),
                    update_status,
                    ..
                } => {
                    if let Some(id) = &service.id {
                        self.await_dependencies(id, &service.spec);
                        if update_status
                            .as_ref()
                            .is_some_and(|status| !status.state.is_completed())
                        {
                            self.rolling.insert(id.clone());
                        } else {
                            self.rolling.remove(id);
                        }
                        self.scope.add_service(id.clone());
                    }
                }
                Changed::Service { service: None, .. } | Changed::Node { .. } => {
                    self.scope = Scope::All;
                }
                Changed::Network { .. }
                | Changed::Config { .. }
                | Changed::Secret { .. }
                | Changed::Repository { .. }
                | Changed::Credentials { .. }
                | Changed::FileContent { .. } => {}
            }
        }
        if freed {
            for service in self.waiting.keys() {
                self.scope.add_service(service.clone());
            }
        }
    }

    /// Whether a task's change gives no pass anything to do: it runs, or goes on towards
    /// running, on its node, and its service has no rollout under way. A pass decides on
    /// such a task only when it stops (restart, history), when its node changes, or when a
    /// rollout counts it — and only a rollout (start-first) puts two live tasks in a slot.
    /// So a status report costs the leader nothing per task of its service.
    fn quiet(&self, task: &Task) -> bool {
        task.is_live()
            && task.node_id.is_some()
            && !task.status.state.is_terminal()
            && !self.rolling.contains(&task.service_id)
    }

    /// Records what service `id` depends on, instead of what it did.
    fn await_dependencies(&mut self, id: &str, spec: &ServiceSpec) {
        self.awaited.retain(|_, dependents| {
            dependents.remove(id);
            !dependents.is_empty()
        });
        for dependency in &spec.depends_on {
            self.awaited
                .entry(dependency.service.clone())
                .or_default()
                .insert(id.to_owned());
        }
    }

    fn placed(&mut self, task_id: &str) {
        self.waiting.retain(|_, tasks| {
            tasks.remove(task_id);
            !tasks.is_empty()
        });
    }

    /// Everything to look at again (a refused or cut pass, a new leader).
    pub fn all(&mut self) {
        self.scope = Scope::All;
    }

    /// When the next time-bound decision is due, if any.
    pub fn next_wake(&self) -> Option<Millis> {
        self.wake.values().min().copied()
    }

    /// What the next pass at `now` looks at (the services due by then included), leaving
    /// nothing; empty when there is nothing to do.
    pub fn take(&mut self, now: Millis) -> Scope {
        let due: Vec<String> = self
            .wake
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.wake.remove(&id);
            self.scope.add_service(id);
        }
        std::mem::replace(&mut self.scope, Scope::Services(BTreeSet::new()))
    }

    /// Records when the services a pass over `scope` looked at want to be looked at again.
    pub fn passed(&mut self, scope: &Scope, pass: &Pass) {
        match scope {
            Scope::All => self.wake.clear(),
            Scope::Services(ids) => self.wake.retain(|id, _| !ids.contains(id)),
        }
        self.wake
            .extend(pass.wake.iter().map(|(id, at)| (id.clone(), *at)));
    }
}
