//! ResourceQuota accounting, shared by the quota admission (which charges a new
//! object against its namespace's quotas) and the quota controller (which recounts
//! `status.used`): what one object uses, in upstream's resource names, which quotas'
//! scopes it falls under, and whether a charge stays within `hard`.
//!
//! Names: `count/<plural>[.<group>]` for any type; the legacy names `pods`,
//! `services`, `secrets`, `configmaps`, `replicationcontrollers`, `resourcequotas`,
//! `persistentvolumeclaims`, `services.nodeports`, `services.loadbalancers`; for pods
//! `requests.cpu` (also `cpu`), `requests.memory` (also `memory`), `limits.cpu`,
//! `limits.memory`, `requests.ephemeral-storage`, `limits.ephemeral-storage`; for claims
//! `requests.storage` and the per-class `<class>.storageclass.storage.k8s.io/...`.
//! Amounts are exact, in nano units ([`quantity_nanos`]).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::table::{quantity_from_nanos, quantity_nanos};

/// One whole unit (one object) in nano units.
const ONE: i128 = 1_000_000_000;

/// What `object` (of `group`/`plural`) uses, by resource name.
pub fn usage(group: &str, plural: &str, object: &Value) -> BTreeMap<String, i128> {
    let mut used = BTreeMap::new();
    if group.is_empty() && plural == "pods" && is_terminal_pod(object) {
        return used;
    }
    let count = match group {
        "" => format!("count/{plural}"),
        _ => format!("count/{plural}.{group}"),
    };
    used.insert(count, ONE);
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "secrets"
                | "configmaps"
                | "replicationcontrollers"
                | "resourcequotas"
                | "persistentvolumeclaims"
        )
    {
        used.insert(plural.to_string(), ONE);
    }
    match (group, plural) {
        ("", "pods") => pod_usage(object, &mut used),
        ("", "services") => {
            let spec = &object["spec"];
            let node_ports = spec["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["nodePort"].as_i64().is_some_and(|n| n > 0))
                .count() as i128;
            let kind = spec["type"].as_str().unwrap_or("ClusterIP");
            if matches!(kind, "NodePort" | "LoadBalancer") {
                used.insert("services.nodeports".into(), node_ports * ONE);
            }
            if kind == "LoadBalancer" {
                used.insert("services.loadbalancers".into(), ONE);
            }
        }
        ("", "persistentvolumeclaims") => {
            let storage = object["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(quantity_nanos)
                .unwrap_or(0);
            used.insert("requests.storage".into(), storage);
            if let Some(class) = object["spec"]["storageClassName"].as_str() {
                let prefix = format!("{class}.storageclass.storage.k8s.io/");
                used.insert(format!("{prefix}requests.storage"), storage);
                used.insert(format!("{prefix}persistentvolumeclaims"), ONE);
            }
        }
        _ => {}
    }
    used
}

fn is_terminal_pod(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// A pod's compute requests and limits: the sum over its containers, or the
/// largest init container where that is more (upstream's pod requests).
fn pod_usage(pod: &Value, used: &mut BTreeMap<String, i128>) {
    for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        let mut totals: BTreeMap<String, i128> = BTreeMap::new();
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            for (resource, quantity) in resources(container, field) {
                *totals.entry(resource).or_default() += quantity;
            }
        }
        for container in pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for (resource, quantity) in resources(container, field) {
                let total = totals.entry(resource).or_default();
                *total = (*total).max(quantity);
            }
        }
        for (resource, quantity) in totals {
            if field == "requests" && matches!(resource.as_str(), "cpu" | "memory") {
                used.insert(resource.clone(), quantity);
            }
            used.insert(format!("{prefix}{resource}"), quantity);
        }
    }
}

fn resources(container: &Value, field: &str) -> Vec<(String, i128)> {
    container["resources"][field]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(name, quantity)| {
            Some((
                name.clone(),
                quantity_text(quantity).and_then(|q| quantity_nanos(&q))?,
            ))
        })
        .collect()
}

fn quantity_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Whether a pod is BestEffort: no container requests or limits cpu or memory.
fn is_best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|field| {
        pod["spec"][field]
            .as_array()
            .into_iter()
            .flatten()
            .all(|container| {
                ["requests", "limits"].iter().all(|kind| {
                    container["resources"][kind]
                        .as_object()
                        .is_none_or(|r| !r.contains_key("cpu") && !r.contains_key("memory"))
                })
            })
    })
}

