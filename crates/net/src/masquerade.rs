//! Egress masquerade: traffic from pods to anything outside the cluster CIDR leaves
//! with the node's address (replies then find their way back without the outside
//! knowing pod addresses); pod-to-pod traffic, on this node or another, keeps its
//! source. One nftables table per pod bridge, replaced atomically.

use krust_api::cidr::Ipv4Cidr;

/// The table of the node whose pods are on `bridge`.
pub fn table(bridge: &str) -> String {
    format!("krust-net-{bridge}")
}

/// The `nft -f` script that (re)defines the table in one transaction.
pub fn script(bridge: &str, cluster_cidr: Ipv4Cidr) -> String {
    let table = table(bridge);
    format!(
        "table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {cluster_cidr} ip daddr {cluster_cidr} return\n\
         \t\tip saddr {cluster_cidr} ip daddr 224.0.0.0/4 return\n\
         \t\tip saddr {cluster_cidr} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_traffic_leaving_the_cluster_cidr_is_masqueraded() {
        let script = script("krust0", "10.42.0.0/16".parse().unwrap());
        assert!(script.contains("table ip krust-net-krust0 {"));
        assert!(script.contains("ip saddr 10.42.0.0/16 ip daddr 10.42.0.0/16 return"));
        assert!(script.contains("ip saddr 10.42.0.0/16 masquerade"));
        // The first two lines make the transaction work whether or not it exists.
        assert!(script.starts_with("table ip krust-net-krust0\ndelete table"));
    }

    /// The real `nft` accepts the script (check mode: nothing is applied). Needs root.
    #[test]
    fn nft_accepts_the_script() {
        crate::command::nft_check(&script("krust0", "10.42.0.0/16".parse().unwrap())).unwrap();
    }
}
