//! `krust-bench`: benchmarks that start real krust servers (and an etcd beside them)
//! and drive them through a real client, printing a Markdown table for
//! BENCHMARKS.md. Backends are measured side by side in the same run so their ratio
//! is meaningful even on a noisy machine.
//!
//! `krust-bench api` measures the API server on the embedded SQLite store and on etcd;
//! `krust-bench controllers` a Deployment rollout on hollow nodes ([`controllers`]);
//! `krust-bench scheduler` scheduling throughput ([`scheduler`]);
//! `krust-bench pod-startup` pods reaching Ready on one real node ([`pod_startup`]);
//! `krust-bench network` the service proxy's rule sync in both modes ([`network`]);
//! `krust-bench dns` the cluster DNS's queries per second ([`dns`]).

mod controllers;
mod dns;
mod network;
mod pod_startup;
mod scheduler;

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use krust_e2e::{EtcdServer, ServerOptions, TestServer};
use kube::Api;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

#[derive(Parser)]
#[command(about = "krust benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API server: creates/s, get latency, LIST, watch fan-out, memory, start-up.
    Api {
        /// Pods created for the LIST and memory figures.
        #[arg(long, default_value_t = 10_000)]
        pods: usize,
        /// ConfigMaps created per create-rate figure.
        #[arg(long, default_value_t = 4_000)]
        creates: usize,
        /// Concurrent watchers.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
    },
    /// Workload controllers: a Deployment on hollow nodes to all-Ready, then a rolling update.
    Controllers {
        /// Replicas of the Deployment.
        #[arg(long, default_value_t = 3_000)]
        replicas: i32,
        /// Hollow nodes the pods are bound to.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
    },
    /// Scheduler: pods/s end to end and the scheduler's latency, on hollow nodes.
    Scheduler {
        /// Scale every workload by this factor (1.0: 5,000 nodes / 10,000 pods, ...).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Run only the workloads whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Service proxy: rule sync for many Services, full and one change, in the
    /// nftables and the iptables mode.
    Network {
        /// Services (ClusterIP, one port each).
        #[arg(long, default_value_t = 1_000)]
        services: usize,
        /// Ready endpoints per Service.
        #[arg(long, default_value_t = 10)]
        endpoints: usize,
    },
    /// Cluster DNS: answered queries per second, the server on one core.
    Dns {
        /// Services the server holds (each query asks for one of them).
        #[arg(long, default_value_t = 100)]
        services: usize,
        /// Concurrent clients, each with one query in flight.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// How long to send queries.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Node agent: pods created at once on one node, create to Ready; memory.
    PodStartup {
        /// Pods created at once.
        #[arg(long, default_value_t = 100)]
        pods: usize,
        /// Run the node as a `krust agent` process of its own (without the service
        /// proxy, as test nodes sharing the host's network run), so that its memory
        /// and CPU are the agent's alone.
        #[arg(long)]
        separate_agent: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The servers are the krust binary built next to this one.
    if std::env::var_os("KRUST_BIN").is_none() {
        let sibling = std::env::current_exe()?.with_file_name("krust");
        // SAFETY: set before any thread is started.
        unsafe { std::env::set_var("KRUST_BIN", sibling) };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Api {
            pods,
            creates,
            watchers,
        } => runtime.block_on(api(pods, creates, watchers)),
        Command::Controllers { replicas, nodes } => {
            runtime.block_on(controllers::run(replicas, nodes))
        }
        Command::Scheduler { scale, only } => {
            let mut workloads = scheduler::workloads(scale);
            if let Some(only) = only {
                workloads.retain(|w| w.name.contains(only.as_str()));
            }
            runtime.block_on(scheduler::run(workloads))
        }
        Command::Dns {
            services,
            clients,
            seconds,
        } => runtime.block_on(dns::run(services, clients, seconds)),
        Command::PodStartup {
            pods,
            separate_agent,
        } => runtime.block_on(pod_startup::run(pods, separate_agent)),
        Command::Network {
            services,
            endpoints,
        } => runtime.block_on(network::run(services, endpoints)),
    }
}

/// One backend's figures.
#[derive(Default)]
struct Figures {
    readyz_ms: f64,
    rss_idle_mb: f64,
    creates_1: f64,
    creates_16: f64,
    get_p50_ms: f64,
    get_p99_ms: f64,
    list_pods_ms: f64,
    watch_fanout_ms: f64,
    watch_events: usize,
    rss_pods_mb: f64,
}

async fn api(pods: usize, creates: usize, watchers: usize) -> Result<()> {
    let etcd = EtcdServer::start();
    let mut results = Vec::new();
    for (name, datastore) in [("SQLite (embedded)", None), ("etcd 3.4", Some(etcd.url()))] {
        eprintln!("== {name}");
        results.push((name, measure(datastore, pods, creates, watchers).await?));
    }
    println!("| figure | {} | {} |", results[0].0, results[1].0);
    println!("| --- | --- | --- |");
    let row = |label: &str, f: &dyn Fn(&Figures) -> String| {
        println!("| {label} | {} | {} |", f(&results[0].1), f(&results[1].1));
    };
    row("start to /readyz 200 (ms)", &|f| {
        format!("{:.0}", f.readyz_ms)
    });
    row("RSS idle (MB)", &|f| format!("{:.1}", f.rss_idle_mb));
    row("ConfigMap creates/s, 1 client", &|f| {
        format!("{:.0}", f.creates_1)
    });
    row("ConfigMap creates/s, 16 clients", &|f| {
        format!("{:.0}", f.creates_16)
    });
    row("GET p50 / p99 (ms)", &|f| {
        format!("{:.2} / {:.2}", f.get_p50_ms, f.get_p99_ms)
    });
    row(&format!("LIST of {pods} pods (ms, median of 5)"), &|f| {
        format!("{:.0}", f.list_pods_ms)
    });
    row(
        &format!("{watchers} watchers: all events delivered (ms)"),
        &|f| format!("{:.0} ({} events)", f.watch_fanout_ms, f.watch_events),
    );
    row(&format!("RSS holding {pods} pods (MB)"), &|f| {
        format!("{:.1}", f.rss_pods_mb)
    });
    Ok(())
}

fn rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS")
}

/// A memory figure of /proc/<pid>/status in MB (`VmRSS`, `RssAnon`, ...). A debug
/// build's RSS is mostly its mapped binary (`RssFile`); `RssAnon` is what it allocated.
pub fn status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn create_configmaps(
    clients: &[kube::Client],
    namespace: &str,
    prefix: &str,
    total: usize,
) -> Result<f64> {
    let per_client = total / clients.len();
    let start = Instant::now();
    let tasks = clients.iter().enumerate().map(|(c, client)| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let prefix = prefix.to_string();
        async move {
            for i in 0..per_client {
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("{prefix}-{c}-{i}")},
                    "data": {"key": "value"}
                }))?;
                api.create(&PostParams::default(), &cm).await?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(tasks).await?;
    Ok((per_client * clients.len()) as f64 / start.elapsed().as_secs_f64())
}

