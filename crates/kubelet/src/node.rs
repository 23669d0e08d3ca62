//! The agent's Node object and its Lease: registration (addresses, capacity and
//! allocatable from the host, nodeInfo, conditions), the Lease in `kube-node-lease`
//! renewed every 10 s, and the Node's status re-sent when it changes (at least every
//! minute, so the heartbeat times stay fresh).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use tokio::sync::watch;

use crate::AgentConfig;
use crate::cri::api::VersionResponse;
use crate::eviction::Pressure;

/// How often the Lease is renewed (upstream's default).
pub const LEASE_RENEW_INTERVAL: Duration = Duration::from_secs(10);
/// The Lease's duration (upstream's default).
const LEASE_DURATION_SECONDS: i32 = 40;
/// Most pods a node takes (upstream's default --max-pods).
const MAX_PODS: u32 = 110;
/// Memory kept back from pods (upstream's default hard eviction threshold).
const RESERVED_MEMORY_KI: u64 = 100 * 1024;
const FIELD_MANAGER: &str = "krust-agent";

/// Creates the Node (or takes over one of the same name) and sets its status.
pub async fn register(
    client: &kube::Client,
    config: &AgentConfig,
    runtime: &VersionResponse,
) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": config.node_name,
            "labels": {
                "kubernetes.io/hostname": config.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        },
    }))?;
    let mut node = node;
    if let Some(cidr) = &config.pod_cidr {
        node.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            pod_cidr: Some(cidr.clone()),
            pod_cidrs: Some(vec![cidr.clone()]),
            ..Default::default()
        });
    }
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %config.node_name, "registered the node"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            tracing::info!(node = %config.node_name, "the node exists; taking it over")
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot register node {}", config.node_name));
        }
    }
    let status = node_status(config, runtime, Pressure::default());
    nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .with_context(|| format!("cannot set the status of node {}", config.node_name))?;
    Ok(())
}

/// Waits until the Node has a pod CIDR (given by the server's node IPAM) and
/// returns it.
pub async fn wait_for_pod_cidr(client: &kube::Client, node_name: &str) -> Result<String> {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    let nodes: Api<Node> = Api::all(client.clone());
    let config =
        kube::runtime::watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let stream = kube::runtime::watcher(nodes, config)
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    let mut logged = false;
    while let Some(node) = stream.next().await {
        match node {
            Ok(node) => {
                if let Some(cidr) = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.clone())
                    .filter(|c| !c.is_empty())
                {
                    tracing::info!(pod_cidr = %cidr, "the node has its pod CIDR");
                    return Ok(cidr);
                }
                if !logged {
                    tracing::info!(
                        "waiting for the node's podCIDR from the controller manager's node IPAM \
                         (or pass --pod-cidr)"
                    );
                    logged = true;
                }
            }
            Err(error) => tracing::warn!(%error, "the watch of this Node failed; retrying"),
        }
    }
    anyhow::bail!("the watch of node {node_name} ended before it had a pod CIDR")
}

/// Renews the Lease every 10 s and refreshes the Node's status every minute, and at
/// once when the pressure conditions change; runs until aborted.
pub async fn heartbeat(
    client: kube::Client,
    config: AgentConfig,
    runtime: VersionResponse,
    mut pressure: watch::Receiver<Pressure>,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut ticks = 0u64;
    let mut pressure_changed = false;
    loop {
        if !pressure_changed && let Err(error) = renew_lease(&leases, &config.node_name).await {
            tracing::warn!(%error, "cannot renew the node lease");
        }
        // The status carries heartbeat times: refresh it every sixth tick (one minute).
        if pressure_changed || ticks % 6 == 5 {
            let now = *pressure.borrow_and_update();
            let status = node_status(&config, &runtime, now);
            if let Err(error) = nodes
                .patch_status(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
            {
                tracing::warn!(%error, "cannot update the node status");
            }
        }
        if !pressure_changed {
            ticks += 1;
        }
        pressure_changed = tokio::select! {
            _ = tokio::time::sleep(LEASE_RENEW_INTERVAL) => false,
            changed = pressure.changed() => match changed {
                Ok(()) => true,
                // The eviction manager is gone: the plain heartbeat goes on.
                Err(_) => {
                    tokio::time::sleep(LEASE_RENEW_INTERVAL).await;
                    false
                }
            },
        };
    }
}

async fn renew_lease(leases: &Api<Lease>, node: &str) -> Result<()> {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": { "name": node, "namespace": "kube-node-lease" },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": LEASE_DURATION_SECONDS,
            "renewTime": now,
        },
    });
    leases
        .patch(
            node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await?;
    Ok(())
}

