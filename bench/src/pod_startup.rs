//! `krust-bench pod-startup`: N pods created at once on one real node (the server's
//! embedded agent with its own containerd), time from each create call to the pod's
//! Ready condition as seen through a watch; plus the memory of the server process
//! (API server, controllers and agent together), of containerd and of the shims, and
//! where the CPU time of the start went (see [`CpuTimes`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use krust_e2e::node::TestNode;
use kube::Api;
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::{percentile, rss_mb, status_mb};

/// How long the node's CPU use is sampled once every pod runs.
const STEADY_WINDOW: Duration = Duration::from_secs(10);

/// How long all pods may take to become Ready.
const ALL_READY_TIMEOUT: Duration = Duration::from_secs(300);

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The containerd shims serving the node's containerd (their pids).
fn shims(socket: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("containerd-shim") && cmdline.contains(socket) {
            pids.push(pid);
        }
    }
    pids
}

/// The clock ticks of /proc's CPU times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds of `pid` and of its children it waited for (`utime stime cutime
/// cstime` of /proc/<pid>/stat): containerd's children are the CNI plugins and the
/// shims' start commands, a shim's are the runc invocations.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime is field 14 of the line, the 12th after the name.
    fields
        .get(11..15)
        .map(|times| times.iter().filter_map(|t| t.parse::<f64>().ok()).sum())
        .unwrap_or(0.0)
        / TICKS_PER_SECOND
}

/// Busy CPU seconds of the whole machine, all cores (/proc/stat: everything but
/// idle and iowait).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let times: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let idle = times.get(3).copied().unwrap_or(0.0) + times.get(4).copied().unwrap_or(0.0);
    (times.iter().sum::<f64>() - idle) / TICKS_PER_SECOND
}

/// Where the CPU time went between two moments: the server process (API server,
/// controllers, agent), containerd with the CNI plugins it ran, the shims with the
/// runc invocations they ran, and the whole machine.
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    server: f64,
    containerd: f64,
    shims: f64,
    machine: f64,
}

impl CpuTimes {
    fn read(server_pid: u32, containerd_pid: u32, socket: &str) -> CpuTimes {
        CpuTimes {
            server: process_cpu_seconds(server_pid),
            containerd: process_cpu_seconds(containerd_pid),
            shims: shims(socket).into_iter().map(process_cpu_seconds).sum(),
            machine: machine_busy_seconds(),
        }
    }

    fn since(self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            server: self.server - earlier.server,
            containerd: self.containerd - earlier.containerd,
            shims: self.shims - earlier.shims,
            machine: self.machine - earlier.machine,
        }
    }
}