/// Whether `quota`'s scopes (and scopeSelector) take in `object`. Scopes concern
/// pods only: a quota with any scope counts nothing else.
pub fn in_scope(quota: &Value, group: &str, plural: &str, object: &Value) -> bool {
    let spec = &quota["spec"];
    let mut scopes: Vec<(String, String, Vec<String>)> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|scope| (scope.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    for expression in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let values = expression["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect();
        scopes.push((
            expression["scopeName"].as_str().unwrap_or("").to_string(),
            expression["operator"].as_str().unwrap_or("").to_string(),
            values,
        ));
    }
    if scopes.is_empty() {
        return true;
    }
    if !(group.is_empty() && plural == "pods") {
        return false;
    }
    scopes.iter().all(|(scope, operator, values)| {
        let terminating = object["spec"]["activeDeadlineSeconds"].is_i64();
        match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => is_best_effort(object),
            "NotBestEffort" => !is_best_effort(object),
            "PriorityClass" => {
                let class = object["spec"]["priorityClassName"].as_str();
                match operator.as_str() {
                    "Exists" => class.is_some(),
                    "DoesNotExist" => class.is_none(),
                    "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                    "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                    _ => false,
                }
            }
            _ => false,
        }
    })
}

/// The `status.used` map of a quota from what every object in scope uses: an entry
/// for each resource in `hard`, in the format of its hard quantity.
pub fn used_status(
    hard: &Map<String, Value>,
    totals: &BTreeMap<String, i128>,
) -> Map<String, Value> {
    hard.iter()
        .map(|(name, limit)| {
            let amount = totals.get(name).copied().unwrap_or(0);
            let like = quantity_text(limit).unwrap_or_default();
            (name.clone(), json!(quantity_from_nanos(amount, &like)))
        })
        .collect()
}

