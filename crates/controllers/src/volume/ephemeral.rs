//! Generic ephemeral volumes, after upstream's pkg/controller/volume/ephemeral: for
//! every `ephemeral` volume of a pod, the claim `<pod>-<volume>` made from its
//! `volumeClaimTemplate`, with the pod as its controller owner, so the garbage
//! collector deletes it with the pod. A claim of that name that the pod does not own
//! is left alone and reported (the pod cannot start until it is removed).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workload::{Events, controller_reference, is_pod_terminating};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

struct Controller {
    client: Client,
    pods: Arc<Cache<Pod>>,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    events: Events,
}

/// Runs the ephemeral volume controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        client: caches.client().clone(),
        pods: caches.get(),
        claims: caches.get(),
        events: Events::new(caches.client().clone(), "ephemeral-volume-controller"),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        controller.pods.subscribe(),
        queue.clone(),
        |change: &Change<Pod>| match change {
            Change::Applied(pod) if has_ephemeral_volumes(pod) => {
                vec![ObjectKey::of(pod.as_ref())]
            }
            _ => Vec::new(),
        },
    ));
    controller.pods.wait_synced().await;
    controller.claims.wait_synced().await;
    run_workers("ephemeral-volume", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

fn has_ephemeral_volumes(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.ephemeral.is_some())
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(pod) = self.pods.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if is_pod_terminating(&pod) {
            return Ok(Outcome::Done);
        }
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &key.namespace);
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(template) = volume
                .ephemeral
                .as_ref()
                .and_then(|e| e.volume_claim_template.as_ref())
            else {
                continue;
            };
            let name = format!("{}-{}", pod.name_any(), volume.name);
            if let Some(existing) = self.claims.get(&key.namespace, &name) {
                let owned = existing.owner_references().iter().any(|r| {
                    r.controller == Some(true) && Some(&r.uid) == pod.metadata.uid.as_ref()
                });
                if !owned {
                    self.events
                        .warning(
                            pod.as_ref(),
                            "FailedBinding",
                            format!("PVC {}/{name} was not created for pod {key} (pod is not owner); delete it or rename the volume", key.namespace),
                        )
                        .await;
                }
                continue;
            }
            let mut claim = PersistentVolumeClaim {
                metadata: template.metadata.clone().unwrap_or_default(),
                spec: Some(template.spec.clone()),
                status: None,
            };
            claim.metadata.name = Some(name.clone());
            claim.metadata.namespace = Some(key.namespace.clone());
            claim.metadata.owner_references = Some(vec![controller_reference(pod.as_ref())]);
            match api.create(&PostParams::default(), &claim).await {
                Ok(_) => {
                    tracing::info!(claim = name, pod = %key, "created the ephemeral volume's claim")
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(Outcome::Done)
    }
}
