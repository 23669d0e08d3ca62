//! The routes the pod network keeps on a node: one per other node's pod CIDR (through
//! the node's address with host-gw, through the VXLAN device with vxlan), plus the
//! safety routes that keep cluster traffic on the machine: the cluster CIDR
//! `unreachable` (a pod address no node has fails at once instead of leaving by the
//! default route) and the service CIDR onto the pod bridge (a ClusterIP nobody
//! translated stays local).
//!
//! Every route carries the routing protocol number [`PROTO`], so the routes krust
//! made are told apart from everyone else's: a sync replaces what differs and deletes
//! krust's routes nobody wants any more, and never touches another route.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use krust_api::cidr::Ipv4Cidr;

use crate::command;
use crate::peers::Peer;
use crate::vxlan;

/// The `proto` of krust's routes (unassigned in /etc/iproute2/rt_protos).
pub const PROTO: &str = "75";

/// One route: its destination and how it is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `unreachable <dst>`.
    Unreachable(Ipv4Cidr),
    /// `<dst> dev <device>`: on the device's link.
    Device(Ipv4Cidr, String),
    /// `<dst> via <gateway>`, `onlink` through `device` when one is named.
    Via {
        dst: Ipv4Cidr,
        gateway: std::net::Ipv4Addr,
        onlink_device: Option<String>,
    },
}

impl Route {
    pub fn dst(&self) -> Ipv4Cidr {
        match self {
            Route::Unreachable(dst) | Route::Device(dst, _) | Route::Via { dst, .. } => *dst,
        }
    }

    /// The arguments of `ip route replace` for this route.
    fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Route::Unreachable(dst) => vec!["unreachable".into(), dst.to_string()],
            Route::Device(dst, device) => vec![dst.to_string(), "dev".into(), device.clone()],
            Route::Via {
                dst,
                gateway,
                onlink_device,
            } => {
                let mut args = vec![dst.to_string(), "via".into(), gateway.to_string()];
                if let Some(device) = onlink_device {
                    args.extend(["dev".into(), device.clone(), "onlink".into()]);
                }
                args
            }
        };
        args.extend(["proto".into(), PROTO.into()]);
        args
    }

    /// Whether the kernel's route (from `ip -j route show`) is this one.
    fn matches(&self, installed: &serde_json::Value) -> bool {
        let field = |name: &str| installed.get(name).and_then(|v| v.as_str());
        match self {
            Route::Unreachable(_) => field("type") == Some("unreachable"),
            Route::Device(_, device) => {
                field("gateway").is_none() && field("dev") == Some(device.as_str())
            }
            Route::Via {
                gateway,
                onlink_device,
                ..
            } => {
                field("gateway") == Some(gateway.to_string().as_str())
                    && onlink_device
                        .as_deref()
                        .is_none_or(|device| field("dev") == Some(device))
            }
        }
    }
}

/// How this node reaches other nodes' pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A route to each node's pod CIDR through the node's address: fast, but every
    /// node must be on one link (one L2 network).
    HostGw,
    /// A VXLAN overlay (UDP 8472): works wherever the nodes reach each other by IP.
    Vxlan,
    /// No routes at all: another tool connects the nodes.
    None,
}

/// What the routes depend on besides the peers.
#[derive(Clone, Debug)]
pub struct RouteContext {
    pub backend: Backend,
    pub cluster_cidr: Ipv4Cidr,
    pub service_cidr: Ipv4Cidr,
    /// The bridge the node's pods are attached to.
    pub bridge: String,
}

/// Every route this node should have (none with the `none` backend).
pub fn desired(context: &RouteContext, peers: &[Peer]) -> Vec<Route> {
    if context.backend == Backend::None {
        return Vec::new();
    }
    let mut routes = vec![
        Route::Unreachable(context.cluster_cidr),
        Route::Device(context.service_cidr, context.bridge.clone()),
    ];
    for peer in peers {
        routes.push(match context.backend {
            Backend::HostGw => Route::Via {
                dst: peer.pod_cidr,
                gateway: peer.ip,
                onlink_device: None,
            },
            _ => Route::Via {
                dst: peer.pod_cidr,
                gateway: peer.pod_cidr.network(),
                onlink_device: Some(vxlan::DEVICE.to_string()),
            },
        });
    }
    routes
}

