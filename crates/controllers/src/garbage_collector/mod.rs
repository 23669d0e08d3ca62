//! The garbage collector: deletes objects whose owners are gone, and carries out
//! the `Orphan` and `Foreground` deletion policies, as upstream's
//! `pkg/controller/garbagecollector` does.
//!
//! - The *graph builder* ([`GarbageCollector::build_graph`]) feeds the informers'
//!   events into the ownership [`graph`] and queues what each change calls for.
//! - *attempt to delete* workers check one object: an object whose owners are all
//!   gone (by uid) is deleted, with the policy its own finalizers ask for; an owner
//!   being deleted in the foreground loses its `foregroundDeletion` finalizer once no
//!   dependent with `blockOwnerDeletion: true` is left.
//! - *attempt to orphan* workers remove an owner's references from all its
//!   dependents, then its `orphan` finalizer.
//!
//! The graph is trusted for owners it has observed; an owner it has not observed
//! (a "dangling" reference, or one not seen yet) is looked up on the server by
//! apiVersion, kind and name, in the dependent's namespace or at the cluster scope,
//! and counts as gone when it is absent or has another uid.

pub mod graph;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Client;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::discovery::ResourceType;
use crate::informers::{EventKind, Informers, ObjectEvent};
use crate::workqueue::{Outcome, WorkQueue, run_workers};
use graph::{FOREGROUND_FINALIZER, Graph, Identity, ORPHAN_FINALIZER, OwnerState, Uid};

/// Concurrent attempt-to-delete workers.
const DELETE_WORKERS: usize = 8;
/// Concurrent attempt-to-orphan workers.
const ORPHAN_WORKERS: usize = 4;
/// How many owners verified absent are remembered (upstream keeps 500).
const ABSENT_OWNER_CACHE_SIZE: usize = 500;
/// Read-modify-write attempts before a conflict is left to the retry queue.
const CONFLICT_ATTEMPTS: usize = 5;

/// Resources upstream's garbage collector leaves alone by default.
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

/// Whether the garbage collector watches `resource`: it must support list, watch
/// and delete, and not be ignored.
pub fn is_collectable(resource: &ResourceType) -> bool {
    let ar = &resource.api_resource;
    resource.supports_all(&["delete", "list", "watch"])
        && !IGNORED
            .iter()
            .any(|(group, plural)| ar.group == *group && ar.plural == *plural)
}

/// The garbage collector. Create with [`GarbageCollector::new`], then
/// [`GarbageCollector::run`].
pub struct GarbageCollector {
    client: Client,
    informers: Arc<Informers>,
    graph: Mutex<Graph>,
    attempt_to_delete: WorkQueue<Uid>,
    attempt_to_orphan: WorkQueue<Uid>,
    absent_owners: Mutex<AbsentOwners>,
}

/// How an object's owner references stand.
#[derive(Default, Debug)]
struct Classified {
    solid: Vec<OwnerReference>,
    dangling: Vec<OwnerReference>,
    waiting_for_dependents: Vec<OwnerReference>,
}

/// Owners recently verified absent, so that many dependents of one deleted owner
/// cost one lookup. Keyed by uid and, for namespaced owners, namespace.
#[derive(Default)]
struct AbsentOwners {
    set: HashSet<(Uid, Option<String>)>,
    order: VecDeque<(Uid, Option<String>)>,
}

