//! InterPodAffinity: required pod affinity puts a pod in the same topology domain as
//! the pods it names, required anti-affinity keeps it out of theirs, and the existing
//! pods' anti-affinity keeps it out of domains they forbid. Preferred terms (the pod's
//! own and, symmetrically, those of existing pods) add or subtract their weights.
//!
//! A term selects pods in `namespaces`, or in the pod's own namespace; an empty
//! `namespaceSelector` selects every namespace (a non-empty one is treated as the
//! pod's own namespace: the scheduler does not watch namespace labels yet).

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::PodAffinityTerm;

use super::{Cycle, Unfit};
use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::selectors::label_selector_matches;

pub const NAME: &str = "InterPodAffinity";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// What an existing pod's required affinity term adds to a matching pod's score.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

type Domains = HashMap<String, i64>;

/// What InterPodAffinity worked out for one pod.
#[derive(Debug, Default)]
pub struct AffinityState {
    /// Domains (topology key -> values) that existing pods' anti-affinity forbids.
    forbidden: HashMap<String, HashSet<String>>,
    /// Per required affinity term: its key and matching pods per domain.
    affinity: Vec<(String, Domains)>,
    /// Whether no pod at all matches the affinity terms while the pod matches them
    /// itself (the first pod of a group may go anywhere).
    affinity_bootstrap: bool,
    /// Per required anti-affinity term: its key and matching pods per domain.
    anti_affinity: Vec<(String, Domains)>,
    /// Score per topology key and value.
    preferred: HashMap<String, Domains>,
}

/// Whether `term`, written in a pod of `owner_namespace`, selects `candidate`.
pub fn term_matches(term: &PodAffinityTerm, owner_namespace: &str, candidate: &PodInfo) -> bool {
    let Some(selector) = term.label_selector.as_ref() else {
        return false;
    };
    let namespaces = term.namespaces.as_deref().unwrap_or_default();
    let all_namespaces = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
    });
    let namespace_ok = all_namespaces
        || if namespaces.is_empty() {
            candidate.namespace == owner_namespace
        } else {
            namespaces.contains(&candidate.namespace)
        };
    namespace_ok && label_selector_matches(selector, &candidate.labels)
}

/// The pod's (required affinity, required anti-affinity, preferred affinity with
/// weights, preferred anti-affinity with weights) terms.
type Terms<'a> = (
    Vec<&'a PodAffinityTerm>,
    Vec<&'a PodAffinityTerm>,
    Vec<(i64, &'a PodAffinityTerm)>,
    Vec<(i64, &'a PodAffinityTerm)>,
);

fn terms(pod: &PodInfo) -> Terms<'_> {
    let affinity = pod.pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let positive = affinity.and_then(|a| a.pod_affinity.as_ref());
    let negative = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    (
        positive
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .collect(),
        negative
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .collect(),
        positive
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|w| (w.weight as i64, &w.pod_affinity_term))
            .collect(),
        negative
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .map(|w| (w.weight as i64, &w.pod_affinity_term))
            .collect(),
    )
}

