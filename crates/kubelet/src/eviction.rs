//! Node-pressure eviction, as upstream's eviction manager: hard thresholds on the
//! node's signals (`--eviction-hard`), the pressure conditions they raise on the Node
//! (MemoryPressure, DiskPressure, PIDPressure, held for
//! `--eviction-pressure-transition-period` after the signal recovers), admission of
//! new pods under pressure, and the choice of the pod to evict. Also, whatever the
//! pressure, local storage limits: a pod whose emptyDir is above its `sizeLimit`, or
//! whose ephemeral storage is above its own or a container's `ephemeral-storage`
//! limit, is evicted at once ([`local_storage_violation`], on the Summary's numbers).
//!
//! Signals: `memory.available` is the node's memory less its working set (usage less
//! inactive file pages, as the stats sampler reads `/proc/meminfo`);
//! `nodefs.available`/`nodefs.inodesFree` are statvfs of the agent's data dir, where
//! pod volumes, logs and (with the agent's own containerd) images live, so
//! `imagefs.*` reads the same filesystem; `pid.available` is the kernel's `pid_max`
//! less the processes running. The pure parts (parsing, comparing, tracking,
//! admitting, ranking) are here; the pod workers carry evictions out.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;

/// Upstream's default hard eviction thresholds.
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<10%,imagefs.available<15%,nodefs.inodesFree<5%";
/// How often the signals are observed (upstream's housekeeping interval).
pub const MONITOR_INTERVAL: Duration = Duration::from_secs(10);
/// Priority from which a pod is system-critical and never evicted
/// (`system-cluster-critical` is 2000000000).
const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// An eviction signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    MemoryAvailable,
    NodefsAvailable,
    NodefsInodesFree,
    ImagefsAvailable,
    ImagefsInodesFree,
    PidAvailable,
}

const SIGNALS: [(&str, Signal); 6] = [
    ("memory.available", Signal::MemoryAvailable),
    ("nodefs.available", Signal::NodefsAvailable),
    ("nodefs.inodesFree", Signal::NodefsInodesFree),
    ("imagefs.available", Signal::ImagefsAvailable),
    ("imagefs.inodesFree", Signal::ImagefsInodesFree),
    ("pid.available", Signal::PidAvailable),
];

impl Signal {
    pub fn name(self) -> &'static str {
        SIGNALS
            .iter()
            .find(|(_, s)| *s == self)
            .map(|(name, _)| *name)
            .expect("every signal is named")
    }

    /// The Node condition the signal raises.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::Memory,
            Signal::PidAvailable => Condition::Pid,
            _ => Condition::Disk,
        }
    }

    /// The resource the node is low on, as upstream's eviction message names it.
    fn resource(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory",
            Signal::PidAvailable => "pids",
            Signal::NodefsInodesFree | Signal::ImagefsInodesFree => "inodes",
            _ => "ephemeral-storage",
        }
    }
}

/// A pressure condition of the Node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    Memory,
    Disk,
    Pid,
}

/// The least a signal may show before pods are evicted.
#[derive(Clone, Debug, PartialEq)]
pub enum Minimum {
    /// An amount in the signal's unit (bytes, inodes or PIDs).
    Amount(u64),
    /// A percentage of the capacity.
    Percent(f64),
}

/// One threshold: `signal < minimum`; a soft one acts only once crossed for its
/// grace period.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub minimum: Minimum,
    /// The minimum as written, for messages.
    pub text: String,
    /// Soft thresholds: how long the signal must stay crossed before pods are evicted.
    pub grace_period: Option<Duration>,
}

impl Threshold {
    /// The threshold in the signal's unit for a capacity.
    pub fn minimum_of(&self, capacity: u64) -> u64 {
        match self.minimum {
            Minimum::Amount(amount) => amount,
            Minimum::Percent(percent) => (capacity as f64 * percent / 100.0) as u64,
        }
    }
}

