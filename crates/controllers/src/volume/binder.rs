//! The PersistentVolume binder, after upstream's pv_controller.go.
//!
//! A claim without `spec.volumeName` is bound to the smallest Available volume that
//! fits it (same class, every requested access mode, enough capacity, the claim's
//! selector, the claim's volume mode; for a WaitForFirstConsumer class also the node
//! in `volume.kubernetes.io/selected-node`). When none fits, the claim stays
//! Pending with an Event that says why, or is handed to its class's provisioner
//! (`volume.kubernetes.io/storage-provisioner`); with WaitForFirstConsumer only once
//! the scheduler picked a node. Binding writes the volume's `claimRef` first, then
//! the claim's `volumeName` and the `pv.kubernetes.io/bind-completed` annotation, then
//! both phases, each step idempotent, so an interrupted bind is finished on the
//! next sync.
//!
//! A bound volume whose claim is gone is Released; then its reclaim policy applies:
//! Retain keeps it, Delete leaves a provisioned volume to its provisioner (which
//! removes the data and the object), and marks any other Failed, as upstream does
//! for volumes no deleter plugin serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_api::volume::{claim_fits_volume, volume_capacity};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::*;
use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::daemonset::node_selector_matches;
use crate::workload::{Events, selects};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// What the binder reconciles.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Claim(ObjectKey),
    Volume(String),
}

struct Binder {
    client: Client,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    volumes: Arc<Cache<PersistentVolume>>,
    classes: Arc<Cache<StorageClass>>,
    nodes: Arc<Cache<Node>>,
    events: Events,
}

/// Runs the binder until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let binder = Arc::new(Binder {
        client: caches.client().clone(),
        claims: caches.get(),
        volumes: caches.get(),
        classes: caches.get(),
        nodes: caches.get(),
        events: Events::new(caches.client().clone(), "persistentvolume-controller"),
    });
    let queue: WorkQueue<Key> = WorkQueue::new();
    tokio::spawn(forward(
        binder.claims.subscribe(),
        queue.clone(),
        |change: &Change<PersistentVolumeClaim>| {
            let claim = change.object();
            let mut keys = vec![Key::Claim(ObjectKey::of(claim.as_ref()))];
            if let Some(volume) = claim.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                keys.push(Key::Volume(volume));
            }
            keys
        },
    ));
    // A volume that appears or frees up may fit any pending claim.
    let claims = binder.claims.clone();
    tokio::spawn(forward(
        binder.volumes.subscribe(),
        queue.clone(),
        move |change: &Change<PersistentVolume>| {
            let mut keys = vec![Key::Volume(change.object().name_any())];
            keys.extend(pending_claims(&claims));
            keys
        },
    ));
    let claims = binder.claims.clone();
    tokio::spawn(forward(
        binder.classes.subscribe(),
        queue.clone(),
        move |_: &Change<StorageClass>| pending_claims(&claims),
    ));
    binder.claims.wait_synced().await;
    binder.volumes.wait_synced().await;
    binder.classes.wait_synced().await;
    run_workers("persistentvolume-binder", queue, 1, |key| {
        let binder = binder.clone();
        async move {
            match key {
                Key::Claim(key) => binder.sync_claim(&key).await,
                Key::Volume(name) => binder.sync_volume(&name).await,
            }
        }
    })
    .await;
    Ok(())
}

fn pending_claims(claims: &Cache<PersistentVolumeClaim>) -> Vec<Key> {
    claims
        .filter(|claim| claim_phase(claim) != "Bound")
        .iter()
        .map(|claim| Key::Claim(ObjectKey::of(claim.as_ref())))
        .collect()
}

/// Whether `volume` can serve `claim` (ignoring who holds it), on `node` when given.
pub fn volume_fits(
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    node: Option<&Node>,
) -> bool {
    if !claim_fits_volume(claim, volume, |selector| selects(selector, volume.labels())) {
        return false;
    }
    let required = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    match (node, required) {
        (Some(node), Some(required)) => node_selector_matches(required, node),
        _ => true,
    }
}

/// Whether the volume's claimRef names this claim (by namespace and name, and by
/// uid when the ref has one).
fn refers_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    reference.name.as_deref() == claim.metadata.name.as_deref()
        && reference.namespace.as_deref() == claim.metadata.namespace.as_deref()
        && reference
            .uid
            .as_deref()
            .is_none_or(|uid| uid.is_empty() || Some(uid) == claim.metadata.uid.as_deref())
}

