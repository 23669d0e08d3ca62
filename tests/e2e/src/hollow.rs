//! Hollow nodes: Node objects with a stand-in kubelet that runs no containers, for
//! controller, scheduler and benchmark tests that need pods to "run" without a
//! container runtime (upstream calls them hollow nodes too).
//!
//! [`HollowNodes::start`] creates the nodes through the API, renews their Leases in
//! `kube-node-lease`, and watches every pod. A pod bound to one of its nodes is
//! reported Running and Ready through `pods/status`; a pod being deleted is deleted
//! for good (grace period 0), as a kubelet does once its containers stopped.
//!
//! Pods steer their hollow life with annotations:
//! - [`EXIT_CODE_ANNOTATION`] (`"0"`, `"1"`, ...): the containers exit with that code
//!   at once; the pod ends `Succeeded` or `Failed` unless its restartPolicy is Always.
//! - [`READY_ANNOTATION`] `"false"`: Running but not Ready (change it to flip).
//!
//! With [`HollowOptions::bind_pending`] it also binds pending pods round-robin to
//! its nodes, for tests that run without a scheduler; a pod whose required node
//! affinity names nodes by `metadata.name` (a DaemonSet's) goes only to those. With
//! [`HollowOptions::nodes_only`] it only creates the Node objects (benchmarks with
//! thousands of nodes). [`HollowNodes::stop_node`]
//! makes a node go silent (no Lease renewals, no pod updates), as a failed machine.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Annotation: the exit code every container of the pod exits with at once.
pub const EXIT_CODE_ANNOTATION: &str = "hollow.krust.io/exit-code";
/// Annotation: `"false"` keeps a running pod not Ready.
pub const READY_ANNOTATION: &str = "hollow.krust.io/ready";
/// Label on every hollow node.
pub const HOLLOW_NODE_LABEL: &str = "hollow.krust.io/node";
/// How often node Leases are renewed (the kubelet's default).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// How many status writes are in flight at once.
const MAX_IN_FLIGHT: usize = 64;

/// What a hollow node offers.
#[derive(Clone, Debug)]
pub struct NodeTemplate {
    pub name: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub labels: BTreeMap<String, String>,
    /// Taints as `{"key", "value", "effect"}` objects.
    pub taints: Vec<Value>,
    /// More allocatable resources (extended resources such as `example.com/gpu`).
    pub extra_resources: BTreeMap<String, String>,
}

impl NodeTemplate {
    /// A node with 4 CPUs, 32 GiB and room for 110 pods.
    pub fn new(name: impl Into<String>) -> NodeTemplate {
        NodeTemplate {
            name: name.into(),
            cpu: "4".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            extra_resources: BTreeMap::new(),
        }
    }

    /// One more allocatable resource, e.g. `("example.com/gpu", "2")`.
    pub fn resource(mut self, name: &str, quantity: &str) -> NodeTemplate {
        self.extra_resources.insert(name.into(), quantity.into());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> NodeTemplate {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> NodeTemplate {
        self.taints
            .push(json!({"key": key, "value": value, "effect": effect}));
        self
    }

    pub fn capacity(mut self, cpu: &str, memory: &str, pods: &str) -> NodeTemplate {
        self.cpu = cpu.into();
        self.memory = memory.into();
        self.pods = pods.into();
        self
    }

    /// The Node object, Ready, with the given InternalIP.
    pub fn to_node(&self, internal_ip: &str) -> Node {
        let mut labels = self.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), "amd64".into());
        labels.insert(HOLLOW_NODE_LABEL.into(), "true".into());
        let mut resources = json!({
            "cpu": self.cpu, "memory": self.memory, "pods": self.pods,
            "ephemeral-storage": "100Gi",
        });
        for (name, quantity) in &self.extra_resources {
            resources[name] = json!(quantity);
        }
        let now = now();
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": self.taints},
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "addresses": [
                    {"type": "InternalIP", "address": internal_ip},
                    {"type": "Hostname", "address": self.name},
                ],
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "hollow kubelet is posting ready status",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }],
                "nodeInfo": {
                    "kubeletVersion": "v1.33.0-hollow", "kubeProxyVersion": "",
                    "containerRuntimeVersion": "hollow://0", "operatingSystem": "linux",
                    "architecture": "amd64", "osImage": "hollow", "kernelVersion": "",
                    "machineID": "", "systemUUID": "", "bootID": "",
                },
            },
        }))
        .expect("a hollow node is a valid Node")
    }
}

