//! metrics.k8s.io/v1beta1 served by the API server itself (upstream needs
//! metrics-server for it): NodeMetrics and PodMetrics, read on request from the
//! kubelets' `/stats/summary`. `kubectl top nodes|pods` and autoscalers read these.
//!
//! CPU is the kubelet's average over its sampling period (five seconds, which is
//! what `window` reports); memory is the working set. A node or pod the kubelet has
//! no sample for yet (just started, or its agent unreachable) is left out of lists
//! and is not found by name, as with metrics-server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Response;
use serde_json::{Value, json};

use crate::errors::{ApiError, ApiResult};
use crate::handlers::{Api, Call, Selectors};
use crate::server::{Body, json_response};

/// The API group, registered in the resource table as read-only.
pub use krust_api::resources::METRICS_GROUP as GROUP;

/// The window the kubelet's CPU rates are averaged over (its sampling period).
const WINDOW: &str = "5s";

/// How long one kubelet may take to answer before its node is left out.
const KUBELET_TIMEOUT: Duration = Duration::from_secs(5);

/// GET or LIST of `nodes` or `pods` in metrics.k8s.io.
pub async fn serve(api: &Api, call: &Call) -> ApiResult<Response<Body>> {
    let client = api.kubelet_client.clone().ok_or_else(|| {
        ApiError::new_service_unavailable(
            "resource metrics come from the node agents, which this server cannot reach (it has no kubelet client certificate)",
        )
    })?;
    let selectors = Selectors::from_query(&call.query, call.resource)?;
    let wanted = |object: &crate::cache::CachedObject| {
        call.name.as_deref().is_none_or(|name| object.name == name) && selectors.matches(object)
    };
    let nodes = |keep: &dyn Fn(&crate::cache::CachedObject) -> bool| -> Vec<Value> {
        api.cache
            .list("/registry/nodes/", None)
            .objects
            .iter()
            .filter(|(_, o)| keep(o))
            .map(|(_, o)| o.value())
            .collect()
    };
    let items = if call.resource.plural == "nodes" {
        let chosen = nodes(&wanted);
        let summaries = summaries(client, &chosen).await;
        chosen
            .iter()
            .filter_map(|node| {
                let name = node["metadata"]["name"].as_str()?;
                node_metrics(node, summaries.get(name)?)
            })
            .collect::<Vec<_>>()
    } else {
        let prefix = match &call.namespace {
            Some(namespace) => format!("/registry/pods/{namespace}/"),
            None => "/registry/pods/".to_string(),
        };
        let pods: Vec<Value> = api
            .cache
            .list(&prefix, None)
            .objects
            .iter()
            .filter(|(_, o)| wanted(o))
            .map(|(_, o)| o.value())
            .filter(|pod| pod["status"]["phase"] == "Running")
            .collect();
        let used = nodes(&|node| {
            pods.iter()
                .any(|pod| pod["spec"]["nodeName"].as_str() == Some(node.name.as_str()))
        });
        let summaries = summaries(client, &used).await;
        pods.iter()
            .filter_map(|pod| {
                let summary = summaries.get(pod["spec"]["nodeName"].as_str()?)?;
                pod_metrics(pod, summary)
            })
            .collect()
    };
    let kind = if call.resource.plural == "nodes" {
        "NodeMetrics"
    } else {
        "PodMetrics"
    };
    if call.name.is_some() {
        return items
            .into_iter()
            .next()
            .map(|item| json_response(200, &item))
            .ok_or_else(|| {
                ApiError::not_found(
                    GROUP,
                    call.resource.plural,
                    call.name.as_deref().unwrap_or(""),
                )
            });
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{kind}List"),
            "apiVersion": format!("{GROUP}/v1beta1"),
            "metadata": {},
            "items": items,
        }),
    ))
}

