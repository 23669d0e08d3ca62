//! The node agent's side of CSI: storage drivers plugged in through the plugin
//! registration directory, the CSI node service for pod volumes, and the controller
//! service for the drivers registered here.
//!
//! - [`watch_registry`] (this file) looks for sockets in `<data dir>/plugins_registry`
//!   every second, as upstream's plugin watcher does: it asks each new one who it is
//!   (`Registration.GetInfo`), checks that it is a CSI v1 plugin, asks the driver for
//!   its node id and capabilities (`NodeGetInfo`, `NodeGetCapabilities`,
//!   `GetPluginCapabilities`, `ControllerGetCapabilities`), records it in
//!   [`Drivers`], lists it in this node's CSINode object and the Node annotation
//!   `csi.volume.kubernetes.io/nodeid`, and says so (`NotifyRegistrationStatus`). A
//!   socket that disappears takes its driver out again.
//! - [`mount`]: a pod's persistentVolumeClaim volume whose PersistentVolume has
//!   `spec.csi` is attached (a VolumeAttachment, unless the CSIDriver says
//!   `attachRequired: false`), staged once per node (`NodeStageVolume`, when the driver
//!   has STAGE_UNSTAGE_VOLUME) and published into the pod's volume directory
//!   (`NodePublishVolume`); the pod's removal undoes it in reverse.
//! - [`controller`]: what upstream's external-provisioner and external-attacher
//!   sidecars do, for the drivers registered on this node: `CreateVolume` and a
//!   PersistentVolume for claims of a class whose provisioner is the driver,
//!   `DeleteVolume` for released volumes with reclaim policy Delete, and
//!   `ControllerPublishVolume`/`ControllerUnpublishVolume` for VolumeAttachments.

pub mod controller;
pub mod mount;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSINode;
use krust_csi::registration::registration_client::RegistrationClient;
use krust_csi::registration::{InfoRequest, RegistrationStatus};
use krust_csi::v1::controller_client::ControllerClient;
use krust_csi::v1::identity_client::IdentityClient;
use krust_csi::v1::node_client::NodeClient;
use krust_csi::v1::{
    ControllerGetCapabilitiesRequest, GetPluginCapabilitiesRequest, NodeGetCapabilitiesRequest,
    NodeGetInfoRequest, controller_service_capability, node_service_capability, plugin_capability,
};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The Node annotation with each registered driver's node id (JSON object).
pub const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";
/// How often the registry directory is looked at.
const REGISTRY_POLL: Duration = Duration::from_secs(1);

/// The plugin registry directory of a node agent.
pub fn registry_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugins_registry")
}

/// A CSI driver registered on this node.
#[derive(Clone, Debug)]
pub struct Driver {
    pub name: String,
    /// The driver's CSI socket.
    pub endpoint: String,
    /// The registration socket it came through.
    pub registration_socket: PathBuf,
    /// The node id the driver knows this node by.
    pub node_id: String,
    /// NodeStageVolume/NodeUnstageVolume are to be called.
    pub stage_unstage: bool,
    /// NodeGetVolumeStats answers the usage of its volumes.
    pub volume_stats: bool,
    /// The driver serves the controller service.
    pub controller: bool,
    /// CreateVolume/DeleteVolume.
    pub create_delete: bool,
    /// ControllerPublishVolume/ControllerUnpublishVolume.
    pub publish_unpublish: bool,
    /// The topology segments the driver reports for this node (NodeGetInfo's
    /// accessible_topology): labels of the Node, and their keys the CSINode's
    /// topologyKeys.
    pub topology: BTreeMap<String, String>,
}

impl Driver {
    /// The topology keys of the driver, sorted.
    pub fn topology_keys(&self) -> Vec<String> {
        self.topology.keys().cloned().collect()
    }
}

impl Driver {
    pub async fn node(&self) -> Result<NodeClient<tonic::transport::Channel>> {
        Ok(NodeClient::new(self.channel().await?))
    }

    pub async fn controller(&self) -> Result<ControllerClient<tonic::transport::Channel>> {
        Ok(ControllerClient::new(self.channel().await?))
    }

    async fn channel(&self) -> Result<tonic::transport::Channel> {
        krust_csi::connect(&self.endpoint)
            .await
            .with_context(|| format!("CSI driver {}", self.name))
    }
}

/// The drivers registered on this node, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Drivers(Arc<RwLock<HashMap<String, Driver>>>);

impl Drivers {
    pub fn get(&self, name: &str) -> Option<Driver> {
        self.0.read().expect("drivers lock").get(name).cloned()
    }

    pub fn all(&self) -> Vec<Driver> {
        self.0
            .read()
            .expect("drivers lock")
            .values()
            .cloned()
            .collect()
    }

