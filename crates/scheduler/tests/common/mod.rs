//! Shared setup of the scheduler's black-box tests: a real `krust server` (which runs
//! the scheduler inside it, leader-elected), hollow nodes, and helpers that create
//! pods and wait for what the scheduler does to them.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// How long the scheduler may take to act.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A server, its client, a namespace for the test and the hollow nodes.
pub struct Cluster {
    pub server: TestServer,
    pub client: kube::Client,
    pub namespace: String,
    pub nodes: Option<HollowNodes>,
}

impl Cluster {
    /// Starts a server with the given hollow nodes and a namespace `test`.
    pub async fn start(nodes: Vec<NodeTemplate>) -> Cluster {
        let server = tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap();
        let client = server.client().await;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "test"}})).unwrap(),
            )
            .await
            .unwrap();
        let nodes = if nodes.is_empty() {
            None
        } else {
            Some(HollowNodes::start(client.clone(), nodes, HollowOptions::default()).await)
        };
        Cluster {
            server,
            client,
            namespace: "test".into(),
            nodes,
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates a pod with one container (requesting `cpu`) and extra spec/metadata.
    pub async fn pod(&self, name: &str, cpu: &str, extra: Value) -> Pod {
        let mut pod = json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}]},
        });
        merge(&mut pod, extra);
        self.pods()
            .create(
                &PostParams::default(),
                &serde_json::from_value(pod).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("cannot create pod {name}: {e}"))
    }

    /// Waits until the pod is bound; returns its node.
    pub async fn bound_node(&self, name: &str) -> String {
        let pods = self.pods();
        wait_for(&format!("pod {name} is bound"), || async {
            pods.get(name).await.unwrap().spec.and_then(|s| s.node_name)
        })
        .await
    }

    /// The pod's node, if it is bound.
    pub async fn node_of(&self, name: &str) -> Option<String> {
        self.pods()
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.node_name)
    }

    /// Waits until the pod's PodScheduled condition is False with a message starting
    /// with `prefix`; returns the message.
    pub async fn wait_message(&self, name: &str, prefix: &str) -> String {
        let pods = self.pods();
        let mut last = String::new();
        let found = wait_for_opt(|| async {
            let pod = pods.get(name).await.unwrap();
            let message = pod
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
                .and_then(|c| c.message)?;
            if message.starts_with(prefix) {
                Some(message)
            } else {
                None
            }
        })
        .await;
        if let Some(message) = found {
            return message;
        }
        if let Some(c) = pods
            .get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
        {
            last = format!("{c:?}");
        }
        panic!(
            "pod {name}: no Unschedulable condition starting with {prefix:?}; conditions: {last}"
        )
    }

    /// Waits for an events.k8s.io event about the pod with `reason`; returns its note.
    pub async fn event_note(&self, pod: &str, reason: &str) -> String {
        self.wait_event_note(pod, reason, |_| true).await
    }

    /// Waits for an event of `reason` about `pod` whose note `accept` takes; returns
    /// the note. (A pod may get several, e.g. while the node watch catches up.)
    pub async fn wait_event_note(
        &self,
        pod: &str,
        reason: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        wait_for(&format!("a {reason} event for {pod}"), || async {
            let list = events.list(&ListParams::default()).await.unwrap();
            list.items
                .into_iter()
                .filter(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
                })
                .map(|e| e.note.unwrap_or_default())
                .find(|note| accept(note))
        })
        .await
    }
}

/// Polls `probe` until it returns a value; panics naming `what` after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match wait_for_opt(probe).await {
        Some(value) => value,
        None => panic!("timed out after {DEADLINE:?} waiting until {what}"),
    }
}

/// Polls `probe` until it returns a value or [`DEADLINE`] passes.
pub async fn wait_for_opt<T, F, Fut>(mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
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
