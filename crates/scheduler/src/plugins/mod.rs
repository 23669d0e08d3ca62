//! The filter and score plugins of upstream's default profile, and the one generic
//! mechanism that runs them: [`find_feasible_nodes`] runs every filter on a node (the
//! first failing filter explains why the node does not fit), [`score_nodes`] runs
//! every score plugin on the feasible nodes, normalizes each plugin's scores to
//! 0..=100 and sums them with the plugin's weight.
//!
//! A plugin is a row in [`FILTERS`] or [`SCORES`]: plain functions of the scheduling
//! [`Cycle`] (the pod plus what was worked out once for it) and one [`NodeInfo`].

pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources;
pub mod node_unschedulable;
pub mod taint_toleration;
pub mod topology_spread;
pub mod volume_binding;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::{ClusterCache, NodeInfo, PodInfo};

/// The highest score a plugin gives a node.
pub const MAX_NODE_SCORE: i64 = 100;

/// Why a node does not fit a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unfit {
    pub plugin: &'static str,
    /// Upstream's reason strings ("Insufficient cpu", ...); a node may have several.
    pub reasons: Vec<String>,
    /// Whether removing pods from the node could help (preemption considers it).
    pub resolvable: bool,
}

impl Unfit {
    /// A reason preemption can do nothing about.
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Unfit {
        Unfit {
            plugin,
            reasons: vec![reason.into()],
            resolvable: false,
        }
    }

    /// A reason that removing pods may cure.
    pub fn resolvable(plugin: &'static str, reasons: Vec<String>) -> Unfit {
        Unfit {
            plugin,
            reasons,
            resolvable: true,
        }
    }
}

/// What a scheduling attempt knows about the pod, worked out once per attempt.
pub struct Cycle<'a> {
    pub pod: &'a PodInfo,
    pub cluster: &'a ClusterCache,
    pub spread: topology_spread::SpreadState,
    pub affinity: inter_pod_affinity::AffinityState,
    /// Pods nominated to nodes by preemption, at least as important as this one: they
    /// count on their node as if they ran there, so that others do not take their room.
    pub nominated: Vec<(String, Arc<PodInfo>)>,
}

impl<'a> Cycle<'a> {
    pub fn new(pod: &'a PodInfo, cluster: &'a ClusterCache) -> Cycle<'a> {
        Cycle {
            pod,
            cluster,
            spread: topology_spread::SpreadState::new(pod, cluster),
            affinity: inter_pod_affinity::AffinityState::new(pod, cluster),
            nominated: Vec::new(),
        }
    }
}

/// A filter: Ok when the node may run the pod.
pub type Filter = fn(&Cycle, &NodeInfo) -> Result<(), Unfit>;

/// The filters, in upstream's order.
pub const FILTERS: &[Filter] = &[
    node_unschedulable::filter,
    node_name::filter,
    taint_toleration::filter,
    node_affinity::filter,
    node_ports::filter,
    node_resources::filter,
    volume_binding::restrictions_filter,
    volume_binding::filter,
    topology_spread::filter,
    inter_pod_affinity::filter,
];

/// A score plugin: a raw score per node, then a normalization of them all.
pub struct ScorePlugin {
    pub name: &'static str,
    pub weight: i64,
    pub score: fn(&Cycle, &NodeInfo) -> i64,
    pub normalize: fn(&mut [i64]),
}

/// The score plugins with the default profile's weights.
pub const SCORES: &[ScorePlugin] = &[
    ScorePlugin {
        name: "TaintToleration",
        weight: 3,
        score: taint_toleration::score,
        normalize: normalize_reverse,
    },
    ScorePlugin {
        name: "NodeAffinity",
        weight: 2,
        score: node_affinity::score,
        normalize: normalize_to_max,
    },
    ScorePlugin {
        name: "PodTopologySpread",
        weight: 2,
        score: topology_spread::score,
        normalize: topology_spread::normalize,
    },
    ScorePlugin {
        name: "InterPodAffinity",
        weight: 2,
        score: inter_pod_affinity::score,
        normalize: normalize_min_max,
    },
    ScorePlugin {
        name: "NodeResourcesFit",
        weight: 1,
        score: node_resources::least_allocated_score,
        normalize: keep,
    },
    ScorePlugin {
        name: "NodeResourcesBalancedAllocation",
        weight: 1,
        score: node_resources::balanced_allocation_score,
        normalize: keep,
    },
    ScorePlugin {
        name: "ImageLocality",
        weight: 1,
        score: image_locality::score,
        normalize: keep,
    },
];

/// Runs every filter on `node`; the first one that fails decides.
pub fn filter_node(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    FILTERS.iter().try_for_each(|filter| filter(cycle, node))
}

/// [`filter_node`] with the pods nominated to the node counted on it.
pub fn filter_node_with_nominated(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let mut nominated = cycle
        .nominated
        .iter()
        .filter(|(n, _)| *n == node.name)
        .peekable();
    if nominated.peek().is_none() {
        return filter_node(cycle, node);
    }
    let mut with = node.clone();
    for (_, pod) in nominated {
        with.add_pod(pod.clone());
    }
    filter_node(cycle, &with)
}

/// How many feasible nodes are enough to pick from (upstream's adaptive
/// `percentageOfNodesToScore`): all of them below 100 nodes, else a share that shrinks
/// from 50 % towards 5 % as the cluster grows, but never fewer than 100.
pub fn feasible_nodes_to_find(all: usize) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if all < MIN_FEASIBLE {
        return all;
    }
    let percentage = (50 - (all / 125) as i64).max(5) as usize;
    (all * percentage / 100).max(MIN_FEASIBLE)
}

