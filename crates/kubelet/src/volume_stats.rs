//! Disk usage of pod volumes: the Summary API's per-pod `volume` list and
//! `ephemeral-storage`, and the `kubelet_volume_stats_*` metrics of claims.
//!
//! [`crate::volumes::sync`] writes down next to each pod
//! (`<data dir>/pods/<uid>/volumes.json`, a [`PodVolumes`]) which host directory backs
//! each of its volumes and which claim, if any. [`run`] measures them in the
//! background: bytes and inodes by walking the directory as `du -x` does (allocated
//! blocks, hard-linked files once, symlinks not followed, other mounts not entered),
//! size and free space by statvfs of its filesystem. A CSI volume is asked of its
//! driver (`NodeGetVolumeStats`) when the driver has GET_VOLUME_STATS, and is
//! measured by statvfs of its mount alone otherwise. hostPath volumes are not
//! measured, as upstream. A pod's logs are measured per container (each container's
//! directory of log files), for the Summary and the eviction manager's container
//! limits.
//!
//! A measurement is kept for [`REFRESH`], as upstream's volume stat calculator keeps
//! its own: reading `/stats/summary` never touches a disk, and a big volume is walked
//! only that often.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::csi::Drivers;
use crate::csi::mount::Published;
use crate::stats::Sampler;

/// How long a volume's measurement is used before it is taken again.
pub const REFRESH: Duration = Duration::from_secs(20);
/// How often the records are looked at for new and gone volumes.
const PASS_PERIOD: Duration = Duration::from_secs(5);
/// How long a driver may take to answer NodeGetVolumeStats.
const CSI_TIMEOUT: Duration = Duration::from_secs(10);

/// Usage of a filesystem or of a directory on one, as stats/v1alpha1 `FsStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FsStats {
    /// When it was measured, in nanoseconds since the epoch.
    pub at_ns: i64,
    pub capacity_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    pub inodes: Option<u64>,
    pub inodes_free: Option<u64>,
    pub inodes_used: Option<u64>,
}

impl FsStats {
    /// The filesystem `path` is on: size, free space and inodes, with what is not free
    /// as used (statvfs).
    pub fn statvfs(path: &Path) -> Option<FsStats> {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        Some(FsStats {
            at_ns: now_ns(),
            capacity_bytes: Some(stat.f_blocks * stat.f_frsize),
            available_bytes: Some(stat.f_bavail * stat.f_frsize),
            used_bytes: Some(stat.f_blocks.saturating_sub(stat.f_bfree) * stat.f_frsize),
            inodes: Some(stat.f_files),
            inodes_free: Some(stat.f_ffree),
            inodes_used: Some(stat.f_files.saturating_sub(stat.f_ffree)),
        })
    }

    /// A directory: its own bytes and inodes, on the numbers of its filesystem.
    pub fn of_dir(path: &Path) -> Option<FsStats> {
        let usage = disk_usage(path).ok()?;
        let fs = FsStats::statvfs(path).unwrap_or_default();
        Some(FsStats {
            at_ns: now_ns(),
            used_bytes: Some(usage.bytes),
            inodes_used: Some(usage.inodes),
            ..fs
        })
    }

    /// The stats/v1alpha1 JSON fields (to be merged into a `VolumeStats` or used as
    /// an `FsStats`); unknown numbers are left out.
    pub fn to_json(self) -> Value {
        let mut value = json!({"time": crate::stats::timestamp(self.at_ns)});
        for (key, number) in [
            ("availableBytes", self.available_bytes),
            ("capacityBytes", self.capacity_bytes),
            ("usedBytes", self.used_bytes),
            ("inodesFree", self.inodes_free),
            ("inodes", self.inodes),
            ("inodesUsed", self.inodes_used),
        ] {
            if let Some(number) = number {
                value[key] = json!(number);
            }
        }
        value
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// What a directory tree takes on its disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Allocated bytes (512-byte blocks), not file lengths: a sparse file counts what
    /// it really holds.
    pub bytes: u64,
    pub inodes: u64,
}

/// Walks `root` as `du -x` does: every entry's allocated blocks and one inode each,
/// a file with several hard links once, symlinks as themselves (never followed), and
/// nothing under a mount point of another filesystem. Entries that vanish or cannot
/// be read while walking are skipped; only an unreadable `root` is an error.
pub fn disk_usage(root: &Path) -> std::io::Result<DiskUsage> {
    let top = std::fs::metadata(root)?;
    let mut usage = DiskUsage {
        bytes: top.blocks() * 512,
        inodes: 1,
    };
    let mut linked = HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // DirEntry::metadata does not follow symlinks.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.dev() != top.dev() {
                continue;
            }
            if !meta.is_dir() && meta.nlink() > 1 && !linked.insert(meta.ino()) {
                continue;
            }
            usage.bytes += meta.blocks() * 512;
            usage.inodes += 1;
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// The volumes of one pod on this node, as [`crate::volumes::sync`] set them up.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodVolumes {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub volumes: Vec<VolumeRecord>,
}

