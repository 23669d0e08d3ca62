//! `krust-test-csi`: a small CSI v1 driver for tests, built in the workspace so the
//! CSI path is tested without downloads.
//!
//! Volumes are directories `<root>/volumes/<volume id>`; CreateVolume makes one
//! (named after the request, so a repeated call is idempotent), DeleteVolume removes
//! it. ControllerPublishVolume records the node in `<root>/attached/<volume id>` and
//! answers a publish context; NodeStageVolume bind-mounts the volume's directory on
//! the staging path (it needs the publish context when the driver attaches), and
//! NodePublishVolume bind-mounts the staging path on the pod's target (read-only
//! when asked). Every call is appended to `<root>/calls.log` (`<Call> <volume id>`)
//! so a test can see what the node agent asked for.
//!
//! An inline (ephemeral) volume, one whose volume context says
//! `csi.storage.k8s.io/ephemeral: "true"`, is made by NodePublishVolume itself and
//! removed by NodeUnpublishVolume; what it was published with (volume context and
//! the names of the secrets) is kept in `<root>/published/<volume id>.json` for the
//! test to read.
//!
//! With `--volume-stats` the driver also has GET_VOLUME_STATS: NodeGetVolumeStats
//! answers the bytes and inodes under the volume path (not crossing into other
//! mounts) and its filesystem's size, and is logged like the other calls.
//!
//! For tests of failure and topology: a class parameter `failCreate` makes
//! CreateVolume fail with that message (logged as `CreateVolumeFailed <name>`), and
//! `--topology-key` makes NodeGetInfo report the segment `<key>=<node id>` and
//! CreateVolume answer the first preferred (else requisite) topology it is given.
//!
//! One process serves Identity, Controller and Node on `--endpoint` and, like
//! upstream's node-driver-registrar, the kubelet plugin registration API on
//! `<registration-dir>/<name>-reg.sock`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Parser;
use krust_csi::registration::registration_server::{Registration, RegistrationServer};
use krust_csi::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse,
};
use krust_csi::v1::controller_server::{Controller, ControllerServer};
use krust_csi::v1::identity_server::{Identity, IdentityServer};
use krust_csi::v1::node_server::{Node, NodeServer};
use krust_csi::v1::*;
use tonic::{Request, Response, Status};

#[derive(Parser, Debug, Clone)]
#[command(about = "A hostPath-like CSI v1 driver for krust's tests")]
struct Args {
    /// The driver's name (what StorageClasses name as provisioner).
    #[arg(long, default_value = "csi.krust.test")]
    name: String,
    /// Where the driver keeps its volumes and its call log.
    #[arg(long)]
    root: PathBuf,
    /// The CSI socket to serve.
    #[arg(long)]
    endpoint: PathBuf,
    /// The kubelet's plugin registry directory (`<agent data dir>/plugins_registry`).
    #[arg(long)]
    registration_dir: PathBuf,
    /// The node id NodeGetInfo answers.
    #[arg(long)]
    node_id: String,
    /// Advertise no STAGE_UNSTAGE_VOLUME node capability (publish directly).
    #[arg(long)]
    no_stage: bool,
    /// Advertise no PUBLISH_UNPUBLISH_VOLUME controller capability.
    #[arg(long)]
    no_attach: bool,
    /// Report this topology key (value: the node id) and honour accessibility
    /// requirements.
    #[arg(long)]
    topology_key: Option<String>,
    /// Advertise GET_VOLUME_STATS and answer NodeGetVolumeStats.
    #[arg(long)]
    volume_stats: bool,
}

/// The class parameter that makes CreateVolume fail, with its value as the message.
const FAIL_CREATE_PARAMETER: &str = "failCreate";

struct Driver {
    args: Args,
    log: Mutex<std::fs::File>,
    /// The registration outcome the kubelet reported, for the log.
    registered: Mutex<Option<RegistrationStatus>>,
}

impl Driver {
    fn volumes(&self) -> PathBuf {
        self.args.root.join("volumes")
    }

    fn attached(&self) -> PathBuf {
        self.args.root.join("attached")
    }