impl AbsentOwners {
    fn contains(&self, key: &(Uid, Option<String>)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (Uid, Option<String>)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            while self.order.len() > ABSENT_OWNER_CACHE_SIZE {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

/// The HTTP status of an API error, if it is one.
pub(crate) fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn has_finalizer(meta: &ObjectMeta, finalizer: &str) -> bool {
    meta.finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

/// A dynamic API for `resource`, in `namespace` when it is namespaced.
fn api_for(
    client: &Client,
    resource: &ResourceType,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    match (resource.namespaced, namespace) {
        (true, Some(namespace)) => {
            Api::namespaced_with(client.clone(), namespace, &resource.api_resource)
        }
        _ => Api::all_with(client.clone(), &resource.api_resource),
    }
}

impl GarbageCollector {
    pub fn new(client: Client, informers: Arc<Informers>) -> Arc<GarbageCollector> {
        Arc::new(GarbageCollector {
            client,
            informers,
            graph: Mutex::new(Graph::new()),
            attempt_to_delete: WorkQueue::new(),
            attempt_to_orphan: WorkQueue::new(),
            absent_owners: Mutex::new(AbsentOwners::default()),
        })
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        // Graph methods finish their edits before they can panic.
        self.graph
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Builds the graph from `events` and runs the workers once the informers have
    /// synced, until the process ends.
    pub async fn run(
        self: Arc<Self>,
        events: mpsc::UnboundedReceiver<ObjectEvent>,
    ) -> anyhow::Result<()> {
        let workers = async {
            // Like upstream, decide nothing before every watch has listed once: an
            // owner must not be released while some of its dependents are unseen.
            self.informers.wait_synced().await;
            tracing::info!("garbage collector caches synced, starting workers");
            let deleter = self.clone();
            let orphaner = self.clone();
            tokio::join!(
                run_workers(
                    "garbage-collector",
                    self.attempt_to_delete.clone(),
                    DELETE_WORKERS,
                    move |uid| {
                        let gc = deleter.clone();
                        async move { gc.attempt_to_delete(uid).await }
                    },
                ),
                run_workers(
                    "garbage-collector-orphan",
                    self.attempt_to_orphan.clone(),
                    ORPHAN_WORKERS,
                    move |uid| {
                        let gc = orphaner.clone();
                        async move { gc.attempt_to_orphan(uid).await }
                    },
                ),
            );
        };
        tokio::join!(self.build_graph(events), workers);
        bail!("the garbage collector's event stream ended")
    }

    /// Applies every informer event to the graph and queues the work it produces.
    async fn build_graph(&self, mut events: mpsc::UnboundedReceiver<ObjectEvent>) {
        while let Some(event) = events.recv().await {
            let work = {
                let mut graph = self.graph();
                match event.kind {
                    EventKind::Applied => graph.apply(&event.resource, &event.meta),
                    EventKind::Deleted => graph.delete(&event.meta),
                }
            };
            for uid in work.attempt_to_delete {
                self.attempt_to_delete.add(uid);
            }
            for uid in work.attempt_to_orphan {
                self.attempt_to_orphan.add(uid);
            }
        }
    }

    /// Looks at one object: collects it if all its owners are gone, or pushes the
    /// foreground deletion of its dependents on.
    async fn attempt_to_delete(&self, uid: Uid) -> anyhow::Result<Outcome> {
        let (node, has_dependents) = {
            let graph = self.graph();
            let Some(node) = graph.node(&uid) else {
                return Ok(Outcome::Done);
            };
            (node.clone(), !graph.dependents(&uid).is_empty())
        };
        let Some(resource) = node.resource.clone().filter(|_| node.observed) else {
            return Ok(Outcome::Done);
        };
        // Being deleted is a one-way trip: wait for the delete event.
        if node.being_deleted && !node.deleting_dependents {
            return Ok(Outcome::Done);
        }
        let id = &node.identity;
        let api = api_for(&self.client, &resource, id.namespace.as_deref());
        let latest = match api.get_metadata_opt(&id.name).await? {
            Some(latest) if latest.metadata.uid.as_deref() == Some(uid.as_str()) => latest.metadata,
            // Gone, or replaced by a namesake: its delete event is on the way.
            _ => return Ok(Outcome::Done),
        };
        if node.deleting_dependents {
            return self.process_deleting_dependents(&node, &resource).await;
        }
        let owners = latest.owner_references.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(Outcome::Done);
        }
        let classified = self.classify(id, &owners).await?;
        tracing::debug!(object = ?id, ?classified, "classified owner references");

        if !classified.solid.is_empty() {
            if classified.dangling.is_empty() && classified.waiting_for_dependents.is_empty() {
                return Ok(Outcome::Done);
            }
            // Keep the object, but drop references to owners that are gone or that
            // wait for their dependents (they would wait forever otherwise).
            let gone: Vec<&str> = classified
                .dangling
                .iter()
                .chain(&classified.waiting_for_dependents)
                .map(|o| o.uid.as_str())
                .collect();
            tracing::info!(object = ?id, owners = ?gone, "removing references to owners that are gone or deleting their dependents");
            self.remove_owner_references(&resource, id, &gone).await?;
            return Ok(Outcome::Done);
        }

        let policy = if !classified.waiting_for_dependents.is_empty() && has_dependents {
            // An owner waits for this object, which has dependents of its own:
            // delete it in the foreground too. Break a possible cycle first.
            let cycle = self
                .graph()
                .dependents(&uid)
                .iter()
                .any(|dependent| dependent.deleting_dependents);
            if cycle {
                self.unblock_owner_references(&resource, id).await?;
            }
            PropagationPolicy::Foreground
        } else if has_finalizer(&latest, ORPHAN_FINALIZER) {
            PropagationPolicy::Orphan
        } else if has_finalizer(&latest, FOREGROUND_FINALIZER) {
            PropagationPolicy::Foreground
        } else {
            PropagationPolicy::Background
        };
        tracing::info!(object = ?id, ?policy, "deleting object: no owner keeps it");
        self.delete_object(&resource, id, &latest, policy).await?;
        Ok(Outcome::Done)
    }

    /// An owner being deleted in the foreground: push its blocking dependents'
    /// deletion on, or, when none is left, remove its `foregroundDeletion` finalizer.
    async fn process_deleting_dependents(
        &self,
        node: &graph::Node,
        resource: &ResourceType,
    ) -> anyhow::Result<Outcome> {
        let uid = &node.identity.uid;
        let blocking: Vec<(Uid, bool)> = self
            .graph()
            .blocking_dependents(uid)
            .iter()
            .map(|d| (d.identity.uid.clone(), d.deleting_dependents))
            .collect();
        if blocking.is_empty() {
            if !self.informers.all_synced() {
                bail!("not all informers have synced; a blocking dependent may be unseen");
            }
            tracing::info!(object = ?node.identity, "no blocking dependents left, removing the foregroundDeletion finalizer");
            self.remove_finalizer(resource, &node.identity, FOREGROUND_FINALIZER)
                .await?;
            return Ok(Outcome::Done);
        }
        for (dependent, deleting_its_own) in blocking {
            if !deleting_its_own {
                self.attempt_to_delete.add(dependent);
            }
        }
        Ok(Outcome::Done)
    }

    /// Releases the dependents of an owner being deleted with `orphan`, then
    /// removes that finalizer.
    async fn attempt_to_orphan(&self, uid: Uid) -> anyhow::Result<Outcome> {
        let (node, dependents) = {
            let graph = self.graph();
            let Some(node) = graph.node(&uid) else {
                return Ok(Outcome::Done);
            };
            let dependents: Vec<(Arc<ResourceType>, Identity)> = graph
                .dependents(&uid)
                .iter()
                .filter_map(|d| Some((d.resource.clone()?, d.identity.clone())))
                .collect();
            (node.clone(), dependents)
        };
        let Some(resource) = node.resource.clone().filter(|_| node.observed) else {
            return Ok(Outcome::Done);
        };
        if !self.informers.all_synced() {
            bail!("not all informers have synced; some dependents may be unseen");
        }
        let id = &node.identity;
        let api = api_for(&self.client, &resource, id.namespace.as_deref());
        match api.get_metadata_opt(&id.name).await? {
            Some(latest)
                if latest.metadata.uid.as_deref() == Some(uid.as_str())
                    && latest.metadata.deletion_timestamp.is_some()
                    && has_finalizer(&latest.metadata, ORPHAN_FINALIZER) => {}
            _ => return Ok(Outcome::Done),
        }
        let owner_uid = uid.as_str();
        let results = join_all(dependents.iter().map(|(dep_resource, dep)| async move {
            self.remove_owner_references(dep_resource, dep, &[owner_uid])
                .await
                .with_context(|| format!("orphaning {} {:?}", dep.kind, dep.name))
        }))
        .await;
        let errors: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect();
        if !errors.is_empty() {
            bail!(
                "failed to orphan dependents of {} {:?}: {}",
                id.kind,
                id.name,
                errors.join("; ")
            );
        }
        tracing::info!(object = ?id, dependents = dependents.len(), "orphaned dependents, removing the orphan finalizer");
        self.remove_finalizer(&resource, id, ORPHAN_FINALIZER)
            .await?;
        Ok(Outcome::Done)
    }

    /// Sorts `owners` of the object `id` into solid, dangling and waiting ones.
    async fn classify(
        &self,
        id: &Identity,
        owners: &[OwnerReference],
    ) -> anyhow::Result<Classified> {
        let mut classified = Classified::default();
        for owner in owners {
            let state = self.graph().owner_state(owner, id.namespace.as_deref());
            let state = match state {
                OwnerState::Unknown => self.look_up_owner(id, owner).await?,
                known => Some(known),
            };
            match state {
                None => classified.dangling.push(owner.clone()),
                Some(OwnerState::WaitingForDependents) => {
                    classified.waiting_for_dependents.push(owner.clone())
                }
                Some(_) => classified.solid.push(owner.clone()),
            }
        }
        Ok(classified)
    }

    /// Asks the server about an owner the graph does not know. None: it is gone.
    async fn look_up_owner(
        &self,
        id: &Identity,
        owner: &OwnerReference,
    ) -> anyhow::Result<Option<OwnerState>> {
        let Some(resource) = self
            .informers
            .discovered()
            .resolve(&owner.api_version, &owner.kind)
        else {
            self.informers.request_refresh();
            bail!(
                "owner reference of {} {:?} names an unknown kind {} in {}",
                id.kind,
                id.name,
                owner.kind,
                owner.api_version
            );
        };
        if resource.namespaced && id.namespace.is_none() {
            // A cluster-scoped object can not be owned by a namespaced one.
            tracing::warn!(object = ?id, owner = ?owner, "cluster-scoped object refers to a namespaced owner; the reference can not be resolved");
            return Ok(None);
        }
        let namespace = id.namespace.clone().filter(|_| resource.namespaced);
        let cache_key = (owner.uid.clone(), namespace.clone());
        if self.absent().contains(&cache_key) {
            return Ok(None);
        }
        let api = api_for(&self.client, &resource, namespace.as_deref());
        let found = api.get_metadata_opt(&owner.name).await.with_context(|| {
            format!(
                "looking up owner {} {:?} of {} {:?}",
                owner.kind, owner.name, id.kind, id.name
            )
        })?;
        match found {
            Some(found) if found.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                let meta = &found.metadata;
                if meta.deletion_timestamp.is_some() && has_finalizer(meta, FOREGROUND_FINALIZER) {
                    Ok(Some(OwnerState::WaitingForDependents))
                } else {
                    Ok(Some(OwnerState::Solid))
                }
            }
            _ => {
                self.absent().insert(cache_key);
                Ok(None)
            }
        }
    }

    fn absent(&self) -> std::sync::MutexGuard<'_, AbsentOwners> {
        self.absent_owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deletes `id` with `policy`, on the condition that it is still the object
    /// (uid) and version (resourceVersion) that was judged. If only unrelated
    /// fields changed since, the deletion is retried without the version check, so
    /// that busy objects are still collected.
    async fn delete_object(
        &self,
        resource: &ResourceType,
        id: &Identity,
        judged: &ObjectMeta,
        policy: PropagationPolicy,
    ) -> anyhow::Result<()> {
        let api = api_for(&self.client, resource, id.namespace.as_deref());
        let mut params = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: judged.resource_version.clone(),
            }),
            ..Default::default()
        };
        let error = match api.delete(&id.name, &params).await {
            Ok(_) => return Ok(()),
            Err(error) if status_code(&error) == Some(404) => return Ok(()),
            Err(error) => error,
        };
        if status_code(&error) != Some(409) || judged.resource_version.is_none() {
            return Err(error).context(format!("deleting {} {:?}", id.kind, id.name));
        }
        let Some(live) = api.get_metadata_opt(&id.name).await? else {
            return Ok(());
        };
        let unchanged_owners = live.metadata.uid.as_deref() == Some(id.uid.as_str())
            && live.metadata.owner_references == judged.owner_references;
        if !unchanged_owners {
            // Its owners changed: the update event will have it judged again.
            return Ok(());
        }
        if let Some(preconditions) = params.preconditions.as_mut() {
            preconditions.resource_version = None;
        }
        match api.delete(&id.name, &params).await {
            Ok(_) => Ok(()),
            Err(error) if status_code(&error) == Some(404) => Ok(()),
            Err(error) => Err(error).context(format!("deleting {} {:?}", id.kind, id.name)),
        }
    }

