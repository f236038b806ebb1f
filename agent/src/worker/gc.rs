//! Image garbage collection: every `PERIOD`, the stored images that no task uses and that
//! no task used for `GRACE` are removed (with the blobs only they needed). The grace keeps
//! an image through a task's restart or a rolling update back, which would otherwise pull
//! it again.

use std::collections::{HashMap, HashSet};
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;

const PERIOD: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(600);

/// Which images tasks use (by task id) and when each image was last released.
#[derive(Debug, Default)]
pub struct ImageUse {
    by_task: HashMap<String, String>,
    released: HashMap<String, Instant>,
}

impl ImageUse {
    /// Task `task` uses the image with manifest digest `digest`.
    pub fn used(&mut self, task: &str, digest: &str) {
        self.by_task.insert(task.to_owned(), digest.to_owned());
    }

    /// Task `task` is gone.
    pub fn released(&mut self, task: &str, now: Instant) {
        if let Some(digest) = self.by_task.remove(task) {
            self.released.insert(digest, now);
        }
    }

    /// The images to keep at `now`: those in use, those released within the grace, and
    /// `stored` images this worker has not seen used yet (from an earlier run: they get a
    /// grace from `since`, when the worker started).
    pub fn images_to_keep(
        &mut self,
        stored: &[String],
        now: Instant,
        since: Instant,
    ) -> HashSet<String> {
        for digest in stored {
            self.released.entry(digest.clone()).or_insert(since);
        }
        self.released
            .retain(|_, at| now.saturating_duration_since(*at) < GRACE);
        self.by_task
            .values()
            .chain(self.released.keys())
            .cloned()
            .collect()
    }
}

/// Collects garbage every period while the worker lives.
pub async fn run(shared: Weak<Shared>) {
    let since = Instant::now();
    loop {
        tokio::time::sleep(PERIOD).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let stored = match shared.images.images() {
            Ok(stored) => stored,
            Err(error) => {
                tracing::warn!(%error, "cannot list the stored images");
                continue;
            }
        };
        let keep = shared
            .image_use
            .lock()
            .expect("not poisoned")
            .images_to_keep(&stored, Instant::now(), since);
        if stored.iter().all(|d| keep.contains(d)) {
            continue;
        }
        match shared.images.collect_garbage(&keep).await {
            Ok(report) => tracing::info!(
                images = report.images.len(),
                bytes = report.bytes,
                "removed unused images"
            ),
            Err(error) => tracing::warn!(%error, "image garbage collection failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_kept_while_used_and_for_the_grace_after() {
        let start = Instant::now();
        let mut use_ = ImageUse::default();
        let stored = vec!["old".to_owned(), "a".to_owned(), "b".to_owned()];
        use_.used("t1", "a");
        use_.used("t2", "b");
        // At first everything stays: in use, or from an earlier run within the grace.
        let keep = use_.images_to_keep(&stored, start, start);
        assert_eq!(keep.len(), 3);
        use_.released("t2", start + Duration::from_secs(60));
        let later = start + GRACE + Duration::from_secs(1);
        let keep = use_.images_to_keep(&stored, later, start);
        // `a` is in use; `b` was released within the grace; `old` was never used here.
        assert_eq!(keep, HashSet::from(["a".to_owned(), "b".to_owned()]));
        let keep = use_.images_to_keep(&stored, later + GRACE, start);
        assert_eq!(keep, HashSet::from(["a".to_owned()]));
    }
}
