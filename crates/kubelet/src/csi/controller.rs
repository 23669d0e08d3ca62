//! The CSI controller service for the drivers registered on this node: what
//! upstream's external-provisioner and external-attacher sidecars do.
//!
//! - Provisioning: a claim handed to a driver (the binder's annotation
//!   `volume.kubernetes.io/storage-provisioner` names it) gets `CreateVolume` (name
//!   `pvc-<claim uid>`, the requested capacity, the claim's access mode, the class's
//!   parameters without the reserved `csi.storage.k8s.io/` keys) and then a
//!   PersistentVolume `pvc-<claim uid>` with `spec.csi` (driver, volumeHandle, fsType
//!   from `csi.storage.k8s.io/fstype`, volumeAttributes), pre-bound to the claim.
//!   One node acts for a claim: the one in `volume.kubernetes.io/selected-node`
//!   (WaitForFirstConsumer), otherwise the first by name among the nodes whose
//!   CSINode lists the driver. A failed CreateVolume is a ProvisioningFailed Event.
//! - Deleting: a volume this node provisioned that is Released with reclaim policy
//!   Delete gets `DeleteVolume`, then its object is deleted.
//! - Attaching: a VolumeAttachment for this node and a driver registered here gets
//!   the finalizer `external-attacher/<driver>`, `ControllerPublishVolume` (when the
//!   driver has PUBLISH_UNPUBLISH_VOLUME) and `status.attached` with the publish
//!   context as attachmentMetadata, or `status.attachError`; once deleted,
//!   `ControllerUnpublishVolume` and the finalizer goes.
//!
//! Level-triggered like `local_path`: every change, and a resync every two seconds
//! (a driver may register meanwhile), looks at the whole cached state again.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use krust_csi::v1::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest,
};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::mount::{capability, volume_capability};
use super::{Driver, Drivers, call_error};
use crate::local_path::{AbortOnDrop, notify};

const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Which node provisioned a CSI volume (and so deletes it).
const PROVISIONER_NODE: &str = "krust.io/csi-provisioner-node";
/// The class parameter for the volume's filesystem type.
const FS_TYPE_PARAMETER: &str = "csi.storage.k8s.io/fstype";
/// Class parameters with this prefix are for the provisioner, not the driver.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";
const RESYNC: Duration = Duration::from_secs(2);

/// The attacher's finalizer on a VolumeAttachment of `driver`, as upstream names it.
pub fn attacher_finalizer(driver: &str) -> String {
    let sanitized: String = driver
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("external-attacher/{sanitized}")
}

struct Controller {
    client: Client,
    node: String,
    drivers: Drivers,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    attachments: Store<VolumeAttachment>,
    csi_nodes: Store<CSINode>,
    recorder: Recorder,
    /// Failures already told as Events (object uid and message), so the resync does
    /// not repeat them.
    told: Mutex<HashSet<(String, String)>>,
}

/// Runs the controller side of this node's CSI drivers until the process ends.
pub async fn run(client: Client, node: String, drivers: Drivers) -> Result<()> {
    let changed = Arc::new(Notify::new());
    let (claims, claim_writer) = reflector::store();
    let (volumes, volume_writer) = reflector::store();
    let (attachments, attachment_writer) = reflector::store();
    let (csi_nodes, csi_node_writer) = reflector::store();
    let tasks = vec![
        tokio::spawn(
            reflector::reflector(
                claim_writer,
                watcher(Api::<PersistentVolumeClaim>::all(client.clone()), Default::default()),
            )
            .default_backoff()
            .for_each(notify(changed.clone())),
        ),
        tokio::spawn(
            reflector::reflector(
                volume_writer,
                watcher(Api::<PersistentVolume>::all(client.clone()), Default::default()),
            )
            .default_backoff()
            .for_each(notify(changed.clone())),
        ),
        tokio::spawn(
            reflector::reflector(
                attachment_writer,
                watcher(Api::<VolumeAttachment>::all(client.clone()), Default::default()),
            )
            .default_backoff()
            .for_each(notify(changed.clone())),
        ),
        tokio::spawn(
            reflector::reflector(
                csi_node_writer,
                watcher(Api::<CSINode>::all(client.clone()), watcher::Config::default()),
            )
            .default_backoff()
            .for_each(notify(changed.clone())),
        ),
    ];
    let _stop_watches = AbortOnDrop(tasks);
    let reporter = Reporter {
        controller: format!("csi-controller_{node}"),
        instance: None,
    };
    let controller = Controller {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node,
        drivers,
        claims,
        volumes,
        attachments,
        csi_nodes,
        told: Default::default(),
    };
    controller.claims.wait_until_ready().await?;
    controller.volumes.wait_until_ready().await?;
    controller.attachments.wait_until_ready().await?;
    controller.csi_nodes.wait_until_ready().await?;
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => {}
        }
        controller.reconcile().await;
    }
}

