//! DefaultPreemption: when a pod fits no node, find a node where removing some
//! lower-priority pods would make it fit, with as few and as unimportant victims as
//! possible, preferring victims whose PodDisruptionBudgets allow the disruption.
//!
//! For each node that failed for a reason removing pods can cure, every lower-priority
//! pod is removed; if the pod then fits, victims are given back one by one (the most
//! important first, those protected by a PDB before the others) as long as the pod
//! still fits. The best node has the fewest PDB violations, then the lowest
//! highest-victim priority, then the lowest sum of priorities, then the fewest victims.
//! Pod affinity and topology spread counts are not recomputed without the victims.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::{ClusterCache, NodeInfo, PodInfo};
use crate::plugins::{Cycle, Unfit, filter_node};
use crate::selectors::label_selector_matches;

pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// The node chosen for preemption and the pods to evict from it.
#[derive(Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// Whether the pod may preempt at all: not with `preemptionPolicy: Never`, and not
/// while lower-priority pods on its nominated node are still terminating (the room it
/// asked for is coming).
pub fn eligible(pod: &PodInfo, nominated_node: Option<&str>, cluster: &ClusterCache) -> bool {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return false;
    }
    let Some(node) = nominated_node.and_then(|n| cluster.node(n)) else {
        return true;
    };
    !node
        .pods
        .iter()
        .any(|p| p.priority < pod.priority && p.pod.metadata.deletion_timestamp.is_some())
}

/// Looks for a candidate; on failure returns the preemption part of the message:
/// `preemption: 0/3 nodes are available: 1 No preemption victims ..., 2 Preemption is not helpful ...`.
pub fn find_candidate(cycle: &Cycle, unfit: &[(String, Unfit)]) -> Result<Candidate, String> {
    let cluster = cycle.cluster;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<Candidate> = None;
    for (name, why) in unfit {
        if !why.resolvable {
            *reasons.entry(NOT_HELPFUL.into()).or_default() += 1;
            continue;
        }
        let Some(node) = cluster.node(name) else {
            continue;
        };
        match victims_on(cycle, node) {
            Ok(candidate) => {
                if best.as_ref().is_none_or(|b| better(&candidate, b)) {
                    best = Some(candidate);
                }
            }
            Err(why) => {
                for reason in why {
                    *reasons.entry(reason).or_default() += 1;
                }
            }
        }
    }
    best.ok_or_else(|| {
        let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.sort();
        format!(
            "preemption: 0/{} nodes are available: {}.",
            cluster.node_count(),
            parts.join(", ")
        )
    })
}

/// The fewest victims on `node` that let the pod fit, or why there are none.
fn victims_on(cycle: &Cycle, node: &NodeInfo) -> Result<Candidate, Vec<String>> {
    let preemptor = cycle.pod;
    let mut trial = node.clone();
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < preemptor.priority)
        .cloned()
        .collect();
    if lower.is_empty() {
        return Err(vec![NO_VICTIMS.into()]);
    }
    for pod in &lower {
        trial.remove_pod(&pod.key);
    }
    if let Err(unfit) = filter_node(cycle, &trial) {
        return Err(unfit.reasons);
    }
    // The most important first: higher priority, then the longer running.
    lower.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| start_time(a).cmp(&start_time(b)))
    });
    let (violating, free) = split_by_pdb(cycle.cluster, lower);
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (pod, protected) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(free.into_iter().map(|p| (p, false)))
    {
        trial.add_pod(pod.clone());
        if filter_node(cycle, &trial).is_err() {
            trial.remove_pod(&pod.key);
            pdb_violations += usize::from(protected);
            victims.push(pod);
        }
    }
    Ok(Candidate {
        node: node.name.clone(),
        victims,
        pdb_violations,
    })
}

fn start_time(pod: &PodInfo) -> Option<String> {
    let status = pod.pod.status.as_ref()?;
    Some(format!("{:?}", status.start_time.as_ref()?.0))
}

/// Splits pods into those whose eviction would exceed a PDB's allowed disruptions and
/// the others.
fn split_by_pdb(
    cluster: &ClusterCache,
    pods: Vec<Arc<PodInfo>>,
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<(Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget>, i32)> = cluster
        .pdbs
        .values()
        .map(|pdb| {
            (
                pdb.clone(),
                pdb.status
                    .as_ref()
                    .map(|s| s.disruptions_allowed)
                    .unwrap_or(0),
            )
        })
        .collect();
    let (mut violating, mut free) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        for (pdb, left) in allowed.iter_mut() {
            let same_namespace = pdb.metadata.namespace.as_deref() == Some(pod.namespace.as_str());
            let selector = pdb.spec.as_ref().and_then(|s| s.selector.as_ref());
            if same_namespace && selector.is_some_and(|s| label_selector_matches(s, &pod.labels)) {
                *left -= 1;
                if *left < 0 {
                    violates = true;
                }
            }
        }
        if violates {
            violating.push(pod);
        } else {
            free.push(pod);
        }
    }
    (violating, free)
}

