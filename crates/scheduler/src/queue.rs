//! The scheduling queue, upstream's three queues in one structure:
//!
//! - *active*: pods to try now, highest priority first, then the oldest;
//! - *backoff*: pods that failed recently and wait `1 s * 2^(attempts-1)` (at most
//!   10 s) before their next try;
//! - *unschedulable*: pods that did not fit. They wait for a cluster event that may
//!   make them fit ([`ClusterEvent`]): each event names the plugins whose verdict it
//!   can change, and only pods rejected by one of those plugins move. A pod left there
//!   for five minutes is retried anyway, as upstream does.
//!
//! Entries are looked up by pod key; the heaps hold keys with a generation number
//! and skip entries that moved since (lazy deletion).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::{PodInfo, PodKey};
use crate::plugins::{
    inter_pod_affinity, node_ports, node_resources, topology_spread, volume_binding,
};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod may stay unschedulable before it is retried without an event.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);
/// Stands for "preemption is under way": any pod deletion may let the pod in.
pub const PREEMPTION: &str = "DefaultPreemption";

/// A change in the cluster that may make unschedulable pods fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    AssignedPodAdd,
    AssignedPodDelete,
    /// A claim, volume or storage class changed.
    VolumeChange,
}

impl ClusterEvent {
    /// Whether a pod rejected by `plugin` may fit after this event.
    fn may_help(self, plugin: &str) -> bool {
        match self {
            ClusterEvent::NodeAdd | ClusterEvent::NodeUpdate => true,
            ClusterEvent::AssignedPodDelete => [
                volume_binding::RESTRICTIONS,
                node_resources::NAME,
                node_ports::NAME,
                inter_pod_affinity::NAME,
                topology_spread::NAME,
                PREEMPTION,
            ]
            .contains(&plugin),
            ClusterEvent::VolumeChange => plugin == volume_binding::NAME,
            ClusterEvent::AssignedPodAdd => {
                [inter_pod_affinity::NAME, topology_spread::NAME].contains(&plugin)
            }
        }
    }
}

#[derive(Debug)]
enum Where {
    Active,
    Backoff,
    Unschedulable {
        since: Instant,
        plugins: Vec<&'static str>,
    },
    /// Popped: being scheduled or bound.
    InFlight,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    attempts: u32,
    generation: u64,
    seq: u64,
    place: Where,
}

#[derive(Debug, PartialEq, Eq)]
struct ActiveItem {
    priority: i32,
    seq: u64,
    key: PodKey,
    generation: u64,
}

impl Ord for ActiveItem {
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for ActiveItem {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// The queue of pods waiting for a node.
#[derive(Default)]
pub struct SchedulingQueue {
    entries: HashMap<PodKey, Entry>,
    active: BinaryHeap<ActiveItem>,
    backoff: BinaryHeap<Reverse<(Instant, u64, PodKey)>>,
    /// The keys of the unschedulable entries (so events do not scan every pod).
    unschedulable: HashSet<PodKey>,
    /// When unschedulable pods were last checked for [`MAX_UNSCHEDULABLE`].
    last_stale_check: Option<Instant>,
    next: u64,
}

/// How often unschedulable pods are checked for [`MAX_UNSCHEDULABLE`] (upstream: 30 s).
const STALE_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Upstream's backoff: doubling from [`INITIAL_BACKOFF`] up to [`MAX_BACKOFF`].
pub fn backoff_for(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(10);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    fn bump(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// A pending pod appeared or changed. A new pod goes to active; a changed one
    /// that waits as unschedulable is tried again (its change may make it fit).
    pub fn add_or_update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let generation = self.bump();
        match self.entries.get_mut(&pod.key) {
            Some(entry) => {
                let spec_changed = entry.pod.pod.spec != pod.pod.spec
                    || entry.pod.labels != pod.labels
                    || entry.pod.pod.metadata.annotations != pod.pod.metadata.annotations;
                entry.pod = pod;
                if spec_changed && matches!(entry.place, Where::Unschedulable { .. }) {
                    let key = entry.pod.key.clone();
                    self.move_out(&key, now);
                }
            }
            None => {
                let key = pod.key.clone();
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod,
                        attempts: 0,
                        generation,
                        seq: generation,
                        place: Where::InFlight,
                    },
                );
                self.make_active(&key);
            }
        }
    }

