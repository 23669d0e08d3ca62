//! What the workload controllers need to know about pods: controller references,
//! whether a pod is active, ready or available (after `minReadySeconds`), and the
//! order in which surplus pods are deleted (upstream's `ActivePodsWithRanks`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use krust_api::selector::LabelSelector;
use serde_json::{Map, Value};

/// Annotation that ranks pods for deletion: lower costs go first.
pub const DELETION_COST_ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// The owner reference marked `controller: true`, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|reference| reference.controller == Some(true))
}

/// Whether `labels` match `selector` (labels as they come on typed objects).
pub fn selector_matches(
    selector: &LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let labels: Option<Map<String, Value>> = labels.map(|labels| {
        labels
            .iter()
            .map(|(key, value)| (key.clone(), Value::String(value.clone())))
            .collect()
    });
    selector.matches(labels.as_ref())
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("")
}

/// Not finished and not being deleted: a pod that counts towards the replicas.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Since when the pod is Ready, if it is.
pub fn ready_since(pod: &Pod) -> Option<Timestamp> {
    let condition = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|condition| condition.type_ == "Ready")?;
    if condition.status != "True" {
        return None;
    }
    Some(
        condition
            .last_transition_time
            .as_ref()
            .map(|time| time.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
    )
}

/// Whether the pod is Ready.
pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// How long until a ready pod becomes available; `None` when it is not ready,
/// zero when it is available now.
pub fn time_to_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: Timestamp,
) -> Option<SignedDuration> {
    let since = ready_since(pod)?;
    let available_at = since + SignedDuration::from_secs(i64::from(min_ready_seconds.max(0)));
    Some(available_at.duration_since(now).max(SignedDuration::ZERO))
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    time_to_available(pod, min_ready_seconds, now) == Some(SignedDuration::ZERO)
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|spec| spec.node_name.as_deref())
        .unwrap_or("")
}

fn phase_rank(pod: &Pod) -> u8 {
    match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i64 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(DELETION_COST_ANNOTATION))
        .and_then(|cost| cost.parse().ok())
        .unwrap_or(0)
}

fn restarts(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|status| status.container_statuses.as_ref())
        .map(|statuses| statuses.iter().map(|s| s.restart_count).max().unwrap_or(0))
        .unwrap_or(0)
}

fn created(pod: &Pod) -> Timestamp {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|time| time.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Orders pods so that the ones to delete first come first, as upstream does:
/// unscheduled before scheduled, pending before unknown before running, not ready
/// before ready, more pods of the same owner on its node before fewer, lower
/// deletion cost first, ready for a shorter time first, more restarts first, newer
/// before older.
pub fn sort_for_deletion(pods: &mut [&Pod]) {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for pod in pods.iter() {
        if !node_name(pod).is_empty() {
            *per_node.entry(node_name(pod).to_string()).or_default() += 1;
        }
    }
    let colocated = |pod: &Pod| per_node.get(node_name(pod)).copied().unwrap_or(0);
    pods.sort_by(|a, b| {
        let scheduled = |pod: &Pod| !node_name(pod).is_empty();
        scheduled(a)
            .cmp(&scheduled(b))
            .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
            .then_with(|| is_ready(a).cmp(&is_ready(b)))
            .then_with(|| colocated(b).cmp(&colocated(a)))
            .then_with(|| deletion_cost(a).cmp(&deletion_cost(b)))
            .then_with(|| match (ready_since(a), ready_since(b)) {
                (Some(a), Some(b)) => b.cmp(&a),
                _ => Ordering::Equal,
            })
            .then_with(|| restarts(b).cmp(&restarts(a)))
            .then_with(|| created(b).cmp(&created(a)))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready: Option<i64>, created: i64) -> Pod {
        let mut conditions = vec![];
        if let Some(since) = ready {
            conditions.push(json!({"type": "Ready", "status": "True",
                "lastTransitionTime": Timestamp::from_second(since).unwrap().to_string()}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": Timestamp::from_second(created).unwrap().to_string()},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": conditions},
        }))
        .unwrap()
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_then_newer_pods() {
        let running_old = pod("running-old", "a", "Running", Some(100), 10);
        let running_new = pod("running-new", "b", "Running", Some(100), 20);
        let not_ready = pod("not-ready", "c", "Running", None, 5);
        let pending = pod("pending", "d", "Pending", None, 1);
        let unscheduled = pod("unscheduled", "", "Pending", None, 1);
        let mut pods = vec![
            &running_old,
            &running_new,
            &not_ready,
            &pending,
            &unscheduled,
        ];
        sort_for_deletion(&mut pods);
        assert_eq!(
            names(&pods),
            [
                "unscheduled",
                "pending",
                "not-ready",
                "running-new",
                "running-old"
            ]
        );
    }

    #[test]
    fn deletion_prefers_crowded_nodes_and_shorter_readiness() {
        let crowded_one = pod("crowded-1", "a", "Running", Some(100), 1);
        let crowded_two = pod("crowded-2", "a", "Running", Some(100), 1);
        let alone_recent = pod("alone-recent", "b", "Running", Some(200), 1);
        let alone_long = pod("alone-long", "c", "Running", Some(50), 1);
        let mut pods = vec![&alone_long, &alone_recent, &crowded_one, &crowded_two];
        sort_for_deletion(&mut pods);
        let order = names(&pods);
        assert!(order[..2].contains(&"crowded-1".to_string()));
        assert_eq!(&order[2..], ["alone-recent", "alone-long"]);
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let ready = pod("p", "a", "Running", Some(100), 1);
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(is_available(&ready, 0, at(100)));
        assert!(!is_available(&ready, 10, at(105)));
        assert_eq!(
            time_to_available(&ready, 10, at(105)),
            Some(SignedDuration::from_secs(5))
        );
        assert!(is_available(&ready, 10, at(110)));
        let unready = pod("q", "a", "Running", None, 1);
        assert_eq!(time_to_available(&unready, 0, at(1)), None);
    }
}
