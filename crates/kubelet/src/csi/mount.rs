//! CSI volumes of pods on this node: attach (a VolumeAttachment the attacher of
//! [`super::controller`] completes), stage (`NodeStageVolume` on one global path per
//! volume and node) and publish (`NodePublishVolume` into the pod's volume
//! directory), and the reverse when the pod goes.
//!
//! An inline volume (`spec.volumes[].csi`, for a driver whose CSIDriver allows the
//! `Ephemeral` lifecycle mode) is published straight into the pod's volume directory,
//! without attaching or staging, under a volume id made from the pod's UID and the
//! volume's name, with its `nodePublishSecretRef` Secret as the call's secrets.
//!
//! What was published is written down next to the pod
//! (`<data dir>/pods/<uid>/csi/<volume>.json`), so the pod's removal, also after an
//! agent restart, knows what to unpublish; a volume is unstaged and its
//! VolumeAttachment deleted once no pod of this node has it published any more. All
//! CSI mount work of the node is done one step at a time (one lock), so two pods of
//! one volume never race between staging and unstaging.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, CSIVolumeSource, PersistentVolume, Pod,
};
use k8s_openapi::api::storage::v1::{CSIDriver, CSIDriverSpec, VolumeAttachment};
use krust_csi::v1::{
    NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest,
    NodeUnstageVolumeRequest, VolumeCapability, volume_capability,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Drivers, call_error};
use crate::volumes::{self, Objects};

/// What the node agent published for one pod volume.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Published {
    pub driver: String,
    pub volume_handle: String,
    /// Where the volume is staged (None: the driver does not stage).
    pub staging_path: Option<PathBuf>,
    pub target_path: PathBuf,
    /// The VolumeAttachment the volume was attached with, if any.
    pub attachment: Option<String>,
}

/// Where the record of a pod's published CSI volume is.
fn record_path(pods_dir: &Path, uid: &str, volume: &str) -> PathBuf {
    pods_dir
        .join(uid)
        .join("csi")
        .join(format!("{volume}.json"))
}