    /// Read-modify-write of one object's metadata with a merge patch that carries
    /// the resourceVersion read (so a concurrent change is a conflict, retried).
    /// `change` returns the patch for `metadata`, or None when nothing is to do.
    async fn update_metadata(
        &self,
        resource: &ResourceType,
        id: &Identity,
        change: impl Fn(&ObjectMeta) -> Option<serde_json::Value>,
    ) -> anyhow::Result<()> {
        let api = api_for(&self.client, resource, id.namespace.as_deref());
        for _ in 0..CONFLICT_ATTEMPTS {
            let latest = match api.get_metadata_opt(&id.name).await? {
                Some(latest) if latest.metadata.uid.as_deref() == Some(id.uid.as_str()) => {
                    latest.metadata
                }
                _ => return Ok(()),
            };
            let Some(mut metadata_patch) = change(&latest) else {
                return Ok(());
            };
            metadata_patch["resourceVersion"] = json!(latest.resource_version);
            let patch = json!({ "metadata": metadata_patch });
            match api
                .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if status_code(&error) == Some(404) => return Ok(()),
                Err(error) if status_code(&error) == Some(409) => continue,
                Err(error) => {
                    return Err(error).context(format!("patching {} {:?}", id.kind, id.name));
                }
            }
        }
        bail!(
            "{} {:?} kept changing while being patched",
            id.kind,
            id.name
        )
    }

    /// Removes the owner references with the given uids from `id`.
    async fn remove_owner_references(
        &self,
        resource: &ResourceType,
        id: &Identity,
        owner_uids: &[&str],
    ) -> anyhow::Result<()> {
        self.update_metadata(resource, id, |meta| {
            let owners = meta.owner_references.clone().unwrap_or_default();
            let kept: Vec<&OwnerReference> = owners
                .iter()
                .filter(|o| !owner_uids.contains(&o.uid.as_str()))
                .collect();
            if kept.len() == owners.len() {
                return None;
            }
            Some(json!({ "ownerReferences": if kept.is_empty() { json!(null) } else { json!(kept) } }))
        })
        .await
    }

    /// Sets `blockOwnerDeletion: false` on every blocking owner reference of `id`.
    async fn unblock_owner_references(
        &self,
        resource: &ResourceType,
        id: &Identity,
    ) -> anyhow::Result<()> {
        self.update_metadata(resource, id, |meta| {
            let mut owners = meta.owner_references.clone().unwrap_or_default();
            let mut changed = false;
            for owner in owners
                .iter_mut()
                .filter(|o| o.block_owner_deletion == Some(true))
            {
                owner.block_owner_deletion = Some(false);
                changed = true;
            }
            changed.then(|| json!({ "ownerReferences": owners }))
        })
        .await
    }

    /// Removes `finalizer` from `id` (the server deletes an object whose deletion
    /// waits only for that finalizer).
    async fn remove_finalizer(
        &self,
        resource: &ResourceType,
        id: &Identity,
        finalizer: &str,
    ) -> anyhow::Result<()> {
        self.update_metadata(resource, id, |meta| {
            let finalizers = meta.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return None;
            }
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
            Some(json!({ "finalizers": if kept.is_empty() { json!(null) } else { json!(kept) } }))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;

    fn resource(group: &str, plural: &str, verbs: &[&str]) -> ResourceType {
        ResourceType {
            api_resource: ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: if group.is_empty() {
                    "v1".into()
                } else {
                    format!("{group}/v1")
                },
                kind: "Thing".into(),
                plural: plural.into(),
            },
            namespaced: true,
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn collects_deletable_watchable_resources_except_events() {
        let all = ["delete", "list", "watch", "get"];
        assert!(is_collectable(&resource("", "configmaps", &all)));
        assert!(is_collectable(&resource("apps", "deployments", &all)));
        assert!(!is_collectable(&resource("", "events", &all)));
        assert!(!is_collectable(&resource("events.k8s.io", "events", &all)));
        assert!(!is_collectable(&resource(
            "",
            "componentstatuses",
            &["get", "list"]
        )));
    }

    #[test]
    fn absent_owner_cache_is_bounded() {
        let mut cache = AbsentOwners::default();
        for i in 0..(ABSENT_OWNER_CACHE_SIZE + 10) {
            cache.insert((format!("uid-{i}"), None));
        }
        assert_eq!(cache.set.len(), ABSENT_OWNER_CACHE_SIZE);
        assert!(!cache.contains(&("uid-0".into(), None)));
        assert!(cache.contains(&(format!("uid-{}", ABSENT_OWNER_CACHE_SIZE + 9), None)));
    }
}