    fn make_active(&mut self, key: &str) {
        let generation = self.bump();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        entry.place = Where::Active;
        self.active.push(ActiveItem {
            priority: entry.pod.priority,
            seq: entry.seq,
            key: key.to_string(),
            generation,
        });
    }

    fn make_backoff(&mut self, key: &str, until: Instant) {
        let generation = self.bump();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.generation = generation;
        entry.place = Where::Backoff;
        self.backoff
            .push(Reverse((until, generation, key.to_string())));
    }

    /// Out of unschedulable: to backoff while the pod's backoff lasts, else active.
    fn move_out(&mut self, key: &str, now: Instant) {
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let Where::Unschedulable { since, .. } = entry.place else {
            return;
        };
        let until = since + backoff_for(entry.attempts);
        if until > now {
            self.make_backoff(key, until);
        } else {
            self.make_active(key);
        }
    }

    /// The pod is gone, bound, or no longer ours.
    pub fn remove(&mut self, key: &str) {
        self.unschedulable.remove(key);
        self.entries.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to try, with how many times it was tried before.
    pub fn pop(&mut self, now: Instant) -> Option<(Arc<PodInfo>, u32)> {
        self.flush_backoff(now);
        while let Some(item) = self.active.pop() {
            let Some(entry) = self.entries.get_mut(&item.key) else {
                continue;
            };
            if entry.generation != item.generation || !matches!(entry.place, Where::Active) {
                continue;
            }
            entry.place = Where::InFlight;
            return Some((entry.pod.clone(), entry.attempts));
        }
        None
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((until, generation, key))) = self.backoff.peek().cloned() {
            if until > now {
                break;
            }
            self.backoff.pop();
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.generation == generation)
            {
                self.make_active(&key);
            }
        }
        if self
            .last_stale_check
            .is_some_and(|at| now.duration_since(at) < STALE_CHECK_INTERVAL)
        {
            return;
        }
        self.last_stale_check = Some(now);
        let stale: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter(|key| {
                self.entries.get(*key).is_some_and(|e| {
                    matches!(e.place, Where::Unschedulable { since, .. } if now.duration_since(since) >= MAX_UNSCHEDULABLE)
                })
            })
            .cloned()
            .collect();
        for key in stale {
            self.make_active(&key);
        }
    }

    /// When the earliest pod in backoff may be tried (for the scheduler's sleep).
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|Reverse((until, _, _))| *until)
    }

    /// Whether a pod could be popped now.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// The pod was placed: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.remove(key);
    }

    /// The pod did not fit because of `plugins`: it waits for an event that may
    /// change their verdict.
    pub fn unschedulable(&mut self, key: &str, plugins: Vec<&'static str>, now: Instant) {
        let generation = self.bump();
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        entry.attempts += 1;
        entry.generation = generation;
        entry.place = Where::Unschedulable {
            since: now,
            plugins,
        };
        self.unschedulable.insert(key.to_string());
    }

    /// The attempt failed for another reason (an API error): retry after a backoff.
    /// `pod` re-enters the queue if it had left it (a failed binding).
    pub fn retry_later(&mut self, pod: Arc<PodInfo>, attempts: u32, now: Instant) {
        let key = pod.key.clone();
        let seq = self.bump();
        let entry = self.entries.entry(key.clone()).or_insert(Entry {
            pod,
            attempts,
            generation: seq,
            seq,
            place: Where::InFlight,
        });
        entry.attempts = entry.attempts.max(attempts) + 1;
        let until = now + backoff_for(entry.attempts);
        self.make_backoff(&key, until);
    }

    /// Moves the unschedulable pods this event may help.
    pub fn on_event(&mut self, event: ClusterEvent, now: Instant) -> usize {
        let helped: Vec<PodKey> = self
            .unschedulable
            .iter()
            .filter(|key| {
                self.entries.get(*key).is_some_and(|e| {
                    matches!(&e.place, Where::Unschedulable { plugins, .. }
                        if plugins.is_empty() || plugins.iter().any(|p| event.may_help(p)))
                })
            })
            .cloned()
            .collect();
        for key in &helped {
            self.move_out(key, now);
        }
        helped.len()
    }

    /// How many pods wait in each queue: (active, backoff, unschedulable).
    pub fn lengths(&self) -> (usize, usize, usize) {
        let mut lengths = (0, 0, 0);
        for entry in self.entries.values() {
            match entry.place {
                Where::Active => lengths.0 += 1,
                Where::Backoff => lengths.1 += 1,
                Where::Unschedulable { .. } => lengths.2 += 1,
                Where::InFlight => {}
            }
        }
        lengths
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::pod;
    use serde_json::json;

    fn prio(name: &str, priority: i32) -> Arc<PodInfo> {
        pod(name, "0", json!({"spec": {"priority": priority}}))
    }

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = SchedulingQueue::default();
        let now = Instant::now();
        q.add_or_update(prio("low", 0), now);
        q.add_or_update(prio("high", 100), now);
        q.add_or_update(prio("low2", 0), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|(p, _)| p.key.clone())).collect();
        assert_eq!(order, vec!["default/high", "default/low", "default/low2"]);
    }

    #[test]
    fn unschedulable_pods_move_only_on_relevant_events() {
        let mut q = SchedulingQueue::default();
        let now = Instant::now();
        q.add_or_update(prio("p", 0), now);
        q.pop(now).unwrap();
        q.unschedulable("default/p", vec![node_resources::NAME], now);
        assert!(q.pop(now).is_none());
        assert_eq!(q.on_event(ClusterEvent::AssignedPodAdd, now), 0);
        assert_eq!(q.lengths(), (0, 0, 1));
        // A deleted pod frees resources: the pod moves, to backoff first (1 s).
        assert_eq!(q.on_event(ClusterEvent::AssignedPodDelete, now), 1);
        assert_eq!(q.lengths(), (0, 1, 0));
        assert!(q.pop(now).is_none());
        assert_eq!(q.next_backoff_expiry(), Some(now + INITIAL_BACKOFF));
        let (pod, attempts) = q.pop(now + INITIAL_BACKOFF).unwrap();
        assert_eq!((pod.key.as_str(), attempts), ("default/p", 1));
    }

    #[test]
    fn a_changed_unschedulable_pod_is_retried_and_status_updates_are_not_changes() {
        let mut q = SchedulingQueue::default();
        let now = Instant::now();
        q.add_or_update(prio("p", 0), now);
        q.pop(now).unwrap();
        q.unschedulable("default/p", vec!["TaintToleration"], now);
        q.add_or_update(prio("p", 0), now);
        assert_eq!(
            q.lengths(),
            (0, 0, 1),
            "an identical spec is no reason to retry"
        );
        let tolerating = pod(
            "p",
            "0",
            json!({"spec": {"priority": 0, "tolerations": [{"operator": "Exists"}]}}),
        );
        q.add_or_update(tolerating, now + MAX_BACKOFF);
        assert!(q.pop(now + MAX_BACKOFF).is_some());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(3), Duration::from_secs(4));
        assert_eq!(backoff_for(30), MAX_BACKOFF);
    }

    #[test]
    fn failed_bindings_come_back_after_a_backoff() {
        let mut q = SchedulingQueue::default();
        let now = Instant::now();
        q.add_or_update(prio("p", 0), now);
        let (p, attempts) = q.pop(now).unwrap();
        q.done("default/p");
        q.retry_later(p, attempts, now);
        assert!(q.pop(now).is_none());
        assert!(q.pop(now + INITIAL_BACKOFF).is_some());
    }
}
