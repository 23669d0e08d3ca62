//! The scheduler's picture of the cluster, fed by its watches: every node with the pods
//! on it and what they take ([`NodeInfo`]), PodDisruptionBudgets and PriorityClasses.
//!
//! A pod the scheduler has just chosen a node for is *assumed* onto that node at once,
//! before its binding reaches the API server, so that the next pod already sees the
//! capacity it took. The watch later confirms the binding (the entry becomes a plain
//! bound pod) or the binding fails and the pod is forgotten.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;

use crate::resources::{self, Resources};
use crate::selectors::Labels;

/// `namespace/name` of a pod.
pub type PodKey = String;

/// The key of a pod.
pub fn pod_key(pod: &Pod) -> PodKey {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

/// A pod with what the plugins need from it worked out once.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub key: PodKey,
    pub namespace: String,
    pub labels: Labels,
    pub priority: i32,
    /// Requests as counted for fitting.
    pub requests: Resources,
    /// Requests with the scoring defaults for containers that ask for nothing.
    pub non_zero_requests: Resources,
    /// `(protocol, hostIP, hostPort)` of every container port with a host port.
    pub host_ports: Vec<(String, String, i32)>,
    /// Whether the pod has any pod (anti-)affinity terms.
    pub has_pod_affinity: bool,
}

impl PodInfo {
    /// Works out `pod`'s info; `priority_of` resolves a priority class name.
    pub fn new(pod: Arc<Pod>, priority_of: impl Fn(&str) -> Option<i32>) -> PodInfo {
        let default_spec = Default::default();
        let spec = pod.spec.as_ref().unwrap_or(&default_spec);
        let priority = spec
            .priority
            .or_else(|| spec.priority_class_name.as_deref().and_then(&priority_of))
            .unwrap_or(0);
        let host_ports = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = p.host_port.filter(|p| *p > 0)?;
                let ip = p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into());
                Some((p.protocol.clone().unwrap_or_else(|| "TCP".into()), ip, port))
            })
            .collect();
        let has_pod_affinity = spec
            .affinity
            .as_ref()
            .is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some());
        PodInfo {
            key: pod_key(&pod),
            namespace: pod.namespace().unwrap_or_default(),
            labels: pod.labels().clone(),
            priority,
            requests: resources::pod_requests(&pod, false),
            non_zero_requests: resources::pod_requests(&pod, true),
            host_ports,
            has_pod_affinity,
            pod,
        }
    }

    /// The node the pod is bound to, if any.
    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()?
            .node_name
            .as_deref()
            .filter(|n| !n.is_empty())
    }
}

/// One node and the pods on it (bound or assumed).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub name: String,
    /// None while pods name a node the watch has not delivered yet.
    pub node: Option<Arc<Node>>,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
}

impl NodeInfo {
    fn empty(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            node: None,
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
        }
    }

    /// A node with no pods yet (unit tests, the node's first sight).
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let mut info = NodeInfo::empty(&node.name_any());
        info.set_node(node);
        info
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.allocatable = resources::node_allocatable(&node);
        self.node = Some(node);
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        self.pods.push(pod);
    }

    /// Removes the pod `key`; returns it if it was here.
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let index = self.pods.iter().position(|p| p.key == key)?;
        let pod = self.pods.swap_remove(index);
        self.requested.subtract(&pod.requests);
        self.non_zero_requested.subtract(&pod.non_zero_requests);
        Some(pod)
    }

    /// The node's labels (empty without a Node object).
    pub fn labels(&self) -> &Labels {
        static EMPTY: Labels = Labels::new();
        self.node
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref())
            .unwrap_or(&EMPTY)
    }
}

/// Where a pod in the cache sits.
#[derive(Clone, Debug)]
struct Placement {
    node: String,
    assumed: bool,
}

/// Everything the scheduler knows about the cluster.
#[derive(Default)]
pub struct ClusterCache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    placements: HashMap<PodKey, Placement>,
    pub pdbs: HashMap<String, Arc<PodDisruptionBudget>>,
    pub priority_classes: HashMap<String, i32>,
    /// How many nodes report each image (ImageLocality's spread).
    pub image_nodes: HashMap<String, usize>,
    /// Claims, volumes and classes (VolumeBinding).
    pub volumes: crate::plugins::volume_binding::VolumeObjects,
    /// How many cached pods have pod (anti-)affinity terms.
    pods_with_affinity: usize,
}

