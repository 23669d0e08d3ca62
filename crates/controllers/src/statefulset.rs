//! The StatefulSet controller (upstream's `pkg/controller/statefulset`): pods with a
//! stable identity, `<set>-<ordinal>`, each with its own PersistentVolumeClaims.
//!
//! - Identity: pod `<set>-<ordinal>` (ordinals from `spec.ordinals.start`), hostname
//!   the pod name, subdomain `serviceName`, labels
//!   `statefulset.kubernetes.io/pod-name`, `apps.kubernetes.io/pod-index` and
//!   `controller-revision-hash` (the revision's name).
//! - `volumeClaimTemplates`: claim `<template>-<set>-<ordinal>` created before its
//!   pod and mounted in place of the template's volume of the same name.
//!   `persistentVolumeClaimRetentionPolicy` is carried out with owner references, as
//!   upstream does: `whenDeleted: Delete` makes the set an owner of every claim,
//!   `whenScaled: Delete` makes a condemned pod the owner of its claims, and the
//!   garbage collector deletes them with their owner.
//! - `podManagementPolicy`: `OrderedReady` creates pods one by one in ordinal order,
//!   each once its predecessors are Running and Ready, and removes them highest
//!   first, one at a time; `Parallel` does both all at once.
//! - Updates: every template is kept as a ControllerRevision (`currentRevision`,
//!   `updateRevision`, `revisionHistoryLimit`). `RollingUpdate` replaces pods from
//!   the highest ordinal down to `partition`, one at a time, each once all pods are
//!   Running and Ready; `OnDelete` gives the new template only to pods that someone
//!   else deleted.
//!
//! Pods are the set's by controller owner reference; orphans named like its pods
//! that match its selector are adopted, owned pods that stop matching are released.
//!
//! Not done: `maxUnavailable` for rolling updates (alpha upstream).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::cache::{Cache, Caches, ObjectKey};
use crate::workload::{
    Events, REVISION_HASH_LABEL, RevisionOutcome, adopters, claim_pods, controller_key,
    controller_uid, ensure_revision, is_pod_finished, is_pod_ready, is_pod_terminating,
    pod_from_template, pod_phase, revision_template, template_revision_data, to_chrono,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// Label: the name of a StatefulSet pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label: the ordinal of a StatefulSet pod.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the StatefulSet controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(StatefulSetController {
        client: caches.client().clone(),
        sets: caches.get::<StatefulSet>(),
        pods: caches.get::<Pod>(),
        claims: caches.get::<PersistentVolumeClaim>(),
        revisions: caches.get::<ControllerRevision>(),
        events: Events::new(caches.client().clone(), "statefulset-controller"),
    });
    let queue = WorkQueue::new();
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.sets.subscribe();
            while let Some(change) = changes.recv().await {
                queue.add(ObjectKey::of(change.object().as_ref()));
            }
        });
    }
    {
        let (controller, queue) = (controller.clone(), queue.clone());
        tokio::spawn(async move {
            let mut changes = controller.pods.subscribe();
            while let Some(change) = changes.recv().await {
                let pod = change.object();
                match controller_key(&pod.metadata, "StatefulSet") {
                    Some(owner) => queue.add(owner),
                    None => {
                        let sets = controller
                            .sets
                            .list_namespace(&pod.namespace().unwrap_or_default());
                        let selector = |set: &StatefulSet| {
                            serde_json::to_value(set.spec.as_ref().map(|s| &s.selector))
                                .unwrap_or_default()
                        };
                        for adopter in adopters(&sets, pod, selector) {
                            queue.add(adopter);
                        }
                    }
                }
            }
        });
    }
    controller.sets.wait_synced().await;
    controller.pods.wait_synced().await;
    controller.claims.wait_synced().await;
    controller.revisions.wait_synced().await;
    run_workers("statefulset", queue, 4, |key| controller.clone().sync(key)).await;
    Ok(())
}

struct StatefulSetController {
    client: Client,
    sets: Arc<Cache<StatefulSet>>,
    pods: Arc<Cache<Pod>>,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    revisions: Arc<Cache<ControllerRevision>>,
    events: Events,
}

/// The ordinal of the pod `name` of the set `set`, if it is one of its names.
pub fn ordinal_of(set: &str, name: &str) -> Option<i32> {
    let rest = name.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || (rest.len() > 1 && rest.starts_with('0'))
    {
        return None;
    }
    rest.parse().ok()
}

