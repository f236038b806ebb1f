//! One service followed for a client (`WatchService`, what the CLI's convergence wait reads):
//! the service's part of the services view, read linearizably, then kept current from the
//! store's watch and sent again each time it changes. A client that falls behind gets a
//! fresh view.

use std::collections::BTreeMap;

use swarm_api::grpc::control::WatchServiceMessage;
use swarm_api::rollout::UpdateStatus;
use swarm_api::spec::ServiceSpec;
use swarm_api::state::Object;
use swarm_api::task::{ServicesView, Task};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{raft_status, services};
use swarm_controller::raft::driver::RaftHandle;
use swarm_controller::store::{Changed, Changes, Store, Subscription};

/// Views a slow client has not taken yet; beyond them, the watch waits for it (and resyncs
/// if it fell too far behind).
const BUFFERED: usize = 16;

pub type Stream = ReceiverStream<Result<WatchServiceMessage, Status>>;

/// The service `reference` names, followed until the client goes or the replica stops.
pub async fn follow(raft: RaftHandle<Store>, reference: String) -> Result<Stream, Status> {
    let mut subscription = subscribe(&raft, &reference).await?;
    let (sender, receiver) = mpsc::channel(BUFFERED);
    tokio::spawn(async move {
        loop {
            let Subscription {
                view: mut followed,
                mut changes,
                ..
            } = subscription;
            if sender.send(Ok(followed.message())).await.is_err() {
                return;
            }
            let missed = loop {
                let entry = tokio::select! {
                    entry = changes.recv() => entry,
                    () = sender.closed() => return,
                };
                let changed = entry.and_then(|entry| {
                    let mut changed = followed.apply(&entry);
                    // What is already published goes in the same message.
                    while let Some(entry) = changes.try_recv()? {
                        changed |= followed.apply(&entry);
                    }
                    Ok(changed)
                });
                match changed {
                    Ok(true) => {
                        if sender.send(Ok(followed.message())).await.is_err() {
                            return;
                        }
                    }
                    Ok(false) => {}
                    Err(missed) => break missed,
                }
            };
            tracing::debug!(%missed, service = %followed.name, "service watch: reading again");
            subscription = match subscribe(&raft, &reference).await {
                Ok(subscription) => subscription,
                Err(status) => {
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            };
        }
    });
    Ok(ReceiverStream::new(receiver))
}

/// The service's view, read linearizably, and the changes after it.
async fn subscribe(
    raft: &RaftHandle<Store>,
    reference: &str,
) -> Result<Subscription<Followed>, Status> {
    let reference = reference.to_owned();
    raft.read(move |store: &Store| {
        let followed = Followed::of(store, &reference);
        let subscription = store.subscribe(|_| ());
        followed.map(|view| Subscription {
            view,
            version: subscription.version,
            changes: subscription.changes,
        })
    })
    .await
    .map_err(raft_status)?
}

/// The followed service's part of the state.
struct Followed {
    id: String,
    name: String,
    version: u64,
    /// `None` once removed.
    service: Option<Object<ServiceSpec>>,
    update_status: Option<UpdateStatus>,
    tasks: BTreeMap<String, Task>,
    /// Every node's hostname, by id: a task may move to any node.
    hostnames: BTreeMap<String, String>,
}

impl Followed {
    fn of(store: &Store, reference: &str) -> Result<Followed, Status> {
        let data = store.data();
        let services = ServicesView {
            version: data.objects.version,
            services: data.objects.services.clone(),
            tasks: Vec::new(),
            nodes: BTreeMap::new(),
            update_status: BTreeMap::new(),
            virtual_ips: BTreeMap::new(),
            assigned_ports: BTreeMap::new(),
        };
        let service = services::resolve(&services, reference)?.clone();
        let id = service.id.clone().unwrap_or_default();
        Ok(Followed {
            name: service.spec.name.clone(),
            version: data.objects.version,
            update_status: data.update_status.get(&id).cloned(),
            tasks: store
                .tasks_of(&id)
                .map(|t| (t.id.clone(), t.clone()))
                .collect(),
            hostnames: data
                .nodes
                .values()
                .map(|n| (n.id.clone(), n.hostname.clone()))
                .collect(),
            service: Some(service),
            id,
        })
    }

    /// Follows an entry; whether the view changed.
    fn apply(&mut self, changes: &Changes) -> bool {
        let mut changed = false;
        for change in &changes.changed {
            match change {
                Changed::Service {
                    name,
                    service,
                    update_status,
                    ..
                } if *name == self.name => {
                    // A service made again under the name is another one.
                    self.service = service
                        .clone()
                        .filter(|s| s.id.as_deref() == Some(self.id.as_str()));
                    self.update_status = update_status.clone();
                    self.version = changes.objects_version;
                    changed = true;
                }
                Changed::Task { id, task } => match task {
                    Some(task) if task.service_id == self.id => {
                        self.tasks.insert(id.clone(), task.clone());
                        changed = true;
                    }
                    _ => changed |= self.tasks.remove(id).is_some(),
                },
                Changed::Node { id, node } => {
                    match node {
                        Some(node) => {
                            drop(self.hostnames.insert(id.clone(), node.hostname.clone()))
                        }
                        None => drop(self.hostnames.remove(id)),
                    }
                    changed |= self
                        .tasks
                        .values()
                        .any(|t| t.node_id.as_deref() == Some(id.as_str()));
                }
                _ => {}
            }
        }
        changed
    }

    fn message(&self) -> WatchServiceMessage {
        let tasks: Vec<Task> = self.tasks.values().cloned().collect();
        let nodes = tasks
            .iter()
            .filter_map(|t| t.node_id.as_ref())
            .filter_map(|id| Some((id.clone(), self.hostnames.get(id)?.clone())))
            .collect();
        let view = ServicesView {
            version: self.version,
            services: self.service.iter().cloned().collect(),
            tasks,
            nodes,
            update_status: self
                .update_status
                .iter()
                .map(|status| (self.id.clone(), status.clone()))
                .collect(),
            virtual_ips: BTreeMap::new(),
            assigned_ports: BTreeMap::new(),
        };
        WatchServiceMessage {
            json: serde_json::to_string(&view).expect("the view serialises"),
        }
    }
}

#[cfg(test)]
mod tests {
    use swarm_api::plan::Op;
    use swarm_api::store::{Command, TaskChange, TaskStatusUpdate};
    use swarm_api::task::{DesiredState, TaskState, TaskStatus};

    use super::*;
    use crate::fixtures::{plan, spec};

    fn task(id: &str, service: &Object<ServiceSpec>) -> Task {
        Task {
            id: id.into(),
            service_id: service.id.clone().unwrap(),
            service_name: service.spec.name.clone(),
            slot: Some(1),
            node_id: Some("n1".into()),
            spec: service.spec.task.clone(),
            desired: DesiredState::Running,
            status: TaskStatus::new(TaskState::Assigned, 1),
            created_at: 1,
            started_at: None,
            networks: Vec::new(),
        }
    }

    fn view(followed: &Followed) -> ServicesView {
        serde_json::from_str(&followed.message().json).unwrap()
    }

    /// The followed view changes with its service's tasks only, and equals the services
    /// view's part for the service.
    #[test]
    fn a_followed_service_sees_its_own_changes_only() {
        let mut store = Store::default();
        let mut index = 0;
        let mut apply = |store: &mut Store, command| {
            index += 1;
            store.apply_command(index, command);
        };
        apply(
            &mut store,
            Command::InitCluster(swarm_api::store::Cluster {
                id: "c".into(),
                created_at: 0,
                heartbeat_period_ms: 1000,
                missed_heartbeats_for_down: 3,
                certificate_validity_ms: 1,
                worker_token_secret: String::new(),
                manager_token_secret: String::new(),
                address_pool: Default::default(),
            }),
        );
        apply(&mut store, plan(Op::Create, spec("web")));
        apply(&mut store, plan(Op::Create, spec("db")));
        let services = store.export().services;
        let (db, web) = (&services[0], &services[1]);
        let Subscription {
            view: mut followed,
            mut changes,
            ..
        } = store.subscribe(|store| Followed::of(store, "s_web").unwrap());
        assert!(view(&followed).tasks.is_empty());
        let write = |changes| Command::WriteTasks {
            expected_version: 0,
            changes,
        };
        apply(
            &mut store,
            write(vec![TaskChange::Create(Box::new(task("d1", db)))]),
        );
        let entry = changes.try_recv().unwrap().unwrap();
        assert!(!followed.apply(&entry), "another service's task");
        let expected_version = store.data().tasks_version;
        apply(
            &mut store,
            Command::WriteTasks {
                expected_version,
                changes: vec![TaskChange::Create(Box::new(task("w1", web)))],
            },
        );
        let entry = changes.try_recv().unwrap().unwrap();
        assert!(followed.apply(&entry));
        apply(
            &mut store,
            Command::TaskStatuses {
                node_id: "n1".into(),
                updates: vec![TaskStatusUpdate {
                    id: "w1".into(),
                    status: TaskStatus::new(TaskState::Running, 5),
                }],
            },
        );
        let entry = changes.try_recv().unwrap().unwrap();
        assert!(followed.apply(&entry));
        let seen = view(&followed);
        assert_eq!(seen.services, vec![web.clone()]);
        assert_eq!(seen.tasks, vec![store.data().tasks["w1"].clone()]);
        assert_eq!(seen.tasks[0].status.state, TaskState::Running);
        assert!(
            Followed::of(&store, "nothing").is_err(),
            "an unknown service"
        );
    }
}
