//! The replica calculator, as upstream's `replica_calculator.go`: from the pods a
//! target selects, their resource requests and their metrics, the replica count that
//! brings one resource metric to its target. Pure: the caller lists the pods and
//! fetches the metrics; nothing here does I/O or reads the clock.
//!
//! The rules are upstream's:
//! - pods being deleted and Failed pods do not count at all;
//! - Pending pods, and (for cpu) pods not yet Ready or whose sample may still come
//!   from before they became Ready, are *unready*: ignored, except that on a scale-up
//!   they count as using nothing;
//! - pods without a metric are *missing*: they count as using 100% of their request
//!   (AverageValue: the target) on a scale-down and nothing on a scale-up;
//! - a usage ratio within the tolerance of 1 changes nothing, and neither does an
//!   assumption that would turn a scale-up into a scale-down or back;
//! - otherwise the proposal is `ceil(usageRatio * pods counted)`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The usage ratio within which nothing changes (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;
/// How long after a pod started its cpu samples may still be from its start-up
/// (`--horizontal-pod-autoscaler-cpu-initialization-period`).
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// How long after a pod started a not-Ready pod is taken as still starting
/// (`--horizontal-pod-autoscaler-initial-readiness-delay`).
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod's usage of the resource (milli-units: millicores, or milli-bytes), and
/// the sample it comes from.
#[derive(Clone, Debug, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: Duration,
}

/// Usage per pod name.
pub type PodMetrics = HashMap<String, PodMetric>;

/// What the metric aims at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// A percentage of the pods' requests (`averageUtilization`).
    Utilization(i32),
    /// A usage per pod in milli-units (`averageValue`).
    AverageValue(i64),
}

/// A proposal for one metric, with what was measured (for `currentMetrics`).
#[derive(Clone, Debug, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// The pods' usage as a percentage of their requests (Utilization targets).
    pub utilization: Option<i32>,
    /// The average usage per pod, in milli-units.
    pub average_value: i64,
}

/// The calculator's settings (upstream's flags).
#[derive(Clone, Debug)]
pub struct Calculator {
    pub tolerance: f64,
    pub cpu_initialization_period: Duration,
    pub initial_readiness_delay: Duration,
}

impl Default for Calculator {
    fn default() -> Self {
        Calculator {
            tolerance: TOLERANCE,
            cpu_initialization_period: CPU_INITIALIZATION_PERIOD,
            initial_readiness_delay: INITIAL_READINESS_DELAY,
        }
    }
}

/// What a metric measures: a resource (`cpu`, `memory`) of every container of a
/// pod, or of one container only (ContainerResource).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured<'a> {
    pub resource: &'a str,
    pub container: Option<&'a str>,
}

/// The pods the calculation sees, by how they count.
#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: HashSet<String>,
    missing: HashSet<String>,
    /// Deleted or Failed: left out entirely.
    ignored: HashSet<String>,
}

impl Calculator {
    /// The replicas for a Resource or ContainerResource metric.
    pub fn resource_replicas(
        &self,
        current_replicas: i32,
        target: Target,
        measured: Measured<'_>,
        pods: &[&Pod],
        mut metrics: PodMetrics,
        now: Timestamp,
    ) -> Result<Proposal, String> {
        if pods.is_empty() {
            return Err("no pods returned by selector while calculating replica count".into());
        }
        let Measured {
            resource,
            container,
        } = measured;
        let groups = self.group_pods(pods, &metrics, resource, now);
        for name in groups.ignored.iter().chain(&groups.unready) {
            metrics.remove(name);
        }
        if metrics.is_empty() {
            return Err("did not receive metrics for targeted pods (pods might be unready)".into());
        }
        match target {
            Target::Utilization(target) => {
                let requests = requests(pods, resource, container)?;
                self.utilization_replicas(current_replicas, target, &groups, metrics, &requests)
            }
            Target::AverageValue(target) => {
                Ok(self.average_value_replicas(current_replicas, target, &groups, metrics))
            }
        }
    }

