//! The gRPC APIs krust speaks with storage drivers: a subset of the Container
//! Storage Interface v1 ([`v1`]: Identity, Controller and Node services) and the
//! kubelet plugin registration API ([`registration`]), generated from `proto/` with
//! tonic, clients and servers both.
//!
//! A newcomer starts at [`connect`]: CSI drivers and registration sockets are unix
//! sockets, and [`connect`] gives a channel to one that every generated client
//! takes. The node agent's `csi` module is the user; the test driver
//! (`tests/csi-driver`) serves the same services.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// CSI v1 (package `csi.v1`).
pub mod v1 {
    tonic::include_proto!("csi.v1");
}

/// The kubelet plugin registration API (package `pluginregistration`, API v1).
pub mod registration {
    tonic::include_proto!("pluginregistration");
}

/// The plugin type a CSI driver registers as.
pub const CSI_PLUGIN_TYPE: &str = "CSIPlugin";

/// A socket path from a path or a `unix://` URL.
pub fn socket_path(endpoint: &str) -> PathBuf {
    PathBuf::from(endpoint.strip_prefix("unix://").unwrap_or(endpoint))
}

/// Connects to a gRPC server on a unix socket (a path, or `unix://` and one).
pub async fn connect(endpoint: &str) -> Result<Channel> {
    let path = socket_path(endpoint);
    let shown = path.display().to_string();
    let channel = Endpoint::try_from("http://[::]:0")?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the socket {shown}"))?;
    Ok(channel)
}

/// Whether `path` is a socket that accepts connections (a stale socket file of a
/// process that is gone does not).
pub fn is_listening(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}