impl ClusterCache {
    /// Every node slot, including ones without a Node object yet.
    pub fn node_infos(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// How many real nodes there are.
    pub fn node_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.node.is_some()).count()
    }

    /// Whether any cached pod has pod (anti-)affinity terms.
    pub fn any_pod_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let index = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.nodes.push(NodeInfo::empty(name));
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[index]
    }

    /// A node appeared or changed.
    pub fn upsert_node(&mut self, node: Arc<Node>) {
        let name = node.name_any();
        let old_images = self
            .node(&name)
            .and_then(|n| n.node.clone())
            .map(|n| node_images(&n));
        for image in old_images.into_iter().flatten() {
            if let Some(count) = self.image_nodes.get_mut(&image) {
                *count = count.saturating_sub(1);
            }
        }
        for image in node_images(&node) {
            *self.image_nodes.entry(image).or_default() += 1;
        }
        self.slot(&name).set_node(node);
    }

    /// A node is gone; its pods stay accounted until their own deletions arrive.
    pub fn remove_node(&mut self, name: &str) {
        let Some(&index) = self.index.get(name) else {
            return;
        };
        if let Some(node) = self.nodes[index].node.take() {
            for image in node_images(&node) {
                if let Some(count) = self.image_nodes.get_mut(&image) {
                    *count = count.saturating_sub(1);
                }
            }
        }
        if self.nodes[index].pods.is_empty() {
            self.nodes.swap_remove(index);
            self.index.remove(name);
            if let Some(moved) = self.nodes.get(index) {
                self.index.insert(moved.name.clone(), index);
            }
        }
    }

    /// Whether the pod `key` is assumed (chosen, binding not yet confirmed).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.placements.get(key).is_some_and(|p| p.assumed)
    }

    /// Whether the cache has the pod on some node (bound or assumed).
    pub fn has_pod(&self, key: &str) -> bool {
        self.placements.contains_key(key)
    }

    /// Puts a pod on `node` ahead of its binding.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.remove_pod(&pod.key);
        self.add_to(pod, node, true);
    }

    /// A bound pod appeared or changed (also confirms an assumed pod).
    pub fn upsert_bound_pod(&mut self, pod: Arc<PodInfo>) {
        let Some(node) = pod.node_name().map(str::to_string) else {
            return;
        };
        self.remove_pod(&pod.key);
        self.add_to(pod, &node, false);
    }

    fn add_to(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        if pod.has_pod_affinity {
            self.pods_with_affinity += 1;
        }
        self.placements.insert(
            pod.key.clone(),
            Placement {
                node: node.to_string(),
                assumed,
            },
        );
        self.slot(node).add_pod(pod);
    }

    /// A pod is gone (deleted, finished, or its binding failed).
    pub fn remove_pod(&mut self, key: &str) -> Option<Arc<PodInfo>> {
        let placement = self.placements.remove(key)?;
        let &index = self.index.get(&placement.node)?;
        let removed = self.nodes[index].remove_pod(key);
        if removed.as_ref().is_some_and(|p| p.has_pod_affinity) {
            self.pods_with_affinity -= 1;
        }
        if self.nodes[index].node.is_none() && self.nodes[index].pods.is_empty() {
            self.remove_node(&placement.node);
        }
        removed
    }

    /// Resolves a priority class name to its value.
    pub fn priority_of(&self, class: &str) -> Option<i32> {
        self.priority_classes.get(class).copied()
    }
}

fn node_images(node: &Node) -> Vec<String> {
    node.status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|image| image.names.clone().unwrap_or_default())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub fn node(name: &str, cpu: &str, extra: Value) -> Arc<Node> {
        let mut node = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}},
        });
        merge(&mut node, extra);
        Arc::new(serde_json::from_value(node).unwrap())
    }

    pub fn pod(name: &str, cpu: &str, extra: Value) -> Arc<PodInfo> {
        let mut pod = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        });
        merge(&mut pod, extra);
        Arc::new(PodInfo::new(
            Arc::new(serde_json::from_value(pod).unwrap()),
            |_| None,
        ))
    }

    fn merge(base: &mut Value, extra: Value) {
        match (base, extra) {
            (Value::Object(base), Value::Object(extra)) => {
                for (k, v) in extra {
                    merge(base.entry(k).or_insert(Value::Null), v);
                }
            }
            (base, extra) => *base = extra,
        }
    }

    #[test]
    fn assumed_pods_take_capacity_until_forgotten() {
        let mut cache = ClusterCache::default();
        cache.upsert_node(node("n1", "2", json!({})));
        cache.assume(pod("p", "500m", json!({})), "n1");
        assert!(cache.is_assumed("default/p"));
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 500);
        // The watch confirms it: no double counting.
        cache.upsert_bound_pod(pod("p", "500m", json!({"spec": {"nodeName": "n1"}})));
        assert!(!cache.is_assumed("default/p"));
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 500);
        cache.remove_pod("default/p");
        assert_eq!(cache.node("n1").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_on_unknown_nodes_wait_for_the_node() {
        let mut cache = ClusterCache::default();
        cache.upsert_bound_pod(pod("p", "1", json!({"spec": {"nodeName": "later"}})));
        assert_eq!(cache.node_count(), 0);
        cache.upsert_node(node("later", "4", json!({})));
        assert_eq!(cache.node_count(), 1);
        assert_eq!(cache.node("later").unwrap().requested.milli_cpu, 1000);
        cache.remove_node("later");
        assert_eq!(cache.node_count(), 0);
        cache.remove_pod("default/p");
        assert!(cache.node("later").is_none());
    }
}
