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
//!   CSINode lists the driver. A driver with topology gets accessibility
//!   requirements (the selected node's segment, or every registered node's for
//!   Immediate claims) and the PersistentVolume a node affinity from the accessible
//!   topology it answers. A failed CreateVolume is a ProvisioningFailed Event, tried
//!   again after a backoff (1 s doubling to 5 min).
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass, VolumeAttachment};
use krust_csi::v1::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest, Topology, TopologyRequirement,
};
use krust_events::{EventType, Recorder, Reporter};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use super::mount::{capability, volume_capability};
use super::{Driver, Drivers, call_error};
use crate::local_path::{AbortOnDrop, watch_all};

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
    /// When failed claims are tried again.
    backoff: Backoff,
    /// VolumeAttachments (by uid) this controller attached: the cache may not show
    /// the `attached` status it wrote yet, and the driver is not asked twice.
    attached: Mutex<HashSet<String>>,
}

/// Runs the controller side of this node's CSI drivers until the process ends.
pub async fn run(client: Client, node: String, drivers: Drivers) -> Result<()> {
    let changed = Arc::new(Notify::new());
    let (claims, claim_watch) = watch_all::<PersistentVolumeClaim>(&client, &changed);
    let (volumes, volume_watch) = watch_all::<PersistentVolume>(&client, &changed);
    let (attachments, attachment_watch) = watch_all::<VolumeAttachment>(&client, &changed);
    let (csi_nodes, csi_node_watch) = watch_all::<CSINode>(&client, &changed);
    let tasks = vec![claim_watch, volume_watch, attachment_watch, csi_node_watch];
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
        backoff: Default::default(),
        attached: Default::default(),
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
            let uid = claim.uid().unwrap_or_default();
            if !self.backoff.ready(&uid, Instant::now()) {
                continue;
            }
            match self.provision(&claim, &driver).await {
                Ok(()) => self.backoff.succeeded(&uid),
                Err(error) => {
                    self.backoff.failed(&uid, Instant::now());
                    let message = format!("{error:#}");
                    tracing::warn!(claim = %claim.name_any(), driver = driver.name, "cannot provision a CSI volume: {message}");
                    self.event(&*claim, EventType::Warning, "ProvisioningFailed", message)
                        .await;
                }
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
        let accessibility = if driver.topology.is_empty() {
            None
        } else if claim.annotations().contains_key(SELECTED_NODE) {
            // The acting node is the selected one: its own segment.
            let own = Topology {
                segments: driver.topology.clone().into_iter().collect(),
            };
            Some(TopologyRequirement {
                requisite: vec![own.clone()],
                preferred: vec![own],
            })
        } else {
            Some(self.cluster_topology(driver).await?)
        };
        let request = create_request(claim, &class, accessibility);
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
            .with_context(|| {
                format!(
                    "CSI driver {} answered CreateVolume without a volume",
                    driver.name
                )
            })?;
        let volume = persistent_volume(claim, &class, &driver.name, &self.node, &created)?;
        match Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &volume)
            .await
        {
            Ok(_) => {
                tracing::info!(
                    volume = name,
                    driver = driver.name,
                    "provisioned a CSI volume"
                );
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

    /// Where an Immediate claim's volume may be: the segments (of the driver's
    /// topology keys) of every node whose CSINode lists the driver, this node's
    /// first as preferred.
    async fn cluster_topology(&self, driver: &Driver) -> Result<TopologyRequirement> {
        let keys = driver.topology_keys();
        let with_driver: HashSet<String> = self
            .csi_nodes
            .state()
            .iter()
            .filter(|n| n.spec.drivers.iter().any(|d| d.name == driver.name))
            .map(|n| n.name_any())
            .collect();
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&Default::default())
            .await
            .context("cannot list the nodes for the volume's topology")?;
        let own: BTreeMap<String, String> = driver.topology.clone();
        let mut requisite = vec![own.clone()];
        for node in nodes
            .items
            .iter()
            .filter(|n| with_driver.contains(&n.name_any()))
        {
            let labels = node.labels();
            let segment: BTreeMap<String, String> = keys
                .iter()
                .filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone())))
                .collect();
            if segment.len() == keys.len() && !requisite.contains(&segment) {
                requisite.push(segment);
            }
        }
        let topology = |s: BTreeMap<String, String>| Topology {
            segments: s.into_iter().collect(),
        };
        Ok(TopologyRequirement {
            preferred: vec![topology(own)],
            requisite: requisite.into_iter().map(topology).collect(),
        })
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
        let uid = attachment.uid().unwrap_or_default();
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
            self.attached.lock().expect("attached lock").remove(&uid);
            return Ok(());
        }
        let written = self.attached.lock().expect("attached lock").contains(&uid);
        if written || attachment.status.as_ref().is_some_and(|s| s.attached) {
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
            Ok(answer
                .publish_context
                .into_iter()
                .collect::<BTreeMap<_, _>>())
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
                self.attached.lock().expect("attached lock").insert(uid);
                tracing::info!(attachment = name, node = self.node, "attached a CSI volume");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// A Warning Event about a failure, once per object and message.
    async fn tell<K: Resource<DynamicType = ()>>(&self, object: &K, reason: &str, message: String) {
        let uid = object.meta().uid.clone().unwrap_or_default();
        if self
            .told
            .lock()
            .expect("told lock")
            .insert((uid, message.clone()))
        {
            self.event(object, EventType::Warning, reason, message)
                .await;
        }
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        crate::local_path::provisioning_event(&self.recorder, object, type_, reason, note).await;
    }
}

