//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that
//! tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;
use crate::selectors::tolerates;

pub const NAME: &str = "NodeUnschedulable";
pub const REASON: &str = "node(s) were unschedulable";

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let cordoned = node
        .node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    if !cordoned {
        return Ok(());
    }
    let taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: "NoSchedule".into(),
        ..Taint::default()
    };
    let spec = cycle.pod.pod.spec.as_ref();
    if spec
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| tolerates(t, &taint))
    {
        return Ok(());
    }
    Err(Unfit::unresolvable(NAME, REASON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_tolerating_pods() {
        let cluster = ClusterCache::default();
        let cordoned = NodeInfo::new(node("n", "1", json!({"spec": {"unschedulable": true}})));
        let plain = pod("p", "0", json!({}));
        assert_eq!(
            filter(&Cycle::new(&plain, &cluster), &cordoned)
                .unwrap_err()
                .reasons,
            vec![REASON]
        );
        assert!(
            filter(
                &Cycle::new(&plain, &cluster),
                &NodeInfo::new(node("m", "1", json!({})))
            )
            .is_ok()
        );
        let tolerating = pod(
            "t",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(filter(&Cycle::new(&tolerating, &cluster), &cordoned).is_ok());
    }
}
