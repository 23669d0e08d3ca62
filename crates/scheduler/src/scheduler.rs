//! The running scheduler: watches feed the [`ClusterCache`] and the
//! [`SchedulingQueue`]; one loop pops a pod, filters and scores the nodes, assumes the
//! pod onto the best one and hands the binding to a task (a bounded number in
//! flight), then goes on with the next pod at once.
//!
//! Failures are explained as upstream does: the `PodScheduled=False` condition
//! (reason `Unschedulable`) through `pods/status`, written only when the message
//! changes, and a `FailedScheduling` Warning event (events.k8s.io/v1). A successful
//! binding gets a `Scheduled` Normal event. Events are best effort: when too many are
//! in flight, new ones are dropped, as upstream's event broadcaster drops them.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use krust_events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use crate::cache::{ClusterCache, PodInfo, PodKey};
use crate::metrics::Metrics;
use crate::plugins::{self, Cycle};
use crate::preemption;
use crate::queue::{ClusterEvent, PREEMPTION, SchedulingQueue};

/// The schedulerName of pods this scheduler is responsible for, by default.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Most events being written at once; more are dropped.
const MAX_EVENTS_IN_FLIGHT: usize = 128;

/// How a scheduler runs.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods with this `spec.schedulerName` are scheduled; others are left alone.
    pub scheduler_name: String,
    /// Most bindings in flight at once.
    pub max_binds_in_flight: usize,
    /// This instance's name in events (`reportingInstance`).
    pub instance: String,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            max_binds_in_flight: 64,
            instance: "krust-scheduler".into(),
        }
    }
}

#[derive(Default)]
struct State {
    cache: ClusterCache,
    queue: SchedulingQueue,
    next_start: usize,
    /// Pods that preempted others, by key: the node they wait for.
    nominated: HashMap<PodKey, (String, Arc<PodInfo>)>,
    /// The last failure message written to each pod's condition.
    reported: HashMap<PodKey, String>,
    nodes_synced: bool,
    pods_synced: bool,
}

struct Shared {
    client: Client,
    config: SchedulerConfig,
    state: Mutex<State>,
    wake: Notify,
    binds: Arc<Semaphore>,
    events: Arc<Semaphore>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
}

/// Runs the scheduler until the future is dropped (or a watch task dies).
pub async fn run(
    client: Client,
    config: SchedulerConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: config.scheduler_name.clone(),
            instance: Some(config.instance.clone()),
        },
    );
    let shared = Arc::new(Shared {
        binds: Arc::new(Semaphore::new(config.max_binds_in_flight.max(1))),
        events: Arc::new(Semaphore::new(MAX_EVENTS_IN_FLIGHT)),
        client: client.clone(),
        config,
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        recorder,
        metrics,
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_all(
        Api::<Node>::all(client.clone()),
        shared.clone(),
        on_node,
    ));
    tasks.spawn(watch_all(
        Api::<Pod>::all(client.clone()),
        shared.clone(),
        on_pod,
    ));
    tasks.spawn(watch_all(
        Api::<PodDisruptionBudget>::all(client.clone()),
        shared.clone(),
        on_pdb,
    ));
    tasks.spawn(watch_all(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        shared.clone(),
        on_claim,
    ));
    tasks.spawn(watch_all(
        Api::<PersistentVolume>::all(client.clone()),
        shared.clone(),
        on_volume,
    ));
    tasks.spawn(watch_all(
        Api::<StorageClass>::all(client.clone()),
        shared.clone(),
        on_storage_class,
    ));
    tasks.spawn(watch_all(
        Api::<PriorityClass>::all(client),
        shared.clone(),
        on_priority_class,
    ));
    tasks.spawn(schedule_loop(shared));
    tasks.join_next().await;
    anyhow::bail!("a scheduler task stopped unexpectedly")
}

/// What a watch tells its handler.
enum Change<K> {
    Applied(K),
    Deleted(K),
    /// The first complete list was delivered.
    Synced,
}