/// The CreateVolume request for a claim of `class`: name `pvc-<claim uid>`, the
/// requested storage as required bytes, the claim's access mode and volume mode with
/// the class's fsType and mountOptions, the class's parameters without the reserved
/// `csi.storage.k8s.io/` keys, and where the volume may be.
pub fn create_request(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    accessibility: Option<TopologyRequirement>,
) -> CreateVolumeRequest {
    let spec = claim.spec.clone().unwrap_or_default();
    let mut parameters = class.parameters.clone().unwrap_or_default();
    let fs_type = parameters
        .get(FS_TYPE_PARAMETER)
        .cloned()
        .unwrap_or_default();
    parameters.retain(|key, _| !key.starts_with(RESERVED_PREFIX));
    let required_bytes = requested_storage(claim)
        .as_deref()
        .and_then(crate::pods::parse_quantity)
        .unwrap_or(0.0) as i64;
    CreateVolumeRequest {
        name: format!("pvc-{}", claim.uid().unwrap_or_default()),
        capacity_range: Some(CapacityRange {
            required_bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![capability(
            spec.access_modes.as_deref().unwrap_or_default(),
            spec.volume_mode.as_deref() == Some("Block"),
            fs_type,
            class.mount_options.clone().unwrap_or_default(),
        )],
        parameters: parameters.into_iter().collect(),
        secrets: Default::default(),
        accessibility_requirements: accessibility,
    }
}

fn requested_storage(claim: &PersistentVolumeClaim) -> Option<String> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
        .map(|q| q.0.clone())
}

/// The PersistentVolume for a volume a driver created for a claim: named after the
/// request (`pvc-<claim uid>`), pre-bound to the claim, `spec.csi` with the driver,
/// the volume id as handle, the class's fsType and the volume context as
/// attributes, the capacity the driver answered (else the requested one), the
/// class's reclaim policy and mount options, and a node affinity term per
/// accessible topology segment (as upstream's provisioner writes it).
pub fn persistent_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    driver: &str,
    node: &str,
    created: &krust_csi::v1::Volume,
) -> Result<PersistentVolume> {
    if created.volume_id.is_empty() {
        bail!("CSI driver {driver} answered CreateVolume without a volume id");
    }
    let uid = claim.uid().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = if created.capacity_bytes > 0 {
        created.capacity_bytes.to_string()
    } else {
        requested_storage(claim).unwrap_or_else(|| "0".into())
    };
    let attributes: BTreeMap<&String, &String> = created.volume_context.iter().collect();
    let mut csi = json!({
        "driver": driver,
        "volumeHandle": created.volume_id,
        "volumeAttributes": attributes,
    });
    if let Some(fs_type) = class
        .parameters
        .as_ref()
        .and_then(|p| p.get(FS_TYPE_PARAMETER))
    {
        csi["fsType"] = fs_type.clone().into();
    }
    let terms: Vec<serde_json::Value> = created
        .accessible_topology
        .iter()
        .filter(|t| !t.segments.is_empty())
        .map(|t| {
            let segments: BTreeMap<&String, &String> = t.segments.iter().collect();
            let expressions: Vec<serde_json::Value> = segments
                .into_iter()
                .map(|(key, value)| json!({"key": key, "operator": "In", "values": [value]}))
                .collect();
            json!({"matchExpressions": expressions})
        })
        .collect();
    let mut volume = json!({
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {
            PROVISIONED_BY: driver,
            PROVISIONER_NODE: node,
        }},
        "spec": {
            "capacity": {"storage": capacity},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
            "storageClassName": class.name_any(),
            "volumeMode": spec.volume_mode.as_deref().unwrap_or("Filesystem"),
            "mountOptions": class.mount_options,
            "csi": csi,
            "claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": claim.namespace().unwrap_or_default(),
                "name": claim.name_any(), "uid": uid,
            },
        },
    });
    if !terms.is_empty() {
        volume["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": terms}});
    }
    Ok(serde_json::from_value(volume)?)
}