/// The volume for a claim without volumeName: one pre-bound to it, else the
/// smallest Available one that fits.
pub fn find_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [Arc<PersistentVolume>],
    node: Option<&Node>,
) -> Option<&'a Arc<PersistentVolume>> {
    if let Some(prebound) = volumes
        .iter()
        .find(|v| refers_to(v, claim) && v.metadata.deletion_timestamp.is_none())
    {
        return Some(prebound);
    }
    volumes
        .iter()
        .filter(|v| {
            v.metadata.deletion_timestamp.is_none()
                && v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none())
                && matches!(volume_phase(v), "" | "Available")
                && volume_fits(claim, v, node)
        })
        .min_by(|a, b| volume_capacity(a).total_cmp(&volume_capacity(b)))
}

/// The time a volume entered its phase, as upstream writes it (whole seconds).
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Binder {
    async fn sync_claim(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(claim) = self.claims.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if !volume_name.is_empty() {
            return self.sync_bound_claim(&claim, &volume_name).await;
        }
        let class_name = claim_class(&claim).to_string();
        let class = (!class_name.is_empty())
            .then(|| self.classes.get("", &class_name))
            .flatten();
        let wait_for_consumer = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        let selected_node = claim.annotations().get(SELECTED_NODE).cloned();
        let node = selected_node
            .as_deref()
            .and_then(|name| self.nodes.get("", name));
        let volumes = self.volumes.list();
        let found = find_volume(&claim, &volumes, node.as_deref());
        // With WaitForFirstConsumer only a pre-bound volume is taken before a node is chosen.
        let found =
            found.filter(|v| !wait_for_consumer || selected_node.is_some() || refers_to(v, &claim));
        if let Some(volume) = found {
            return self.bind(&claim, volume).await;
        }
        self.set_claim_pending(&claim).await?;
        if class_name.is_empty() {
            self.events
                .normal(
                    claim.as_ref(),
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set"
                        .into(),
                )
                .await;
            return Ok(Outcome::Done);
        }
        let Some(class) = class else {
            self.events
                .warning(
                    claim.as_ref(),
                    "ProvisioningFailed",
                    format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
                )
                .await;
            return Ok(Outcome::Done);
        };
        if wait_for_consumer && selected_node.is_none() {
            self.events
                .normal(
                    claim.as_ref(),
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding".into(),
                )
                .await;
            return Ok(Outcome::Done);
        }
        if class.provisioner == "kubernetes.io/no-provisioner" {
            self.events
                .normal(
                    claim.as_ref(),
                    "FailedBinding",
                    "no persistent volumes available for this claim".into(),
                )
                .await;
            return Ok(Outcome::Done);
        }
        if claim.annotations().get(STORAGE_PROVISIONER) != Some(&class.provisioner) {
            let patch = json!({"metadata": {"annotations": {
                STORAGE_PROVISIONER: class.provisioner,
                BETA_STORAGE_PROVISIONER: class.provisioner,
            }}});
            self.claims_api(&key.namespace)
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            self.events
                .normal(
                    claim.as_ref(),
                    "ExternalProvisioning",
                    format!(
                        "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                        class.provisioner
                    ),
                )
                .await;
        }
        Ok(Outcome::Done)
    }

    async fn sync_bound_claim(
        &self,
        claim: &PersistentVolumeClaim,
        volume_name: &str,
    ) -> anyhow::Result<Outcome> {
        let Some(volume) = self.volumes.get("", volume_name) else {
            if claim.annotations().contains_key(BIND_COMPLETED) {
                self.set_claim_phase(claim, "Lost", None).await?;
                self.events
                    .warning(
                        claim,
                        "ClaimLost",
                        "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!".into(),
                    )
                    .await;
            } else {
                self.set_claim_pending(claim).await?;
            }
            return Ok(Outcome::Done);
        };
        let held_elsewhere = volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_some())
            && !refers_to(&volume, claim);
        if held_elsewhere {
            self.set_claim_pending(claim).await?;
            self.events
                .warning(
                    claim,
                    "FailedBinding",
                    format!("volume \"{volume_name}\" already bound to a different claim."),
                )
                .await;
            return Ok(Outcome::Done);
        }
        self.bind(claim, &volume).await
    }

    /// Binds both sides, each step only when not done yet.
    async fn bind(
        &self,
        claim: &PersistentVolumeClaim,
        volume: &PersistentVolume,
    ) -> anyhow::Result<Outcome> {
        let namespace = claim.namespace().unwrap_or_default();
        let claim_name = claim.name_any();
        let volume_name = volume.name_any();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let full_ref = reference.is_some_and(|r| r.uid == claim.metadata.uid);
        if !full_ref {
            let mut annotations = serde_json::Map::new();
            if reference.is_none() {
                annotations.insert(BOUND_BY_CONTROLLER.into(), json!("yes"));
            }
            let patch = json!({
                "metadata": {"resourceVersion": volume.metadata.resource_version, "annotations": annotations},
                "spec": {"claimRef": {
                    "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": namespace, "name": claim_name,
                    "uid": claim.metadata.uid, "resourceVersion": claim.metadata.resource_version,
                }},
            });
            match volumes
                .patch(&volume_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Changed meanwhile: the watch brings it back to us.
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(Outcome::Done),
                Err(error) => return Err(error.into()),
            }
        }
        if volume_phase(volume) != "Bound" {
            let patch = json!({"status": {"phase": "Bound", "lastPhaseTransitionTime": now()}});
            volumes
                .patch_status(&volume_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        let claim_volume = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        let annotations = claim.annotations();
        if claim_volume != Some(volume_name.as_str()) || !annotations.contains_key(BIND_COMPLETED) {
            let mut new_annotations = BTreeMap::from([(BIND_COMPLETED, "yes")]);
            if claim_volume.is_none_or(str::is_empty) {
                new_annotations.insert(BOUND_BY_CONTROLLER, "yes");
            }
            let patch = json!({
                "metadata": {"annotations": new_annotations},
                "spec": {"volumeName": volume_name},
            });
            self.claims_api(&namespace)
                .patch(&claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        if claim_phase(claim) != "Bound" {
            let spec = volume.spec.clone().unwrap_or_default();
            self.set_claim_phase(
                claim,
                "Bound",
                Some(json!({"capacity": spec.capacity, "accessModes": spec.access_modes})),
            )
            .await?;
            tracing::info!(claim = %ObjectKey::of(claim), volume = volume_name, "bound");
        }
        Ok(Outcome::Done)
    }

    async fn sync_volume(&self, name: &str) -> anyhow::Result<Outcome> {
        let Some(volume) = self.volumes.get("", name) else {
            return Ok(Outcome::Done);
        };
        let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            if volume_phase(&volume) != "Available" {
                self.set_volume_phase(name, "Available", None).await?;
            }
            return Ok(Outcome::Done);
        };
        let uid = reference.uid.clone().unwrap_or_default();
        if uid.is_empty() {
            // Pre-bound by the user: the claim's sync binds it.
            if volume_phase(&volume).is_empty() {
                self.set_volume_phase(name, "Available", None).await?;
            }
            return Ok(Outcome::Done);
        }
        let namespace = reference.namespace.clone().unwrap_or_default();
        let claim_name = reference.name.clone().unwrap_or_default();
        // The cache may lag behind a claim just created: ask the server before
        // releasing anything.
        let claim = match self.claims.get(&namespace, &claim_name) {
            Some(claim) if claim.metadata.uid.as_deref() == Some(uid.as_str()) => Some(claim),
            _ => self
                .claims_api(&namespace)
                .get_opt(&claim_name)
                .await?
                .filter(|c| c.metadata.uid.as_deref() == Some(uid.as_str()))
                .map(Arc::new),
        };
        if claim.is_some() {
            return Ok(Outcome::Done);
        }
        // The claim is gone: released, then reclaimed.
        let phase = volume_phase(&volume);
        if phase != "Released" && phase != "Failed" {
            self.set_volume_phase(name, "Released", None).await?;
        }
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete" if volume.annotations().contains_key(PROVISIONED_BY) => {}
            "Delete" | "Recycle" if phase != "Failed" => {
                let message = match policy {
                    "Delete" => format!(
                        "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                    ),
                    _ => "no volume plugin matched: the Recycle reclaim policy is not supported; use Retain or Delete".to_string(),
                };
                self.set_volume_phase(name, "Failed", Some(&message))
                    .await?;
                let reason = if policy == "Delete" {
                    "VolumeFailedDelete"
                } else {
                    "VolumeFailedRecycle"
                };
                self.events.warning(volume.as_ref(), reason, message).await;
            }
            _ => {}
        }
        Ok(Outcome::Done)
    }

    fn claims_api(&self, namespace: &str) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn set_claim_pending(&self, claim: &PersistentVolumeClaim) -> anyhow::Result<()> {
        if claim_phase(claim) != "Pending" {
            self.set_claim_phase(claim, "Pending", None).await?;
        }
        Ok(())
    }

    async fn set_claim_phase(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        extra: Option<Value>,
    ) -> anyhow::Result<()> {
        let mut status = extra.unwrap_or_else(|| json!({}));
        status["phase"] = json!(phase);
        let patch = json!({ "status": status });
        self.claims_api(&claim.namespace().unwrap_or_default())
            .patch_status(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    async fn set_volume_phase(
        &self,
        name: &str,
        phase: &str,
        message: Option<&str>,
    ) -> anyhow::Result<()> {
        let patch = json!({"status": {
            "phase": phase, "message": message, "lastPhaseTransitionTime": now(),
        }});
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(class: &str, modes: &[&str], size: &str) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": {"storageClassName": class, "accessModes": modes,
                     "resources": {"requests": {"storage": size}}},
        }))
        .unwrap()
    }

    fn volume(name: &str, class: &str, modes: &[&str], size: &str) -> Arc<PersistentVolume> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"tier": "fast"}},
                "spec": {"storageClassName": class, "accessModes": modes,
                         "capacity": {"storage": size}, "hostPath": {"path": "/tmp"}},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn the_smallest_fitting_volume_is_chosen() {
        let volumes = vec![
            volume("big", "", &["ReadWriteOnce"], "10Gi"),
            volume("small", "", &["ReadWriteOnce", "ReadOnlyMany"], "1Gi"),
            volume("tiny", "", &["ReadWriteOnce"], "100Mi"),
            volume("other-class", "fast", &["ReadWriteOnce"], "1Gi"),
            volume("rwx", "", &["ReadWriteMany"], "5Gi"),
        ];
        let wanted = claim("", &["ReadWriteOnce"], "500Mi");
        assert_eq!(
            find_volume(&wanted, &volumes, None).unwrap().name_any(),
            "small"
        );
        let many = claim("", &["ReadWriteMany"], "1Gi");
        assert_eq!(
            find_volume(&many, &volumes, None).unwrap().name_any(),
            "rwx"
        );
        let huge = claim("", &["ReadWriteOnce"], "20Gi");
        assert!(find_volume(&huge, &volumes, None).is_none());
        let pod_only = claim("", &["ReadWriteOncePod"], "1Gi");
        assert!(find_volume(&pod_only, &volumes, None).is_none());
    }

    #[test]
    fn selectors_prebinding_and_node_affinity_are_respected() {
        let mut selected = claim("", &["ReadWriteOnce"], "1Gi");
        selected.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"tier": "slow"}})).unwrap());
        let volumes = vec![volume("a", "", &["ReadWriteOnce"], "1Gi")];
        assert!(find_volume(&selected, &volumes, None).is_none());

        // A volume whose claimRef names the claim is taken even if it is not the best.
        let mut prebound = (*volume("pre", "", &["ReadWriteOnce"], "50Gi")).clone();
        prebound.spec.as_mut().unwrap().claim_ref =
            Some(serde_json::from_value(json!({"namespace": "ns", "name": "c"})).unwrap());
        let volumes = vec![
            volume("a", "", &["ReadWriteOnce"], "1Gi"),
            Arc::new(prebound),
        ];
        let wanted = claim("", &["ReadWriteOnce"], "1Gi");
        assert_eq!(
            find_volume(&wanted, &volumes, None).unwrap().name_any(),
            "pre"
        );

        let mut local = (*volume("local", "", &["ReadWriteOnce"], "1Gi")).clone();
        local.spec.as_mut().unwrap().node_affinity = Some(
            serde_json::from_value(
                json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}),
            )
            .unwrap(),
        );
        let node = |name: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}}}))
            .unwrap()
        };
        let volumes = vec![Arc::new(local)];
        assert!(find_volume(&wanted, &volumes, Some(&node("n1"))).is_some());
        assert!(find_volume(&wanted, &volumes, Some(&node("n2"))).is_none());
    }
}
