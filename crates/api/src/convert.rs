//! Conversion between the served versions of a resource that has more than one.
//!
//! Objects are stored in one version (the storage version) and converted on the way
//! in and out, as kube-apiserver does. Today that is HorizontalPodAutoscaler,
//! served as autoscaling/v2 (stored) and autoscaling/v1. What v1 can not express
//! (metrics other than CPU utilization, conditions, behavior) travels in the
//! annotations upstream uses, so a v2 object read and written back through v1
//! loses nothing.

use serde_json::{Map, Value, json};

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// The version objects of `group`/`plural` are stored in, when it is not simply
/// the version they were written in.
pub fn storage_version(group: &str, plural: &str) -> Option<&'static str> {
    match (group, plural) {
        ("autoscaling", "horizontalpodautoscalers") => Some("v2"),
        _ => None,
    }
}

/// `object` (a `group` object of any served version) in version `to`.
pub fn convert(object: &Value, group: &str, to: &str) -> Value {
    let from = object["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .map(|(_, v)| v);
    match (group, object["kind"].as_str(), from, to) {
        ("autoscaling", Some("HorizontalPodAutoscaler"), Some("v1"), "v2") => hpa_v1_to_v2(object),
        ("autoscaling", Some("HorizontalPodAutoscaler"), Some("v2"), "v1") => hpa_v2_to_v1(object),
        _ => object.clone(),
    }
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
        let v1 = convert(&v2(), "autoscaling", "v1");
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
        assert_eq!(convert(&v1, "autoscaling", "v2"), v2());
    }

    #[test]
    fn plain_v1_becomes_a_cpu_metric() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "a"},
            "spec": {"maxReplicas": 3, "targetCPUUtilizationPercentage": 80, "scaleTargetRef": {"kind": "Deployment", "name": "a"}}});
        let v2 = convert(&v1, "autoscaling", "v2");
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(v2["metadata"].get("annotations").is_none());
        assert_eq!(convert(&v2, "autoscaling", "v1"), v1);
        let other = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(convert(&other, "", "v1"), other);
    }
}
