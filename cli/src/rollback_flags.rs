//! The `--rollback-*` flags of `service create|update`: the service's `rollback_config`
//! (how a rollback, automatic or asked for, rolls out), as Docker's. Checked and applied by
//! `swarm_controller::deploy::flags::RollbackFlags`.

use clap::Args;
use swarm_api::units::GoDuration;
use swarm_controller::deploy::flags;

#[derive(Debug, Clone, Args)]
pub struct RollbackFlags {
    /// Tasks rolled back at once (0: all)
    #[arg(long)]
    rollback_parallelism: Option<u64>,
    /// Wait between rollbacks of batches
    #[arg(long)]
    rollback_delay: Option<GoDuration>,
    /// What a failing rollback does: pause or continue
    #[arg(long)]
    rollback_failure_action: Option<String>,
    /// How long each rolled-back task is watched for failure
    #[arg(long)]
    rollback_monitor: Option<GoDuration>,
    /// Failures tolerated during a rollback (0 to 1)
    #[arg(long)]
    rollback_max_failure_ratio: Option<f64>,
    /// start-first or stop-first
    #[arg(long)]
    rollback_order: Option<String>,
}

impl RollbackFlags {
    /// The flags, for the library (`swarm_controller::deploy::flags`).
    pub fn flags(&self) -> flags::RollbackFlags {
        flags::RollbackFlags {
            parallelism: self.rollback_parallelism,
            delay: self.rollback_delay,
            failure_action: self.rollback_failure_action.clone(),
            monitor: self.rollback_monitor,
            max_failure_ratio: self.rollback_max_failure_ratio,
            order: self.rollback_order.clone(),
        }
    }
}