/// Parses `--eviction-hard`: comma-separated `signal<quantity` or `signal<N%`; empty
/// means no thresholds.
pub fn parse_thresholds(text: &str) -> Result<Vec<Threshold>> {
    let mut thresholds: Vec<Threshold> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((name, value)) = item.split_once('<') else {
            bail!(
                "eviction threshold {item:?}: write signal<quantity, e.g. memory.available<100Mi"
            );
        };
        let Some(signal) = SIGNALS
            .iter()
            .find(|(n, _)| *n == name.trim())
            .map(|(_, s)| *s)
        else {
            let known: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
            bail!(
                "eviction threshold {item:?}: unknown signal {name:?} (known: {})",
                known.join(", ")
            );
        };
        let value = value.trim();
        let minimum = if let Some(percent) = value.strip_suffix('%') {
            match percent.parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Minimum::Percent(p),
                _ => bail!("eviction threshold {item:?}: a percentage is between 0% and 100%"),
            }
        } else {
            match crate::pods::parse_quantity(value) {
                Some(q) if q >= 0.0 => Minimum::Amount(q as u64),
                _ => bail!(
                    "eviction threshold {item:?}: {value:?} is not a quantity (e.g. 100Mi, 1Gi, 5%)"
                ),
            }
        };
        if thresholds.iter().any(|t| t.signal == signal) {
            bail!(
                "eviction threshold {item:?}: {} is given twice",
                signal.name()
            );
        }
        thresholds.push(Threshold {
            signal,
            minimum,
            text: value.to_string(),
            grace_period: None,
        });
    }
    Ok(thresholds)
}

/// Parses `--eviction-soft` with `--eviction-soft-grace-period` (comma-separated
/// `signal=duration`): every soft threshold needs a grace period, as upstream.
pub fn parse_soft_thresholds(thresholds: &str, grace_periods: &str) -> Result<Vec<Threshold>> {
    let mut periods: HashMap<Signal, Duration> = HashMap::new();
    for item in grace_periods
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        let Some((name, value)) = item.split_once('=') else {
            bail!(
                "eviction grace period {item:?}: write signal=duration, e.g. memory.available=1m30s"
            );
        };
        let Some(signal) = SIGNALS
            .iter()
            .find(|(n, _)| *n == name.trim())
            .map(|(_, s)| *s)
        else {
            bail!("eviction grace period {item:?}: unknown signal {name:?}");
        };
        let period = crate::parse_duration(value.trim())
            .map_err(|e| anyhow::anyhow!("eviction grace period {item:?}: {e}"))?;
        periods.insert(signal, period);
    }
    let mut soft = parse_thresholds(thresholds)?;
    for threshold in &mut soft {
        let Some(period) = periods.get(&threshold.signal) else {
            bail!(
                "soft eviction threshold {}<{} has no grace period: add {}=<duration> to --eviction-soft-grace-period",
                threshold.signal.name(),
                threshold.text,
                threshold.signal.name()
            );
        };
        threshold.grace_period = Some(*period);
    }
    Ok(soft)
}

/// When each crossed threshold was first seen crossed (reset once it is not), to
/// hold soft thresholds back for their grace period.
#[derive(Default)]
pub struct GraceTracker {
    first_seen: HashMap<(Signal, bool), Instant>,
}

impl GraceTracker {
    /// Of the thresholds crossed now, those that act: hard ones at once, soft ones
    /// once crossed for their whole grace period.
    pub fn acting<'a>(
        &mut self,
        crossed: &[(&'a Threshold, Observation)],
        now: Instant,
    ) -> Vec<(&'a Threshold, Observation)> {
        let key = |t: &Threshold| (t.signal, t.grace_period.is_some());
        self.first_seen
            .retain(|k, _| crossed.iter().any(|(t, _)| key(t) == *k));
        crossed
            .iter()
            .filter(|(threshold, _)| {
                let since = *self.first_seen.entry(key(threshold)).or_insert(now);
                threshold
                    .grace_period
                    .is_none_or(|grace| now.duration_since(since) >= grace)
            })
            .copied()
            .collect()
    }
}

/// How long the containers of a pod evicted at once (a hard threshold, a local
/// storage limit) get to stop: none, they are killed.
pub const IMMEDIATE_STOP_GRACE: i64 = 0;

/// How long an evicted pod's containers get to stop: none for a hard threshold; for
/// a soft one the pod's own grace period, capped by `--eviction-max-pod-grace-period`
/// when that is positive.
pub fn stop_grace(threshold: &Threshold, pod_grace: i64, max_pod_grace: i64) -> i64 {
    match threshold.grace_period {
        None => IMMEDIATE_STOP_GRACE,
        Some(_) if max_pod_grace > 0 => pod_grace.clamp(0, max_pod_grace),
        Some(_) => pod_grace.max(0),
    }
}

/// A signal's value now: what is available of a capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    pub available: u64,
    pub capacity: u64,
}