impl AffinityState {
    pub fn new(pod: &PodInfo, cluster: &ClusterCache) -> AffinityState {
        let mut state = AffinityState::default();
        if !pod.has_pod_affinity && !cluster.any_pod_affinity() {
            return state;
        }
        let (required, anti, preferred, preferred_anti) = terms(pod);
        state.affinity = required
            .iter()
            .map(|t| (t.topology_key.clone(), Domains::new()))
            .collect();
        state.anti_affinity = anti
            .iter()
            .map(|t| (t.topology_key.clone(), Domains::new()))
            .collect();
        let mut matched_any = false;
        for node in cluster.node_infos() {
            let labels = node.labels();
            let value_of = |key: &str| labels.get(key).cloned();
            for existing in &node.pods {
                // The incoming pod's terms against the existing pod.
                for (term, (_, domains)) in required.iter().zip(state.affinity.iter_mut()) {
                    if term_matches(term, &pod.namespace, existing) {
                        matched_any = true;
                        if let Some(value) = value_of(&term.topology_key) {
                            *domains.entry(value).or_default() += 1;
                        }
                    }
                }
                for (term, (_, domains)) in anti.iter().zip(state.anti_affinity.iter_mut()) {
                    if term_matches(term, &pod.namespace, existing)
                        && let Some(value) = value_of(&term.topology_key)
                    {
                        *domains.entry(value).or_default() += 1;
                    }
                }
                let mut add = |key: &str, weight: i64| {
                    if let Some(value) = value_of(key) {
                        *state
                            .preferred
                            .entry(key.to_string())
                            .or_default()
                            .entry(value)
                            .or_default() += weight;
                    }
                };
                for (weight, term) in &preferred {
                    if term_matches(term, &pod.namespace, existing) {
                        add(&term.topology_key, *weight);
                    }
                }
                for (weight, term) in &preferred_anti {
                    if term_matches(term, &pod.namespace, existing) {
                        add(&term.topology_key, -*weight);
                    }
                }
                if !existing.has_pod_affinity {
                    continue;
                }
                // The existing pod's terms against the incoming pod.
                let (e_required, e_anti, e_preferred, e_preferred_anti) = terms(existing);
                for term in e_anti {
                    if term_matches(term, &existing.namespace, pod)
                        && let Some(value) = value_of(&term.topology_key)
                    {
                        state
                            .forbidden
                            .entry(term.topology_key.clone())
                            .or_default()
                            .insert(value);
                    }
                }
                for term in e_required {
                    if term_matches(term, &existing.namespace, pod) {
                        add(&term.topology_key, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for (weight, term) in e_preferred {
                    if term_matches(term, &existing.namespace, pod) {
                        add(&term.topology_key, weight);
                    }
                }
                for (weight, term) in e_preferred_anti {
                    if term_matches(term, &existing.namespace, pod) {
                        add(&term.topology_key, -weight);
                    }
                }
            }
        }
        state.affinity_bootstrap = !matched_any
            && !required.is_empty()
            && required
                .iter()
                .all(|t| term_matches(t, &pod.namespace, pod));
        state
    }
}

pub fn filter(cycle: &Cycle, node: &NodeInfo) -> Result<(), Unfit> {
    let state = &cycle.affinity;
    let labels = node.labels();
    if !state.affinity_bootstrap {
        let satisfied = state.affinity.iter().all(|(key, domains)| {
            labels
                .get(key)
                .is_some_and(|v| domains.get(v).copied().unwrap_or(0) > 0)
        });
        if !satisfied {
            return Err(Unfit::unresolvable(NAME, REASON_AFFINITY));
        }
    }
    for (key, domains) in &state.anti_affinity {
        if labels
            .get(key)
            .is_some_and(|v| domains.get(v).copied().unwrap_or(0) > 0)
        {
            return Err(Unfit::resolvable(NAME, vec![REASON_ANTI_AFFINITY.into()]));
        }
    }
    for (key, values) in &state.forbidden {
        if labels.get(key).is_some_and(|v| values.contains(v)) {
            return Err(Unfit::resolvable(
                NAME,
                vec![REASON_EXISTING_ANTI_AFFINITY.into()],
            ));
        }
    }
    Ok(())
}

pub fn score(cycle: &Cycle, node: &NodeInfo) -> i64 {
    let labels = node.labels();
    cycle
        .affinity
        .preferred
        .iter()
        .filter_map(|(key, domains)| labels.get(key).and_then(|v| domains.get(v)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use serde_json::{Value, json};

    fn cluster() -> ClusterCache {
        let mut cluster = ClusterCache::default();
        for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
            cluster.upsert_node(node(
                name,
                "4",
                json!({"metadata": {"labels": {"zone": zone}}}),
            ));
        }
        cluster
    }

    fn with_affinity(name: &str, labels: Value, affinity: Value) -> std::sync::Arc<PodInfo> {
        pod(
            name,
            "0",
            json!({"metadata": {"labels": labels}, "spec": {"affinity": affinity}}),
        )
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    #[test]
    fn required_affinity_follows_the_matching_pods_zone() {
        let mut cluster = cluster();
        cluster.assume(
            pod("db", "0", json!({"metadata": {"labels": {"app": "db"}}})),
            "b1",
        );
        let p = with_affinity(
            "web",
            json!({}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
        );
        let cycle = Cycle::new(&p, &cluster);
        assert!(filter(&cycle, cluster.node("b1").unwrap()).is_ok());
        let unfit = filter(&cycle, cluster.node("a1").unwrap()).unwrap_err();
        assert_eq!(
            (unfit.reasons[0].as_str(), unfit.resolvable),
            (REASON_AFFINITY, false)
        );
    }

    #[test]
    fn the_first_pod_of_a_self_affine_group_goes_anywhere() {
        let cluster = cluster();
        let p = with_affinity(
            "web",
            json!({"app": "web"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
        );
        assert!(filter(&Cycle::new(&p, &cluster), cluster.node("a1").unwrap()).is_ok());
    }

    #[test]
    fn anti_affinity_both_ways() {
        let mut cluster = cluster();
        let guard = with_affinity(
            "guard",
            json!({"app": "guard"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}),
        );
        cluster.assume(guard, "a1");
        let web = pod("web", "0", json!({"metadata": {"labels": {"app": "web"}}}));
        let cycle = Cycle::new(&web, &cluster);
        assert_eq!(
            filter(&cycle, cluster.node("a2").unwrap())
                .unwrap_err()
                .reasons,
            vec![REASON_EXISTING_ANTI_AFFINITY]
        );
        assert!(filter(&cycle, cluster.node("b1").unwrap()).is_ok());
        let shy = with_affinity(
            "shy",
            json!({}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("guard", "kubernetes.io/hostname")]}}),
        );
        let cycle = Cycle::new(&shy, &cluster);
        assert_eq!(
            filter(&cycle, cluster.node("a1").unwrap())
                .unwrap_err()
                .reasons,
            vec![REASON_ANTI_AFFINITY]
        );
        assert!(filter(&cycle, cluster.node("a2").unwrap()).is_ok());
    }

    #[test]
    fn preferred_terms_score() {
        let mut cluster = cluster();
        cluster.assume(
            pod(
                "cache",
                "0",
                json!({"metadata": {"labels": {"app": "cache"}}}),
            ),
            "a1",
        );
        let p = with_affinity(
            "web",
            json!({}),
            json!({"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("cache", "zone")}]}}),
        );
        let cycle = Cycle::new(&p, &cluster);
        assert_eq!(score(&cycle, cluster.node("a2").unwrap()), 10);
        assert_eq!(score(&cycle, cluster.node("b1").unwrap()), 0);
    }
}