/// Options of [`HollowNodes::start`].
#[derive(Clone, Debug, Default)]
pub struct HollowOptions {
    /// Bind pods without a node (schedulerName default-scheduler) to the hollow
    /// nodes round-robin: a stand-in for the scheduler.
    pub bind_pending: bool,
    /// Only create the Node objects: no Lease renewals, no pod watch (for benchmarks
    /// with thousands of nodes, where nothing needs to run).
    pub nodes_only: bool,
}

/// How many nodes are created at once.
const CREATE_IN_FLIGHT: usize = 16;

/// Hollow nodes and their stand-in kubelet; stopped on drop (the Node objects stay).
pub struct HollowNodes {
    names: Vec<String>,
    silent: Arc<Mutex<HashSet<String>>>,
    tasks: JoinSet<()>,
}

impl HollowNodes {
    /// Creates `count` nodes named `<prefix>-<i>` with the default template.
    pub async fn start_simple(client: Client, prefix: &str, count: usize) -> HollowNodes {
        let templates: Vec<NodeTemplate> = (0..count)
            .map(|i| NodeTemplate::new(format!("{prefix}-{i}")))
            .collect();
        HollowNodes::start(client, templates, HollowOptions::default()).await
    }

    /// Creates the nodes (and their Leases), then runs the hollow kubelet for them.
    pub async fn start(
        client: Client,
        templates: Vec<NodeTemplate>,
        options: HollowOptions,
    ) -> HollowNodes {
        let nodes: Api<Node> = Api::all(client.clone());
        futures::stream::iter(templates.iter().enumerate())
            .for_each_concurrent(CREATE_IN_FLIGHT, |(index, template)| {
                let nodes = nodes.clone();
                async move {
                    let ip = format!("10.254.{}.{}", index / 250, index % 250 + 1);
                    let node = template.to_node(&ip);
                    let created = nodes.create(&PostParams::default(), &node).await;
                    let created =
                        created.unwrap_or_else(|e| panic!("cannot create {}: {e}", template.name));
                    // Status is not taken on create: write it through nodes/status.
                    let status = json!({"status": serde_json::to_value(&node.status).unwrap()});
                    nodes
                        .patch_status(
                            &created.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&status),
                        )
                        .await
                        .unwrap_or_else(|e| {
                            panic!("cannot write the status of {}: {e}", template.name)
                        });
                }
            })
            .await;
        let names: Vec<String> = templates.iter().map(|t| t.name.clone()).collect();
        let silent = Arc::new(Mutex::new(HashSet::new()));
        let mut tasks = JoinSet::new();
        if !options.nodes_only {
            tasks.spawn(renew_leases(client.clone(), names.clone(), silent.clone()));
            tasks.spawn(run_pods(client, names.clone(), silent.clone(), options));
        }
        HollowNodes {
            names,
            silent,
            tasks,
        }
    }

    /// The node names.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The node goes silent: no more Lease renewals or pod status updates.
    pub fn stop_node(&self, name: &str) {
        self.silent.lock().unwrap().insert(name.to_string());
    }

    /// A silent node comes back.
    pub fn resume_node(&self, name: &str) {
        self.silent.lock().unwrap().remove(name);
    }

    /// Stops the hollow kubelet of every node.
    pub fn shutdown(&mut self) {
        self.tasks.abort_all();
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn now_micros() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Renews every node's Lease (creating it first), as kubelets do.
async fn renew_leases(client: Client, names: Vec<String>, silent: Arc<Mutex<HashSet<String>>>) {
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut tick = tokio::time::interval(LEASE_RENEW_INTERVAL);
    loop {
        tick.tick().await;
        for name in &names {
            if silent.lock().unwrap().contains(name) {
                continue;
            }
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {
                    "holderIdentity": name,
                    "leaseDurationSeconds": 40,
                    "renewTime": now_micros(),
                },
            });
            let params = PatchParams::apply("hollow-kubelet").force();
            if let Err(error) = leases.patch(name, &params, &Patch::Apply(&lease)).await {
                eprintln!("hollow kubelet: cannot renew the lease of {name}: {error}");
            }
        }
    }
}

