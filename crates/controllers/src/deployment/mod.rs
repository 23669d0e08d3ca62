//! The Deployment controller: rolls a Deployment's pod template out through
//! ReplicaSets, one per template (named `<deployment>-<pod-template-hash>`), as
//! upstream's pkg/controller/deployment.
//!
//! A sync ([`DeploymentController::sync`]) claims the ReplicaSets the selector
//! matches (adopting orphans, releasing what no longer matches), then:
//! - paused, or the replicas changed (a scaling event): scales the ReplicaSets,
//!   proportionally during a rolling update ([`DeploymentController::scale`]);
//! - `RollingUpdate`: grows the new ReplicaSet within `maxSurge` and shrinks old
//!   ones while `maxUnavailable` allows;
//! - `Recreate`: scales old ReplicaSets to zero, waits until their pods are gone,
//!   then scales the new one up.
//!
//! Revisions live in the `deployment.kubernetes.io/revision` annotation of each
//! ReplicaSet (an old ReplicaSet whose template comes back, as after `kubectl
//! rollout undo`, gets the next revision); old ReplicaSets beyond
//! `revisionHistoryLimit` are deleted. The status carries the replica counts and
//! the `Available` and `Progressing` conditions (with `progressDeadlineSeconds`).
//!
//! The controller waits until its own ReplicaSet writes are in the cache before it
//! decides again, so a stale cache never makes it surge twice.

pub mod util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaSelector, OwnerReference,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use krust_api::selector::LabelSelector;
use krust_events::EventType;
use kube::api::{Api, DeleteParams, Patch, Preconditions};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::replicaset::events::Events;
use crate::replicaset::{is_not_found, owner_reference, patch_params, pods, post_params};
use crate::workqueue::{Outcome, WorkQueue, run_workers};
use util::*;

/// Concurrent syncs (upstream's `--concurrent-deployment-syncs` default).
const WORKERS: usize = 5;
/// How long a ReplicaSet write is waited for in the cache before it is given up.
const WRITE_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// ReplicaSet name -> (resourceVersion written, when).
type WrittenSets = HashMap<String, (u64, Instant)>;

/// The Deployment controller.
pub struct DeploymentController {
    client: kube::Client,
    deployments: Arc<Cache<Deployment>>,
    replica_sets: Arc<Cache<ReplicaSet>>,
    pods: Arc<Cache<Pod>>,
    events: Events,
    /// Per Deployment: the ReplicaSets it wrote, with the resourceVersion written.
    written: Mutex<HashMap<ObjectKey, WrittenSets>>,
}

/// Runs the Deployment controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(DeploymentController {
        client: caches.client().clone(),
        deployments: caches.get::<Deployment>(),
        replica_sets: caches.get::<ReplicaSet>(),
        pods: caches.get::<Pod>(),
        events: Events::new(caches.client().clone(), "deployment-controller"),
        written: Mutex::new(HashMap::new()),
    });
    let queue = WorkQueue::<ObjectKey>::new();
    let mut deployment_changes = controller.deployments.subscribe();
    let mut replica_set_changes = controller.replica_sets.subscribe();
    let mut pod_changes = controller.pods.subscribe();
    let deployments_task = {
        let queue = queue.clone();
        async move {
            while let Some(change) = deployment_changes.recv().await {
                queue.add(ObjectKey::of(change.object().as_ref()));
            }
        }
    };
    let replica_sets_task = {
        let (queue, controller) = (queue.clone(), controller.clone());
        async move {
            while let Some(change) = replica_set_changes.recv().await {
                for key in controller.deployments_of_replica_set(change.object()) {
                    queue.add(key);
                }
            }
        }
    };
    let pods_task = {
        let (queue, controller) = (queue.clone(), controller.clone());
        async move {
            // Only Recreate waits on pods: for the old ones to be gone.
            while let Some(change) = pod_changes.recv().await {
                let pod = change.object();
                if matches!(change, Change::Applied(_)) && !pods::is_finished(pod) {
                    continue;
                }
                if let Some(key) = controller.recreate_deployment_of_pod(pod) {
                    queue.add(key);
                }
            }
        }
    };
    controller.deployments.wait_synced().await;
    controller.replica_sets.wait_synced().await;
    controller.pods.wait_synced().await;
    let workers = run_workers("deployment", queue, WORKERS, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    });
    tokio::join!(deployments_task, replica_sets_task, pods_task, workers);
    Ok(())
}

