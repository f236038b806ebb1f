//! Healthchecks: the service's (or else the image's) test run inside the container every
//! interval (every start interval during the start period, until a check passes); the
//! first pass makes a starting task running, `retries` failures in a row make it
//! unhealthy. Failures during the start period do not count until a check has passed.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::exec::lifecycle::Event;
use crate::exec::{ExecRequest, Runtime};
use crate::image::Healthcheck as ImageHealthcheck;

/// Docker's defaults for what a healthcheck leaves unset.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u64 = 3;
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
/// Output kept from a failing check, for the task's error.
const MAX_OUTPUT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    args: Vec<String>,
    interval: Duration,
    timeout: Duration,
    retries: u64,
    start_period: Duration,
    start_interval: Duration,
}

impl Check {
    /// How long after a check the next one runs: the start interval while the task is in
    /// its start period and no check has passed yet (Docker's `--health-start-interval`: a
    /// slow-starting service is found healthy soon after it is, not an interval later),
    /// else the interval.
    fn wait_after(&self, passed: bool, since_start: Duration) -> Duration {
        if !passed && since_start < self.start_period {
            self.start_interval
        } else {
            self.interval
        }
    }
}

/// The check a task runs: the service's healthcheck, else the image's; none when neither
/// has one or the service says `NONE`.
pub fn check_of(
    service: &Option<swarm_api::spec::Healthcheck>,
    image: Option<&ImageHealthcheck>,
) -> Option<Check> {
    let or = |d: Duration, default: Duration| if d.is_zero() { default } else { d };
    let (test, interval, timeout, retries, start_period, start_interval) = match (service, image) {
        (Some(s), _) => (
            s.test.clone(),
            s.interval.0,
            s.timeout.0,
            s.retries,
            s.start_period.0,
            s.start_interval.0,
        ),
        (None, Some(i)) => (
            i.test.clone(),
            i.interval.unwrap_or_default(),
            i.timeout.unwrap_or_default(),
            i.retries.map_or(0, u64::from),
            i.start_period.unwrap_or_default(),
            i.start_interval.unwrap_or_default(),
        ),
        (None, None) => return None,
    };
    let args = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
        }
        _ => return None, // NONE, or empty
    };
    Some(Check {
        args,
        interval: or(interval, DEFAULT_INTERVAL),
        timeout: or(timeout, DEFAULT_TIMEOUT),
        retries: if retries == 0 {
            DEFAULT_RETRIES
        } else {
            retries
        },
        start_period,
        start_interval: or(start_interval, DEFAULT_START_INTERVAL),
    })
}

/// A running task's healthcheck and what it has seen so far.
pub struct Health {
    check: Check,
    started: Instant,
    next_at: Instant,
    failures: u64,
    passed: bool,
}

impl Health {
    pub fn new(check: Check) -> Self {
        let now = Instant::now();
        // The first check runs at once: a task that is healthy from the start is running
        // without waiting a whole interval.
        Health {
            check,
            started: now,
            next_at: now,
            failures: 0,
            passed: false,
        }
    }
}

/// Runs checks until one changes something: the first pass (`Healthy`), or too many
/// failures (`Unhealthy`). Never resolves without a check.
pub async fn next(health: &mut Option<Health>, runtime: &Arc<dyn Runtime>, id: &str) -> Event {
    let Some(health) = health else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep_until(health.next_at).await;
        let now = Instant::now();
        health.next_at = now
            + health
                .check
                .wait_after(health.passed, now.duration_since(health.started));
        let request = ExecRequest {
            args: health.check.args.clone(),
            timeout: health.check.timeout,
            max_output: MAX_OUTPUT,
        };
        let failure = match runtime.exec(id, &request).await {
            Ok(output) if output.exit_code == Some(0) => None,
            Ok(output) => Some(match output.exit_code {
                Some(code) => format!(
                    "healthcheck exited {code}: {}",
                    String::from_utf8_lossy(&output.output).trim()
                ),
                None => format!("healthcheck timed out after {:?}", health.check.timeout),
            }),
            Err(error) => Some(format!("healthcheck could not run: {error}")),
        };
        match failure {
            None => {
                health.failures = 0;
                if !health.passed {
                    health.passed = true;
                    return Event::Healthy;
                }
            }
            Some(_) if !health.passed && health.started.elapsed() < health.check.start_period => {}
            Some(failure) => {
                health.failures += 1;
                if health.failures >= health.check.retries {
                    return Event::Unhealthy(failure);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarm_api::units::GoDuration;

    fn service(test: &[&str]) -> Option<swarm_api::spec::Healthcheck> {
        Some(swarm_api::spec::Healthcheck {
            test: test.iter().map(|s| s.to_string()).collect(),
            interval: GoDuration(Duration::from_secs(2)),
            timeout: GoDuration(Duration::ZERO),
            retries: 0,
            start_period: GoDuration(Duration::ZERO),
            start_interval: GoDuration(Duration::ZERO),
        })
    }

    #[test]
    fn the_service_check_wins_and_none_turns_it_off() {
        let image = ImageHealthcheck {
            test: vec!["CMD".into(), "true".into()],
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some(5),
        };
        let check = check_of(&service(&["CMD-SHELL", "wget -q localhost"]), Some(&image)).unwrap();
        assert_eq!(check.args, ["/bin/sh", "-c", "wget -q localhost"]);
        assert_eq!(check.interval, Duration::from_secs(2));
        assert_eq!(
            (check.timeout, check.retries),
            (DEFAULT_TIMEOUT, DEFAULT_RETRIES)
        );
        let from_image = check_of(&None, Some(&image)).unwrap();
        assert_eq!(
            (from_image.args.clone(), from_image.retries),
            (vec!["true".to_owned()], 5)
        );
        assert_eq!(check_of(&service(&["NONE"]), Some(&image)), None);
        assert_eq!(check_of(&None, None), None);
    }

    #[test]
    fn the_start_interval_paces_checks_until_one_passes_in_the_start_period() {
        let mut spec = service(&["CMD", "true"]);
        let healthcheck = spec.as_mut().unwrap();
        healthcheck.start_period = GoDuration(Duration::from_secs(60));
        healthcheck.start_interval = GoDuration(Duration::from_secs(1));
        let check = check_of(&spec, None).unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(check.wait_after(false, Duration::ZERO), second);
        assert_eq!(check.wait_after(false, Duration::from_secs(59)), second);
        // Past the start period, or once a check passed: the interval.
        assert_eq!(
            check.wait_after(false, Duration::from_secs(60)),
            Duration::from_secs(2)
        );
        assert_eq!(check.wait_after(true, second), Duration::from_secs(2));
        // Unset, Docker's 5 s.
        let plain = check_of(&service(&["CMD", "true"]), None).unwrap();
        assert_eq!(plain.start_interval, DEFAULT_START_INTERVAL);
    }
}