/// Watches every pod and plays the kubelet for those on the hollow nodes.
async fn run_pods(
    client: Client,
    names: Vec<String>,
    silent: Arc<Mutex<HashSet<String>>>,
    options: HollowOptions,
) {
    let ours: HashSet<String> = names.iter().cloned().collect();
    let pods: Api<Pod> = Api::all(client.clone());
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let next_node = Arc::new(AtomicUsize::new(0));
    let mut events = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => pod,
            _ => continue,
        };
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let action = match node {
            Some(node) if ours.contains(&node) => {
                if silent.lock().unwrap().contains(&node) {
                    continue;
                }
                match pod_action(&pod) {
                    Some(action) => action,
                    None => continue,
                }
            }
            Some(_) => continue,
            None if options.bind_pending && is_pending_for_default_scheduler(&pod) => {
                let pinned = pinned_nodes(&pod);
                let live: Vec<&String> = {
                    let silent = silent.lock().unwrap();
                    names
                        .iter()
                        .filter(|n| !silent.contains(*n))
                        .filter(|n| pinned.as_ref().is_none_or(|pinned| pinned.contains(*n)))
                        .collect()
                };
                if live.is_empty() {
                    continue;
                }
                let index = next_node.fetch_add(1, Ordering::Relaxed) % live.len();
                Action::Bind(live[index].clone())
            }
            None => continue,
        };
        let permit = limit.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        tokio::spawn(async move {
            if let Err(error) = act(client, &pod, action).await {
                // Conflicts and vanished pods are expected races; the next event retries.
                if !matches!(&error, kube::Error::Api(e) if e.code == 404 || e.code == 409) {
                    eprintln!("hollow kubelet: {}: {error}", pod.name_any());
                }
            }
            drop(permit);
        });
    }
}

/// The nodes a pod's required node affinity names by `metadata.name` (as a
/// DaemonSet's pods do), if it names any: binding honours them.
fn pinned_nodes(pod: &Pod) -> Option<HashSet<String>> {
    let terms = &pod
        .spec
        .as_ref()?
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    let names: HashSet<String> = terms
        .iter()
        .flat_map(|term| term.match_fields.iter().flatten())
        .filter(|field| field.key == "metadata.name" && field.operator == "In")
        .flat_map(|field| field.values.iter().flatten().cloned())
        .collect();
    (!names.is_empty()).then_some(names)
}

fn is_pending_for_default_scheduler(pod: &Pod) -> bool {
    let scheduler = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("default-scheduler");
    scheduler == "default-scheduler" && pod.metadata.deletion_timestamp.is_none()
}

enum Action {
    Bind(String),
    Delete,
    Status(Value),
}

/// What the kubelet would do next for a pod on its node, if anything.
fn pod_action(pod: &Pod) -> Option<Action> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Action::Delete);
    }
    let status = desired_status(pod);
    let current = pod.status.as_ref();
    let phase = current.and_then(|s| s.phase.as_deref());
    let ready = current
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str());
    let wanted_ready = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str());
    if phase == status["phase"].as_str() && ready == wanted_ready {
        return None;
    }
    if matches!(phase, Some("Succeeded" | "Failed")) {
        // A finished pod never runs again.
        return None;
    }
    Some(Action::Status(status))
}

