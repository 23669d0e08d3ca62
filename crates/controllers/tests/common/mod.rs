//! Shared setup of the black-box tests: a real `krust server`, a kube-rs client, and
//! the controllers running against it in a background task.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use krust_e2e::TestServer;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// How long a controller may take to act.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// How often conditions are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A server with the controllers running against it.
pub struct Cluster {
    pub server: TestServer,
    pub client: kube::Client,
    controllers: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Cluster {
    /// Starts a server and `krust_controllers::run` against it.
    pub async fn start() -> Cluster {
        // Controller logs, when asked for with RUST_LOG (e.g. krust_controllers=debug).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let server = tokio::task::spawn_blocking(TestServer::start)
            .await
            .unwrap();
        let client = server.client().await;
        let controllers = tokio::spawn(krust_controllers::run(client.clone()));
        Cluster {
            server,
            client,
            controllers,
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

    /// ConfigMaps of `namespace`.
    pub fn configmaps(&self, namespace: &str) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Panics if the controllers stopped (they run until the process ends).
    pub fn assert_controllers_running(&self) {
        assert!(
            !self.controllers.is_finished(),
            "the controllers stopped early"
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.controllers.abort();
    }
}

/// Creates a ConfigMap from JSON metadata.
pub async fn create_configmap(api: &Api<ConfigMap>, metadata: Value) -> ConfigMap {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": metadata, "data": {"k": "v"}})).unwrap(),
    )
    .await
    .unwrap()
}

/// An owner reference to `owner`.
pub fn owner_reference(owner: &ConfigMap, block_owner_deletion: bool) -> Value {
    let mut reference = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name.as_deref().unwrap(),
        "uid": owner.metadata.uid.as_deref().unwrap(),
    });
    if block_owner_deletion {
        reference["blockOwnerDeletion"] = json!(true);
    }
    reference
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

/// Whether the ConfigMap `name` is gone.
pub async fn is_gone(api: &Api<ConfigMap>, name: &str) -> bool {
    api.get_opt(name).await.unwrap().is_none()
}
