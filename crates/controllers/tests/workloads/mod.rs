//! Shared setup of the workload controller tests (Job, CronJob, StatefulSet,
//! DaemonSet): a real `krust server` (whose controllers do the work), hollow nodes
//! standing in for kubelets, and polling with a deadline.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::events::v1::Event;
use krust_e2e::TestServer;
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

/// How long a controller may take to act.
pub const DEADLINE: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A server (running the controllers itself) with hollow nodes.
pub struct Cluster {
    pub server: TestServer,
    pub client: kube::Client,
    pub nodes: HollowNodes,
}

impl Cluster {
    /// A server with `nodes` hollow nodes that bind pending pods round-robin.
    pub async fn start(nodes: Vec<NodeTemplate>) -> Cluster {
        let server = tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap();
        let client = server.client().await;
        let options = HollowOptions {
            bind_pending: true,
            ..Default::default()
        };
        let nodes = HollowNodes::start(client.clone(), nodes, options).await;
        Cluster {
            server,
            client,
            nodes,
        }
    }

    /// Creates a namespace.
    pub async fn namespace(&self, name: &str) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }

    /// The typed API of `K` in `namespace`.
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The pods of `namespace` with the label selector `selector`.
    pub async fn pods(&self, namespace: &str, selector: &str) -> Vec<Pod> {
        let pods: Api<Pod> = self.api(namespace);
        pods.list(&ListParams::default().labels(selector))
            .await
            .unwrap()
            .items
    }

    /// kubectl's stdout; panics with its stderr if it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = self.server.kubectl(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

/// The reasons of the events.k8s.io Events about the object `name` in `namespace`.
pub async fn event_reasons(client: &kube::Client, namespace: &str, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|event| event.reason)
        .collect()
}

/// Waits until an Event with `reason` about `name` was published.
pub async fn wait_event(client: &kube::Client, namespace: &str, name: &str, reason: &str) {
    wait_for(
        &format!("an event {reason} about {name}"),
        DEADLINE,
        || async {
            event_reasons(client, namespace, name)
                .await
                .iter()
                .any(|r| r == reason)
        },
    )
    .await;
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A JSON merge patch of `name`, retried on a conflict: the API server answers 409
/// to a patch without resourceVersion when its retries run out under contention
/// (hollow kubelets write pod status all the time).
pub async fn merge_patch<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut attempts = 0;
    loop {
        match api
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
        {
            Ok(object) => return object,
            Err(kube::Error::Api(error)) if error.code == 409 && attempts < 10 => attempts += 1,
            Err(error) => panic!("cannot patch {name}: {error}"),
        }
    }
}

/// A pod's phase.
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the object's status has condition `type_` with status `True`.
pub fn has_condition(conditions: Option<&Vec<serde_json::Value>>, type_: &str) -> bool {
    conditions
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}
