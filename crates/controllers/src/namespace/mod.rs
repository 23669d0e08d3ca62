//! The namespace controller: empties a namespace that is being deleted, then
//! finalizes it, as upstream's `pkg/controller/namespace` does.
//!
//! A namespace with a deletionTimestamp is synced ([`NamespaceController::sync`]):
//!
//! 1. its phase is made `Terminating` (the API server normally did that already);
//! 2. if `spec.finalizers` is empty it is finished (the server removes it);
//! 3. every namespaced resource type that discovery lists with `delete` is emptied:
//!    pods first (upstream's `OrderedNamespaceDeletion`), then the rest, by
//!    `deletecollection` when supported, else object by object, with propagation
//!    `Background`; what remains is listed and counted;
//! 4. the status conditions are brought up to date ([`conditions`]);
//! 5. if discovery or a deletion failed, the sync fails (and is retried with
//!    backoff); if content remains that is waiting for finalizers or for graceful
//!    pod termination, the namespace is looked at again later;
//! 6. otherwise `kubernetes` is removed from `spec.finalizers` through the
//!    `namespaces/<name>/finalize` subresource, and the server deletes the namespace.
//!
//! Besides namespace events, the deletion of any watched object in a terminating
//! namespace queues that namespace, so it is finalized as soon as its last object
//! is gone rather than at the next timed look.

pub mod conditions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use crate::discovery::{self, Discovered, ResourceType};
use crate::garbage_collector::status_code;
use crate::informers::{EventKind, ObjectEvent};
use crate::workqueue::{Outcome, WorkQueue, run_workers};
use conditions::ContentReport;

/// The finalizer this controller owns in a namespace's `spec.finalizers`.
pub const FINALIZER: &str = "kubernetes";
/// Concurrent namespace syncs.
const WORKERS: usize = 4;
/// Resource types emptied at the same time within one namespace.
const RESOURCE_CONCURRENCY: usize = 8;
/// How long upstream assumes finalizers of remaining content take (seconds).
const FINALIZER_ESTIMATE_SECONDS: u64 = 15;
/// How often every terminating namespace is looked at even without events.
const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// Read-modify-write attempts on conflicts.
const CONFLICT_ATTEMPTS: usize = 5;

/// The namespace controller. Create with [`NamespaceController::new`], then
/// [`NamespaceController::run`].
pub struct NamespaceController {
    client: Client,
    queue: WorkQueue<String>,
    namespaces: Store<Namespace>,
    writer: std::sync::Mutex<Option<reflector::store::Writer<Namespace>>>,
}

/// What emptying one resource type of a namespace found.
#[derive(Debug, Default)]
struct ResourceOutcome {
    /// Seconds until the remaining objects are expected to be gone.
    estimate: u64,
    remaining: usize,
    finalizers: BTreeMap<String, usize>,
    error: Option<String>,
}