/// Retry delays of failed provisioning, per claim: doubling from one second to five
/// minutes, as upstream's provisioner backs off.
#[derive(Default)]
struct Backoff(Mutex<HashMap<String, (Instant, Duration)>>);

const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Backoff {
    /// Whether the claim may be tried now.
    fn ready(&self, uid: &str, now: Instant) -> bool {
        let map = self.0.lock().expect("backoff lock");
        map.get(uid).is_none_or(|(next, _)| now >= *next)
    }

    fn failed(&self, uid: &str, now: Instant) {
        let mut map = self.0.lock().expect("backoff lock");
        let delay = map
            .get(uid)
            .map(|(_, d)| (*d * 2).min(BACKOFF_MAX))
            .unwrap_or(BACKOFF_FIRST);
        map.insert(uid.to_string(), (now + delay, delay));
    }

    fn succeeded(&self, uid: &str) {
        self.0.lock().expect("backoff lock").remove(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "1234"},
            "spec": {
                "storageClassName": "fast",
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "64Mi"}},
            },
        }))
        .unwrap()
    }

    fn class() -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "fast"},
            "provisioner": "csi.example.com",
            "reclaimPolicy": "Retain",
            "mountOptions": ["noatime"],
            "parameters": {
                "tier": "gold",
                "csi.storage.k8s.io/fstype": "xfs",
                "csi.storage.k8s.io/provisioner-secret-name": "s",
            },
        }))
        .unwrap()
    }

    #[test]
    fn create_requests_carry_the_claim_and_class() {
        let request = create_request(&claim(), &class(), None);
        assert_eq!(request.name, "pvc-1234");
        assert_eq!(request.capacity_range.unwrap().required_bytes, 64 << 20);
        // Reserved keys are the provisioner's, not the driver's.
        assert_eq!(
            request.parameters,
            HashMap::from([("tier".to_string(), "gold".to_string())])
        );
        let [capability] = &request.volume_capabilities[..] else {
            panic!("one capability");
        };
        let Some(krust_csi::v1::volume_capability::AccessType::Mount(mount)) =
            &capability.access_type
        else {
            panic!("a mount capability");
        };
        assert_eq!(mount.fs_type, "xfs");
        assert_eq!(mount.mount_flags, vec!["noatime".to_string()]);
        assert!(request.accessibility_requirements.is_none());
    }

    #[test]
    fn persistent_volumes_come_from_the_create_volume_answer() {
        let created = krust_csi::v1::Volume {
            capacity_bytes: 1 << 30,
            volume_id: "vol-abc".into(),
            volume_context: HashMap::from([("k".to_string(), "v".to_string())]),
            accessible_topology: vec![Topology {
                segments: HashMap::from([
                    ("topology.example.com/zone".to_string(), "z1".to_string()),
                    ("topology.example.com/rack".to_string(), "r7".to_string()),
                ]),
            }],
        };
        let volume =
            persistent_volume(&claim(), &class(), "csi.example.com", "node-a", &created).unwrap();
        assert_eq!(volume.name_any(), "pvc-1234");
        assert_eq!(volume.annotations()[PROVISIONED_BY], "csi.example.com");
        assert_eq!(volume.annotations()[PROVISIONER_NODE], "node-a");
        let spec = volume.spec.unwrap();
        assert_eq!(
            spec.capacity.unwrap()["storage"].0,
            (1u64 << 30).to_string()
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(spec.mount_options, Some(vec!["noatime".to_string()]));
        let csi = spec.csi.unwrap();
        assert_eq!(csi.driver, "csi.example.com");
        assert_eq!(csi.volume_handle, "vol-abc");
        assert_eq!(csi.fs_type.as_deref(), Some("xfs"));
        assert_eq!(csi.volume_attributes.unwrap()["k"], "v");
        let claim_ref = spec.claim_ref.unwrap();
        assert_eq!(
            (
                claim_ref.namespace.as_deref(),
                claim_ref.name.as_deref(),
                claim_ref.uid.as_deref()
            ),
            (Some("ns"), Some("data"), Some("1234"))
        );
        let terms = spec
            .node_affinity
            .unwrap()
            .required
            .unwrap()
            .node_selector_terms;
        assert_eq!(terms.len(), 1);
        let expressions: Vec<(String, Vec<String>)> = terms[0]
            .match_expressions
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| {
                assert_eq!(e.operator, "In");
                (e.key, e.values.unwrap())
            })
            .collect();
        assert_eq!(
            expressions,
            vec![
                (
                    "topology.example.com/rack".to_string(),
                    vec!["r7".to_string()]
                ),
                (
                    "topology.example.com/zone".to_string(),
                    vec!["z1".to_string()]
                ),
            ]
        );
    }

    #[test]
    fn answers_without_capacity_or_topology_keep_the_request() {
        let created = krust_csi::v1::Volume {
            volume_id: "v".into(),
            ..Default::default()
        };
        let mut class = class();
        class.reclaim_policy = None;
        let volume = persistent_volume(&claim(), &class, "d", "n", &created).unwrap();
        let spec = volume.spec.unwrap();
        assert_eq!(spec.capacity.unwrap()["storage"].0, "64Mi");
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert!(spec.node_affinity.is_none());
        let no_id = krust_csi::v1::Volume::default();
        assert!(persistent_volume(&claim(), &class, "d", "n", &no_id).is_err());
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let backoff = Backoff::default();
        let start = Instant::now();
        assert!(backoff.ready("a", start));
        backoff.failed("a", start);
        assert!(!backoff.ready("a", start));
        assert!(backoff.ready("b", start), "per claim");
        let later = start + BACKOFF_FIRST;
        assert!(backoff.ready("a", later));
        backoff.failed("a", later);
        assert!(
            !backoff.ready("a", later + BACKOFF_FIRST),
            "the second delay is twice the first"
        );
        assert!(backoff.ready("a", later + 2 * BACKOFF_FIRST));
        backoff.succeeded("a");
        assert!(backoff.ready("a", start));
    }

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