/// Watches every object of a type; objects that vanish across a relist are reported
/// as deleted (with only their name and namespace).
async fn watch_all<K>(api: Api<K>, shared: Arc<Shared>, handle: fn(&Shared, &mut State, Change<K>))
where
    K: Resource + Clone + Default + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut relisted: HashSet<(String, String)> = HashSet::new();
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let changes = match event {
            Ok(Event::Init) => {
                relisted.clear();
                continue;
            }
            Ok(Event::InitApply(object)) => {
                relisted.insert(key(&object));
                known.insert(key(&object));
                vec![Change::Applied(object)]
            }
            Ok(Event::InitDone) => {
                let gone: Vec<(String, String)> = known.difference(&relisted).cloned().collect();
                let mut changes: Vec<Change<K>> = Vec::new();
                for (namespace, name) in gone {
                    known.remove(&(namespace.clone(), name.clone()));
                    let mut object = K::default();
                    object.meta_mut().name = Some(name);
                    object.meta_mut().namespace = Some(namespace).filter(|n| !n.is_empty());
                    changes.push(Change::Deleted(object));
                }
                changes.push(Change::Synced);
                changes
            }
            Ok(Event::Apply(object)) => {
                known.insert(key(&object));
                vec![Change::Applied(object)]
            }
            Ok(Event::Delete(object)) => {
                known.remove(&key(&object));
                vec![Change::Deleted(object)]
            }
            Err(error) => {
                tracing::warn!(%error, "scheduler watch failed; retrying");
                continue;
            }
        };
        {
            let mut state = shared.state.lock().unwrap();
            for change in changes {
                handle(&shared, &mut state, change);
            }
        }
        shared.wake.notify_one();
    }
}

fn on_node(_: &Shared, state: &mut State, change: Change<Node>) {
    let now = Instant::now();
    match change {
        Change::Applied(node) => {
            let old = state
                .cache
                .node(&node.name_any())
                .and_then(|n| n.node.clone());
            let relevant = |n: &Node| {
                (
                    n.spec.clone(),
                    n.metadata.labels.clone(),
                    n.status
                        .as_ref()
                        .map(|s| (s.allocatable.clone(), s.images.clone())),
                )
            };
            let event = match &old {
                None => Some(ClusterEvent::NodeAdd),
                Some(old) if relevant(old) != relevant(&node) => Some(ClusterEvent::NodeUpdate),
                Some(_) => None,
            };
            state.cache.upsert_node(Arc::new(node));
            if let Some(event) = event {
                state.queue.on_event(event, now);
            }
        }
        Change::Deleted(node) => state.cache.remove_node(&node.name_any()),
        Change::Synced => state.nodes_synced = true,
    }
}

fn on_pod(shared: &Shared, state: &mut State, change: Change<Pod>) {
    let now = Instant::now();
    let forget = |state: &mut State, key: &str| {
        state.queue.remove(key);
        state.nominated.remove(key);
        state.reported.remove(key);
        if state.cache.remove_pod(key).is_some() {
            state.queue.on_event(ClusterEvent::AssignedPodDelete, now);
        }
    };
    match change {
        Change::Applied(pod) => {
            let info = Arc::new(PodInfo::new(Arc::new(pod), |c| state.cache.priority_of(c)));
            let key = info.key.clone();
            let phase = info.pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                // A finished pod holds nothing (upstream's informer filters them out).
                forget(state, &key);
            } else if info.node_name().is_some() {
                let newly_bound = !state.cache.has_pod(&key) || state.cache.is_assumed(&key);
                state.queue.remove(&key);
                state.nominated.remove(&key);
                state.reported.remove(&key);
                state.cache.upsert_bound_pod(info);
                if newly_bound {
                    state.queue.on_event(ClusterEvent::AssignedPodAdd, now);
                }
            } else if responsible(&shared.config, &info.pod) {
                if info.pod.metadata.deletion_timestamp.is_some() {
                    forget(state, &key);
                } else if !state.cache.is_assumed(&key) {
                    let status_nomination = info
                        .pod
                        .status
                        .as_ref()
                        .and_then(|s| s.nominated_node_name.clone())
                        .filter(|n| !n.is_empty());
                    if let Some(node) = status_nomination {
                        state.nominated.entry(key).or_insert((node, info.clone()));
                    }
                    state.queue.add_or_update(info, now);
                }
            }
        }
        Change::Deleted(pod) => forget(state, &crate::cache::pod_key(&pod)),
        Change::Synced => state.pods_synced = true,
    }
}

