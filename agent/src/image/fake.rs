//! Images in memory for simulation tests: every valid reference "pulls" at once (or after a
//! scripted delay, in tokio's time) into an image whose digest derives from the reference,
//! a task's root filesystem is an empty directory, and no registry or mount is involved.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Credentials, GcReport, Image, ImageConfig, ImageError, ImageSource, parse_reference};

/// The fake image source. Images run `cmd` unless the task says otherwise.
pub struct FakeImages {
    /// How long each pull takes (tokio's time: pause it for deterministic runs).
    pull_time: Duration,
    /// References whose pulls fail, with the detail given.
    missing: Mutex<BTreeMap<String, String>>,
    /// The stored images, by manifest digest.
    stored: Mutex<BTreeMap<String, Image>>,
    /// Every pull asked for, in order.
    pulls: Mutex<Vec<String>>,
}

impl FakeImages {
    pub fn new(pull_time: Duration) -> Self {
        FakeImages {
            pull_time,
            missing: Mutex::default(),
            stored: Mutex::default(),
            pulls: Mutex::default(),
        }
    }

    /// Pulls of `reference` fail from now on, as for an image the registry does not have.
    pub fn remove_from_registry(&self, reference: &str, detail: &str) {
        let mut missing = self.missing.lock().expect("not poisoned");
        missing.insert(reference.to_owned(), detail.to_owned());
    }

    /// The references pulled so far, in order.
    pub fn pulls(&self) -> Vec<String> {
        self.pulls.lock().expect("not poisoned").clone()
    }

    fn image(reference: &str) -> Result<Image, ImageError> {
        let parsed = parse_reference(reference)?;
        let digest = format!("sha256:{:x}", Sha256::digest(parsed.to_string().as_bytes()));
        Ok(Image {
            reference: parsed,
            rootfs: PathBuf::from("/fake-images").join(&digest[7..]),
            digest,
            config: ImageConfig {
                cmd: vec!["serve".to_owned()],
                ..ImageConfig::default()
            },
        })
    }

    fn stored_as(&self, digest: &str, reference: &str) -> Result<Image, ImageError> {
        let stored = self.stored.lock().expect("not poisoned");
        stored
            .get(digest)
            .cloned()
            .ok_or_else(|| ImageError::NotStored {
                image: reference.to_owned(),
            })
    }
}

#[async_trait::async_trait]
impl ImageSource for FakeImages {
    async fn pull_with(
        &self,
        reference: &str,
        _credentials: &HashMap<String, Credentials>,
    ) -> Result<Image, ImageError> {
        self.pulls
            .lock()
            .expect("not poisoned")
            .push(reference.to_owned());
        let image = FakeImages::image(reference)?;
        tokio::time::sleep(self.pull_time).await;
        let missing = self
            .missing
            .lock()
            .expect("not poisoned")
            .get(reference)
            .cloned();
        if let Some(detail) = missing {
            return Err(ImageError::NotFound {
                image: reference.to_owned(),
                detail,
            });
        }
        let mut stored = self.stored.lock().expect("not poisoned");
        stored.insert(image.digest.clone(), image.clone());
        Ok(image)
    }

    fn stored_image(&self, reference: &str) -> Result<Image, ImageError> {
        let parsed = parse_reference(reference)?;
        let Some(digest) = parsed.digest.clone() else {
            return Err(ImageError::InvalidReference {
                reference: reference.into(),
                reason: "a stored image is found by digest: give NAME@sha256:…".into(),
            });
        };
        self.stored_as(&digest, reference)
    }

    fn stored_by_digest(&self, reference: &str, digest: &str) -> Result<Image, ImageError> {
        self.stored_as(digest, reference)
    }

    fn images(&self) -> Result<Vec<String>, ImageError> {
        Ok(self
            .stored
            .lock()
            .expect("not poisoned")
            .keys()
            .cloned()
            .collect())
    }

    async fn collect_garbage(&self, in_use: &HashSet<String>) -> Result<GcReport, ImageError> {
        let mut stored = self.stored.lock().expect("not poisoned");
        let mut report = GcReport::default();
        stored.retain(|digest, _| {
            let keep = in_use.contains(digest);
            if !keep {
                report.images.push(digest.clone());
            }
            keep
        });
        Ok(report)
    }

    fn mount_rootfs(&self, _image: &Image, dir: &Path) -> Result<PathBuf, ImageError> {
        let merged = dir.join("merged");
        std::fs::create_dir_all(&merged)
            .map_err(|e| ImageError::io("cannot create task rootfs directory", &merged, e))?;
        Ok(merged)
    }

    fn release_rootfs(&self, dir: &Path) -> Result<(), ImageError> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(ImageError::io("cannot remove task rootfs", dir, e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pulls_take_their_time_and_fail_for_what_the_registry_lacks() {
        let images = FakeImages::new(Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let image = images.pull_with("web:1", &HashMap::new()).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(image.reference.to_string(), "docker.io/library/web:1");
        assert_eq!(
            images.stored_by_digest("web:1", &image.digest).unwrap(),
            image
        );
        assert_eq!(images.images().unwrap(), vec![image.digest.clone()]);

        images.remove_from_registry("web:2", "manifest unknown");
        let error = images
            .pull_with("web:2", &HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "image web:2 not found: manifest unknown");
        assert_eq!(images.pulls(), vec!["web:1", "web:2"]);

        let report = images.collect_garbage(&HashSet::new()).await.unwrap();
        assert_eq!(report.images, vec![image.digest.clone()]);
        assert!(images.images().unwrap().is_empty());
    }
}
