//! CRI v1 client over a unix socket (containerd or CRI-O), on the `k8s-cri` bindings.
//!
//! A thin layer: it turns gRPC statuses into `anyhow` errors that name the call, and
//! keeps the request boilerplate out of the pod worker. The message types are the
//! generated ones, re-exported as [`api`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;

/// A connection to a CRI runtime. Cheap to clone (one shared HTTP/2 channel, and
/// one record of the changes made through any clone).
#[derive(Clone)]
pub struct Cri {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    changes: Arc<Mutex<Changes>>,
}

/// The calls that change the runtime's sandboxes or containers, made through any
/// clone of one [`Cri`]: how many finished, and when the latest did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub count: u64,
    pub last: Option<Instant>,
}

fn call_error(call: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("CRI {call}: {}", status.message())
}

impl Cri {
    /// Connects to the runtime's socket (a path, or `unix://` followed by one).
    pub async fn connect(socket: &Path) -> Result<Cri> {
        let path: PathBuf = socket
            .to_str()
            .and_then(|s| s.strip_prefix("unix://"))
            .map(PathBuf::from)
            .unwrap_or_else(|| socket.to_path_buf());
        let channel = Endpoint::try_from("http://[::]:0")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await
            .with_context(|| format!("cannot connect to the CRI socket {}", socket.display()))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel).max_decoding_message_size(64 << 20),
            changes: Arc::default(),
        })
    }

    /// The changing calls finished so far (see [`Changes`]).
    pub fn changes(&self) -> Changes {
        *self.changes.lock().expect("changes lock")
    }

    /// Records that a changing call finished (whether or not it succeeded: a failed
    /// one may have changed something too).
    fn mutated(&self) {
        let mut changes = self.changes.lock().expect("changes lock");
        changes.count += 1;
        changes.last = Some(Instant::now());
    }

    /// The runtime's name and version.
    pub async fn version(&mut self) -> Result<api::VersionResponse> {
        self.runtime
            .version(api::VersionRequest::default())
            .await
            .map(|r| r.into_inner())
            .map_err(|s| call_error("Version", s))
    }

    pub async fn run_pod_sandbox(&mut self, config: api::PodSandboxConfig) -> Result<String> {
        let result = self
            .runtime
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id)
            .map_err(|s| call_error("RunPodSandbox", s));
        self.mutated();
        result
    }

    pub async fn stop_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let result = self
            .runtime
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(drop)
            .map_err(|s| call_error("StopPodSandbox", s));
        self.mutated();
        result
    }

    pub async fn remove_pod_sandbox(&mut self, id: &str) -> Result<()> {
        let result = self
            .runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(drop)
            .map_err(|s| call_error("RemovePodSandbox", s));
        self.mutated();
        result
    }

    pub async fn pod_sandbox_status(&mut self, id: &str) -> Result<api::PodSandboxStatus> {
        self.runtime
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|s| call_error("PodSandboxStatus", s))?
            .into_inner()
            .status
            .context("CRI PodSandboxStatus: the runtime sent no status")
    }

    /// Every sandbox the runtime knows (ready or not).
    pub async fn list_pod_sandboxes(&mut self) -> Result<Vec<api::PodSandbox>> {
        self.list_pod_sandboxes_labelled(HashMap::new()).await
    }

    /// The sandboxes (ready or not) that carry every one of `labels`: the runtime
    /// filters, so a pod's worker reads its own sandboxes, not the node's.
    pub async fn list_pod_sandboxes_labelled(
        &mut self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::PodSandbox>> {
        let filter = (!labels.is_empty()).then(|| api::PodSandboxFilter {
            label_selector: labels,
            ..Default::default()
        });
        self.runtime
            .list_pod_sandbox(api::ListPodSandboxRequest { filter })
            .await
            .map(|r| r.into_inner().items)
            .map_err(|s| call_error("ListPodSandbox", s))
    }

    /// Every container the runtime knows (any state).
    pub async fn list_containers(&mut self) -> Result<Vec<api::Container>> {
        self.list_containers_labelled(HashMap::new()).await
    }

    /// The containers (any state) that carry every one of `labels`.
    pub async fn list_containers_labelled(
        &mut self,
        labels: HashMap<String, String>,
    ) -> Result<Vec<api::Container>> {
        let filter = (!labels.is_empty()).then(|| api::ContainerFilter {
            label_selector: labels,
            ..Default::default()
        });
        self.runtime
            .list_containers(api::ListContainersRequest { filter })
            .await
            .map(|r| r.into_inner().containers)
            .map_err(|s| call_error("ListContainers", s))
    }

    pub async fn create_container(
        &mut self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String> {
        let result = self
            .runtime
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map(|r| r.into_inner().container_id)
            .map_err(|s| call_error("CreateContainer", s));
        self.mutated();
        result
    }

    pub async fn start_container(&mut self, id: &str) -> Result<()> {
        let result = self
            .runtime
            .start_container(api::StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(drop)
            .map_err(|s| call_error("StartContainer", s));
        self.mutated();
        result
    }

    /// Stops a container: SIGTERM (or the image's stop signal), SIGKILL after `timeout_s`.
    pub async fn stop_container(&mut self, id: &str, timeout_s: i64) -> Result<()> {
        let result = self
            .runtime
            .stop_container(api::StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_s,
            })
            .await
            .map(drop)
            .map_err(|s| call_error("StopContainer", s));
        self.mutated();
        result
    }

    pub async fn remove_container(&mut self, id: &str) -> Result<()> {
        let result = self
            .runtime
            .remove_container(api::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map(drop)
            .map_err(|s| call_error("RemoveContainer", s));
        self.mutated();
        result
    }

    pub async fn container_status(&mut self, id: &str) -> Result<api::ContainerStatus> {
        self.runtime
            .container_status(api::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(|s| call_error("ContainerStatus", s))?
            .into_inner()
            .status
            .context("CRI ContainerStatus: the runtime sent no status")
    }

    /// Runs a command in a container and waits for it (exec probes, preStop hooks).
    pub async fn exec_sync(
        &mut self,
        id: &str,
        cmd: Vec<String>,
        timeout_s: i64,
    ) -> Result<api::ExecSyncResponse> {
        self.runtime
            .exec_sync(api::ExecSyncRequest {
                container_id: id.to_string(),
                cmd,
                timeout: timeout_s,
            })
            .await
            .map(|r| r.into_inner())
            .map_err(|s| call_error("ExecSync", s))
    }

    /// The image's id when the runtime has it.
    pub async fn image_status(&mut self, image: &str) -> Result<Option<api::Image>> {
        self.images
            .image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image)
            .map_err(|s| call_error("ImageStatus", s))
    }

    /// Every image the runtime has.
    pub async fn list_images(&mut self) -> Result<Vec<api::Image>> {
        self.images
            .list_images(api::ListImagesRequest { filter: None })
            .await
            .map(|r| r.into_inner().images)
            .map_err(|s| call_error("ListImages", s))
    }

    /// Removes an image (by id) from the runtime.
    pub async fn remove_image(&mut self, image: &str) -> Result<()> {
        self.images
            .remove_image(api::RemoveImageRequest {
                image: Some(api::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
            })
            .await
            .map(|_| ())
            .map_err(|s| call_error("RemoveImage", s))
    }

    /// Pulls an image; returns its image reference (id).
    pub async fn pull_image(
        &mut self,
        image: &str,
        auth: Option<api::AuthConfig>,
    ) -> Result<String> {
        self.images
            .pull_image(api::PullImageRequest {
                image: Some(api::ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                auth,
                sandbox_config: None,
            })
            .await
            .map(|r| r.into_inner().image_ref)
            .map_err(|s| call_error("PullImage", s))
    }

    /// CPU and memory usage of every container.
    pub async fn list_container_stats(&mut self) -> Result<Vec<api::ContainerStats>> {
        self.runtime
            .list_container_stats(api::ListContainerStatsRequest { filter: None })
            .await
            .map(|r| r.into_inner().stats)
            .map_err(|s| call_error("ListContainerStats", s))
    }

    /// Asks the runtime for a streaming URL that runs `cmd` in the container.
    pub async fn exec(&mut self, request: api::ExecRequest) -> Result<String> {
        self.runtime
            .exec(request)
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| call_error("Exec", s))
    }

    /// Asks the runtime for a streaming URL attached to the container's main process.
    pub async fn attach(&mut self, request: api::AttachRequest) -> Result<String> {
        self.runtime
            .attach(request)
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| call_error("Attach", s))
    }

    /// Asks the runtime for a streaming URL that forwards ports of the pod's sandbox.
    pub async fn port_forward(&mut self, request: api::PortForwardRequest) -> Result<String> {
        self.runtime
            .port_forward(request)
            .await
            .map(|r| r.into_inner().url)
            .map_err(|s| call_error("PortForward", s))
    }
}
