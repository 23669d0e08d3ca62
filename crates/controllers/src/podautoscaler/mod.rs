//! The horizontal pod autoscaler controller, as upstream's
//! (pkg/controller/podautoscaler/horizontal.go): every sync period ([`Settings`], 15 s
//! by default), and when an HPA's spec
//! changes, it reads the target's size through its `scale` subresource, the usage of
//! the pods the scale's selector picks from metrics.k8s.io (PodMetrics, which the
//! API server computes from the kubelets' stats), proposes a size per metric
//! ([`replicas`]), takes the largest, passes it through the behavior's
//! stabilization windows, rate policies and the replica bounds ([`behavior`]), and
//! writes it back to the scale subresource. What it saw and did goes into the HPA's
//! status (current and desired replicas, current metrics, the conditions
//! AbleToScale, ScalingActive and ScalingLimited) and into Events.
//!
//! Resource and ContainerResource metrics are served; Pods, Object and External
//! metrics need a custom or external metrics API, which this cluster does not have,
//! and are reported as failed metrics.

pub mod behavior;
pub mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricStatus, HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition,
    HorizontalPodAutoscalerStatus, MetricSpec, MetricStatus, MetricValueStatus,
    ResourceMetricStatus,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use krust_events::EventType;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::json;

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::replicaset::events::Events;
use crate::workqueue::{Outcome, WorkQueue, run_workers};
use behavior::{Behavior, Bounds, History};
use replicas::{Calculator, PodMetric, PodMetrics, Proposal, Target};

/// How often every HPA is synced (`--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// The name the controller's Events are reported under.
const COMPONENT: &str = "horizontal-pod-autoscaler";

/// The controller's settings: upstream's `--horizontal-pod-autoscaler-*` flags.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often every HPA is synced.
    pub sync_period: Duration,
    /// The scale-down stabilization window of HPAs without a `behavior`.
    pub downscale_stabilization: Duration,
    /// Tolerance, CPU initialization period and initial readiness delay.
    pub calculator: Calculator,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_period: SYNC_PERIOD,
            downscale_stabilization: behavior::DEFAULT_SCALE_DOWN_WINDOW,
            calculator: Calculator::default(),
        }
    }
}