/// The name of the claim of template `claim` for the pod of `ordinal`.
pub fn claim_name(claim: &str, set: &str, ordinal: i32) -> String {
    format!("{claim}-{set}-{ordinal}")
}

/// Whether a pod counts as healthy for ordered progress: Running, Ready, not going.
fn is_healthy(pod: &Pod) -> bool {
    pod_phase(pod) == "Running" && is_pod_ready(pod) && !is_pod_terminating(pod)
}

/// What one pass over a set's pods should do next, from its pods' states (a plain
/// function of what is observed, so the ordering rules are unit tested).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Ordinals whose pods to create.
    pub create: Vec<i32>,
    /// Ordinals whose pods to delete (failed, condemned, or outdated).
    pub delete: Vec<i32>,
}

/// The state of one pod, as the plan sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodState {
    pub ordinal: i32,
    pub healthy: bool,
    pub terminating: bool,
    pub finished: bool,
    /// Whether it runs the update revision.
    pub updated: bool,
}

/// Decides a pass: `wanted` is the ordinal range, `pods` what exists.
pub fn plan(
    wanted: std::ops::Range<i32>,
    pods: &[PodState],
    ordered: bool,
    rolling_partition: Option<i32>,
) -> Plan {
    let mut plan = Plan::default();
    let by_ordinal: BTreeMap<i32, &PodState> = pods.iter().map(|p| (p.ordinal, p)).collect();
    // 1. Replicas in ordinal order: create missing, replace finished.
    for ordinal in wanted.clone() {
        match by_ordinal.get(&ordinal) {
            None => {
                plan.create.push(ordinal);
                if ordered {
                    return plan;
                }
            }
            Some(pod) if pod.finished && !pod.terminating => {
                plan.delete.push(ordinal);
                if ordered {
                    return plan;
                }
            }
            Some(pod) if ordered && !pod.healthy => return plan,
            Some(_) => {}
        }
    }
    // 2. Condemned pods, highest first; ordered: one at a time, all others healthy.
    let mut condemned: Vec<&PodState> = pods
        .iter()
        .filter(|p| !wanted.contains(&p.ordinal))
        .collect();
    condemned.sort_by_key(|p| std::cmp::Reverse(p.ordinal));
    if ordered && !condemned.is_empty() {
        if pods
            .iter()
            .all(|p| p.healthy || (p.terminating && !wanted.contains(&p.ordinal)))
            && let Some(pod) = condemned.iter().find(|p| !p.terminating)
            && condemned
                .iter()
                .all(|p| !p.terminating || p.ordinal < pod.ordinal)
        {
            plan.delete.push(pod.ordinal);
        }
        return plan;
    }
    plan.delete.extend(
        condemned
            .iter()
            .filter(|p| !p.terminating)
            .map(|p| p.ordinal),
    );
    // 3. Rolling update: highest outdated ordinal at or above the partition, once
    // every replica is healthy.
    if let Some(partition) = rolling_partition {
        let replicas: Vec<&PodState> = pods
            .iter()
            .filter(|p| wanted.contains(&p.ordinal))
            .collect();
        let all_healthy = replicas.len() == wanted.len() && replicas.iter().all(|p| p.healthy);
        if all_healthy
            && let Some(pod) = replicas
                .iter()
                .filter(|p| p.ordinal >= wanted.start + partition && !p.updated)
                .max_by_key(|p| p.ordinal)
        {
            plan.delete.push(pod.ordinal);
        }
    }
    plan
}

