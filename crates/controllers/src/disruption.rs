//! The disruption controller, as upstream's (pkg/controller/disruption): keeps the
//! status of every PodDisruptionBudget current, which the `pods/eviction` subresource
//! reads to decide whether a pod may go.
//!
//! For each budget: the pods it selects in its namespace (an empty selector selects
//! all of them), how many of them are healthy (Ready, not terminating, and not
//! recently evicted: `status.disruptedPods`), how many must stay healthy
//! (`minAvailable`, or the expected count less `maxUnavailable`; percentages and
//! `maxUnavailable` are taken of the scale of the pods' controllers), and so how many
//! disruptions are allowed now, with the `DisruptionAllowed` condition. Evictions the
//! controller has not seen delete their pod for two minutes ([`DELETION_TIMEOUT`]) at
//! most; after that the pod counts again.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workload::{is_pod_ready, to_chrono, to_time};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// How long an eviction recorded in `disruptedPods` counts before the pod must be gone.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the controller on the shared caches and runs it until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        budgets: caches.get(),
        pods: caches.get(),
        replica_sets: caches.get(),
        deployments: caches.get(),
        controllers: caches.get(),
        stateful_sets: caches.get(),
        client: caches.client().clone(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        controller.budgets.subscribe(),
        queue.clone(),
        |change: &Change<PodDisruptionBudget>| vec![ObjectKey::of(change.object().as_ref())],
    ));
    // Pods and the scale of their controllers concern every budget of their namespace.
    let budgets = controller.budgets.clone();
    tokio::spawn(forward(controller.pods.subscribe(), queue.clone(), {
        let budgets = budgets.clone();
        move |change: &Change<Pod>| {
            budgets_in(&budgets, change.object().metadata.namespace.as_deref())
        }
    }));
    macro_rules! scale_source {
        ($cache:expr, $kind:ty) => {
            tokio::spawn(forward($cache.subscribe(), queue.clone(), {
                let budgets = budgets.clone();
                move |change: &Change<$kind>| {
                    budgets_in(&budgets, change.object().metadata.namespace.as_deref())
                }
            }));
        };
    }
    scale_source!(controller.replica_sets, ReplicaSet);
    scale_source!(controller.deployments, Deployment);
    scale_source!(controller.controllers, ReplicationController);
    scale_source!(controller.stateful_sets, StatefulSet);
    controller.budgets.wait_synced().await;
    controller.pods.wait_synced().await;
    run_workers("disruption", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

fn budgets_in(budgets: &Cache<PodDisruptionBudget>, namespace: Option<&str>) -> Vec<ObjectKey> {
    budgets
        .list_namespace(namespace.unwrap_or(""))
        .iter()
        .map(|budget| ObjectKey::of(budget.as_ref()))
        .collect()
}

struct Controller {
    budgets: Arc<Cache<PodDisruptionBudget>>,
    pods: Arc<Cache<Pod>>,
    replica_sets: Arc<Cache<ReplicaSet>>,
    deployments: Arc<Cache<Deployment>>,
    controllers: Arc<Cache<ReplicationController>>,
    stateful_sets: Arc<Cache<StatefulSet>>,
    client: kube::Client,
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(budget) = self.budgets.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        let pods = self.selected_pods(&budget);
        let now = Utc::now();
        let status = match self.expected_and_desired(&budget, &pods) {
            Ok((expected, desired)) => compute_status(&budget, &pods, expected, desired, now),
            Err(why) => fail_safe_status(&budget, &why, now),
        };
        let recheck = next_recheck(&status, now);
        if budget.status.as_ref() != Some(&status.status) {
            let mut updated = (*budget).clone();
            updated.status = Some(status.status);
            let api: Api<PodDisruptionBudget> =
                Api::namespaced(self.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &updated)
                .await?;
        }
        Ok(match recheck {
            Some(after) => Outcome::RequeueAfter(after),
            None => Outcome::Done,
        })
    }

    fn selected_pods(&self, budget: &PodDisruptionBudget) -> Vec<Arc<Pod>> {
        let selector = serde_json::to_value(budget.spec.as_ref().and_then(|s| s.selector.clone()))
            .unwrap_or(Value::Null);
        let Ok(selector) = krust_api::selector::LabelSelector::from_json(&selector) else {
            return Vec::new();
        };
        let namespace = budget.metadata.namespace.as_deref().unwrap_or("");
        self.pods
            .list_namespace(namespace)
            .into_iter()
            .filter(|pod| {
                let labels = crate::workload::label_values(pod.metadata.labels.iter().flatten());
                selector.matches(Some(&labels))
            })
            .collect()
    }

    /// The expected number of pods and how many must be healthy, as upstream's
    /// getExpectedPodCount; an error when a needed controller scale is unknown.
    fn expected_and_desired(
        &self,
        budget: &PodDisruptionBudget,
        pods: &[Arc<Pod>],
    ) -> Result<(i32, i32), String> {
        let spec = budget.spec.clone().unwrap_or_default();
        if let Some(max_unavailable) = &spec.max_unavailable {
            let expected = self.expected_scale(pods)?;
            let unavailable = scaled(max_unavailable, expected)?;
            return Ok((expected, (expected - unavailable).max(0)));
        }
        match &spec.min_available {
            Some(IntOrString::Int(min)) => Ok((pods.len() as i32, *min)),
            Some(percent @ IntOrString::String(_)) => {
                let expected = self.expected_scale(pods)?;
                Ok((expected, scaled(percent, expected)?))
            }
            None => Ok((pods.len() as i32, 0)),
        }
    }

    /// The sum of the scales of the controllers of `pods`, each counted once.
    fn expected_scale(&self, pods: &[Arc<Pod>]) -> Result<i32, String> {
        let mut counted: HashSet<String> = HashSet::new();
        let mut expected = 0;
        for pod in pods {
            let name = pod.metadata.name.as_deref().unwrap_or("");
            let namespace = pod.metadata.namespace.as_deref().unwrap_or("");
            let owner = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|r| r.controller == Some(true))
                .ok_or_else(|| format!("found no controller ref for pod {name:?}"))?;
            let (uid, replicas) = self
                .scale_of(namespace, &owner.kind, &owner.name, &owner.uid)
                .ok_or_else(|| format!("found no controllers for pod {name:?}"))?;
            if counted.insert(uid) {
                expected += replicas;
            }
        }
        Ok(expected)
    }

    /// The uid and desired replicas of a controller of pods (a ReplicaSet's
    /// Deployment when it has one), when it is known and matches `uid`.
    fn scale_of(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        uid: &str,
    ) -> Option<(String, i32)> {
        fn checked(meta_uid: Option<&String>, uid: &str) -> Option<String> {
            meta_uid.filter(|u| u.as_str() == uid).cloned()
        }
        match kind {
            "ReplicaSet" => {
                let set = self.replica_sets.get(namespace, name)?;
                let set_uid = checked(set.metadata.uid.as_ref(), uid)?;
                let deployment = set
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .find(|r| r.controller == Some(true) && r.kind == "Deployment");
                if let Some(owner) = deployment {
                    return self.scale_of(namespace, "Deployment", &owner.name, &owner.uid);
                }
                Some((set_uid, set.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            "Deployment" => {
                let deployment = self.deployments.get(namespace, name)?;
                let uid = checked(deployment.metadata.uid.as_ref(), uid)?;
                Some((uid, deployment.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            "ReplicationController" => {
                let controller = self.controllers.get(namespace, name)?;
                let uid = checked(controller.metadata.uid.as_ref(), uid)?;
                Some((uid, controller.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            "StatefulSet" => {
                let set = self.stateful_sets.get(namespace, name)?;
                let uid = checked(set.metadata.uid.as_ref(), uid)?;
                Some((uid, set.spec.as_ref()?.replicas.unwrap_or(1)))
            }
            _ => None,
        }
    }
}

/// An int, or a percentage of `total` rounded up (upstream's
/// GetScaledValueFromIntOrPercent with roundUp).
fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((percent * i64::from(total)) as f64 / 100.0).ceil() as i32)
        }
    }
}

/// A computed status and the evictions still pending in it.
struct ComputedStatus {
    status: PodDisruptionBudgetStatus,
}

fn compute_status(
    budget: &PodDisruptionBudget,
    pods: &[Arc<Pod>],
    expected: i32,
    desired: i32,
    now: DateTime<Utc>,
) -> ComputedStatus {
    let recorded = budget
        .status
        .as_ref()
        .and_then(|s| s.disrupted_pods.clone())
        .unwrap_or_default();
    // Evictions still in flight: their pod exists, is not yet terminating, and the
    // eviction is recent.
    let mut disrupted: BTreeMap<String, Time> = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(at) = recorded.get(&name)
            && to_chrono(at) + DELETION_TIMEOUT > now
        {
            disrupted.insert(name, at.clone());
        }
    }
    let healthy = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| !disrupted.contains_key(pod.metadata.name.as_deref().unwrap_or("")))
        .filter(|pod| is_pod_ready(pod))
        .count() as i32;
    let mut allowed = healthy - desired;
    if expected <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let (status, reason) = match allowed > 0 {
        true => ("True", "SufficientPods"),
        false => ("False", "InsufficientPods"),
    };
    let status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: budget.metadata.generation,
        conditions: Some(vec![condition(budget, status, reason, "", now)]),
    };
    ComputedStatus { status }
}

/// Upstream's failSafe: no disruption allowed while the budget cannot be computed.
fn fail_safe_status(budget: &PodDisruptionBudget, why: &str, now: DateTime<Utc>) -> ComputedStatus {
    let mut status = budget.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    status.observed_generation = budget.metadata.generation;
    status.conditions = Some(vec![condition(budget, "False", "SyncFailed", why, now)]);
    ComputedStatus { status }
}

/// The DisruptionAllowed condition, keeping its transition time while its status
/// does not change.
fn condition(
    budget: &PodDisruptionBudget,
    status: &str,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Condition {
    let previous = budget
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => to_time(now),
    };
    Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: budget.metadata.generation,
        last_transition_time,
    }
}