    /// Where an inline volume's publish request is written down.
    fn published(&self, id: &str) -> PathBuf {
        self.args.root.join("published").join(format!("{id}.json"))
    }

    fn record(&self, call: &str, volume: &str) {
        let mut log = self.log.lock().expect("log lock");
        let _ = writeln!(log, "{call} {volume}");
        let _ = log.flush();
    }

    /// The directory of a volume id; ids are plain names, never paths.
    fn volume_dir(&self, id: &str) -> Result<PathBuf, Status> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Status::invalid_argument(format!(
                "volume id {id:?} is not one this driver made"
            )));
        }
        Ok(self.volumes().join(id))
    }
}

fn required(value: &str, field: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

fn internal(error: impl std::fmt::Display) -> Status {
    Status::internal(error.to_string())
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.display().to_string();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| point == wanted)
}

fn bind_mount(source: &Path, target: &Path, read_only: bool) -> Result<(), Status> {
    std::fs::create_dir_all(target).map_err(internal)?;
    if is_mount_point(target) {
        return Ok(());
    }
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).map_err(internal);
    let (source_c, target_c) = (c(source)?, c(target)?);
    // SAFETY: NUL-terminated paths that outlive the calls.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(internal(format!(
            "bind mount {} on {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        )));
    }
    if read_only {
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                std::ptr::null(),
                target_c.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(internal(format!(
                "remount {} read-only: {}",
                target.display(),
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

fn unmount(target: &Path) -> Result<(), Status> {
    if is_mount_point(target) {
        let target_c =
            std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).map_err(internal)?;
        // SAFETY: a NUL-terminated path.
        let rc = unsafe { libc::umount2(target_c.as_ptr(), 0) };
        if rc != 0 {
            return Err(internal(format!(
                "unmount {}: {}",
                target.display(),
                std::io::Error::last_os_error()
            )));
        }
    }
    match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal(format!("remove {}: {e}", target.display()))),
    }
}

/// Bytes (allocated blocks) and inodes under `root`, staying on its filesystem and
/// counting hard-linked files once.
fn disk_usage(root: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let top = std::fs::metadata(root)?;
    let (mut bytes, mut inodes) = (top.blocks() * 512, 1);
    let mut seen = std::collections::HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.dev() != top.dev() || (meta.nlink() > 1 && !seen.insert(meta.ino())) {
                continue;
            }
            bytes += meta.blocks() * 512;
            inodes += 1;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok((bytes, inodes))
}

fn statvfs(path: &Path) -> Result<libc::statvfs, Status> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(internal)?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(Status::not_found(format!(
            "statvfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(stat)
}

#[tonic::async_trait]
impl Identity for &'static Driver {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.args.name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let controller = PluginCapability {
            r#type: Some(plugin_capability::Type::Service(
                plugin_capability::Service {
                    r#type: plugin_capability::service::Type::ControllerService as i32,
                },
            )),
        };
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![controller],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Controller for &'static Driver {
    async fn create_volume(
        &self,
        request: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.name, "name")?;
        if request.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities are required"));
        }
        for capability in &request.volume_capabilities {
            if matches!(
                capability.access_type,
                Some(volume_capability::AccessType::Block(_))
            ) {
                return Err(Status::invalid_argument(
                    "this driver offers filesystem volumes only, not block",
                ));
            }
        }
        if let Some(message) = request.parameters.get(FAIL_CREATE_PARAMETER) {
            self.record("CreateVolumeFailed", &request.name);
            return Err(Status::resource_exhausted(message.clone()));
        }
        let dir = self.volume_dir(&request.name)?;
        std::fs::create_dir_all(&dir).map_err(internal)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(internal)?;
        self.record("CreateVolume", &request.name);
        let capacity = request
            .capacity_range
            .map(|r| r.required_bytes)
            .unwrap_or(0);
        let mut context = request.parameters.clone();
        context.insert("createdBy".into(), self.args.name.clone());
        let accessible_topology =
            match (&self.args.topology_key, &request.accessibility_requirements) {
                (Some(_), Some(requirements)) => requirements
                    .preferred
                    .first()
                    .or(requirements.requisite.first())
                    .cloned()
                    .into_iter()
                    .collect(),
                _ => vec![],
            };
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: capacity,
                volume_id: request.name,
                volume_context: context,
                accessible_topology,
            }),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let dir = self.volume_dir(&request.volume_id)?;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(format!("remove {}: {e}", dir.display()))),
        }
        self.record("DeleteVolume", &request.volume_id);
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        request: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.node_id, "node_id")?;
        if !self.volume_dir(&request.volume_id)?.is_dir() {
            return Err(Status::not_found(format!(
                "volume {} does not exist",
                request.volume_id
            )));
        }
        std::fs::create_dir_all(self.attached()).map_err(internal)?;
        std::fs::write(self.attached().join(&request.volume_id), &request.node_id)
            .map_err(internal)?;
        self.record("ControllerPublishVolume", &request.volume_id);
        let publish_context = HashMap::from([("attachedTo".to_string(), request.node_id)]);
        Ok(Response::new(ControllerPublishVolumeResponse {
            publish_context,
        }))
    }

    async fn controller_unpublish_volume(
        &self,
        request: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        let _ = std::fs::remove_file(self.attached().join(&request.volume_id));
        self.record("ControllerUnpublishVolume", &request.volume_id);
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        use controller_service_capability::rpc::Type;
        let mut types = vec![Type::CreateDeleteVolume];
        if !self.args.no_attach {
            types.push(Type::PublishUnpublishVolume);
        }
        let capabilities = types
            .into_iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }
}

