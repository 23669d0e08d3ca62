//! LimitRanger admission, as upstream's plugin: the LimitRanges of a namespace fill
//! in the resources its new pods leave out (`default` limits, `defaultRequest`
//! requests, per container) and refuse pods and PersistentVolumeClaims outside their
//! bounds (`min`, `max`, `maxLimitRequestRatio`, per Container, per Pod, and the
//! storage of a PersistentVolumeClaim). A refusal is 403 Forbidden listing every
//! bound broken; nothing is written.

use krust_api::table::quantity_nanos;
use serde_json::{Map, Value, json};

/// The annotation naming what the defaults filled in.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// Applies the namespace's `ranges` to a new object of `kind` (Pod or
/// PersistentVolumeClaim). Returns the messages of the bounds it breaks.
pub fn admit(kind: &str, object: &mut Value, ranges: &[Value]) -> Result<(), Vec<String>> {
    let items: Vec<&Value> = ranges
        .iter()
        .flat_map(|range| range["spec"]["limits"].as_array().into_iter().flatten())
        .collect();
    let mut broken = Vec::new();
    match kind {
        "Pod" => {
            apply_container_defaults(object, &items);
            for item in &items {
                match item["type"].as_str() {
                    Some("Container") => {
                        for container in containers(object) {
                            check_bounds(item, "Container", &container["resources"], &mut broken);
                        }
                    }
                    Some("Pod") => check_bounds(item, "Pod", &pod_resources(object), &mut broken),
                    _ => {}
                }
            }
        }
        "PersistentVolumeClaim" => {
            for item in items
                .iter()
                .filter(|i| i["type"] == "PersistentVolumeClaim")
            {
                check_claim(item, &object["spec"]["resources"], &mut broken);
            }
        }
        _ => {}
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .flat_map(|field| pod["spec"][field].as_array().into_iter().flatten())
        .collect()
}

/// Fills each container's missing limits and requests from the `Container` items'
/// `default` and `defaultRequest`, and records what was set in [`ANNOTATION`].
fn apply_container_defaults(pod: &mut Value, items: &[&Value]) {
    let mut set: Vec<String> = Vec::new();
    for field in ["initContainers", "containers"] {
        let Some(list) = pod["spec"][field].as_array_mut() else {
            continue;
        };
        for container in list {
            let name = container["name"].as_str().unwrap_or("").to_string();
            for item in items.iter().filter(|i| i["type"] == "Container") {
                for (defaults, target, what) in [
                    ("defaultRequest", "requests", "request"),
                    ("default", "limits", "limit"),
                ] {
                    let Some(defaults) = item[defaults].as_object() else {
                        continue;
                    };
                    let mut names = Vec::new();
                    for (resource, quantity) in defaults {
                        let resources = ensure_object(&mut container["resources"]);
                        let target = ensure_object(resources.entry(target).or_insert(json!({})));
                        if !target.contains_key(resource) {
                            target.insert(resource.clone(), quantity.clone());
                            names.push(resource.as_str());
                        }
                    }
                    if !names.is_empty() {
                        set.push(format!(
                            "{} {what} for {field_kind} {name}",
                            names.join(", "),
                            field_kind = container_kind(field)
                        ));
                    }
                }
            }
        }
    }
    if !set.is_empty() {
        let metadata = ensure_object(&mut pod["metadata"]);
        let annotations = ensure_object(metadata.entry("annotations").or_insert(json!({})));
        annotations.insert(
            ANNOTATION.into(),
            json!(format!("LimitRanger plugin set: {}", set.join("; "))),
        );
    }
}

fn container_kind(field: &str) -> &'static str {
    match field {
        "initContainers" => "init container",
        _ => "container",
    }
}

fn ensure_object(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = json!({});
    }
    value.as_object_mut().expect("just made an object")
}