    fn utilization_replicas(
        &self,
        current_replicas: i32,
        target: i32,
        groups: &Groups,
        mut metrics: PodMetrics,
        requests: &HashMap<String, i64>,
    ) -> Result<Proposal, String> {
        let (usage_ratio, utilization, average_value) =
            utilization_ratio(&metrics, requests, target)?;
        let proposal = |replicas| Proposal {
            replicas,
            utilization: Some(utilization),
            average_value,
        };
        let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
        if !scale_up_with_unready && groups.missing.is_empty() {
            if self.within_tolerance(usage_ratio) {
                return Ok(proposal(current_replicas));
            }
            return Ok(proposal(ceil(usage_ratio * groups.ready as f64)));
        }
        for name in &groups.missing {
            // At exactly the target, missing pods change nothing either way.
            let assumed = if usage_ratio < 1.0 {
                requests.get(name).copied().unwrap_or(0)
            } else if usage_ratio > 1.0 {
                0
            } else {
                continue;
            };
            metrics.insert(name.clone(), assumed_metric(assumed));
        }
        if scale_up_with_unready {
            for name in &groups.unready {
                metrics.insert(name.clone(), assumed_metric(0));
            }
        }
        let (new_ratio, _, _) = utilization_ratio(&metrics, requests, target)?;
        if self.within_tolerance(new_ratio) || direction_flips(usage_ratio, new_ratio) {
            return Ok(proposal(current_replicas));
        }
        let replicas = ceil(new_ratio * metrics.len() as f64);
        if (new_ratio < 1.0 && replicas > current_replicas)
            || (new_ratio > 1.0 && replicas < current_replicas)
        {
            return Ok(proposal(current_replicas));
        }
        Ok(proposal(replicas))
    }

    fn average_value_replicas(
        &self,
        current_replicas: i32,
        target: i64,
        groups: &Groups,
        mut metrics: PodMetrics,
    ) -> Proposal {
        let (usage_ratio, average_value) = average_usage_ratio(&metrics, target);
        let proposal = |replicas| Proposal {
            replicas,
            utilization: None,
            average_value,
        };
        let scale_up_with_unready = !groups.unready.is_empty() && usage_ratio > 1.0;
        if !scale_up_with_unready && groups.missing.is_empty() {
            if self.within_tolerance(usage_ratio) {
                return proposal(current_replicas);
            }
            return proposal(ceil(usage_ratio * groups.ready as f64));
        }
        for name in &groups.missing {
            let assumed = if usage_ratio < 1.0 { target } else { 0 };
            metrics.insert(name.clone(), assumed_metric(assumed));
        }
        if scale_up_with_unready {
            for name in &groups.unready {
                metrics.insert(name.clone(), assumed_metric(0));
            }
        }
        let (new_ratio, _) = average_usage_ratio(&metrics, target);
        if self.within_tolerance(new_ratio) || direction_flips(usage_ratio, new_ratio) {
            return proposal(current_replicas);
        }
        proposal(ceil(new_ratio * metrics.len() as f64))
    }

    fn within_tolerance(&self, usage_ratio: f64) -> bool {
        (1.0 - usage_ratio).abs() <= self.tolerance
    }

    /// Upstream's `groupPods`.
    fn group_pods(
        &self,
        pods: &[&Pod],
        metrics: &PodMetrics,
        resource: &str,
        now: Timestamp,
    ) -> Groups {
        let mut groups = Groups::default();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.as_ref();
            let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
            if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
                groups.ignored.insert(name);
                continue;
            }
            if phase == "Pending" {
                groups.unready.insert(name);
                continue;
            }
            let Some(metric) = metrics.get(&name) else {
                groups.missing.insert(name);
                continue;
            };
            if resource == "cpu" && self.cpu_sample_unready(pod, metric, now) {
                groups.unready.insert(name);
                continue;
            }
            groups.ready += 1;
        }
        groups
    }

    /// Whether a pod's cpu sample is not to be trusted: the pod is not Ready yet, or
    /// (within the initialization period) the sample may predate its readiness.
    fn cpu_sample_unready(&self, pod: &Pod, metric: &PodMetric, now: Timestamp) -> bool {
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"));
        let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let (Some(ready), Some(start)) = (ready, start) else {
            return true;
        };
        let transition = ready
            .last_transition_time
            .as_ref()
            .map_or(start, |time| time.0);
        let not_ready = ready.status == "False";
        if start + signed(self.cpu_initialization_period) > now {
            not_ready || metric.timestamp < transition + signed(metric.window)
        } else {
            not_ready && start + signed(self.initial_readiness_delay) > transition
        }
    }
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

