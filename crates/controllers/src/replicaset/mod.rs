//! The ReplicaSet and ReplicationController controllers: keep exactly
//! `spec.replicas` active pods matching the selector, as upstream's
//! pkg/controller/replicaset (which also serves ReplicationControllers).
//!
//! One generic controller ([`run`]) serves both kinds through [`ReplicaKind`].
//! A sync ([`ReplicaController::sync`]):
//! 1. claims pods: adopts orphans that match the selector (adding a controller
//!    ownerReference) and releases owned pods that no longer match;
//! 2. unless [`expectations`] of earlier creates/deletes are still outstanding,
//!    creates the missing pods in slow-start batches (1, 2, 4, ... at most
//!    [`BURST_REPLICAS`] per sync), or deletes the surplus, not-ready and newer pods
//!    first ([`pods::sort_for_deletion`]);
//! 3. writes `status` (replicas, fullyLabeledReplicas, readyReplicas,
//!    availableReplicas after `minReadySeconds`, observedGeneration, and a
//!    `ReplicaFailure` condition while creating or deleting fails) through the
//!    status subresource.
//!
//! What happens is told in Events (SuccessfulCreate, SuccessfulDelete,
//! FailedCreate, FailedDelete), rate-limited per object as client-go does ([`events`]).

pub mod events;
pub mod expectations;
pub mod pods;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use krust_api::selector::LabelSelector;
use krust_events::EventType;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cache::{Cache, Cacheable, Caches, Change, ObjectKey};
use crate::workqueue::{Outcome, WorkQueue, run_workers};
use events::Events;
use expectations::Expectations;

/// The most pods one sync creates or deletes (upstream's `BurstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// The most pod creates or deletes in flight at once for one sync.
const MAX_IN_FLIGHT: usize = 64;
/// Concurrent syncs (upstream's `--concurrent-replicaset-syncs` default).
const WORKERS: usize = 5;

/// What the controller needs of ReplicaSets and ReplicationControllers.
pub trait ReplicaKind: Cacheable + Resource<Scope = k8s_openapi::NamespaceResourceScope> {
    /// The name events are reported under.
    const CONTROLLER: &'static str;
    fn desired_replicas(&self) -> i32;
    fn min_ready_seconds(&self) -> i32;
    /// The pod selector (a ReplicationController's label map as a selector).
    fn selector(&self) -> LabelSelector;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The status fields this controller writes, as stored now.
    fn current_status(&self) -> ReplicaStatus;
}

impl ReplicaKind for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector(&self) -> LabelSelector {
        let selector = self
            .spec
            .as_ref()
            .map(|spec| serde_json::to_value(&spec.selector).unwrap_or(Value::Null))
            .unwrap_or(Value::Null);
        selector_or_nothing(&selector)
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn current_status(&self) -> ReplicaStatus {
        let status = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: status.replicas,
            fully_labeled_replicas: status.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            conditions: serde_json::to_value(status.conditions.unwrap_or_default())
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        }
    }
}

impl ReplicaKind for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    fn desired_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn selector(&self) -> LabelSelector {
        // An empty or missing selector selects nothing here: the API server
        // defaults it to the template's labels, so empty means "no pods".
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            Some(labels) if !labels.is_empty() => {
                LabelSelector::from_labels(&crate::workload::label_values(labels))
            }
            _ => LabelSelector::nothing(),
        }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn current_status(&self) -> ReplicaStatus {
        let status = self.status.clone().unwrap_or_default();
        ReplicaStatus {
            replicas: status.replicas,
            fully_labeled_replicas: status.fully_labeled_replicas.unwrap_or(0),
            ready_replicas: status.ready_replicas.unwrap_or(0),
            available_replicas: status.available_replicas.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            conditions: serde_json::to_value(status.conditions.unwrap_or_default())
                .ok()
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default(),
        }
    }
}

/// A metav1.LabelSelector as a selector; an empty or broken one selects nothing
/// (validation rejects both, so only a stored oddity gets here).
fn selector_or_nothing(selector: &Value) -> LabelSelector {
    match LabelSelector::from_json(selector) {
        Ok(selector) if !selector.is_empty() => selector,
        _ => LabelSelector::nothing(),
    }
}

/// A condition in the status of a ReplicaSet or ReplicationController.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The status fields the controller owns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReplicaStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: i32,
    pub ready_replicas: i32,
    pub available_replicas: i32,
    pub observed_generation: i64,
    pub conditions: Vec<ReplicaCondition>,
}