/// The node's status as the host shows it now, with the eviction manager's pressure
/// conditions.
pub fn node_status(config: &AgentConfig, runtime: &VersionResponse, pressure: Pressure) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let memory_ki = meminfo_ki("MemTotal").unwrap_or(0);
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let storage = disk_bytes(&config.data_dir).unwrap_or(0);
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let addresses = json!([
        { "type": "InternalIP", "address": config.node_ip.to_string() },
        { "type": "Hostname", "address": config.node_name },
    ]);
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let machine_id = std::fs::read_to_string("/etc/machine-id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "capacity": {
            "cpu": cpus.to_string(),
            "memory": format!("{memory_ki}Ki"),
            "pods": MAX_PODS.to_string(),
            "ephemeral-storage": storage.to_string(),
        },
        "allocatable": {
            "cpu": cpus.to_string(),
            "memory": format!("{}Ki", memory_ki.saturating_sub(RESERVED_MEMORY_KI)),
            "pods": MAX_PODS.to_string(),
            "ephemeral-storage": (storage / 10 * 9).to_string(),
        },
        "conditions": [
            if pressure.memory {
                condition("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
            } else {
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
            },
            if pressure.disk {
                condition("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure")
            } else {
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
            },
            if pressure.pid {
                condition("PIDPressure", "True", "KubeletHasInsufficientPID", "kubelet has insufficient PID available")
            } else {
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available")
            },
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": addresses,
        "daemonEndpoints": { "kubeletEndpoint": { "Port": config.kubelet_port } },
        "nodeInfo": {
            "machineID": machine_id,
            "systemUUID": machine_id,
            "bootID": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default(),
            "kernelVersion": kernel,
            "osImage": os_image,
            "containerRuntimeVersion": format!("{}://{}", runtime.runtime_name, runtime.runtime_version),
            "kubeletVersion": "v1.33.0-krust",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        },
    })
}

/// A value from /proc/meminfo in KiB.
pub fn meminfo_ki(field: &str) -> Option<u64> {
    meminfo_value_ki(&std::fs::read_to_string("/proc/meminfo").ok()?, field)
}

/// A value in KiB from the text of /proc/meminfo.
pub fn meminfo_value_ki(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn disk_bytes(path: &std::path::Path) -> Option<u64> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_blocks * stat.f_frsize)
}

/// The host's address for the Node: the source address of its default route, found
/// by connecting a UDP socket (nothing is sent); 127.0.0.1 on a host without one.
pub fn node_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // A documentation address (TEST-NET-1): connect() on UDP only picks a route.
    if socket.connect("192.0.2.1:9").is_ok()
        && let Ok(addr) = socket.local_addr()
        && !addr.ip().is_unspecified()
    {
        return Some(addr.ip());
    }
    Some(IpAddr::from([127, 0, 0, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_the_upstream_shape() {
        let config = crate::test_options(&[
            "--node-name=n1",
            "--agent-data-dir=/",
            "--pod-cidr=10.42.0.0/24",
        ])
        .resolve(std::path::Path::new("/"))
        .unwrap();
        let runtime = VersionResponse {
            runtime_name: "containerd".into(),
            runtime_version: "1.6.20".into(),
            ..Default::default()
        };
        let status = node_status(&config, &runtime, Pressure::default());
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        assert_eq!(
            status["nodeInfo"]["containerRuntimeVersion"],
            "containerd://1.6.20"
        );
        assert!(
            status["capacity"]["memory"]
                .as_str()
                .unwrap()
                .ends_with("Ki")
        );
        // The typed object accepts it.
        let _: k8s_openapi::api::core::v1::NodeStatus = serde_json::from_value(status).unwrap();
    }
}
