//! TaintToleration: a node's NoSchedule and NoExecute taints keep off the pods that do
//! not tolerate them; PreferNoSchedule taints only lower the node's score.

use k8s_openapi::api::core::v1::Taint;

use super::{Cycle, Unfit};
use crate::cache::NodeInfo;
use crate::selectors::tolerates;

pub const NAME: &str = "TaintToleration";

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .as_ref()
        .and_then(|n| n.spec.as_ref())
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

fn tolerated(cycle: &Cycle, taint: &Taint) -> bool {
    let spec = cycle.pod.pod.spec.as_ref();
    spec.and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| tolerates(t, taint))
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let untolerated = taints(node)
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerated(cycle, t));
    match untolerated {
        None => Ok(()),
        Some(taint) => Err(Unfit::unresolvable(
            NAME,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// How many PreferNoSchedule taints the pod does not tolerate (fewer is better).
pub fn score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let spec = cycle.pod.pod.spec.as_ref();
    let preferring: Vec<_> = spec
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some("PreferNoSchedule")
            )
        })
        .collect();
    taints(node)
        .iter()
        .filter(|t| t.effect == "PreferNoSchedule")
        .filter(|t| !preferring.iter().any(|tol| tolerates(tol, t)))
        .count() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    #[test]
    fn untolerated_taints_are_named() {
        let cluster = ClusterCache::default();
        let tainted = NodeInfo::new(node(
            "n",
            "1",
            json!({"spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        ));
        let plain = pod("p", "0", json!({}));
        assert_eq!(
            filter(&Cycle::new(&plain, &cluster), &tainted)
                .unwrap_err()
                .reasons,
            vec!["node(s) had untolerated taint {dedicated: gpu}"]
        );
        let tolerating = pod(
            "t",
            "0",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(filter(&Cycle::new(&tolerating, &cluster), &tainted).is_ok());
    }

    #[test]
    fn prefer_no_schedule_only_scores() {
        let cluster = ClusterCache::default();
        let soft = NodeInfo::new(node(
            "n",
            "1",
            json!({"spec": {"taints": [
            {"key": "a", "effect": "PreferNoSchedule"}, {"key": "b", "effect": "PreferNoSchedule"}]}}),
        ));
        let plain = pod("p", "0", json!({}));
        let cycle = Cycle::new(&plain, &cluster);
        assert!(filter(&cycle, &soft).is_ok());
        assert_eq!(score(&cycle, &soft), 2);
        let tolerating = pod(
            "t",
            "0",
            json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}),
        );
        assert_eq!(score(&Cycle::new(&tolerating, &cluster), &soft), 1);
    }
}