    fn insert(&self, driver: Driver) {
        self.0
            .write()
            .expect("drivers lock")
            .insert(driver.name.clone(), driver);
    }

    fn remove(&self, name: &str) {
        self.0.write().expect("drivers lock").remove(name);
    }
}

/// A gRPC status as an error that names the call.
pub(crate) fn call_error(driver: &str, call: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "CSI {call} of driver {driver}: {} ({:?})",
        status.message(),
        status.code()
    )
}

/// Watches the plugin registry directory until the process ends.
pub async fn watch_registry(client: Client, node: String, data_dir: PathBuf, drivers: Drivers) {
    let dir = registry_dir(&data_dir);
    if let Err(error) = std::fs::create_dir_all(&dir) {
        tracing::warn!(dir = %dir.display(), %error, "cannot create the plugin registry directory; CSI drivers cannot register");
        return;
    }
    // Sockets whose registration failed, with the error, so it is logged once.
    let mut failed: HashMap<PathBuf, String> = HashMap::new();
    loop {
        let sockets: HashSet<PathBuf> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "sock"))
                    .collect()
            })
            .unwrap_or_default();
        for driver in drivers.all() {
            if !sockets.contains(&driver.registration_socket) {
                tracing::info!(
                    driver = driver.name,
                    "the CSI driver's registration socket is gone; deregistering it"
                );
                drivers.remove(&driver.name);
                if let Err(error) = update_node_objects(&client, &node, &driver.name, None).await {
                    tracing::warn!(
                        driver = driver.name,
                        "cannot take the driver out of the CSINode: {error:#}"
                    );
                }
            }
        }
        failed.retain(|socket, _| sockets.contains(socket));
        let registered: HashSet<PathBuf> = drivers
            .all()
            .into_iter()
            .map(|d| d.registration_socket)
            .collect();
        for socket in sockets.iter().filter(|s| !registered.contains(*s)) {
            match register(&client, &node, socket, &drivers).await {
                Ok(name) => {
                    failed.remove(socket);
                    tracing::info!(driver = name, socket = %socket.display(), "registered a CSI driver");
                }
                Err(error) => {
                    let message = format!("{error:#}");
                    if failed.get(socket) != Some(&message) {
                        tracing::warn!(socket = %socket.display(), "cannot register the plugin: {message}");
                        failed.insert(socket.clone(), message);
                    }
                }
            }
        }
        tokio::time::sleep(REGISTRY_POLL).await;
    }
}

/// Registers the plugin behind one registration socket; the plugin hears the outcome.
async fn register(client: &Client, node: &str, socket: &Path, drivers: &Drivers) -> Result<String> {
    if !krust_csi::is_listening(socket) {
        bail!("nothing listens on it (a stale socket?)");
    }
    let channel = krust_csi::connect(&socket.display().to_string()).await?;
    let mut registration = RegistrationClient::new(channel);
    let info = registration
        .get_info(InfoRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("Registration.GetInfo: {}", s.message()))?
        .into_inner();
    let outcome = async {
        if info.r#type != krust_csi::CSI_PLUGIN_TYPE {
            bail!(
                "plugin {:?} is of type {:?}: this node agent takes only {} plugins",
                info.name,
                info.r#type,
                krust_csi::CSI_PLUGIN_TYPE
            );
        }
        if !info.supported_versions.iter().any(|v| v.starts_with("1.")) {
            bail!(
                "CSI driver {:?} supports versions {:?}: this node agent speaks CSI 1.x",
                info.name,
                info.supported_versions
            );
        }
        if let Some(existing) = drivers.get(&info.name) {
            bail!(
                "a CSI driver named {:?} is already registered through {}",
                info.name,
                existing.registration_socket.display()
            );
        }
        let endpoint = if info.endpoint.is_empty() {
            socket.display().to_string()
        } else {
            info.endpoint.clone()
        };
        let driver = probe_driver(&info.name, endpoint, socket).await?;
        update_node_objects(client, node, &driver.name, Some(&driver)).await?;
        drivers.insert(driver.clone());
        Ok(driver)
    }
    .await;
    let status = match &outcome {
        Ok(_) => RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        },
        Err(error) => RegistrationStatus {
            plugin_registered: false,
            error: format!("{error:#}"),
        },
    };
    if let Err(status) = registration.notify_registration_status(status).await {
        tracing::debug!(
            plugin = info.name,
            "NotifyRegistrationStatus failed: {}",
            status.message()
        );
    }
    outcome.map(|d| d.name)
}

