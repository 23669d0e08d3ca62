//! Resource usage of the node and of its containers, sampled every [`SAMPLE_PERIOD`]:
//! cumulative CPU time (the runtime's per-container counters through CRI
//! ListContainerStats, `/proc/stat` for the node) turned into a rate between two
//! samples, and memory working sets (the runtime's, `/proc/meminfo` for the node).
//!
//! Disk usage comes from [`crate::volume_stats`], measured on its own schedule into
//! the same [`Sampler`]: each pod's volumes, its ephemeral storage (containers'
//! writable layers from ListContainerStats, its logs and its ephemeral volumes), and
//! the node's filesystem. The eviction manager checks local storage limits on the
//! same numbers ([`storage_usage`]).
//!
//! The kubelet API serves the latest sample as `/stats/summary` (the kubelet's
//! stats/v1alpha1 Summary) and `/metrics/resource` (Prometheus text with upstream's
//! metric names); the API server's metrics.k8s.io, and through it `kubectl top`,
//! reads the summary.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::cri::{Cri, api};
use crate::eviction;
use crate::volume_stats::{self, FsStats};

/// How often usage is sampled; CPU rates are averages over this window.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// Clock ticks per second of `/proc/stat` (USER_HZ, 100 on Linux).
const USER_HZ: u64 = 100;

/// A cumulative CPU counter read at a time, with the rate since the previous read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpu {
    /// Nanoseconds since the epoch.
    pub at_ns: i64,
    pub usage_core_nano_seconds: u64,
    /// Average cores used since the previous sample (none on the first one).
    pub usage_nano_cores: Option<u64>,
}

impl Cpu {
    /// The counter read at `at_ns`, with its rate since `previous`.
    pub fn next(previous: Option<&Cpu>, at_ns: i64, usage_core_nano_seconds: u64) -> Cpu {
        let usage_nano_cores = previous.and_then(|p| {
            let elapsed = u64::try_from(at_ns - p.at_ns).ok().filter(|&e| e > 0)?;
            let used = usage_core_nano_seconds.checked_sub(p.usage_core_nano_seconds)?;
            Some((used as u128 * 1_000_000_000 / elapsed as u128) as u64)
        });
        Cpu {
            at_ns,
            usage_core_nano_seconds,
            usage_nano_cores,
        }
    }

    fn to_json(self) -> Value {
        let mut value = json!({
            "time": timestamp(self.at_ns),
            "usageCoreNanoSeconds": self.usage_core_nano_seconds,
        });
        if let Some(rate) = self.usage_nano_cores {
            value["usageNanoCores"] = json!(rate);
        }
        value
    }
}

/// Memory of the node or of a container, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Memory {
    pub at_ns: i64,
    pub working_set_bytes: u64,
    pub usage_bytes: u64,
    pub available_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

impl Memory {
    fn to_json(self) -> Value {
        let mut value = json!({
            "time": timestamp(self.at_ns),
            "workingSetBytes": self.working_set_bytes,
            "usageBytes": self.usage_bytes,
        });
        if let Some(available) = self.available_bytes {
            value["availableBytes"] = json!(available);
        }
        if let Some(rss) = self.rss_bytes {
            value["rssBytes"] = json!(rss);
        }
        value
    }
}

/// One container's usage, with the pod it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    pub cpu: Cpu,
    pub memory: Memory,
    /// The container's writable layer (bytes and inodes used), if the runtime says.
    pub rootfs: Option<FsStats>,
}

/// The latest sample of everything.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub node: Option<(Cpu, Memory)>,
    /// By container ID.
    pub containers: HashMap<String, ContainerUsage>,
    /// Pods' volumes and logs, and the node's filesystem.
    pub volumes: volume_stats::Usage,
}

/// The shared latest sample: written by [`run`], read by the kubelet API.
#[derive(Clone, Default)]
pub struct Sampler(Arc<RwLock<Snapshot>>);

impl Sampler {
    pub fn snapshot(&self) -> Snapshot {
        self.0.read().expect("stats lock").clone()
    }

