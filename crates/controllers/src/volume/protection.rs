//! The storage object in-use protection controllers, after upstream's
//! pkg/controller/volume/pvcprotection and pvprotection: a claim being deleted keeps
//! its `kubernetes.io/pvc-protection` finalizer while a pod that is not finished uses
//! it (checked against a live pod list, not only the cache), and a volume being
//! deleted keeps `kubernetes.io/pv-protection` while it is Bound.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::*;
use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workload::is_pod_finished;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Claim(ObjectKey),
    Volume(String),
}

struct Protection {
    client: Client,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    volumes: Arc<Cache<PersistentVolume>>,
}

/// Runs both protection controllers until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Protection {
        client: caches.client().clone(),
        claims: caches.get(),
        volumes: caches.get(),
    });
    let pods: Arc<Cache<Pod>> = caches.get();
    let queue: WorkQueue<Key> = WorkQueue::new();
    tokio::spawn(forward(
        controller.claims.subscribe(),
        queue.clone(),
        |change: &Change<PersistentVolumeClaim>| match change {
            Change::Applied(claim) if claim.metadata.deletion_timestamp.is_some() => {
                vec![Key::Claim(ObjectKey::of(claim.as_ref()))]
            }
            _ => Vec::new(),
        },
    ));
    tokio::spawn(forward(
        controller.volumes.subscribe(),
        queue.clone(),
        |change: &Change<PersistentVolume>| match change {
            Change::Applied(volume) if volume.metadata.deletion_timestamp.is_some() => {
                vec![Key::Volume(volume.name_any())]
            }
            _ => Vec::new(),
        },
    ));
    // A pod that finishes or goes may free the claims it used.
    tokio::spawn(forward(
        pods.subscribe(),
        queue.clone(),
        |change: &Change<Pod>| {
            let pod = change.object();
            let namespace = pod.namespace().unwrap_or_default();
            claims_of_pod(pod)
                .into_iter()
                .map(|claim| Key::Claim(ObjectKey::new(namespace.clone(), claim)))
                .collect()
        },
    ));
    controller.claims.wait_synced().await;
    controller.volumes.wait_synced().await;
    run_workers("storage-protection", queue, 2, |key| {
        let controller = controller.clone();
        async move {
            match key {
                Key::Claim(key) => controller.sync_claim(&key).await,
                Key::Volume(name) => controller.sync_volume(&name).await,
            }
        }
    })
    .await;
    Ok(())
}

impl Protection {
    async fn sync_claim(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(claim) = self.claims.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if claim.metadata.deletion_timestamp.is_none()
            || !has_finalizer(claim.as_ref(), PVC_PROTECTION)
        {
            return Ok(Outcome::Done);
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let in_use = pods
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .any(|pod| !is_pod_finished(pod) && claims_of_pod(pod).contains(&key.name));
        if in_use {
            tracing::debug!(claim = %key, "claim is in use by a pod; keeping its protection");
            return Ok(Outcome::Done);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &key.namespace);
        remove_finalizer(&api, claim.as_ref(), PVC_PROTECTION).await
    }

    async fn sync_volume(&self, name: &str) -> anyhow::Result<Outcome> {
        let Some(volume) = self.volumes.get("", name) else {
            return Ok(Outcome::Done);
        };
        if volume.metadata.deletion_timestamp.is_none()
            || !has_finalizer(volume.as_ref(), PV_PROTECTION)
            || volume_phase(&volume) == "Bound"
        {
            return Ok(Outcome::Done);
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        remove_finalizer(&api, volume.as_ref(), PV_PROTECTION).await
    }
}

fn has_finalizer<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// Removes `finalizer`, conditional on the version that was looked at.
async fn remove_finalizer<K>(api: &Api<K>, object: &K, finalizer: &str) -> anyhow::Result<Outcome>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kept: Vec<&String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": object.meta().resource_version,
        "finalizers": kept,
    }});
    match api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Outcome::Done),
        // Gone, or changed since: the watch brings the new version.
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(Outcome::Done),
        Err(error) => Err(error.into()),
    }
}