/// Starts the controller on the shared caches and runs it until the process ends.
pub async fn run(caches: Caches, settings: Settings) -> anyhow::Result<()> {
    let autoscalers: Arc<Cache<HorizontalPodAutoscaler>> = caches.get();
    let pods: Arc<Cache<Pod>> = caches.get();
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    // An HPA is looked at when it is new, its spec changed (its status then lags its
    // generation: not on this controller's own status writes) or it is gone, and
    // on every sync period.
    tokio::spawn(forward(
        autoscalers.subscribe(),
        queue.clone(),
        |change: &Change<HorizontalPodAutoscaler>| {
            let autoscaler = change.object();
            let observed = autoscaler
                .status
                .as_ref()
                .and_then(|s| s.observed_generation);
            match change {
                Change::Applied(_) if observed == autoscaler.metadata.generation => Vec::new(),
                _ => vec![ObjectKey::of(autoscaler.as_ref())],
            }
        },
    ));
    {
        // One timer for all, rather than a timer per sync, so syncs triggered by
        // changes never add a second resync cycle for the same HPA.
        let autoscalers = autoscalers.clone();
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(settings.sync_period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                for autoscaler in autoscalers.list() {
                    queue.add(ObjectKey::of(autoscaler.as_ref()));
                }
            }
        });
    }
    autoscalers.wait_synced().await;
    pods.wait_synced().await;
    let controller = Arc::new(Controller {
        client: caches.client().clone(),
        autoscalers,
        pods,
        events: Events::new(caches.client().clone(), COMPONENT),
        calculator: settings.calculator,
        downscale_stabilization: settings.downscale_stabilization,
        histories: Mutex::new(HashMap::new()),
        scalable: Mutex::new(HashMap::new()),
    });
    run_workers("horizontal-pod-autoscaler", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

struct Controller {
    client: kube::Client,
    autoscalers: Arc<Cache<HorizontalPodAutoscaler>>,
    pods: Arc<Cache<Pod>>,
    events: Events,
    calculator: Calculator,
    /// The scale-down stabilization window of HPAs without a `behavior`.
    downscale_stabilization: Duration,
    /// Recommendations and scale events per HPA.
    histories: Mutex<HashMap<ObjectKey, History>>,
    /// The resources of the target kinds seen so far, by (apiVersion, kind).
    scalable: Mutex<HashMap<(String, String), ApiResource>>,
}

/// One metric's outcome.
struct MetricResult {
    proposal: Proposal,
    /// How the metric is named in reasons (`cpu resource utilization (percentage of request)`).
    description: String,
}

/// A metric that could not be used: the reason of its Event and condition, and why.
struct MetricFailure {
    reason: &'static str,
    error: String,
}

/// The status being built in one sync.
struct Draft {
    autoscaler: HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
    now: Timestamp,
}

impl Draft {
    fn set_condition(&mut self, type_: &str, status: bool, reason: &str, message: String) {
        let status = if status { "True" } else { "False" };
        let conditions = self.status.conditions.get_or_insert_with(Vec::new);
        let index = match conditions.iter().position(|c| c.type_ == type_) {
            Some(index) => index,
            None => {
                conditions.push(HorizontalPodAutoscalerCondition {
                    type_: type_.to_string(),
                    ..Default::default()
                });
                conditions.len() - 1
            }
        };
        let condition = &mut conditions[index];
        if condition.status != status {
            condition.last_transition_time = Some(Time(self.now));
        }
        condition.status = status.to_string();
        condition.reason = Some(reason.to_string());
        condition.message = Some(message);
    }
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(autoscaler) = self.autoscalers.get(&key.namespace, &key.name) else {
            self.histories.lock().unwrap().remove(key);
            return Ok(Outcome::Done);
        };
        let autoscaler = autoscaler.as_ref().clone();
        let before = autoscaler.status.clone();
        let mut draft = Draft {
            status: before.clone().unwrap_or_default(),
            autoscaler,
            now: Timestamp::now(),
        };
        let result = self.reconcile(key, &mut draft).await;
        draft.status.observed_generation = draft.autoscaler.metadata.generation;
        if Some(&draft.status) != before.as_ref() {
            let mut updated = draft.autoscaler.clone();
            updated.status = Some(draft.status);
            let api: Api<HorizontalPodAutoscaler> =
                Api::namespaced(self.client.clone(), &key.namespace);
            api.replace_status(&key.name, &PostParams::default(), &updated)
                .await?;
        }
        result.map(|()| Outcome::Done)
    }

    /// One sync of one HPA, into `draft`; an error only for what is worth retrying
    /// at once (a failed write), other failures are in the status and Events.
    async fn reconcile(&self, key: &ObjectKey, draft: &mut Draft) -> anyhow::Result<()> {
        let spec = draft.autoscaler.spec.clone().unwrap_or_default();
        let target = &spec.scale_target_ref;
        let reference = format!("{}/{}/{}", target.kind, key.namespace, target.name);
        let api_version = target.api_version.clone().unwrap_or_default();
        let scale = match self
            .scale_api(&api_version, &target.kind, &key.namespace)
            .await
        {
            Ok(api) => api.get_scale(&target.name).await.map(|scale| (api, scale)),
            Err(error) => Err(error),
        };
        let (api, scale) = match scale {
            Ok(found) => found,
            Err(error) => {
                let error = scale_error(&error);
                self.warn(draft, "FailedGetScale", "GetScale", error.clone());
                draft.set_condition(
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    format!(
                        "the HPA controller was unable to get the target's current scale: {error}"
                    ),
                );
                tracing::debug!(%reference, "cannot get the scale: {error}");
                return Ok(());
            }
        };
        draft.set_condition(
            "AbleToScale",
            true,
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale".into(),
        );
        let current = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let selector = scale
            .status
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        let now = draft.now;
        self.histories
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .record_initial(current, now);
        let bounds = Bounds {
            min: spec.min_replicas.unwrap_or(1),
            max: spec.max_replicas,
        };

        let mut metric_statuses = None;
        let (desired, reason) = if current == 0 && bounds.min != 0 {
            draft.set_condition(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero".into(),
            );
            (0, String::new())
        } else if current > bounds.max {
            draft.set_condition(
                "ScalingLimited",
                true,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count".into(),
            );
            (
                bounds.max,
                "Current number of replicas above Spec.MaxReplicas".to_string(),
            )
        } else if current < bounds.min {
            draft.set_condition(
                "ScalingLimited",
                true,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count".into(),
            );
            (
                bounds.min,
                "Current number of replicas below Spec.MinReplicas".to_string(),
            )
        } else {
            let metrics = spec.metrics.clone().unwrap_or_default();
            let computed = self
                .replicas_for_metrics(draft, &key.namespace, &selector, current, &metrics)
                .await;
            let (proposal, description, statuses) = match computed {
                Ok(computed) => computed,
                Err((error, statuses)) => {
                    if statuses.is_some() {
                        draft.status.current_metrics = statuses;
                    }
                    draft.status.current_replicas = Some(current);
                    self.warn(
                        draft,
                        "FailedComputeMetricsReplicas",
                        "ComputeMetrics",
                        error,
                    );
                    return Ok(());
                }
            };
            metric_statuses = Some(statuses);
            let reason = if proposal > current {
                format!("{description} above target")
            } else if proposal < current {
                "All metrics below target".to_string()
            } else {
                String::new()
            };
            let behavior =
                Behavior::from_spec(spec.behavior.as_ref(), self.downscale_stabilization);
            let normalized = self
                .histories
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .normalize(&behavior, bounds, current, proposal, now);
            let verdict = normalized.able_to_scale;
            draft.set_condition(
                "AbleToScale",
                verdict.status,
                verdict.reason,
                verdict.message.into(),
            );
            let limited = normalized.scaling_limited;
            draft.set_condition(
                "ScalingLimited",
                limited.status,
                limited.reason,
                limited.message.into(),
            );
            (normalized.replicas, reason)
        };

        let rescale = desired != current;
        if rescale {
            let patch = json!({"spec": {"replicas": desired}});
            if let Err(error) = api
                .patch_scale(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                let error = scale_error(&error);
                self.warn(
                    draft,
                    "FailedRescale",
                    "Rescale",
                    format!("New size: {desired}; reason: {reason}; error: {error}"),
                );
                draft.set_condition(
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {error}"),
                );
                draft.status.current_replicas = Some(current);
                anyhow::bail!("cannot rescale {reference}: {error}");
            }
            draft.set_condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                format!("the HPA controller was able to update the target scale to {desired}"),
            );
            self.events.publish(
                &draft.autoscaler,
                EventType::Normal,
                "SuccessfulRescale",
                "Rescale",
                format!("New size: {desired}; reason: {reason}"),
            );
            let behavior =
                Behavior::from_spec(spec.behavior.as_ref(), self.downscale_stabilization);
            self.histories
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .record_scale(&behavior, current, desired, now);
            tracing::info!(%reference, current, desired, %reason, "rescaled");
            draft.status.last_scale_time = Some(Time(now));
        }
        draft.status.current_replicas = Some(current);
        draft.status.desired_replicas = if rescale { desired } else { current };
        draft.status.current_metrics = metric_statuses;
        Ok(())
    }

    /// The proposal of every metric, the largest winning; a failed metric gets an
    /// Event and, when no usable proposal remains, sets ScalingActive False.
    #[allow(clippy::type_complexity)]
    async fn replicas_for_metrics(
        &self,
        draft: &mut Draft,
        namespace: &str,
        selector: &str,
        current: i32,
        metrics: &[MetricSpec],
    ) -> Result<(i32, String, Vec<MetricStatus>), (String, Option<Vec<MetricStatus>>)> {
        if selector.is_empty() {
            let message = "selector is required";
            self.warn(draft, "SelectorRequired", "ComputeMetrics", message.into());
            draft.set_condition(
                "ScalingActive",
                false,
                "InvalidSelector",
                "the HPA target's scale is missing a selector".into(),
            );
            return Err((message.into(), None));
        }
        let parsed = match krust_api::selector::LabelSelector::parse(selector) {
            Ok(parsed) => parsed,
            Err(error) => {
                let message = format!(
                    "couldn't convert selector into a corresponding internal selector object: {error}"
                );
                self.warn(draft, "InvalidSelector", "ComputeMetrics", message.clone());
                draft.set_condition("ScalingActive", false, "InvalidSelector", message.clone());
                return Err((message, None));
            }
        };
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list_namespace(namespace)
            .into_iter()
            .filter(|pod| {
                let labels = crate::workload::label_values(pod.metadata.labels.iter().flatten());
                parsed.matches(Some(&labels))
            })
            .collect();
        let pods: Vec<&Pod> = pods.iter().map(Arc::as_ref).collect();
        let mut usage: Option<Result<Vec<DynamicObject>, String>> = None;
        let mut statuses = Vec::with_capacity(metrics.len());
        let mut best: Option<(i32, String)> = None;
        let mut failures: Vec<MetricFailure> = Vec::new();
        for metric in metrics {
            let outcome = match metric.type_.as_str() {
                "Resource" | "ContainerResource" => {
                    if usage.is_none() {
                        usage = Some(self.pod_metrics(namespace, selector).await);
                    }
                    let usage = usage.as_ref().expect("fetched above");
                    self.resource_metric(metric, current, &pods, usage, draft.now)
                }
                other => Err(MetricFailure {
                    reason: match other {
                        "Pods" => "FailedGetPodsMetric",
                        "Object" => "FailedGetObjectMetric",
                        "External" => "FailedGetExternalMetric",
                        _ => "InvalidMetricSourceType",
                    },
                    error: format!(
                        "unable to get metrics of type {other:?}: this cluster serves resource metrics only (no custom or external metrics API)"
                    ),
                }),
            };
            match outcome {
                Ok((result, status)) => {
                    statuses.push(status);
                    if best
                        .as_ref()
                        .is_none_or(|(replicas, _)| result.proposal.replicas > *replicas)
                    {
                        best = Some((result.proposal.replicas, result.description));
                    }
                }
                Err(failure) => {
                    statuses.push(failed_status(metric));
                    self.warn(
                        draft,
                        failure.reason,
                        "ComputeMetrics",
                        failure.error.clone(),
                    );
                    failures.push(failure);
                }
            }
        }
        // As upstream: with every metric failed, or some failed and the rest asking
        // for fewer pods, nothing changes.
        let scale_down_with_failures = !failures.is_empty()
            && best
                .as_ref()
                .is_some_and(|(replicas, _)| *replicas < current);
        match best {
            Some((replicas, description)) if !scale_down_with_failures => {
                draft.set_condition(
                    "ScalingActive",
                    true,
                    "ValidMetricFound",
                    format!("the HPA was able to successfully calculate a replica count from {description}"),
                );
                Ok((replicas, description, statuses))
            }
            _ => {
                let Some(first) = failures.first() else {
                    let message = "no metrics to compute a replica count from".to_string();
                    draft.set_condition(
                        "ScalingActive",
                        false,
                        "InvalidMetricSourceType",
                        message.clone(),
                    );
                    return Err((message, Some(statuses)));
                };
                draft.set_condition(
                    "ScalingActive",
                    false,
                    first.reason,
                    format!(
                        "the HPA was unable to compute the replica count: {}",
                        first.error
                    ),
                );
                Err((
                    format!(
                        "invalid metrics ({} invalid out of {}), first error is: {}",
                        failures.len(),
                        metrics.len(),
                        first.error
                    ),
                    Some(statuses),
                ))
            }
        }
    }

    /// The proposal of one Resource or ContainerResource metric.
    fn resource_metric(
        &self,
        metric: &MetricSpec,
        current: i32,
        pods: &[&Pod],
        usage: &Result<Vec<DynamicObject>, String>,
        now: Timestamp,
    ) -> Result<(MetricResult, MetricStatus), MetricFailure> {
        let (name, container, target) = match (&metric.resource, &metric.container_resource) {
            (Some(source), _) if metric.type_ == "Resource" => {
                (source.name.clone(), None, source.target.clone())
            }
            (_, Some(source)) if metric.type_ == "ContainerResource" => (
                source.name.clone(),
                Some(source.container.clone()),
                source.target.clone(),
            ),
            _ => {
                return Err(MetricFailure {
                    reason: "FailedGetResourceMetric",
                    error: format!("the {} metric source is not filled in", metric.type_),
                });
            }
        };
        let failed = |error: String| MetricFailure {
            reason: if container.is_some() {
                "FailedGetContainerResourceMetric"
            } else {
                "FailedGetResourceMetric"
            },
            error,
        };
        let target = if let Some(value) = &target.average_value {
            Target::AverageValue(
                replicas::milli_value(&value.0)
                    .ok_or_else(|| failed(format!("invalid averageValue {:?}", value.0)))?,
            )
        } else if let Some(utilization) = target.average_utilization {
            Target::Utilization(utilization)
        } else {
            return Err(failed(
                "invalid resource metric source: neither a utilization target nor a value target was set".into(),
            ));
        };
        let usage = usage.as_ref().map_err(|error| {
            failed(format!(
                "unable to get metrics for resource {name}: {error}"
            ))
        })?;
        let per_pod = pod_usage(usage, &name, container.as_deref());
        if per_pod.is_empty() {
            return Err(failed(format!(
                "unable to get metrics for resource {name}: no metrics returned from resource metrics API"
            )));
        }
        let proposal = self
            .calculator
            .resource_replicas(
                current,
                target,
                replicas::Measured {
                    resource: &name,
                    container: container.as_deref(),
                },
                pods,
                per_pod,
                now,
            )
            .map_err(|error| failed(format!("failed to get {name} utilization: {error}")))?;
        let what = if container.is_some() {
            "container resource"
        } else {
            "resource"
        };
        let description = match target {
            Target::Utilization(_) => format!("{name} {what} utilization (percentage of request)"),
            Target::AverageValue(_) => format!("{name} {what}"),
        };
        let current_value = MetricValueStatus {
            average_utilization: proposal.utilization,
            average_value: Some(Quantity(krust_api::table::canonical_quantity(&format!(
                "{}m",
                proposal.average_value
            )))),
            value: None,
        };
        let status = match container {
            Some(container) => MetricStatus {
                type_: "ContainerResource".into(),
                container_resource: Some(ContainerResourceMetricStatus {
                    container,
                    name: name.clone(),
                    current: current_value,
                }),
                ..Default::default()
            },
            None => MetricStatus {
                type_: "Resource".into(),
                resource: Some(ResourceMetricStatus {
                    name: name.clone(),
                    current: current_value,
                }),
                ..Default::default()
            },
        };
        Ok((
            MetricResult {
                proposal,
                description,
            },
            status,
        ))
    }

    /// The PodMetrics of the pods `selector` picks in `namespace`.
    async fn pod_metrics(
        &self,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<DynamicObject>, String> {
        let resource = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        api.list(&ListParams::default().labels(selector))
            .await
            .map(|list| list.items)
            .map_err(|error| error.to_string())
    }

    /// A dynamic API for the scale subresource of `kind` in `api_version`,
    /// discovered once per kind.
    async fn scale_api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
    ) -> Result<Api<DynamicObject>, kube::Error> {
        let cache_key = (api_version.to_string(), kind.to_string());
        let known = self.scalable.lock().unwrap().get(&cache_key).cloned();
        let resource = match known {
            Some(resource) => resource,
            None => {
                let (group, version) = match api_version.split_once('/') {
                    Some((group, version)) => (group, version),
                    None => ("", api_version),
                };
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
                self.scalable
                    .lock()
                    .unwrap()
                    .insert(cache_key, resource.clone());
                resource
            }
        };
        Ok(Api::namespaced_with(
            self.client.clone(),
            namespace,
            &resource,
        ))
    }

    fn warn(&self, draft: &Draft, reason: &str, action: &str, note: String) {
        self.events
            .publish(&draft.autoscaler, EventType::Warning, reason, action, note);
    }
}