/// Brings krust's routes to `desired`: replaces the ones missing or different, deletes
/// krust's routes that are not wanted. Returns how many routes changed.
pub async fn sync(desired: &[Route]) -> Result<usize> {
    let listing = command::run("ip", &["-j", "-4", "route", "show", "proto", PROTO]).await?;
    let installed: Vec<serde_json::Value> = if listing.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&listing).context("cannot read `ip -j route` output")?
    };
    let mut by_dst: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    for route in &installed {
        if let Some(dst) = route.get("dst").and_then(|d| d.as_str()) {
            by_dst.insert(dst.to_string(), route);
        }
    }
    let mut changed = 0;
    for route in desired {
        let dst = route.dst().to_string();
        if by_dst.remove(&dst).is_some_and(|now| route.matches(now)) {
            continue;
        }
        let mut args = vec!["route".to_string(), "replace".to_string()];
        args.extend(route.args());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        command::run("ip", &args).await?;
        changed += 1;
    }
    for stale in by_dst.keys() {
        command::run_tolerating(
            "ip",
            &["route", "del", stale, "proto", PROTO],
            &["No such process"],
        )
        .await?;
        changed += 1;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(backend: Backend) -> RouteContext {
        RouteContext {
            backend,
            cluster_cidr: "10.42.0.0/16".parse().unwrap(),
            service_cidr: "10.43.0.0/16".parse().unwrap(),
            bridge: "krust0".into(),
        }
    }

    fn peer(name: &str, ip: &str, cidr: &str) -> Peer {
        Peer {
            name: name.into(),
            ip: ip.parse().unwrap(),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    fn rendered(routes: &[Route]) -> Vec<String> {
        routes.iter().map(|r| r.args().join(" ")).collect()
    }

    #[test]
    fn host_gw_routes_each_pod_cidr_through_its_node() {
        let routes = desired(
            &context(Backend::HostGw),
            &[peer("b", "198.18.0.12", "10.42.2.0/24")],
        );
        assert_eq!(
            rendered(&routes),
            [
                "unreachable 10.42.0.0/16 proto 75",
                "10.43.0.0/16 dev krust0 proto 75",
                "10.42.2.0/24 via 198.18.0.12 proto 75",
            ]
        );
    }

    #[test]
    fn vxlan_routes_go_onlink_through_the_overlay_device() {
        let routes = desired(
            &context(Backend::Vxlan),
            &[peer("b", "198.18.0.12", "10.42.2.0/24")],
        );
        assert_eq!(
            rendered(&routes)[2],
            "10.42.2.0/24 via 10.42.2.0 dev krust-vxlan onlink proto 75"
        );
    }

    #[test]
    fn the_none_backend_touches_no_route() {
        let routes = desired(
            &context(Backend::None),
            &[peer("b", "198.18.0.12", "10.42.2.0/24")],
        );
        assert!(routes.is_empty());
    }

    #[test]
    fn installed_routes_are_compared_by_kind_gateway_and_device() {
        let via = Route::Via {
            dst: "10.42.2.0/24".parse().unwrap(),
            gateway: "198.18.0.12".parse().unwrap(),
            onlink_device: None,
        };
        let installed =
            serde_json::json!({"dst": "10.42.2.0/24", "gateway": "198.18.0.12", "dev": "eth0"});
        assert!(via.matches(&installed));
        let moved =
            serde_json::json!({"dst": "10.42.2.0/24", "gateway": "198.18.0.13", "dev": "eth0"});
        assert!(!via.matches(&moved));
        let unreachable = Route::Unreachable("10.42.0.0/16".parse().unwrap());
        assert!(
            unreachable.matches(&serde_json::json!({"type": "unreachable", "dst": "10.42.0.0/16"}))
        );
        assert!(!unreachable.matches(&installed));
        let device = Route::Device("10.43.0.0/16".parse().unwrap(), "krust0".into());
        assert!(device.matches(&serde_json::json!({"dst": "10.43.0.0/16", "dev": "krust0"})));
        assert!(!device.matches(&serde_json::json!({"dst": "10.43.0.0/16", "dev": "eth0"})));
    }
}
