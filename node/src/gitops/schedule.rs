//! When each repository is due, and for what: a fetch (on its interval, at once when it was
//! just added or a sync was asked), a drift check (its services changed). Pure: the clock
//! comes in, so it is tested without waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use swarm_api::gitops::{SyncRequest, Trigger};
use swarm_api::units::Millis;

/// The longest a failing repository waits before it is fetched again, whatever its interval.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The shortest time between two drift checks of one repository: a rollout changes its
/// services many times a second.
pub const DRIFT_SPACING: Duration = Duration::from_secs(1);

/// A repository as the schedule needs it.
#[derive(Debug, Clone)]
pub struct RepoView {
    pub name: String,
    pub interval: Duration,
    pub sync: Option<SyncRequest>,
    /// When a leader last recorded a fetch (`None`: never, it was just added).
    pub fetched_at: Option<Millis>,
    pub stacks: BTreeSet<String>,
}

/// A fetch to make: why, and how old a fetch of the same URL may be to serve it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchWant {
    pub trigger: Trigger,
    pub not_before: Instant,
}

/// One pass over one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    pub fetch: Option<FetchWant>,
    pub drift: bool,
    /// Whether a drift found may be healed now (at most once per interval).
    pub may_heal: bool,
}

/// What a pass did that the schedule follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// Whether the fetch succeeded, if one was made.
    pub fetched: Option<bool>,
    pub healed: bool,
}

#[derive(Debug)]
struct Entry {
    interval: Duration,
    next_poll: Instant,
    pending: Option<FetchWant>,
    sync_seen: Option<u64>,
    failures: u32,
    drift: bool,
    drift_not_before: Instant,
    last_heal: Option<Instant>,
    running: bool,
    stacks: BTreeSet<String>,
}

/// The repositories this leader watches. A new leader starts empty: every repository is
/// fetched at once and checked for drift.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: BTreeMap<String, Entry>,
}

impl Schedule {
    /// Follows the repositories as the store has them now.
    pub fn update(&mut self, now: Instant, repos: &[RepoView]) {
        self.entries
            .retain(|name, _| repos.iter().any(|repo| &repo.name == name));
        for repo in repos {
            let sync_index = repo.sync.as_ref().map(|sync| sync.index);
            let entry = self
                .entries
                .entry(repo.name.clone())
                .or_insert_with(|| Entry {
                    interval: repo.interval,
                    next_poll: now,
                    pending: Some(FetchWant {
                        trigger: first_trigger(repo),
                        not_before: now,
                    }),
                    sync_seen: sync_index,
                    failures: 0,
                    drift: true,
                    drift_not_before: now,
                    last_heal: None,
                    running: false,
                    stacks: BTreeSet::new(),
                });
            if let Some(sync) = &repo.sync
                && entry.sync_seen.is_none_or(|seen| seen < sync.index)
            {
                entry.sync_seen = Some(sync.index);
                entry.pending = Some(FetchWant {
                    trigger: sync.trigger,
                    not_before: now,
                });
            }
            if entry.interval != repo.interval {
                entry.next_poll = entry.next_poll.min(now + repo.interval);
                entry.interval = repo.interval;
            }
            entry.stacks.clone_from(&repo.stacks);
        }
    }

    /// The repository that owns `stack`, by the stacks last seen.
    pub fn owner_of(&self, stack: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, entry)| entry.stacks.contains(stack))
            .map(|(name, _)| name.as_str())
    }

    /// Repository `name` is to be checked for drift.
    pub fn drifted(&mut self, name: &str) {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.drift = true;
        }
    }

    pub fn drifted_all(&mut self) {
        for entry in self.entries.values_mut() {
            entry.drift = true;
        }
    }

    /// The passes due at `now`, each repository marked running until [`Schedule::finished`].
    pub fn take_due(&mut self, now: Instant) -> Vec<(String, Work)> {
        let mut due = Vec::new();
        for (name, entry) in &mut self.entries {
            if entry.running {
                continue;
            }
            let fetch = entry.pending.take().or_else(|| {
                (now >= entry.next_poll).then(|| FetchWant {
                    trigger: Trigger::Poll,
                    // Repositories on one URL polled at different moments of an interval
                    // share one fetch.
                    not_before: now.checked_sub(entry.interval).unwrap_or(now),
                })
            });
            let drift = entry.drift && now >= entry.drift_not_before;
            if fetch.is_none() && !drift {
                continue;
            }
            if drift {
                entry.drift = false;
                entry.drift_not_before = now + DRIFT_SPACING;
            }
            entry.running = true;
            due.push((
                name.clone(),
                Work {
                    fetch,
                    drift,
                    may_heal: entry
                        .last_heal
                        .is_none_or(|at| now.duration_since(at) >= entry.interval),
                },
            ));
        }
        due
    }

    /// Repository `name`'s pass ended with `report`.
    pub fn finished(&mut self, name: &str, now: Instant, report: Report) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        entry.running = false;
        if report.healed {
            entry.last_heal = Some(now);
        }
        match report.fetched {
            Some(true) => {
                entry.failures = 0;
                entry.next_poll = now + entry.interval;
            }
            Some(false) => {
                entry.failures += 1;
                entry.next_poll = now + backoff(entry.failures, entry.interval);
            }
            None => {}
        }
    }

    /// When the next pass is due (`None`: nothing is waiting but what runs).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .filter(|entry| !entry.running)
            .map(|entry| {
                let poll = if entry.pending.is_some() {
                    now
                } else {
                    entry.next_poll
                };
                if entry.drift {
                    poll.min(entry.drift_not_before)
                } else {
                    poll
                }
            })
            .min()
    }
}