fn selector_of(d: &Deployment) -> LabelSelector {
    let selector = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.selector).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    match LabelSelector::from_json(&selector) {
        Ok(selector) if !selector.is_empty() => selector,
        _ => LabelSelector::nothing(),
    }
}

fn parse_revision(object: &impl Resource) -> u64 {
    object
        .meta()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

fn created(rs: &ReplicaSet) -> Timestamp {
    rs.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Oldest first, by name when created in the same second.
fn sort_by_creation(sets: &mut [ReplicaSet]) {
    sets.sort_by(|a, b| {
        created(a)
            .cmp(&created(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
}

impl DeploymentController {
    fn deployments_of_replica_set(&self, rs: &ReplicaSet) -> Vec<ObjectKey> {
        let namespace = rs.namespace().unwrap_or_default();
        if let Some(reference) = pods::controller_ref(&rs.metadata) {
            if reference.kind == "Deployment" && reference.api_version == "apps/v1" {
                return vec![ObjectKey::new(namespace, &reference.name)];
            }
            return vec![];
        }
        self.deployments
            .list_namespace(&namespace)
            .iter()
            .filter(|d| pods::selector_matches(&selector_of(d), rs.metadata.labels.as_ref()))
            .map(|d| ObjectKey::of(d.as_ref()))
            .collect()
    }

    fn recreate_deployment_of_pod(&self, pod: &Pod) -> Option<ObjectKey> {
        let namespace = pod.namespace().unwrap_or_default();
        let rs_ref = pods::controller_ref(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
        let rs = self.replica_sets.get(&namespace, &rs_ref.name)?;
        let d_ref = pods::controller_ref(&rs.metadata).filter(|r| r.kind == "Deployment")?;
        let d = self.deployments.get(&namespace, &d_ref.name)?;
        (!is_rolling_update(&d)).then(|| ObjectKey::new(namespace, &d_ref.name))
    }

    /// Whether a ReplicaSet this controller wrote is not yet current in the cache.
    fn waiting_for_own_writes(&self, key: &ObjectKey) -> bool {
        let mut written = self.written.lock().unwrap();
        let Some(sets) = written.get_mut(key) else {
            return false;
        };
        sets.retain(|name, (revision, at)| {
            let cached = self.replica_sets.get(&key.namespace, name);
            let behind = cached.is_none_or(|rs| parse_revision(rs.as_ref()) < *revision);
            behind && at.elapsed() < WRITE_VISIBILITY_TIMEOUT
        });
        let waiting = !sets.is_empty();
        if !waiting {
            written.remove(key);
        }
        waiting
    }

    fn wrote(&self, key: &ObjectKey, rs: &ReplicaSet) {
        self.written
            .lock()
            .unwrap()
            .entry(key.clone())
            .or_default()
            .insert(rs.name_any(), (parse_revision(rs), Instant::now()));
    }

    fn rs_api(&self, namespace: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Reconciles one Deployment.
    pub async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(cached) = self.deployments.get(&key.namespace, &key.name) else {
            self.written.lock().unwrap().remove(key);
            return Ok(Outcome::Done);
        };
        if self.waiting_for_own_writes(key) {
            // The cache's ReplicaSet event wakes this key again; the requeue only
            // covers a write that never shows (its ReplicaSet deleted meanwhile).
            return Ok(Outcome::RequeueAfter(Duration::from_secs(1)));
        }
        let mut d = (*cached).clone();
        if selector_of(&d).is_empty() || selector_of(&d) == LabelSelector::nothing() {
            self.events.publish(
                &d,
                EventType::Warning,
                "SelectingAll",
                "Select",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            return Ok(Outcome::Done);
        }
        let sets = self.claim_replica_sets(&d).await?;
        if d.metadata.deletion_timestamp.is_some() {
            return self.sync_status(key, &d, &sets, false).await;
        }
        self.check_paused_conditions(&mut d);
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let (new, old) = self.find_new_and_old(&mut d, sets.clone());
        let scaling = [new.as_ref()]
            .into_iter()
            .flatten()
            .chain(old.iter())
            .filter(|rs| rs_replicas(rs) > 0)
            .any(|rs| desired_replicas_annotation(rs).is_some_and(|n| n != spec_replicas(&d)));
        if paused || scaling {
            return self.sync_scaling(key, d, sets, paused).await;
        }
        if is_rolling_update(&d) {
            self.rollout_rolling(key, d, sets).await
        } else {
            self.rollout_recreate(key, d, sets).await
        }
    }

    /// The ReplicaSets `d` controls after adoption and release.
    async fn claim_replica_sets(&self, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
        let namespace = d.namespace().unwrap_or_default();
        let uid = d.uid().unwrap_or_default();
        let selector = selector_of(d);
        let deleting = d.metadata.deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for rs in self.replica_sets.list_namespace(&namespace) {
            if rs.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let matches = pods::selector_matches(&selector, rs.metadata.labels.as_ref());
            match pods::controller_ref(&rs.metadata) {
                Some(reference) if reference.uid == uid => {
                    if matches {
                        owned.push((*rs).clone());
                    } else if !deleting {
                        self.set_owner(&rs, None, &uid).await?;
                    }
                }
                None if matches && !deleting => {
                    if let Some(adopted) =
                        self.set_owner(&rs, Some(owner_reference(d)), &uid).await?
                    {
                        owned.push(adopted);
                    }
                }
                _ => {}
            }
        }
        sort_by_creation(&mut owned);
        Ok(owned)
    }

    async fn set_owner(
        &self,
        rs: &ReplicaSet,
        reference: Option<OwnerReference>,
        owner_uid: &str,
    ) -> anyhow::Result<Option<ReplicaSet>> {
        let mut references: Vec<OwnerReference> = rs
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
            "resourceVersion": rs.metadata.resource_version,
            "uid": rs.metadata.uid,
        }});
        let api = self.rs_api(&rs.namespace().unwrap_or_default());
        match api
            .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(rs) => Ok(Some(rs)),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Splits `sets` into the one running `d`'s template (the oldest such) and the
    /// rest, and brings the new one's annotations (revision) up to date in memory.
    fn find_new_and_old(
        &self,
        d: &mut Deployment,
        sets: Vec<ReplicaSet>,
    ) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let mut new = None;
        let mut old = Vec::new();
        for rs in sets {
            let same = rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template));
            if same && new.is_none() {
                new = Some(rs);
            } else {
                old.push(rs);
            }
        }
        (new, old)
    }

    /// The revision the new ReplicaSet gets: one past the newest old one.
    fn next_revision(old: &[ReplicaSet]) -> i64 {
        old.iter().map(revision).max().unwrap_or(0) + 1
    }

    /// The new ReplicaSet with its revision annotations current, created when
    /// missing and `create` is set.
    async fn new_replica_set(
        &self,
        key: &ObjectKey,
        d: &mut Deployment,
        new: Option<ReplicaSet>,
        old: &[ReplicaSet],
        create: bool,
    ) -> anyhow::Result<Option<ReplicaSet>> {
        let revision = Self::next_revision(old);
        if let Some(mut rs) = new {
            let mut updated = rs.clone();
            let annotations_changed = set_new_rs_annotations(d, &mut updated, revision);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let min_ready_changed = updated
                .spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
                != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                let patch = json!({
                    "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": updated.metadata.annotations},
                    "spec": {"minReadySeconds": min_ready.unwrap_or(0)},
                });
                rs = self
                    .rs_api(&key.namespace)
                    .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| {
                        format!("updating the annotations of ReplicaSet {}", rs.name_any())
                    })?;
                self.wrote(key, &rs);
            }
            let has_deadline = progress_deadline(d).is_some();
            let status = d.status.get_or_insert_with(DeploymentStatus::default);
            if has_deadline && condition(status, "Progressing").is_none() {
                set_condition(
                    status,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        format!("Found new replica set \"{}\"", rs.name_any()),
                    ),
                );
            }
            self.set_deployment_revision(key, d, util::revision(&rs))
                .await?;
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = pod_template_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut selector: MetaSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let all: Vec<&ReplicaSet> = old.iter().collect();
        let replicas = new_rs_new_replicas(d, &all, 0);
        let mut rs = ReplicaSet::default();
        rs.metadata.name = Some(format!("{}-{hash}", d.name_any()));
        rs.metadata.namespace = Some(key.namespace.clone());
        rs.metadata.labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
        rs.metadata.owner_references = Some(vec![owner_reference(d)]);
        set_new_rs_annotations(d, &mut rs, revision);
        let (replica_annotations, _) = replicas_annotations(d, &rs);
        rs.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .extend(replica_annotations);
        rs.spec = Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        });
        let api = self.rs_api(&key.namespace);
        match api.create(&post_params(), &rs).await {
            Ok(created) => {
                self.wrote(key, &created);
                if replicas > 0 {
                    self.events.publish(
                        d,
                        EventType::Normal,
                        "ScalingReplicaSet",
                        "Scale",
                        format!(
                            "Scaled up replica set {} from 0 to {replicas}",
                            created.name_any()
                        ),
                    );
                }
                let has_deadline = progress_deadline(d).is_some();
                let status = d.status.get_or_insert_with(DeploymentStatus::default);
                if has_deadline {
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetCreated",
                            format!("Created new replica set \"{}\"", created.name_any()),
                        ),
                    );
                }
                self.set_deployment_revision(key, d, revision).await?;
                Ok(Some(created))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // Someone has that name: ours from a sync the cache has not shown yet,
                // or another template hashing the same (a collision).
                let existing = api.get(&rs.name_any()).await?;
                let ours = pods::controller_ref(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    self.wrote(key, &existing);
                    return Ok(Some(existing));
                }
                let count = collision_count.unwrap_or(0) + 1;
                let patch = json!({"status": {"collisionCount": count}});
                Api::<Deployment>::namespaced(self.client.clone(), &key.namespace)
                    .patch_status(&key.name, &patch_params(), &Patch::Merge(&patch))
                    .await?;
                anyhow::bail!(
                    "the hash of Deployment {key}'s template collides with ReplicaSet {}; retrying with collisionCount {count}",
                    existing.name_any()
                )
            }
            Err(error) => {
                self.events.publish(
                    d,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!(
                        "Failed to create new replica set \"{}\": {error}",
                        rs.name_any()
                    ),
                );
                let has_deadline = progress_deadline(d).is_some();
                let status = d.status.get_or_insert_with(DeploymentStatus::default);
                if has_deadline {
                    set_condition(
                        status,
                        new_condition(
                            "Progressing",
                            "False",
                            "ReplicaSetCreateError",
                            format!(
                                "Failed to create new replica set \"{}\": {error}",
                                rs.name_any()
                            ),
                        ),
                    );
                }
                let _ = self
                    .write_status(key, d, d.status.clone().unwrap_or_default())
                    .await;
                Err(anyhow::Error::new(error)
                    .context(format!("creating the new ReplicaSet of {key}")))
            }
        }
    }

    /// Copies the new ReplicaSet's revision onto the Deployment's annotation.
    async fn set_deployment_revision(
        &self,
        key: &ObjectKey,
        d: &mut Deployment,
        revision: i64,
    ) -> anyhow::Result<()> {
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION));
        if current.map(String::as_str) == Some(revision.to_string().as_str()) {
            return Ok(());
        }
        let patch =
            json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}}});
        let updated = Api::<Deployment>::namespaced(self.client.clone(), &key.namespace)
            .patch(&key.name, &patch_params(), &Patch::Merge(&patch))
            .await?;
        d.metadata.annotations = updated.metadata.annotations;
        d.metadata.resource_version = updated.metadata.resource_version;
        Ok(())
    }

    /// Scales `rs` to `size` and stamps the replicas annotations; records a
    /// ScalingReplicaSet event when the size changed. Returns whether it changed.
    async fn scale_replica_set(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        rs: &mut ReplicaSet,
        size: i32,
    ) -> anyhow::Result<bool> {
        let (annotations, stale) = replicas_annotations(d, rs);
        let from = rs_replicas(rs);
        if from == size && !stale {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"resourceVersion": rs.metadata.resource_version, "annotations": annotations},
            "spec": {"replicas": size},
        });
        let updated = self
            .rs_api(&key.namespace)
            .patch(&rs.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("scaling ReplicaSet {} to {size}", rs.name_any()))?;
        self.wrote(key, &updated);
        *rs = updated;
        if from != size {
            let direction = if size > from { "up" } else { "down" };
            self.events.publish(
                d,
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!(
                    "Scaled {direction} replica set {} from {from} to {size}",
                    rs.name_any()
                ),
            );
        }
        Ok(from != size)
    }

    fn check_paused_conditions(&self, d: &mut Deployment) {
        if progress_deadline(d).is_none() {
            return;
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let status = d.status.get_or_insert_with(DeploymentStatus::default);
        let reason = condition(status, "Progressing").and_then(|c| c.reason.clone());
        if paused && reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentPaused",
                    "Deployment is paused".into(),
                ),
            );
        } else if !paused && reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                status,
                new_condition(
                    "Progressing",
                    "Unknown",
                    "DeploymentResumed",
                    "Deployment is resumed".into(),
                ),
            );
        }
    }

    /// Paused or scaled: sizes the ReplicaSets without rolling anything out.
    async fn sync_scaling(
        &self,
        key: &ObjectKey,
        mut d: Deployment,
        sets: Vec<ReplicaSet>,
        paused: bool,
    ) -> anyhow::Result<Outcome> {
        let (new, old) = self.find_new_and_old(&mut d, sets);
        let mut new = self.new_replica_set(key, &mut d, new, &old, false).await?;
        let mut old = old;
        self.scale(key, &d, &mut new, &mut old).await?;
        if paused {
            self.cleanup(key, &d, &old).await?;
        }
        let all: Vec<ReplicaSet> = new.iter().cloned().chain(old).collect();
        self.sync_status(key, &d, &all, false).await
    }

    /// Upstream's `scale`: one active ReplicaSet takes the new size; a saturated new
    /// one retires the old ones; otherwise a rolling update shares the change out
    /// in proportion to each ReplicaSet's size.
    async fn scale(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        new: &mut Option<ReplicaSet>,
        old: &mut [ReplicaSet],
    ) -> anyhow::Result<()> {
        let desired = spec_replicas(d);
        let active: Vec<bool> = old.iter().map(|rs| rs_replicas(rs) > 0).collect();
        let new_active = new.as_ref().is_some_and(|rs| rs_replicas(rs) > 0);
        let active_count = active.iter().filter(|a| **a).count() + usize::from(new_active);
        if active_count <= 1 {
            let target: Option<&mut ReplicaSet> =
                if new_active || (active_count == 0 && new.is_some()) {
                    new.as_mut()
                } else if active_count == 1 {
                    old.iter_mut().find(|rs| rs_replicas(rs) > 0)
                } else {
                    // None active and no new one: the newest old one.
                    old.iter_mut().max_by(|a, b| created(a).cmp(&created(b)))
                };
            if let Some(rs) = target
                && rs_replicas(rs) != desired
            {
                self.scale_replica_set(key, d, rs, desired).await?;
            }
            return Ok(());
        }
        let saturated = new.as_ref().is_some_and(|rs| {
            rs_replicas(rs) == desired
                && desired_replicas_annotation(rs) == Some(desired)
                && rs_available(rs) == desired
        });
        if saturated {
            for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
                self.scale_replica_set(key, d, rs, 0).await?;
            }
            return Ok(());
        }
        if !is_rolling_update(d) {
            return Ok(());
        }
        let mut sets: Vec<&mut ReplicaSet> = new
            .iter_mut()
            .chain(old.iter_mut())
            .filter(|rs| rs_replicas(rs) > 0)
            .collect();
        let total: i32 = sets.iter().map(|rs| rs_replicas(rs)).sum();
        let allowed = if desired > 0 {
            desired + max_surge(d)
        } else {
            0
        };
        let to_add = allowed - total;
        // Larger first; among equals, newer first when growing, older when shrinking.
        sets.sort_by(|a, b| {
            rs_replicas(b).cmp(&rs_replicas(a)).then_with(|| {
                if to_add > 0 {
                    created(b).cmp(&created(a))
                } else {
                    created(a).cmp(&created(b))
                }
            })
        });
        let mut sizes: Vec<i32> = Vec::with_capacity(sets.len());
        let mut added = 0;
        for rs in &sets {
            let share = if to_add != 0 {
                proportion(rs, d, to_add, added)
            } else {
                0
            };
            sizes.push(rs_replicas(rs) + share);
            added += share;
        }
        if to_add != 0 && !sizes.is_empty() {
            sizes[0] = (sizes[0] + to_add - added).max(0);
        }
        for (rs, size) in sets.into_iter().zip(sizes) {
            self.scale_replica_set(key, d, rs, size).await?;
        }
        Ok(())
    }

    async fn rollout_rolling(
        &self,
        key: &ObjectKey,
        mut d: Deployment,
        sets: Vec<ReplicaSet>,
    ) -> anyhow::Result<Outcome> {
        let (new, mut old) = self.find_new_and_old(&mut d, sets);
        let Some(mut new) = self.new_replica_set(key, &mut d, new, &old, true).await? else {
            anyhow::bail!("no new ReplicaSet for {key}");
        };
        let desired = spec_replicas(&d);
        // Grow the new ReplicaSet within the surge.
        let all: Vec<&ReplicaSet> = std::iter::once(&new).chain(old.iter()).collect();
        let target = if rs_replicas(&new) > desired {
            desired
        } else {
            new_rs_new_replicas(&d, &all, rs_replicas(&new))
        };
        if target != rs_replicas(&new) && self.scale_replica_set(key, &d, &mut new, target).await? {
            return self.sync_rollout_status(key, &d, &new, &old).await;
        }
        if self.reconcile_old(key, &d, &new, &mut old).await? {
            return self.sync_rollout_status(key, &d, &new, &old).await;
        }
        let all: Vec<ReplicaSet> = std::iter::once(new.clone())
            .chain(old.iter().cloned())
            .collect();
        if is_complete(&d, &calculate_status(&d, &all, Some(&new))) {
            self.cleanup(key, &d, &old).await?;
        }
        self.sync_rollout_status(key, &d, &new, &old).await
    }

    /// Shrinks old ReplicaSets as far as maxUnavailable allows: unhealthy replicas
    /// first, then available ones, oldest ReplicaSet first.
    async fn reconcile_old(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        new: &ReplicaSet,
        old: &mut [ReplicaSet],
    ) -> anyhow::Result<bool> {
        let old_pods: i32 = old.iter().map(rs_replicas).sum();
        if old_pods == 0 {
            return Ok(false);
        }
        let all_pods = old_pods + rs_replicas(new);
        let min_available = spec_replicas(d) - max_unavailable(d);
        let new_unavailable = rs_replicas(new) - rs_available(new);
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok(false);
        }
        let mut scaled_down = 0;
        // Unhealthy replicas of old ReplicaSets cost no availability.
        for rs in old.iter_mut() {
            if scaled_down >= max_scaled_down {
                break;
            }
            let unhealthy = rs_replicas(rs) - rs_available(rs);
            if rs_replicas(rs) == 0 || unhealthy <= 0 {
                continue;
            }
            let count = (max_scaled_down - scaled_down).min(unhealthy);
            let size = rs_replicas(rs) - count;
            self.scale_replica_set(key, d, rs, size).await?;
            scaled_down += count;
        }
        // Then as many available ones as keep minAvailable.
        let available: i32 = old.iter().map(rs_available).sum::<i32>() + rs_available(new);
        if available > min_available {
            let mut budget = available - min_available;
            for rs in old.iter_mut() {
                if budget <= 0 {
                    break;
                }
                if rs_replicas(rs) == 0 {
                    continue;
                }
                let count = rs_replicas(rs).min(budget);
                let size = rs_replicas(rs) - count;
                self.scale_replica_set(key, d, rs, size).await?;
                budget -= count;
                scaled_down += count;
            }
        }
        Ok(scaled_down > 0)
    }

    async fn rollout_recreate(
        &self,
        key: &ObjectKey,
        mut d: Deployment,
        sets: Vec<ReplicaSet>,
    ) -> anyhow::Result<Outcome> {
        let (new, mut old) = self.find_new_and_old(&mut d, sets);
        let new = self.new_replica_set(key, &mut d, new, &old, false).await?;
        let mut scaled = false;
        for rs in old.iter_mut().filter(|rs| rs_replicas(rs) > 0) {
            scaled |= self.scale_replica_set(key, &d, rs, 0).await?;
        }
        let placeholder = ReplicaSet::default();
        if scaled || self.old_pods_running(&key.namespace, &old) {
            return self
                .sync_rollout_status(key, &d, new.as_ref().unwrap_or(&placeholder), &old)
                .await;
        }
        let new = match new {
            Some(new) => Some(new),
            None => self.new_replica_set(key, &mut d, None, &old, true).await?,
        };
        let Some(mut new) = new else {
            anyhow::bail!("no new ReplicaSet for {key}");
        };
        let desired = spec_replicas(&d);
        if rs_replicas(&new) != desired || replicas_annotations(&d, &new).1 {
            self.scale_replica_set(key, &d, &mut new, desired).await?;
        }
        let all: Vec<ReplicaSet> = std::iter::once(new.clone())
            .chain(old.iter().cloned())
            .collect();
        if is_complete(&d, &calculate_status(&d, &all, Some(&new))) {
            self.cleanup(key, &d, &old).await?;
        }
        self.sync_rollout_status(key, &d, &new, &old).await
    }

    /// Whether any pod of the old ReplicaSets still runs (or may).
    fn old_pods_running(&self, namespace: &str, old: &[ReplicaSet]) -> bool {
        if old.iter().any(|rs| rs_status_replicas(rs) > 0) {
            return true;
        }
        let uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        self.pods.list_namespace(namespace).iter().any(|pod| {
            !pods::is_finished(pod)
                && pods::controller_ref(&pod.metadata)
                    .is_some_and(|r| uids.contains(&r.uid.as_str()))
        })
    }

    /// Deletes the oldest old ReplicaSets beyond revisionHistoryLimit that have
    /// no pods left.
    async fn cleanup(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        old: &[ReplicaSet],
    ) -> anyhow::Result<()> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut candidates: Vec<&ReplicaSet> = old
            .iter()
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let surplus = candidates.len() as i64 - i64::from(limit.max(0));
        if surplus <= 0 {
            return Ok(());
        }
        candidates.sort_by(|a, b| {
            revision(a)
                .cmp(&revision(b))
                .then_with(|| created(a).cmp(&created(b)))
        });
        for rs in candidates.into_iter().take(surplus as usize) {
            let idle = rs_replicas(rs) == 0
                && rs_status_replicas(rs) == 0
                && rs
                    .status
                    .as_ref()
                    .and_then(|s| s.observed_generation)
                    .unwrap_or(0)
                    >= rs.metadata.generation.unwrap_or(0);
            if !idle {
                continue;
            }
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: rs.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match self
                .rs_api(&key.namespace)
                .delete(&rs.name_any(), &params)
                .await
            {
                Ok(_) => {}
                Err(error) if is_not_found(&error) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// Writes the status with the Progressing condition brought up to date, and
    /// asks to be woken when the progress deadline passes.
    async fn sync_rollout_status(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        new: &ReplicaSet,
        old: &[ReplicaSet],
    ) -> anyhow::Result<Outcome> {
        let all: Vec<ReplicaSet> = std::iter::once(new.clone())
            .filter(|rs| rs.metadata.name.is_some())
            .chain(old.iter().cloned())
            .collect();
        let has_new = new.metadata.name.is_some();
        let mut status = calculate_status(d, &all, has_new.then_some(new));
        let mut wake = None;
        if let Some(deadline) = progress_deadline(d) {
            let current = condition(&status, "Progressing").cloned();
            let timed_out_already = current.as_ref().and_then(|c| c.reason.as_deref())
                == Some("ProgressDeadlineExceeded");
            if !timed_out_already {
                let name = new.name_any();
                if has_new && is_complete(d, &status) {
                    set_condition(
                        &mut status,
                        new_condition(
                            "Progressing",
                            "True",
                            "NewReplicaSetAvailable",
                            format!("ReplicaSet \"{name}\" has successfully progressed."),
                        ),
                    );
                } else if has_new && is_progressing(d, &status) {
                    let mut condition = new_condition(
                        "Progressing",
                        "True",
                        "ReplicaSetUpdated",
                        format!("ReplicaSet \"{name}\" is progressing."),
                    );
                    if let Some(current) = current.as_ref().filter(|c| c.status == "True") {
                        condition.last_transition_time = current.last_transition_time.clone();
                    }
                    remove_condition(&mut status, "Progressing");
                    set_condition(&mut status, condition);
                } else if let Some(current) = current
                    .as_ref()
                    .filter(|c| c.reason.as_deref() != Some("NewReplicaSetAvailable"))
                {
                    let since = current
                        .last_update_time
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or_else(Timestamp::now);
                    let until = since + SignedDuration::from_secs(deadline);
                    let now = Timestamp::now();
                    if now >= until {
                        set_condition(
                            &mut status,
                            new_condition(
                                "Progressing",
                                "False",
                                "ProgressDeadlineExceeded",
                                format!("ReplicaSet \"{name}\" has timed out progressing."),
                            ),
                        );
                        self.events.publish(
                            d,
                            EventType::Warning,
                            "ProgressDeadlineExceeded",
                            "Progress",
                            format!("Deployment \"{}\" has timed out progressing.", d.name_any()),
                        );
                    } else {
                        wake = Some(
                            Duration::try_from(until.duration_since(now)).unwrap_or_default()
                                + Duration::from_millis(100),
                        );
                    }
                }
            }
            // Still rolling: look again once the deadline could have passed.
            if wake.is_none()
                && !is_complete(d, &status)
                && let Some(current) =
                    condition(&status, "Progressing").filter(|c| c.status == "True")
            {
                let since = current
                    .last_update_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or_else(Timestamp::now);
                let until = since + SignedDuration::from_secs(deadline);
                wake = Some(
                    Duration::try_from(until.duration_since(Timestamp::now())).unwrap_or_default()
                        + Duration::from_millis(100),
                );
            }
        }
        // A ReplicaSet that cannot create or delete pods says so on the Deployment.
        match replica_failure(&all) {
            Some(failure) => set_condition(&mut status, failure),
            None => remove_condition(&mut status, "ReplicaFailure"),
        }
        self.write_status(key, d, status).await?;
        Ok(wake.map_or(Outcome::Done, Outcome::RequeueAfter))
    }

    async fn sync_status(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        all: &[ReplicaSet],
        _rollout: bool,
    ) -> anyhow::Result<Outcome> {
        let template = d
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .unwrap_or_default();
        let new = all.iter().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &template))
        });
        let status = calculate_status(d, all, new);
        self.write_status(key, d, status).await?;
        Ok(Outcome::Done)
    }

    async fn write_status(
        &self,
        key: &ObjectKey,
        d: &Deployment,
        status: DeploymentStatus,
    ) -> anyhow::Result<()> {
        let stored = self
            .deployments
            .get(&key.namespace, &key.name)
            .and_then(|d| d.status.clone());
        if stored.as_ref() == Some(&status) {
            return Ok(());
        }
        let _ = d;
        let patch = json!({"status": status});
        match Api::<Deployment>::namespaced(self.client.clone(), &key.namespace)
            .patch_status(&key.name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

/// The first `ReplicaFailure` condition among `sets` (new one first), as the
/// Deployment's own (upstream's `getReplicaFailures`).
fn replica_failure(sets: &[ReplicaSet]) -> Option<DeploymentCondition> {
    sets.iter().find_map(|rs| {
        let condition = rs
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "ReplicaFailure")?;
        Some(DeploymentCondition {
            type_: condition.type_.clone(),
            status: condition.status.clone(),
            reason: condition.reason.clone(),
            message: condition.message.clone(),
            last_update_time: condition.last_transition_time.clone(),
            last_transition_time: condition.last_transition_time.clone(),
        })
    })
}

/// The status the ReplicaSets make (upstream's `calculateStatus`): counts, the
/// observed generation and the Available condition; other conditions as stored.
pub fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let mut status = d.status.clone().unwrap_or_default();
    let desired = spec_replicas(d);
    let available: i32 = all.iter().map(rs_available).sum();
    status.replicas = Some(all.iter().map(rs_status_replicas).sum());
    status.updated_replicas = Some(new.map(rs_status_replicas).unwrap_or(0));
    status.ready_replicas = Some(all.iter().map(rs_ready).sum());
    status.available_replicas = Some(available);
    status.unavailable_replicas = Some((desired - available).max(0));
    status.observed_generation = d.metadata.generation;
    if available >= desired - max_unavailable(d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}