fn assumed_metric(value: i64) -> PodMetric {
    PodMetric {
        value,
        timestamp: Timestamp::UNIX_EPOCH,
        window: Duration::ZERO,
    }
}

fn ceil(value: f64) -> i32 {
    value.ceil().clamp(0.0, i32::MAX as f64) as i32
}

/// Whether the assumptions about missing and unready pods turned a scale-up into a
/// scale-down or back.
fn direction_flips(before: f64, after: f64) -> bool {
    (before < 1.0 && after > 1.0) || (before > 1.0 && after < 1.0)
}

/// The pods' summed requests of `resource` (milli-units) per pod name: of every
/// container and restartable (sidecar) init container, or only of `container`. A
/// container without a request for it is an error, as the utilization would mean
/// nothing.
pub fn requests(
    pods: &[&Pod],
    resource: &str,
    container: Option<&str>,
) -> Result<HashMap<String, i64>, String> {
    let mut requests = HashMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = pod.spec.as_ref() else {
            continue;
        };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut sum = 0i64;
        for candidate in spec.containers.iter().chain(sidecars) {
            if container.is_some_and(|wanted| wanted != candidate.name) {
                continue;
            }
            match request_of(candidate, resource) {
                Some(milli) => sum += milli,
                None => {
                    return Err(format!(
                        "missing request for {resource} in container {} of Pod {name}",
                        candidate.name
                    ));
                }
            }
        }
        requests.insert(name, sum);
    }
    Ok(requests)
}

fn request_of(container: &Container, resource: &str) -> Option<i64> {
    let quantity = container
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get(resource)?;
    milli_value(&quantity.0)
}

/// A quantity in milli-units, rounded up as upstream's `MilliValue`.
pub fn milli_value(quantity: &str) -> Option<i64> {
    let nanos = krust_api::table::quantity_nanos(quantity)?;
    i64::try_from((nanos + 999_999).div_euclid(1_000_000)).ok()
}

/// Upstream's `GetResourceUtilizationRatio`: usage over requests of the pods that
/// have both, as a ratio to the target, the integer percentage, and the average
/// usage per pod.
fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &HashMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let mut usage = 0i64;
    let mut requested = 0i64;
    let mut counted = 0i64;
    for (name, metric) in metrics {
        let Some(request) = requests.get(name) else {
            continue;
        };
        usage += metric.value;
        requested += request;
        counted += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".into());
    }
    let utilization = i32::try_from(usage * 100 / requested).unwrap_or(i32::MAX);
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        usage / counted,
    ))
}