impl Controller {
    async fn reconcile(&self) {
        if self.drivers.all().iter().all(|d| !d.controller) {
            return;
        }
        for claim in self.claims.state() {
            let Some(driver) = self.provisioner_of(&claim) else {
                continue;
            };
            if let Err(error) = self.provision(&claim, &driver).await {
                let message = format!("{error:#}");
                tracing::warn!(claim = %claim.name_any(), driver = driver.name, "cannot provision a CSI volume: {message}");
                self.tell(&*claim, "ProvisioningFailed", message).await;
            }
        }
        for volume in self.volumes.state() {
            let Some(driver) = self.deleter_of(&volume) else {
                continue;
            };
            if let Err(error) = self.delete(&volume, &driver).await {
                let message = format!("{error:#}");
                tracing::warn!(volume = %volume.name_any(), "cannot delete a CSI volume: {message}");
                self.tell(&*volume, "VolumeFailedDelete", message).await;
            }
        }
        for attachment in self.attachments.state() {
            let Some(driver) = self.drivers.get(&attachment.spec.attacher) else {
                continue;
            };
            if attachment.spec.node_name != self.node {
                continue;
            }
            if let Err(error) = self.sync_attachment(&attachment, &driver).await {
                tracing::warn!(attachment = %attachment.name_any(), "cannot sync a VolumeAttachment: {error:#}");
            }
        }
    }

    /// The driver registered here that is to provision this claim now, if any.
    fn provisioner_of(&self, claim: &PersistentVolumeClaim) -> Option<Driver> {
        let annotations = claim.annotations();
        let driver = self.drivers.get(annotations.get(STORAGE_PROVISIONER)?)?;
        let unbound = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("")
            .is_empty();
        if !driver.create_delete || claim.metadata.deletion_timestamp.is_some() || !unbound {
            return None;
        }
        let acting = match annotations.get(SELECTED_NODE) {
            Some(selected) => selected.clone(),
            None => {
                let mut nodes: Vec<String> = self
                    .csi_nodes
                    .state()
                    .iter()
                    .filter(|n| n.spec.drivers.iter().any(|d| d.name == driver.name))
                    .map(|n| n.name_any())
                    .collect();
                nodes.sort();
                nodes.into_iter().next()?
            }
        };
        (acting == self.node).then_some(driver)
    }

    /// The driver registered here that is to delete this released volume, if any.
    fn deleter_of(&self, volume: &PersistentVolume) -> Option<Driver> {
        let annotations = volume.annotations();
        let spec = volume.spec.as_ref()?;
        let driver = self.drivers.get(&spec.csi.as_ref()?.driver)?;
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let ours = annotations.get(PROVISIONED_BY) == Some(&driver.name)
            && annotations.get(PROVISIONER_NODE) == Some(&self.node);
        (ours
            && released
            && driver.create_delete
            && volume.metadata.deletion_timestamp.is_none()
            && spec.persistent_volume_reclaim_policy.as_deref() == Some("Delete"))
        .then_some(driver)
    }

