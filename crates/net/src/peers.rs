//! The other nodes of the cluster as the pod network sees them: each one's pod CIDR
//! and the address its pods are reached through. Pure functions over Node objects.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;
use krust_api::cidr::Ipv4Cidr;

/// A node whose pods this node routes to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    /// The node's InternalIP (IPv4).
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Cidr,
}

/// The IPv4 pod CIDR of a node (`spec.podCIDRs`, else `spec.podCIDR`).
pub fn pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .find_map(|cidr| cidr.parse().ok())
}

/// The first IPv4 InternalIP of a node.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .iter()
        .flatten()
        .filter(|address| address.type_ == "InternalIP")
        .find_map(|address| address.address.parse().ok())
}

/// Every node but `own` that has a pod CIDR and an InternalIP, sorted by name.
pub fn peers<'a>(nodes: impl IntoIterator<Item = &'a Node>, own: &str) -> Vec<Peer> {
    let mut peers: Vec<Peer> = nodes
        .into_iter()
        .filter_map(|node| {
            let name = node.metadata.name.clone()?;
            if name == own || node.metadata.deletion_timestamp.is_some() {
                return None;
            }
            Some(Peer {
                ip: internal_ip(node)?,
                pod_cidr: pod_cidr(node)?,
                name,
            })
        })
        .collect();
    peers.sort();
    peers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": cidr.map(|c| serde_json::json!({"podCIDR": c, "podCIDRs": [c]})),
            "status": {"addresses": ip.map(|ip| vec![
                serde_json::json!({"type": "Hostname", "address": name}),
                serde_json::json!({"type": "InternalIP", "address": ip}),
            ]).unwrap_or_default()},
        }))
        .unwrap()
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_cidr_and_an_address() {
        let nodes = [
            node("b", Some("10.42.2.0/24"), Some("198.18.0.12")),
            node("self", Some("10.42.1.0/24"), Some("198.18.0.11")),
            node("a", Some("10.42.3.0/24"), Some("198.18.0.13")),
            node("no-cidr", None, Some("198.18.0.14")),
            node("no-address", Some("10.42.4.0/24"), None),
        ];
        let peers = peers(&nodes, "self");
        let names: Vec<&str> = peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(peers[1].ip, Ipv4Addr::new(198, 18, 0, 12));
        assert_eq!(peers[1].pod_cidr.to_string(), "10.42.2.0/24");
    }

    #[test]
    fn the_ipv4_cidr_is_taken_from_a_dual_stack_node() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"podCIDR": "fd00:42::/64", "podCIDRs": ["fd00:42::/64", "10.42.7.0/24"]},
        }))
        .unwrap();
        assert_eq!(pod_cidr(&node).unwrap().to_string(), "10.42.7.0/24");
    }
}
