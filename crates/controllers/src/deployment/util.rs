//! Pure helpers of the Deployment controller, after upstream's
//! pkg/controller/deployment/util: the pod-template hash, the revision and replica
//! annotations on ReplicaSets, maxSurge/maxUnavailable arithmetic, proportional
//! scaling, and the Deployment conditions.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{Timestamp, Unit};

/// Label (on ReplicaSets, their selectors and pods) naming the template revision.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Annotation: the revision number of a ReplicaSet (and of its Deployment).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Annotation: earlier revisions a ReplicaSet served (after rollbacks).
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// Annotation: the Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation: replicas + maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations that are not copied to its ReplicaSets.
const NOT_COPIED_ANNOTATIONS: [&str; 6] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];
/// The alphabet of upstream's `rand.SafeEncodeString` (no vowels, no 0/1/3).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash that names a template's ReplicaSet: FNV-32a over the template's JSON
/// (plus the collision count, little-endian, when set), its decimal digits mapped
/// onto the safe alphabet like upstream's `ComputeHash`. Upstream hashes Go's
/// struct dump instead of JSON, so the values differ from upstream's, but are as
/// stable: the same template always gives the same hash.
pub fn pod_template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    let mut hash = OFFSET;
    let mut write = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    write(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        write(&(count as u32).to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

/// Upstream's `rand.SafeEncodeString`: each byte picks a letter of the safe alphabet.
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| SAFE_ALPHABET[b as usize % SAFE_ALPHABET.len()] as char)
        .collect()
}

/// Whether two templates are equal once the pod-template-hash label is ignored.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(POD_TEMPLATE_HASH_LABEL);
            if labels.is_empty() {
                t.metadata.as_mut().unwrap().labels = None;
            }
        }
        t
    };
    strip(a) == strip(b)
}

pub fn spec_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

pub fn rs_status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The revision of a ReplicaSet (0 when it has none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS_ANNOTATION).and_then(|r| r.parse().ok())
}

pub fn max_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, MAX_REPLICAS_ANNOTATION).and_then(|r| r.parse().ok())
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    let kind = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref());
    kind != Some("Recreate")
}

/// An int-or-percent value of `total`, rounded up or down.
fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let value = value
        .cloned()
        .unwrap_or(IntOrString::String(default.to_string()));
    match value {
        IntOrString::Int(n) => n,
        IntOrString::String(s) => {
            let percent: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let exact = percent * f64::from(total) / 100.0;
            if round_up {
                exact.ceil() as i32
            } else {
                exact.floor() as i32
            }
        }
    }
}

/// maxSurge and maxUnavailable resolved against the replicas (upstream's
/// `ResolveFenceposts`): surge rounds up, unavailable down, and if both come out
/// zero, one pod may be unavailable so the rollout can move. Recreate has neither.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling_update(d) {
        return (0, 0);
    }
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let desired = spec_replicas(d);
    let surge = scaled_value(
        rolling.and_then(|r| r.max_surge.as_ref()),
        desired,
        true,
        "25%",
    );
    let unavailable = scaled_value(
        rolling.and_then(|r| r.max_unavailable.as_ref()),
        desired,
        false,
        "25%",
    );
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).0
}

/// The most pods that may be unavailable, never more than the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let desired = spec_replicas(d);
    if !is_rolling_update(d) || desired == 0 {
        return 0;
    }
    fenceposts(d).1.min(desired)
}

/// How many replicas the new ReplicaSet should have now in a rolling update:
/// as many more as the surge allows, never more than the Deployment wants.
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs_replicas: i32) -> i32 {
    let desired = spec_replicas(d);
    if !is_rolling_update(d) {
        return desired;
    }
    let current: i32 = all.iter().map(|rs| rs_replicas(rs)).sum();
    let max_total = desired + max_surge(d);
    if current >= max_total {
        return new_rs_replicas;
    }
    let scale_up = (max_total - current).min(desired - new_rs_replicas);
    new_rs_replicas + scale_up.max(0)
}