/// Reads the node's signals. `memory` is the node's (total, working set) in bytes.
pub fn observe(data_dir: &Path, memory: Option<(u64, u64)>) -> HashMap<Signal, Observation> {
    let mut observed = HashMap::new();
    if let Some((total, working_set)) = memory {
        observed.insert(
            Signal::MemoryAvailable,
            Observation {
                available: total.saturating_sub(working_set),
                capacity: total,
            },
        );
    }
    if let Some(fs) = statvfs(data_dir) {
        let bytes = Observation {
            available: fs.f_bavail * fs.f_frsize,
            capacity: fs.f_blocks * fs.f_frsize,
        };
        let inodes = Observation {
            available: fs.f_favail,
            capacity: fs.f_files,
        };
        observed.insert(Signal::NodefsAvailable, bytes);
        observed.insert(Signal::ImagefsAvailable, bytes);
        // Filesystems without an inode limit report none; no threshold applies then.
        if inodes.capacity > 0 {
            observed.insert(Signal::NodefsInodesFree, inodes);
            observed.insert(Signal::ImagefsInodesFree, inodes);
        }
    }
    if let Some(pids) = pids() {
        observed.insert(Signal::PidAvailable, pids);
    }
    observed
}

fn statvfs(path: &Path) -> Option<libc::statvfs> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then_some(stat)
}

fn pids() -> Option<Observation> {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysinfo fills the zeroed struct we pass.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    Some(Observation {
        available: max.saturating_sub(u64::from(info.procs)),
        capacity: max,
    })
}

/// The thresholds the observations cross, with what was observed.
pub fn crossed<'a>(
    thresholds: &'a [Threshold],
    observed: &HashMap<Signal, Observation>,
) -> Vec<(&'a Threshold, Observation)> {
    thresholds
        .iter()
        .filter_map(|threshold| {
            let seen = *observed.get(&threshold.signal)?;
            (seen.available < threshold.minimum_of(seen.capacity)).then_some((threshold, seen))
        })
        .collect()
}

/// The Node's pressure conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

impl Pressure {
    pub fn any(self) -> bool {
        self.memory || self.disk || self.pid
    }

    /// The names of the conditions that are True, as the Node shows them.
    pub fn names(self) -> Vec<&'static str> {
        [
            (self.memory, "MemoryPressure"),
            (self.disk, "DiskPressure"),
            (self.pid, "PIDPressure"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Holds each condition for the transition period after its signal was last seen
/// below its threshold, so a node at the edge does not flap.
pub struct PressureTracker {
    period: Duration,
    last_seen: HashMap<Condition, Instant>,
}

impl PressureTracker {
    pub fn new(period: Duration) -> Self {
        PressureTracker {
            period,
            last_seen: HashMap::new(),
        }
    }

    /// Records the conditions crossed now and returns those in force.
    pub fn update(&mut self, crossed: &[Condition], now: Instant) -> Pressure {
        for condition in crossed {
            self.last_seen.insert(*condition, now);
        }
        let on = |condition| {
            self.last_seen
                .get(&condition)
                .is_some_and(|seen| crossed.contains(&condition) || now - *seen < self.period)
        };
        Pressure {
            memory: on(Condition::Memory),
            disk: on(Condition::Disk),
            pid: on(Condition::Pid),
        }
    }
}

/// Static and mirror pods, and pods of system-critical priority: never evicted or
/// refused for pressure.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let static_pod = annotations.is_some_and(|a| {
        a.contains_key("kubernetes.io/config.mirror")
            || a.get("kubernetes.io/config.source")
                .is_some_and(|s| s != "api")
    });
    let priority = pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    static_pod || priority >= SYSTEM_CRITICAL_PRIORITY
}

