//! What the workload controllers (Job, CronJob, StatefulSet, DaemonSet) share:
//! controller owner references, pods made from a template, the expectations that keep
//! a controller from acting twice on a cache that has not caught up with its own
//! writes yet, ControllerRevisions (the template history of StatefulSets and
//! DaemonSets), adopting and releasing pods by label selector ([`claim_pods`], what
//! upstream's `ControllerRefManager` does), and Events through kube-rs's [`Recorder`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use krust_api::selector::LabelSelector;
use krust_events::{Event, EventType, Recorder, Reporter};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::cache::ObjectKey;

/// How long an expectation is trusted before the controller acts again anyway
/// (upstream's `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// The controller owner reference (`controller: true`, `blockOwnerDeletion: true`)
/// that points at `owner`.
pub fn controller_reference<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.name_any(),
        uid: owner.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The uid of the controller that owns `object`, if it is of kind `kind`.
pub fn controller_uid<'a>(metadata: &'a ObjectMeta, kind: &str) -> Option<&'a str> {
    metadata
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true) && reference.kind == kind)
        .map(|reference| reference.uid.as_str())
}

/// The key of the controller of kind `kind` that owns `object` (same namespace).
pub fn controller_key(metadata: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let reference = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|reference| reference.controller == Some(true) && reference.kind == kind)?;
    Some(ObjectKey::new(
        metadata.namespace.clone().unwrap_or_default(),
        reference.name.clone(),
    ))
}

/// `labels` as the JSON map [`LabelSelector::matches`] reads.
pub fn label_values<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> serde_json::Map<String, Value> {
    labels
        .into_iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect()
}

/// Whether `selector` (a LabelSelector as JSON) selects `labels`; a missing, empty
/// or malformed selector selects nothing.
pub fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let Ok(parsed) = LabelSelector::from_json(selector) else {
        return false;
    };
    if parsed.is_empty() {
        return false;
    }
    parsed.matches(Some(&label_values(labels)))
}

/// The owners in `owners` (of `pod`'s namespace) that might adopt `pod`: none if it
/// has a controller, else those whose selector (by `selector_of`) selects it.
pub fn adopters<K: Resource<DynamicType = ()>>(
    owners: &[Arc<K>],
    pod: &Pod,
    selector_of: impl Fn(&K) -> Value,
) -> Vec<ObjectKey> {
    if pod
        .owner_references()
        .iter()
        .any(|r| r.controller == Some(true))
    {
        return Vec::new();
    }
    owners
        .iter()
        .filter(|owner| selects(&selector_of(owner), pod.labels()))
        .map(|owner| ObjectKey::of(owner.as_ref()))
        .collect()
}

/// The pods `owner` controls after reconciling ownership with its selector, as
/// upstream's `ControllerRefManager`: an orphan that the selector (and `member`)
/// accepts is adopted (a controller owner reference is added), an owned pod that no
/// longer matches is released (the reference is removed). Pods controlled by others
/// are never touched, and nothing is adopted while `owner` is being deleted. A
/// `finalizer` (the Job's tracking finalizer) is added on adoption and removed on
/// release.
pub async fn claim_pods<K: Resource<DynamicType = ()>>(
    client: &Client,
    owner: &K,
    selector: &Value,
    candidates: Vec<Arc<Pod>>,
    member: impl Fn(&Pod) -> bool,
    finalizer: Option<&str>,
) -> anyhow::Result<Vec<Arc<Pod>>> {
    let uid = owner.uid().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let kind = K::kind(&());
    let api: Api<Pod> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    let mut claimed = Vec::new();
    for pod in candidates {
        let matches = selects(selector, pod.labels()) && member(&pod);
        let controller = pod
            .owner_references()
            .iter()
            .find(|r| r.controller == Some(true))
            .cloned();
        match controller {
            Some(reference) if reference.uid == uid => {
                if matches || deleting {
                    claimed.push(pod);
                    continue;
                }
                let kept: Vec<&OwnerReference> = pod
                    .owner_references()
                    .iter()
                    .filter(|r| r.uid != uid)
                    .collect();
                let finalizers: Vec<&String> = pod
                    .finalizers()
                    .iter()
                    .filter(|f| Some(f.as_str()) != finalizer)
                    .collect();
                let patch = json!({"metadata": {
                    "ownerReferences": kept,
                    "finalizers": finalizers,
                    "resourceVersion": pod.resource_version(),
                }});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(_) => tracing::debug!(%kind, pod = %pod.name_any(), "released a pod"),
                    Err(kube::Error::Api(error)) if error.code == 404 => {}
                    Err(error) => return Err(error).context("cannot release a pod"),
                }
            }
            Some(_) => {}
            None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                let mut references = pod.owner_references().to_vec();
                references.push(controller_reference(owner));
                let mut finalizers = pod.finalizers().to_vec();
                if let Some(finalizer) = finalizer
                    && !finalizers.iter().any(|f| f == finalizer)
                {
                    finalizers.push(finalizer.to_string());
                }
                let patch = json!({"metadata": {
                    "ownerReferences": references,
                    "finalizers": finalizers,
                    "resourceVersion": pod.resource_version(),
                }});
                match api
                    .patch(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    Ok(adopted) => {
                        tracing::debug!(%kind, pod = %pod.name_any(), "adopted a pod");
                        claimed.push(Arc::new(adopted));
                    }
                    Err(kube::Error::Api(error)) if error.code == 404 => {}
                    Err(error) => return Err(error).context("cannot adopt a pod"),
                }
            }
            None => {}
        }
    }
    Ok(claimed)
}

