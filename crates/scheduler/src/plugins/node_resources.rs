//! NodeResourcesFit and NodeResourcesBalancedAllocation: a pod fits a node when every
//! resource it requests (cpu, memory, ephemeral storage, extended resources, and one
//! pod slot) is still free there; among fitting nodes the least allocated scores
//! best (LeastAllocated, cpu and memory weighted equally), and so does the one whose
//! cpu and memory stay most balanced.

use super::{Cycle, MAX_NODE_SCORE, Unfit};
use crate::cache::NodeInfo;

pub const NAME: &str = "NodeResourcesFit";

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let want = &cycle.pod.requests;
    let free = |name: &str| node.allocatable.get(name) - node.requested.get(name);
    let mut reasons = Vec::new();
    if node.pods.len() as i64 + 1 > node.allocatable.pods {
        reasons.push("Too many pods".to_string());
    }
    for (name, wanted) in [
        ("cpu", want.milli_cpu),
        ("memory", want.memory),
        ("ephemeral-storage", want.ephemeral_storage),
    ]
    .into_iter()
    .chain(want.scalar.iter().map(|(n, v)| (n.as_str(), *v)))
    {
        if wanted > 0 && wanted > free(name) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(Unfit::resolvable(NAME, reasons))
    }
}

/// `(requested after placing the pod, allocatable)` for cpu and memory.
fn cpu_and_memory(cycle: &Cycle, node: &NodeInfo, non_zero: bool) -> [(i64, i64); 2] {
    let (node_requested, pod) = if non_zero {
        (&node.non_zero_requested, &cycle.pod.non_zero_requests)
    } else {
        (&node.requested, &cycle.pod.requests)
    };
    [
        (
            node_requested.milli_cpu + pod.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (node_requested.memory + pod.memory, node.allocatable.memory),
    ]
}

/// LeastAllocated: the share of cpu and memory left free, 0..=100.
pub fn least_allocated_score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let per_resource = |(requested, capacity): (i64, i64)| {
        if capacity == 0 || requested > capacity {
            0
        } else {
            (capacity - requested) * MAX_NODE_SCORE / capacity
        }
    };
    let [cpu, memory] = cpu_and_memory(cycle, node, true);
    (per_resource(cpu) + per_resource(memory)) / 2
}

/// BalancedAllocation: 100 when cpu and memory are used in the same proportion.
pub fn balanced_allocation_score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let fraction = |(requested, capacity): (i64, i64)| {
        if capacity == 0 {
            0.0
        } else {
            (requested as f64 / capacity as f64).min(1.0)
        }
    };
    let [cpu, memory] = cpu_and_memory(cycle, node, false);
    let deviation = ((fraction(cpu) - fraction(memory)) / 2.0).abs();
    ((1.0 - deviation) * MAX_NODE_SCORE as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::cache::{ClusterCache, NodeInfo};
    use serde_json::json;

    #[test]
    fn insufficient_resources_are_each_named() {
        let cluster = ClusterCache::default();
        let mut n = NodeInfo::new(node(
            "n",
            "2",
            json!({"status": {"allocatable": {
            "cpu": "2", "memory": "1Gi", "pods": "2", "example.com/gpu": "1"}}}),
        ));
        n.add_pod(pod("a", "1500m", json!({})));
        let big = pod(
            "b",
            "1",
            json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {
            "cpu": "1", "memory": "2Gi", "example.com/gpu": "2"}}}]}}),
        );
        assert_eq!(
            filter(&Cycle::new(&big, &cluster), &n).unwrap_err().reasons,
            vec![
                "Insufficient cpu",
                "Insufficient memory",
                "Insufficient example.com/gpu"
            ]
        );
        let small = pod("s", "500m", json!({}));
        assert!(filter(&Cycle::new(&small, &cluster), &n).is_ok());
        n.add_pod(pod("c", "0", json!({})));
        assert_eq!(
            filter(&Cycle::new(&small, &cluster), &n)
                .unwrap_err()
                .reasons,
            vec!["Too many pods"]
        );
    }

    #[test]
    fn emptier_and_balanced_nodes_score_higher() {
        let cluster = ClusterCache::default();
        let empty = NodeInfo::new(node("e", "4", json!({})));
        let mut busy = NodeInfo::new(node("b", "4", json!({})));
        busy.add_pod(pod("a", "3", json!({})));
        let p = pod("p", "1", json!({}));
        let cycle = Cycle::new(&p, &cluster);
        assert!(least_allocated_score(&cycle, &empty) > least_allocated_score(&cycle, &busy));
        // 1 of 4 cpu, 0 of 8Gi memory: deviation 0.125.
        assert_eq!(balanced_allocation_score(&cycle, &empty), 87);
        assert!(balanced_allocation_score(&cycle, &busy) < 87);
    }
}
