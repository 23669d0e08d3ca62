//! NodeAffinity: `spec.nodeSelector` and required node affinity decide which nodes a
//! pod may go to; preferred node affinity terms add their weights to a node's score.

use k8s_openapi::api::core::v1::{Node, Pod};

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;
use crate::selectors::node_selector_term_matches;

pub const NAME: &str = "NodeAffinity";
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// Whether `node` satisfies the pod's nodeSelector and required node affinity (also
/// used by PodTopologySpread to decide which nodes count).
pub fn required_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    selector_ok
        && required.is_none_or(|r| {
            r.node_selector_terms
                .iter()
                .any(|t| node_selector_term_matches(t, node))
        })
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let Some(n) = node.node.as_ref() else {
        return Ok(());
    };
    if required_matches(&cycle.pod.pod, n) {
        Ok(())
    } else {
        Err(Unfit::unresolvable(NAME, REASON))
    }
}

/// The sum of the weights of the preferred terms the node matches.
pub fn score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let Some(n) = node.node.as_ref() else {
        return 0;
    };
    let spec = cycle.pod.pod.spec.as_ref();
    spec.and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| t.weight != 0 && node_selector_term_matches(&t.preference, n))
        .map(|t| t.weight as i64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    #[test]
    fn selector_and_required_terms_filter() {
        let cluster = ClusterCache::default();
        let a = NodeInfo::new(node(
            "a",
            "1",
            json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}}),
        ));
        let b = NodeInfo::new(node(
            "b",
            "1",
            json!({"metadata": {"labels": {"zone": "z2"}}}),
        ));
        let by_selector = pod("p", "0", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
        let cycle = Cycle::new(&by_selector, &cluster);
        assert!(filter(&cycle, &a).is_ok());
        assert_eq!(filter(&cycle, &b).unwrap_err().reasons, vec![REASON]);
        let by_affinity = pod(
            "q",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}]}}}}}),
        );
        let cycle = Cycle::new(&by_affinity, &cluster);
        assert!(filter(&cycle, &a).is_err());
        assert!(filter(&cycle, &b).is_ok());
    }

    #[test]
    fn preferred_terms_add_weights() {
        let cluster = ClusterCache::default();
        let a = NodeInfo::new(node(
            "a",
            "1",
            json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}}),
        ));
        let p = pod(
            "p",
            "0",
            json!({"spec": {"affinity": {"nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
                {"weight": 3, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}},
                {"weight": 7, "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}}]}}}}),
        );
        assert_eq!(score(&Cycle::new(&p, &cluster), &a), 8);
    }
}
