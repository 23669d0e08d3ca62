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
//! - [`serviceaccount`]: the `default` ServiceAccount and the `kube-root-ca.crt`
//!   ConfigMap in every namespace;
//! - [`endpoints`] and [`endpointslice`]: the Endpoints and EndpointSlices of every
//!   Service with a selector, from the pods it selects; [`endpointslicemirroring`]:
//!   EndpointSlices mirroring the hand-written Endpoints of Services without one;
//! - [`disruption`]: the status of every PodDisruptionBudget (healthy pods, allowed
//!   disruptions), which evictions read;
//! - [`resourcequota`]: the `status.used` of every ResourceQuota;
//! - [`podautoscaler`]: HorizontalPodAutoscalers: the target's scale from its pods'
//!   resource metrics (metrics.k8s.io), within the behavior's windows and policies;
//! - [`nodeipam`]: a pod CIDR for every node, from the cluster CIDR;
//! - [`servicelb`]: the Ready nodes' addresses as LoadBalancer Services' ingress;
//! - [`nodelifecycle`]: silent nodes become Unknown, not-Ready nodes are tainted and
//!   their pods marked not Ready, and pods that do not tolerate a NoExecute taint are
//!   evicted;
//! - [`volume`]: PersistentVolume binding and reclaim, in-use protection of claims
//!   and volumes, and the claims of ephemeral volumes.
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
pub mod certificates;
pub mod changes;
pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod endpointslicemirroring;
pub mod garbage_collector;
pub mod informers;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod volume;
pub mod workload;
pub mod workqueue;

use anyhow::anyhow;
use tokio::task::JoinSet;

use garbage_collector::GarbageCollector;
use informers::Informers;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::ReplicationController;
use namespace::NamespaceController;

/// What the controllers need to know about the cluster beyond its API.
#[derive(Clone, Debug)]
pub struct Options {
    /// PEM of the cluster CA, published in every namespace as the
    /// `kube-root-ca.crt` ConfigMap (None: not published).
    pub root_ca_pem: Option<String>,
    /// The CA that signs approved node client CSRs (None: they are approved but not
    /// signed).
    pub signing_ca: Option<certificates::SigningCa>,
    /// The range node pod CIDRs are taken from (`--cluster-cidr`).
    pub cluster_cidr: krust_api::cidr::Ipv4Cidr,
    /// The prefix length of each node's pod CIDR.
    pub node_cidr_mask_size: u8,
    /// How long a node may go without renewing its Lease before it is NotReady
    /// (`--node-monitor-grace-period`).
    pub node_monitor_grace_period: std::time::Duration,
    /// The horizontal pod autoscaler's flags.
    pub autoscaler: podautoscaler::Settings,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            root_ca_pem: None,
            signing_ca: None,
            cluster_cidr: "10.42.0.0/16".parse().expect("valid default range"),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: std::time::Duration::from_secs(40),
            autoscaler: podautoscaler::Settings::default(),
        }
    }
}

/// Runs every controller against the API server `client` talks to, until the
/// process ends (or a controller fails for good, which is returned as an error).
/// Dropping the future stops them all.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    run_with(client, Options::default()).await
}

/// [`run`] with the given [`Options`].
pub async fn run_with(client: kube::Client, options: Options) -> anyhow::Result<()> {
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
    tasks.spawn(certificates::run(
        client.clone(),
        options.signing_ca.clone(),
    ));
    tasks.spawn(clusterrole_aggregation::run(client));
    tasks.spawn(serviceaccount::run(
        caches.clone(),
        options.root_ca_pem.clone(),
    ));
    tasks.spawn(disruption::run(caches.clone()));
    tasks.spawn(podautoscaler::run(
        caches.clone(),
        options.autoscaler.clone(),
    ));
    tasks.spawn(resourcequota::run(caches.clone()));
    tasks.spawn(endpoints::run(caches.clone()));
    tasks.spawn(endpointslice::run(caches.clone()));
    tasks.spawn(endpointslicemirroring::run(caches.clone()));
    tasks.spawn(nodeipam::run(
        caches.clone(),
        options.cluster_cidr,
        options.node_cidr_mask_size,
    ));
    tasks.spawn(servicelb::run(caches.clone()));
    tasks.spawn(volume::binder::run(caches.clone()));
    tasks.spawn(volume::protection::run(caches.clone()));
    tasks.spawn(volume::ephemeral::run(caches.clone()));
    tasks.spawn(volume::expand::run(caches.clone()));
    tasks.spawn(nodelifecycle::run(
        caches.clone(),
        options.node_monitor_grace_period,
    ));
    match tasks.join_next().await {
        Some(Ok(Ok(()))) => Err(anyhow!("a controller stopped unexpectedly")),
        Some(Ok(Err(error))) => Err(error),
        Some(Err(error)) => Err(anyhow!("a controller task failed: {error}")),
        None => Err(anyhow!("no controller was started")),
    }
}