/// The share of `replicas_to_add` one ReplicaSet gets in proportional scaling.
pub fn proportion(
    rs: &ReplicaSet,
    d: &Deployment,
    replicas_to_add: i32,
    replicas_added: i32,
) -> i32 {
    if rs_replicas(rs) == 0 || replicas_to_add == 0 || replicas_to_add == replicas_added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = replicas_to_add - replicas_added;
    if replicas_to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    let desired = spec_replicas(d);
    if desired == 0 {
        return -rs_replicas(rs);
    }
    let max_replicas = desired + max_surge(d);
    let before = max_replicas_annotation(rs).unwrap_or_else(|| {
        d.status
            .as_ref()
            .map(|s| s.replicas.unwrap_or(0))
            .unwrap_or(0)
    });
    if before == 0 {
        return 0;
    }
    let size = f64::from(rs_replicas(rs)) * f64::from(max_replicas) / f64::from(before);
    size.round() as i32 - rs_replicas(rs)
}

/// Sets the annotations a Deployment's new ReplicaSet carries: the Deployment's
/// own (but for the controller's), and `revision`, keeping the one it replaces in
/// `revision-history`. Returns whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED_ANNOTATIONS.contains(&key.as_str()) {
            continue;
        }
        if annotations.get(key) != Some(value) {
            annotations.insert(key.clone(), value.clone());
            changed = true;
        }
    }
    let old: Option<String> = annotations.get(REVISION_ANNOTATION).cloned();
    let old_number: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_number < new_revision {
        annotations.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match annotations.get(REVISION_HISTORY_ANNOTATION) {
                Some(history) if !history.is_empty() => format!("{history},{old}"),
                _ => old,
            };
            annotations.insert(REVISION_HISTORY_ANNOTATION.into(), history);
        }
    }
    changed
}

/// The desired- and max-replicas annotations for `d`, and whether `rs` lacks them.
pub fn replicas_annotations(d: &Deployment, rs: &ReplicaSet) -> (BTreeMap<String, String>, bool) {
    let desired = spec_replicas(d);
    let wanted: BTreeMap<String, String> = [
        (DESIRED_REPLICAS_ANNOTATION.to_string(), desired.to_string()),
        (
            MAX_REPLICAS_ANNOTATION.to_string(),
            (desired + max_surge(d)).to_string(),
        ),
    ]
    .into();
    let stale = wanted
        .iter()
        .any(|(k, v)| rs.metadata.annotations.as_ref().and_then(|a| a.get(k)) != Some(v));
    (wanted, stale)
}

/// Now, to the second (conditions carry second-precision times).
pub fn now() -> Time {
    Time(
        Timestamp::now()
            .round(Unit::Second)
            .unwrap_or_else(|_| Timestamp::now()),
    )
}