impl ReplicaStatus {
    fn to_patch(&self) -> Value {
        let conditions = if self.conditions.is_empty() {
            Value::Null
        } else {
            serde_json::to_value(&self.conditions).unwrap_or(Value::Null)
        };
        json!({"status": {
            "replicas": self.replicas,
            "fullyLabeledReplicas": self.fully_labeled_replicas,
            "readyReplicas": self.ready_replicas,
            "availableReplicas": self.available_replicas,
            "observedGeneration": self.observed_generation,
            "conditions": conditions,
        }})
    }
}

/// The `ReplicaFailure` condition: set (keeping its transition time) when `failure`
/// is given, removed otherwise.
fn with_replica_failure(
    mut conditions: Vec<ReplicaCondition>,
    failure: Option<(&str, String)>,
) -> Vec<ReplicaCondition> {
    let previous = conditions
        .iter()
        .position(|c| c.type_ == "ReplicaFailure")
        .map(|index| conditions.remove(index));
    if let Some((reason, message)) = failure {
        let since = previous
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time)
            .unwrap_or_else(|| {
                Timestamp::now()
                    .round(k8s_openapi::jiff::Unit::Second)
                    .unwrap_or(Timestamp::now())
                    .to_string()
            });
        conditions.push(ReplicaCondition {
            type_: "ReplicaFailure".into(),
            status: "True".into(),
            last_transition_time: Some(since),
            reason: Some(reason.into()),
            message: Some(message),
        });
    }
    conditions
}

/// The status the owned active `pods` make, for `owner` at generation `generation`.
pub fn compute_status<K: ReplicaKind>(owner: &K, pods: &[&Pod], now: Timestamp) -> ReplicaStatus {
    let template_labels = owner
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = pods
        .iter()
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|pod| pods::is_ready(pod)).count();
    let available = pods
        .iter()
        .filter(|pod| pods::is_available(pod, owner.min_ready_seconds(), now))
        .count();
    ReplicaStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: fully_labeled as i32,
        ready_replicas: ready as i32,
        available_replicas: available as i32,
        observed_generation: owner.meta().generation.unwrap_or(0),
        conditions: owner.current_status().conditions,
    }
}

/// The field manager of every workload controller write, as upstream's
/// controllers are recorded (from their user agent).
pub const FIELD_MANAGER: &str = "kube-controller-manager";

pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// Whether an API error means the object is gone.
pub(crate) fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// The controller of one kind.
pub struct ReplicaController<K: ReplicaKind> {
    client: kube::Client,
    owners: Arc<Cache<K>>,
    pods: Arc<Cache<Pod>>,
    expectations: Expectations,
    events: Events,
}

/// Runs the controller of kind `K` until the process ends.
pub async fn run<K: ReplicaKind>(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(ReplicaController::<K> {
        client: caches.client().clone(),
        owners: caches.get::<K>(),
        pods: caches.get::<Pod>(),
        expectations: Expectations::default(),
        events: Events::new(caches.client().clone(), K::CONTROLLER),
    });
    let queue = WorkQueue::<ObjectKey>::new();
    let mut owner_changes = controller.owners.subscribe();
    let mut pod_changes = controller.pods.subscribe();
    let owner_task = {
        let (queue, controller) = (queue.clone(), controller.clone());
        async move {
            while let Some(change) = owner_changes.recv().await {
                let key = ObjectKey::of(change.object().as_ref());
                if let Change::Deleted(_) = change {
                    controller.expectations.forget(&key);
                }
                queue.add(key);
            }
        }
    };
    let pod_task = {
        let (queue, controller) = (queue.clone(), controller.clone());
        async move {
            // The last owner seen per pod, so a pod that changes owner (or loses
            // one) wakes the owner it left.
            let mut last_owner: HashMap<String, ObjectKey> = HashMap::new();
            while let Some(change) = pod_changes.recv().await {
                controller.pod_changed(&queue, &change, &mut last_owner);
            }
        }
    };
    controller.owners.wait_synced().await;
    controller.pods.wait_synced().await;
    let workers = run_workers(K::CONTROLLER, queue, WORKERS, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    });
    tokio::join!(owner_task, pod_task, workers);
    Ok(())
}

