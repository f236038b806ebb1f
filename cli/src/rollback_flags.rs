//! The `--rollback-*` flags of `service create|update`: the service's `rollback_config`
//! (how a rollback, automatic or asked for, rolls out), as Docker's.

use clap::Args;
use serde_json::{Value, json};
use swarm_api::spec::{FailureAction, UpdatePolicy};
use swarm_api::units::GoDuration;

#[derive(Debug, Clone, Default, Args)]
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
    /// The flags as a Compose `rollback_config` section (which the stack loader checks and
    /// completes with defaults); `None` when none is given.
    pub fn section(&self) -> anyhow::Result<Option<Value>> {
        let mut section = serde_json::Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                section.insert(key.to_owned(), value);
            }
        };
        put("parallelism", self.rollback_parallelism.map(|p| json!(p)));
        put("delay", self.rollback_delay.map(|d| json!(d.to_string())));
        put("failure_action", self.failure_action()?.map(|a| json!(a)));
        put(
            "monitor",
            self.rollback_monitor.map(|m| json!(m.to_string())),
        );
        put(
            "max_failure_ratio",
            self.rollback_max_failure_ratio.map(|r| json!(r)),
        );
        put("order", self.rollback_order.as_ref().map(|o| json!(o)));
        Ok((!section.is_empty()).then_some(Value::Object(section)))
    }

    /// Changes `policy` (a service's `rollback`) as the flags say.
    pub fn apply(&self, policy: &mut UpdatePolicy) -> anyhow::Result<()> {
        if let Some(parallelism) = self.rollback_parallelism {
            policy.parallelism = parallelism;
        }
        if let Some(delay) = self.rollback_delay {
            policy.delay = delay;
        }
        if let Some(action) = self.failure_action()? {
            policy.failure_action = serde_json::from_value(json!(action))?;
        }
        if let Some(monitor) = self.rollback_monitor {
            policy.monitor = monitor;
        }
        if let Some(ratio) = self.rollback_max_failure_ratio {
            anyhow::ensure!(
                (0.0..=1.0).contains(&ratio),
                "invalid --rollback-max-failure-ratio {ratio}: use a number from 0 to 1"
            );
            policy.max_failure_ratio = ratio;
        }
        if let Some(order) = &self.rollback_order {
            policy.order = serde_json::from_value(json!(order)).map_err(|_| {
                anyhow::anyhow!("invalid --rollback-order {order:?}: use start-first or stop-first")
            })?;
        }
        Ok(())
    }

    /// `--rollback-failure-action`, checked: a rollback cannot itself roll back.
    fn failure_action(&self) -> anyhow::Result<Option<&str>> {
        let Some(action) = self.rollback_failure_action.as_deref() else {
            return Ok(None);
        };
        match serde_json::from_value::<FailureAction>(json!(action)) {
            Ok(FailureAction::Pause | FailureAction::Continue) => Ok(Some(action)),
            _ => {
                anyhow::bail!("invalid --rollback-failure-action {action:?}: use pause or continue")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_a_section_and_change_a_policy() {
        let flags = RollbackFlags {
            rollback_parallelism: Some(0),
            rollback_monitor: Some("2s".parse().unwrap()),
            rollback_failure_action: Some("continue".into()),
            rollback_order: Some("start-first".into()),
            ..Default::default()
        };
        assert_eq!(
            flags.section().unwrap(),
            Some(
                json!({"parallelism": 0, "monitor": "2s", "failure_action": "continue", "order": "start-first"})
            )
        );
        assert_eq!(RollbackFlags::default().section().unwrap(), None);
        let mut policy = UpdatePolicy::default();
        flags.apply(&mut policy).unwrap();
        assert_eq!(policy.parallelism, 0);
        assert_eq!(policy.monitor.to_string(), "2s");
        assert_eq!(policy.failure_action, FailureAction::Continue);
        assert_eq!(policy.order, swarm_api::spec::UpdateOrder::StartFirst);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (flags, message) in [
            (
                RollbackFlags {
                    rollback_failure_action: Some("rollback".into()),
                    ..Default::default()
                },
                "invalid --rollback-failure-action \"rollback\": use pause or continue",
            ),
            (
                RollbackFlags {
                    rollback_order: Some("sideways".into()),
                    ..Default::default()
                },
                "invalid --rollback-order \"sideways\": use start-first or stop-first",
            ),
            (
                RollbackFlags {
                    rollback_max_failure_ratio: Some(2.0),
                    ..Default::default()
                },
                "invalid --rollback-max-failure-ratio 2: use a number from 0 to 1",
            ),
        ] {
            let error = flags.apply(&mut UpdatePolicy::default()).unwrap_err();
            assert_eq!(error.to_string(), message);
        }
    }
}