    /// Replaces the disk usage part of the sample.
    pub fn set_volumes(&self, volumes: volume_stats::Usage) {
        self.0.write().expect("stats lock").volumes = volumes;
    }
}

/// Samples usage every [`SAMPLE_PERIOD`] until the task is dropped.
pub async fn run(sampler: Sampler, mut cri: Cri) {
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let previous = sampler.snapshot();
        let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let node = node_usage(previous.node.as_ref().map(|(cpu, _)| cpu), now);
        let containers = match cri.list_container_stats().await {
            Ok(stats) => container_usage(&previous.containers, &stats),
            Err(error) => {
                tracing::debug!(%error, "cannot read container stats from the runtime");
                previous.containers.clone()
            }
        };
        let mut latest = sampler.0.write().expect("stats lock");
        latest.node = node;
        latest.containers = containers;
    }
}

fn node_usage(previous: Option<&Cpu>, now: i64) -> Option<(Cpu, Memory)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let cpu = Cpu::next(previous, now, node_cpu_nanoseconds(&stat)?);
    let mut memory = node_memory(&meminfo)?;
    memory.at_ns = now;
    Some((cpu, memory))
}

/// Busy CPU time of the whole machine, in nanoseconds, from `/proc/stat`'s `cpu` line
/// (user, nice, system, irq, softirq and steal; not idle or iowait).
pub fn node_cpu_nanoseconds(proc_stat: &str) -> Option<u64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| ticks.get(i).copied().unwrap_or(0))
        .sum();
    Some(busy * (1_000_000_000 / USER_HZ))
}

/// The machine's memory from `/proc/meminfo`, as upstream counts it for the root
/// cgroup: usage is what is not free, the working set is usage less inactive file pages.
pub fn node_memory(meminfo: &str) -> Option<Memory> {
    let field = |name: &str| crate::node::meminfo_value_ki(meminfo, name).map(|kib| kib * 1024);
    let total = field("MemTotal")?;
    let usage = total.saturating_sub(field("MemFree")?);
    let inactive_file = field("Inactive(file)").unwrap_or(0);
    Some(Memory {
        at_ns: 0,
        working_set_bytes: usage.saturating_sub(inactive_file),
        usage_bytes: usage,
        available_bytes: field("MemAvailable"),
        rss_bytes: None,
    })
}

/// Each running container's usage from the runtime's stats, with CPU rates against
/// the previous sample of the same container.
pub fn container_usage(
    previous: &HashMap<String, ContainerUsage>,
    stats: &[api::ContainerStats],
) -> HashMap<String, ContainerUsage> {
    let mut usage = HashMap::new();
    for stat in stats {
        let (Some(attributes), Some(cpu)) = (&stat.attributes, &stat.cpu) else {
            continue;
        };
        let Some(cumulative) = cpu.usage_core_nano_seconds.as_ref().map(|v| v.value) else {
            continue;
        };
        let label = |key: &str| attributes.labels.get(key).cloned().unwrap_or_default();
        let memory = stat.memory.as_ref();
        let bytes = |value: Option<&api::UInt64Value>| value.map(|v| v.value);
        let before = previous.get(&attributes.id).map(|c| &c.cpu);
        let rootfs = stat.writable_layer.as_ref().map(|layer| FsStats {
            at_ns: layer.timestamp,
            used_bytes: bytes(layer.used_bytes.as_ref()),
            inodes_used: bytes(layer.inodes_used.as_ref()),
            ..Default::default()
        });
        usage.insert(
            attributes.id.clone(),
            ContainerUsage {
                namespace: label("io.kubernetes.pod.namespace"),
                pod: label("io.kubernetes.pod.name"),
                pod_uid: label("io.kubernetes.pod.uid"),
                container: label("io.kubernetes.container.name"),
                cpu: Cpu::next(before, cpu.timestamp, cumulative),
                memory: Memory {
                    at_ns: memory.map(|m| m.timestamp).unwrap_or(cpu.timestamp),
                    working_set_bytes: bytes(memory.and_then(|m| m.working_set_bytes.as_ref()))
                        .unwrap_or(0),
                    usage_bytes: bytes(memory.and_then(|m| m.usage_bytes.as_ref())).unwrap_or(0),
                    available_bytes: bytes(memory.and_then(|m| m.available_bytes.as_ref())),
                    rss_bytes: bytes(memory.and_then(|m| m.rss_bytes.as_ref())),
                },
                rootfs,
            },
        );
    }
    usage
}