/// Whether a new pod may start under `pressure`: Err with the message of the
/// rejection (the pod fails with reason Evicted). Under memory pressure alone only
/// BestEffort pods are refused (unless they tolerate the memory-pressure taint);
/// under disk or PID pressure every pod that is not critical.
pub fn admit(pod: &Pod, pressure: Pressure) -> Result<(), String> {
    if !pressure.any() || is_critical(pod) {
        return Ok(());
    }
    if pressure.memory && !pressure.disk && !pressure.pid {
        let tolerates = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_ref())
            .is_some_and(|tolerations| {
                tolerations.iter().any(|t| {
                    let key_matches = match t.key.as_deref() {
                        None | Some("") => t.operator.as_deref() == Some("Exists"),
                        Some(key) => key == "node.kubernetes.io/memory-pressure",
                    };
                    key_matches
                        && matches!(t.effect.as_deref(), None | Some("") | Some("NoSchedule"))
                })
            });
        if crate::pods::qos_class(pod) != "BestEffort" || tolerates {
            return Ok(());
        }
    }
    Err(format!(
        "Pod was rejected: The node had condition: [{}]. ",
        pressure.names().join(", ")
    ))
}

/// A running pod as the eviction ranking sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub uid: String,
    pub qos: &'static str,
    pub priority: i32,
    /// Memory working set of its containers (bytes).
    pub memory_usage: u64,
    /// Sum of its containers' memory requests (bytes).
    pub memory_request: u64,
}

impl Candidate {
    pub fn of(pod: &Pod, memory_usage: u64) -> Candidate {
        let spec = pod.spec.as_ref();
        let memory_request = spec
            .map(|s| {
                s.containers
                    .iter()
                    .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
                    .filter_map(|q| crate::pods::parse_quantity(&q.0))
                    .sum::<f64>() as u64
            })
            .unwrap_or(0);
        Candidate {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            qos: crate::pods::qos_class(pod),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            memory_usage,
            memory_request,
        }
    }
}

/// The pod to evict for `signal`, as upstream ranks: under memory pressure pods using
/// more than they request first, then lower priority, then the most memory above the
/// request; for other signals BestEffort before Burstable before Guaranteed, then
/// lower priority.
pub fn choose(candidates: &[Candidate], signal: Signal) -> Option<&Candidate> {
    let qos_rank = |qos: &str| match qos {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    };
    candidates.iter().min_by(|a, b| {
        if signal == Signal::MemoryAvailable {
            let exceeds = |c: &Candidate| c.memory_usage <= c.memory_request;
            let above = |c: &Candidate| c.memory_usage as i128 - c.memory_request as i128;
            exceeds(a)
                .cmp(&exceeds(b))
                .then(a.priority.cmp(&b.priority))
                .then(above(b).cmp(&above(a)))
        } else {
            qos_rank(a.qos)
                .cmp(&qos_rank(b.qos))
                .then(a.priority.cmp(&b.priority))
        }
    })
}

/// The message an evicted pod carries, as upstream writes it.
pub fn eviction_message(threshold: &Threshold, seen: Observation) -> String {
    format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        threshold.signal.resource(),
        threshold.text,
        if matches!(
            threshold.signal,
            Signal::MemoryAvailable | Signal::NodefsAvailable | Signal::ImagefsAvailable
        ) {
            format!("{}Ki", seen.available / 1024)
        } else {
            seen.available.to_string()
        }
    )
}

/// What a pod holds of the node's local ephemeral storage, from the latest stats
/// (the numbers `/stats/summary` shows).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageUsage {
    /// Bytes used by each measured volume, by volume name.
    pub volumes: HashMap<String, u64>,
    /// Bytes each running container takes (its writable layer and its logs), by
    /// container name.
    pub containers: HashMap<String, u64>,
    /// The pod's whole ephemeral storage: its containers' writable layers, its logs
    /// and its ephemeral volumes.
    pub total: u64,
}