/// The status a kubelet would report for a pod, from its spec and annotations.
fn desired_status(pod: &Pod) -> Value {
    let annotations = pod.annotations();
    let spec = pod.spec.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let exit_code: Option<i32> = annotations
        .get(EXIT_CODE_ANNOTATION)
        .and_then(|code| code.parse().ok());
    let finished = exit_code.filter(|_| restart_policy != "Always");
    let ready = finished.is_none()
        && annotations.get(READY_ANNOTATION).map(String::as_str) != Some("false");
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(now);
    let (phase, state) = match finished {
        Some(0) => (
            "Succeeded",
            json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started, "finishedAt": now()}}),
        ),
        Some(code) => (
            "Failed",
            json!({"terminated": {"exitCode": code, "reason": "Error", "startedAt": started, "finishedAt": now()}}),
        ),
        None => ("Running", json!({"running": {"startedAt": started}})),
    };
    let containers: Vec<Value> = spec
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(),
                "imageID": "", "ready": ready, "started": finished.is_none(),
                "restartCount": 0, "state": state,
            })
        })
        .collect();
    let flag = |on: bool| if on { "True" } else { "False" };
    let transition = now();
    let condition = |kind: &str, on: bool| json!({"type": kind, "status": flag(on), "lastTransitionTime": transition});
    let uid = pod.uid().unwrap_or_default();
    let index = uid
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    json!({
        "phase": phase,
        "startTime": started,
        "hostIP": "10.254.0.1",
        "podIP": format!("10.42.{}.{}", (index >> 8) % 256, index % 254 + 1),
        "conditions": [
            condition("PodReadyToStartContainers", true),
            condition("Initialized", true),
            condition("ContainersReady", ready),
            condition("Ready", ready),
            condition("PodScheduled", true),
        ],
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    })
}

async fn act(client: Client, pod: &Pod, action: Action) -> Result<(), kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match action {
        Action::Bind(node) => {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": namespace},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node},
            });
            let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
                .create_subresource(
                    "binding",
                    &name,
                    &PostParams::default(),
                    serde_json::to_vec(&binding).unwrap(),
                )
                .map_err(kube::Error::BuildRequest)?;
            client.request::<Value>(request).await.map(|_| ())
        }
        Action::Delete => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            pods.delete(&name, &params).await.map(|_| ())
        }
        Action::Status(status) => {
            let patch = json!({"status": status});
            pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: Value, restart_policy: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u1", "annotations": annotations},
            "spec": {"nodeName": "hollow-0", "restartPolicy": restart_policy,
                     "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_pinned_by_node_affinity_names_its_nodes() {
        let mut pinned = pod(json!({}), "Always");
        pinned.spec.as_mut().unwrap().affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]},
            ]},
        }}))
        .unwrap();
        assert_eq!(
            pinned_nodes(&pinned),
            Some(HashSet::from(["n1".to_string()]))
        );
        assert_eq!(pinned_nodes(&pod(json!({}), "Always")), None);
    }

    #[test]
    fn a_plain_pod_runs_and_is_ready() {
        let status = desired_status(&pod(json!({}), "Always"));
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["conditions"][3]["status"], "True");
        assert_eq!(status["containerStatuses"][0]["ready"], true);
    }

    #[test]
    fn an_exit_code_ends_the_pod_unless_it_always_restarts() {
        let failed = desired_status(&pod(json!({EXIT_CODE_ANNOTATION: "3"}), "Never"));
        assert_eq!(failed["phase"], "Failed");
        assert_eq!(
            failed["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            3
        );
        let done = desired_status(&pod(json!({EXIT_CODE_ANNOTATION: "0"}), "OnFailure"));
        assert_eq!(done["phase"], "Succeeded");
        let running = desired_status(&pod(json!({EXIT_CODE_ANNOTATION: "0"}), "Always"));
        assert_eq!(running["phase"], "Running");
    }

    #[test]
    fn the_ready_annotation_keeps_a_running_pod_unready() {
        let status = desired_status(&pod(json!({READY_ANNOTATION: "false"}), "Always"));
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["conditions"][3]["status"], "False");
    }

    #[test]
    fn a_pod_already_in_the_desired_state_needs_nothing() {
        let mut running = pod(json!({}), "Always");
        running.status = serde_json::from_value(desired_status(&running)).unwrap();
        assert!(pod_action(&running).is_none());
    }
}
