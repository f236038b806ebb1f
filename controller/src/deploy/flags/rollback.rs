//! The `--rollback-*` flags of `service create|update`: the service's `rollback_config`
//! (how a rollback, automatic or asked for, rolls out), as Docker's.

use serde_json::{Value, json};
use swarm_api::spec::{FailureAction, UpdatePolicy};
use swarm_api::units::GoDuration;

use super::{FlagError, ratio};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollbackFlags {
    pub parallelism: Option<u64>,
    pub delay: Option<GoDuration>,
    pub failure_action: Option<String>,
    pub monitor: Option<GoDuration>,
    pub max_failure_ratio: Option<f64>,
    pub order: Option<String>,
}

impl RollbackFlags {
    /// The flags as a Compose `rollback_config` section (which the stack loader checks and
    /// completes with defaults); `None` when none is given.
    pub fn section(&self) -> Result<Option<Value>, FlagError> {
        let mut section = serde_json::Map::new();
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                section.insert(key.to_owned(), value);
            }
        };
        put("parallelism", self.parallelism.map(|p| json!(p)));
        put("delay", self.delay.map(|d| json!(d.to_string())));
        put("failure_action", self.failure_action()?.map(|a| json!(a)));
        put("monitor", self.monitor.map(|m| json!(m.to_string())));
        put(
            "max_failure_ratio",
            self.max_failure_ratio.map(|r| json!(r)),
        );
        put("order", self.order.as_ref().map(|o| json!(o)));
        Ok((!section.is_empty()).then_some(Value::Object(section)))
    }

    /// Changes `policy` (a service's `rollback`) as the flags say.
    pub fn apply(&self, policy: &mut UpdatePolicy) -> Result<(), FlagError> {
        if let Some(parallelism) = self.parallelism {
            policy.parallelism = parallelism;
        }
        if let Some(delay) = self.delay {
            policy.delay = delay;
        }
        if let Some(action) = self.failure_action()? {
            policy.failure_action = action;
        }
        if let Some(monitor) = self.monitor {
            policy.monitor = monitor;
        }
        if let Some(max) = self.max_failure_ratio {
            policy.max_failure_ratio = ratio("rollback-max-failure-ratio", max)?;
        }
        if let Some(order) = &self.order {
            policy.order = serde_json::from_value(json!(order)).map_err(|_| {
                FlagError::invalid("rollback-order", order, "use start-first or stop-first")
            })?;
        }
        Ok(())
    }

    /// `--rollback-failure-action`, checked: a rollback cannot itself roll back.
    fn failure_action(&self) -> Result<Option<FailureAction>, FlagError> {
        let Some(action) = self.failure_action.as_deref() else {
            return Ok(None);
        };
        match serde_json::from_value::<FailureAction>(json!(action)) {
            Ok(action @ (FailureAction::Pause | FailureAction::Continue)) => Ok(Some(action)),
            _ => Err(FlagError::invalid(
                "rollback-failure-action",
                action,
                "use pause or continue",
            )),
        }
    }
}