#[tonic::async_trait]
impl Node for &'static Driver {
    async fn node_stage_volume(
        &self,
        request: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.staging_target_path, "staging_target_path")?;
        if request.volume_capability.is_none() {
            return Err(Status::invalid_argument("volume_capability is required"));
        }
        if !self.args.no_attach
            && request.publish_context.get("attachedTo") != Some(&self.args.node_id)
        {
            return Err(Status::failed_precondition(format!(
                "volume {} is not attached to node {} (publish context {:?})",
                request.volume_id, self.args.node_id, request.publish_context
            )));
        }
        let source = self.volume_dir(&request.volume_id)?;
        if !source.is_dir() {
            return Err(Status::not_found(format!(
                "volume {} does not exist",
                request.volume_id
            )));
        }
        bind_mount(&source, Path::new(&request.staging_target_path), false)?;
        self.record("NodeStageVolume", &request.volume_id);
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        request: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.staging_target_path, "staging_target_path")?;
        unmount(Path::new(&request.staging_target_path))?;
        self.record("NodeUnstageVolume", &request.volume_id);
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.target_path, "target_path")?;
        let ephemeral = request
            .volume_context
            .get("csi.storage.k8s.io/ephemeral")
            .is_some_and(|v| v == "true");
        let source = if ephemeral {
            let dir = self.volume_dir(&request.volume_id)?;
            std::fs::create_dir_all(&dir).map_err(internal)?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .map_err(internal)?;
            let mut secrets: Vec<&String> = request.secrets.keys().collect();
            secrets.sort();
            let record = serde_json::json!({
                "volumeContext": request.volume_context,
                "secrets": secrets,
                "readonly": request.readonly,
            });
            let path = self.published(&request.volume_id);
            std::fs::create_dir_all(path.parent().expect("a parent")).map_err(internal)?;
            std::fs::write(&path, record.to_string()).map_err(internal)?;
            dir
        } else if self.args.no_stage {
            self.volume_dir(&request.volume_id)?
        } else {
            required(&request.staging_target_path, "staging_target_path")?;
            let staged = PathBuf::from(&request.staging_target_path);
            if !is_mount_point(&staged) {
                return Err(Status::failed_precondition(format!(
                    "volume {} is not staged at {}",
                    request.volume_id,
                    staged.display()
                )));
            }
            staged
        };
        bind_mount(&source, Path::new(&request.target_path), request.readonly)?;
        self.record("NodePublishVolume", &request.volume_id);
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.target_path, "target_path")?;
        unmount(Path::new(&request.target_path))?;
        let published = self.published(&request.volume_id);
        if published.exists() {
            // An inline volume lives only as long as its pod.
            let dir = self.volume_dir(&request.volume_id)?;
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_file(&published);
        }
        self.record("NodeUnpublishVolume", &request.volume_id);
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        if !self.args.volume_stats {
            return Err(Status::unimplemented(
                "this driver was started without --volume-stats",
            ));
        }
        let request = request.into_inner();
        required(&request.volume_id, "volume_id")?;
        required(&request.volume_path, "volume_path")?;
        let path = Path::new(&request.volume_path);
        if !is_mount_point(path) {
            return Err(Status::not_found(format!(
                "volume {} is not published at {}",
                request.volume_id, request.volume_path
            )));
        }
        let (bytes, inodes) = disk_usage(path).map_err(internal)?;
        let fs = statvfs(path)?;
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let usage = vec![
            VolumeUsage {
                available: count(fs.f_bavail * fs.f_frsize),
                total: count(fs.f_blocks * fs.f_frsize),
                used: count(bytes),
                unit: volume_usage::Unit::Bytes as i32,
            },
            VolumeUsage {
                available: count(fs.f_ffree),
                total: count(fs.f_files),
                used: count(inodes),
                unit: volume_usage::Unit::Inodes as i32,
            },
        ];
        self.record("NodeGetVolumeStats", &request.volume_id);
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: None,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type;
        let mut types = Vec::new();
        if !self.args.no_stage {
            types.push(Type::StageUnstageVolume);
        }
        if self.args.volume_stats {
            types.push(Type::GetVolumeStats);
        }
        let capabilities = types
            .into_iter()
            .map(|t| NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(
                    node_service_capability::Rpc { r#type: t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse { capabilities }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.args.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: self.args.topology_key.as_ref().map(|key| Topology {
                segments: HashMap::from([(key.clone(), self.args.node_id.clone())]),
            }),
        }))
    }
}