/// One measured volume of a pod.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeRecord {
    pub name: String,
    /// The host directory with the volume's data.
    pub path: PathBuf,
    /// The claim behind it (a persistentVolumeClaim or an ephemeral volume's claim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    /// Whether it counts into the pod's ephemeral storage: it lives on the node's
    /// disk and goes with the pod (emptyDir not in memory, and on this node also
    /// configMap, secret, downwardAPI and projected volumes, which are written to
    /// disk, not to a tmpfs).
    pub ephemeral: bool,
}

/// Where a pod's volume record is.
pub fn record_path(pods_dir: &Path, uid: &str) -> PathBuf {
    pods_dir.join(uid).join("volumes.json")
}

/// Writes a pod's volume record, unless it already says the same.
pub fn write_record(pods_dir: &Path, record: &PodVolumes) -> Result<()> {
    let path = record_path(pods_dir, &record.uid);
    let text = serde_json::to_vec_pretty(record)?;
    if std::fs::read(&path).is_ok_and(|on_disk| on_disk == text) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn read_records(pods_dir: &Path) -> Vec<PodVolumes> {
    let Ok(pods) = std::fs::read_dir(pods_dir) else {
        return Vec::new();
    };
    pods.flatten()
        .filter_map(|pod| {
            let uid = pod.file_name().to_string_lossy().into_owned();
            let text = std::fs::read(record_path(pods_dir, &uid)).ok()?;
            serde_json::from_slice(&text).ok()
        })
        .collect()
}

/// One volume's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeUsage {
    pub name: String,
    pub claim: Option<String>,
    pub ephemeral: bool,
    pub fs: FsStats,
}

/// A pod's volumes and logs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub volumes: Vec<VolumeUsage>,
    /// The pod's container logs.
    pub logs: Option<FsStats>,
    /// Each container's logs (its directory under the pod's), by container name.
    pub container_logs: HashMap<String, FsStats>,
}

/// Everything [`run`] measured last.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// The node's filesystem (the agent's data dir): pods' ephemeral storage is
    /// taken from it.
    pub node_fs: Option<FsStats>,
    /// By pod UID.
    pub pods: HashMap<String, PodUsage>,
}

/// How a volume is measured.
enum Method {
    Walk,
    Csi(Published),
}

/// Measures the volumes of the pods on this node, keeping each measurement for
/// [`REFRESH`].
pub struct Calculator {
    data_dir: PathBuf,
    drivers: Drivers,
    /// By measured path: when, and what (None: it could not be measured).
    cache: HashMap<PathBuf, (Instant, Option<FsStats>)>,
}

impl Calculator {
    pub fn new(data_dir: PathBuf, drivers: Drivers) -> Calculator {
        Calculator {
            data_dir,
            drivers,
            cache: HashMap::new(),
        }
    }

    /// Every pod's volume usage, measuring again what is older than [`REFRESH`].
    pub async fn pass(&mut self) -> Usage {
        let pods_dir = self.data_dir.join("pods");
        let mut measured = HashSet::new();
        let mut pods = HashMap::new();
        for record in read_records(&pods_dir) {
            let mut usage = PodUsage {
                namespace: record.namespace.clone(),
                name: record.name.clone(),
                uid: record.uid.clone(),
                ..Default::default()
            };
            for volume in &record.volumes {
                let method =
                    match crate::csi::mount::published(&pods_dir, &record.uid, &volume.name) {
                        Some(published) => Method::Csi(published),
                        None => Method::Walk,
                    };
                measured.insert(volume.path.clone());
                if let Some(fs) = self.measure(&volume.path, method).await {
                    usage.volumes.push(VolumeUsage {
                        name: volume.name.clone(),
                        claim: volume.claim.clone(),
                        ephemeral: volume.ephemeral,
                        fs,
                    });
                }
            }
            let logs = self.data_dir.join("logs").join(format!(
                "{}_{}_{}",
                record.namespace, record.name, record.uid
            ));
            (usage.logs, usage.container_logs) = self.measure_logs(&logs, &mut measured).await;
            pods.insert(record.uid.clone(), usage);
        }
        self.cache.retain(|path, _| measured.contains(path));
        Usage {
            node_fs: FsStats::statvfs(&self.data_dir),
            pods,
        }
    }