/// Upstream's `GetMetricUsageRatio`: the average usage per pod as a ratio to the
/// target, and that average.
fn average_usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i64 = metrics.values().map(|m| m.value).sum();
    let average = total / (metrics.len().max(1) as i64);
    (average as f64 / target.max(1) as f64, average)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-01-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn ago(seconds: i64) -> String {
        (now() - SignedDuration::from_secs(seconds)).to_string()
    }

    /// A Running pod that started `started` seconds ago and became Ready
    /// `ready_since` seconds ago (None: not Ready), requesting `cpu`.
    fn pod(name: &str, cpu: &str, started: i64, ready_since: Option<i64>) -> Pod {
        let ready = match ready_since {
            Some(since) => {
                json!({"type": "Ready", "status": "True", "lastTransitionTime": ago(since)})
            }
            None => json!({"type": "Ready", "status": "False", "lastTransitionTime": ago(started)}),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running", "startTime": ago(started), "conditions": [ready]},
        }))
        .unwrap()
    }

    fn ready_pod(name: &str) -> Pod {
        pod(name, "100m", 3600, Some(3600))
    }

    fn with_phase(mut pod: Pod, phase: &str) -> Pod {
        pod.status.as_mut().unwrap().phase = Some(phase.into());
        pod
    }

    fn metric(value: i64) -> PodMetric {
        PodMetric {
            value,
            timestamp: now(),
            window: Duration::from_secs(5),
        }
    }

    fn metrics(values: &[(&str, i64)]) -> PodMetrics {
        values
            .iter()
            .map(|(name, value)| (name.to_string(), metric(*value)))
            .collect()
    }

    fn cpu(
        current: i32,
        target: Target,
        pods: &[Pod],
        metrics: PodMetrics,
    ) -> Result<Proposal, String> {
        let pods: Vec<&Pod> = pods.iter().collect();
        Calculator::default().resource_replicas(
            current,
            target,
            Measured {
                resource: "cpu",
                container: None,
            },
            &pods,
            metrics,
            now(),
        )
    }

    #[test]
    fn scales_up_by_the_usage_ratio() {
        let pods = [ready_pod("a"), ready_pod("b")];
        // 90m and 110m of 100m requests: 100% against a 50% target.
        let proposal = cpu(
            2,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 90), ("b", 110)]),
        )
        .unwrap();
        assert_eq!(
            proposal,
            Proposal {
                replicas: 4,
                utilization: Some(100),
                average_value: 100
            }
        );
    }

    #[test]
    fn scales_down_and_rounds_up() {
        let pods = [ready_pod("a"), ready_pod("b"), ready_pod("c")];
        let proposal = cpu(
            3,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 10), ("b", 10), ("c", 10)]),
        )
        .unwrap();
        // 10% of a 50% target: ceil(0.2 * 3) = 1.
        assert_eq!(proposal.replicas, 1);
        assert_eq!(proposal.utilization, Some(10));
    }

    #[test]
    fn a_change_within_the_tolerance_keeps_the_count() {
        let pods = [ready_pod("a"), ready_pod("b")];
        // 54% against 50%: ratio 1.08, inside 10%.
        let proposal = cpu(
            2,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 54), ("b", 54)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 2);
        // 56%: ratio 1.12, outside.
        let proposal = cpu(
            2,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 56), ("b", 56)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 3);
    }

    #[test]
    fn missing_pods_count_as_idle_on_a_scale_up_and_full_on_a_scale_down() {
        let pods = [
            ready_pod("a"),
            ready_pod("b"),
            ready_pod("c"),
            ready_pod("d"),
        ];
        // Scale-up: a and b at 100% (target 50%); c and d missing count as 0%, so
        // the average is 50%: no change.
        let proposal = cpu(
            4,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 100), ("b", 100)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 4);
        // a and b at 150%: with c, d at 0% the average is 75%: ceil(1.5 * 4) = 6.
        let proposal = cpu(
            4,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 150), ("b", 150)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 6);
        // Scale-down: a and b at 10%; c and d count as 100% of their request, so the
        // average is 55%, above a 50% target: the assumption flips the direction,
        // so nothing changes.
        let proposal = cpu(
            4,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 10), ("b", 10)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 4);
        // Against a 90% target the same is a ratio of 0.61: ceil(0.61 * 4) = 3.
        let proposal = cpu(
            4,
            Target::Utilization(90),
            &pods,
            metrics(&[("a", 10), ("b", 10)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 3);
    }

    #[test]
    fn unready_pods_are_ignored_except_as_idle_on_a_scale_up() {
        let pods = [
            ready_pod("a"),
            ready_pod("b"),
            pod("starting", "100m", 20, None),
            with_phase(ready_pod("pending"), "Pending"),
        ];
        // Scale-up: a and b at 200% (target 50%), the two unready at 0%: average
        // 100%, ratio 2 over 4 pods = 8.
        let proposal = cpu(
            4,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 200), ("b", 200), ("starting", 900)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 8);
        assert_eq!(
            proposal.utilization,
            Some(200),
            "the reported utilization is of ready pods"
        );
        // Scale-down: the unready are left out: 10% over the 2 ready pods = 1.
        let proposal = cpu(
            4,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 10), ("b", 10), ("starting", 900)]),
        )
        .unwrap();
        assert_eq!(proposal.replicas, 1);
    }

    #[test]
    fn a_sample_from_before_readiness_is_unready_during_initialization() {
        // Started 60 s ago, Ready 2 s ago: a 5 s sample taken now may still cover the
        // time before it was Ready.
        let fresh = pod("fresh", "100m", 60, Some(2));
        let groups =
            Calculator::default().group_pods(&[&fresh], &metrics(&[("fresh", 50)]), "cpu", now());
        assert!(groups.unready.contains("fresh"));
        // Ready 10 s ago: the sample is after readiness plus its window.
        let settled = pod("settled", "100m", 60, Some(10));
        let groups = Calculator::default().group_pods(
            &[&settled],
            &metrics(&[("settled", 50)]),
            "cpu",
            now(),
        );
        assert_eq!(groups.ready, 1);
        // Memory samples are always trusted.
        let groups = Calculator::default().group_pods(
            &[&fresh],
            &metrics(&[("fresh", 50)]),
            "memory",
            now(),
        );
        assert_eq!(groups.ready, 1);
        // Long past initialization, a pod that went unready after being Ready counts.
        let mut flapping = pod("flapping", "100m", 3600, None);
        flapping
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            now() - SignedDuration::from_secs(60),
        ));
        let groups = Calculator::default().group_pods(
            &[&flapping],
            &metrics(&[("flapping", 50)]),
            "cpu",
            now(),
        );
        assert_eq!(groups.ready, 1);
    }

    #[test]
    fn deleted_and_failed_pods_do_not_count() {
        let mut deleting = ready_pod("deleting");
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now()));
        let pods = [
            ready_pod("a"),
            deleting,
            with_phase(ready_pod("failed"), "Failed"),
        ];
        let proposal = cpu(
            3,
            Target::Utilization(50),
            &pods,
            metrics(&[("a", 100), ("deleting", 0), ("failed", 0)]),
        )
        .unwrap();
        // Only a: 100% of 50% = 2 (a deleted pod is not a missing one).
        assert_eq!(proposal.replicas, 2);
    }

    #[test]
    fn a_missing_request_is_an_error() {
        let mut pod = ready_pod("a");
        pod.spec.as_mut().unwrap().containers[0].resources = None;
        let error = cpu(1, Target::Utilization(50), &[pod], metrics(&[("a", 100)])).unwrap_err();
        assert_eq!(error, "missing request for cpu in container app of Pod a");
    }

    #[test]
    fn no_pods_or_no_metrics_is_an_error() {
        assert!(
            cpu(1, Target::Utilization(50), &[], metrics(&[]))
                .unwrap_err()
                .contains("no pods")
        );
        let error = cpu(
            1,
            Target::Utilization(50),
            &[pod("s", "100m", 10, None)],
            metrics(&[]),
        )
        .unwrap_err();
        assert!(error.contains("did not receive metrics"), "{error}");
    }

    #[test]
    fn average_value_targets_use_the_usage_per_pod() {
        let pods = [ready_pod("a"), ready_pod("b")];
        // 300m per pod against 100m: 3 * 2 = 6.
        let proposal = cpu(
            2,
            Target::AverageValue(100),
            &pods,
            metrics(&[("a", 300), ("b", 300)]),
        )
        .unwrap();
        assert_eq!(
            proposal,
            Proposal {
                replicas: 6,
                utilization: None,
                average_value: 300
            }
        );
        // A missing pod on a scale-down counts as at the target.
        let pods = [ready_pod("a"), ready_pod("b"), ready_pod("c")];
        let proposal = cpu(
            3,
            Target::AverageValue(100),
            &pods,
            metrics(&[("a", 10), ("b", 10)]),
        )
        .unwrap();
        // (10 + 10 + 100) / 3 = 40 per pod: ceil(0.4 * 3) = 2.
        assert_eq!(proposal.replicas, 2);
    }

    #[test]
    fn container_resources_count_one_container() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "sidecar"},
            ]},
        }))
        .unwrap();
        assert_eq!(requests(&[&pod], "cpu", Some("app")).unwrap()["a"], 200);
        assert!(
            requests(&[&pod], "cpu", None)
                .unwrap_err()
                .contains("container sidecar")
        );
    }

    #[test]
    fn quantities_in_milli_units() {
        assert_eq!(milli_value("250m"), Some(250));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("1500000n"), Some(2));
        assert_eq!(milli_value("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli_value("lots"), None);
    }
}