fn on_pdb(_: &Shared, state: &mut State, change: Change<PodDisruptionBudget>) {
    match change {
        Change::Applied(pdb) => {
            let key = format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any());
            state.cache.pdbs.insert(key, Arc::new(pdb));
        }
        Change::Deleted(pdb) => {
            let key = format!("{}/{}", pdb.namespace().unwrap_or_default(), pdb.name_any());
            state.cache.pdbs.remove(&key);
        }
        Change::Synced => {}
    }
}

fn on_priority_class(_: &Shared, state: &mut State, change: Change<PriorityClass>) {
    match change {
        Change::Applied(class) => {
            state
                .cache
                .priority_classes
                .insert(class.name_any(), class.value);
        }
        Change::Deleted(class) => {
            state.cache.priority_classes.remove(&class.name_any());
        }
        Change::Synced => {}
    }
}

fn on_claim(_: &Shared, state: &mut State, change: Change<PersistentVolumeClaim>) {
    let claims = &mut state.cache.volumes.claims;
    match change {
        Change::Applied(claim) => {
            let key = format!(
                "{}/{}",
                claim.namespace().unwrap_or_default(),
                claim.name_any()
            );
            claims.insert(key, Arc::new(claim));
        }
        Change::Deleted(claim) => {
            let key = format!(
                "{}/{}",
                claim.namespace().unwrap_or_default(),
                claim.name_any()
            );
            claims.remove(&key);
        }
        Change::Synced => return,
    }
    state
        .queue
        .on_event(ClusterEvent::VolumeChange, Instant::now());
}

fn on_volume(_: &Shared, state: &mut State, change: Change<PersistentVolume>) {
    let volumes = &mut state.cache.volumes.volumes;
    match change {
        Change::Applied(volume) => {
            volumes.insert(volume.name_any(), Arc::new(volume));
        }
        Change::Deleted(volume) => {
            volumes.remove(&volume.name_any());
        }
        Change::Synced => return,
    }
    state
        .queue
        .on_event(ClusterEvent::VolumeChange, Instant::now());
}

fn on_storage_class(_: &Shared, state: &mut State, change: Change<StorageClass>) {
    let classes = &mut state.cache.volumes.classes;
    match change {
        Change::Applied(class) => {
            classes.insert(class.name_any(), Arc::new(class));
        }
        Change::Deleted(class) => {
            classes.remove(&class.name_any());
        }
        Change::Synced => return,
    }
    state
        .queue
        .on_event(ClusterEvent::VolumeChange, Instant::now());
}

/// Whether the pod is this scheduler's to place.
fn responsible(config: &SchedulerConfig, pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER_NAME);
    name == config.scheduler_name
}

/// What one attempt decided.
enum Outcome {
    Bind {
        pod: Arc<PodInfo>,
        node: String,
        attempts: u32,
        started: Instant,
    },
    Failed(Failure),
}

struct Failure {
    pod: Arc<PodInfo>,
    message: String,
    /// Only set when the message differs from the one last written.
    write_condition: bool,
    preemption: Option<preemption::Candidate>,
}