/// Asks a driver what it can do and who this node is to it.
async fn probe_driver(name: &str, endpoint: String, socket: &Path) -> Result<Driver> {
    let channel = krust_csi::connect(&endpoint)
        .await
        .with_context(|| format!("CSI driver {name:?} at {endpoint}"))?;
    let mut node = NodeClient::new(channel.clone());
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .map_err(|s| call_error(name, "NodeGetInfo", s))?
        .into_inner();
    if info.node_id.is_empty() {
        bail!("CSI driver {name:?} answered NodeGetInfo without a node id");
    }
    let node_capabilities = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .map_err(|s| call_error(name, "NodeGetCapabilities", s))?
        .into_inner();
    let node_rpc = |wanted: node_service_capability::rpc::Type| {
        node_capabilities.capabilities.iter().any(|c| {
            matches!(&c.r#type, Some(node_service_capability::Type::Rpc(rpc))
                if rpc.r#type == wanted as i32)
        })
    };
    let stage_unstage = node_rpc(node_service_capability::rpc::Type::StageUnstageVolume);
    let volume_stats = node_rpc(node_service_capability::rpc::Type::GetVolumeStats);
    let plugin_capabilities = IdentityClient::new(channel.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .map_err(|s| call_error(name, "GetPluginCapabilities", s))?
        .into_inner();
    let controller = plugin_capabilities.capabilities.iter().any(|c| {
        matches!(&c.r#type, Some(plugin_capability::Type::Service(service))
            if service.r#type == plugin_capability::service::Type::ControllerService as i32)
    });
    let mut rpcs = Vec::new();
    if controller {
        let answer = ControllerClient::new(channel)
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .map_err(|s| call_error(name, "ControllerGetCapabilities", s))?
            .into_inner();
        rpcs = answer
            .capabilities
            .iter()
            .filter_map(|c| {
                let controller_service_capability::Type::Rpc(rpc) = c.r#type.as_ref()?;
                Some(rpc.r#type)
            })
            .collect();
    }
    use controller_service_capability::rpc::Type;
    let topology: BTreeMap<String, String> = info
        .accessible_topology
        .map(|t| t.segments.into_iter().collect())
        .unwrap_or_default();
    Ok(Driver {
        name: name.to_string(),
        endpoint,
        registration_socket: socket.to_path_buf(),
        node_id: info.node_id,
        stage_unstage,
        volume_stats,
        controller,
        create_delete: rpcs.contains(&(Type::CreateDeleteVolume as i32)),
        publish_unpublish: rpcs.contains(&(Type::PublishUnpublishVolume as i32)),
        topology,
    })
}

/// Lists `driver` in this node's CSINode and the Node's node-id annotation, and
/// labels the Node with the driver's topology segments, as upstream's kubelet does
/// (None: takes the driver named `name` out of the CSINode and the annotation; the
/// labels stay, as upstream's).
async fn update_node_objects(
    client: &Client,
    node: &str,
    name: &str,
    driver: Option<&Driver>,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node_object = nodes
        .get(node)
        .await
        .with_context(|| format!("cannot read node {node}"))?;
    let mut ids: BTreeMap<String, String> = node_object
        .annotations()
        .get(NODE_ID_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default();
    match driver {
        Some(driver) => ids.insert(name.to_string(), driver.node_id.clone()),
        None => ids.remove(name),
    };
    let value = if ids.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_string(&ids)?.into()
    };
    let labels = driver.map(|d| d.topology.clone()).unwrap_or_default();
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {
                "annotations": {NODE_ID_ANNOTATION: value},
                "labels": labels,
            }})),
        )
        .await
        .with_context(|| format!("cannot annotate node {node}"))?;

    let csi_nodes: Api<CSINode> = Api::all(client.clone());
    for _ in 0..5 {
        let existing = csi_nodes.get_opt(node).await?;
        let mut object = existing.clone().unwrap_or_else(|| {
            serde_json::from_value(json!({
                "metadata": {
                    "name": node,
                    "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": node,
                        "uid": node_object.metadata.uid.clone().unwrap_or_default(),
                    }],
                },
                "spec": {"drivers": []},
            }))
            .expect("a valid CSINode")
        });
        object.spec.drivers.retain(|d| d.name != name);
        if let Some(driver) = driver {
            object.spec.drivers.push(serde_json::from_value(json!({
                "name": driver.name,
                "nodeID": driver.node_id,
                "topologyKeys": driver.topology_keys(),
            }))?);
        }
        let written = match existing {
            Some(_) => {
                csi_nodes
                    .replace(node, &PostParams::default(), &object)
                    .await
            }
            None => csi_nodes.create(&PostParams::default(), &object).await,
        };
        match written {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(error) => return Err(error).context("cannot write the CSINode"),
        }
    }
    bail!("cannot write the CSINode {node}: it kept changing")
}
