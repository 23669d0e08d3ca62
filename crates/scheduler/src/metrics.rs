//! The scheduler's own figures: how long each pod took from the start of its
//! scheduling attempt to its binding (upstream's `scheduling_attempt_duration`),
//! and how many attempts succeeded or failed.

use std::sync::Mutex;
use std::time::Duration;

/// Counters and latencies, shared with whoever started the scheduler.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latencies: Vec<Duration>,
    failed: u64,
}

/// A summary of the latencies recorded so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub scheduled: usize,
    pub failed: u64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Metrics {
    pub fn record_scheduled(&self, latency: Duration) {
        self.inner.lock().unwrap().latencies.push(latency);
    }

    pub fn record_failed(&self) {
        self.inner.lock().unwrap().failed += 1;
    }

    pub fn summary(&self) -> Summary {
        let inner = self.inner.lock().unwrap();
        let mut sorted = inner.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            if sorted.is_empty() {
                Duration::ZERO
            } else {
                sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
            }
        };
        Summary {
            scheduled: sorted.len(),
            failed: inner.failed,
            p50: at(0.50),
            p99: at(0.99),
            max: sorted.last().copied().unwrap_or_default(),
        }
    }

    /// Forgets what was recorded (between benchmark phases).
    pub fn reset(&self) {
        *self.inner.lock().unwrap() = Inner::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let metrics = Metrics::default();
        for ms in 1..=100 {
            metrics.record_scheduled(Duration::from_millis(ms));
        }
        metrics.record_failed();
        let s = metrics.summary();
        assert_eq!((s.scheduled, s.failed), (100, 1));
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        metrics.reset();
        assert_eq!(metrics.summary(), Summary::default());
    }
}