async fn schedule_loop(shared: Arc<Shared>) {
    loop {
        let (next, wake_at) = {
            let mut state = shared.state.lock().unwrap();
            if state.nodes_synced && state.pods_synced {
                let now = Instant::now();
                let next = state
                    .queue
                    .pop(now)
                    .map(|(pod, attempts)| schedule_one(&mut state, pod, attempts, now));
                (next, state.queue.next_backoff_expiry())
            } else {
                (None, None)
            }
        };
        match next {
            Some(Outcome::Bind {
                pod,
                node,
                attempts,
                started,
            }) => {
                let permit = shared.binds.clone().acquire_owned().await.unwrap();
                let shared = shared.clone();
                tokio::spawn(async move {
                    bind(&shared, pod, &node, attempts, started).await;
                    drop(permit);
                });
            }
            Some(Outcome::Failed(failure)) => {
                let shared = shared.clone();
                tokio::spawn(async move { report_failure(&shared, failure).await });
            }
            None => {
                let far = Instant::now() + Duration::from_secs(3600);
                let wake_at = wake_at.unwrap_or(far);
                tokio::select! {
                    () = shared.wake.notified() => {}
                    () = tokio::time::sleep_until(wake_at.into()) => {}
                }
            }
        }
    }
}

/// One scheduling attempt, under the state lock: pure computation and cache updates.
fn schedule_one(state: &mut State, pod: Arc<PodInfo>, attempts: u32, started: Instant) -> Outcome {
    let State {
        cache,
        queue,
        nominated,
        reported,
        next_start,
        ..
    } = state;
    let mut cycle = Cycle::new(&pod, cache);
    cycle.nominated = nominated
        .values()
        .filter(|(_, p)| p.key != pod.key && p.priority >= pod.priority)
        .cloned()
        .collect();
    let own_nomination = nominated.get(&pod.key).map(|(node, _)| node.clone());
    let nominated_fits = own_nomination
        .as_deref()
        .and_then(|n| cache.node(n))
        .filter(|n| n.node.is_some() && plugins::filter_node_with_nominated(&cycle, n).is_ok())
        .map(|n| n.name.clone());
    let chosen = match nominated_fits {
        Some(node) => Ok(node),
        None => {
            let filtered = plugins::find_feasible_nodes(&cycle, *next_start);
            *next_start = filtered.next_start;
            match filtered.feasible.len() {
                0 => Err(filtered.unfit),
                1 => Ok(cache.node_infos()[filtered.feasible[0]].name.clone()),
                _ => {
                    let scores = plugins::score_nodes(&cycle, &filtered.feasible);
                    Ok(cache.node_infos()[select_host(&scores)].name.clone())
                }
            }
        }
    };
    match chosen {
        Ok(node) => {
            drop(cycle);
            cache.assume(pod.clone(), &node);
            queue.done(&pod.key);
            nominated.remove(&pod.key);
            Outcome::Bind {
                pod,
                node,
                attempts,
                started,
            }
        }
        Err(unfit) => {
            let mut message = plugins::fit_error_message(cache.node_count(), &unfit);
            let mut candidate = None;
            let never = pod
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.preemption_policy.as_deref())
                == Some("Never");
            if never {
                message.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
            } else if preemption::eligible(&pod, own_nomination.as_deref(), cache)
                && !unfit.is_empty()
            {
                match preemption::find_candidate(&cycle, &unfit) {
                    Ok(found) => candidate = Some(found),
                    Err(why) => {
                        message.push(' ');
                        message.push_str(&why);
                    }
                }
            }
            drop(cycle);
            let mut rejecting: Vec<&'static str> = unfit.iter().map(|(_, u)| u.plugin).collect();
            rejecting.sort();
            rejecting.dedup();
            if let Some(found) = &candidate {
                nominated.insert(pod.key.clone(), (found.node.clone(), pod.clone()));
                rejecting.push(PREEMPTION);
            }
            queue.unschedulable(&pod.key, rejecting, Instant::now());
            let write_condition = reported.get(&pod.key) != Some(&message);
            reported.insert(pod.key.clone(), message.clone());
            Outcome::Failed(Failure {
                pod,
                message,
                write_condition,
                preemption: candidate,
            })
        }
    }
}