/// The summaries of `nodes`' kubelets, by node name, fetched at once; nodes that
/// do not answer in time are missing.
async fn summaries(client: Arc<rustls::ClientConfig>, nodes: &[Value]) -> HashMap<String, Value> {
    let fetches = nodes.iter().map(|node| {
        let client = client.clone();
        async move {
            let name = node["metadata"]["name"].as_str()?.to_string();
            let fetch = crate::kubelet_proxy::get_json(client, node, "/stats/summary");
            match tokio::time::timeout(KUBELET_TIMEOUT, fetch).await {
                Ok(Ok(summary)) => Some((name, summary)),
                Ok(Err(error)) => {
                    tracing::debug!(node = %name, error = %error.message, "no resource metrics from the node");
                    None
                }
                Err(_) => None,
            }
        }
    });
    futures::future::join_all(fetches)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Nanocores as a quantity (`12345n`).
fn cpu_quantity(nano_cores: u64) -> String {
    format!("{nano_cores}n")
}

/// Bytes as a quantity (`1024Ki`, or plain bytes when not a whole KiB).
fn memory_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The usage of one summary entry (node, pod or container): cpu and memory, or
/// none while the kubelet has no CPU rate yet.
fn usage(stats: &Value) -> Option<(Value, &str)> {
    let cpu = stats["cpu"]["usageNanoCores"].as_u64()?;
    let memory = stats["memory"]["workingSetBytes"].as_u64()?;
    let time = stats["cpu"]["time"].as_str().unwrap_or_default();
    Some((
        json!({"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)}),
        time,
    ))
}

fn metadata_of(object: &Value) -> Value {
    let metadata = &object["metadata"];
    let mut out = json!({
        "name": metadata["name"],
        "creationTimestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    for key in ["namespace", "labels"] {
        if !metadata[key].is_null() {
            out[key] = metadata[key].clone();
        }
    }
    out
}

/// A node's NodeMetrics from its kubelet's summary.
pub fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let (usage, time) = usage(&summary["node"])?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/v1beta1"),
        "metadata": metadata_of(node),
        "timestamp": time,
        "window": WINDOW,
        "usage": usage,
    }))
}

/// A pod's PodMetrics from its node's summary (matched by UID).
pub fn pod_metrics(pod: &Value, summary: &Value) -> Option<Value> {
    let uid = pod["metadata"]["uid"].as_str()?;
    let entry = summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["uid"] == uid)?;
    let mut time = "";
    let mut containers = Vec::new();
    for container in entry["containers"].as_array()? {
        let (usage, at) = usage(container)?;
        time = time.max(at);
        containers.push(json!({"name": container["name"], "usage": usage}));
    }
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/v1beta1"),
        "metadata": metadata_of(pod),
        "timestamp": time,
        "window": WINDOW,
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_summary() {
        let summary = json!({
            "node": {"nodeName": "n1", "cpu": {"time": "2026-12-03T20:00:00Z", "usageNanoCores": 250_000_000u64},
                     "memory": {"workingSetBytes": 2048}},
            "pods": [{"podRef": {"name": "web", "namespace": "ns", "uid": "u1"},
                      "containers": [{"name": "app", "cpu": {"time": "2026-12-03T20:00:01Z", "usageNanoCores": 1000},
                                      "memory": {"workingSetBytes": 1000}}]},
                     {"podRef": {"name": "new", "namespace": "ns", "uid": "u2"},
                      "containers": [{"name": "app", "cpu": {"usageCoreNanoSeconds": 5}, "memory": {"workingSetBytes": 1}}]}],
        });
        let node = json!({"metadata": {"name": "n1", "labels": {"a": "b"}}});
        let metrics = node_metrics(&node, &summary).unwrap();
        assert_eq!(
            metrics["usage"],
            json!({"cpu": "250000000n", "memory": "2Ki"})
        );
        assert_eq!(metrics["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(metrics["window"], "5s");

        let pod = json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}});
        let metrics = pod_metrics(&pod, &summary).unwrap();
        assert_eq!(metrics["metadata"]["namespace"], "ns");
        assert_eq!(metrics["timestamp"], "2026-12-03T20:00:01Z");
        assert_eq!(
            metrics["containers"],
            json!([{"name": "app", "usage": {"cpu": "1000n", "memory": "1000"}}])
        );
        // No CPU rate yet (one sample only), or a pod the kubelet does not know: no metrics.
        let young = json!({"metadata": {"name": "new", "namespace": "ns", "uid": "u2"}});
        assert!(pod_metrics(&young, &summary).is_none());
        let other = json!({"metadata": {"name": "x", "namespace": "ns", "uid": "zz"}});
        assert!(pod_metrics(&other, &summary).is_none());
        assert!(node_metrics(&node, &json!({"node": {}})).is_none());
    }
}
