//! The pod network of one node (`krust-net`), the flannel part of a node: pods on
//! this node live on its bridge in the node's podCIDR (the kubelet writes that CNI
//! configuration); this crate connects the nodes. It watches the Nodes and keeps
//! - a route to every other node's podCIDR ([`routes`]): through the node's
//!   InternalIP (`host-gw`) or through a VXLAN overlay ([`vxlan`]);
//! - the host's safety routes (cluster CIDR unreachable, service CIDR onto the
//!   bridge), so cluster addresses never leave the machine by its default route;
//! - egress masquerade for traffic leaving the cluster CIDR ([`masquerade`]);
//! - an accept for pod traffic at the end of the iptables `FORWARD` chain
//!   ([`forward`]), for hosts whose forwarding policy is DROP.
//!
//! (IPv4 forwarding is turned on by the kubelet, which every node runs.)
//!
//! Everything is level-triggered: each sync computes the whole desired state from the
//! Nodes and changes only what differs. Routes, overlay and table stay when the agent
//! stops, so running pods keep their network across an agent restart; [`teardown`]
//! removes them.

pub mod command;
pub mod forward;
pub mod masquerade;
pub mod peers;
pub mod routes;
pub mod vxlan;
pub mod watch;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use krust_api::cidr::Ipv4Cidr;
use kube::runtime::reflector;

pub use routes::Backend;

/// How long a sync waits after a change for more changes.
const COALESCE: Duration = Duration::from_millis(20);
/// How often the state is checked again without a change (repairs drift).
const RESYNC: Duration = Duration::from_secs(30);

/// Flags of the pod network, in `krust agent` and `krust server`.
#[derive(Clone, Debug, clap::Args)]
pub struct NetOptions {
    /// How pods reach other nodes' pods: `vxlan` (an overlay; works wherever the
    /// nodes reach each other), `host-gw` (routes through the nodes' addresses;
    /// every node on one link), or `none` (another tool connects the nodes; no
    /// routes, masquerade or safety routes are touched).
    #[arg(long, value_enum, default_value = "vxlan", value_name = "BACKEND")]
    pub flannel_backend: Backend,

    /// Do not run the service proxy (Services in nftables) on this node.
    #[arg(long)]
    pub disable_proxy: bool,

    /// Do not enforce NetworkPolicies on this node.
    #[arg(long)]
    pub disable_network_policy: bool,
}

/// What the pod network of a node runs with.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub node_name: String,
    /// The node's InternalIP (the overlay's local address).
    pub node_ip: Ipv4Addr,
    /// The bridge the node's pods are attached to.
    pub bridge: String,
    pub cluster_cidr: Ipv4Cidr,
    pub service_cidr: Ipv4Cidr,
    pub backend: Backend,
}

/// The MTU pods should get on this node: the underlay's less the overlay's headers
/// with vxlan, None (the default) otherwise.
pub fn pod_mtu(backend: Backend, node_ip: Ipv4Addr) -> Option<u32> {
    (backend == Backend::Vxlan).then(|| underlay_mtu(node_ip) - vxlan::OVERHEAD)
}

/// The MTU of the interface that holds `ip` (1500 when it cannot be told).
fn underlay_mtu(ip: Ipv4Addr) -> u32 {
    let listing = std::process::Command::new("ip")
        .args(["-j", "-4", "addr", "show"])
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).ok())
        .unwrap_or_default();
    let ip = ip.to_string();
    listing
        .iter()
        .find(|link| {
            link["addr_info"]
                .as_array()
                .is_some_and(|addrs| addrs.iter().any(|a| a["local"] == ip.as_str()))
        })
        .and_then(|link| link["mtu"].as_u64())
        .map_or(1500, |mtu| mtu as u32)
}

/// Runs the pod network of this node until the task is dropped.
pub async fn run(config: NetConfig, client: kube::Client) -> Result<()> {
    if config.backend == Backend::None {
        return Ok(());
    }
    // The service CIDR route needs the bridge; the CNI bridge plugin adopts it later.
    command::run_tolerating(
        "ip",
        &["link", "add", &config.bridge, "type", "bridge"],
        &["File exists"],
    )
    .await?;
    command::run("ip", &["link", "set", &config.bridge, "up"]).await?;
    command::nft(&masquerade::script(&config.bridge, config.cluster_cidr))
        .await
        .context("cannot install the pod egress masquerade")?;
    if let Err(error) = forward::install(&config.bridge, config.cluster_cidr).await {
        tracing::warn!(
            error = format!("{error:#}"),
            "cannot accept pod traffic in the iptables FORWARD chain; where its policy is DROP, pod traffic is dropped"
        );
    }

    let (nodes, writer) = reflector::store::<Node>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch = watch::mirror(kube::Api::<Node>::all(client), writer, changed.clone());
    let sync = async {
        nodes
            .wait_until_ready()
            .await
            .context("the Node watch stopped")?;
        let context = routes::RouteContext {
            backend: config.backend,
            cluster_cidr: config.cluster_cidr,
            service_cidr: config.service_cidr,
            bridge: config.bridge.clone(),
        };
        let mtu = underlay_mtu(config.node_ip);
        let mut overlay = vxlan::Overlay::default();
        loop {
            let state = nodes.state();
            let peers = peers::peers(state.iter().map(|n| n.as_ref()), &config.node_name);
            let own_cidr = state
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(config.node_name.as_str()))
                .and_then(|n| peers::pod_cidr(n));
            let result = async {
                if config.backend == Backend::Vxlan {
                    // Without its own podCIDR the node has no overlay address yet.
                    let Some(own_cidr) = own_cidr else {
                        return Ok(0);
                    };
                    overlay.sync(config.node_ip, own_cidr, mtu, &peers).await?;
                }
                routes::sync(&routes::desired(&context, &peers)).await
            }
            .await;
            match result {
                Ok(0) => {}
                Ok(changed) => {
                    tracing::info!(changed, peers = peers.len(), "pod network routes synced")
                }
                Err(error) => {
                    tracing::error!(error = format!("{error:#}"), "cannot sync the pod network")
                }
            }
            watch::next_sync(&changed, RESYNC, COALESCE).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        result = sync => result,
        () = watch => Ok(()),
    }
}

/// Removes what [`run`] made in this network namespace: krust's routes, the overlay
/// device, the masquerade table and the forward chain of `bridge`. For tests and
/// `krust killall`.
pub fn teardown(bridge: &str) {
    forward::remove(bridge);
    command::run_quietly("ip", &["link", "del", vxlan::DEVICE]);
    command::run_quietly("ip", &["route", "flush", "proto", routes::PROTO]);
    command::delete_table_quietly(&masquerade::table(bridge));
}