    /// A pod's log directory: each container's directory in it measured on its own
    /// (the container's part of its ephemeral storage), the pod's logs their sum
    /// with the directory itself.
    async fn measure_logs(
        &mut self,
        pod_logs: &Path,
        measured: &mut HashSet<PathBuf>,
    ) -> (Option<FsStats>, HashMap<String, FsStats>) {
        let Ok(top) = std::fs::metadata(pod_logs) else {
            return (None, HashMap::new());
        };
        let mut containers = HashMap::new();
        let subdirs = std::fs::read_dir(pod_logs)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        for entry in subdirs {
            let path = entry.path();
            measured.insert(path.clone());
            if let Some(fs) = self.measure(&path, Method::Walk).await {
                containers.insert(entry.file_name().to_string_lossy().into_owned(), fs);
            }
        }
        let fs = FsStats::statvfs(pod_logs).unwrap_or_default();
        let total = FsStats {
            at_ns: containers
                .values()
                .map(|c| c.at_ns)
                .max()
                .unwrap_or(fs.at_ns),
            used_bytes: Some(
                top.blocks() * 512
                    + containers
                        .values()
                        .filter_map(|c| c.used_bytes)
                        .sum::<u64>(),
            ),
            inodes_used: Some(
                1 + containers
                    .values()
                    .filter_map(|c| c.inodes_used)
                    .sum::<u64>(),
            ),
            ..fs
        };
        (Some(total), containers)
    }

    async fn measure(&mut self, path: &Path, method: Method) -> Option<FsStats> {
        if let Some((at, stats)) = self.cache.get(path)
            && at.elapsed() < REFRESH
        {
            return *stats;
        }
        let stats = match method {
            Method::Walk => {
                let path = path.to_path_buf();
                tokio::task::spawn_blocking(move || FsStats::of_dir(&path))
                    .await
                    .ok()
                    .flatten()
            }
            Method::Csi(published) => self.csi_stats(&published).await,
        };
        self.cache
            .insert(path.to_path_buf(), (Instant::now(), stats));
        stats
    }

    /// A CSI volume: the driver's answer when it has GET_VOLUME_STATS, else its
    /// mount's filesystem.
    async fn csi_stats(&self, published: &Published) -> Option<FsStats> {
        let target = &published.target_path;
        let Some(driver) = self
            .drivers
            .get(&published.driver)
            .filter(|d| d.volume_stats)
        else {
            return FsStats::statvfs(target);
        };
        let request = krust_csi::v1::NodeGetVolumeStatsRequest {
            volume_id: published.volume_handle.clone(),
            volume_path: target.display().to_string(),
            staging_target_path: published
                .staging_path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        };
        let answer = tokio::time::timeout(CSI_TIMEOUT, async {
            let mut node = driver.node().await?;
            node.node_get_volume_stats(request)
                .await
                .map_err(|s| crate::csi::call_error(&driver.name, "NodeGetVolumeStats", s))
        })
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "CSI driver {} did not answer NodeGetVolumeStats within {CSI_TIMEOUT:?}",
                driver.name
            ))
        });
        match answer {
            Ok(answer) => Some(from_csi(&answer.into_inner().usage)),
            Err(error) => {
                tracing::debug!(volume = %target.display(), "no volume stats: {error:#}");
                None
            }
        }
    }
}

/// A driver's NodeGetVolumeStats usage list as FsStats.
pub fn from_csi(usage: &[krust_csi::v1::VolumeUsage]) -> FsStats {
    use krust_csi::v1::volume_usage::Unit;
    let mut stats = FsStats {
        at_ns: now_ns(),
        ..Default::default()
    };
    let count = |n: i64| u64::try_from(n).ok();
    for entry in usage {
        if entry.unit == Unit::Bytes as i32 {
            stats.capacity_bytes = count(entry.total);
            stats.available_bytes = count(entry.available);
            stats.used_bytes = count(entry.used);
        } else if entry.unit == Unit::Inodes as i32 {
            stats.inodes = count(entry.total);
            stats.inodes_free = count(entry.available);
            stats.inodes_used = count(entry.used);
        }
    }
    stats
}