/// The index of a node with the highest score; ties are broken at random.
fn select_host(scores: &[(usize, i64)]) -> usize {
    let best = scores.iter().map(|(_, s)| *s).max().unwrap_or(0);
    let top: Vec<usize> = scores
        .iter()
        .filter(|(_, s)| *s == best)
        .map(|(i, _)| *i)
        .collect();
    top[rand::random_range(0..top.len())]
}

/// Binds the pod through `pods/binding`; on failure forgets the assumption and retries.
async fn bind(shared: &Shared, pod: Arc<PodInfo>, node: &str, attempts: u32, started: Instant) {
    let namespace = pod.namespace.clone();
    let name = pod.pod.name_any();
    let binding = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": pod.pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let result = async {
        pre_bind_volumes(shared, &pod, node).await?;
        let request = kube::core::Request::new(format!("/api/v1/namespaces/{namespace}/pods"))
            .create_subresource(
                "binding",
                &name,
                &PostParams::default(),
                serde_json::to_vec(&binding).unwrap(),
            )
            .map_err(kube::Error::BuildRequest)?;
        shared.client.request::<serde_json::Value>(request).await
    }
    .await;
    match result {
        Ok(_) => {
            shared.metrics.record_scheduled(started.elapsed());
            let note = format!("Successfully assigned {namespace}/{name} to {node}");
            publish(
                shared,
                &pod.pod,
                EventType::Normal,
                "Scheduled",
                "Binding",
                note,
            );
        }
        Err(error) => {
            let gone = matches!(&error, kube::Error::Api(e) if e.code == 404 || e.code == 409);
            {
                let mut state = shared.state.lock().unwrap();
                if state.cache.is_assumed(&pod.key) {
                    state.cache.remove_pod(&pod.key);
                }
                if !gone {
                    state
                        .queue
                        .retry_later(pod.clone(), attempts, Instant::now());
                }
            }
            shared.wake.notify_one();
            if !gone {
                tracing::warn!(pod = %pod.key, %node, %error, "binding failed; will retry");
            }
        }
    }
}