async fn measure(
    datastore: Option<String>,
    pods: usize,
    creates: usize,
    watchers: usize,
) -> Result<Figures> {
    let mut figures = Figures::default();
    let started = Instant::now();
    let server = TestServer::start_with(ServerOptions {
        datastore,
        ..Default::default()
    });
    figures.readyz_ms = started.elapsed().as_secs_f64() * 1000.0;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = server.pid().expect("server runs");
    figures.rss_idle_mb = rss_mb(pid);

    let mut clients = Vec::new();
    for _ in 0..16 {
        clients.push(server.client().await);
    }
    let namespaces: Api<Namespace> = Api::all(clients[0].clone());
    for ns in ["bench", "pods"] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    figures.creates_1 = create_configmaps(&clients[..1], "bench", "one", creates / 4).await?;
    figures.creates_16 = create_configmaps(&clients, "bench", "many", creates).await?;

    let maps: Api<ConfigMap> = Api::namespaced(clients[0].clone(), "bench");
    let mut latencies = Vec::new();
    for i in 0..2000 {
        let begin = Instant::now();
        maps.get(&format!("one-0-{}", i % (creates / 4))).await?;
        latencies.push(begin.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    figures.get_p50_ms = percentile(&latencies, 0.5);
    figures.get_p99_ms = percentile(&latencies, 0.99);

    // Watch fan-out: every watcher must see every new ConfigMap.
    let start_rv = maps
        .list_metadata(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let events_each = 200;
    let mut watch_tasks = Vec::new();
    for w in 0..watchers {
        let api: Api<ConfigMap> = Api::namespaced(clients[w % clients.len()].clone(), "bench");
        let rv = start_rv.clone();
        watch_tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            let params = WatchParams::default().labels("fanout=yes").timeout(120);
            let mut stream = api.watch(&params, &rv).await?.boxed();
            while let Some(event) = stream.try_next().await? {
                if let WatchEvent::Added(_) = event {
                    seen += 1;
                    if seen == events_each {
                        break;
                    }
                }
            }
            anyhow::Ok(Instant::now())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fanout_start = Instant::now();
    for i in 0..events_each {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("fan-{i}"), "labels": {"fanout": "yes"}}}),
        )?;
        maps.create(&PostParams::default(), &cm).await?;
    }
    let mut last = fanout_start;
    for task in watch_tasks {
        last = last.max(task.await??);
    }
    figures.watch_fanout_ms = (last - fanout_start).as_secs_f64() * 1000.0;
    figures.watch_events = events_each * watchers;

    // Pods for LIST and memory.
    let per_client = pods / clients.len();
    let tasks = clients.iter().enumerate().map(|(c, client)| {
        let api: Api<Pod> = Api::namespaced(client.clone(), "pods");
        async move {
            for i in 0..per_client {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{c}-{i}"), "labels": {"app": "bench", "shard": c.to_string()}},
                    "spec": {"containers": [{"name": "app", "image": "registry.local/app:1.0",
                        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                        "env": [{"name": "MODE", "value": "bench"}], "ports": [{"containerPort": 8080}]}]}
                }))?;
                api.create(&PostParams::default(), &pod).await?;
            }
            anyhow::Ok(())
        }
    });
    futures::future::try_join_all(tasks).await?;
    // The LIST is timed to the last byte received, without client-side decoding.
    let mut list_times = Vec::new();
    for _ in 0..5 {
        let request = http::Request::get("/api/v1/namespaces/pods/pods").body(Vec::new())?;
        let begin = Instant::now();
        let body = clients[0].request_text(request).await?;
        list_times.push(begin.elapsed().as_secs_f64() * 1000.0);
        let count = body.matches("\"kind\":\"Pod\"").count();
        anyhow::ensure!(
            count == per_client * clients.len(),
            "the LIST returned {count} pods"
        );
    }
    list_times.sort_by(f64::total_cmp);
    figures.list_pods_ms = list_times[2];
    figures.rss_pods_mb = rss_mb(pid);
    Ok(figures)
}