/// Measures pod volumes every few seconds (each at most every [`REFRESH`]) into
/// `sampler`, until the task is dropped.
pub async fn run(sampler: Sampler, mut calculator: Calculator) {
    loop {
        let usage = calculator.pass().await;
        sampler.set_volumes(usage);
        tokio::time::sleep(PASS_PERIOD).await;
    }
}

/// The `/metrics` families upstream's kubelet has for claims' volumes, one sample per
/// claim (a claim several pods use is one volume).
pub fn claim_metrics(usage: &Usage) -> String {
    let mut claims: BTreeMap<(&str, &str), &FsStats> = BTreeMap::new();
    for pod in usage.pods.values() {
        for volume in &pod.volumes {
            if let Some(claim) = &volume.claim {
                claims.insert((&pod.namespace, claim), &volume.fs);
            }
        }
    }
    type Field = fn(&FsStats) -> Option<u64>;
    let families: [(&str, &str, Field); 6] = [
        ("capacity_bytes", "Capacity in bytes of the volume", |f| {
            f.capacity_bytes
        }),
        (
            "available_bytes",
            "Number of available bytes in the volume",
            |f| f.available_bytes,
        ),
        ("used_bytes", "Number of used bytes in the volume", |f| {
            f.used_bytes
        }),
        ("inodes", "Maximum number of inodes in the volume", |f| {
            f.inodes
        }),
        ("inodes_free", "Number of free inodes in the volume", |f| {
            f.inodes_free
        }),
        ("inodes_used", "Number of used inodes in the volume", |f| {
            f.inodes_used
        }),
    ];
    let mut out = String::new();
    for (suffix, help, value) in families {
        let samples = claims
            .iter()
            .filter_map(|((namespace, claim), fs)| {
                let labels =
                    format!("{{namespace=\"{namespace}\",persistentvolumeclaim=\"{claim}\"}}");
                Some((labels, value(fs)? as f64, None))
            })
            .collect();
        crate::stats::family(
            &mut out,
            &format!("kubelet_volume_stats_{suffix}"),
            "gauge",
            help,
            samples,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_blocks_links_once_and_no_symlink_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vol");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let empty = disk_usage(&root).unwrap();
        assert_eq!(empty.inodes, 2, "the root and sub");
        // 1 MiB of real data, a hard link to it, a symlink to a big file outside.
        std::fs::write(root.join("sub/data"), vec![7u8; 1 << 20]).unwrap();
        std::fs::hard_link(root.join("sub/data"), root.join("again")).unwrap();
        std::fs::write(dir.path().join("outside"), vec![1u8; 4 << 20]).unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), root.join("link")).unwrap();
        // A sparse file: long, but holding almost nothing.
        let sparse = std::fs::File::create(root.join("sparse")).unwrap();
        sparse.set_len(64 << 20).unwrap();
        let usage = disk_usage(&root).unwrap();
        assert_eq!(
            usage.inodes,
            2 + 3,
            "data once, the symlink, the sparse file"
        );
        assert!(usage.bytes >= empty.bytes + (1 << 20), "{usage:?}");
        assert!(usage.bytes < empty.bytes + (2 << 20), "{usage:?}");
        assert!(disk_usage(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn fs_stats_json_has_upstreams_names_and_leaves_out_unknowns() {
        let stats = FsStats {
            at_ns: 1_000_000_000,
            capacity_bytes: Some(100),
            available_bytes: Some(60),
            used_bytes: Some(7),
            inodes: Some(10),
            inodes_free: Some(4),
            inodes_used: None,
        };
        assert_eq!(
            stats.to_json(),
            json!({"time": "1970-01-01T00:00:01Z", "capacityBytes": 100, "availableBytes": 60,
                   "usedBytes": 7, "inodes": 10, "inodesFree": 4})
        );
        let dir = tempfile::tempdir().unwrap();
        let measured = FsStats::of_dir(dir.path()).unwrap();
        assert_eq!(measured.inodes_used, Some(1));
        assert!(measured.capacity_bytes.unwrap() > 0);
    }

    #[test]
    fn records_are_rewritten_only_when_they_change_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let pods_dir = dir.path();
        std::fs::create_dir_all(pods_dir.join("u1")).unwrap();
        let mut record = PodVolumes {
            namespace: "ns".into(),
            name: "p".into(),
            uid: "u1".into(),
            volumes: vec![VolumeRecord {
                name: "data".into(),
                path: "/somewhere".into(),
                claim: Some("claim".into()),
                ephemeral: false,
            }],
        };
        write_record(pods_dir, &record).unwrap();
        let written = std::fs::metadata(record_path(pods_dir, "u1"))
            .unwrap()
            .modified()
            .unwrap();
        write_record(pods_dir, &record).unwrap();
        let again = std::fs::metadata(record_path(pods_dir, "u1"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(written, again);
        record.volumes[0].ephemeral = true;
        write_record(pods_dir, &record).unwrap();
        assert_eq!(read_records(pods_dir), vec![record]);
    }

    #[test]
    fn csi_usage_and_claim_metrics() {
        use krust_csi::v1::{VolumeUsage as Csi, volume_usage::Unit};
        let fs = from_csi(&[
            Csi {
                available: 90,
                total: 100,
                used: 10,
                unit: Unit::Bytes as i32,
            },
            Csi {
                available: 5,
                total: 8,
                used: 3,
                unit: Unit::Inodes as i32,
            },
        ]);
        assert_eq!(
            (fs.capacity_bytes, fs.available_bytes, fs.used_bytes),
            (Some(100), Some(90), Some(10))
        );
        assert_eq!(
            (fs.inodes, fs.inodes_free, fs.inodes_used),
            (Some(8), Some(5), Some(3))
        );
        let volume = |name: &str, claim: Option<&str>| VolumeUsage {
            name: name.into(),
            claim: claim.map(str::to_string),
            ephemeral: claim.is_none(),
            fs,
        };
        let pod = |uid: &str, volumes| PodUsage {
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            volumes,
            logs: None,
            container_logs: HashMap::new(),
        };
        let usage = Usage {
            node_fs: None,
            pods: HashMap::from([
                (
                    "a".into(),
                    pod("a", vec![volume("data", Some("db")), volume("tmp", None)]),
                ),
                ("b".into(), pod("b", vec![volume("shared", Some("db"))])),
            ]),
        };
        let text = claim_metrics(&usage);
        assert!(
            text.contains("# TYPE kubelet_volume_stats_used_bytes gauge\n"),
            "{text}"
        );
        // One sample per claim, none for volumes without one.
        assert_eq!(
            text.matches("kubelet_volume_stats_used_bytes{").count(),
            1,
            "{text}"
        );
        assert!(
            text.contains(
                "kubelet_volume_stats_inodes_free{namespace=\"ns\",persistentvolumeclaim=\"db\"} 5\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "kubelet_volume_stats_capacity_bytes{namespace=\"ns\",persistentvolumeclaim=\"db\"} 100\n"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn calculator_measures_recorded_volumes_and_keeps_the_measurement() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path();
        let pods_dir = data_dir.join("pods");
        let scratch = pods_dir.join("u1/volumes/scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(scratch.join("blob"), vec![1u8; 1 << 20]).unwrap();
        let logs = data_dir.join("logs/ns_p_u1");
        std::fs::create_dir_all(logs.join("main")).unwrap();
        std::fs::write(logs.join("main/0.log"), vec![b'x'; 64 << 10]).unwrap();
        write_record(
            &pods_dir,
            &PodVolumes {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u1".into(),
                volumes: vec![VolumeRecord {
                    name: "scratch".into(),
                    path: scratch.clone(),
                    claim: None,
                    ephemeral: true,
                }],
            },
        )
        .unwrap();
        let mut calculator = Calculator::new(data_dir.to_path_buf(), Drivers::default());
        let first = calculator.pass().await;
        let pod = &first.pods["u1"];
        let used = pod.volumes[0].fs.used_bytes.unwrap();
        assert!(used >= 1 << 20, "{pod:?}");
        // The pod's log directory, the container's and its file.
        assert_eq!(pod.logs.unwrap().inodes_used, Some(3));
        let main_logs = pod.container_logs["main"].used_bytes.unwrap();
        assert!(main_logs >= 64 << 10, "{pod:?}");
        assert!(pod.logs.unwrap().used_bytes.unwrap() > main_logs);
        assert!(first.node_fs.unwrap().capacity_bytes.unwrap() > 0);
        // Written since, but within REFRESH the measurement stands.
        std::fs::write(scratch.join("more"), vec![1u8; 1 << 20]).unwrap();
        let second = calculator.pass().await;
        assert_eq!(second.pods["u1"].volumes[0].fs.used_bytes, Some(used));
        // A pod whose record is gone is gone from the usage and the cache.
        std::fs::remove_dir_all(pods_dir.join("u1")).unwrap();
        assert!(calculator.pass().await.pods.is_empty());
        assert!(calculator.cache.is_empty());
    }
}
