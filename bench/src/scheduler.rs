//! `krust-bench scheduler`: scheduling throughput, modelled on upstream's scheduler_perf.
//!
//! Each workload starts a real `krust server --disable-scheduler`, creates hollow nodes
//! (Node objects only), runs krust's scheduler in this process (as a separate
//! `krust scheduler` would run), creates the pods through the API with a bounded number
//! of requests in flight, and watches them until every one is bound. Throughput is
//! end to end: pods divided by the time from the first create to the last binding seen
//! through the watch. The latency is the scheduler's own, from the start of a pod's
//! scheduling attempt to its binding's answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use krust_e2e::{ServerOptions, TestServer};
use kube::Api;
use kube::api::PostParams;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

/// Pod creates in flight at once.
const CREATES_IN_FLIGHT: usize = 64;
/// How long one workload may take to bind everything.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// One benchmark workload.
pub struct Workload {
    pub name: &'static str,
    pub nodes: usize,
    pub pods: usize,
    /// Pod spec additions for pod `i`.
    pub pod_extra: fn(usize) -> Value,
}

fn plain(_: usize) -> Value {
    json!({})
}

/// Half the pods are anti-affine per node with their group, half spread over zones.
fn anti_affinity_and_spread(i: usize) -> Value {
    if i.is_multiple_of(2) {
        json!({"metadata": {"labels": {"color": "green"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": "green"}},
                "topologyKey": "kubernetes.io/hostname"}]}}}})
    } else {
        json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]}})
    }
}

/// The workloads `krust-bench scheduler` runs, scaled by `scale` (1.0 = full size).
pub fn workloads(scale: f64) -> Vec<Workload> {
    let n = |count: usize| ((count as f64 * scale).round() as usize).max(1);
    vec![
        Workload {
            name: "SchedulingBasic",
            nodes: n(5000),
            pods: n(10_000),
            pod_extra: plain,
        },
        Workload {
            name: "SchedulingBasic (dense)",
            nodes: n(1000),
            pods: n(30_000),
            pod_extra: plain,
        },
        Workload {
            name: "Anti-affinity + topology spread",
            nodes: n(1000),
            pods: n(1000),
            pod_extra: anti_affinity_and_spread,
        },
    ]
}

/// What one workload measured.
pub struct WorkloadResult {
    pub name: &'static str,
    pub nodes: usize,
    pub pods: usize,
    pub create_per_s: f64,
    pub pods_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs the workloads and prints a Markdown table.
pub async fn run(workloads: Vec<Workload>) -> Result<()> {
    let mut results = Vec::new();
    for workload in workloads {
        eprintln!(
            "== {}: {} nodes, {} pods",
            workload.name, workload.nodes, workload.pods
        );
        let result = measure(&workload).await?;
        eprintln!(
            "   {:.0} pods/s end to end, scheduler p99 {:.1} ms",
            result.pods_per_s, result.p99_ms
        );
        results.push(result);
    }
    println!(
        "| workload | nodes | pods | creates/s | scheduled pods/s (end to end) | scheduler p50 | scheduler p99 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms |",
            r.name, r.nodes, r.pods, r.create_per_s, r.pods_per_s, r.p50_ms, r.p99_ms
        );
    }
    Ok(())
}

async fn measure(workload: &Workload) -> Result<WorkloadResult> {
    let server = tokio::task::spawn_blocking(|| {
        TestServer::start_with(ServerOptions {
            extra_args: vec!["--disable-scheduler".into()],
            ..ServerOptions::default()
        })
    })
    .await?;
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "bench"}}))?,
        )
        .await?;
    let templates: Vec<NodeTemplate> = (0..workload.nodes)
        .map(|i| {
            NodeTemplate::new(format!("node-{i}"))
                .capacity("4", "32Gi", "110")
                .label("topology.kubernetes.io/zone", &format!("zone-{}", i % 10))
        })
        .collect();
    let started = Instant::now();
    let _nodes = HollowNodes::start(
        client.clone(),
        templates,
        HollowOptions {
            nodes_only: true,
            ..HollowOptions::default()
        },
    )
    .await;
    eprintln!(
        "   {} nodes created in {:.1} s",
        workload.nodes,
        started.elapsed().as_secs_f64()
    );

    // The scheduler gets its own client (own connections), as a separate process would.
    let metrics = Arc::new(krust_scheduler::Metrics::default());
    let scheduler = tokio::spawn(krust_scheduler::run(
        server.client().await,
        krust_scheduler::SchedulerConfig::default(),
        metrics.clone(),
    ));

    let pods: Api<Pod> = Api::namespaced(client.clone(), "bench");
    let mut watch =
        kube::runtime::watcher(pods.clone(), kube::runtime::watcher::Config::default()).boxed();
    let total = workload.pods;
    let waiter = tokio::spawn(async move {
        let mut bound = std::collections::HashSet::new();
        while let Some(event) = watch.next().await {
            if let Ok(Event::Apply(pod) | Event::InitApply(pod)) = event
                && pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some()
            {
                bound.insert(pod.metadata.name.unwrap_or_default());
                if bound.len() == total {
                    return Some(Instant::now());
                }
            }
        }
        None
    });

    let first_create = Instant::now();
    let extra = workload.pod_extra;
    futures::stream::iter(0..workload.pods)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let mut pod = json!({
                    "metadata": {"name": format!("pod-{i}")},
                    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]},
                });
                merge(&mut pod, extra(i));
                pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::from)
            }
        })
        .buffer_unordered(CREATES_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
    let created = first_create.elapsed();
    let Ok(Ok(Some(all_bound))) = tokio::time::timeout(WORKLOAD_TIMEOUT, waiter).await else {
        bail!(
            "{}: not every pod was bound within {WORKLOAD_TIMEOUT:?}",
            workload.name
        );
    };
    let elapsed = all_bound.duration_since(first_create);
    scheduler.abort();
    let summary = metrics.summary();
    Ok(WorkloadResult {
        name: workload.name,
        nodes: workload.nodes,
        pods: workload.pods,
        create_per_s: workload.pods as f64 / created.as_secs_f64(),
        pods_per_s: workload.pods as f64 / elapsed.as_secs_f64(),
        p50_ms: summary.p50.as_secs_f64() * 1000.0,
        p99_ms: summary.p99.as_secs_f64() * 1000.0,
    })
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}