/// An API error as upstream prints it: the server's message when it sent one.
fn scale_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// The entry of a metric that gave no value, so `currentMetrics` keeps one entry
/// per metric in the spec's order.
fn failed_status(metric: &MetricSpec) -> MetricStatus {
    let mut status = MetricStatus {
        type_: metric.type_.clone(),
        ..Default::default()
    };
    if let Some(source) = &metric.resource {
        status.resource = Some(ResourceMetricStatus {
            name: source.name.clone(),
            current: MetricValueStatus::default(),
        });
    }
    if let Some(source) = &metric.container_resource {
        status.container_resource = Some(ContainerResourceMetricStatus {
            container: source.container.clone(),
            name: source.name.clone(),
            current: MetricValueStatus::default(),
        });
    }
    status
}

/// Per pod, the usage of `resource` (milli-units) summed over its containers, or of
/// `container` only. A pod whose sample lacks the resource for one of them is left
/// out (a missing pod to the calculator), as upstream's metrics client does.
pub fn pod_usage(items: &[DynamicObject], resource: &str, container: Option<&str>) -> PodMetrics {
    let mut metrics = PodMetrics::new();
    'pods: for item in items {
        let Some(name) = item.metadata.name.clone() else {
            continue;
        };
        let Some(timestamp) = item.data["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        let window = item.data["window"]
            .as_str()
            .and_then(parse_window)
            .unwrap_or(Duration::from_secs(5));
        let mut sum = 0i64;
        let mut found = false;
        for entry in item.data["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|wanted| entry["name"] != wanted) {
                continue;
            }
            let Some(value) = entry["usage"][resource]
                .as_str()
                .and_then(replicas::milli_value)
            else {
                continue 'pods;
            };
            sum += value;
            found = true;
        }
        if found {
            metrics.insert(
                name,
                PodMetric {
                    value: sum,
                    timestamp,
                    window,
                },
            );
        }
    }
    metrics
}

