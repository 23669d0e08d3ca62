//! Conversion between the served versions of a resource that has more than one.
//!
//! Objects are stored in one version (the storage version) and converted on the way
//! in and out, as kube-apiserver does. Today that is HorizontalPodAutoscaler,
//! served as autoscaling/v2 (stored) and autoscaling/v1, and Event, served as core v1
//! (stored) and events.k8s.io/v1. What v1 can not express
//! (metrics other than CPU utilization, conditions, behavior) travels in the
//! annotations upstream uses, so a v2 object read and written back through v1
//! loses nothing.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The apiVersion objects of `group`/`plural` are stored in, when it is not simply
/// the version they were written in. Events of events.k8s.io/v1 are stored as core
/// v1 Events (one resource, two views, as upstream stores them).
pub fn storage_api_version(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("autoscaling", "horizontalpodautoscalers") => Some("autoscaling/v2"),
        ("events.k8s.io", "events") => Some("v1"),
        _ => None,
    }
}

/// `object` (of any served version) as apiVersion `to`; unchanged when there is
/// nothing to convert.
pub fn convert(object: &Value, to: &str) -> Value {
    let from = object["apiVersion"].as_str().unwrap_or("");
    match (object["kind"].as_str(), from, to) {
        (Some("HorizontalPodAutoscaler"), "autoscaling/v1", "autoscaling/v2") => {
            hpa_v1_to_v2(object)
        }
        (Some("HorizontalPodAutoscaler"), "autoscaling/v2", "autoscaling/v1") => {
            hpa_v2_to_v1(object)
        }
        (Some("Event"), "events.k8s.io/v1", "v1") => {
            rename_fields(object, "v1", EVENT_FIELDS.iter().map(|(e, c)| (*e, *c)))
        }
        (Some("Event"), "v1", "events.k8s.io/v1") => rename_fields(
            object,
            "events.k8s.io/v1",
            EVENT_FIELDS.iter().map(|(e, c)| (*c, *e)),
        ),
        _ => object.clone(),
    }
}

/// events.k8s.io/v1 Event fields and their core/v1 names (k8s.io/api/events/v1);
/// the others (reason, type, action, related, series, eventTime,
/// reportingInstance, metadata) are the same in both.
const EVENT_FIELDS: [(&str, &str); 7] = [
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
    ("reportingController", "reportingComponent"),
];

/// `object` with top-level fields renamed `from -> to` and the apiVersion set.
fn rename_fields<'a>(
    object: &Value,
    api_version: &str,
    renames: impl Iterator<Item = (&'a str, &'a str)>,
) -> Value {
    let mut out = object.clone();
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    map.insert("apiVersion".into(), json!(api_version));
    let mut moved = Map::new();
    for (from, to) in renames {
        map.remove(to);
        if let Some(value) = map.remove(from) {
            moved.insert(to.to_string(), value);
        }
    }
    map.extend(moved);
    out
}

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && metric["resource"]["target"]["type"] == "Utilization"
}

fn annotations(object: &mut Value) -> &mut Map<String, Value> {
    if !object["metadata"]["annotations"].is_object() {
        object["metadata"]["annotations"] = json!({});
    }
    object["metadata"]["annotations"].as_object_mut().unwrap()
}

