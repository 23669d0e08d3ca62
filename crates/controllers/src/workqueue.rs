//! A work queue for level-triggered controllers, with the guarantees of client-go's
//! rate-limited workqueue:
//!
//! - a key is queued at most once however often it is added (dedup);
//! - a key is handed to one worker at a time: added again while it is being
//!   processed, it is queued again when that processing is [`WorkQueue::done`];
//! - a failing key is retried after an exponential backoff per key
//!   ([`WorkQueue::add_rate_limited`]), reset by [`WorkQueue::forget`].
//!
//! [`run_workers`] runs a handler over a queue with this bookkeeping done for it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Debug;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The first retry delay of a failing key (upstream's default controller rate limiter).
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay of a failing key.
pub const MAX_DELAY: Duration = Duration::from_secs(1000);

/// A deduplicating, rate-limited queue of keys. Cloning gives another handle to the
/// same queue.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K> {
    state: Mutex<State<K>>,
    ready: Notify,
    base_delay: Duration,
    max_delay: Duration,
}

struct State<K> {
    /// Keys waiting for a worker, in order.
    queue: VecDeque<K>,
    /// Keys that need processing: those in `queue`, and those added again while
    /// being processed.
    dirty: HashSet<K>,
    /// Keys a worker holds.
    processing: HashSet<K>,
    /// Consecutive failures per key.
    failures: HashMap<K, u32>,
}

impl<K: Clone + Eq + Hash + Send + 'static> Default for WorkQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Clone + Eq + Hash + Send + 'static> WorkQueue<K> {
    /// A queue with upstream's default backoff (5 ms doubling up to 1000 s).
    pub fn new() -> Self {
        Self::with_backoff(BASE_DELAY, MAX_DELAY)
    }

    /// A queue whose failing keys wait `base_delay * 2^failures`, at most `max_delay`.
    pub fn with_backoff(base_delay: Duration, max_delay: Duration) -> Self {
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    failures: HashMap::new(),
                }),
                ready: Notify::new(),
                base_delay,
                max_delay,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A panic while holding the lock leaves the state consistent (every method
        // finishes its edits before it can panic), so a poisoned lock is still usable.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: K) {
        let mut state = self.state();
        if !state.dirty.insert(key.clone()) {
            return;
        }
        if !state.processing.contains(&key) {
            state.queue.push_back(key);
            drop(state);
            self.shared.ready.notify_waiters();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            queue.add(key);
        });
    }

    /// Queues `key` after its backoff, and counts one more failure for it.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut state = self.state();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            let delay = backoff(self.shared.base_delay, self.shared.max_delay, *failures);
            *failures = failures.saturating_add(1);
            delay
        };
        self.add_after(key, delay);
    }

    /// Clears the failure count of `key` (its next failure waits the base delay).
    pub fn forget(&self, key: &K) {
        self.state().failures.remove(key);
    }

    /// How many times in a row `key` failed.
    pub fn failures(&self, key: &K) -> u32 {
        self.state().failures.get(key).copied().unwrap_or(0)
    }

    /// Waits for the next key; the caller must call [`WorkQueue::done`] with it.
    pub async fn get(&self) -> K {
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            // Register before looking, so an `add` in between still wakes us.
            notified.as_mut().enable();
            if let Some(key) = self.try_get() {
                return key;
            }
            notified.await;
        }
    }

    fn try_get(&self) -> Option<K> {
        let mut state = self.state();
        let key = state.queue.pop_front()?;
        state.dirty.remove(&key);
        state.processing.insert(key.clone());
        Some(key)
    }

    /// Ends the processing of `key`; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut state = self.state();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.shared.ready.notify_waiters();
        }
    }

    /// How many keys wait for a worker.
    pub fn len(&self) -> usize {
        self.state().queue.len()
    }

    /// Whether no key waits for a worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The delay before retry number `failures + 1`.
fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

/// What a handler wants done with a key it processed successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing more to do until the key is added again.
    Done,
    /// Look again after this long (e.g. waiting for something no event reports).
    RequeueAfter(Duration),
}

/// Runs `workers` concurrent workers that take keys from `queue` and pass them to
/// `handler`, forever. An error is logged and the key retried with backoff.
pub async fn run_workers<K, F, Fut>(
    name: &'static str,
    queue: WorkQueue<K>,
    workers: usize,
    handler: F,
) where
    K: Clone + Eq + Hash + Send + Debug + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let worker = |_| async {
        loop {
            let key = queue.get().await;
            match handler(key.clone()).await {
                Ok(Outcome::Done) => queue.forget(&key),
                Ok(Outcome::RequeueAfter(delay)) => {
                    queue.forget(&key);
                    queue.add_after(key.clone(), delay);
                }
                Err(error) => {
                    tracing::warn!(
                        controller = name,
                        ?key,
                        failures = queue.failures(&key) + 1,
                        "sync failed, will retry: {error:#}"
                    );
                    queue.add_rate_limited(key.clone());
                }
            }
            queue.done(&key);
        }
    };
    futures::future::join_all((0..workers.max(1)).map(worker)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn deduplicates_queued_keys() {
        let queue = WorkQueue::new();
        queue.add("a");
        queue.add("b");
        queue.add("a");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.get().await, "a");
        assert_eq!(queue.get().await, "b");
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_key_added_while_processing_comes_back_after_done() {
        let queue = WorkQueue::new();
        queue.add(1);
        let key = queue.get().await;
        queue.add(1);
        // Not handed out twice at once.
        assert!(queue.is_empty());
        queue.done(&key);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get().await, 1);
        queue.done(&1);
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn get_waits_for_an_add() {
        let queue = WorkQueue::new();
        let waiter = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.get().await })
        };
        tokio::task::yield_now().await;
        queue.add("late");
        assert_eq!(waiter.await.unwrap(), "late");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let base = Duration::from_millis(5);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, max, 0), Duration::from_millis(5));
        assert_eq!(backoff(base, max, 1), Duration::from_millis(10));
        assert_eq!(backoff(base, max, 3), Duration::from_millis(40));
        assert_eq!(backoff(base, max, 20), max);
        assert_eq!(backoff(base, max, u32::MAX), max);
    }

    #[tokio::test]
    async fn failing_keys_are_retried_and_forgotten_on_success() {
        let queue = WorkQueue::with_backoff(Duration::from_millis(1), Duration::from_millis(4));
        let calls = Arc::new(AtomicUsize::new(0));
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let workers = {
            let queue = queue.clone();
            let calls = calls.clone();
            tokio::spawn(run_workers("test", queue, 2, move |key: &'static str| {
                let calls = calls.clone();
                let done_tx = done_tx.clone();
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                        anyhow::bail!("not yet");
                    }
                    done_tx.send(key).unwrap();
                    Ok(Outcome::Done)
                }
            }))
        };
        queue.add("k");
        assert_eq!(done_rx.recv().await, Some("k"));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        // `forget` runs right after the handler returns; wait for it without sleeping.
        while queue.failures(&"k") != 0 {
            tokio::task::yield_now().await;
        }
        workers.abort();
    }
}