/// What was published for a pod's volume, if it is a CSI volume published on this
/// node.
pub(crate) fn published(pods_dir: &Path, uid: &str, volume: &str) -> Option<Published> {
    let text = std::fs::read(record_path(pods_dir, uid, volume)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// The node's CSI mounter, shared by all pod workers.
pub struct Mounter {
    client: Client,
    node: String,
    data_dir: PathBuf,
    drivers: Drivers,
    /// One CSI mount operation at a time on this node.
    lock: tokio::sync::Mutex<()>,
}

/// The CSI source of a volume, if it is a CSI volume.
pub fn csi_source(volume: &PersistentVolume) -> Option<&CSIPersistentVolumeSource> {
    volume.spec.as_ref().and_then(|s| s.csi.as_ref())
}

/// The name upstream gives the VolumeAttachment of a volume on a node.
pub fn attachment_name(volume_handle: &str, driver: &str, node: &str) -> String {
    format!(
        "csi-{}",
        sha256_hex(&format!("{volume_handle}{driver}{node}"))
    )
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The CSI capability of a volume: a filesystem mount with the volume's fsType and
/// mountOptions, in the access mode of its first access mode.
pub fn volume_capability(volume: &PersistentVolume) -> VolumeCapability {
    let spec = volume.spec.clone().unwrap_or_default();
    capability(
        spec.access_modes.as_deref().unwrap_or_default(),
        spec.volume_mode.as_deref() == Some("Block"),
        spec.csi
            .as_ref()
            .and_then(|c| c.fs_type.clone())
            .unwrap_or_default(),
        spec.mount_options.unwrap_or_default(),
    )
}

/// A CSI volume capability from Kubernetes access modes (the first one counts, as
/// upstream), the volume mode, fsType and mount options.
pub fn capability(
    access_modes: &[String],
    block: bool,
    fs_type: String,
    mount_flags: Vec<String>,
) -> VolumeCapability {
    use volume_capability::access_mode::Mode;
    let mode = match access_modes.first().map(String::as_str) {
        Some("ReadOnlyMany") => Mode::MultiNodeReaderOnly,
        Some("ReadWriteMany") => Mode::MultiNodeMultiWriter,
        Some("ReadWriteOncePod") => Mode::SingleNodeSingleWriter,
        _ => Mode::SingleNodeWriter,
    };
    let access_type = if block {
        volume_capability::AccessType::Block(volume_capability::BlockVolume {})
    } else {
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type,
            mount_flags,
        })
    };
    VolumeCapability {
        access_type: Some(access_type),
        access_mode: Some(volume_capability::AccessMode { mode: mode as i32 }),
    }
}

/// Where a volume is staged on a node, upstream's layout:
/// `<data dir>/plugins/kubernetes.io/csi/<driver>/<sha256 of the handle>/globalmount`.
pub fn staging_path(data_dir: &Path, driver: &str, volume_handle: &str) -> PathBuf {
    data_dir
        .join("plugins/kubernetes.io/csi")
        .join(driver)
        .join(sha256_hex(volume_handle))
        .join("globalmount")
}

impl Mounter {
    pub fn new(client: Client, node: String, data_dir: PathBuf, drivers: Drivers) -> Mounter {
        Mounter {
            client,
            node,
            data_dir,
            drivers,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("pods")
    }

    fn record_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir().join(uid).join("csi")
    }

    /// Publishes every CSI volume of the pod that is not published yet. An error
    /// says what the pod waits for (a driver, an attachment, the driver's answer).
    pub async fn publish_pod(&self, pod: &Pod, objects: &(dyn Objects + Sync)) -> Result<()> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            if let Some(inline) = &volume.csi {
                let record = record_path(&self.pods_dir(), uid, &volume.name);
                if record.exists() {
                    continue;
                }
                let target = volumes::volume_dir(&self.pods_dir(), uid, &volume.name);
                let _one_at_a_time = self.lock.lock().await;
                let published = self
                    .publish_inline(pod, &volume.name, inline, &target, objects)
                    .await
                    .with_context(|| format!("volume {:?}", volume.name))?;
                self.write_record(uid, &record, &published)?;
                continue;
            }
            let Some((claim_name, read_only)) = volumes::claim_of(pod, volume) else {
                continue;
            };
            let Some(pv) = volumes::claim_volume(namespace, &claim_name, objects).ok() else {
                continue; // volumes::sync says why the claim is not ready.
            };
            let Some(source) = csi_source(&pv) else {
                continue;
            };
            let record = record_path(&self.pods_dir(), uid, &volume.name);
            if record.exists() {
                continue;
            }
            let target = volumes::volume_dir(&self.pods_dir(), uid, &volume.name);
            let read_only = read_only || source.read_only.unwrap_or(false);
            let _one_at_a_time = self.lock.lock().await;
            let published = self
                .publish(pod, &pv, source, &target, read_only)
                .await
                .with_context(|| format!("volume {:?}", volume.name))?;
            self.write_record(uid, &record, &published)?;
        }
        Ok(())
    }

    fn write_record(&self, uid: &str, record: &Path, published: &Published) -> Result<()> {
        std::fs::create_dir_all(self.record_dir(uid))?;
        std::fs::write(record, serde_json::to_vec_pretty(published)?)
            .with_context(|| format!("cannot write {}", record.display()))
    }

    /// A driver registered on this node, or an error that says where it would
    /// register.
    fn registered(&self, name: &str) -> Result<super::Driver> {
        self.drivers.get(name).with_context(|| {
            format!(
                "CSI driver {name:?} is not registered on node {} (no registration socket for it in {})",
                self.node,
                super::registry_dir(&self.data_dir).display()
            )
        })
    }

    /// The spec of a driver's CSIDriver object (upstream's defaults when it has none).
    async fn driver_spec(&self, name: &str) -> Result<CSIDriverSpec> {
        Ok(Api::<CSIDriver>::all(self.client.clone())
            .get_opt(name)
            .await
            .with_context(|| format!("cannot read csidriver {name}"))?
            .map(|d| d.spec)
            .unwrap_or_default())
    }

    /// Publishes an inline CSI volume of a pod: no attach, no stage, the volume
    /// context of its attributes (and the pod's details when the CSIDriver asks for
    /// them), the secrets of its `nodePublishSecretRef`.
    async fn publish_inline(
        &self,
        pod: &Pod,
        volume_name: &str,
        source: &CSIVolumeSource,
        target: &Path,
        objects: &(dyn Objects + Sync),
    ) -> Result<Published> {
        let driver = self.registered(&source.driver)?;
        let spec = self.driver_spec(&source.driver).await?;
        let modes = spec
            .volume_lifecycle_modes
            .clone()
            .unwrap_or_else(|| vec!["Persistent".to_string()]);
        if !modes.iter().any(|m| m == "Ephemeral") {
            bail!(
                "CSI driver {:?} does not take inline volumes: its CSIDriver's volumeLifecycleModes are {modes:?}, without \"Ephemeral\"; add it there, or use a persistentVolumeClaim",
                source.driver
            );
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let volume_id = ephemeral_volume_id(uid, volume_name);
        let mut volume_context = source.volume_attributes.clone().unwrap_or_default();
        if spec.pod_info_on_mount == Some(true) {
            volume_context.extend(pod_info(pod, true));
        }
        let secrets = match &source.node_publish_secret_ref {
            Some(reference) => {
                let name = reference.name.as_str();
                let Some(secret) = objects.secret(namespace, name) else {
                    bail!("secret {name:?} (nodePublishSecretRef) not found");
                };
                volumes::secret_data(&secret)
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                    .collect()
            }
            None => HashMap::new(),
        };
        let capability = capability(
            &["ReadWriteOnce".to_string()],
            false,
            source.fs_type.clone().unwrap_or_default(),
            Vec::new(),
        );
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        driver
            .node()
            .await?
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume_id.clone(),
                publish_context: HashMap::new(),
                staging_target_path: String::new(),
                target_path: target.display().to_string(),
                volume_capability: Some(capability),
                readonly: source.read_only.unwrap_or(false),
                secrets,
                volume_context: volume_context.into_iter().collect(),
            })
            .await
            .map_err(|s| call_error(&driver.name, "NodePublishVolume", s))?;
        tracing::info!(driver = driver.name, volume = volume_id, target = %target.display(), "published an inline CSI volume");
        Ok(Published {
            driver: driver.name.clone(),
            volume_handle: volume_id,
            staging_path: None,
            target_path: target.to_path_buf(),
            attachment: None,
        })
    }

    async fn publish(
        &self,
        pod: &Pod,
        pv: &PersistentVolume,
        source: &CSIPersistentVolumeSource,
        target: &Path,
        read_only: bool,
    ) -> Result<Published> {
        let driver = self.registered(&source.driver)?;
        let spec = self.driver_spec(&source.driver).await?;
        let (attachment, publish_context) = if spec.attach_required.unwrap_or(true) {
            self.attach(pv, source).await?
        } else {
            (None, HashMap::new())
        };
        let capability = volume_capability(pv);
        let mut volume_context = source.volume_attributes.clone().unwrap_or_default();
        if spec.pod_info_on_mount == Some(true) {
            volume_context.extend(pod_info(pod, false));
        }
        let mut node = driver.node().await?;
        let staging_path = if driver.stage_unstage {
            let path = staging_path(&self.data_dir, &driver.name, &source.volume_handle);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            node.node_stage_volume(NodeStageVolumeRequest {
                volume_id: source.volume_handle.clone(),
                publish_context: publish_context.clone(),
                staging_target_path: path.display().to_string(),
                volume_capability: Some(capability.clone()),
                secrets: HashMap::new(),
                volume_context: volume_context.clone().into_iter().collect(),
            })
            .await
            .map_err(|s| call_error(&driver.name, "NodeStageVolume", s))?;
            Some(path)
        } else {
            None
        };
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        node.node_publish_volume(NodePublishVolumeRequest {
            volume_id: source.volume_handle.clone(),
            publish_context,
            staging_target_path: staging_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            target_path: target.display().to_string(),
            volume_capability: Some(capability),
            readonly: read_only,
            secrets: HashMap::new(),
            volume_context: volume_context.into_iter().collect(),
        })
        .await
        .map_err(|s| call_error(&driver.name, "NodePublishVolume", s))?;
        tracing::info!(driver = driver.name, volume = %pv.name_any(), target = %target.display(), "published a CSI volume");
        Ok(Published {
            driver: driver.name.clone(),
            volume_handle: source.volume_handle.clone(),
            staging_path,
            target_path: target.to_path_buf(),
            attachment,
        })
    }

    /// Makes sure the volume is attached to this node (its driver requires it): the
    /// VolumeAttachment's name and publish context, or an error while it waits.
    async fn attach(
        &self,
        pv: &PersistentVolume,
        source: &CSIPersistentVolumeSource,
    ) -> Result<(Option<String>, HashMap<String, String>)> {
        let name = attachment_name(&source.volume_handle, &source.driver, &self.node);
        let attachments: Api<VolumeAttachment> = Api::all(self.client.clone());
        let attachment = match attachments.get_opt(&name).await? {
            Some(attachment) => attachment,
            None => {
                let attachment: VolumeAttachment = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {
                        "attacher": source.driver,
                        "nodeName": self.node,
                        "source": {"persistentVolumeName": pv.name_any()},
                    },
                }))?;
                match attachments
                    .create(&PostParams::default(), &attachment)
                    .await
                {
                    Ok(created) => created,
                    Err(kube::Error::Api(e)) if e.code == 409 => attachments.get(&name).await?,
                    Err(error) => return Err(error).context("cannot create the VolumeAttachment"),
                }
            }
        };
        let status = attachment.status.unwrap_or_default();
        if attachment.metadata.deletion_timestamp.is_some() {
            bail!("VolumeAttachment {name} is being deleted (detaching); waiting to attach again");
        }
        if !status.attached {
            let why = status
                .attach_error
                .and_then(|e| e.message)
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            bail!(
                "waiting for VolumeAttachment {name} to attach the volume to node {}{why}",
                self.node
            );
        }
        Ok((
            Some(name),
            status
                .attachment_metadata
                .unwrap_or_default()
                .into_iter()
                .collect(),
        ))
    }

    /// Unpublishes every CSI volume the pod has published, unstages the volumes no
    /// other pod of this node has, and deletes their VolumeAttachments.
    pub async fn unpublish_pod(&self, uid: &str) -> Result<()> {
        let records = self.records_of(uid);
        if records.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.lock.lock().await;
        for (record, published) in records {
            let Some(driver) = self.drivers.get(&published.driver) else {
                bail!(
                    "cannot unpublish {}: CSI driver {:?} is not registered on this node",
                    published.target_path.display(),
                    published.driver
                );
            };
            let mut node = driver.node().await?;
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: published.volume_handle.clone(),
                target_path: published.target_path.display().to_string(),
            })
            .await
            .map_err(|s| call_error(&driver.name, "NodeUnpublishVolume", s))?;
            std::fs::remove_file(&record)?;
            let still_used = self.all_records().iter().any(|(_, other)| {
                other.driver == published.driver && other.volume_handle == published.volume_handle
            });
            if still_used {
                continue;
            }
            if let Some(staging) = &published.staging_path {
                node.node_unstage_volume(NodeUnstageVolumeRequest {
                    volume_id: published.volume_handle.clone(),
                    staging_target_path: staging.display().to_string(),
                })
                .await
                .map_err(|s| call_error(&driver.name, "NodeUnstageVolume", s))?;
            }
            if let Some(attachment) = &published.attachment {
                let attachments: Api<VolumeAttachment> = Api::all(self.client.clone());
                match attachments
                    .delete(attachment, &DeleteParams::default())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(error) => {
                        return Err(error).context("cannot delete the VolumeAttachment");
                    }
                }
            }
            tracing::info!(
                driver = driver.name,
                volume = published.volume_handle,
                "unpublished a CSI volume"
            );
        }
        Ok(())
    }

    /// The pods (uids) of this node that have CSI volumes published.
    pub fn published_pods(&self) -> Vec<String> {
        let Ok(pods) = std::fs::read_dir(self.pods_dir()) else {
            return Vec::new();
        };
        pods.flatten()
            .map(|pod| pod.file_name().to_string_lossy().into_owned())
            .filter(|uid| !self.records_of(uid).is_empty())
            .collect()
    }

    fn records_of(&self, uid: &str) -> Vec<(PathBuf, Published)> {
        let Ok(entries) = std::fs::read_dir(self.record_dir(uid)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let text = std::fs::read(e.path()).ok()?;
                Some((e.path(), serde_json::from_slice(&text).ok()?))
            })
            .collect()
    }

    fn all_records(&self) -> Vec<(PathBuf, Published)> {
        let Ok(pods) = std::fs::read_dir(self.pods_dir()) else {
            return Vec::new();
        };
        pods.flatten()
            .flat_map(|pod| self.records_of(&pod.file_name().to_string_lossy()))
            .collect()
    }
}