/// Charges `delta` to `quota`: the new `status.used`, or upstream's message when a
/// resource would exceed its hard limit.
pub fn charge(
    quota: &Value,
    delta: &BTreeMap<String, i128>,
) -> Result<Option<Map<String, Value>>, String> {
    let Some(hard) = quota["spec"]["hard"].as_object() else {
        return Ok(None);
    };
    let relevant: Vec<(&String, i128)> = delta
        .iter()
        .filter(|(name, _)| hard.contains_key(*name))
        .map(|(name, amount)| (name, *amount))
        .collect();
    if relevant.is_empty() {
        return Ok(None);
    }
    let used = quota["status"]["used"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let amount_of = |map: &Map<String, Value>, name: &str| {
        map.get(name)
            .and_then(quantity_text)
            .and_then(|q| quantity_nanos(&q))
            .unwrap_or(0)
    };
    let mut exceeded: Vec<Excess> = Vec::new();
    let mut updated = used.clone();
    for (name, amount) in &relevant {
        let current = amount_of(&used, name);
        let limit = amount_of(hard, name);
        if current + amount > limit {
            exceeded.push(Excess {
                name,
                requested: *amount,
                used: current,
                limit,
            });
        }
        let like = quantity_text(&hard[name.as_str()]).unwrap_or_default();
        updated.insert(
            (*name).clone(),
            json!(quantity_from_nanos(current + amount, &like)),
        );
    }
    if exceeded.is_empty() {
        return Ok(Some(updated));
    }
    let list = |pick: fn(&Excess) -> i128| {
        exceeded
            .iter()
            .map(|entry| {
                let like = quantity_text(&hard[entry.name.as_str()]).unwrap_or_default();
                format!("{}={}", entry.name, quantity_from_nanos(pick(entry), &like))
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(format!(
        "exceeded quota: {}, requested: {}, used: {}, limited: {}",
        quota["metadata"]["name"].as_str().unwrap_or(""),
        list(|e| e.requested),
        list(|e| e.used),
        list(|e| e.limit),
    ))
}

/// A resource a charge would take over its hard limit.
struct Excess<'a> {
    name: &'a String,
    requested: i128,
    used: i128,
    limit: i128,
}

/// Compute resources a quota constrains that a new pod must name, as upstream
/// requires (`must specify requests.cpu`).
pub fn missing_pod_resources(quota: &Value, pod: &Value) -> Vec<String> {
    let Some(hard) = quota["spec"]["hard"].as_object() else {
        return Vec::new();
    };
    let mut named = BTreeMap::new();
    pod_usage(pod, &mut named);
    let containers: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    hard.keys()
        .filter(|name| {
            matches!(
                name.as_str(),
                "requests.cpu"
                    | "requests.memory"
                    | "cpu"
                    | "memory"
                    | "limits.cpu"
                    | "limits.memory"
            )
        })
        .filter(|name| {
            let (field, resource) = match name.split_once('.') {
                Some((field, resource)) => (field, resource),
                None => ("requests", name.as_str()),
            };
            containers
                .iter()
                .any(|c| c["resources"][field].get(resource).is_none())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu: &str, memory: &str) -> Value {
        json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "1"}}},
            {"name": "b", "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": "1"}}},
        ]}})
    }

    #[test]
    fn a_pod_uses_its_count_and_compute_resources() {
        let used = usage("", "pods", &pod("250m", "100Mi"));
        assert_eq!(used["pods"], ONE);
        assert_eq!(used["count/pods"], ONE);
        assert_eq!(used["requests.cpu"], ONE / 2);
        assert_eq!(used["cpu"], ONE / 2);
        assert_eq!(used["limits.cpu"], 2 * ONE);
        assert_eq!(used["requests.memory"], 200 * 1024 * 1024 * ONE);
        let mut finished = pod("1", "1Mi");
        finished["status"]["phase"] = json!("Succeeded");
        assert!(usage("", "pods", &finished).is_empty());
    }

    #[test]
    fn services_claims_and_other_types_have_their_names() {
        let service = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80, "nodePort": 30001}, {"port": 81, "nodePort": 30002}]}});
        let used = usage("", "services", &service);
        assert_eq!(
            (
                used["services"],
                used["services.nodeports"],
                used["services.loadbalancers"]
            ),
            (ONE, 2 * ONE, ONE)
        );
        let claim = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let used = usage("", "persistentvolumeclaims", &claim);
        assert_eq!(
            used["fast.storageclass.storage.k8s.io/requests.storage"],
            (1 << 30) * ONE
        );
        assert_eq!(
            usage("apps", "deployments", &json!({}))["count/deployments.apps"],
            ONE
        );
    }

    #[test]
    fn charges_within_hard_update_used_and_beyond_it_are_refused() {
        let quota = json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "requests.cpu": "1"}},
                           "status": {"used": {"pods": "1", "requests.cpu": "500m"}}});
        let delta = usage("", "pods", &pod("100m", "1Mi"));
        let used = charge(&quota, &delta).unwrap().unwrap();
        assert_eq!(used["pods"], "2");
        assert_eq!(used["requests.cpu"], "700m");
        let error = charge(&quota, &usage("", "pods", &pod("300m", "1Mi"))).unwrap_err();
        assert_eq!(
            error,
            "exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
        );
        // A quota that constrains nothing the object uses is not charged.
        assert_eq!(charge(&quota, &usage("", "secrets", &json!({}))), Ok(None));
    }

    #[test]
    fn scopes_select_pods_by_deadline_qos_and_priority_class() {
        let terminating = json!({"spec": {"scopes": ["Terminating"]}});
        let best_effort = json!({"spec": {"scopes": ["BestEffort"]}});
        let priority = json!({"spec": {"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        let plain = json!({"spec": {"containers": [{"name": "c"}]}});
        let deadline = json!({"spec": {"activeDeadlineSeconds": 10, "containers": [{"name": "c"}], "priorityClassName": "high"}});
        assert!(!in_scope(&terminating, "", "pods", &plain));
        assert!(in_scope(&terminating, "", "pods", &deadline));
        assert!(in_scope(&best_effort, "", "pods", &plain));
        assert!(!in_scope(&best_effort, "", "pods", &pod("1", "1Mi")));
        assert!(in_scope(&priority, "", "pods", &deadline));
        assert!(!in_scope(&priority, "", "pods", &plain));
        assert!(!in_scope(&terminating, "", "secrets", &json!({})));
        assert!(in_scope(&json!({"spec": {}}), "", "secrets", &json!({})));
    }

    #[test]
    fn used_status_lists_every_hard_resource_in_its_format() {
        let hard: Map<String, Value> =
            serde_json::from_value(json!({"pods": "10", "requests.memory": "1Gi", "secrets": "5"}))
                .unwrap();
        let totals = BTreeMap::from([
            ("pods".to_string(), 3 * ONE),
            ("requests.memory".to_string(), (512 << 20) * ONE),
        ]);
        let used = used_status(&hard, &totals);
        assert_eq!(
            Value::Object(used),
            json!({"pods": "3", "requests.memory": "512Mi", "secrets": "0"})
        );
    }
}