/// A pod made from `template`, owned by `owner`, with the template's labels and
/// annotations (plus `extra_labels`), in `owner`'s namespace. The caller sets the
/// name (or `generateName`) and anything else its controller adds.
pub fn pod_from_template<K: Resource<DynamicType = ()>>(
    owner: &K,
    template: &PodTemplateSpec,
    extra_labels: &[(&str, String)],
) -> Pod {
    let template_metadata = template.metadata.clone().unwrap_or_default();
    let mut labels = template_metadata.labels.unwrap_or_default();
    for (key, value) in extra_labels {
        labels.insert((*key).to_string(), value.clone());
    }
    Pod {
        metadata: ObjectMeta {
            namespace: owner.namespace(),
            labels: Some(labels),
            annotations: template_metadata.annotations,
            finalizers: template_metadata.finalizers,
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// A name `<prefix><5 random characters>`, as the API server's `generateName` makes.
pub fn generate_name(prefix: &str) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    // Names are at most 63 characters where they become hostnames.
    let prefix: String = prefix.chars().take(58).collect();
    format!("{prefix}{suffix}")
}

/// Label on ControllerRevisions (and the pods made from them): which revision.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// A short name-safe hash of `data` (and the owner's collision count), in the style
/// of upstream's revision hashes: FNV-1a over the JSON, in consonants and digits.
pub fn revision_hash(data: &Value, collision_count: i32) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let text = serde_json::to_string(data).unwrap_or_default();
    for byte in text.bytes().chain(collision_count.to_le_bytes()) {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    format!("{hash:x}")
        .bytes()
        .map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char)
        .collect()
}

/// The revision data of a pod template, as upstream stores it in a ControllerRevision.
pub fn template_revision_data(template: &PodTemplateSpec) -> Value {
    let mut template = serde_json::to_value(template).unwrap_or_default();
    if let Some(object) = template.as_object_mut() {
        object.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a ControllerRevision made by [`template_revision_data`] holds.
pub fn revision_template(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut template = revision
        .data
        .as_ref()?
        .0
        .get("spec")?
        .get("template")?
        .clone();
    template.as_object_mut()?.remove("$patch");
    serde_json::from_value(template).ok()
}

/// What [`ensure_revision`] found.
pub enum RevisionOutcome {
    /// The revision holding the data (found or created).
    Revision(Box<ControllerRevision>),
    /// Another revision took the name: bump the owner's `collisionCount` and retry.
    Collision,
}

/// Finds `owner`'s ControllerRevision that holds `data` among `revisions`, or creates
/// it (`<owner>-<hash>`, the next revision number, `labels` plus the hash label). A
/// revision found again after newer ones (a rollback) gets the next number.
pub async fn ensure_revision<K: Resource<DynamicType = ()>>(
    api: &Api<ControllerRevision>,
    owner: &K,
    revisions: &[Arc<ControllerRevision>],
    data: Value,
    mut labels: BTreeMap<String, String>,
    collision_count: i32,
) -> anyhow::Result<RevisionOutcome> {
    let newest = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(found) = revisions
        .iter()
        .find(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
    {
        if found.revision == newest {
            return Ok(RevisionOutcome::Revision(Box::new((**found).clone())));
        }
        let patch = json!({"revision": newest + 1});
        let updated = api
            .patch(
                &found.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .context("cannot renumber a controller revision")?;
        return Ok(RevisionOutcome::Revision(Box::new(updated)));
    }
    let hash = revision_hash(&data, collision_count);
    labels.insert(REVISION_HASH_LABEL.into(), hash.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", owner.name_any())),
            namespace: owner.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![controller_reference(owner)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data.clone())),
        revision: newest + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(created) => Ok(RevisionOutcome::Revision(Box::new(created))),
        Err(kube::Error::Api(error)) if error.code == 409 => {
            let existing = api.get(&revision.name_any()).await?;
            let ours =
                controller_uid(&existing.metadata, K::kind(&()).as_ref()) == owner.uid().as_deref();
            if ours && existing.data.as_ref().map(|d| &d.0) == Some(&data) {
                Ok(RevisionOutcome::Revision(Box::new(existing)))
            } else {
                Ok(RevisionOutcome::Collision)
            }
        }
        Err(error) => Err(error).context("cannot create a controller revision"),
    }
}

/// A Kubernetes timestamp as a chrono time (the controllers compute with chrono).
pub fn to_chrono(time: &Time) -> DateTime<Utc> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).unwrap_or(0);
    DateTime::from_timestamp(time.0.as_second(), nanos).unwrap_or_default()
}

/// A chrono time as a Kubernetes timestamp.
pub fn to_time(at: DateTime<Utc>) -> Time {
    let nanos = i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0);
    Time(Timestamp::new(at.timestamp(), nanos).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The pod's phase (`Pending` when it has none yet).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|status| status.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod ran to an end (`Succeeded` or `Failed`).
pub fn is_pod_finished(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .and_then(|conditions| conditions.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|condition| condition.status == "True")
}

/// Whether the pod is being deleted.
pub fn is_pod_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// What a controller wrote and has not seen in its cache yet, per owner.
///
/// After creating or deleting pods the cache lags behind for a moment; a reconcile in
/// that moment would count too few (or too many) pods and act again. Upstream's
/// controllers keep "expectations" for this; here an owner waits until every pod it
/// created has been seen and every pod it deleted has been seen going (or
/// [`EXPECTATIONS_TIMEOUT`] passed, in case an event was missed).
#[derive(Clone, Default)]
pub struct Expectations {
    pending: Arc<Mutex<HashMap<ObjectKey, Pending>>>,
}

struct Pending {
    creations: HashSet<ObjectKey>,
    deletions: HashSet<ObjectKey>,
    since: Instant,
}

impl Expectations {
    /// `owner` created the object `created`.
    pub fn expect_creation(&self, owner: &ObjectKey, created: ObjectKey) {
        self.entry(owner, |pending| pending.creations.insert(created));
    }

    /// `owner` deleted the object `deleted`.
    pub fn expect_deletion(&self, owner: &ObjectKey, deleted: ObjectKey) {
        self.entry(owner, |pending| pending.deletions.insert(deleted));
    }

    fn entry(&self, owner: &ObjectKey, edit: impl FnOnce(&mut Pending) -> bool) {
        let mut pending = self.pending.lock().unwrap();
        let entry = pending.entry(owner.clone()).or_insert_with(|| Pending {
            creations: HashSet::new(),
            deletions: HashSet::new(),
            since: Instant::now(),
        });
        entry.since = Instant::now();
        edit(entry);
    }

    /// The cache shows `object` (present, or gone when `deleted`).
    pub fn observe(&self, owner: &ObjectKey, object: &ObjectKey, deleted: bool) {
        let mut pending = self.pending.lock().unwrap();
        if let Some(entry) = pending.get_mut(owner) {
            entry.creations.remove(object);
            if deleted {
                entry.deletions.remove(object);
            }
            if entry.creations.is_empty() && entry.deletions.is_empty() {
                pending.remove(owner);
            }
        }
    }

    /// The cache shows `object` being deleted (a deletion timestamp): enough for a
    /// deletion the controller asked for.
    pub fn observe_terminating(&self, owner: &ObjectKey, object: &ObjectKey) {
        self.observe(owner, object, true);
    }

    /// Whether `owner`'s cache view includes all its own writes (or they timed out).
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        let mut pending = self.pending.lock().unwrap();
        match pending.get(owner) {
            None => true,
            Some(entry) if entry.since.elapsed() > EXPECTATIONS_TIMEOUT => {
                pending.remove(owner);
                true
            }
            Some(_) => false,
        }
    }

    /// Forgets `owner` (it was deleted).
    pub fn forget(&self, owner: &ObjectKey) {
        self.pending.lock().unwrap().remove(owner);
    }
}

/// Publishes Events about the objects a controller manages; a failure to publish is
/// logged and otherwise ignored (an Event is never worth failing a reconcile for).
#[derive(Clone)]
pub struct Events {
    recorder: Arc<Recorder>,
}

impl Events {
    /// Events reported as coming from `controller` (e.g. `job-controller`, upstream's
    /// reporting component names).
    pub fn new(client: Client, controller: &str) -> Events {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance: None,
        };
        Events {
            recorder: Arc::new(Recorder::new(client, reporter)),
        }
    }

    /// A `Normal` Event about `object`.
    pub async fn normal<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(object, EventType::Normal, reason, note).await;
    }

    /// A `Warning` Event about `object`.
    pub async fn warning<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        reason: &str,
        note: String,
    ) {
        self.publish(object, EventType::Warning, reason, note).await;
    }

    async fn publish<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::debug!(reason, "cannot publish an event: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;

    #[test]
    fn revision_hashes_are_stable_and_differ_by_template_and_collision_count() {
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let data = template_revision_data(&template);
        assert_eq!(revision_hash(&data, 0), revision_hash(&data, 0));
        assert_ne!(revision_hash(&data, 0), revision_hash(&data, 1));
        let name = revision_hash(&data, 0);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "{name}"
        );
        let revision = ControllerRevision {
            data: Some(RawExtension(data)),
            ..ControllerRevision::default()
        };
        assert_eq!(revision_template(&revision), Some(template));
    }

    #[test]
    fn selectors_select_labels_and_empty_ones_select_nothing() {
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(selects(&json!({"matchLabels": {"app": "web"}}), &labels));
        assert!(!selects(&json!({"matchLabels": {"app": "db"}}), &labels));
        let expression =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]});
        assert!(selects(&expression, &labels));
        assert!(!selects(&json!({}), &labels));
        assert!(!selects(&Value::Null, &labels));
    }

    #[test]
    fn expectations_wait_for_created_and_deleted_objects() {
        let expectations = Expectations::default();
        let owner = ObjectKey::new("ns", "job");
        let created = ObjectKey::new("ns", "job-abc");
        let deleted = ObjectKey::new("ns", "job-old");
        assert!(expectations.satisfied(&owner));
        expectations.expect_creation(&owner, created.clone());
        expectations.expect_deletion(&owner, deleted.clone());
        assert!(!expectations.satisfied(&owner));
        expectations.observe(&owner, &created, false);
        assert!(!expectations.satisfied(&owner));
        // Seeing a pod that still exists does not satisfy its deletion.
        expectations.observe(&owner, &deleted, false);
        assert!(!expectations.satisfied(&owner));
        expectations.observe_terminating(&owner, &deleted);
        assert!(expectations.satisfied(&owner));
    }

    #[test]
    fn a_pod_from_a_template_is_owned_and_labelled() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "u-1"},
        }))
        .unwrap();
        let template: PodTemplateSpec = serde_json::from_value(serde_json::json!({
            "metadata": {"labels": {"app": "pi"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let pod = pod_from_template(&job, &template, &[("job-name", "pi".to_string())]);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["app"], "pi");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(pod.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(controller_uid(&pod.metadata, "Job"), Some("u-1"));
        assert_eq!(
            controller_key(&pod.metadata, "Job"),
            Some(ObjectKey::new("ns", "pi"))
        );
        assert_eq!(controller_uid(&pod.metadata, "StatefulSet"), None);
    }
}
