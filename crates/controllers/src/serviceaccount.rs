//! Per-namespace plumbing, as upstream's serviceaccount controller and
//! root-ca-cert-publisher: every namespace that is not being deleted gets a
//! `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap holding the cluster CA
//! (`ca.crt`), which pods use to trust the API server. Both are recreated when
//! deleted, and the ConfigMap is put back when its data is changed.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::cache::{Cache, Caches, Change};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap with the cluster CA.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Its key.
pub const ROOT_CA_KEY: &str = "ca.crt";
const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

struct Controller {
    namespaces: Arc<Cache<Namespace>>,
    service_accounts: Arc<Cache<ServiceAccount>>,
    config_maps: Arc<Cache<ConfigMap>>,
    client: kube::Client,
    root_ca_pem: Option<String>,
}

/// Runs the controller until the process ends. `root_ca_pem` None: the CA is not
/// published (only ServiceAccounts are made).
pub async fn run(caches: Caches, root_ca_pem: Option<String>) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        namespaces: caches.get(),
        service_accounts: caches.get(),
        config_maps: caches.get(),
        client: caches.client().clone(),
        root_ca_pem,
    });
    let queue: WorkQueue<String> = WorkQueue::new();
    let by_namespace = |namespace: Option<String>| namespace.into_iter().collect::<Vec<_>>();
    tokio::spawn(forward(
        controller.namespaces.subscribe(),
        queue.clone(),
        |change: &Change<Namespace>| change.object().metadata.name.clone().into_iter().collect(),
    ));
    tokio::spawn(forward(
        controller.service_accounts.subscribe(),
        queue.clone(),
        move |change: &Change<ServiceAccount>| match change {
            Change::Deleted(account)
                if account.metadata.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) =>
            {
                by_namespace(account.metadata.namespace.clone())
            }
            _ => Vec::new(),
        },
    ));
    tokio::spawn(forward(
        controller.config_maps.subscribe(),
        queue.clone(),
        move |change: &Change<ConfigMap>| {
            let map = change.object();
            if map.metadata.name.as_deref() == Some(ROOT_CA_CONFIG_MAP) {
                by_namespace(map.metadata.namespace.clone())
            } else {
                Vec::new()
            }
        },
    ));
    controller.namespaces.wait_synced().await;
    controller.service_accounts.wait_synced().await;
    controller.config_maps.wait_synced().await;
    run_workers("serviceaccount", queue, 2, |namespace| {
        let controller = controller.clone();
        async move { controller.sync(&namespace).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, namespace: &str) -> anyhow::Result<Outcome> {
        let Some(ns) = self.namespaces.get("", namespace) else {
            return Ok(Outcome::Done);
        };
        if ns.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        if self
            .service_accounts
            .get(namespace, DEFAULT_SERVICE_ACCOUNT)
            .is_none()
        {
            let account = ServiceAccount {
                metadata: ObjectMeta {
                    name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                    ..ObjectMeta::default()
                },
                ..ServiceAccount::default()
            };
            let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
            tolerate_races(api.create(&PostParams::default(), &account).await)?;
        }
        if let Some(pem) = &self.root_ca_pem {
            self.publish_root_ca(namespace, pem).await?;
        }
        Ok(Outcome::Done)
    }

    async fn publish_root_ca(&self, namespace: &str, pem: &str) -> anyhow::Result<()> {
        let data = BTreeMap::from([(ROOT_CA_KEY.to_string(), pem.to_string())]);
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        match self.config_maps.get(namespace, ROOT_CA_CONFIG_MAP) {
            None => {
                let map = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIG_MAP.into()),
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".to_string(),
                            ROOT_CA_DESCRIPTION.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                tolerate_races(api.create(&PostParams::default(), &map).await)
            }
            Some(map) if map.data.as_ref() != Some(&data) || map.binary_data.is_some() => {
                let mut map = (*map).clone();
                map.data = Some(data);
                map.binary_data = None;
                tolerate_races(
                    api.replace(ROOT_CA_CONFIG_MAP, &PostParams::default(), &map)
                        .await,
                )
            }
            Some(_) => Ok(()),
        }
    }
}

/// Treats losing a race as done: the object exists already (409 AlreadyExists, or a
/// conflict whose newer version comes through the watch) or its namespace is being
/// deleted (403), or the object went meanwhile (404: its deletion queues it again).
fn tolerate_races<T>(result: kube::Result<T>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 403 | 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}
