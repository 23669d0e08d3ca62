//! Node lifecycle, as upstream's node-lifecycle and taint-eviction controllers:
//!
//! - a node whose kubelet stops renewing its Lease (and posting its status) for the
//!   grace period (`--node-monitor-grace-period`, 40 s) gets its conditions set to
//!   `Unknown` ("Kubelet stopped posting node status.");
//! - a node that is not Ready gets the `node.kubernetes.io/unreachable` (Unknown) or
//!   `node.kubernetes.io/not-ready` (False) taints, NoExecute and NoSchedule; they go
//!   when it is Ready again;
//! - a node whose kubelet reports MemoryPressure, DiskPressure or PIDPressure gets the
//!   `memory-pressure`, `disk-pressure` or `pid-pressure` NoSchedule taint while it lasts;
//! - the pods of a node that is not Ready are marked not Ready;
//! - pods on a node with a NoExecute taint are deleted once they no longer tolerate
//!   it: at once without a matching toleration, after `tolerationSeconds` (counted from
//!   the taint's `timeAdded`) with one. The DefaultTolerationSeconds admission gives
//!   every pod 300 s for the two taints above.
//!
//! Heartbeats are timed by when this controller *saw* them change (as upstream's
//! probe timestamps), not by the kubelet's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use krust_events::{Event, EventType, Recorder, Reporter};
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};

use crate::cache::{Cache, Caches, Change};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The taint of a node whose Ready condition is Unknown.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose Ready condition is False.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// Where kubelets keep their Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The conditions a silent node's kubelet can no longer vouch for.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

/// The taint of a node whose kubelet reports MemoryPressure.
pub const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";
/// The taint of a node whose kubelet reports DiskPressure.
pub const DISK_PRESSURE_TAINT: &str = "node.kubernetes.io/disk-pressure";
/// The taint of a node whose kubelet reports PIDPressure.
pub const PID_PRESSURE_TAINT: &str = "node.kubernetes.io/pid-pressure";
/// The taint keys that follow a node's conditions: added and removed only here.
const CONDITION_TAINT_KEYS: [&str; 5] = [
    UNREACHABLE_TAINT,
    NOT_READY_TAINT,
    MEMORY_PRESSURE_TAINT,
    DISK_PRESSURE_TAINT,
    PID_PRESSURE_TAINT,
];

/// What the taints of a node should say about its Ready condition: the key of the
/// taint it should carry (None when Ready, or when nothing was ever reported: a new
/// node's kubelet gets its grace period first).
pub fn readiness_taint(node: &Node) -> Option<&'static str> {
    match ready_status(node).as_deref() {
        Some("False") => Some(NOT_READY_TAINT),
        Some("Unknown") => Some(UNREACHABLE_TAINT),
        _ => None,
    }
}

/// The (key, effect) taints a node's conditions call for, as upstream's taint-by-
/// condition: the readiness taint with both effects, and a NoSchedule taint for each
/// pressure condition that is True.
pub fn condition_taints(node: &Node) -> Vec<(&'static str, &'static str)> {
    let mut wanted = Vec::new();
    if let Some(key) = readiness_taint(node) {
        wanted.extend([(key, "NoSchedule"), (key, "NoExecute")]);
    }
    for (condition, key) in [
        ("MemoryPressure", MEMORY_PRESSURE_TAINT),
        ("DiskPressure", DISK_PRESSURE_TAINT),
        ("PIDPressure", PID_PRESSURE_TAINT),
    ] {
        if condition_status(node, condition).as_deref() == Some("True") {
            wanted.push((key, "NoSchedule"));
        }
    }
    wanted
}

fn ready_status(node: &Node) -> Option<String> {
    condition_status(node, "Ready")
}

fn condition_status(node: &Node, condition: &str) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == condition)
        .map(|c| c.status.clone())
}

/// The node's taints with the condition taints made to match `wanted` (keeping the
/// time a taint that stays was added, and every taint this controller does not own).
/// None when nothing changes.
pub fn retaint(node: &Node, wanted: &[(&str, &str)], now: Timestamp) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !CONDITION_TAINT_KEYS.contains(&t.key.as_str())
                || wanted.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .cloned()
        .collect();
    for &(key, effect) in wanted {
        if !taints.iter().any(|t| t.key == key && t.effect == effect) {
            taints.push(Taint {
                key: key.into(),
                effect: effect.into(),
                time_added: (effect == "NoExecute").then_some(Time(now)),
                value: None,
            });
        }
    }
    (taints != current).then_some(taints)
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.as_deref() {
        Some("Exists") => key.is_empty() || key == taint.key,
        _ => {
            key == taint.key
                && toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
    }
}