/// Why a pod must be evicted for its local storage limits, in upstream's words, or
/// None when it keeps within them. As upstream's eviction manager checks, whatever
/// the node's pressure: first an emptyDir above its `sizeLimit`, then the pod's
/// whole ephemeral storage above its ephemeral-storage limit (the containers'
/// limits summed, as upstream's pod limits are), then a container above its own
/// limit.
pub fn local_storage_violation(pod: &Pod, usage: &StorageUsage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let Some(used) = usage.volumes.get(&volume.name) else {
            continue;
        };
        if let Some(bytes) = quantity_bytes(&limit.0)
            && bytes > 0
            && *used > bytes
        {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name, limit.0
            ));
        }
    }
    if let Some((limit, text)) = pod_ephemeral_storage_limit(pod)
        && usage.total > limit
    {
        return Some(format!(
            "Pod ephemeral local storage usage exceeds the total limit of containers {text}. "
        ));
    }
    for container in &spec.containers {
        let Some(limit) = ephemeral_storage_limit(container) else {
            continue;
        };
        let Some(bytes) = quantity_bytes(&limit).filter(|b| *b > 0) else {
            continue;
        };
        if usage
            .containers
            .get(&container.name)
            .is_some_and(|used| *used > bytes)
        {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {limit:?}. ",
                container.name
            ));
        }
    }
    None
}

fn ephemeral_storage_limit(container: &k8s_openapi::api::core::v1::Container) -> Option<String> {
    let limits = container.resources.as_ref()?.limits.as_ref()?;
    Some(limits.get("ephemeral-storage")?.0.clone())
}

fn quantity_bytes(text: &str) -> Option<u64> {
    crate::pods::parse_quantity(text).map(|q| q.max(0.0).ceil() as u64)
}

/// The pod's ephemeral-storage limit, in bytes and as upstream prints it, when some
/// container has one: as upstream's pod limits, the containers' limits and the
/// sidecars' (restartable init containers) summed, or a plain init container's
/// limit with the sidecars started before it when that is more, plus the pod's
/// overhead.
pub fn pod_ephemeral_storage_limit(pod: &Pod) -> Option<(u64, String)> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        ephemeral_storage_limit(c).and_then(|q| quantity_bytes(&q))
    };
    let mut found = false;
    let mut binary = false;
    let mut note = |text: Option<String>| {
        if let Some(text) = text {
            binary |= !found && text.ends_with('i');
            found = true;
        }
    };
    let mut sum = 0u64;
    for container in &spec.containers {
        note(ephemeral_storage_limit(container));
        sum += limit(container).unwrap_or(0);
    }
    let mut sidecars = 0u64;
    let mut init_max = 0u64;
    for init in spec.init_containers.iter().flatten() {
        note(ephemeral_storage_limit(init));
        let own = limit(init).unwrap_or(0);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars += own;
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(sidecars + own);
        }
    }
    if !found {
        return None;
    }
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("ephemeral-storage"))
        .and_then(|q| quantity_bytes(&q.0))
        .unwrap_or(0);
    let bytes = (sum + sidecars).max(init_max) + overhead;
    Some((bytes, format_bytes(bytes, binary)))
}