/// Containers grouped by pod (namespace, name, uid), in a stable order.
fn by_pod(snapshot: &Snapshot) -> BTreeMap<(&str, &str, &str), Vec<&ContainerUsage>> {
    let mut pods: BTreeMap<(&str, &str, &str), Vec<&ContainerUsage>> = BTreeMap::new();
    for container in snapshot.containers.values() {
        pods.entry((&container.namespace, &container.pod, &container.pod_uid))
            .or_default()
            .push(container);
    }
    for containers in pods.values_mut() {
        containers.sort_by(|a, b| a.container.cmp(&b.container));
    }
    pods
}

/// The stats/v1alpha1 Summary of a snapshot: every pod with containers or measured
/// volumes.
pub fn summary(node_name: &str, snapshot: &Snapshot) -> Value {
    let mut node = json!({"nodeName": node_name, "systemContainers": []});
    if let Some((cpu, memory)) = snapshot.node {
        node["cpu"] = cpu.to_json();
        node["memory"] = memory.to_json();
    }
    let node_fs = snapshot.volumes.node_fs;
    if let Some(fs) = node_fs {
        node["fs"] = fs.to_json();
    }
    let mut pods = by_pod(snapshot);
    for pod in snapshot.volumes.pods.values() {
        pods.entry((&pod.namespace, &pod.name, &pod.uid))
            .or_default();
    }
    let pods: Vec<Value> = pods
        .into_iter()
        .map(|((namespace, name, uid), containers)| {
            let volumes = snapshot.volumes.pods.get(uid);
            // Usage of a part of the node's filesystem, on that filesystem's numbers.
            let on_node_fs = |used: FsStats| FsStats {
                at_ns: if used.at_ns > 0 {
                    used.at_ns
                } else {
                    node_fs.map_or(0, |fs| fs.at_ns)
                },
                used_bytes: used.used_bytes,
                inodes_used: used.inodes_used,
                ..node_fs.unwrap_or_default()
            };
            let mut pod = json!({
                "podRef": {"name": name, "namespace": namespace, "uid": uid},
                "containers": containers.iter().map(|c| {
                    let mut container = json!({
                        "name": c.container,
                        "cpu": c.cpu.to_json(),
                        "memory": c.memory.to_json(),
                    });
                    if let Some(rootfs) = c.rootfs {
                        container["rootfs"] = on_node_fs(rootfs).to_json();
                    }
                    if let Some(logs) = volumes.and_then(|v| v.container_logs.get(&c.container)) {
                        container["logs"] = on_node_fs(*logs).to_json();
                    }
                    container
                }).collect::<Vec<_>>(),
                "ephemeral-storage": on_node_fs(ephemeral_storage(&containers, volumes)).to_json(),
            });
            if !containers.is_empty() {
                let pod_memory: u64 = containers.iter().map(|c| c.memory.working_set_bytes).sum();
                let pod_usage: u64 = containers.iter().map(|c| c.memory.usage_bytes).sum();
                let at_ns = containers.iter().map(|c| c.cpu.at_ns).max().unwrap_or(0);
                pod["cpu"] = sum_cpu(&containers).to_json();
                pod["memory"] = json!({"time": timestamp(at_ns), "workingSetBytes": pod_memory, "usageBytes": pod_usage});
            }
            if let Some(volumes) = volumes.filter(|v| !v.volumes.is_empty()) {
                pod["volume"] = volumes
                    .volumes
                    .iter()
                    .map(|v| volume_json(namespace, v))
                    .collect();
            }
            pod
        })
        .collect();
    json!({"node": node, "pods": pods})
}