pub fn condition<'a>(status: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
) -> DeploymentCondition {
    let now = now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Upstream's `SetDeploymentCondition`: the same status and reason changes
/// nothing; the same status keeps its transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(current) = conditions.iter().find(|c| c.type_ == condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

/// Every replica updated, present and available, at the current generation.
pub fn is_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = spec_replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether the new status shows progress over the stored one.
pub fn is_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// The progress deadline in seconds, if the Deployment has one.
pub fn progress_deadline(d: &Deployment) -> Option<i64> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
        .map(i64::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(value: serde_json::Value) -> Deployment {
        serde_json::from_value(value).unwrap()
    }

    fn rs(replicas: i32, annotations: serde_json::Value) -> ReplicaSet {
        serde_json::from_value(json!({"metadata": {"annotations": annotations}, "spec": {"replicas": replicas, "selector": {}}})).unwrap()
    }

    #[test]
    fn the_hash_is_stable_safe_and_moved_by_collisions() {
        let template: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let hash = pod_template_hash(&template, None);
        assert_eq!(hash, pod_template_hash(&template.clone(), None));
        assert!(hash.bytes().all(|b| SAFE_ALPHABET.contains(&b)));
        assert_ne!(hash, pod_template_hash(&template, Some(1)));
        let other: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "api"}}})).unwrap();
        assert_ne!(hash, pod_template_hash(&other, None));
        assert_eq!(safe_encode("0123456789"), "456789bcdf");
    }

    #[test]
    fn templates_compare_without_the_hash_label() {
        let a: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).unwrap();
        let b: PodTemplateSpec = serde_json::from_value(
            json!({"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}}),
        )
        .unwrap();
        assert!(equal_ignore_hash(&a, &b));
        let c: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "other"}}})).unwrap();
        assert!(!equal_ignore_hash(&a, &c));
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        let d = deployment(
            json!({"spec": {"replicas": 10, "selector": {}, "template": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}),
        );
        assert_eq!(fenceposts(&d), (3, 2));
        let zero = deployment(
            json!({"spec": {"replicas": 3, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}),
        );
        assert_eq!(fenceposts(&zero), (0, 1));
        let recreate = deployment(
            json!({"spec": {"replicas": 3, "selector": {}, "template": {},
            "strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(fenceposts(&recreate), (0, 0));
    }

    #[test]
    fn the_new_replica_set_grows_within_the_surge() {
        let d = deployment(
            json!({"spec": {"replicas": 10, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0}}}}),
        );
        let old = rs(10, json!({}));
        let new = rs(0, json!({}));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], 0), 2);
        let new = rs(2, json!({}));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], 2), 2);
        let old = rs(5, json!({}));
        let new = rs(5, json!({}));
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new], 5), 7);
    }

    #[test]
    fn proportional_scaling_follows_the_replica_sets_share() {
        // Was 10 (+3 surge = 13), scaled to 20 (+5 surge = 25): 12 more to hand out.
        let d = deployment(
            json!({"spec": {"replicas": 20, "selector": {}, "template": {},
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}}),
        );
        let old = rs(8, json!({MAX_REPLICAS_ANNOTATION: "13"}));
        let new = rs(5, json!({MAX_REPLICAS_ANNOTATION: "13"}));
        let to_add = 25 - 13;
        let old_share = proportion(&old, &d, to_add, 0);
        let new_share = proportion(&new, &d, to_add, old_share);
        assert_eq!((old_share, new_share), (7, 5));
    }

    #[test]
    fn new_replica_set_annotations_keep_the_revision_history() {
        let d = deployment(
            json!({"metadata": {"annotations": {"kubernetes.io/change-cause": "v2",
            REVISION_ANNOTATION: "9"}}, "spec": {"selector": {}, "template": {}}}),
        );
        let mut rs = rs(1, json!({REVISION_ANNOTATION: "1"}));
        assert!(set_new_rs_annotations(&d, &mut rs, 3));
        assert_eq!(revision(&rs), 3);
        let annotations = rs.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[REVISION_HISTORY_ANNOTATION], "1");
        assert_eq!(annotations["kubernetes.io/change-cause"], "v2");
        assert!(!set_new_rs_annotations(&d, &mut rs, 3));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_the_status_holds() {
        let mut status = DeploymentStatus::default();
        let mut first = new_condition("Progressing", "True", "NewReplicaSetCreated", "m".into());
        first.last_transition_time = Some(Time(Timestamp::UNIX_EPOCH));
        set_condition(&mut status, first);
        set_condition(
            &mut status,
            new_condition("Progressing", "True", "ReplicaSetUpdated", "m".into()),
        );
        let progressing = condition(&status, "Progressing").unwrap();
        assert_eq!(progressing.reason.as_deref(), Some("ReplicaSetUpdated"));
        assert_eq!(
            progressing.last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
        set_condition(
            &mut status,
            new_condition(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                "m".into(),
            ),
        );
        let progressing = condition(&status, "Progressing").unwrap();
        assert_ne!(
            progressing.last_transition_time,
            Some(Time(Timestamp::UNIX_EPOCH))
        );
    }
}