/// A byte count as a quantity in canonical form: in the largest binary (`Ki`..`Ei`)
/// or decimal (`k`..`E`) unit that divides it exactly.
pub fn format_bytes(bytes: u64, binary: bool) -> String {
    let (base, units): (u64, [&str; 6]) = if binary {
        (1024, ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    } else {
        (1000, ["k", "M", "G", "T", "P", "E"])
    };
    let mut value = bytes;
    let mut unit = "";
    for next in units {
        if value == 0 || !value.is_multiple_of(base) {
            break;
        }
        value /= base;
        unit = next;
    }
    format!("{value}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn thresholds_parse_and_bad_ones_say_why() {
        let parsed = parse_thresholds(DEFAULT_EVICTION_HARD).unwrap();
        assert_eq!(parsed.len(), 4);
        assert_eq!(parsed[0].signal, Signal::MemoryAvailable);
        assert_eq!(parsed[0].minimum, Minimum::Amount(100 * 1024 * 1024));
        assert_eq!(parsed[1].minimum, Minimum::Percent(10.0));
        assert!(parse_thresholds("").unwrap().is_empty());
        for (bad, says) in [
            ("memory.available>1Gi", "signal<quantity"),
            ("memory.free<1Gi", "unknown signal"),
            ("memory.available<lots", "not a quantity"),
            ("nodefs.available<120%", "between 0% and 100%"),
            ("pid.available<10,pid.available<20", "twice"),
        ] {
            let error = parse_thresholds(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn crossing_compares_amounts_and_percentages() {
        let thresholds = parse_thresholds("memory.available<100Mi,nodefs.available<10%").unwrap();
        let mut observed = HashMap::new();
        observed.insert(
            Signal::MemoryAvailable,
            Observation {
                available: 200 << 20,
                capacity: 1 << 30,
            },
        );
        observed.insert(
            Signal::NodefsAvailable,
            Observation {
                available: 5,
                capacity: 100,
            },
        );
        let crossed = crossed(&thresholds, &observed);
        assert_eq!(crossed.len(), 1);
        assert_eq!(crossed[0].0.signal, Signal::NodefsAvailable);
        assert_eq!(
            eviction_message(crossed[0].0, crossed[0].1),
            "The node was low on resource: ephemeral-storage. Threshold quantity: 10%, available: 0Ki. "
        );
        // The host's own signals are there to compare.
        let here = observe(Path::new("/"), Some((1 << 30, 1 << 29)));
        assert_eq!(here[&Signal::MemoryAvailable].available, 1 << 29);
        assert!(here[&Signal::NodefsAvailable].capacity > 0);
        assert!(here[&Signal::PidAvailable].available > 0);
    }

    #[test]
    fn soft_thresholds_need_a_grace_period_and_act_after_it() {
        let soft = parse_soft_thresholds("memory.available<1Gi", "memory.available=30s").unwrap();
        assert_eq!(soft[0].grace_period, Some(Duration::from_secs(30)));
        let missing = parse_soft_thresholds("memory.available<1Gi", "").unwrap_err();
        assert!(
            missing.to_string().contains("has no grace period"),
            "{missing}"
        );
        assert!(parse_soft_thresholds("memory.available<1Gi", "memory.available").is_err());
        assert!(parse_soft_thresholds("", "").unwrap().is_empty());

        let hard = parse_thresholds("memory.available<100Mi").unwrap();
        let seen = Observation {
            available: 0,
            capacity: 1 << 30,
        };
        let start = Instant::now();
        let mut tracker = GraceTracker::default();
        let both = [(&hard[0], seen), (&soft[0], seen)];
        assert_eq!(
            tracker.acting(&both, start).len(),
            1,
            "hard at once, soft not yet"
        );
        let later = start + Duration::from_secs(31);
        assert_eq!(tracker.acting(&both, later).len(), 2);
        // Recovered once: the grace period starts over.
        assert!(tracker.acting(&[], later).is_empty());
        let again = [(&soft[0], seen)];
        assert!(
            tracker
                .acting(&again, later + Duration::from_secs(1))
                .is_empty()
        );

        assert_eq!(stop_grace(&hard[0], 30, 10), 0);
        assert_eq!(stop_grace(&soft[0], 30, 10), 10);
        assert_eq!(stop_grace(&soft[0], 5, 10), 5);
        assert_eq!(stop_grace(&soft[0], 30, 0), 30);
    }

    #[test]
    fn pressure_holds_for_the_transition_period() {
        let start = Instant::now();
        let mut tracker = PressureTracker::new(Duration::from_secs(300));
        assert_eq!(tracker.update(&[], start), Pressure::default());
        let on = tracker.update(&[Condition::Memory], start);
        assert!(on.memory && !on.disk && !on.pid);
        assert!(tracker.update(&[], start + Duration::from_secs(299)).memory);
        assert!(!tracker.update(&[], start + Duration::from_secs(301)).memory);
    }

    #[test]
    fn admission_under_pressure() {
        let best_effort =
            pod(json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}]}}));
        let burstable = pod(json!({"metadata": {"name": "b"}, "spec": {"containers": [
            {"name": "c", "resources": {"requests": {"memory": "10Mi"}}}]}}));
        let tolerating = pod(
            json!({"metadata": {"name": "t"}, "spec": {"containers": [{"name": "c"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        let critical = pod(
            json!({"metadata": {"name": "s"}, "spec": {"containers": [{"name": "c"}], "priority": 2000001000}}),
        );
        let memory = Pressure {
            memory: true,
            ..Default::default()
        };
        let disk = Pressure {
            disk: true,
            ..Default::default()
        };
        assert!(admit(&best_effort, Pressure::default()).is_ok());
        assert_eq!(
            admit(&best_effort, memory).unwrap_err(),
            "Pod was rejected: The node had condition: [MemoryPressure]. "
        );
        assert!(admit(&burstable, memory).is_ok());
        assert!(admit(&tolerating, memory).is_ok());
        assert!(admit(&burstable, disk).is_err());
        assert!(admit(&critical, disk).is_ok());
    }

    #[test]
    fn ranking_follows_upstream() {
        let candidate = |uid: &str, qos, priority, usage, request| Candidate {
            uid: uid.into(),
            qos,
            priority,
            memory_usage: usage,
            memory_request: request,
        };
        let pods = [
            candidate("within-request", "Burstable", 0, 50, 100),
            candidate("small-excess", "Burstable", 0, 120, 100),
            candidate("large-excess", "BestEffort", 0, 500, 0),
            candidate("important", "BestEffort", 1000, 900, 0),
        ];
        assert_eq!(
            choose(&pods, Signal::MemoryAvailable).unwrap().uid,
            "large-excess"
        );
        assert_eq!(
            choose(&pods[..2], Signal::MemoryAvailable).unwrap().uid,
            "small-excess"
        );
        assert_eq!(
            choose(&pods, Signal::NodefsAvailable).unwrap().uid,
            "large-excess"
        );
        assert!(choose(&[], Signal::PidAvailable).is_none());
    }

    fn storage(volumes: &[(&str, u64)], containers: &[(&str, u64)], total: u64) -> StorageUsage {
        let map = |entries: &[(&str, u64)]| {
            entries
                .iter()
                .map(|(name, bytes)| (name.to_string(), *bytes))
                .collect()
        };
        StorageUsage {
            volumes: map(volumes),
            containers: map(containers),
            total,
        }
    }

    fn storage_pod(volumes: serde_json::Value, limits: &[Option<&str>]) -> Pod {
        let containers: Vec<serde_json::Value> = limits
            .iter()
            .enumerate()
            .map(|(i, limit)| match limit {
                Some(limit) => json!({"name": format!("c{i}"), "resources": {"limits": {"ephemeral-storage": limit}}}),
                None => json!({"name": format!("c{i}")}),
            })
            .collect();
        pod(json!({"spec": {"volumes": volumes, "containers": containers}}))
    }

    #[test]
    fn an_empty_dir_above_its_size_limit_evicts_with_upstreams_message() {
        let volumes = json!([
            {"name": "cache", "emptyDir": {"sizeLimit": "8Mi"}},
            {"name": "free", "emptyDir": {}},
        ]);
        let pod = storage_pod(volumes, &[None]);
        let mib = 1 << 20;
        // Under and at the limit: kept; an emptyDir without a limit may grow.
        for used in [mib, 8 * mib] {
            let usage = storage(&[("cache", used), ("free", 100 * mib)], &[], used);
            assert_eq!(local_storage_violation(&pod, &usage), None);
        }
        let usage = storage(&[("cache", 20 * mib)], &[], 20 * mib);
        assert_eq!(
            local_storage_violation(&pod, &usage).as_deref(),
            Some("Usage of EmptyDir volume \"cache\" exceeds the limit \"8Mi\". ")
        );
        // Not yet measured: nothing to judge.
        assert_eq!(local_storage_violation(&pod, &storage(&[], &[], 0)), None);
    }

    #[test]
    fn a_container_above_its_limit_evicts_with_upstreams_message() {
        let pod = storage_pod(json!([]), &[Some("8Mi"), Some("100Mi")]);
        let mib = 1 << 20;
        let within = storage(&[], &[("c0", 8 * mib), ("c1", 50 * mib)], 58 * mib);
        assert_eq!(local_storage_violation(&pod, &within), None);
        let over = storage(&[], &[("c0", 20 * mib), ("c1", mib)], 21 * mib);
        assert_eq!(
            local_storage_violation(&pod, &over).as_deref(),
            Some("Container c0 exceeded its local ephemeral storage limit \"8Mi\". ")
        );
        // A container without a limit may use what it likes (short of the pod's).
        let pod = storage_pod(json!([]), &[None, Some("100Mi")]);
        let usage = storage(&[], &[("c0", 90 * mib), ("c1", mib)], 91 * mib);
        assert_eq!(local_storage_violation(&pod, &usage), None);
    }

    #[test]
    fn the_pods_total_above_its_containers_limits_evicts_first() {
        let volumes = json!([{"name": "scratch", "emptyDir": {}}]);
        let pod = storage_pod(volumes, &[Some("4Mi"), Some("4Mi")]);
        let mib = 1 << 20;
        // Each container within its own limit, the emptyDir making the pod's total
        // more than the 8Mi the containers' limits sum to.
        let usage = storage(
            &[("scratch", 7 * mib)],
            &[("c0", mib), ("c1", mib)],
            9 * mib,
        );
        assert_eq!(
            local_storage_violation(&pod, &usage).as_deref(),
            Some("Pod ephemeral local storage usage exceeds the total limit of containers 8Mi. ")
        );
        // Over both the pod's and a container's limit: the pod's message, as upstream
        // checks the pod before its containers.
        let usage = storage(&[], &[("c0", 9 * mib)], 9 * mib);
        assert!(
            local_storage_violation(&pod, &usage)
                .unwrap()
                .starts_with("Pod ephemeral local storage usage")
        );
        // Without any limit there is no pod limit either.
        let pod = storage_pod(json!([]), &[None, None]);
        assert_eq!(
            local_storage_violation(&pod, &storage(&[], &[("c0", 1 << 40)], 1 << 40)),
            None
        );
    }

    #[test]
    fn pod_limit_sums_containers_and_sidecars_and_prints_canonically() {
        let limit =
            |value: serde_json::Value| pod_ephemeral_storage_limit(&pod(json!({ "spec": value })));
        let with = |name: &str, q: &str| json!({"name": name, "resources": {"limits": {"ephemeral-storage": q}}});
        assert_eq!(
            limit(json!({"containers": [with("a", "512Ki"), with("b", "1536Ki")]})),
            Some((2 << 20, "2Mi".to_string()))
        );
        assert_eq!(
            limit(json!({"containers": [with("a", "1G"), with("b", "500M")]})),
            Some((1_500_000_000, "1500M".to_string()))
        );
        // A plain init container counts when it alone needs more; a sidecar adds up.
        assert_eq!(
            limit(json!({
                "initContainers": [with("init", "10Mi")],
                "containers": [with("a", "1Mi")],
            })),
            Some((10 << 20, "10Mi".to_string()))
        );
        let mut sidecar = with("sidecar", "1Mi");
        sidecar["restartPolicy"] = json!("Always");
        assert_eq!(
            limit(json!({
                "initContainers": [sidecar],
                "containers": [with("a", "1Mi")],
                "overhead": {"ephemeral-storage": "1Mi"},
            })),
            Some((3 << 20, "3Mi".to_string()))
        );
        assert_eq!(limit(json!({"containers": [{"name": "a"}]})), None);
        assert_eq!(format_bytes(1000, true), "1000");
        assert_eq!(format_bytes(0, true), "0");
    }
}
