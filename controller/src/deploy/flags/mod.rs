//! `service create|update` flags → a service spec, as plain data (the CLI's argument
//! parser stays in the CLI). A service's spec is made the way a stack file's is: flags
//! become a one-service Compose document (`document`) that the stack loader validates and
//! normalises, so `service create` and `stack deploy` give equal specs for equal intents and
//! share every check and default; an update changes a spec in place, with the values only
//! the loader checks fully (ports, healthchecks, signals) going through it too. Every error
//! names the flag it is about.

mod create;
mod document;
mod files;
mod rollback;
mod update;

pub use create::{CreateFlags, generated_name};
pub use document::load_service_document;
pub use rollback::RollbackFlags;
pub use update::UpdateFlags;

/// A flag value that cannot be used; the message names the flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagError {
    #[error("invalid --{flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid --{flag} {ratio}: use a number from 0 to 1")]
    Ratio { flag: &'static str, ratio: f64 },
    #[error(
        "--replicas can only be used with replicated or replicated-job mode (this service is {mode})"
    )]
    ReplicasOfGlobal { mode: &'static str },
    #[error("--max-concurrent can only be used with replicated-job mode{}", this.map_or(String::new(), |m| format!(" (this service is {m})")))]
    MaxConcurrentWithoutJob { this: Option<&'static str> },
    /// Docker's words: a job is run again when it changes, never rolled out.
    #[error("update and rollback configuration is not supported for jobs")]
    JobUpdatePolicy,
    #[error("the service has no healthcheck to change: give one with --health-cmd")]
    NoHealthcheck,
    /// What the stack loader found in the document, each naming its flag.
    #[error("invalid service:\n  {}", .errors.join("\n  "))]
    Service { errors: Vec<String> },
}

impl FlagError {
    fn invalid(flag: &'static str, value: &str, reason: impl Into<String>) -> FlagError {
        FlagError::Invalid {
            flag,
            value: value.to_owned(),
            reason: reason.into(),
        }
    }
}

/// `value` of `--flag` parsed as a `T`, or an error naming the flag.
fn parsed<T: std::str::FromStr>(flag: &'static str, value: &str) -> Result<T, FlagError>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e: T::Err| FlagError::invalid(flag, value, e.to_string()))
}

/// A fraction from 0 to 1 (`--*-max-failure-ratio`).
fn ratio(flag: &'static str, ratio: f64) -> Result<f64, FlagError> {
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err(FlagError::Ratio { flag, ratio })
    }
}

#[cfg(test)]
mod tests;