/// The pod's resources as the `Pod` items see them: the sum over its containers.
fn pod_resources(pod: &Value) -> Value {
    let mut sums: [Map<String, Value>; 2] = [Map::new(), Map::new()];
    for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
        for (index, field) in ["requests", "limits"].iter().enumerate() {
            for (resource, quantity) in container["resources"][field]
                .as_object()
                .into_iter()
                .flatten()
            {
                let add = quantity.as_str().and_then(quantity_nanos).unwrap_or(0);
                let entry = sums[index].entry(resource.clone()).or_insert(json!(0));
                *entry = json!(entry.as_i64().unwrap_or(0).saturating_add(add as i64));
            }
        }
    }
    let [requests, limits] = sums;
    let as_quantities = |m: Map<String, Value>| -> Map<String, Value> {
        m.into_iter()
            .map(|(k, v)| (k, json!(format!("{}n", v.as_i64().unwrap_or(0)))))
            .collect()
    };
    json!({"requests": as_quantities(requests), "limits": as_quantities(limits)})
}

fn nanos(value: &Value) -> Option<i128> {
    match value {
        Value::String(text) => quantity_nanos(text),
        Value::Number(number) => quantity_nanos(&number.to_string()),
        _ => None,
    }
}

/// Shows a quantity as the user wrote it, or in canonical form when summed.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => krust_api::table::canonical_quantity(text),
        other => other.to_string(),
    }
}

/// Checks `min`, `max` and `maxLimitRequestRatio` of one item against the requests
/// and limits of a container or pod (`scope` names which in messages).
fn check_bounds(item: &Value, scope: &str, resources: &Value, broken: &mut Vec<String>) {
    let requests = &resources["requests"];
    let limits = &resources["limits"];
    for (resource, min) in item["min"].as_object().into_iter().flatten() {
        let bound = nanos(min).unwrap_or(0);
        match requests.get(resource).and_then(nanos) {
            None => broken.push(format!(
                "minimum {resource} usage per {scope} is {}.  No request is specified",
                shown(min)
            )),
            Some(request) if request < bound => broken.push(format!(
                "minimum {resource} usage per {scope} is {}, but request is {}",
                shown(min),
                shown(&requests[resource])
            )),
            _ => {}
        }
        if let Some(limit) = limits.get(resource).and_then(nanos)
            && limit < bound
        {
            broken.push(format!(
                "minimum {resource} usage per {scope} is {}, but limit is {}",
                shown(min),
                shown(&limits[resource])
            ));
        }
    }
    for (resource, max) in item["max"].as_object().into_iter().flatten() {
        let bound = nanos(max).unwrap_or(0);
        match limits.get(resource).and_then(nanos) {
            None => broken.push(format!(
                "maximum {resource} usage per {scope} is {}.  No limit is specified",
                shown(max)
            )),
            Some(limit) if limit > bound => broken.push(format!(
                "maximum {resource} usage per {scope} is {}, but limit is {}",
                shown(max),
                shown(&limits[resource])
            )),
            _ => {}
        }
        if let Some(request) = requests.get(resource).and_then(nanos)
            && request > bound
        {
            broken.push(format!(
                "maximum {resource} usage per {scope} is {}, but request is {}",
                shown(max),
                shown(&requests[resource])
            ));
        }
    }
    for (resource, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let request = requests.get(resource).and_then(nanos).unwrap_or(0);
        let Some(limit) = limits.get(resource).and_then(nanos) else {
            broken.push(format!("{resource} max limit to request ratio per {scope} is {}, but no limit is specified", shown(ratio)));
            continue;
        };
        if request == 0 {
            broken.push(format!(
                "{resource} max limit to request ratio per {scope} is {}, but no request is specified or request is 0",
                shown(ratio)
            ));
            continue;
        }
        let actual = limit as f64 / request as f64;
        let allowed = nanos(ratio).unwrap_or(0) as f64 / 1e9;
        if actual > allowed {
            broken.push(format!(
                "{resource} max limit to request ratio per {scope} is {}, but provided ratio is {actual:.6}",
                shown(ratio)
            ));
        }
    }
}