/// One `VolumeStats`: its name, its claim (`pvcRef`) if it has one, and its usage.
fn volume_json(namespace: &str, volume: &volume_stats::VolumeUsage) -> Value {
    let mut value = volume.fs.to_json();
    value["name"] = json!(volume.name);
    if let Some(claim) = &volume.claim {
        value["pvcRef"] = json!({"name": claim, "namespace": namespace});
    }
    value
}

/// What a pod takes of the node's disk, as upstream counts it: its containers'
/// writable layers, its logs and its ephemeral volumes.
fn ephemeral_storage(
    containers: &[&ContainerUsage],
    volumes: Option<&volume_stats::PodUsage>,
) -> FsStats {
    let mut parts: Vec<FsStats> = containers.iter().filter_map(|c| c.rootfs).collect();
    if let Some(pod) = volumes {
        parts.extend(pod.logs);
        parts.extend(pod.volumes.iter().filter(|v| v.ephemeral).map(|v| v.fs));
    }
    FsStats {
        at_ns: parts.iter().map(|p| p.at_ns).max().unwrap_or(0),
        used_bytes: Some(parts.iter().filter_map(|p| p.used_bytes).sum()),
        inodes_used: Some(parts.iter().filter_map(|p| p.inodes_used).sum()),
        ..Default::default()
    }
}

/// A pod's local ephemeral storage as the eviction manager checks it against its
/// limits, from the same numbers as the Summary; None when nothing of the pod was
/// measured yet.
pub fn storage_usage(snapshot: &Snapshot, uid: &str) -> Option<eviction::StorageUsage> {
    let containers: Vec<&ContainerUsage> = snapshot
        .containers
        .values()
        .filter(|c| c.pod_uid == uid)
        .collect();
    let volumes = snapshot.volumes.pods.get(uid);
    if containers.is_empty() && volumes.is_none() {
        return None;
    }
    let used = |fs: Option<&FsStats>| fs.and_then(|f| f.used_bytes).unwrap_or(0);
    let mut usage = eviction::StorageUsage {
        total: used(Some(&ephemeral_storage(&containers, volumes))),
        ..Default::default()
    };
    for container in &containers {
        let logs = volumes.and_then(|v| v.container_logs.get(&container.container));
        let bytes = used(container.rootfs.as_ref()) + used(logs);
        // A restarted container's earlier instance may still be listed: the larger.
        let entry = usage
            .containers
            .entry(container.container.clone())
            .or_default();
        *entry = (*entry).max(bytes);
    }
    for volume in volumes.iter().flat_map(|v| &v.volumes) {
        usage
            .volumes
            .insert(volume.name.clone(), used(Some(&volume.fs)));
    }
    Some(usage)
}

/// A pod's CPU: the sum of its containers' (a rate only when every container has one).
fn sum_cpu(containers: &[&ContainerUsage]) -> Cpu {
    let rates: Option<Vec<u64>> = containers.iter().map(|c| c.cpu.usage_nano_cores).collect();
    Cpu {
        at_ns: containers.iter().map(|c| c.cpu.at_ns).max().unwrap_or(0),
        usage_core_nano_seconds: containers
            .iter()
            .map(|c| c.cpu.usage_core_nano_seconds)
            .sum(),
        usage_nano_cores: rates.map(|r| r.iter().sum()),
    }
}

