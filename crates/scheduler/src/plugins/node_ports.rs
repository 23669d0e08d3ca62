//! NodePorts: two pods on a node cannot use the same host port and protocol, unless
//! they bind different, specific host IPs.

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodePorts";
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

fn conflicts(a: &(String, String, i32), b: &(String, String, i32)) -> bool {
    a.0 == b.0 && a.2 == b.2 && (a.1 == b.1 || a.1 == "0.0.0.0" || b.1 == "0.0.0.0")
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    if cycle.pod.host_ports.is_empty() {
        return Ok(());
    }
    let taken = node
        .pods
        .iter()
        .flat_map(|p| p.host_ports.iter())
        .any(|used| {
            cycle
                .pod
                .host_ports
                .iter()
                .any(|wanted| conflicts(wanted, used))
        });
    if taken {
        Err(Unfit::resolvable(NAME, vec![REASON.into()]))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    fn with_port(name: &str, port: i32, ip: &str) -> std::sync::Arc<crate::cache::PodInfo> {
        pod(
            name,
            "0",
            json!({"spec": {"containers": [{"name": "c",
            "ports": [{"containerPort": 80, "hostPort": port, "hostIP": ip}]}]}}),
        )
    }

    #[test]
    fn host_ports_conflict_unless_ips_differ() {
        let cluster = ClusterCache::default();
        let mut n = NodeInfo::new(node("n", "1", json!({})));
        n.add_pod(with_port("a", 8080, "10.0.0.1"));
        let same = with_port("b", 8080, "");
        assert_eq!(
            filter(&Cycle::new(&same, &cluster), &n)
                .unwrap_err()
                .reasons,
            vec![REASON]
        );
        let other_ip = with_port("c", 8080, "10.0.0.2");
        assert!(filter(&Cycle::new(&other_ip, &cluster), &n).is_ok());
        let other_port = with_port("d", 8081, "");
        assert!(filter(&Cycle::new(&other_port, &cluster), &n).is_ok());
    }
}
