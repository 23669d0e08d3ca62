//! Image garbage collection, as upstream's image manager: when the image filesystem
//! is fuller than `--image-gc-high-threshold` percent, unused images (no container
//! of any state uses them, not pinned, not the pause image, unused for at least
//! `--image-minimum-gc-age`) are removed through CRI, least recently used first,
//! until usage is down to `--image-gc-low-threshold` percent. Under disk pressure the
//! eviction manager collects before it evicts pods.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::cri::Cri;

/// The image GC settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Usage percent of the image filesystem that starts a collection (100: never).
    pub high_percent: u8,
    /// Usage percent a collection frees down to.
    pub low_percent: u8,
    /// How long an image must have been unused before it may go.
    pub minimum_age: Duration,
}

impl Policy {
    /// Checks the flags as upstream does.
    pub fn new(high_percent: u8, low_percent: u8, minimum_age: Duration) -> Result<Policy> {
        if high_percent > 100 || low_percent > 100 {
            bail!("--image-gc-high-threshold and --image-gc-low-threshold are percentages (0-100)");
        }
        if low_percent > high_percent {
            bail!(
                "--image-gc-low-threshold ({low_percent}) must not be above \
                 --image-gc-high-threshold ({high_percent})"
            );
        }
        Ok(Policy {
            high_percent,
            low_percent,
            minimum_age,
        })
    }

    /// The bytes to free for a filesystem of `capacity` with `available` left; 0 when
    /// usage is not above the high threshold.
    pub fn bytes_to_free(&self, capacity: u64, available: u64) -> u64 {
        if self.high_percent >= 100 || capacity == 0 {
            return 0;
        }
        let used = capacity.saturating_sub(available);
        let used_percent = used as f64 * 100.0 / capacity as f64;
        if used_percent <= self.high_percent as f64 {
            return 0;
        }
        let target = (capacity as f64 * self.low_percent as f64 / 100.0) as u64;
        used.saturating_sub(target)
    }
}

/// An image as the collector sees it.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: String,
    pub size: u64,
    pub in_use: bool,
    /// When this agent last saw a container use it (or first saw the image).
    pub last_used: Instant,
}

/// The images to remove to free `bytes`: unused ones idle for the minimum age,
/// least recently used first (may free less when nothing else may go).
pub fn choose(records: &[Record], bytes: u64, now: Instant, minimum_age: Duration) -> Vec<String> {
    let mut unused: Vec<&Record> = records
        .iter()
        .filter(|r| !r.in_use && now.saturating_duration_since(r.last_used) >= minimum_age)
        .collect();
    unused.sort_by_key(|r| r.last_used);
    let mut freed = 0u64;
    let mut chosen = Vec::new();
    for record in unused {
        if freed >= bytes {
            break;
        }
        freed += record.size;
        chosen.push(record.id.clone());
    }
    chosen
}

/// Remembers when each image was last used, across collections.
#[derive(Default)]
pub struct Collector {
    last_used: HashMap<String, Instant>,
}

impl Collector {
    /// Removes unused images to free `bytes`; returns the bytes removed.
    pub async fn collect(
        &mut self,
        cri: &mut Cri,
        bytes: u64,
        minimum_age: Duration,
    ) -> Result<u64> {
        let now = Instant::now();
        let images = cri.list_images().await?;
        let in_use: HashSet<String> = cri
            .list_containers()
            .await?
            .into_iter()
            .flat_map(|c| [c.image_ref, c.image.map(|i| i.image).unwrap_or_default()])
            .collect();
        let mut records = Vec::new();
        for image in &images {
            let is_pause = image
                .repo_tags
                .iter()
                .any(|t| t == crate::containerd::PAUSE_IMAGE);
            let used = image.pinned
                || is_pause
                || in_use.contains(&image.id)
                || image.repo_tags.iter().any(|t| in_use.contains(t));
            let last_used = self.last_used.entry(image.id.clone()).or_insert(now);
            if used {
                *last_used = now;
            }
            records.push(Record {
                id: image.id.clone(),
                size: image.size,
                in_use: used,
                last_used: *last_used,
            });
        }
        let present: HashSet<&str> = images.iter().map(|i| i.id.as_str()).collect();
        self.last_used.retain(|id, _| present.contains(id.as_str()));
        if bytes == 0 {
            return Ok(0);
        }
        let mut freed = 0;
        for id in choose(&records, bytes, now, minimum_age) {
            match cri.remove_image(&id).await {
                Ok(()) => {
                    let size = records.iter().find(|r| r.id == id).map_or(0, |r| r.size);
                    tracing::info!(image = %id, size, "removed an unused image");
                    freed += size;
                    self.last_used.remove(&id);
                }
                Err(error) => {
                    tracing::warn!(image = %id, error = format!("{error:#}"), "cannot remove an unused image")
                }
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked() {
        assert!(Policy::new(85, 80, Duration::from_secs(120)).is_ok());
        assert!(Policy::new(101, 80, Duration::ZERO).is_err());
        let error = Policy::new(70, 80, Duration::ZERO).unwrap_err().to_string();
        assert!(error.contains("must not be above"), "{error}");
    }

    #[test]
    fn frees_down_to_the_low_threshold() {
        let policy = Policy::new(85, 80, Duration::ZERO).unwrap();
        assert_eq!(policy.bytes_to_free(1000, 200), 0);
        assert_eq!(policy.bytes_to_free(1000, 100), 100);
        assert_eq!(
            Policy::new(100, 80, Duration::ZERO)
                .unwrap()
                .bytes_to_free(1000, 0),
            0
        );
    }

    #[test]
    fn least_recently_used_unused_images_go_first() {
        let start = Instant::now();
        let record = |id: &str, size, in_use, age_s| Record {
            id: id.into(),
            size,
            in_use,
            last_used: start - Duration::from_secs(age_s),
        };
        let records = [
            record("in-use", 500, true, 1000),
            record("old", 100, false, 900),
            record("older", 100, false, 1000),
            record("fresh", 100, false, 10),
        ];
        let age = Duration::from_secs(60);
        assert_eq!(choose(&records, 150, start, age), ["older", "old"]);
        assert_eq!(choose(&records, 50, start, age), ["older"]);
        // Never the one in use nor the fresh one, even when more is asked.
        assert_eq!(choose(&records, 10_000, start, age), ["older", "old"]);
        assert!(choose(&records, 0, start, age).is_empty());
    }
}