/// When the earliest recorded eviction expires (the pod then counts again).
fn next_recheck(status: &ComputedStatus, now: DateTime<Utc>) -> Option<Duration> {
    status
        .status
        .disrupted_pods
        .iter()
        .flatten()
        .map(|(_, at)| to_chrono(at) + DELETION_TIMEOUT - now)
        .min()
        .map(|left| left.to_std().unwrap_or(Duration::ZERO) + Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;

    fn pod(name: &str, ready: bool) -> Arc<Pod> {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.into());
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(pod)
    }

    fn budget(min_available: IntOrString) -> PodDisruptionBudget {
        let mut budget = PodDisruptionBudget::default();
        budget.metadata.generation = Some(3);
        budget.spec = Some(PodDisruptionBudgetSpec {
            min_available: Some(min_available),
            ..Default::default()
        });
        budget
    }

    #[test]
    fn allowed_disruptions_are_healthy_pods_beyond_the_desired_count() {
        let pods = [pod("a", true), pod("b", true), pod("c", false)];
        let computed = compute_status(&budget(IntOrString::Int(1)), &pods, 3, 1, Utc::now());
        let status = computed.status;
        assert_eq!((status.current_healthy, status.desired_healthy), (2, 1));
        assert_eq!((status.expected_pods, status.disruptions_allowed), (3, 1));
        assert_eq!(status.observed_generation, Some(3));
        let condition = &status.conditions.unwrap()[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("True", "SufficientPods")
        );
    }

    #[test]
    fn recently_evicted_pods_do_not_count_until_they_expire() {
        let now = Utc::now();
        let mut budget = budget(IntOrString::Int(1));
        budget.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                (
                    "a".to_string(),
                    to_time(now - chrono::Duration::seconds(10)),
                ),
                (
                    "b".to_string(),
                    to_time(now - chrono::Duration::seconds(300)),
                ),
                ("gone".to_string(), to_time(now)),
            ])),
            ..Default::default()
        });
        let pods = [pod("a", true), pod("b", true)];
        let computed = compute_status(&budget, &pods, 2, 1, now);
        assert_eq!(computed.status.current_healthy, 1);
        assert_eq!(computed.status.disruptions_allowed, 0);
        let kept: Vec<_> = computed
            .status
            .disrupted_pods
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(kept, ["a"]);
        let recheck = next_recheck(&computed, now).unwrap();
        assert!(
            recheck > Duration::from_secs(100) && recheck < Duration::from_secs(115),
            "{recheck:?}"
        );
    }

    #[test]
    fn no_expected_pods_allow_no_disruption() {
        let computed = compute_status(&budget(IntOrString::Int(0)), &[], 0, 0, Utc::now());
        assert_eq!(computed.status.disruptions_allowed, 0);
        assert_eq!(
            computed.status.conditions.unwrap()[0].reason,
            "InsufficientPods"
        );
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Ok(2));
        assert_eq!(scaled(&IntOrString::String("10%".into()), 10), Ok(1));
        assert_eq!(scaled(&IntOrString::Int(4), 10), Ok(4));
        assert!(scaled(&IntOrString::String("half".into()), 10).is_err());
    }
}