/// When a pod on a node with `taints` is to be evicted: None for never, otherwise how
/// long from `now` (zero: at once). Only NoExecute taints count; of the tolerations
/// that match a taint, the longest wins; the taint that runs out first decides.
pub fn eviction_delay(pod: &Pod, taints: &[Taint], now: Timestamp) -> Option<Duration> {
    let tolerations: &[Toleration] = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut earliest: Option<Duration> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            continue;
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .max()
            .unwrap_or(0)
            .max(0);
        let added = taint.time_added.as_ref().map_or(now, |t| t.0);
        let due = added + SignedDuration::from_secs(seconds);
        let left = Duration::try_from(now.duration_until(due)).unwrap_or(Duration::ZERO);
        earliest = Some(earliest.map_or(left, |e| e.min(left)));
    }
    earliest
}

/// What was last seen of a node's heartbeats, and when it was seen.
struct Health {
    lease_renew: Option<String>,
    ready_heartbeat: Option<String>,
    seen: Instant,
}

struct Controller {
    nodes: Arc<Cache<Node>>,
    leases: Arc<Cache<Lease>>,
    pods: Arc<Cache<Pod>>,
    client: kube::Client,
    recorder: Recorder,
    grace: Duration,
    health: Mutex<HashMap<String, Health>>,
}

/// Runs the controller until the process ends.
pub async fn run(caches: Caches, grace: Duration) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        nodes: caches.get(),
        leases: caches.get(),
        pods: caches.get(),
        client: caches.client().clone(),
        recorder: Recorder::new(
            caches.client().clone(),
            Reporter {
                controller: "node-lifecycle-controller".into(),
                instance: None,
            },
        ),
        grace,
        health: Mutex::new(HashMap::new()),
    });
    let queue: WorkQueue<String> = WorkQueue::new();
    tokio::spawn(forward(
        controller.nodes.subscribe(),
        queue.clone(),
        |change: &Change<Node>| change.object().metadata.name.clone().into_iter().collect(),
    ));
    tokio::spawn(forward(
        controller.leases.subscribe(),
        queue.clone(),
        |change: &Change<Lease>| {
            let lease = change.object();
            if lease.metadata.namespace.as_deref() == Some(LEASE_NAMESPACE) {
                lease.metadata.name.clone().into_iter().collect()
            } else {
                Vec::new()
            }
        },
    ));
    tokio::spawn(forward(
        controller.pods.subscribe(),
        queue.clone(),
        |change: &Change<Pod>| {
            let node = change
                .object()
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone());
            node.into_iter().collect()
        },
    ));
    controller.nodes.wait_synced().await;
    controller.leases.wait_synced().await;
    controller.pods.wait_synced().await;
    run_workers("nodelifecycle", queue, 4, |name| {
        let controller = controller.clone();
        async move { controller.sync(&name).await }
    })
    .await;
    Ok(())
}

