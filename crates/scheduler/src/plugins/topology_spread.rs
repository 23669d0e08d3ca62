//! PodTopologySpread: `topologySpreadConstraints` keep the number of matching pods in
//! each topology domain (zone, node, ...) within `maxSkew` of the emptiest domain.
//! `DoNotSchedule` constraints filter; `ScheduleAnyway` constraints score, favouring
//! the domains with fewer matching pods. Only nodes that pass the pod's node affinity
//! and nodeSelector count (upstream's default `nodeAffinityPolicy: Honor`). The
//! cluster-level default constraints upstream adds for pods of Services are not applied.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

use super::{Cycle, MAX_NODE_SCORE, Unfit, node_affinity};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::selectors::label_selector_matches;

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint with the matching pods counted per domain.
#[derive(Debug, Default)]
pub struct Constraint {
    key: String,
    max_skew: i64,
    counts: HashMap<String, i64>,
    /// The count in the emptiest domain (0 when there are fewer than minDomains).
    min: i64,
    /// 1 when the pod itself matches the selector.
    self_match: i64,
}

/// What PodTopologySpread worked out for one pod.
#[derive(Debug, Default)]
pub struct SpreadState {
    hard: Vec<Constraint>,
    soft: Vec<Constraint>,
}

impl SpreadState {
    pub fn new(pod: &PodInfo, cluster: &ClusterCache) -> SpreadState {
        let spec = pod.pod.spec.as_ref();
        let constraints = spec
            .and_then(|s| s.topology_spread_constraints.as_deref())
            .unwrap_or_default();
        let mut state = SpreadState::default();
        for c in constraints {
            let mut selector = c.label_selector.clone().unwrap_or_default();
            for key in c.match_label_keys.iter().flatten() {
                if let Some(value) = pod.labels.get(key) {
                    selector
                        .match_expressions
                        .get_or_insert_with(Vec::new)
                        .push(LabelSelectorRequirement {
                            key: key.clone(),
                            operator: "In".into(),
                            values: Some(vec![value.clone()]),
                        });
                }
            }
            let matches = |p: &PodInfo| {
                c.label_selector.is_some()
                    && p.namespace == pod.namespace
                    && p.pod.metadata.deletion_timestamp.is_none()
                    && label_selector_matches(&selector, &p.labels)
            };
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in cluster.node_infos() {
                let Some(n) = node.node.as_ref() else {
                    continue;
                };
                let Some(value) = node.labels().get(&c.topology_key) else {
                    continue;
                };
                if !node_affinity::required_matches(&pod.pod, n) {
                    continue;
                }
                let matching = node.pods.iter().filter(|p| matches(p)).count() as i64;
                *counts.entry(value.clone()).or_default() += matching;
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if c.min_domains.is_some_and(|m| (counts.len() as i32) < m) {
                min = 0;
            }
            let constraint = Constraint {
                key: c.topology_key.clone(),
                max_skew: c.max_skew as i64,
                counts,
                min,
                self_match: i64::from(matches(pod)),
            };
            if c.when_unsatisfiable == "DoNotSchedule" {
                state.hard.push(constraint);
            } else {
                state.soft.push(constraint);
            }
        }
        state
    }
}

/// The selector a constraint uses (for tests that build constraints by hand).
pub fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..LabelSelector::default()
    }
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    for c in &cycle.spread.hard {
        let Some(value) = node.labels().get(&c.key) else {
            return Err(Unfit::unresolvable(NAME, REASON_MISSING_LABEL));
        };
        let count = c.counts.get(value).copied().unwrap_or(0);
        if count + c.self_match - c.min > c.max_skew {
            return Err(Unfit::resolvable(NAME, vec![REASON.into()]));
        }
    }
    Ok(())
}

/// Matching pods in the node's domains, weighted by how many domains each constraint
/// has; -1 marks a node that lacks a constraint's label (it scores 0).
pub fn score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let mut total = 0.0;
    for c in &cycle.spread.soft {
        let Some(value) = node.labels().get(&c.key) else {
            return -1;
        };
        let weight = ((c.counts.len() + 2) as f64).ln();
        let count = c.counts.get(value).copied().unwrap_or(0);
        total += (count + c.max_skew - 1) as f64 * weight;
    }
    total.round() as i64
}

/// Fewer matching pods score higher: `100 * (max + min - s) / max`.
pub fn normalize(scores: &mut [i64]) {
    let counted = scores.iter().copied().filter(|s| *s >= 0);
    let max = counted.clone().max().unwrap_or(0);
    let min = counted.min().unwrap_or(0);
    for score in scores.iter_mut() {
        *score = if *score < 0 {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *score) / max
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use serde_json::json;

    fn zoned(cluster: &mut ClusterCache, name: &str, zone: &str) {
        cluster.upsert_node(node(
            name,
            "4",
            json!({"metadata": {"labels": {"zone": zone}}}),
        ));
    }

    fn spread_pod(name: &str, when: &str) -> std::sync::Arc<PodInfo> {
        pod(
            name,
            "0",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": when,
             "labelSelector": {"matchLabels": {"app": "web"}}}]}}),
        )
    }

    #[test]
    fn hard_constraints_keep_the_skew() {
        let mut cluster = ClusterCache::default();
        zoned(&mut cluster, "a1", "a");
        zoned(&mut cluster, "b1", "b");
        cluster.upsert_node(node("nolabel", "4", json!({})));
        cluster.assume(
            pod("w1", "0", json!({"metadata": {"labels": {"app": "web"}}})),
            "a1",
        );
        let p = spread_pod("new", "DoNotSchedule");
        let cycle = Cycle::new(&p, &cluster);
        assert_eq!(
            filter(&cycle, cluster.node("a1").unwrap())
                .unwrap_err()
                .reasons,
            vec![REASON]
        );
        assert!(filter(&cycle, cluster.node("b1").unwrap()).is_ok());
        let missing = filter(&cycle, cluster.node("nolabel").unwrap()).unwrap_err();
        assert!(!missing.resolvable);
        assert_eq!(missing.reasons, vec![REASON_MISSING_LABEL]);
    }

    #[test]
    fn soft_constraints_favour_emptier_domains() {
        let mut cluster = ClusterCache::default();
        zoned(&mut cluster, "a1", "a");
        zoned(&mut cluster, "b1", "b");
        for i in 0..3 {
            cluster.assume(
                pod(
                    &format!("w{i}"),
                    "0",
                    json!({"metadata": {"labels": {"app": "web"}}}),
                ),
                "a1",
            );
        }
        let p = spread_pod("new", "ScheduleAnyway");
        let cycle = Cycle::new(&p, &cluster);
        assert!(filter(&cycle, cluster.node("a1").unwrap()).is_ok());
        let mut scores = vec![
            score(&cycle, cluster.node("a1").unwrap()),
            score(&cycle, cluster.node("b1").unwrap()),
        ];
        normalize(&mut scores);
        assert!(scores[1] > scores[0], "{scores:?}");
    }
}