/// VolumeBinding's PreBind: the pod's unbound WaitForFirstConsumer claims learn the
/// chosen node (`volume.kubernetes.io/selected-node`), so that the binder binds or
/// the provisioner provisions a volume there.
async fn pre_bind_volumes(shared: &Shared, pod: &PodInfo, node: &str) -> Result<(), kube::Error> {
    let claims = {
        let state = shared.state.lock().unwrap();
        plugins::volume_binding::claims_to_annotate(&state.cache.volumes, &pod.pod)
    };
    for (namespace, name) in claims {
        let patch =
            json!({"metadata": {"annotations": {plugins::volume_binding::SELECTED_NODE: node}}});
        Api::<PersistentVolumeClaim>::namespaced(shared.client.clone(), &namespace)
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    Ok(())
}

/// Writes the failure: preemption first (nominatedNodeName, victims deleted), then the
/// condition and the FailedScheduling event.
async fn report_failure(shared: &Shared, failure: Failure) {
    shared.metrics.record_failed();
    let pod = &failure.pod;
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let mut status = json!({});
    if let Some(candidate) = &failure.preemption {
        status["nominatedNodeName"] = json!(candidate.node);
        for victim in &candidate.victims {
            let victims: Api<Pod> = Api::namespaced(shared.client.clone(), &victim.namespace);
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: victim.pod.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match victims.delete(&victim.pod.name_any(), &params).await {
                Ok(_) => {
                    let note = format!(
                        "Preempted by pod {} on node {}",
                        pod.pod.uid().unwrap_or_default(),
                        candidate.node
                    );
                    publish(
                        shared,
                        &victim.pod,
                        EventType::Normal,
                        "Preempted",
                        "Preempting",
                        note,
                    );
                }
                Err(error) => tracing::warn!(victim = %victim.key, %error, "cannot preempt"),
            }
        }
    }
    if failure.write_condition || failure.preemption.is_some() {
        status["conditions"] = json!([{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": failure.message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            "lastProbeTime": null,
        }]);
        let patch = json!({"status": status});
        if let Err(error) = pods
            .patch_status(
                &pod.pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(&patch),
            )
            .await
            && !matches!(&error, kube::Error::Api(e) if e.code == 404)
        {
            tracing::warn!(pod = %pod.key, %error, "cannot write the PodScheduled condition");
        }
    }
    publish(
        shared,
        &pod.pod,
        EventType::Warning,
        "FailedScheduling",
        "Scheduling",
        failure.message,
    );
}

/// Publishes an event in the background, or drops it when too many are in flight.
fn publish(shared: &Shared, pod: &Pod, type_: EventType, reason: &str, action: &str, note: String) {
    let Ok(permit) = shared.events.clone().try_acquire_owned() else {
        return;
    };
    let recorder = shared.recorder.clone();
    let reference = pod.object_ref(&());
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, "cannot publish a scheduler event");
        }
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cache::tests::{node, pod};

    fn state_with_nodes(nodes: &[(&str, &str)]) -> State {
        let mut state = State::default();
        for (name, cpu) in nodes {
            state.cache.upsert_node(node(name, cpu, json!({})));
        }
        state
    }

    fn attempt(state: &mut State, pod: Arc<PodInfo>) -> Outcome {
        let now = Instant::now();
        state.queue.add_or_update(pod, now);
        let (pod, attempts) = state.queue.pop(now).unwrap();
        schedule_one(state, pod, attempts, now)
    }

    #[test]
    fn a_placed_pod_is_assumed_at_once_so_the_next_one_sees_its_room_taken() {
        let mut state = state_with_nodes(&[("n", "1")]);
        let Outcome::Bind { node, .. } = attempt(&mut state, pod("a", "1", json!({}))) else {
            panic!("a fits")
        };
        assert_eq!(node, "n");
        assert!(state.cache.is_assumed("default/a"));
        let Outcome::Failed(failure) = attempt(&mut state, pod("b", "1", json!({}))) else {
            panic!("b must not fit")
        };
        assert!(
            failure
                .message
                .starts_with("0/1 nodes are available: 1 Insufficient cpu.")
        );
        assert!(failure.write_condition);
        assert_eq!(state.queue.lengths(), (0, 0, 1));
    }

    #[test]
    fn a_nominated_pod_keeps_its_room_from_less_important_pods() {
        let mut state = state_with_nodes(&[("n", "1")]);
        let vip = pod("vip", "1", json!({"spec": {"priority": 100}}));
        state
            .nominated
            .insert(vip.key.clone(), ("n".into(), vip.clone()));
        let low = pod(
            "low",
            "1",
            json!({"spec": {"priority": 1, "preemptionPolicy": "Never"}}),
        );
        assert!(matches!(attempt(&mut state, low), Outcome::Failed(_)));
        let Outcome::Bind { node, .. } = attempt(&mut state, vip) else {
            panic!("the nominated pod fits its node")
        };
        assert_eq!(node, "n");
        assert!(state.nominated.is_empty());
    }

    #[test]
    fn ties_are_broken_among_the_best() {
        for _ in 0..20 {
            let chosen = select_host(&[(0, 10), (1, 30), (2, 30), (3, 5)]);
            assert!(chosen == 1 || chosen == 2);
        }
    }

    #[test]
    fn only_our_pods_are_ours() {
        let config = SchedulerConfig::default();
        let pod = |name: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "schedulerName": name}})).unwrap()
        };
        assert!(responsible(&config, &pod(None)));
        assert!(responsible(&config, &pod(Some("default-scheduler"))));
        assert!(!responsible(&config, &pod(Some("other"))));
    }
}