fn now() -> Time {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Time(Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn is_pods(resource: &ResourceType) -> bool {
    resource.api_resource.group.is_empty() && resource.api_resource.plural == "pods"
}

/// Whether an error means the verb is not served for this resource.
fn not_supported(error: &kube::Error) -> bool {
    matches!(status_code(error), Some(404 | 405))
}

impl NamespaceController {
    pub fn new(client: Client) -> Arc<NamespaceController> {
        let (namespaces, writer) = reflector::store();
        Arc::new(NamespaceController {
            client,
            queue: WorkQueue::new(),
            namespaces,
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Watches namespaces and `events` (object deletions), and syncs terminating
    /// namespaces, until the process ends.
    pub async fn run(
        self: Arc<Self>,
        events: mpsc::UnboundedReceiver<ObjectEvent>,
    ) -> anyhow::Result<()> {
        let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
        else {
            bail!("the namespace controller is already running");
        };
        let syncer = self.clone();
        tokio::join!(
            self.watch_namespaces(writer),
            self.watch_deletions(events),
            self.resync(),
            run_workers("namespace", self.queue.clone(), WORKERS, move |name| {
                let controller = syncer.clone();
                async move { controller.sync(&name).await }
            }),
        );
        bail!("the namespace controller stopped")
    }

    async fn watch_namespaces(&self, writer: reflector::store::Writer<Namespace>) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        tokio::pin!(stream);
        while let Some(namespace) = stream.next().await {
            match namespace {
                Ok(namespace) if namespace.metadata.deletion_timestamp.is_some() => {
                    if let Some(name) = namespace.metadata.name {
                        self.queue.add(name);
                    }
                }
                Ok(_) => {}
                Err(error) => tracing::debug!("namespace watch failed, retrying: {error}"),
            }
        }
    }

    /// An object deleted in a terminating namespace may have been its last one.
    async fn watch_deletions(&self, mut events: mpsc::UnboundedReceiver<ObjectEvent>) {
        while let Some(event) = events.recv().await {
            if event.kind != EventKind::Deleted {
                continue;
            }
            let Some(namespace) = event.meta.namespace.as_deref().filter(|ns| !ns.is_empty())
            else {
                continue;
            };
            let terminating = self
                .namespaces
                .get(&ObjectRef::new(namespace))
                .is_some_and(|ns| ns.metadata.deletion_timestamp.is_some());
            if terminating {
                self.queue.add(namespace.to_string());
            }
        }
    }

    /// Looks at every terminating namespace now and then, as upstream's informer
    /// resync does, in case something changed that no event reports.
    async fn resync(&self) {
        let mut ticks = tokio::time::interval(RESYNC_PERIOD);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            for namespace in self.namespaces.state() {
                if namespace.metadata.deletion_timestamp.is_some()
                    && let Some(name) = &namespace.metadata.name
                {
                    self.queue.add(name.clone());
                }
            }
        }
    }

    /// Brings one namespace's deletion forward (see the module documentation).
    pub async fn sync(&self, name: &str) -> anyhow::Result<Outcome> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let Some(mut namespace) = api.get_opt(name).await? else {
            return Ok(Outcome::Done);
        };
        if namespace.metadata.deletion_timestamp.is_none() {
            return Ok(Outcome::Done);
        }
        let status = namespace.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() != Some("Terminating") {
            status.phase = Some("Terminating".into());
            namespace = match api
                .replace_status(name, &PostParams::default(), &namespace)
                .await
            {
                Ok(updated) => updated,
                Err(error) if status_code(&error) == Some(404) => return Ok(Outcome::Done),
                Err(error) => return Err(error.into()),
            };
        }
        let finalizers = namespace
            .spec
            .as_ref()
            .and_then(|spec| spec.finalizers.clone())
            .unwrap_or_default();
        if finalizers.is_empty() {
            return Ok(Outcome::Done);
        }

        let (estimate, report) = self.delete_all_content(&namespace).await;
        let namespace = self.update_conditions(&api, namespace, &report).await;
        if report.discovery_failure.is_some() || !report.deletion_errors.is_empty() {
            let mut problems: Vec<String> = report.discovery_failure.iter().cloned().collect();
            problems.extend(report.deletion_errors.iter().cloned());
            bail!(
                "content of namespace {name} not fully deleted: {}",
                problems.join("; ")
            );
        }
        if estimate > 0 {
            tracing::debug!(namespace = name, estimate, "content remaining in namespace");
            return Ok(Outcome::RequeueAfter(Duration::from_secs(estimate / 2 + 1)));
        }
        self.finalize(&api, namespace).await?;
        tracing::info!(namespace = name, "namespace emptied and finalized");
        Ok(Outcome::Done)
    }

    /// Deletes every namespaced object in `namespace`. Returns the estimated
    /// seconds until what remains is gone, and what was found.
    async fn delete_all_content(&self, namespace: &Namespace) -> (u64, ContentReport) {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let deleted_at = namespace
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        let mut report = ContentReport::default();
        let discovered = match discovery::discover(&self.client).await {
            Ok(discovered) => {
                report.discovery_failure = discovered.failure_message();
                discovered
            }
            Err(error) => {
                report.discovery_failure = Some(format!("discovery failed: {error}"));
                Discovered::default()
            }
        };
        let (pods, others): (Vec<Arc<ResourceType>>, Vec<Arc<ResourceType>>) = discovered
            .preferred
            .iter()
            .filter(|r| r.namespaced && r.supports("delete"))
            .cloned()
            .partition(|r| is_pods(r));

        let mut estimate = 0;
        let mut absorb =
            |resource: &ResourceType, outcome: ResourceOutcome, report: &mut ContentReport| {
                estimate = estimate.max(outcome.estimate);
                if let Some(error) = outcome.error {
                    report.deletion_errors.push(error);
                }
                if outcome.remaining > 0 {
                    let key = format!(
                        "{}.{}",
                        resource.api_resource.plural, resource.api_resource.group
                    );
                    report.remaining.insert(key, outcome.remaining);
                    for (finalizer, count) in outcome.finalizers {
                        *report.finalizers.entry(finalizer).or_insert(0) += count;
                    }
                }
            };
        // Pods go first, so that workloads stop before what they use is deleted.
        for resource in &pods {
            let outcome = self.delete_resource(resource, &name, deleted_at).await;
            let pods_remain = outcome.remaining > 0;
            absorb(resource, outcome, &mut report);
            if pods_remain {
                return (estimate, report);
            }
        }
        let outcomes: Vec<(Arc<ResourceType>, ResourceOutcome)> = futures::stream::iter(others)
            .map(|resource| async {
                let outcome = self.delete_resource(&resource, &name, deleted_at).await;
                (resource, outcome)
            })
            .buffer_unordered(RESOURCE_CONCURRENCY)
            .collect()
            .await;
        for (resource, outcome) in outcomes {
            absorb(&resource, outcome, &mut report);
        }
        (estimate, report)
    }

    /// Empties one resource type of `namespace` and counts what remains.
    async fn delete_resource(
        &self,
        resource: &ResourceType,
        namespace: &str,
        deleted_at: i64,
    ) -> ResourceOutcome {
        let failed = |error: String, estimate: u64| ResourceOutcome {
            estimate,
            error: Some(error),
            ..Default::default()
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource.api_resource);
        let estimate = if is_pods(resource) {
            match self.estimate_pod_termination(namespace, deleted_at).await {
                Ok(estimate) => estimate,
                Err(error) => return failed(error.to_string(), 0),
            }
        } else {
            0
        };
        // The namespace controller deletes generically: no orphaning.
        let background = DeleteParams::background();
        let mut deleted_collection = false;
        if resource.supports("deletecollection") {
            match api
                .delete_collection(&background, &ListParams::default())
                .await
            {
                Ok(_) => deleted_collection = true,
                Err(error) if not_supported(&error) => {}
                Err(error) => return failed(error.to_string(), estimate),
            }
        }
        if !resource.supports("list") {
            return ResourceOutcome {
                estimate,
                ..Default::default()
            };
        }
        if !deleted_collection {
            match api.list_metadata(&ListParams::default()).await {
                Ok(list) => {
                    for item in list.items {
                        let Some(name) = item.metadata.name.as_deref() else {
                            continue;
                        };
                        match api.delete(name, &background).await {
                            Ok(_) => {}
                            Err(error) if not_supported(&error) => {}
                            Err(error) => return failed(error.to_string(), estimate),
                        }
                    }
                }
                Err(error) if not_supported(&error) => {}
                Err(error) => return failed(error.to_string(), estimate),
            }
        }
        let remaining = match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(error) if not_supported(&error) => Vec::new(),
            Err(error) => return failed(error.to_string(), estimate),
        };
        if remaining.is_empty() {
            return ResourceOutcome::default();
        }
        let mut finalizers = BTreeMap::new();
        for item in &remaining {
            for finalizer in item.metadata.finalizers.iter().flatten() {
                *finalizers.entry(finalizer.clone()).or_insert(0) += 1;
            }
        }
        let mut outcome = ResourceOutcome {
            estimate,
            remaining: remaining.len(),
            finalizers,
            error: None,
        };
        if estimate == 0 {
            if outcome.finalizers.is_empty() {
                // Nothing holds them, yet they were not deleted.
                outcome.error = Some(format!(
                    "unexpected items still remain in namespace: {namespace} for gvr: {resource}"
                ));
            } else {
                outcome.estimate = FINALIZER_ESTIMATE_SECONDS;
            }
        }
        outcome
    }

    /// The longest grace period of the namespace's running pods, unless that much
    /// time has passed since the namespace's deletion began.
    async fn estimate_pod_termination(
        &self,
        namespace: &str,
        deleted_at: i64,
    ) -> Result<u64, kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let mut estimate: i64 = 0;
        for pod in pods.list(&ListParams::default()).await? {
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if matches!(phase, Some("Succeeded" | "Failed")) {
                continue;
            }
            if let Some(grace) = pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
            {
                estimate = estimate.max(grace);
            }
        }
        let elapsed = now().0.as_second() - deleted_at;
        if elapsed >= estimate {
            return Ok(0);
        }
        Ok(estimate.max(0) as u64)
    }

    /// Writes the conditions `report` calls for, if they differ from the namespace's,
    /// and returns the namespace as it now is. A failure is only logged: the next
    /// sync writes them again.
    async fn update_conditions(
        &self,
        api: &Api<Namespace>,
        namespace: Namespace,
        report: &ContentReport,
    ) -> Namespace {
        let mut updated = namespace.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        let mut existing = status.conditions.clone().unwrap_or_default();
        if !conditions::merge(&mut existing, report.conditions(&now())) {
            return namespace;
        }
        status.conditions = Some(existing);
        let name = namespace.metadata.name.clone().unwrap_or_default();
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(written) => written,
            Err(error) => {
                tracing::warn!(
                    namespace = name,
                    "could not update the namespace's conditions: {error}"
                );
                namespace
            }
        }
    }

    /// Removes [`FINALIZER`] from `spec.finalizers` through the finalize subresource.
    async fn finalize(&self, api: &Api<Namespace>, mut namespace: Namespace) -> anyhow::Result<()> {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let uid = namespace.metadata.uid.clone();
        for _ in 0..CONFLICT_ATTEMPTS {
            let spec = namespace.spec.get_or_insert_with(Default::default);
            let mut finalizers: Vec<String> = spec
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != FINALIZER)
                .cloned()
                .collect();
            finalizers.sort();
            finalizers.dedup();
            spec.finalizers = Some(finalizers);
            match api
                .replace_subresource("finalize", &name, &PostParams::default(), &namespace)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if status_code(&error) == Some(404) => return Ok(()),
                Err(error) if status_code(&error) == Some(409) => {
                    let Some(latest) = api.get_opt(&name).await? else {
                        return Ok(());
                    };
                    if latest.metadata.uid != uid {
                        bail!("namespace {name} was replaced while being finalized");
                    }
                    namespace = latest;
                }
                Err(error) => return Err(error.into()),
            }
        }
        bail!("namespace {name} kept changing while being finalized")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ApiResource;

    #[test]
    fn pods_are_recognised() {
        let resource = |group: &str, plural: &str| ResourceType {
            api_resource: ApiResource {
                group: group.into(),
                version: "v1".into(),
                api_version: "v1".into(),
                kind: "X".into(),
                plural: plural.into(),
            },
            namespaced: true,
            verbs: vec![],
        };
        assert!(is_pods(&resource("", "pods")));
        assert!(!is_pods(&resource("metrics.k8s.io", "pods")));
        assert!(!is_pods(&resource("", "configmaps")));
    }

    #[test]
    fn now_is_after_the_epoch() {
        assert!(now().0 > Timestamp::UNIX_EPOCH);
    }
}