/// The storage bounds of a `PersistentVolumeClaim` item.
fn check_claim(item: &Value, resources: &Value, broken: &mut Vec<String>) {
    let request = resources["requests"].get("storage");
    for (bound_name, bound) in [
        ("minimum", &item["min"]["storage"]),
        ("maximum", &item["max"]["storage"]),
    ] {
        let Some(limit) = nanos(bound) else {
            continue;
        };
        let Some(requested) = request.and_then(nanos) else {
            broken.push(format!(
                "{bound_name} storage usage per PersistentVolumeClaim is {}.  No request is specified",
                shown(bound)
            ));
            continue;
        };
        let outside = if bound_name == "minimum" {
            requested < limit
        } else {
            requested > limit
        };
        if outside {
            broken.push(format!(
                "{bound_name} storage usage per PersistentVolumeClaim is {}, but request is {}",
                shown(bound),
                shown(request.unwrap_or(&Value::Null))
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range() -> Value {
        json!({"spec": {"limits": [{
            "type": "Container",
            "min": {"cpu": "100m", "memory": "100Mi"},
            "max": {"cpu": "500m", "memory": "500Mi"},
            "default": {"cpu": "500m", "memory": "500Mi"},
            "defaultRequest": {"cpu": "100m", "memory": "200Mi"},
            "maxLimitRequestRatio": {"cpu": "5"},
        }]}})
    }

    fn pod(resources: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn missing_resources_are_filled_from_the_defaults() {
        let mut object = pod(json!({}));
        admit("Pod", &mut object, &[range()]).unwrap();
        let resources = &object["spec"]["containers"][0]["resources"];
        assert_eq!(
            resources["requests"],
            json!({"cpu": "100m", "memory": "200Mi"})
        );
        assert_eq!(
            resources["limits"],
            json!({"cpu": "500m", "memory": "500Mi"})
        );
        let annotation = object["metadata"]["annotations"][ANNOTATION]
            .as_str()
            .unwrap();
        assert!(
            annotation.contains("cpu, memory request for container c"),
            "{annotation}"
        );

        // What the pod names is kept; only the rest is filled in.
        let mut partial = pod(json!({"requests": {"cpu": "300m"}}));
        admit("Pod", &mut partial, &[range()]).unwrap();
        let resources = &partial["spec"]["containers"][0]["resources"];
        assert_eq!(
            resources["requests"],
            json!({"cpu": "300m", "memory": "200Mi"})
        );
    }

    #[test]
    fn pods_outside_the_bounds_are_refused_with_every_reason() {
        let mut object = pod(
            json!({"requests": {"cpu": "50m", "memory": "100Mi"}, "limits": {"cpu": "600m", "memory": "1Gi"}}),
        );
        let broken = admit("Pod", &mut object, &[range()]).unwrap_err();
        assert!(
            broken.contains(
                &"minimum cpu usage per Container is 100m, but request is 50m".to_string()
            ),
            "{broken:?}"
        );
        assert!(
            broken.contains(
                &"maximum cpu usage per Container is 500m, but limit is 600m".to_string()
            ),
            "{broken:?}"
        );
        assert!(
            broken.contains(
                &"maximum memory usage per Container is 500Mi, but limit is 1Gi".to_string()
            ),
            "{broken:?}"
        );
        assert!(
            broken
                .iter()
                .any(|m| m.starts_with("cpu max limit to request ratio per Container is 5")),
            "{broken:?}"
        );
    }

    #[test]
    fn pod_and_claim_items_bound_their_totals() {
        let ranges = [json!({"spec": {"limits": [
            {"type": "Pod", "max": {"cpu": "1"}},
            {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}},
        ]}})];
        let mut object = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "600m"}}},
            {"name": "b", "resources": {"limits": {"cpu": "600m"}}},
        ]}});
        let broken = admit("Pod", &mut object, &ranges).unwrap_err();
        assert_eq!(
            broken,
            ["maximum cpu usage per Pod is 1, but limit is 1200m"]
        );

        let mut claim = json!({"spec": {"resources": {"requests": {"storage": "5Gi"}}}});
        let broken = admit("PersistentVolumeClaim", &mut claim, &ranges).unwrap_err();
        assert_eq!(
            broken,
            ["maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"]
        );
        let mut fine = json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}});
        assert!(admit("PersistentVolumeClaim", &mut fine, &ranges).is_ok());
    }
}