impl StatefulSetController {
    async fn sync(self: Arc<Self>, key: ObjectKey) -> anyhow::Result<Outcome> {
        let Some(set) = self.sets.get(&key.namespace, &key.name) else {
            return Ok(Outcome::Done);
        };
        if set.metadata.deletion_timestamp.is_some() {
            return Ok(Outcome::Done);
        }
        let uid = set.uid().unwrap_or_default();
        let name = set.name_any();
        let spec = set.spec.clone().unwrap_or_default();
        let mut status = set.status.clone().unwrap_or_default();
        let revisions_api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), &key.namespace);
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), &key.namespace);
        let sets_api: Api<StatefulSet> = Api::namespaced(self.client.clone(), &key.namespace);

        // Revisions: the one of the current template, and the one pods had before.
        let owned_revisions: Vec<Arc<ControllerRevision>> = self
            .revisions
            .list_namespace(&key.namespace)
            .into_iter()
            .filter(|r| controller_uid(&r.metadata, "StatefulSet") == Some(uid.as_str()))
            .collect();
        let selector_labels = spec.selector.match_labels.clone().unwrap_or_default();
        let data = template_revision_data(&spec.template);
        let collision_count = status.collision_count.unwrap_or(0);
        let update_revision = match ensure_revision(
            &revisions_api,
            set.as_ref(),
            &owned_revisions,
            data,
            selector_labels.clone(),
            collision_count,
        )
        .await?
        {
            RevisionOutcome::Revision(revision) => revision,
            RevisionOutcome::Collision => {
                status.collision_count = Some(collision_count + 1);
                let mut updated = (*set).clone();
                updated.status = Some(status);
                sets_api
                    .replace_status(&name, &PostParams::default(), &updated)
                    .await?;
                return Ok(Outcome::Done);
            }
        };
        let update_name = update_revision.name_any();
        let current_name = status
            .current_revision
            .clone()
            .filter(|current| owned_revisions.iter().any(|r| &r.name_any() == current))
            .unwrap_or_else(|| update_name.clone());
        let mut templates: HashMap<String, PodTemplateSpec> = HashMap::new();
        templates.insert(update_name.clone(), spec.template.clone());
        for revision in &owned_revisions {
            if let Some(template) = revision_template(revision) {
                templates.entry(revision.name_any()).or_insert(template);
            }
        }

        let selector = serde_json::to_value(&spec.selector)?;
        let candidates = self.pods.list_namespace(&key.namespace);
        let pods = claim_pods(
            &self.client,
            set.as_ref(),
            &selector,
            candidates,
            |pod| ordinal_of(&name, &pod.name_any()).is_some(),
            None,
        )
        .await?;
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let wanted = start..start + replicas;
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for pod in &pods {
            if let Some(ordinal) = ordinal_of(&name, &pod.name_any()) {
                by_ordinal.insert(ordinal, pod.clone());
            }
        }
        let revision_of = |pod: &Pod| {
            pod.labels()
                .get(REVISION_HASH_LABEL)
                .cloned()
                .unwrap_or_default()
        };
        let states: Vec<PodState> = by_ordinal
            .iter()
            .map(|(ordinal, pod)| PodState {
                ordinal: *ordinal,
                healthy: is_healthy(pod),
                terminating: is_pod_terminating(pod),
                finished: is_pod_finished(pod),
                updated: revision_of(pod) == update_name,
            })
            .collect();
        let ordered = spec.pod_management_policy.as_deref() != Some("Parallel");
        let strategy = spec.update_strategy.clone().unwrap_or_default();
        let rolling = strategy.type_.as_deref() != Some("OnDelete");
        let partition = strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let step = plan(
            wanted.clone(),
            &states,
            ordered,
            rolling.then_some(partition),
        );

        // Claims follow the retention policy before any pod goes.
        self.retain_claims(&set, &by_ordinal, &wanted).await?;
        for ordinal in &step.delete {
            if let Some(pod) = by_ordinal.get(ordinal) {
                self.delete_pod(&pods_api, &set, pod).await?;
            }
        }
        for ordinal in &step.create {
            // Below the partition pods keep the current revision; OnDelete and the
            // others get the update revision.
            let revision = if rolling && *ordinal < start + partition {
                &current_name
            } else {
                &update_name
            };
            let template = templates.get(revision).unwrap_or(&spec.template);
            self.create_pod(&pods_api, &set, *ordinal, template, revision)
                .await?;
        }

        // Status.
        let counted: Vec<&Arc<Pod>> = by_ordinal
            .values()
            .filter(|p| !is_pod_terminating(p))
            .collect();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = Utc::now();
        let mut wake = None;
        let available = counted
            .iter()
            .filter(|pod| {
                if !is_pod_ready(pod) {
                    return false;
                }
                let since = ready_since(pod).unwrap_or(now);
                let ready_for = (now - since).num_seconds();
                if ready_for < i64::from(min_ready) {
                    let left =
                        Duration::from_secs((i64::from(min_ready) - ready_for).max(1) as u64);
                    wake = Some(wake.map_or(left, |w: Duration| w.min(left)));
                    return false;
                }
                true
            })
            .count() as i32;
        status.observed_generation = set.metadata.generation;
        status.replicas = counted.len() as i32;
        status.ready_replicas = Some(counted.iter().filter(|p| is_pod_ready(p)).count() as i32);
        status.available_replicas = Some(available);
        status.current_replicas = Some(
            counted
                .iter()
                .filter(|p| revision_of(p) == current_name)
                .count() as i32,
        );
        status.updated_replicas = Some(
            counted
                .iter()
                .filter(|p| revision_of(p) == update_name)
                .count() as i32,
        );
        status.update_revision = Some(update_name.clone());
        status.current_revision = Some(current_name.clone());
        // A finished rollout: the update revision becomes the current one.
        if status.updated_replicas == Some(replicas)
            && status.ready_replicas == Some(replicas)
            && status.replicas == replicas
        {
            status.current_revision = Some(update_name.clone());
            status.current_replicas = status.updated_replicas;
        }
        status.collision_count = Some(collision_count);
        self.prune_revisions(&revisions_api, &spec, &owned_revisions, &pods, &status)
            .await?;
        if set.status.as_ref() != Some(&status) {
            let mut updated = (*set).clone();
            updated.status = Some(status);
            sets_api
                .replace_status(&name, &PostParams::default(), &updated)
                .await
                .context("cannot update the statefulset status")?;
        }
        Ok(wake.map_or(Outcome::Done, Outcome::RequeueAfter))
    }

    async fn create_pod(
        &self,
        pods_api: &Api<Pod>,
        set: &StatefulSet,
        ordinal: i32,
        template: &PodTemplateSpec,
        revision: &str,
    ) -> anyhow::Result<()> {
        let set_name = set.name_any();
        let spec = set.spec.clone().unwrap_or_default();
        let pod_name = format!("{set_name}-{ordinal}");
        let labels = [
            (POD_NAME_LABEL, pod_name.clone()),
            (POD_INDEX_LABEL, ordinal.to_string()),
            (REVISION_HASH_LABEL, revision.to_string()),
        ];
        let mut pod = pod_from_template(set, template, &labels);
        pod.metadata.name = Some(pod_name.clone());
        let pod_spec = pod.spec.get_or_insert_with(Default::default);
        pod_spec.hostname = Some(pod_name.clone());
        pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
        for claim in spec.volume_claim_templates.iter().flatten() {
            let template_name = claim.name_any();
            let claim = claim_name(&template_name, &set_name, ordinal);
            self.ensure_claim(set, &template_name, &claim, &pod_name)
                .await?;
            let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
            volumes.retain(|v| v.name != template_name);
            volumes.push(Volume {
                name: template_name,
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim,
                    read_only: None,
                }),
                ..Volume::default()
            });
        }
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                let message = format!("create Pod {pod_name} in StatefulSet {set_name} successful");
                self.events.normal(set, "SuccessfulCreate", message).await;
                Ok(())
            }
            // Made by an earlier pass the cache did not show yet.
            Err(kube::Error::Api(error)) if error.code == 409 => Ok(()),
            Err(error) => {
                let message = format!(
                    "create Pod {pod_name} in StatefulSet {set_name} failed error: {error}"
                );
                self.events.warning(set, "FailedCreate", message).await;
                Err(error).context("cannot create a statefulset pod")
            }
        }
    }

    /// Creates the claim `claim` from the template `template_name` unless it exists.
    async fn ensure_claim(
        &self,
        set: &StatefulSet,
        template_name: &str,
        claim: &str,
        pod_name: &str,
    ) -> anyhow::Result<()> {
        let namespace = set.namespace().unwrap_or_default();
        if self.claims.get(&namespace, claim).is_some() {
            return Ok(());
        }
        let spec = set.spec.clone().unwrap_or_default();
        let Some(template) = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .find(|t| t.name_any() == template_name)
        else {
            return Ok(());
        };
        let mut labels = template.metadata.labels.clone().unwrap_or_default();
        labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
        let mut owners = Vec::new();
        if retention(set).0 == "Delete" {
            owners.push(set_owner(set));
        }
        let object = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim.to_string()),
                namespace: Some(namespace.clone()),
                labels: Some(labels),
                annotations: template.metadata.annotations.clone(),
                owner_references: (!owners.is_empty()).then_some(owners),
                ..ObjectMeta::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let set_name = set.name_any();
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                let message = format!(
                    "create Claim {claim} Pod {pod_name} in StatefulSet {set_name} success"
                );
                self.events.normal(set, "SuccessfulCreate", message).await;
                Ok(())
            }
            Err(kube::Error::Api(error)) if error.code == 409 => Ok(()),
            Err(error) => {
                let message = format!(
                    "create Claim {claim} for Pod {pod_name} in StatefulSet {set_name} failed error: {error}"
                );
                self.events.warning(set, "FailedCreate", message).await;
                Err(error).context("cannot create a persistent volume claim")
            }
        }
    }

    /// Puts the owner references the retention policy asks for on every claim of the
    /// set's pods: the set (`whenDeleted: Delete`), and a condemned pod
    /// (`whenScaled: Delete`).
    async fn retain_claims(
        &self,
        set: &StatefulSet,
        pods: &BTreeMap<i32, Arc<Pod>>,
        wanted: &std::ops::Range<i32>,
    ) -> anyhow::Result<()> {
        let spec = set.spec.clone().unwrap_or_default();
        let templates = spec.volume_claim_templates.unwrap_or_default();
        if templates.is_empty() {
            return Ok(());
        }
        let (when_deleted, when_scaled) = retention(set);
        let namespace = set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &namespace);
        let set_uid = set.uid().unwrap_or_default();
        for (ordinal, pod) in pods {
            for template in &templates {
                let name = claim_name(&template.name_any(), &set.name_any(), *ordinal);
                let Some(claim) = self.claims.get(&namespace, &name) else {
                    continue;
                };
                let pod_uid = pod.uid().unwrap_or_default();
                let current = claim.metadata.owner_references.clone().unwrap_or_default();
                let mut desired: Vec<OwnerReference> = current
                    .iter()
                    .filter(|r| r.uid != set_uid && !(r.kind == "Pod" && r.name == pod.name_any()))
                    .cloned()
                    .collect();
                if when_deleted == "Delete" {
                    desired.push(set_owner(set));
                }
                if when_scaled == "Delete" && !wanted.contains(ordinal) {
                    desired.push(OwnerReference {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        name: pod.name_any(),
                        uid: pod_uid,
                        controller: None,
                        block_owner_deletion: Some(true),
                    });
                }
                if same_owners(&current, &desired) {
                    continue;
                }
                let patch = json!({"metadata": {
                    "ownerReferences": desired,
                    "resourceVersion": claim.resource_version(),
                }});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .context("cannot update the owners of a claim")?;
            }
        }
        Ok(())
    }

    async fn delete_pod(
        &self,
        pods_api: &Api<Pod>,
        set: &StatefulSet,
        pod: &Pod,
    ) -> anyhow::Result<()> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods_api.delete(&pod.name_any(), &params).await {
            Ok(_) => {
                let message = format!(
                    "delete Pod {} in StatefulSet {} successful",
                    pod.name_any(),
                    set.name_any()
                );
                self.events.normal(set, "SuccessfulDelete", message).await;
                Ok(())
            }
            Err(kube::Error::Api(error)) if error.code == 404 || error.code == 409 => Ok(()),
            Err(error) => {
                let message = format!(
                    "delete Pod {} in StatefulSet {} failed error: {error}",
                    pod.name_any(),
                    set.name_any()
                );
                self.events.warning(set, "FailedDelete", message).await;
                Err(error).context("cannot delete a statefulset pod")
            }
        }
    }

    /// Deletes the oldest revisions beyond `revisionHistoryLimit` that no pod uses.
    async fn prune_revisions(
        &self,
        api: &Api<ControllerRevision>,
        spec: &k8s_openapi::api::apps::v1::StatefulSetSpec,
        revisions: &[Arc<ControllerRevision>],
        pods: &[Arc<Pod>],
        status: &StatefulSetStatus,
    ) -> anyhow::Result<()> {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let in_use = |name: &str| {
            status.current_revision.as_deref() == Some(name)
                || status.update_revision.as_deref() == Some(name)
                || pods
                    .iter()
                    .any(|p| p.labels().get(REVISION_HASH_LABEL).map(String::as_str) == Some(name))
        };
        let mut history: Vec<&Arc<ControllerRevision>> = revisions
            .iter()
            .filter(|r| !in_use(&r.name_any()))
            .collect();
        if history.len() <= limit {
            return Ok(());
        }
        history.sort_by_key(|r| r.revision);
        for revision in history.iter().take(history.len() - limit) {
            match api
                .delete(&revision.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(error)) if error.code == 404 => {}
                Err(error) => {
                    return Err(error).context("cannot delete an old controller revision");
                }
            }
        }
        Ok(())
    }
}