impl Controller {
    /// How long ago the node's heartbeat last changed, recording what is seen now.
    fn silence(&self, node: &Node) -> Duration {
        let name = node.metadata.name.clone().unwrap_or_default();
        let lease_renew = self.leases.get(LEASE_NAMESPACE, &name).and_then(|l| {
            l.spec
                .as_ref()?
                .renew_time
                .as_ref()
                .map(|t| t.0.to_string())
        });
        let ready_heartbeat = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0.to_string()));
        let mut health = self.health.lock().unwrap();
        let entry = health.entry(name).or_insert_with(|| Health {
            lease_renew: lease_renew.clone(),
            ready_heartbeat: ready_heartbeat.clone(),
            seen: Instant::now(),
        });
        if entry.lease_renew != lease_renew || entry.ready_heartbeat != ready_heartbeat {
            entry.lease_renew = lease_renew;
            entry.ready_heartbeat = ready_heartbeat;
            entry.seen = Instant::now();
        }
        entry.seen.elapsed()
    }

    async fn sync(&self, name: &str) -> anyhow::Result<Outcome> {
        let Some(node) = self.nodes.get("", name) else {
            self.health.lock().unwrap().remove(name);
            return Ok(Outcome::Done);
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now();
        let silence = self.silence(&node);
        if silence >= self.grace && ready_status(&node).as_deref() != Some("Unknown") {
            let mut updated = (*node).clone();
            mark_unknown(&mut updated, now);
            tracing::info!(
                node = name,
                "node stopped posting status; marking it Unknown"
            );
            self.record(
                &node.object_ref(&()),
                "NodeNotReady",
                format!("Node {name} status is now: NodeNotReady"),
                "NodeNotReady",
            )
            .await;
            return ignore_races(
                nodes
                    .replace_status(name, &PostParams::default(), &updated)
                    .await,
            );
        }
        if let Some(taints) = retaint(&node, &condition_taints(&node), now) {
            let mut updated = (*node).clone();
            updated.spec.get_or_insert_with(Default::default).taints = Some(taints);
            return ignore_races(nodes.replace(name, &PostParams::default(), &updated).await);
        }

        let node_ready = ready_status(&node).as_deref() == Some("True");
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        // Look again when the node would run out of grace.
        let grace_left = self.grace.saturating_sub(silence) + Duration::from_millis(100);
        if node_ready && !taints.iter().any(|t| t.effect == "NoExecute") {
            // A healthy node: nothing to do to its pods.
            return Ok(Outcome::RequeueAfter(grace_left));
        }
        let mut next_look: Option<Duration> = None;
        for pod in self
            .pods
            .filter(|pod| pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name))
        {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            match eviction_delay(&pod, &taints, now) {
                Some(delay) if delay.is_zero() => {
                    tracing::info!(node = name, pod = %format!("{namespace}/{pod_name}"), "evicting a pod that does not tolerate its node's NoExecute taint");
                    ignore_races(pods.delete(&pod_name, &DeleteParams::default()).await)?;
                    self.record(
                        &pod.object_ref(&()),
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {namespace}/{pod_name}"),
                        "Delete",
                    )
                    .await;
                    continue;
                }
                Some(delay) => next_look = Some(next_look.map_or(delay, |n| n.min(delay))),
                None => {}
            }
            if !node_ready && let Some(updated) = marked_not_ready(&pod, now) {
                ignore_races(
                    pods.replace_status(&pod_name, &PostParams::default(), &updated)
                        .await,
                )?;
            }
        }
        // ...or a toleration out of time.
        let look = next_look.map_or(grace_left, |n| n.min(grace_left));
        Ok(Outcome::RequeueAfter(look.max(Duration::from_millis(100))))
    }
}

impl Controller {
    /// Records a Normal event about `object`; a failure is only logged (events are
    /// best effort, as upstream's).
    async fn record(&self, object: &ObjectReference, reason: &str, note: String, action: &str) {
        let event = Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::debug!(%error, reason, "recording an event failed");
        }
    }
}

/// Sets the kubelet's conditions to Unknown, as upstream does for a silent node.
fn mark_unknown(node: &mut Node, now: Timestamp) {
    let status = node.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let never_posted = conditions.is_empty();
    for condition_type in KUBELET_CONDITIONS {
        let (reason, message) = if never_posted {
            (
                "NodeStatusNeverUpdated",
                "Kubelet never posted node status.",
            )
        } else {
            ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        };
        match conditions.iter_mut().find(|c| c.type_ == condition_type) {
            Some(condition) => {
                if condition.status != "Unknown" {
                    condition.last_transition_time = Some(Time(now));
                }
                condition.status = "Unknown".into();
                condition.reason = Some(reason.into());
                condition.message = Some(message.into());
            }
            None => conditions.push(NodeCondition {
                type_: condition_type.into(),
                status: "Unknown".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now)),
                last_heartbeat_time: None,
            }),
        }
    }
}

/// The pod with its Ready condition False, if it is not already.
fn marked_not_ready(pod: &Pod, now: Timestamp) -> Option<Pod> {
    let mut updated = pod.clone();
    let status = updated.status.get_or_insert_with(Default::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(condition) if condition.status == "False" => None,
        Some(condition) => {
            condition.status = "False".into();
            condition.last_transition_time = Some(Time(now));
            Some(updated)
        }
        None => {
            conditions.push(PodCondition {
                type_: "Ready".into(),
                status: "False".into(),
                last_transition_time: Some(Time(now)),
                ..PodCondition::default()
            });
            Some(updated)
        }
    }
}