/// A metrics window (a Go duration: `5s`, `1m30s`, `500ms`).
fn parse_window(text: &str) -> Option<Duration> {
    let duration: SignedDuration = text.parse().ok()?;
    Duration::try_from(duration).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_metrics(name: &str, containers: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
            "metadata": {"name": name, "namespace": "n"},
            "timestamp": "2026-01-01T12:00:00Z", "window": "5s",
            "containers": containers,
        }))
        .unwrap()
    }

    #[test]
    fn pod_usage_sums_containers_and_leaves_out_incomplete_pods() {
        let items = [
            pod_metrics(
                "a",
                json!([{"name": "app", "usage": {"cpu": "250m", "memory": "1Mi"}},
                       {"name": "sidecar", "usage": {"cpu": "1500000n", "memory": "1Ki"}}]),
            ),
            pod_metrics("b", json!([{"name": "app", "usage": {"memory": "1Mi"}}])),
        ];
        let cpu = pod_usage(&items, "cpu", None);
        assert_eq!(cpu["a"].value, 252);
        assert_eq!(cpu["a"].window, Duration::from_secs(5));
        assert!(!cpu.contains_key("b"), "b has no cpu sample");
        assert_eq!(pod_usage(&items, "cpu", Some("app"))["a"].value, 250);
        assert_eq!(
            pod_usage(&items, "memory", None)["b"].value,
            1024 * 1024 * 1000
        );
        assert!(pod_usage(&items, "cpu", Some("nothing")).is_empty());
    }

    #[test]
    fn windows_are_go_durations() {
        assert_eq!(parse_window("5s"), Some(Duration::from_secs(5)));
        assert_eq!(parse_window("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_window("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_window("soon"), None);
    }

    #[test]
    fn statuses_keep_the_metric_for_a_failed_one() {
        let metric: MetricSpec = serde_json::from_value(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}},
        }))
        .unwrap();
        let status = failed_status(&metric);
        assert_eq!(status.type_, "Resource");
        assert_eq!(status.resource.unwrap().name, "cpu");
    }
}
