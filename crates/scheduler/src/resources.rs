//! Resource quantities and what a pod asks for, counted as upstream's
//! `resourcehelper.PodRequests` does: regular containers summed, init containers as
//! the peak of each one alone (plus the sidecars started before it), sidecars
//! (restartable init containers) added to the regular containers, then the pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The CPU a container without a CPU request is counted with when scoring (upstream's
/// `DefaultMilliCPURequest`).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request is counted with when scoring.
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// Amounts of every resource: CPU in millicores, memory and ephemeral storage in
/// bytes, pods as a count, extended resources (`example.com/gpu`, hugepages) as integers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub pods: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Reads a `requests`/`allocatable` map.
    pub fn from_map(map: &BTreeMap<String, Quantity>) -> Resources {
        let mut resources = Resources::default();
        for (name, quantity) in map {
            let value = parse_quantity(&quantity.0).unwrap_or(0.0);
            match name.as_str() {
                "cpu" => resources.milli_cpu = (value * 1000.0).ceil() as i64,
                "memory" => resources.memory = value.ceil() as i64,
                "ephemeral-storage" => resources.ephemeral_storage = value.ceil() as i64,
                "pods" => resources.pods = value as i64,
                other if is_scalar_resource(other) => {
                    resources
                        .scalar
                        .insert(other.to_string(), value.ceil() as i64);
                }
                _ => {}
            }
        }
        resources
    }

    pub fn add(&mut self, other: &Resources) {
        self.milli_cpu += other.milli_cpu;
        self.memory += other.memory;
        self.ephemeral_storage += other.ephemeral_storage;
        self.pods += other.pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() += value;
        }
    }

    pub fn subtract(&mut self, other: &Resources) {
        self.milli_cpu -= other.milli_cpu;
        self.memory -= other.memory;
        self.ephemeral_storage -= other.ephemeral_storage;
        self.pods -= other.pods;
        for (name, value) in &other.scalar {
            *self.scalar.entry(name.clone()).or_default() -= value;
        }
    }

    /// Each resource the larger of the two.
    pub fn max_with(&mut self, other: &Resources) {
        self.milli_cpu = self.milli_cpu.max(other.milli_cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (name, value) in &other.scalar {
            let entry = self.scalar.entry(name.clone()).or_default();
            *entry = (*entry).max(*value);
        }
    }

    /// The amount of a resource by its API name.
    pub fn get(&self, name: &str) -> i64 {
        match name {
            "cpu" => self.milli_cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.pods,
            other => self.scalar.get(other).copied().unwrap_or(0),
        }
    }
}

/// Extended resources (`vendor.example/thing`), hugepages and attachable volumes are
/// counted like cpu and memory; the rest of the `kubernetes.io/` names are not.
fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("kubernetes.io/"))
}

/// A node's allocatable resources (capacity when allocatable is missing).
pub fn node_allocatable(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let map = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    map.map(Resources::from_map).unwrap_or_default()
}

/// What a pod requests, with `non_zero` applying the scoring defaults to containers
/// that request no CPU or memory (upstream's `NonMissingContainerRequests`).
pub fn pod_requests(pod: &Pod, non_zero: bool) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let container = |c: &Container| {
        let mut r = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .map(Resources::from_map)
            .unwrap_or_default();
        if non_zero {
            if r.milli_cpu == 0 {
                r.milli_cpu = DEFAULT_MILLI_CPU_REQUEST;
            }
            if r.memory == 0 {
                r.memory = DEFAULT_MEMORY_REQUEST;
            }
        }
        r
    };
    let mut requests = Resources::default();
    for c in &spec.containers {
        requests.add(&container(c));
    }
    let mut sidecars = Resources::default();
    let mut init_peak = Resources::default();
    for c in spec.init_containers.iter().flatten() {
        let own = container(c);
        let during = if c.restart_policy.as_deref() == Some("Always") {
            // A sidecar keeps running next to the regular containers.
            requests.add(&own);
            sidecars.add(&own);
            sidecars.clone()
        } else {
            let mut during = own;
            during.add(&sidecars);
            during
        };
        init_peak.max_with(&during);
    }
    requests.max_with(&init_peak);
    if let Some(overhead) = spec.overhead.as_ref() {
        requests.add(&Resources::from_map(overhead));
    }
    requests.pods = 0;
    requests
}

/// Parses a Kubernetes quantity (`100m`, `1.5Gi`, `2e3`, `512Mi`) into its value.
pub fn parse_quantity(text: &str) -> Option<f64> {
    krust_api::table::quantity_value(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn requests(cpu: &str, memory: &str) -> serde_json::Value {
        json!({"requests": {"cpu": cpu, "memory": memory}})
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1Gi"), Some(1073741824.0));
        assert_eq!(parse_quantity("1.5k"), Some(1500.0));
        assert_eq!(parse_quantity("2e3"), Some(2000.0));
        assert_eq!(parse_quantity("12x"), None);
        assert_eq!(parse_quantity(""), None);
    }

    #[test]
    fn containers_add_up_and_overhead_is_added() {
        let p = pod(json!({
            "containers": [
                {"name": "a", "resources": requests("100m", "1Gi")},
                {"name": "b", "resources": requests("250m", "1Gi")},
            ],
            "overhead": {"cpu": "50m", "memory": "10Mi"},
        }));
        let r = pod_requests(&p, false);
        assert_eq!(r.milli_cpu, 400);
        assert_eq!(r.memory, 2 * 1024 * 1024 * 1024 + 10 * 1024 * 1024);
    }

    #[test]
    fn init_containers_count_as_their_peak_and_sidecars_add_up() {
        let p = pod(json!({
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": requests("200m", "0")},
                {"name": "big-init", "resources": requests("1", "0")},
            ],
            "containers": [{"name": "a", "resources": requests("500m", "0")}],
        }));
        // Regular 500m + sidecar 200m = 700m; the init container runs with the sidecar: 1200m.
        assert_eq!(pod_requests(&p, false).milli_cpu, 1200);
        let small_init = pod(json!({
            "initContainers": [{"name": "i", "resources": requests("300m", "0")}],
            "containers": [{"name": "a", "resources": requests("500m", "0")}],
        }));
        assert_eq!(pod_requests(&small_init, false).milli_cpu, 500);
    }

    #[test]
    fn non_zero_defaults_apply_only_when_asked() {
        let p = pod(json!({"containers": [{"name": "a"}]}));
        assert_eq!(pod_requests(&p, false).milli_cpu, 0);
        let r = pod_requests(&p, true);
        assert_eq!((r.milli_cpu, r.memory), (100, DEFAULT_MEMORY_REQUEST));
    }

    #[test]
    fn extended_resources_are_scalars() {
        let p = pod(
            json!({"containers": [{"name": "a", "resources": {"requests": {"example.com/gpu": "2"}}}]}),
        );
        assert_eq!(pod_requests(&p, false).get("example.com/gpu"), 2);
    }
}