/// The result of filtering: the feasible nodes (indexes into the cache's node slots)
/// or why none fits.
pub struct Filtered {
    pub feasible: Vec<usize>,
    /// Why each rejected node was rejected.
    pub unfit: Vec<(String, Unfit)>,
    /// Where the next pod should start looking (round robin, as upstream).
    pub next_start: usize,
}

/// Filters the nodes from `start`, round robin, until enough feasible ones are found.
pub fn find_feasible_nodes(cycle: &Cycle, start: usize) -> Filtered {
    let slots = cycle.cluster.node_infos();
    let wanted = feasible_nodes_to_find(cycle.cluster.node_count());
    let mut filtered = Filtered {
        feasible: Vec::new(),
        unfit: Vec::new(),
        next_start: start,
    };
    if slots.is_empty() {
        return filtered;
    }
    let start = start % slots.len();
    let mut visited = 0;
    for offset in 0..slots.len() {
        let index = (start + offset) % slots.len();
        let node = &slots[index];
        if node.node.is_none() {
            continue;
        }
        visited = offset + 1;
        match filter_node_with_nominated(cycle, node) {
            Ok(()) => filtered.feasible.push(index),
            Err(unfit) => filtered.unfit.push((node.name.clone(), unfit)),
        }
        if filtered.feasible.len() >= wanted {
            break;
        }
    }
    filtered.next_start = (start + visited) % slots.len();
    filtered
}

/// Scores the feasible nodes; returns `(slot index, total score)` pairs.
pub fn score_nodes(cycle: &Cycle, feasible: &[usize]) -> Vec<(usize, i64)> {
    let slots = cycle.cluster.node_infos();
    let mut totals = vec![0i64; feasible.len()];
    let mut scores = vec![0i64; feasible.len()];
    for plugin in SCORES {
        for (score, &index) in scores.iter_mut().zip(feasible) {
            *score = (plugin.score)(cycle, &slots[index]);
        }
        (plugin.normalize)(&mut scores);
        for (total, score) in totals.iter_mut().zip(&scores) {
            *total += score * plugin.weight;
        }
    }
    feasible.iter().copied().zip(totals).collect()
}

/// The FailedScheduling message, upstream's shape: `0/5 nodes are available: 2
/// Insufficient cpu, 3 node(s) had untolerated taint {k: v}.` (reasons counted, sorted),
/// or upstream's `no nodes available to schedule pods` for an empty cluster.
pub fn fit_error_message(node_count: usize, unfit: &[(String, Unfit)]) -> String {
    if node_count == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut histogram: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, unfit) in unfit {
        for reason in &unfit.reasons {
            *histogram.entry(reason).or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = histogram
        .iter()
        .map(|(reason, count)| format!("{count} {reason}"))
        .collect();
    reasons.sort();
    format!(
        "0/{node_count} nodes are available: {}.",
        reasons.join(", ")
    )
}

/// Scales scores so that the best is [`MAX_NODE_SCORE`].
pub fn normalize_to_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max > 0 {
        for score in scores.iter_mut() {
            *score = *score * MAX_NODE_SCORE / max;
        }
    }
}

/// Scales and reverses: the node with the highest raw score gets 0, zero gets 100.
pub fn normalize_reverse(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for score in scores.iter_mut() {
        *score = if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE - *score * MAX_NODE_SCORE / max
        };
    }
}

/// Maps the range of scores onto 0..=100 (all 0 when they are equal).
pub fn normalize_min_max(scores: &mut [i64]) {
    let max = scores.iter().copied().max().unwrap_or(0);
    let min = scores.iter().copied().min().unwrap_or(0);
    for score in scores.iter_mut() {
        *score = if max == min {
            0
        } else {
            (*score - min) * MAX_NODE_SCORE / (max - min)
        };
    }
}

/// Scores already in 0..=100.
pub fn keep(_: &mut [i64]) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_counts_and_sorts_reasons() {
        let unfit = vec![
            (
                "a".to_string(),
                Unfit::unresolvable("T", "node(s) had untolerated taint {k: v}"),
            ),
            (
                "b".to_string(),
                Unfit::resolvable("F", vec!["Insufficient cpu".into()]),
            ),
            (
                "c".to_string(),
                Unfit::resolvable(
                    "F",
                    vec!["Insufficient cpu".into(), "Insufficient memory".into()],
                ),
            ),
            (
                "d".to_string(),
                Unfit::unresolvable("T", "node(s) had untolerated taint {k: v}"),
            ),
            (
                "e".to_string(),
                Unfit::unresolvable("T", "node(s) had untolerated taint {k: v}"),
            ),
        ];
        assert_eq!(
            fit_error_message(5, &unfit),
            "0/5 nodes are available: 1 Insufficient memory, 2 Insufficient cpu, 3 node(s) had untolerated taint {k: v}."
        );
        assert_eq!(
            fit_error_message(0, &[]),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn feasible_share_shrinks_with_the_cluster() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }

    #[test]
    fn normalizations() {
        let mut s = vec![0, 5, 10];
        normalize_to_max(&mut s);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![0, 1, 2];
        normalize_reverse(&mut s);
        assert_eq!(s, vec![100, 50, 0]);
        let mut s = vec![-4, 0, 4];
        normalize_min_max(&mut s);
        assert_eq!(s, vec![0, 50, 100]);
        let mut s = vec![3, 3];
        normalize_min_max(&mut s);
        assert_eq!(s, vec![0, 0]);
    }
}
