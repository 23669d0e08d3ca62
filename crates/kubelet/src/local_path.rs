//! The node's side of the built-in `krust.io/local-path` provisioner (the default
//! StorageClass `local-path`): a volume is a directory under
//! `<data-dir>/local-path/`, on the node the scheduler chose for the claim's first pod.
//!
//! Every node agent watches claims and volumes and acts only on its own: a claim
//! handed to `krust.io/local-path` (annotation `volume.kubernetes.io/storage-provisioner`)
//! whose `volume.kubernetes.io/selected-node` is this node gets a directory and a
//! `local` PersistentVolume `pvc-<claim uid>` pinned to the node by node affinity
//! and pre-bound to the claim (the binder completes the bind). A volume of this node
//! that is Released with reclaim policy Delete loses its directory, then its object;
//! with Retain both stay.
//!
//! Level-triggered: every change, and a resync every few seconds, looks at the whole
//! (cached) state again, so a failed step is retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use krust_events::{Event, EventType, Recorder, Reporter};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

pub const PROVISIONER: &str = "krust.io/local-path";
const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Which node holds a local-path volume's directory.
const NODE_ANNOTATION: &str = "krust.io/local-path-node";
const RESYNC: Duration = Duration::from_secs(5);
/// The access modes a directory on one node can offer.
const SUPPORTED_MODES: &[&str] = &["ReadWriteOnce", "ReadWriteOncePod"];

/// Where a node keeps its local-path volumes.
pub fn volumes_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("local-path")
}

struct Provisioner {
    client: Client,
    node: String,
    dir: PathBuf,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    recorder: Recorder,
    /// Claims already told why they cannot be provisioned (by uid), so the resync
    /// does not repeat the Event.
    refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Runs the node's provisioner until the process ends.
pub async fn run(client: Client, node: String, data_dir: PathBuf) -> Result<()> {
    // The watches fill the caches on their own tasks and only say that something
    // changed; the loop below looks at the whole state then.
    let changed = Arc::new(Notify::new());
    let (claims, claim_watch) = watch_all::<PersistentVolumeClaim>(&client, &changed);
    let (volumes, volume_watch) = watch_all::<PersistentVolume>(&client, &changed);
    let _stop_watches = AbortOnDrop(vec![claim_watch, volume_watch]);
    let reporter = Reporter {
        controller: format!("{PROVISIONER}_{node}"),
        instance: None,
    };
    let provisioner = Provisioner {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        node,
        dir: volumes_dir(&data_dir),
        claims,
        volumes,
        refused: Default::default(),
    };
    provisioner.claims.wait_until_ready().await?;
    provisioner.volumes.wait_until_ready().await?;
    tracing::info!(node = %provisioner.node, "the local-path provisioner is running");
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = resync.tick() => {}
        }
        provisioner.reconcile().await;
    }
}

/// A cache of every `K`, filled by a watch on its own task that wakes `changed` on
/// each event (errors are retried by the watch's backoff).
pub(crate) fn watch_all<K>(
    client: &Client,
    changed: &Arc<Notify>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let changed = changed.clone();
    let task = tokio::spawn(
        reflector::reflector(
            writer,
            watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |_| {
            changed.notify_one();
            std::future::ready(())
        }),
    );
    (store, task)
}

