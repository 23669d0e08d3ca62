//! Volume expansion, after upstream's pkg/controller/volume/expand, for the volumes
//! krust provisions itself: a bound claim whose storage request grew beyond its
//! capacity (the API server allowed it: the class has `allowVolumeExpansion`) gets
//! the new size on its volume and in its status. A `krust.io/local-path` volume is a
//! plain directory without a size limit, so growing it is only bookkeeping; claims
//! of other provisioners are left to them.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use krust_api::volume::{claim_request, quantity_bytes};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::*;
use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workload::Events;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The provisioner whose volumes this controller grows.
const LOCAL_PATH: &str = "krust.io/local-path";

struct Expander {
    client: Client,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    volumes: Arc<Cache<PersistentVolume>>,
    events: Events,
}

/// Runs the expander until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let expander = Arc::new(Expander {
        client: caches.client().clone(),
        claims: caches.get(),
        volumes: caches.get(),
        events: Events::new(caches.client().clone(), "volume_expand"),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        expander.claims.subscribe(),
        queue.clone(),
        |change: &Change<PersistentVolumeClaim>| match change {
            Change::Applied(claim) => vec![ObjectKey::of(claim.as_ref())],
            Change::Deleted(_) => Vec::new(),
        },
    ));
    expander.claims.wait_synced().await;
    expander.volumes.wait_synced().await;
    run_workers("volume-expand", queue, 1, |key| {
        let expander = expander.clone();
        async move { expander.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Expander {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(claim) = self.claims.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if claim_phase(&claim) != "Bound" {
            return Ok(Outcome::Done);
        }
        let status = claim.status.clone().unwrap_or_default();
        let capacity = status
            .capacity
            .as_ref()
            .and_then(|c| c.get("storage"))
            .and_then(|q| quantity_bytes(&q.0))
            .unwrap_or(0.0);
        if claim_request(&claim) <= capacity {
            return Ok(Outcome::Done);
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        let Some(volume) = self.volumes.get("", &volume_name) else {
            return Ok(Outcome::Done);
        };
        if volume.annotations().get(PROVISIONED_BY).map(String::as_str) != Some(LOCAL_PATH) {
            return Ok(Outcome::Done);
        }
        let requested = claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_default();
        let size = json!({"storage": requested});
        Api::<PersistentVolume>::all(self.client.clone())
            .patch(
                &volume_name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"capacity": size}})),
            )
            .await?;
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &key.namespace)
            .patch_status(
                &key.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"capacity": size}})),
            )
            .await?;
        self.events
            .normal(
                claim.as_ref(),
                "VolumeResizeSuccessful",
                format!("resize volume {volume_name} to {requested} succeeded"),
            )
            .await;
        Ok(Outcome::Done)
    }
}