    async fn provision(&self, claim: &PersistentVolumeClaim, driver: &Driver) -> Result<()> {
        let uid = claim.uid().unwrap_or_default();
        let name = format!("pvc-{uid}");
        if self.volumes.get(&ObjectRef::new(&name)).is_some() {
            return Ok(());
        }
        let spec = claim.spec.clone().unwrap_or_default();
        let class_name = spec.storage_class_name.clone().unwrap_or_default();
        let class = Api::<StorageClass>::all(self.client.clone())
            .get_opt(&class_name)
            .await?
            .with_context(|| format!("storageclass.storage.k8s.io {class_name:?} not found"))?;
        let mut parameters = class.parameters.clone().unwrap_or_default();
        let fs_type = parameters.get(FS_TYPE_PARAMETER).cloned();
        parameters.retain(|key, _| !key.starts_with(RESERVED_PREFIX));
        let requested = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone());
        let required_bytes = requested
            .as_deref()
            .and_then(crate::pods::parse_quantity)
            .unwrap_or(0.0) as i64;
        let modes = spec.access_modes.clone().unwrap_or_default();
        let block = spec.volume_mode.as_deref() == Some("Block");
        let request = CreateVolumeRequest {
            name: name.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability(
                &modes,
                block,
                fs_type.clone().unwrap_or_default(),
                class.mount_options.clone().unwrap_or_default(),
            )],
            parameters: parameters.into_iter().collect(),
            secrets: Default::default(),
            accessibility_requirements: None,
        };
        let created = driver
            .controller()
            .await?
            .create_volume(request)
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "failed to provision volume with StorageClass {class_name:?}: {}",
                    call_error(&driver.name, "CreateVolume", s)
                )
            })?
            .into_inner()
            .volume
            .with_context(|| format!("CSI driver {} answered CreateVolume without a volume", driver.name))?;
        if created.volume_id.is_empty() {
            bail!("CSI driver {} answered CreateVolume without a volume id", driver.name);
        }
        let capacity = if created.capacity_bytes > 0 {
            created.capacity_bytes.to_string()
        } else {
            requested.unwrap_or_else(|| "0".into())
        };
        let attributes: BTreeMap<String, String> = created.volume_context.into_iter().collect();
        let mut csi = json!({
            "driver": driver.name,
            "volumeHandle": created.volume_id,
            "volumeAttributes": attributes,
        });
        if let Some(fs_type) = fs_type {
            csi["fsType"] = fs_type.into();
        }
        let namespace = claim.namespace().unwrap_or_default();
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {
                PROVISIONED_BY: driver.name,
                PROVISIONER_NODE: self.node,
            }},
            "spec": {
                "capacity": {"storage": capacity},
                "accessModes": modes,
                "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
                "storageClassName": class_name,
                "volumeMode": spec.volume_mode.as_deref().unwrap_or("Filesystem"),
                "mountOptions": class.mount_options,
                "csi": csi,
                "claimRef": {
                    "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": namespace, "name": claim.name_any(), "uid": uid,
                },
            },
        }))?;
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &volume)
            .await
        {
            Ok(_) => {
                tracing::info!(volume = name, driver = driver.name, "provisioned a CSI volume");
                self.event(
                    claim,
                    EventType::Normal,
                    "ProvisioningSucceeded",
                    format!("Successfully provisioned volume {name}"),
                )
                .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(error) => Err(error).context("cannot create the PersistentVolume"),
        }
    }

    async fn delete(&self, volume: &PersistentVolume, driver: &Driver) -> Result<()> {
        let handle = volume
            .spec
            .as_ref()
            .and_then(|s| s.csi.as_ref())
            .map(|c| c.volume_handle.clone())
            .unwrap_or_default();
        driver
            .controller()
            .await?
            .delete_volume(DeleteVolumeRequest {
                volume_id: handle.clone(),
                secrets: Default::default(),
            })
            .await
            .map_err(|s| call_error(&driver.name, "DeleteVolume", s))?;
        match Api::<PersistentVolume>::all(self.client.clone())
            .delete(&volume.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(volume = %volume.name_any(), handle, "deleted a released CSI volume");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(error) => Err(error).context("cannot delete the PersistentVolume"),
        }
    }

    async fn sync_attachment(&self, attachment: &VolumeAttachment, driver: &Driver) -> Result<()> {
        let api: Api<VolumeAttachment> = Api::all(self.client.clone());
        let name = attachment.name_any();
        let finalizer = attacher_finalizer(&driver.name);
        let finalizers = attachment.finalizers().to_vec();
        let volume_name = attachment
            .spec
            .source
            .persistent_volume_name
            .clone()
            .unwrap_or_default();
        let volume = self.volumes.get(&ObjectRef::new(&volume_name));
        let handle = volume
            .as_ref()
            .and_then(|v| super::mount::csi_source(v).map(|c| c.volume_handle.clone()));
        if attachment.metadata.deletion_timestamp.is_some() {
            if !finalizers.contains(&finalizer) {
                return Ok(());
            }
            if driver.publish_unpublish {
                let Some(handle) = handle else {
                    bail!("persistentvolume {volume_name:?} not found: cannot detach");
                };
                driver
                    .controller()
                    .await?
                    .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                        volume_id: handle,
                        node_id: driver.node_id.clone(),
                        secrets: Default::default(),
                    })
                    .await
                    .map_err(|s| call_error(&driver.name, "ControllerUnpublishVolume", s))?;
            }
            let rest: Vec<&String> = finalizers.iter().filter(|f| **f != finalizer).collect();
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": rest}})),
            )
            .await?;
            tracing::info!(attachment = name, "detached a CSI volume");
            return Ok(());
        }
        if attachment.status.as_ref().is_some_and(|s| s.attached) {
            return Ok(());
        }
        if !finalizers.contains(&finalizer) {
            let mut with = finalizers.clone();
            with.push(finalizer);
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({
                    "metadata": {"finalizers": with, "resourceVersion": attachment.resource_version()},
                })),
            )
            .await?;
            return Ok(()); // The next pass, on the updated object, attaches.
        }
        let outcome = async {
            if !driver.publish_unpublish {
                return Ok(Default::default());
            }
            let (Some(volume), Some(handle)) = (volume.as_ref(), handle) else {
                bail!("persistentvolume {volume_name:?} is not a CSI volume that exists");
            };
            let source = super::mount::csi_source(volume).expect("a CSI volume");
            let answer = driver
                .controller()
                .await?
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: handle,
                    node_id: driver.node_id.clone(),
                    volume_capability: Some(volume_capability(volume)),
                    readonly: source.read_only.unwrap_or(false),
                    secrets: Default::default(),
                    volume_context: source
                        .volume_attributes
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                })
                .await
                .map_err(|s| call_error(&driver.name, "ControllerPublishVolume", s))?
                .into_inner();
            Ok(answer.publish_context.into_iter().collect::<BTreeMap<_, _>>())
        }
        .await;
        let status = match &outcome {
            Ok(context) => json!({"status": {
                "attached": true, "attachmentMetadata": context, "attachError": null,
            }}),
            Err(error) => json!({"status": {
                "attached": false,
                "attachError": {
                    "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "message": format!("{error:#}"),
                },
            }}),
        };
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
            .await
            .context("cannot write the VolumeAttachment's status")?;
        match outcome {
            Ok(_) => {
                tracing::info!(attachment = name, node = self.node, "attached a CSI volume");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// A Warning Event about a failure, once per object and message.
    async fn tell<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &str, message: String) {
        let uid = object.meta().uid.clone().unwrap_or_default();
        if self.told.lock().expect("told lock").insert((uid, message.clone())) {
            self.event(object, EventType::Warning, reason, message).await;
        }
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Provisioning".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(reason, "cannot publish an event: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacher_finalizers_are_sanitized_driver_names() {
        assert_eq!(
            attacher_finalizer("csi.krust.test"),
            "external-attacher/csi.krust.test"
        );
        assert_eq!(
            attacher_finalizer("example.com/disk"),
            "external-attacher/example.com-disk"
        );
    }
}