/// The volume id of an inline volume, as upstream makes it: `csi-` and the hex
/// SHA-256 of the pod's UID and the volume's name run together.
pub fn ephemeral_volume_id(pod_uid: &str, volume: &str) -> String {
    format!("csi-{}", sha256_hex(&format!("{pod_uid}{volume}")))
}

/// What a driver with `podInfoOnMount` gets in the volume context, in upstream's
/// keys; `ephemeral` says whether it is an inline volume.
pub fn pod_info(pod: &Pod, ephemeral: bool) -> std::collections::BTreeMap<String, String> {
    let meta = &pod.metadata;
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    [
        (
            "csi.storage.k8s.io/pod.name",
            meta.name.clone().unwrap_or_default(),
        ),
        (
            "csi.storage.k8s.io/pod.namespace",
            meta.namespace.clone().unwrap_or_else(|| "default".into()),
        ),
        (
            "csi.storage.k8s.io/pod.uid",
            meta.uid.clone().unwrap_or_default(),
        ),
        ("csi.storage.k8s.io/serviceAccount.name", account),
        ("csi.storage.k8s.io/ephemeral", ephemeral.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_upstreams() {
        // "csi-" and the hex SHA-256 of handle, driver and node run together, as
        // upstream's attacher names it (the digest from `sha256sum`).
        let name = attachment_name("vol-1", "csi.example.com", "node-a");
        assert_eq!(
            name,
            "csi-664f93e6befe920d56b73708bbb3eb1888cad5fb3e7203b1b501f466d0bea90f"
        );
        assert_ne!(name, attachment_name("vol-1", "csi.example.com", "node-b"));
    }

    #[test]
    fn staging_paths_are_upstreams_layout() {
        let path = staging_path(
            Path::new("/var/lib/krust/agent"),
            "csi.example.com",
            "vol-1",
        );
        let digest = sha256_hex("vol-1");
        assert_eq!(digest.len(), 64);
        assert_eq!(
            path,
            PathBuf::from(format!(
                "/var/lib/krust/agent/plugins/kubernetes.io/csi/csi.example.com/{digest}/globalmount"
            ))
        );
        // A handle with slashes stays one path component.
        let odd = staging_path(Path::new("/d"), "drv", "a/b/../c");
        assert_eq!(
            odd.components().count(),
            "/d/plugins/kubernetes.io/csi/drv/x/globalmount"
                .split('/')
                .count()
        );
    }

    #[test]
    fn block_volumes_get_a_block_capability() {
        let capability = capability(&["ReadWriteOnce".into()], true, "ext4".into(), vec![]);
        assert!(matches!(
            capability.access_type,
            Some(volume_capability::AccessType::Block(_))
        ));
        // No access mode at all is a single node writer, as upstream.
        let capability = super::capability(&[], false, String::new(), vec![]);
        assert_eq!(
            capability.access_mode.unwrap().mode,
            volume_capability::access_mode::Mode::SingleNodeWriter as i32
        );
    }

    #[test]
    fn pod_info_has_upstreams_keys() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [], "serviceAccountName": "sa"},
        }))
        .unwrap();
        let info = pod_info(&pod, false);
        assert_eq!(info["csi.storage.k8s.io/pod.name"], "p");
        assert_eq!(info["csi.storage.k8s.io/pod.namespace"], "ns");
        assert_eq!(info["csi.storage.k8s.io/pod.uid"], "u-1");
        assert_eq!(info["csi.storage.k8s.io/serviceAccount.name"], "sa");
        assert_eq!(info["csi.storage.k8s.io/ephemeral"], "false");
        assert_eq!(pod_info(&pod, true)["csi.storage.k8s.io/ephemeral"], "true");
        // An inline volume's id: per pod and volume, the same every time.
        let id = ephemeral_volume_id("u-1", "scratch");
        assert_eq!(id, format!("csi-{}", sha256_hex("u-1scratch")));
        assert_eq!(id.len(), 4 + 64);
        assert_ne!(id, ephemeral_volume_id("u-2", "scratch"));
    }

    #[test]
    fn access_modes_map_to_csi_modes() {
        use volume_capability::access_mode::Mode;
        let volume = |mode: &str| -> PersistentVolume {
            serde_json::from_value(json!({
                "metadata": {"name": "v"},
                "spec": {"accessModes": [mode], "mountOptions": ["noatime"],
                         "csi": {"driver": "d", "volumeHandle": "h", "fsType": "ext4"}},
            }))
            .unwrap()
        };
        for (mode, expected) in [
            ("ReadWriteOnce", Mode::SingleNodeWriter),
            ("ReadOnlyMany", Mode::MultiNodeReaderOnly),
            ("ReadWriteMany", Mode::MultiNodeMultiWriter),
            ("ReadWriteOncePod", Mode::SingleNodeSingleWriter),
        ] {
            let capability = volume_capability(&volume(mode));
            assert_eq!(
                capability.access_mode.unwrap().mode,
                expected as i32,
                "{mode}"
            );
            let Some(volume_capability::AccessType::Mount(mount)) = capability.access_type else {
                panic!("not a mount capability");
            };
            assert_eq!(mount.fs_type, "ext4");
            assert_eq!(mount.mount_flags, vec!["noatime".to_string()]);
        }
    }
}