/// Aborts the watch tasks when the provisioner stops.
pub(crate) struct AbortOnDrop(pub(crate) Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Provisioner {
    async fn reconcile(&self) {
        for claim in self.claims.state() {
            if self.is_ours_to_provision(&claim)
                && let Err(error) = self.provision(&claim).await
            {
                tracing::warn!(claim = %claim.name_any(), "cannot provision a local-path volume: {error:#}");
            }
        }
        for volume in self.volumes.state() {
            if self.is_ours_to_delete(&volume)
                && let Err(error) = self.delete(&volume).await
            {
                tracing::warn!(volume = %volume.name_any(), "cannot delete a local-path volume: {error:#}");
            }
        }
    }

    fn is_ours_to_provision(&self, claim: &PersistentVolumeClaim) -> bool {
        let annotations = claim.annotations();
        claim.metadata.deletion_timestamp.is_none()
            && annotations.get(STORAGE_PROVISIONER).map(String::as_str) == Some(PROVISIONER)
            && annotations.get(SELECTED_NODE) == Some(&self.node)
            && claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or("")
                .is_empty()
    }

    fn is_ours_to_delete(&self, volume: &PersistentVolume) -> bool {
        let annotations = volume.annotations();
        volume.metadata.deletion_timestamp.is_none()
            && annotations.get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER)
            && annotations.get(NODE_ANNOTATION) == Some(&self.node)
            && volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
            && volume
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                == Some("Delete")
    }

    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<()> {
        let uid = claim.uid().unwrap_or_default();
        let name = format!("pvc-{uid}");
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        if self.volumes.state().iter().any(|v| v.name_any() == name) {
            return Ok(());
        }
        let spec = claim.spec.clone().unwrap_or_default();
        let modes = spec.access_modes.clone().unwrap_or_default();
        if let Some(mode) = modes
            .iter()
            .find(|m| !SUPPORTED_MODES.contains(&m.as_str()))
        {
            let note = format!(
                "failed to provision volume: {PROVISIONER} cannot offer access mode {mode}: a directory on one node supports only {}; ask for one of those",
                SUPPORTED_MODES.join(" or ")
            );
            if self.refused.lock().unwrap().insert(uid.clone()) {
                self.event(claim, EventType::Warning, "ProvisioningFailed", note)
                    .await;
            }
            return Ok(());
        }
        let class_name = spec.storage_class_name.clone().unwrap_or_default();
        let class = Api::<StorageClass>::all(self.client.clone())
            .get_opt(&class_name)
            .await?
            .with_context(|| format!("storageclass.storage.k8s.io {class_name:?} not found"))?;
        let namespace = claim.namespace().unwrap_or_default();
        let path = self
            .dir
            .join(format!("{name}_{namespace}_{}", claim.name_any()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let capacity = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
            .unwrap_or_else(|| "1Gi".into());
        let volume: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": {
                PROVISIONED_BY: PROVISIONER,
                NODE_ANNOTATION: self.node,
            }},
            "spec": {
                "capacity": {"storage": capacity},
                "accessModes": modes,
                "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
                "storageClassName": class_name,
                "volumeMode": spec.volume_mode.as_deref().unwrap_or("Filesystem"),
                "local": {"path": path},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [self.node]},
                ]}]}},
                "claimRef": {
                    "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                    "namespace": namespace, "name": claim.name_any(), "uid": uid,
                },
            },
        }))?;
        match volumes.create(&PostParams::default(), &volume).await {
            Ok(_) => {
                tracing::info!(volume = name, path = %path.display(), "provisioned a local-path volume");
                let note = format!("Successfully provisioned volume {name}");
                self.event(claim, EventType::Normal, "ProvisioningSucceeded", note)
                    .await;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn delete(&self, volume: &PersistentVolume) -> Result<()> {
        let path = volume
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| PathBuf::from(&l.path))
            .context("a local-path volume without spec.local.path")?;
        // Only ever remove what this provisioner made.
        if path.parent() != Some(self.dir.as_path()) {
            anyhow::bail!(
                "refusing to delete {}: it is not under {}",
                path.display(),
                self.dir.display()
            );
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
        }
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        match volumes
            .delete(&volume.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(volume = %volume.name_any(), "deleted a released local-path volume");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        provisioning_event(&self.recorder, object, type_, reason, note).await;
    }
}

/// Publishes a provisioner's Event (action `Provisioning`) about `object`; a failure
/// to publish is only logged. Shared by the local-path and the CSI provisioners.
pub(crate) async fn provisioning_event<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
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
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(reason, "cannot publish an event: {error}");
    }
}
