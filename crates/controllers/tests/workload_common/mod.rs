//! Shared setup of the workload controller tests: a real `krust server` (whose
//! controllers are the ones under test), hollow nodes binding and running its
//! pods, and helpers to wait on conditions and to watch pods while a rollout runs.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::{Value, json};
use tokio::sync::watch;

/// How long a controller may take to act.
pub const DEADLINE: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A server with hollow nodes and one namespace for the test.
pub struct Workloads {
    pub server: TestServer,
    pub client: kube::Client,
    pub nodes: HollowNodes,
    pub namespace: String,
}

impl Workloads {
    /// Starts a server, `nodes` hollow nodes that bind pending pods, and a namespace.
    pub async fn start(namespace: &str, nodes: usize) -> Workloads {
        let server = tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap();
        let client = server.client().await;
        let templates = (0..nodes)
            .map(|i| NodeTemplate::new(format!("hollow-{i}")))
            .collect();
        let nodes = HollowNodes::start(
            client.clone(),
            templates,
            HollowOptions {
                bind_pending: true,
                ..Default::default()
            },
        )
        .await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
            )
            .await
            .unwrap();
        Workloads {
            server,
            client,
            nodes,
            namespace: namespace.to_string(),
        }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates an object from JSON in the test namespace.
    pub async fn create<K>(&self, object: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).unwrap();
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    /// Merge-patches `name`. A 409 (the server gave up retrying its own
    /// read-modify-write while the controllers write status) is retried.
    pub async fn patch<K>(&self, name: &str, patch: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let api = self.api::<K>();
        wait_for(&format!("patching {name}"), || async {
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(object) => Some(object),
                Err(kube::Error::Api(status)) if status.code == 409 => None,
                Err(error) => panic!("patching {name}: {error}"),
            }
        })
        .await
    }

    /// The pods of the namespace that match `selector` and are active (not
    /// finished, not terminating).
    pub async fn active_pods(&self, selector: &str) -> Vec<Pod> {
        let pods = self
            .api::<Pod>()
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        pods.items.into_iter().filter(is_active).collect()
    }

    /// The ReplicaSets of the namespace, lowest revision first.
    pub async fn replica_sets(&self) -> Vec<ReplicaSet> {
        let mut sets = self
            .api::<ReplicaSet>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items;
        // By revision: creation times have only second precision.
        sets.sort_by_key(|rs| {
            let revision: u64 = rs
                .annotations()
                .get("deployment.kubernetes.io/revision")
                .and_then(|r| r.parse().ok())
                .unwrap_or(0);
            (
                revision,
                rs.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        sets
    }

    /// Runs kubectl in the test namespace; panics with its output unless it succeeds.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.server.kubectl(all)
    }

    /// Waits until `kind/name` has an event with `reason` (events.k8s.io/v1).
    pub async fn wait_for_event(&self, name: &str, reason: &str) -> Event {
        let events = self.api::<Event>();
        wait_for(&format!("{name} has a {reason} event"), || async {
            events
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                })
        })
        .await
    }

    /// The Deployment `name`, once its status is current and complete.
    pub async fn wait_complete(&self, name: &str) -> Deployment {
        let api = self.api::<Deployment>();
        wait_for(
            &format!("deployment {name} completes its rollout"),
            || async {
                let d = api.get(name).await.unwrap();
                is_complete(&d).then_some(d)
            },
        )
        .await
    }
}

pub fn is_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, "Succeeded" | "Failed")
}

pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether the Deployment's status says its rollout is done, as `kubectl rollout
/// status` judges it.
pub fn is_complete(d: &Deployment) -> bool {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = d.status.as_ref() else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas == Some(desired)
        && status.replicas == Some(desired)
        && status.available_replicas == Some(desired)
}

/// Polls `condition` until it holds; panics naming `what` after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Polls `probe` until it gives a value; panics naming `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a [`PodCensus`] saw: the most active pods and the fewest ready ones at any
/// moment, and whether old and new templates ever ran side by side.
#[derive(Debug, Default, Clone)]
pub struct Census {
    pub max_active: usize,
    pub min_ready: usize,
    /// The most distinct `pod-template-hash` values among active pods at once.
    pub max_templates: usize,
    pub events: usize,
}

/// Watches the pods of a namespace and keeps a [`Census`] of every state the
/// watch shows, from the moment it is started (after the initial list).
pub struct PodCensus {
    census: watch::Receiver<Census>,
    task: tokio::task::JoinHandle<()>,
}

impl PodCensus {
    /// Starts watching; returns once the initial list is in.
    pub async fn start(api: Api<Pod>) -> PodCensus {
        let (sender, census) = watch::channel(Census {
            min_ready: usize::MAX,
            ..Census::default()
        });
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut listed_tx = Some(listed_tx);
            let mut pods: HashMap<String, Pod> = HashMap::new();
            let mut initial: HashMap<String, Pod> = HashMap::new();
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Apply(pod)) => {
                        pods.insert(pod.name_any(), pod);
                    }
                    Ok(WatchEvent::Delete(pod)) => {
                        pods.remove(&pod.name_any());
                    }
                    Ok(WatchEvent::Init) => initial.clear(),
                    Ok(WatchEvent::InitApply(pod)) => {
                        initial.insert(pod.name_any(), pod);
                    }
                    Ok(WatchEvent::InitDone) => {
                        pods = std::mem::take(&mut initial);
                        if let Some(tx) = listed_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Err(_) => continue,
                }
                if listed_tx.is_some() {
                    continue;
                }
                let active: Vec<&Pod> = pods.values().filter(|p| is_active(p)).collect();
                let ready = active.iter().filter(|p| is_ready(p)).count();
                let mut hashes: Vec<&str> = active
                    .iter()
                    .filter_map(|p| p.labels().get("pod-template-hash").map(String::as_str))
                    .collect();
                hashes.sort();
                hashes.dedup();
                sender.send_modify(|census| {
                    census.max_active = census.max_active.max(active.len());
                    census.min_ready = census.min_ready.min(ready);
                    census.max_templates = census.max_templates.max(hashes.len());
                    census.events += 1;
                });
            }
        });
        listed_rx.await.expect("the pod watch lists");
        PodCensus { census, task }
    }

    /// What was seen so far.
    pub fn census(&self) -> Census {
        self.census.borrow().clone()
    }
}

impl Drop for PodCensus {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A pod template of one busybox container with `labels` and an image tag.
pub fn template(labels: Value, image: &str) -> Value {
    json!({
        "metadata": {"labels": labels},
        "spec": {"containers": [{"name": "app", "image": image}]},
    })
}