fn better(a: &Candidate, b: &Candidate) -> bool {
    let key = |c: &Candidate| {
        (
            c.pdb_violations,
            c.victims
                .iter()
                .map(|v| v.priority)
                .max()
                .unwrap_or(i32::MIN),
            c.victims.iter().map(|v| v.priority as i64).sum::<i64>(),
            c.victims.len(),
        )
    };
    key(a) < key(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::{node, pod};
    use crate::plugins::find_feasible_nodes;
    use serde_json::json;

    fn prio(name: &str, cpu: &str, priority: i32, app: &str) -> Arc<PodInfo> {
        pod(
            name,
            cpu,
            json!({"metadata": {"labels": {"app": app}}, "spec": {"priority": priority}}),
        )
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let mut cluster = ClusterCache::default();
        cluster.upsert_node(node("a", "2", json!({})));
        cluster.upsert_node(node("b", "2", json!({})));
        cluster.assume(prio("a-low", "1", 1, "x"), "a");
        cluster.assume(prio("a-mid", "1", 5, "x"), "a");
        cluster.assume(prio("b-mid1", "1", 5, "x"), "b");
        cluster.assume(prio("b-mid2", "1", 5, "x"), "b");
        let preemptor = prio("vip", "1", 10, "vip");
        let cycle = Cycle::new(&preemptor, &cluster);
        let filtered = find_feasible_nodes(&cycle, 0);
        assert!(filtered.feasible.is_empty());
        let candidate = find_candidate(&cycle, &filtered.unfit).unwrap();
        assert_eq!(candidate.node, "a");
        let victims: Vec<&str> = candidate.victims.iter().map(|v| v.key.as_str()).collect();
        assert_eq!(victims, vec!["default/a-low"]);
    }

    #[test]
    fn pdb_protected_pods_are_spared_where_possible() {
        let mut cluster = ClusterCache::default();
        cluster.upsert_node(node("a", "1", json!({})));
        cluster.upsert_node(node("b", "1", json!({})));
        cluster.assume(prio("guarded", "1", 1, "guarded"), "a");
        cluster.assume(prio("plain", "1", 1, "plain"), "b");
        let pdb = serde_json::from_value(json!({
            "metadata": {"name": "pdb", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "guarded"}}},
            "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1},
        }))
        .unwrap();
        cluster.pdbs.insert("default/pdb".into(), Arc::new(pdb));
        let preemptor = prio("vip", "1", 10, "vip");
        let cycle = Cycle::new(&preemptor, &cluster);
        let filtered = find_feasible_nodes(&cycle, 0);
        let candidate = find_candidate(&cycle, &filtered.unfit).unwrap();
        assert_eq!(candidate.node, "b");
        assert_eq!(candidate.pdb_violations, 0);
    }

    #[test]
    fn explains_why_preemption_cannot_help() {
        let mut cluster = ClusterCache::default();
        cluster.upsert_node(node("a", "1", json!({})));
        cluster.upsert_node(node(
            "t",
            "8",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ));
        cluster.assume(prio("same", "1", 10, "x"), "a");
        let preemptor = prio("p", "1", 10, "p");
        let cycle = Cycle::new(&preemptor, &cluster);
        let filtered = find_feasible_nodes(&cycle, 0);
        assert_eq!(
            find_candidate(&cycle, &filtered.unfit).unwrap_err(),
            "preemption: 0/2 nodes are available: 1 No preemption victims found for incoming pod, 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn never_policy_and_pending_victims_make_a_pod_ineligible() {
        let mut cluster = ClusterCache::default();
        cluster.upsert_node(node("a", "1", json!({})));
        let never = pod(
            "n",
            "1",
            json!({"spec": {"priority": 10, "preemptionPolicy": "Never"}}),
        );
        assert!(!eligible(&never, None, &cluster));
        cluster.assume(
            pod(
                "dying",
                "1",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            "a",
        );
        let vip = prio("vip", "1", 10, "vip");
        assert!(!eligible(&vip, Some("a"), &cluster));
        assert!(eligible(&vip, None, &cluster));
    }
}