impl<K: ReplicaKind> ReplicaController<K> {
    /// Maps a pod change to the owners to sync, and marks expectations seen.
    fn pod_changed(
        &self,
        queue: &WorkQueue<ObjectKey>,
        change: &Change<Pod>,
        last_owner: &mut HashMap<String, ObjectKey>,
    ) {
        let pod = change.object();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod.namespace().unwrap_or_default();
        let owner = pods::controller_ref(&pod.metadata)
            .filter(|r| r.kind == K::kind(&()) && r.api_version == K::api_version(&()))
            .map(|r| ObjectKey::new(&namespace, &r.name));
        let deleted = matches!(change, Change::Deleted(_));
        let previous = if deleted {
            last_owner.remove(&uid)
        } else {
            match &owner {
                Some(owner) => last_owner.insert(uid.clone(), owner.clone()),
                None => last_owner.remove(&uid),
            }
        };
        if let Some(previous) = previous.filter(|p| Some(p) != owner.as_ref()) {
            queue.add(previous);
        }
        match owner {
            Some(owner) => {
                let gone = deleted || pod.metadata.deletion_timestamp.is_some();
                self.expectations.observe(&owner, &uid, gone);
                queue.add(owner);
            }
            None if !deleted && pods::is_active(pod) => {
                // An orphan: every owner that would adopt it.
                for candidate in self.owners.list_namespace(&namespace) {
                    if pods::selector_matches(&candidate.selector(), pod.metadata.labels.as_ref()) {
                        queue.add(ObjectKey::of(candidate.as_ref()));
                    }
                }
            }
            None => {}
        }
    }