/// A conflict or a vanished object means a newer state is on its way through the
/// watch, which queues the node again.
fn ignore_races<T>(result: kube::Result<T>) -> anyhow::Result<Outcome> {
    match result {
        Ok(_) => Ok(Outcome::Done),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(Outcome::Done),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(ready: &str, taints: serde_json::Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": "n"}, "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}),
        )
        .unwrap()
    }

    #[test]
    fn readiness_decides_the_taints() {
        let now = Timestamp::now();
        let other = json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]);
        let taints = retaint(
            &node("Unknown", other.clone()),
            &condition_taints(&node("Unknown", json!([]))),
            now,
        )
        .unwrap();
        let keys: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (UNREACHABLE_TAINT, "NoSchedule"),
                (UNREACHABLE_TAINT, "NoExecute")
            ]
        );
        let tainted = node("False", serde_json::to_value(&taints).unwrap());
        let keys: Vec<String> = retaint(&tainted, &condition_taints(&tainted), now)
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        assert_eq!(keys, ["dedicated", NOT_READY_TAINT, NOT_READY_TAINT]);
        // Ready: the readiness taints go; already right: nothing to write.
        let ready = node("True", serde_json::to_value(&taints).unwrap());
        assert_eq!(
            retaint(&ready, &condition_taints(&ready), now)
                .unwrap()
                .len(),
            1
        );
        assert!(retaint(&node("True", other.clone()), &[], now).is_none());
    }

    #[test]
    fn pressure_conditions_taint_no_schedule() {
        let now = Timestamp::now();
        let mut pressed: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "MemoryPressure", "status": "True"},
                {"type": "DiskPressure", "status": "False"},
                {"type": "PIDPressure", "status": "True"}]},
        }))
        .unwrap();
        let taints = retaint(&pressed, &condition_taints(&pressed), now).unwrap();
        let keys: Vec<(&str, &str)> = taints
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("dedicated", "NoSchedule"),
                (MEMORY_PRESSURE_TAINT, "NoSchedule"),
                (PID_PRESSURE_TAINT, "NoSchedule")
            ]
        );
        // Relief: the pressure taints go, the user's stays.
        pressed.spec.as_mut().unwrap().taints = Some(taints);
        for condition in pressed
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
        {
            if condition.type_ != "Ready" {
                condition.status = "False".into();
            }
        }
        let relieved = retaint(&pressed, &condition_taints(&pressed), now).unwrap();
        assert_eq!(relieved.len(), 1);
        assert_eq!(relieved[0].key, "dedicated");
    }

    #[test]
    fn pods_are_evicted_when_their_tolerations_run_out() {
        let now = Timestamp::now();
        let added = now - SignedDuration::from_secs(10);
        let taints = vec![Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: "NoExecute".into(),
            time_added: Some(Time(added)),
            value: None,
        }];
        let pod = |tolerations: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
        };
        assert_eq!(
            eviction_delay(&pod(json!([])), &taints, now),
            Some(Duration::ZERO)
        );
        let within = pod(
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
        );
        assert_eq!(
            eviction_delay(&within, &taints, now),
            Some(Duration::from_secs(290))
        );
        let spent = pod(
            json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
        );
        assert_eq!(eviction_delay(&spent, &taints, now), Some(Duration::ZERO));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction_delay(&forever, &taints, now), None);
        let wrong_key = pod(json!([{"key": "other", "operator": "Exists"}]));
        assert_eq!(
            eviction_delay(&wrong_key, &taints, now),
            Some(Duration::ZERO)
        );
        // NoSchedule taints never evict.
        let no_schedule = vec![Taint {
            effect: "NoSchedule".into(),
            ..taints[0].clone()
        }];
        assert_eq!(eviction_delay(&pod(json!([])), &no_schedule, now), None);
    }

    #[test]
    fn silent_nodes_and_their_pods_are_marked() {
        let now = Timestamp::now();
        let mut silent = node("True", json!([]));
        mark_unknown(&mut silent, now);
        let conditions = silent.status.unwrap().conditions.unwrap();
        assert_eq!(conditions.len(), 4);
        assert!(conditions.iter().all(|c| c.status == "Unknown"));
        assert_eq!(
            conditions[0].message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );

        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": []},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
        let marked = marked_not_ready(&pod, now).unwrap();
        assert!(marked_not_ready(&marked, now).is_none());
    }
}
