//! NodeName: a pod that names a node in `spec.nodeName` fits only that node.

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodeName";
pub const REASON: &str = "node(s) didn't match the requested node name";

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    match cycle.pod.node_name() {
        Some(wanted) if wanted != node.name => Err(Unfit::unresolvable(NAME, REASON)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    #[test]
    fn only_the_named_node_fits() {
        let cluster = ClusterCache::default();
        let named = pod("p", "0", json!({"spec": {"nodeName": "a"}}));
        let cycle = Cycle::new(&named, &cluster);
        assert!(filter(&cycle, &NodeInfo::new(node("a", "1", json!({})))).is_ok());
        assert!(filter(&cycle, &NodeInfo::new(node("b", "1", json!({})))).is_err());
        let free = pod("q", "0", json!({}));
        assert!(
            filter(
                &Cycle::new(&free, &cluster),
                &NodeInfo::new(node("b", "1", json!({})))
            )
            .is_ok()
        );
    }
}