/// `/metrics/resource`: the snapshot in Prometheus text format, with upstream's names.
pub fn resource_metrics(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let mut add = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64, i64)>| {
        let samples = samples
            .into_iter()
            .map(|(labels, value, at_ns)| (labels, value, Some(at_ns)))
            .collect();
        family(&mut out, name, kind, help, samples);
    };
    let node: Vec<_> = snapshot.node.iter().collect();
    add(
        "node_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the node in core-seconds",
        node.iter()
            .map(|(cpu, _)| {
                (
                    String::new(),
                    seconds(cpu.usage_core_nano_seconds),
                    cpu.at_ns,
                )
            })
            .collect(),
    );
    add(
        "node_memory_working_set_bytes",
        "gauge",
        "Current working set of the node in bytes",
        node.iter()
            .map(|(_, m)| (String::new(), m.working_set_bytes as f64, m.at_ns))
            .collect(),
    );
    let pods = by_pod(snapshot);
    let mut containers: Vec<&ContainerUsage> = pods.values().flatten().copied().collect();
    containers.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container).cmp(&(&b.namespace, &b.pod, &b.container))
    });
    let container_labels = |c: &ContainerUsage| {
        format!(
            "{{container=\"{}\",namespace=\"{}\",pod=\"{}\"}}",
            c.container, c.namespace, c.pod
        )
    };
    add(
        "container_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the container in core-seconds",
        containers
            .iter()
            .map(|c| {
                (
                    container_labels(c),
                    seconds(c.cpu.usage_core_nano_seconds),
                    c.cpu.at_ns,
                )
            })
            .collect(),
    );
    add(
        "container_memory_working_set_bytes",
        "gauge",
        "Current working set of the container in bytes",
        containers
            .iter()
            .map(|c| {
                (
                    container_labels(c),
                    c.memory.working_set_bytes as f64,
                    c.memory.at_ns,
                )
            })
            .collect(),
    );
    let pod_labels = |(namespace, pod, _): &(&str, &str, &str)| {
        format!("{{namespace=\"{namespace}\",pod=\"{pod}\"}}")
    };
    add(
        "pod_cpu_usage_seconds_total",
        "counter",
        "Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter()
            .map(|(key, cs)| {
                let cpu = sum_cpu(cs);
                (
                    pod_labels(key),
                    seconds(cpu.usage_core_nano_seconds),
                    cpu.at_ns,
                )
            })
            .collect(),
    );
    add(
        "pod_memory_working_set_bytes",
        "gauge",
        "Current working set of the pod in bytes",
        pods.iter()
            .map(|(key, cs)| {
                let bytes: u64 = cs.iter().map(|c| c.memory.working_set_bytes).sum();
                let at_ns = cs.iter().map(|c| c.memory.at_ns).max().unwrap_or(0);
                (pod_labels(key), bytes as f64, at_ns)
            })
            .collect(),
    );
    out.push_str("# HELP scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE scrape_error gauge\n");
    out.push_str(&format!(
        "scrape_error {}\n",
        u8::from(snapshot.node.is_none())
    ));
    out
}

/// One metric family in Prometheus text format: HELP, TYPE and the samples (labels
/// as `{k="v",...}` or empty, value, optional time in nanoseconds).
pub(crate) fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: Vec<(String, f64, Option<i64>)>,
) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, value, at_ns) in samples {
        match at_ns {
            Some(at_ns) => out.push_str(&format!("{name}{labels} {value} {}\n", at_ns / 1_000_000)),
            None => out.push_str(&format!("{name}{labels} {value}\n")),
        }
    }
}

fn seconds(nanoseconds: u64) -> f64 {
    nanoseconds as f64 / 1e9
}

