//! Where an applied Deployment stands: converged once every service its plan created or
//! changed runs its spec (its update completed), failed when one's update paused or rolled
//! back, judged as `swarm service update` judges its wait (`swarm_api::converge`).

use swarm_api::converge::{Change, Progress, progress};
use swarm_api::gitops::{Deployment, DeploymentOutcome};
use swarm_api::plan::{Kind, Op};
use swarm_api::task::ServicesView;

use crate::store::Store;

/// The outcome `deployment` has reached in `store`; `None` while its services roll out. A
/// service removed since is not waited for.
pub fn judge(store: &Store, deployment: &Deployment) -> Option<DeploymentOutcome> {
    let data = store.data();
    for action in &deployment.plan.actions {
        if action.kind != Kind::Service || action.op == Op::Remove {
            continue;
        }
        let Some(service) = data
            .objects
            .services
            .iter()
            .find(|s| s.spec.name == action.name)
        else {
            continue;
        };
        let id = service.id.as_deref().unwrap_or_default();
        let view = ServicesView {
            version: data.objects.version,
            services: Vec::new(),
            tasks: store.tasks_of(id).cloned().collect(),
            nodes: Default::default(),
            update_status: data
                .update_status
                .get(id)
                .map(|status| (id.to_owned(), status.clone()))
                .into_iter()
                .collect(),
            virtual_ips: Default::default(),
            assigned_ports: Default::default(),
        };
        // A global service wants as many tasks as it has: before the orchestrator made
        // any, a new one would pass as converged.
        let global = service.spec.replicas().is_none();
        if global && action.op == Op::Create && !view.tasks.iter().any(|t| t.is_live()) {
            return None;
        }
        match progress(&view, service, Change::Update) {
            Ok(Progress::Converged) => {}
            Ok(Progress::Waiting { .. }) => return None,
            Err(failure) => {
                return Some(DeploymentOutcome::Failed {
                    reason: failure.to_string(),
                });
            }
        }
    }
    Some(DeploymentOutcome::Converged)
}
