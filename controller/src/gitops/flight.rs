//! One fetch at a time per mirror, shared by the callers that asked while it waited.
//!
//! A caller says how fresh its result must be: from a run that started at or after
//! `not_before`. A webhook asks for `now` (a run already going may have missed the push it
//! announces, so it waits for the next); a poll may accept any run of its interval, so
//! repositories on one URL polled at different moments share one fetch per interval. The
//! callers that arrive while a run goes and need a fresher one share the next run.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

pub struct Flight<T> {
    state: Mutex<State<T>>,
    finished: Condvar,
}

struct State<T> {
    /// When the run going now started.
    running: Option<Instant>,
    /// Runs finished so far.
    runs: u64,
    /// When the last finished run started, and its result (`None`: it panicked).
    last: Option<(Instant, Option<T>)>,
}

impl<T: Clone> Flight<T> {
    pub fn new() -> Self {
        Flight {
            state: Mutex::new(State {
                running: None,
                runs: 0,
                last: None,
            }),
            finished: Condvar::new(),
        }
    }

    /// The result of a run of `work` that started at or after `not_before`: the last one's,
    /// this caller's own, or one it waited for with others. `failed` is the result of a run
    /// that panicked.
    pub fn run(
        &self,
        not_before: Instant,
        work: impl FnOnce() -> T,
        failed: impl FnOnce() -> T,
    ) -> T {
        let mut state = self.lock();
        loop {
            if let Some((started, result)) = &state.last
                && *started >= not_before
            {
                return result.clone().unwrap_or_else(failed);
            }
            if state.running.is_none() {
                let started = Instant::now();
                state.running = Some(started);
                drop(state);
                let guard = Running {
                    flight: self,
                    started,
                };
                let result = work();
                guard.finish(Some(result.clone()));
                return result;
            }
            state = self
                .finished
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// How many runs have finished.
    pub fn runs(&self) -> u64 {
        self.lock().runs
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic inside `work` happens outside the lock, so poisoning is not a torn state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<T: Clone> Default for Flight<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks the run finished even when `work` panics, so waiters are not left waiting.
struct Running<'f, T: Clone> {
    flight: &'f Flight<T>,
    started: Instant,
}

impl<T: Clone> Running<'_, T> {
    fn finish(self, result: Option<T>) {
        self.record(result);
        std::mem::forget(self);
    }

    fn record(&self, result: Option<T>) {
        let mut state = self.flight.lock();
        state.running = None;
        state.runs += 1;
        state.last = Some((self.started, result));
        self.flight.finished.notify_all();
    }
}

impl<T: Clone> Drop for Running<'_, T> {
    fn drop(&mut self) {
        self.record(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn callers_arriving_during_a_run_share_the_next_one() {
        let flight = Arc::new(Flight::<u64>::new());
        let runs = Arc::new(AtomicU64::new(0));
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let work: Arc<dyn Fn() -> u64 + Send + Sync> = {
            let runs = runs.clone();
            Arc::new(move || {
                let number = runs.fetch_add(1, Ordering::SeqCst) + 1;
                entered_tx.send(number).unwrap();
                release_rx.lock().unwrap().recv().unwrap();
                number
            })
        };
        let call = |flight: Arc<Flight<u64>>, work: Arc<dyn Fn() -> u64 + Send + Sync>| {
            thread::spawn(move || flight.run(Instant::now(), || work(), || 0))
        };
        let first = call(flight.clone(), work.clone());
        assert_eq!(entered_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        // Three callers arrive while run 1 is in flight.
        let waiters: Vec<_> = (0..3).map(|_| call(flight.clone(), work.clone())).collect();
        thread::sleep(Duration::from_millis(100));
        release_tx.send(()).unwrap();
        assert_eq!(first.join().unwrap(), 1);
        // Exactly one of them starts run 2; the others wait for it.
        assert_eq!(entered_rx.recv_timeout(Duration::from_secs(5)).unwrap(), 2);
        release_tx.send(()).unwrap();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), 2);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(flight.runs(), 2);
        assert!(entered_rx.try_recv().is_err());
    }

    #[test]
    fn a_caller_alone_runs_at_once_every_time() {
        let flight = Flight::new();
        assert_eq!(flight.run(Instant::now(), || "a", || "failed"), "a");
        assert_eq!(flight.run(Instant::now(), || "b", || "failed"), "b");
        assert_eq!(flight.runs(), 2);
    }

    #[test]
    fn a_run_fresh_enough_is_shared_without_running_again() {
        let flight = Flight::new();
        let interval_start = Instant::now();
        assert_eq!(
            flight.run(Instant::now(), || "polled", || "failed"),
            "polled"
        );
        // Another repository on the URL, polled later in the same interval.
        assert_eq!(
            flight.run(interval_start, || "again", || "failed"),
            "polled"
        );
        assert_eq!(flight.runs(), 1);
        // A webhook wants a fetch from after it arrived.
        assert_eq!(
            flight.run(Instant::now(), || "pushed", || "failed"),
            "pushed"
        );
        assert_eq!(flight.runs(), 2);
    }

    #[test]
    fn a_run_that_panics_leaves_the_flight_usable() {
        let flight = Arc::new(Flight::<&str>::new());
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let panicking = {
            let flight = flight.clone();
            thread::spawn(move || {
                flight.run(
                    Instant::now(),
                    || {
                        entered_tx.send(()).unwrap();
                        release_rx.recv().unwrap();
                        panic!("fetch crashed");
                    },
                    || "failed",
                )
            })
        };
        entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        release_tx.send(()).unwrap();
        assert!(panicking.join().is_err());
        assert_eq!(flight.run(Instant::now(), || "fresh", || "failed"), "fresh");
    }
}