fn hpa_v2_to_v1(object: &Value) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let spec = out["spec"].as_object_mut().cloned().unwrap_or_default();
    let metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut new_spec = spec.clone();
    new_spec.remove("metrics");
    new_spec.remove("behavior");
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        new_spec.insert(
            "targetCPUUtilizationPercentage".into(),
            cpu["resource"]["target"]["averageUtilization"].clone(),
        );
    }
    let others: Vec<&Value> = metrics.iter().filter(|m| !is_cpu_utilization(m)).collect();
    out["spec"] = Value::Object(new_spec);
    if !others.is_empty() {
        annotations(&mut out).insert(
            METRICS.into(),
            json!(serde_json::to_string(&others).unwrap_or_default()),
        );
    }
    if let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations(&mut out).insert(BEHAVIOR.into(), json!(behavior.to_string()));
    }
    if let Some(status) = object["status"].as_object() {
        let mut new_status = status.clone();
        let current = new_status
            .remove("currentMetrics")
            .and_then(|c| c.as_array().cloned())
            .unwrap_or_default();
        let conditions = new_status.remove("conditions");
        if let Some(cpu) = current
            .iter()
            .find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
            && let Some(utilization) = cpu["resource"]["current"]["averageUtilization"].as_i64()
        {
            new_status.insert("currentCPUUtilizationPercentage".into(), json!(utilization));
        }
        if !current.is_empty() {
            annotations(&mut out).insert(
                CURRENT_METRICS.into(),
                json!(serde_json::to_string(&current).unwrap_or_default()),
            );
        }
        if let Some(conditions) = conditions.filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
        {
            annotations(&mut out).insert(CONDITIONS.into(), json!(conditions.to_string()));
        }
        out["status"] = Value::Object(new_status);
    }
    out
}

fn take_annotation(object: &mut Value, key: &str) -> Option<Value> {
    let metadata = object.get_mut("metadata")?.as_object_mut()?;
    let annotations = metadata.get_mut("annotations")?.as_object_mut()?;
    let text = annotations.remove(key)?;
    if annotations.is_empty() {
        metadata.remove("annotations");
    }
    serde_json::from_str(text.as_str()?).ok()
}

fn hpa_v1_to_v2(object: &Value) -> Value {
    let mut out = object.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let mut metrics: Vec<Value> = Vec::new();
    if let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(target) = spec
            .remove("targetCPUUtilizationPercentage")
            .filter(|t| !t.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}));
    }
    if let Some(Value::Array(others)) = take_annotation(&mut out, METRICS) {
        metrics.extend(others);
    }
    if !metrics.is_empty() {
        out["spec"]["metrics"] = json!(metrics);
    }
    if let Some(behavior) = take_annotation(&mut out, BEHAVIOR) {
        out["spec"]["behavior"] = behavior;
    }
    let current = take_annotation(&mut out, CURRENT_METRICS);
    let conditions = take_annotation(&mut out, CONDITIONS);
    if let Some(status) = out.get_mut("status").and_then(Value::as_object_mut) {
        let utilization = status.remove("currentCPUUtilizationPercentage");
        match current {
            Some(current) => {
                status.insert("currentMetrics".into(), current);
            }
            None => {
                if let Some(utilization) = utilization.filter(|u| !u.is_null()) {
                    status.insert(
                        "currentMetrics".into(),
                        json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": utilization}}}]),
                    );
                }
            }
        }
        if let Some(conditions) = conditions {
            status.insert("conditions".into(), conditions);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}}],
                       "conditions": [{"type": "AbleToScale", "status": "True"}]}
        })
    }

    #[test]
    fn v2_reads_as_v1_and_back_without_loss() {
        let v1 = convert(&v2(), "autoscaling/v1");
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 42);
        assert!(
            v1["metadata"]["annotations"][METRICS]
                .as_str()
                .unwrap()
                .contains("memory")
        );
        assert_eq!(convert(&v1, "autoscaling/v2"), v2());
    }

    #[test]
    fn plain_v1_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
            "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 80, "scaleTargetRef": {"kind": "Deployment", "name": "a"}}});
        let v2 = convert(&v1, "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(v2["metadata"].get("annotations").is_none());
        assert_eq!(convert(&v2, "autoscaling/v1"), v1);
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(convert(&other, "v1"), other);
    }

    #[test]
    fn events_k8s_io_events_are_core_events_renamed() {
        let new = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "ns"},
            "regarding": {"kind": "Pod", "name": "p"}, "note": "pulled", "reason": "Pulled",
            "type": "Normal", "reportingController": "kubelet", "reportingInstance": "node-1",
            "eventTime": "2026-01-01T00:00:00.000000Z", "action": "Pulling",
            "deprecatedCount": 3});
        let core = convert(&new, "v1");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "pulled");
        assert_eq!(core["count"], 3);
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["reason"], "Pulled");
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(convert(&core, "events.k8s.io/v1"), new);
    }
}
