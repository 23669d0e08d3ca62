//! The resource quota controller, as upstream's (pkg/controller/resourcequota):
//! keeps every ResourceQuota's `status.hard` (its spec) and `status.used` (what the
//! objects of its namespace in its scopes use, counted by [`krust_api::quota`]).
//! Admission charges new objects at once; this controller gives back what deleted or
//! finished objects used, on their change and on a periodic recount.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use kube::api::{Api, PostParams};
use serde_json::{Map, Value, json};

use crate::cache::{Cache, Cacheable, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// How often every quota is recounted (objects of types no event reaches here).
pub const RECOUNT_PERIOD: Duration = Duration::from_secs(10);

/// Starts the controller on the shared caches and runs it until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let quotas: Arc<Cache<ResourceQuota>> = caches.get();
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    // As upstream: a quota is recounted when its spec is new or changed (not on the
    // status writes of admission and this controller, which would race with caches
    // that have not yet seen the object just charged), when something it may count
    // goes or finishes, and periodically.
    tokio::spawn(forward(
        quotas.subscribe(),
        queue.clone(),
        |change: &Change<ResourceQuota>| {
            let quota = change.object();
            let hard = quota.spec.as_ref().and_then(|s| s.hard.as_ref());
            let recorded = quota.status.as_ref().and_then(|s| s.hard.as_ref());
            match change {
                Change::Applied(_) if hard != recorded => vec![ObjectKey::of(quota.as_ref())],
                _ => Vec::new(),
            }
        },
    ));
    macro_rules! recount_on {
        ($kind:ty, $releases:expr) => {
            let cache: Arc<Cache<$kind>> = caches.get();
            let quotas = quotas.clone();
            tokio::spawn(forward(
                cache.subscribe(),
                queue.clone(),
                move |change: &Change<$kind>| {
                    let released = match change {
                        Change::Deleted(_) => true,
                        Change::Applied(object) => $releases(object.as_ref()),
                    };
                    if !released {
                        return Vec::new();
                    }
                    let namespace = change.object().metadata.namespace.as_deref().unwrap_or("");
                    quotas
                        .list_namespace(namespace)
                        .iter()
                        .map(|quota| ObjectKey::of(quota.as_ref()))
                        .collect()
                },
            ));
        };
    }
    recount_on!(Pod, |pod: &Pod| crate::workload::is_pod_finished(pod)
        || pod.metadata.deletion_timestamp.is_some());
    recount_on!(Service, |_: &Service| false);
    recount_on!(PersistentVolumeClaim, |_: &PersistentVolumeClaim| false);
    quotas.wait_synced().await;
    let controller = Arc::new(Controller {
        caches: caches.clone(),
        quotas,
    });
    run_workers("resourcequota", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

struct Controller {
    caches: Caches,
    quotas: Arc<Cache<ResourceQuota>>,
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(quota) = self.quotas.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        let quota = serde_json::to_value(quota.as_ref())?;
        let hard = quota["spec"]["hard"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut totals: BTreeMap<String, i128> = BTreeMap::new();
        macro_rules! count {
            ($kind:ty, $group:expr, $plural:expr) => {
                self.count::<$kind>(&quota, &hard, $group, $plural, &mut totals)
                    .await?;
            };
        }
        count!(Pod, "", "pods");
        count!(Service, "", "services");
        count!(PersistentVolumeClaim, "", "persistentvolumeclaims");
        count!(Secret, "", "secrets");
        count!(ConfigMap, "", "configmaps");
        count!(ReplicationController, "", "replicationcontrollers");
        count!(ResourceQuota, "", "resourcequotas");
        count!(Deployment, "apps", "deployments");
        count!(ReplicaSet, "apps", "replicasets");
        count!(StatefulSet, "apps", "statefulsets");
        count!(DaemonSet, "apps", "daemonsets");
        count!(Job, "batch", "jobs");
        count!(CronJob, "batch", "cronjobs");
        let status = json!({
            "hard": hard,
            "used": krust_api::quota::used_status(&hard, &totals),
        });
        if quota["status"] != status {
            let mut updated = quota.clone();
            updated["status"] = status;
            let updated: ResourceQuota = serde_json::from_value(updated)?;
            let api: Api<ResourceQuota> =
                Api::namespaced(self.caches.client().clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &updated)
                .await?;
        }
        Ok(Outcome::RequeueAfter(RECOUNT_PERIOD))
    }

    /// Adds what the objects of one type in the quota's namespace and scopes use,
    /// when the quota constrains anything of that type.
    async fn count<K>(
        &self,
        quota: &Value,
        hard: &Map<String, Value>,
        group: &str,
        plural: &str,
        totals: &mut BTreeMap<String, i128>,
    ) -> anyhow::Result<()>
    where
        K: Cacheable + serde::Serialize,
    {
        if !hard.keys().any(|name| concerns(name, group, plural)) {
            return Ok(());
        }
        let cache: Arc<Cache<K>> = self.caches.get();
        cache.wait_synced().await;
        let namespace = quota["metadata"]["namespace"].as_str().unwrap_or("");
        for object in cache.list_namespace(namespace) {
            let object = serde_json::to_value(object.as_ref())?;
            if !krust_api::quota::in_scope(quota, group, plural, &object) {
                continue;
            }
            for (name, amount) in krust_api::quota::usage(group, plural, &object) {
                *totals.entry(name).or_default() += amount;
            }
        }
        Ok(())
    }
}

/// Whether the quota resource `name` counts something of `group`/`plural`.
fn concerns(name: &str, group: &str, plural: &str) -> bool {
    let count = match group {
        "" => format!("count/{plural}"),
        _ => format!("count/{plural}.{group}"),
    };
    if name == count || (group.is_empty() && name == plural) {
        return true;
    }
    match (group, plural) {
        ("", "pods") => {
            matches!(name, "cpu" | "memory")
                || (name.starts_with("requests.") || name.starts_with("limits."))
                    && name != "requests.storage"
        }
        ("", "services") => name.starts_with("services."),
        ("", "persistentvolumeclaims") => {
            name == "requests.storage" || name.contains(".storageclass.storage.k8s.io/")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::concerns;

    #[test]
    fn quota_names_map_to_the_types_they_count() {
        assert!(concerns("pods", "", "pods"));
        assert!(concerns("requests.cpu", "", "pods"));
        assert!(!concerns("requests.storage", "", "pods"));
        assert!(concerns("requests.storage", "", "persistentvolumeclaims"));
        assert!(concerns(
            "gold.storageclass.storage.k8s.io/requests.storage",
            "",
            "persistentvolumeclaims"
        ));
        assert!(concerns("services.nodeports", "", "services"));
        assert!(concerns("count/deployments.apps", "apps", "deployments"));
        assert!(!concerns("count/deployments.apps", "", "pods"));
        assert!(concerns("secrets", "", "secrets"));
    }
}