pub(crate) fn timestamp(at_ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(at_ns).to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_rate_is_the_counter_difference_over_time() {
        let first = Cpu::next(None, 1_000_000_000, 500_000_000);
        assert_eq!(first.usage_nano_cores, None);
        // 0.25 s of CPU over 0.5 s: half a core.
        let second = Cpu::next(Some(&first), 1_500_000_000, 750_000_000);
        assert_eq!(second.usage_nano_cores, Some(500_000_000));
        // A counter that went back (a restarted container) or no time passing: no rate.
        assert_eq!(
            Cpu::next(Some(&second), 2_000_000_000, 1).usage_nano_cores,
            None
        );
        assert_eq!(
            Cpu::next(Some(&second), 1_500_000_000, 800_000_000).usage_nano_cores,
            None
        );
    }

    #[test]
    fn node_usage_from_proc() {
        let stat = "cpu  100 5 50 9000 20 3 2 1 0 0\ncpu0 50 2 25 4500 10 1 1 0 0 0\n";
        // user+nice+system+irq+softirq+steal = 161 ticks = 1.61 s.
        assert_eq!(node_cpu_nanoseconds(stat), Some(1_610_000_000));
        assert_eq!(node_cpu_nanoseconds("intr 1 2 3\n"), None);
        let meminfo = "MemTotal:       1000 kB\nMemFree:         200 kB\nMemAvailable:    600 kB\nInactive(file):  100 kB\n";
        let memory = node_memory(meminfo).unwrap();
        assert_eq!(memory.usage_bytes, 800 * 1024);
        assert_eq!(memory.working_set_bytes, 700 * 1024);
        assert_eq!(memory.available_bytes, Some(600 * 1024));
        assert!(node_memory("garbage").is_none());
    }

    fn stats(
        id: &str,
        pod: &str,
        container: &str,
        at: i64,
        cpu: u64,
        memory: u64,
    ) -> api::ContainerStats {
        let labels = [
            ("io.kubernetes.pod.namespace", "ns"),
            ("io.kubernetes.pod.name", pod),
            ("io.kubernetes.pod.uid", "uid-1"),
            ("io.kubernetes.container.name", container),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        api::ContainerStats {
            attributes: Some(api::ContainerAttributes {
                id: id.into(),
                labels,
                ..Default::default()
            }),
            cpu: Some(api::CpuUsage {
                timestamp: at,
                usage_core_nano_seconds: Some(api::UInt64Value { value: cpu }),
                usage_nano_cores: None,
            }),
            memory: Some(api::MemoryUsage {
                timestamp: at,
                working_set_bytes: Some(api::UInt64Value { value: memory }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn summary_and_metrics_group_containers_by_pod() {
        let first = container_usage(
            &HashMap::new(),
            &[
                stats("a", "web", "app", 0, 0, 10),
                stats("b", "web", "side", 0, 0, 5),
            ],
        );
        let second = container_usage(
            &first,
            &[
                stats("a", "web", "app", 1_000_000_000, 200_000_000, 1000),
                stats("b", "web", "side", 1_000_000_000, 100_000_000, 24),
            ],
        );
        let snapshot = Snapshot {
            node: Some((
                Cpu {
                    at_ns: 1_000_000_000,
                    usage_core_nano_seconds: 3_000_000_000,
                    usage_nano_cores: Some(7),
                },
                Memory {
                    at_ns: 1_000_000_000,
                    working_set_bytes: 4096,
                    usage_bytes: 8192,
                    ..Default::default()
                },
            )),
            containers: second,
            ..Default::default()
        };
        let summary = summary("n1", &snapshot);
        assert_eq!(summary["node"]["nodeName"], "n1");
        assert_eq!(summary["node"]["cpu"]["usageNanoCores"], 7);
        assert_eq!(summary["node"]["memory"]["workingSetBytes"], 4096);
        let pod = &summary["pods"][0];
        assert_eq!(
            pod["podRef"],
            json!({"name": "web", "namespace": "ns", "uid": "uid-1"})
        );
        assert_eq!(pod["containers"][0]["name"], "app");
        assert_eq!(pod["containers"][0]["cpu"]["usageNanoCores"], 200_000_000);
        assert_eq!(pod["cpu"]["usageNanoCores"], 300_000_000);
        assert_eq!(pod["memory"]["workingSetBytes"], 1024);
        let text = resource_metrics(&snapshot);
        assert!(
            text.contains("node_cpu_usage_seconds_total 3 1000\n"),
            "{text}"
        );
        assert!(text.contains("container_memory_working_set_bytes{container=\"side\",namespace=\"ns\",pod=\"web\"} 24 1000\n"), "{text}");
        assert!(
            text.contains("pod_cpu_usage_seconds_total{namespace=\"ns\",pod=\"web\"} 0.3 1000\n"),
            "{text}"
        );
        assert!(text.ends_with("scrape_error 0\n"));
    }

    #[test]
    fn summary_has_volumes_with_claims_and_ephemeral_storage() {
        use crate::volume_stats::{PodUsage, Usage, VolumeUsage};
        let used = |bytes: u64, inodes: u64| FsStats {
            at_ns: 2_000_000_000,
            capacity_bytes: Some(1000),
            available_bytes: Some(400),
            used_bytes: Some(bytes),
            inodes: Some(50),
            inodes_free: Some(20),
            inodes_used: Some(inodes),
        };
        let mut containers =
            container_usage(&HashMap::new(), &[stats("a", "web", "app", 0, 0, 10)]);
        containers.get_mut("a").unwrap().rootfs = Some(FsStats {
            at_ns: 1,
            used_bytes: Some(5),
            inodes_used: Some(1),
            ..Default::default()
        });
        let volume = |name: &str, claim: Option<&str>, fs| VolumeUsage {
            name: name.into(),
            claim: claim.map(str::to_string),
            ephemeral: claim.is_none(),
            fs,
        };
        let snapshot = Snapshot {
            node: None,
            containers,
            volumes: Usage {
                node_fs: Some(used(600, 30)),
                pods: HashMap::from([
                    (
                        "uid-1".into(),
                        PodUsage {
                            namespace: "ns".into(),
                            name: "web".into(),
                            uid: "uid-1".into(),
                            volumes: vec![
                                volume("scratch", None, used(100, 3)),
                                volume("data", Some("db"), used(300, 7)),
                            ],
                            logs: Some(FsStats {
                                used_bytes: Some(20),
                                inodes_used: Some(2),
                                ..Default::default()
                            }),
                            container_logs: HashMap::from([(
                                "app".to_string(),
                                FsStats {
                                    used_bytes: Some(16),
                                    inodes_used: Some(1),
                                    ..Default::default()
                                },
                            )]),
                        },
                    ),
                    // A pod with volumes but no running container is listed too.
                    (
                        "uid-2".into(),
                        PodUsage {
                            namespace: "ns".into(),
                            name: "idle".into(),
                            uid: "uid-2".into(),
                            ..Default::default()
                        },
                    ),
                ]),
            },
        };
        let summary = summary("n1", &snapshot);
        assert_eq!(summary["node"]["fs"]["capacityBytes"], 1000);
        let pods = summary["pods"].as_array().unwrap();
        assert_eq!(pods.len(), 2, "{summary}");
        let web = pods.iter().find(|p| p["podRef"]["name"] == "web").unwrap();
        assert_eq!(
            web["volume"],
            json!([
                {"name": "scratch", "time": "1970-01-01T00:00:02Z", "capacityBytes": 1000,
                 "availableBytes": 400, "usedBytes": 100, "inodes": 50, "inodesFree": 20, "inodesUsed": 3},
                {"name": "data", "time": "1970-01-01T00:00:02Z", "capacityBytes": 1000,
                 "availableBytes": 400, "usedBytes": 300, "inodes": 50, "inodesFree": 20, "inodesUsed": 7,
                 "pvcRef": {"name": "db", "namespace": "ns"}},
            ])
        );
        // Writable layer 5 + logs 20 + the ephemeral volume 100, on the node's numbers;
        // the claim is not the pod's ephemeral storage.
        let ephemeral = &web["ephemeral-storage"];
        assert_eq!(ephemeral["usedBytes"], 125, "{ephemeral}");
        assert_eq!(ephemeral["inodesUsed"], 6);
        assert_eq!(ephemeral["capacityBytes"], 1000);
        assert_eq!(ephemeral["availableBytes"], 400);
        assert_eq!(web["containers"][0]["rootfs"]["usedBytes"], 5);
        assert_eq!(web["containers"][0]["logs"]["usedBytes"], 16);
        // The eviction manager's view: the same numbers, by container and volume.
        let storage = storage_usage(&snapshot, "uid-1").unwrap();
        assert_eq!(storage.total, 125);
        assert_eq!(storage.containers, HashMap::from([("app".to_string(), 21)]));
        assert_eq!(storage.volumes["scratch"], 100);
        assert_eq!(storage.volumes["data"], 300);
        assert!(
            storage_usage(&snapshot, "uid-2")
                .unwrap()
                .containers
                .is_empty()
        );
        assert!(storage_usage(&snapshot, "uid-3").is_none());
        let idle = pods.iter().find(|p| p["podRef"]["name"] == "idle").unwrap();
        assert!(
            idle.get("cpu").is_none() && idle.get("volume").is_none(),
            "{idle}"
        );
        assert_eq!(idle["containers"], json!([]));
        assert_eq!(idle["ephemeral-storage"]["usedBytes"], 0);
    }
}