/// Why a leader's first fetch of a repository is made: a sync asked after the last
/// recorded fetch (which the previous leader may not have served), the repository just
/// added, or the interval.
fn first_trigger(repo: &RepoView) -> Trigger {
    match (&repo.sync, repo.fetched_at) {
        (Some(sync), fetched) if fetched.is_none_or(|at| sync.at >= at) => sync.trigger,
        (_, None) => Trigger::Sync,
        (_, Some(_)) => Trigger::Poll,
    }
}

/// How long to wait after the `failures`-th failed fetch in a row: doubling from a second,
/// at most the interval (a failing repository is not fetched more often than a healthy one
/// past the first few tries) and at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let doubling = Duration::from_secs(1 << failures.saturating_sub(1).min(16));
    doubling.min(interval).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, sync: Option<u64>) -> RepoView {
        RepoView {
            name: name.into(),
            interval: Duration::from_secs(15),
            sync: sync.map(|index| SyncRequest {
                trigger: Trigger::Webhook,
                at: 1,
                index,
            }),
            fetched_at: None,
            stacks: BTreeSet::from(["web".to_owned()]),
        }
    }

    #[test]
    fn a_repository_is_fetched_at_once_then_on_its_interval_and_on_each_new_sync() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.update(start, &[repo("app", Some(3))]);
        let due = schedule.take_due(start);
        assert_eq!(due.len(), 1);
        let work = due[0].1;
        assert_eq!(
            work.fetch.unwrap().trigger,
            Trigger::Webhook,
            "a webhook came before any fetch"
        );
        assert!(work.drift && work.may_heal);
        assert!(schedule.take_due(start).is_empty(), "running");
        schedule.finished(
            "app",
            start,
            Report {
                fetched: Some(true),
                healed: false,
            },
        );
        assert!(
            schedule
                .take_due(start + Duration::from_secs(14))
                .is_empty()
        );
        assert_eq!(schedule.owner_of("web"), Some("app"));

        let at = start + Duration::from_secs(15);
        let due = schedule.take_due(at);
        let fetch = due[0].1.fetch.unwrap();
        assert_eq!(fetch.trigger, Trigger::Poll);
        assert_eq!(
            fetch.not_before, start,
            "a fetch since the interval began serves"
        );
        let fetched = Report {
            fetched: Some(true),
            healed: false,
        };
        schedule.finished("app", at, fetched);

        // The same sync request is not fetched twice; a new one is, at once.
        schedule.update(at, &[repo("app", Some(3))]);
        assert!(schedule.take_due(at).is_empty());
        schedule.update(at, &[repo("app", Some(9))]);
        let due = schedule.take_due(at);
        assert_eq!(due[0].1.fetch.unwrap().trigger, Trigger::Webhook);
        assert_eq!(due[0].1.fetch.unwrap().not_before, at);

        schedule.update(at, &[]);
        assert_eq!(schedule.next_wake(at), None);
    }

    #[test]
    fn a_new_leader_fetches_for_the_sync_it_may_have_missed() {
        let mut added = repo("app", None);
        assert_eq!(first_trigger(&added), Trigger::Sync);
        added.fetched_at = Some(5);
        assert_eq!(first_trigger(&added), Trigger::Poll);
        let mut synced = repo("app", Some(9));
        synced.fetched_at = Some(0);
        assert_eq!(
            first_trigger(&synced),
            Trigger::Webhook,
            "asked at 1, after 0"
        );
        synced.fetched_at = Some(2);
        assert_eq!(first_trigger(&synced), Trigger::Poll, "served before");
    }

    #[test]
    fn drift_checks_are_spaced_and_heals_come_once_an_interval() {
        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.update(start, &[repo("app", None)]);
        schedule.take_due(start);
        let healed = Report {
            fetched: Some(true),
            healed: true,
        };
        schedule.finished("app", start, healed);
        schedule.drifted("app");
        assert!(schedule.take_due(start).is_empty(), "spaced");
        let later = start + DRIFT_SPACING;
        assert_eq!(schedule.next_wake(start), Some(later));
        let due = schedule.take_due(later);
        assert!(due[0].1.drift && due[0].1.fetch.is_none());
        assert!(!due[0].1.may_heal, "healed less than an interval ago");
    }

    #[test]
    fn failed_fetches_back_off_up_to_the_interval() {
        let interval = Duration::from_secs(15);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(n, interval).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 15, 15]);
        assert_eq!(
            backoff(30, Duration::from_secs(3600)),
            Duration::from_secs(300)
        );

        let start = Instant::now();
        let mut schedule = Schedule::default();
        schedule.update(start, &[repo("app", None)]);
        schedule.take_due(start);
        let failed = Report {
            fetched: Some(false),
            healed: false,
        };
        schedule.finished("app", start, failed);
        assert!(
            schedule
                .take_due(start + Duration::from_millis(500))
                .is_empty()
        );
        assert_eq!(schedule.take_due(start + Duration::from_secs(1)).len(), 1);
    }
}