    fn pod_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Brings the pods of `key` to its desired count and writes its status.
    pub async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(owner) = self.owners.get(&key.namespace, &key.name) else {
            self.expectations.forget(key);
            return Ok(Outcome::Done);
        };
        let owned = self.claim_pods(&owner).await?;
        let mut owned_refs: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
        let mut failure = None;
        let mut result = Ok(());
        if self.expectations.satisfied(key)
            && owner.meta().deletion_timestamp.is_none()
            && let Err(error) = self.manage_replicas(&owner, key, &mut owned_refs).await
        {
            failure = Some((error.reason, format!("{:#}", error.error)));
            result = Err(error.error);
        }
        let now = Timestamp::now();
        let mut status = compute_status(owner.as_ref(), &owned_refs, now);
        status.conditions = with_replica_failure(
            status.conditions,
            failure.map(|(reason, message): (&str, String)| (reason, message)),
        );
        if status != owner.current_status() {
            let api: Api<K> = Api::namespaced(self.client.clone(), &key.namespace);
            match api
                .patch_status(&key.name, &patch_params(), &Patch::Merge(status.to_patch()))
                .await
            {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => return Ok(Outcome::Done),
                Err(error) => return Err(error.into()),
            }
        }
        result?;
        // Ready pods that are not available yet become so by the clock alone.
        let min_ready = owner.min_ready_seconds();
        let next = owned_refs
            .iter()
            .filter_map(|pod| pods::time_to_available(pod, min_ready, now))
            .filter(|wait| !wait.is_zero())
            .min();
        Ok(match next {
            Some(wait) => Outcome::RequeueAfter(
                Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(50),
            ),
            None => Outcome::Done,
        })
    }

    /// The active pods `owner` controls after adopting matching orphans and
    /// releasing owned pods that no longer match.
    async fn claim_pods(&self, owner: &Arc<K>) -> anyhow::Result<Vec<Arc<Pod>>> {
        let namespace = owner.namespace().unwrap_or_default();
        let uid = owner.uid().unwrap_or_default();
        let selector = owner.selector();
        let deleting = owner.meta().deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for pod in self.pods.list_namespace(&namespace) {
            if !pods::is_active(&pod) {
                continue;
            }
            let matches = pods::selector_matches(&selector, pod.metadata.labels.as_ref());
            match pods::controller_ref(&pod.metadata) {
                Some(reference) if reference.uid == uid => {
                    if matches {
                        owned.push(pod);
                    } else if !deleting {
                        self.set_owner(&pod, None, &uid).await?;
                    }
                }
                None if matches && !deleting => {
                    let reference = owner_reference(owner.as_ref());
                    if self.set_owner(&pod, Some(reference), &uid).await? {
                        owned.push(pod);
                    }
                }
                _ => {}
            }
        }
        Ok(owned)
    }

    /// Adopts (`Some`) or releases (`None`) `pod`. Returns whether it was changed;
    /// a pod that changed or vanished meanwhile is left for its next event.
    async fn set_owner(
        &self,
        pod: &Pod,
        reference: Option<OwnerReference>,
        owner_uid: &str,
    ) -> anyhow::Result<bool> {
        let mut references: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != owner_uid)
            .collect();
        references.extend(reference);
        let patch = json!({"metadata": {
            "ownerReferences": references,
            "resourceVersion": pod.metadata.resource_version,
            "uid": pod.metadata.uid,
        }});
        let api = self.pod_api(&pod.namespace().unwrap_or_default());
        match api
            .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    async fn manage_replicas(
        &self,
        owner: &Arc<K>,
        key: &ObjectKey,
        owned: &mut Vec<&Pod>,
    ) -> Result<(), ManageError> {
        let desired = owner.desired_replicas().max(0) as usize;
        if owned.len() < desired {
            let missing = (desired - owned.len()).min(BURST_REPLICAS);
            self.create_pods(owner, key, missing).await
        } else if owned.len() > desired {
            let surplus = (owned.len() - desired).min(BURST_REPLICAS);
            pods::sort_for_deletion(owned);
            let doomed: Vec<&Pod> = owned.drain(..surplus).collect();
            self.delete_pods(owner, key, &doomed).await
        } else {
            Ok(())
        }
    }

    /// Creates `count` pods in slow-start batches of 1, 2, 4, ...: a failing batch
    /// stops the rest, so a broken template costs one request, not hundreds.
    async fn create_pods(
        &self,
        owner: &Arc<K>,
        key: &ObjectKey,
        count: usize,
    ) -> Result<(), ManageError> {
        let Some(pod) = pod_from_template(owner.as_ref()) else {
            return Err(ManageError {
                reason: "FailedCreate",
                error: anyhow::anyhow!("{} {key} has no pod template", K::kind(&())),
            });
        };
        let api = self.pod_api(&key.namespace);
        let mut remaining = count;
        let mut batch = 1;
        while remaining > 0 {
            let size = batch.min(remaining);
            let results: Vec<Result<Pod, kube::Error>> = futures::stream::iter(0..size)
                .map(|_| {
                    let (api, pod) = (api.clone(), pod.clone());
                    async move { api.create(&post_params(), &pod).await }
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
            let mut created = Vec::new();
            let mut first_error = None;
            for result in results {
                match result {
                    Ok(pod) => {
                        self.events.publish(
                            owner.as_ref(),
                            EventType::Normal,
                            "SuccessfulCreate",
                            "Create",
                            format!("Created pod: {}", pod.name_any()),
                        );
                        created.push(pod);
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            let uids = created.iter().filter_map(|p| p.metadata.uid.clone());
            self.expectations.expect_creates(key, uids, |uid| {
                created.iter().any(|p| {
                    p.metadata.uid.as_deref() == Some(uid)
                        && self
                            .pods
                            .get(&key.namespace, &p.name_any())
                            .is_some_and(|cached| cached.metadata.uid.as_deref() == Some(uid))
                })
            });
            if let Some(error) = first_error {
                self.events.publish(
                    owner.as_ref(),
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("Error creating: {error}"),
                );
                return Err(ManageError {
                    reason: "FailedCreate",
                    error: anyhow::Error::new(error).context(format!("creating pods for {key}")),
                });
            }
            remaining -= size;
            batch *= 2;
        }
        Ok(())
    }

    async fn delete_pods(
        &self,
        owner: &Arc<K>,
        key: &ObjectKey,
        doomed: &[&Pod],
    ) -> Result<(), ManageError> {
        let api = self.pod_api(&key.namespace);
        let targets: Vec<(String, String)> = doomed
            .iter()
            .map(|pod| (pod.name_any(), pod.metadata.uid.clone().unwrap_or_default()))
            .collect();
        let results: Vec<(String, String, Result<(), kube::Error>)> =
            futures::stream::iter(targets)
                .map(|(name, uid)| {
                    let api = api.clone();
                    async move {
                        let params = DeleteParams {
                            preconditions: Some(Preconditions {
                                uid: Some(uid.clone()),
                                resource_version: None,
                            }),
                            ..DeleteParams::default()
                        };
                        let result = match api.delete(&name, &params).await {
                            Ok(_) => Ok(()),
                            Err(error) if is_not_found(&error) => Ok(()),
                            Err(error) => Err(error),
                        };
                        (name, uid, result)
                    }
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
        let mut deleted = Vec::new();
        let mut first_error = None;
        for (name, uid, result) in results {
            match result {
                Ok(()) => {
                    self.events.publish(
                        owner.as_ref(),
                        EventType::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("Deleted pod: {name}"),
                    );
                    deleted.push((name, uid));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        self.expectations
            .expect_deletes(key, deleted.iter().map(|(_, uid)| uid.clone()), |uid| {
                deleted.iter().any(|(name, deleted_uid)| {
                    deleted_uid == uid
                        && self.pods.get(&key.namespace, name).is_none_or(|cached| {
                            cached.metadata.uid.as_deref() != Some(uid)
                                || cached.metadata.deletion_timestamp.is_some()
                        })
                })
            });
        if let Some(error) = first_error {
            self.events.publish(
                owner.as_ref(),
                EventType::Warning,
                "FailedDelete",
                "Delete",
                format!("Error deleting: {error}"),
            );
            return Err(ManageError {
                reason: "FailedDelete",
                error: anyhow::Error::new(error).context(format!("deleting pods of {key}")),
            });
        }
        Ok(())
    }
}

/// A failed create or delete, with the reason the ReplicaFailure condition shows.
struct ManageError {
    reason: &'static str,
    error: anyhow::Error,
}

/// A controller owner reference to `owner`.
pub fn owner_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod `owner` creates: its template, named `<owner>-<random>`, controlled by it.
pub fn pod_from_template<K: ReplicaKind>(owner: &K) -> Option<Pod> {
    let template = owner.template()?;
    let template_meta = template.metadata.clone().unwrap_or_default();
    let mut pod = Pod {
        spec: template.spec.clone(),
        ..Pod::default()
    };
    pod.metadata.generate_name = Some(format!("{}-", owner.name_any()));
    pod.metadata.namespace = owner.namespace();
    pod.metadata.labels = template_meta.labels;
    pod.metadata.annotations = template_meta.annotations;
    pod.metadata.finalizers = template_meta.finalizers;
    pod.metadata.owner_references = Some(vec![owner_reference(owner)]);
    Some(pod)
}

/// Labels as a sorted map (for messages and tests).
pub fn labels_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.labels.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica_set(value: Value) -> ReplicaSet {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_pod_from_the_template_is_controlled_by_its_owner() {
        let rs = replica_set(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}}},
        }));
        let pod = pod_from_template(&rs).unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("web-"));
        assert_eq!(labels_of(&pod).get("app").map(String::as_str), Some("web"));
        let reference = pods::controller_ref(&pod.metadata).unwrap();
        assert_eq!(
            (reference.kind.as_str(), reference.uid.as_str()),
            ("ReplicaSet", "u1")
        );
        assert_eq!(reference.api_version, "apps/v1");
    }

    #[test]
    fn selectors_of_both_kinds() {
        let rs = replica_set(json!({"spec": {"selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]}]}}}));
        let labels: BTreeMap<String, String> = [("tier".to_string(), "b".to_string())].into();
        assert!(pods::selector_matches(&rs.selector(), Some(&labels)));
        let empty = replica_set(json!({"spec": {"selector": {}}}));
        assert!(!pods::selector_matches(&empty.selector(), Some(&labels)));
        let rc: ReplicationController =
            serde_json::from_value(json!({"spec": {"selector": {"tier": "b"}}})).unwrap();
        assert!(pods::selector_matches(&rc.selector(), Some(&labels)));
        let other: BTreeMap<String, String> = [("tier".to_string(), "c".to_string())].into();
        assert!(!pods::selector_matches(&rc.selector(), Some(&other)));
    }

    #[test]
    fn status_counts_ready_available_and_fully_labeled_pods() {
        let rs = replica_set(json!({
            "metadata": {"name": "web", "generation": 3},
            "spec": {"minReadySeconds": 10, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web", "extra": "x"}}}},
        }));
        let pod = |labels: Value, ready_at: Option<&str>| -> Pod {
            let conditions: Vec<Value> = ready_at
                .map(|t| vec![json!({"type": "Ready", "status": "True", "lastTransitionTime": t})])
                .unwrap_or_default();
            serde_json::from_value(json!({"metadata": {"labels": labels},
                "status": {"phase": "Running", "conditions": conditions}}))
            .unwrap()
        };
        let long_ready = pod(
            json!({"app": "web", "extra": "x"}),
            Some("2020-01-01T00:00:00Z"),
        );
        let just_ready = pod(json!({"app": "web"}), Some("2020-01-01T00:00:55Z"));
        let unready = pod(json!({"app": "web", "extra": "x"}), None);
        let now: Timestamp = "2020-01-01T00:01:00Z".parse().unwrap();
        let status = compute_status(&rs, &[&long_ready, &just_ready, &unready], now);
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, 2);
        assert_eq!(status.ready_replicas, 2);
        assert_eq!(status.available_replicas, 1);
        assert_eq!(status.observed_generation, 3);
    }

    #[test]
    fn the_failure_condition_keeps_its_transition_time_and_goes_away() {
        let first = with_replica_failure(vec![], Some(("FailedCreate", "quota".into())));
        assert_eq!(first.len(), 1);
        let since = first[0].last_transition_time.clone();
        let again = with_replica_failure(first, Some(("FailedCreate", "still".into())));
        assert_eq!(again[0].last_transition_time, since);
        assert_eq!(again[0].message.as_deref(), Some("still"));
        assert!(with_replica_failure(again, None).is_empty());
    }
}