pub async fn run(pods: usize, separate_agent: bool) -> Result<()> {
    let start = if separate_agent {
        TestNode::start_separate_agent
    } else {
        TestNode::start
    };
    let node = tokio::task::spawn_blocking(start).await?;
    let client = node.server.client().await;
    // The process that runs the node: the server with its embedded agent, or the
    // agent alone.
    let (server_pid, who) = if separate_agent {
        let pid = node.agent_pid().context("the agent is not running")?;
        (pid, "krust agent alone (no service proxy)")
    } else {
        let pid = node.server.pid().context("the server is not running")?;
        (pid, "krust server with agent")
    };
    let containerd_dir = node.agent_dir().join("containerd");
    let containerd_pid: u32 = std::fs::read_to_string(containerd_dir.join("containerd.pid"))?
        .trim()
        .parse()?;
    let socket = containerd_dir.join("containerd.sock").display().to_string();
    let idle_server = rss_mb(server_pid);
    let idle_server_anon = status_mb(server_pid, "RssAnon");
    let idle_containerd = rss_mb(containerd_pid);

    let api: Api<Pod> = Api::namespaced(client, "default");
    let version = api
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut watch = api.watch(&WatchParams::default(), &version).await?.boxed();
    let image = node.image("krust/busybox:1");
    let created = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let cpu_before = CpuTimes::read(server_pid, containerd_pid, &socket);
    let started = Instant::now();
    let mut creates = Vec::new();
    for i in 0..pods {
        let api = api.clone();
        let created = created.clone();
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": format!("bench-{i}") },
            "spec": {
                "nodeName": node.node_name,
                "terminationGracePeriodSeconds": 0,
                "containers": [{ "name": "main", "image": image, "imagePullPolicy": "IfNotPresent",
                                 "command": ["sleep", "3600"] }],
            },
        }))?;
        creates.push(tokio::spawn(async move {
            let at = Instant::now();
            api.create(&PostParams::default(), &pod).await?;
            created
                .lock()
                .expect("lock")
                .insert(format!("bench-{i}"), at);
            anyhow::Ok(())
        }));
    }
    for create in creates {
        create.await??;
    }
    let mut ready_at: HashMap<String, Instant> = HashMap::new();
    let deadline = tokio::time::Instant::now() + ALL_READY_TIMEOUT;
    while ready_at.len() < pods {
        let event = tokio::time::timeout_at(deadline, watch.next())
            .await
            .with_context(|| {
                format!("only {} of {pods} pods were Ready in time", ready_at.len())
            })?;
        match event {
            Some(Ok(WatchEvent::Added(pod))) | Some(Ok(WatchEvent::Modified(pod))) => {
                let name = pod.metadata.name.clone().unwrap_or_default();
                if is_ready(&pod) && !ready_at.contains_key(&name) {
                    ready_at.insert(name, Instant::now());
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => bail!("the watch failed: {error}"),
            None => bail!("the watch ended"),
        }
    }
    let all_ready = started.elapsed();
    let cpu = CpuTimes::read(server_pid, containerd_pid, &socket).since(cpu_before);
    let created = created.lock().expect("lock").clone();
    let mut latencies: Vec<f64> = ready_at
        .iter()
        .map(|(name, at)| at.duration_since(created[name]).as_secs_f64() * 1000.0)
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let busy_server = rss_mb(server_pid);
    let busy_server_anon = status_mb(server_pid, "RssAnon");
    let busy_containerd = rss_mb(containerd_pid);
    // Steady state: what the node costs while the pods just run.
    let steady_before = CpuTimes::read(server_pid, containerd_pid, &socket);
    tokio::time::sleep(STEADY_WINDOW).await;
    let steady = CpuTimes::read(server_pid, containerd_pid, &socket).since(steady_before);
    let per_second = |seconds: f64| 100.0 * seconds / STEADY_WINDOW.as_secs_f64();
    let shim_pids = shims(&socket);
    let shims = shim_pids.len();
    let shims_mb: f64 = shim_pids.into_iter().map(rss_mb).sum();

    println!("| figure | value | target (issue 5) |");
    println!("| --- | --- | --- |");
    println!(
        "| {pods} pods, create to Ready p50 / p99 (ms) | {:.0} / {:.0} | p50 < 400, p99 < 1500 |",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    println!(
        "| all {pods} Ready after (s) | {:.1} | |",
        all_ready.as_secs_f64()
    );
    println!("| RSS idle: {who} (MB) | {idle_server:.1} | agent < 30 |");
    println!("| RSS with {pods} pods: {who} (MB) | {busy_server:.1} | |");
    println!(
        "| of which allocated (RssAnon) idle / with {pods} pods (MB) | {idle_server_anon:.1} / {busy_server_anon:.1} | |"
    );
    println!(
        "| RSS containerd idle / with {pods} pods (MB) | {idle_containerd:.1} / {busy_containerd:.1} | |"
    );
    println!("| RSS of {shims} shims together (MB) | {shims_mb:.1} | |");
    println!(
        "| CPU until all Ready (s): {who} / containerd with CNI plugins / shims with runc / whole machine | {:.1} / {:.1} / {:.1} / {:.1} | |",
        cpu.server, cpu.containerd, cpu.shims, cpu.machine
    );
    println!(
        "| CPU with {pods} pods running (% of one core): {who} / containerd / whole machine | {:.1} / {:.1} / {:.1} | |",
        per_second(steady.server),
        per_second(steady.containerd),
        per_second(steady.machine)
    );
    // Dropping the node removes the pods' sandboxes through CRI.
    tokio::task::spawn_blocking(move || drop(node)).await?;
    Ok(())
}
