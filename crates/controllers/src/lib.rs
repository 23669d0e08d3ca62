//! krust's controllers: the control loops that act on what is stored, talking to the
//! API server only through its API (a [`kube::Client`]), like any other client.
//!
//! [`run`] starts them all and runs until the process ends. Today that is:
//!
//! - [`garbage_collector`]: deletes objects whose owners (by `ownerReferences`) are
//!   gone, and carries out the `Orphan` and `Foreground` deletion policies;
//! - [`namespace`]: empties a namespace being deleted, reports progress in its
//!   status conditions, then finalizes it;
//! - [`clusterrole_aggregation`]: fills ClusterRoles that have an aggregation rule
//!   (`admin`, `edit`, `view`) with the rules of the roles they select;
//! - [`job`]: runs a Job's pods to completion (see [`workload`] for what the
//!   workload controllers share);
//! - [`cronjob`]: creates Jobs on a cron schedule;
//! - [`statefulset`]: pods with stable names and their own volume claims;
//! - [`daemonset`]: one pod on every node that should run it;
//! - [`replicaset`]: keeps a ReplicaSet's (or ReplicationController's) pod count;
//! - [`deployment`]: rolls ReplicaSets out and back per pod template.
//!
//! Every controller is level-triggered: watch -> cache -> [`workqueue`] ->
//! reconcile. Events only say *which* key to look at; the handler looks at the
//! current state and does what it asks for, so a missed, repeated or reordered event
//! does no harm. Failures are retried with per-key backoff; nothing waits on a
//! fixed sleep to let something else happen.
//!
//! A newcomer starts at [`run`], then [`informers`] (the shared metadata watches of
//! every resource type) and one controller module. [`discovery`] says which resource
//! types the server serves.

pub mod cache;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod garbage_collector;
pub mod informers;
pub mod job;
pub mod namespace;
pub mod replicaset;
pub mod statefulset;
pub mod workload;
pub mod workqueue;

use anyhow::anyhow;
use tokio::task::JoinSet;

use garbage_collector::GarbageCollector;
use informers::Informers;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use namespace::NamespaceController;

/// Runs every controller against the API server `client` talks to, until the
/// process ends (or a controller fails for good, which is returned as an error).
/// Dropping the future stops them all.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let informers = Informers::new(client.clone(), garbage_collector::is_collectable);
    let garbage_collector = GarbageCollector::new(client.clone(), informers.clone());
    let garbage_collector_events = informers.subscribe();
    let namespaces = NamespaceController::new(client.clone());
    let namespace_events = informers.subscribe();
    let caches = cache::Caches::new(client.clone());

    // Dropping the set aborts every task in it.
    let mut tasks = JoinSet::new();
    tasks.spawn(informers.run());
    tasks.spawn(garbage_collector.run(garbage_collector_events));
    tasks.spawn(namespaces.run(namespace_events));
    tasks.spawn(replicaset::run::<ReplicaSet>(caches.clone()));
    tasks.spawn(deployment::run(caches.clone()));
    tasks.spawn(replicaset::run::<ReplicationController>(caches.clone()));
    tasks.spawn(job::run(caches.clone()));
    tasks.spawn(cronjob::run(caches.clone()));
    tasks.spawn(statefulset::run(caches.clone()));
    tasks.spawn(daemonset::run(caches.clone()));
    tasks.spawn(clusterrole_aggregation::run(client));
    match tasks.join_next().await {
        Some(Ok(Ok(()))) => Err(anyhow!("a controller stopped unexpectedly")),
        Some(Ok(Err(error))) => Err(error),
        Some(Err(error)) => Err(anyhow!("a controller task failed: {error}")),
        None => Err(anyhow!("no controller was started")),
    }
}