#[tonic::async_trait]
impl Registration for &'static Driver {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: krust_csi::CSI_PLUGIN_TYPE.into(),
            name: self.args.name.clone(),
            endpoint: self.args.endpoint.display().to_string(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            eprintln!("krust-test-csi: registered with the kubelet");
        } else {
            eprintln!(
                "krust-test-csi: the kubelet refused the registration: {}",
                status.error
            );
        }
        self.record(
            "NotifyRegistrationStatus",
            if status.plugin_registered {
                "registered"
            } else {
                "refused"
            },
        );
        *self.registered.lock().expect("lock") = Some(status);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

fn listen(path: &Path) -> Result<tokio_stream::wrappers::UnixListenerStream> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    Ok(tokio_stream::wrappers::UnixListenerStream::new(listener))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(args.root.join("volumes"))
        .with_context(|| format!("cannot create {}", args.root.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.root.join("calls.log"))?;
    let registration_socket = args
        .registration_dir
        .join(format!("{}-reg.sock", args.name));
    let driver: &'static Driver = Box::leak(Box::new(Driver {
        args: args.clone(),
        log: Mutex::new(log),
        registered: Mutex::new(None),
    }));
    let csi = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(driver))
        .add_service(ControllerServer::new(driver))
        .add_service(NodeServer::new(driver))
        .serve_with_incoming(listen(&args.endpoint)?);
    // The registration socket appears only once the CSI socket listens, so the
    // kubelet never finds a driver it cannot reach.
    let registration = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(driver))
        .serve_with_incoming(listen(&registration_socket)?);
    eprintln!(
        "krust-test-csi: {} serving {} (registration {})",
        args.name,
        args.endpoint.display(),
        registration_socket.display()
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let result = tokio::select! {
        r = csi => r.map_err(anyhow::Error::from),
        r = registration => r.map_err(anyhow::Error::from),
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    // Gone from the registry: the kubelet deregisters the driver.
    let _ = std::fs::remove_file(&registration_socket);
    let _ = std::fs::remove_file(&args.endpoint);
    result
}