/// `(whenDeleted, whenScaled)` of the set's claim retention policy.
fn retention(set: &StatefulSet) -> (String, String) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
        .unwrap_or_default();
    (
        policy.when_deleted.unwrap_or_else(|| "Retain".into()),
        policy.when_scaled.unwrap_or_else(|| "Retain".into()),
    )
}

fn set_owner(set: &StatefulSet) -> OwnerReference {
    OwnerReference {
        api_version: StatefulSet::api_version(&()).into_owned(),
        kind: StatefulSet::kind(&()).into_owned(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: Some(true),
    }
}

fn same_owners(a: &[OwnerReference], b: &[OwnerReference]) -> bool {
    let uids = |refs: &[OwnerReference]| {
        let mut uids: Vec<String> = refs.iter().map(|r| r.uid.clone()).collect();
        uids.sort();
        uids
    };
    uids(a) == uids(b)
}

fn ready_since(pod: &Pod) -> Option<chrono::DateTime<Utc>> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(to_chrono)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(ordinal: i32, healthy: bool) -> PodState {
        PodState {
            ordinal,
            healthy,
            terminating: false,
            finished: false,
            updated: true,
        }
    }

    #[test]
    fn ordinals_come_only_from_the_sets_own_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webby-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(claim_name("www", "web", 2), "www-web-2");
    }

    #[test]
    fn ordered_creation_waits_for_each_predecessor() {
        assert_eq!(plan(0..3, &[], true, Some(0)).create, [0]);
        assert_eq!(
            plan(0..3, &[state(0, false)], true, Some(0)),
            Plan::default()
        );
        assert_eq!(plan(0..3, &[state(0, true)], true, Some(0)).create, [1]);
        // Parallel creates every missing pod at once.
        assert_eq!(
            plan(0..3, &[state(0, false)], false, Some(0)).create,
            [1, 2]
        );
        // Ordinals may start elsewhere.
        assert_eq!(plan(5..7, &[], false, None).create, [5, 6]);
    }

    #[test]
    fn ordered_scale_down_removes_the_highest_first_one_at_a_time() {
        let pods = [state(0, true), state(1, true), state(2, true)];
        assert_eq!(plan(0..1, &pods, true, Some(0)).delete, [2]);
        let mut going = pods;
        going[2].terminating = true;
        assert!(
            plan(0..1, &going, true, Some(0)).delete.is_empty(),
            "waits for pod 2 to go"
        );
        // An unhealthy pod halts an ordered scale-down.
        let sick = [state(0, false), state(1, true)];
        assert!(plan(0..1, &sick, true, Some(0)).delete.is_empty());
        assert_eq!(plan(0..1, &pods, false, Some(0)).delete, [2, 1]);
    }

    #[test]
    fn rolling_updates_go_down_to_the_partition_one_pod_at_a_time() {
        let mut pods = [state(0, true), state(1, true), state(2, true)];
        for pod in &mut pods {
            pod.updated = false;
        }
        assert_eq!(plan(0..3, &pods, true, Some(1)).delete, [2]);
        pods[2].updated = true;
        assert_eq!(plan(0..3, &pods, true, Some(1)).delete, [1]);
        pods[1].updated = true;
        assert!(
            plan(0..3, &pods, true, Some(1)).delete.is_empty(),
            "the partition holds"
        );
        assert_eq!(plan(0..3, &pods, true, Some(0)).delete, [0]);
        // OnDelete never replaces a pod by itself.
        assert!(plan(0..3, &pods, true, None).delete.is_empty());
        // A pod that is not ready holds the update.
        pods[1].healthy = false;
        assert!(plan(0..3, &pods, false, Some(0)).delete.is_empty());
    }

    #[test]
    fn a_finished_pod_is_replaced() {
        let mut pods = [state(0, true)];
        pods[0].finished = true;
        assert_eq!(plan(0..1, &pods, true, Some(0)).delete, [0]);
    }
}
