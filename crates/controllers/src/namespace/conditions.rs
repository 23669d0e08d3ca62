//! The status conditions a terminating namespace carries, with upstream's types,
//! reasons and messages (`pkg/controller/namespace/deletion/status_condition_utils.go`):
//! each is `True` with the problem while it lasts, and `False` with an "ok" reason
//! otherwise.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NamespaceCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const DISCOVERY_FAILURE: &str = "NamespaceDeletionDiscoveryFailure";
pub const GROUP_VERSION_PARSING_FAILURE: &str = "NamespaceDeletionGroupVersionParsingFailure";
pub const CONTENT_FAILURE: &str = "NamespaceDeletionContentFailure";
pub const CONTENT_REMAINING: &str = "NamespaceContentRemaining";
pub const FINALIZERS_REMAINING: &str = "NamespaceFinalizersRemaining";

/// The condition types the namespace controller maintains, in upstream's order.
pub const TYPES: [&str; 5] = [
    DISCOVERY_FAILURE,
    GROUP_VERSION_PARSING_FAILURE,
    CONTENT_FAILURE,
    CONTENT_REMAINING,
    FINALIZERS_REMAINING,
];

/// Reason and message of a condition type when all is well.
fn ok_state(condition_type: &str) -> (&'static str, &'static str) {
    match condition_type {
        DISCOVERY_FAILURE => (
            "ResourcesDiscovered",
            "All resources successfully discovered",
        ),
        GROUP_VERSION_PARSING_FAILURE => (
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed",
        ),
        CONTENT_FAILURE => (
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization",
        ),
        CONTENT_REMAINING => ("ContentRemoved", "All content successfully removed"),
        _ => (
            "ContentHasNoFinalizers",
            "All content-preserving finalizers finished",
        ),
    }
}

/// What one pass over a namespace's content found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentReport {
    /// Why discovery was incomplete, if it was.
    pub discovery_failure: Option<String>,
    /// One message per resource type whose content could not be deleted.
    pub deletion_errors: Vec<String>,
    /// Remaining objects by `plural.group` (upstream's form, so `configmaps.` for core).
    pub remaining: BTreeMap<String, usize>,
    /// Remaining objects by finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

fn condition(
    condition_type: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> NamespaceCondition {
    NamespaceCondition {
        type_: condition_type.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        last_transition_time: Some(now.clone()),
    }
}

impl ContentReport {
    /// The conditions this report calls for: the problems found, `True`; every other
    /// maintained type, `False` with its ok reason.
    pub fn conditions(&self, now: &Time) -> Vec<NamespaceCondition> {
        TYPES
            .iter()
            .map(|condition_type| {
                self.problem(condition_type, now).unwrap_or_else(|| {
                    let (reason, message) = ok_state(condition_type);
                    condition(condition_type, "False", reason, message.to_string(), now)
                })
            })
            .collect()
    }

    fn problem(&self, condition_type: &str, now: &Time) -> Option<NamespaceCondition> {
        let (reason, message) = match condition_type {
            DISCOVERY_FAILURE => ("DiscoveryFailed", self.discovery_failure.clone()?),
            CONTENT_FAILURE if !self.deletion_errors.is_empty() => {
                let mut errors = self.deletion_errors.clone();
                errors.sort();
                (
                    "ContentDeletionFailed",
                    format!(
                        "Failed to delete all resource types, {} remaining: {}",
                        errors.len(),
                        errors.join(", ")
                    ),
                )
            }
            CONTENT_REMAINING if self.remaining.values().any(|n| *n > 0) => (
                "SomeResourcesRemain",
                format!(
                    "Some resources are remaining: {}",
                    counted(&self.remaining, |resource, n| format!(
                        "{resource} has {n} resource instances"
                    ))
                ),
            ),
            FINALIZERS_REMAINING if self.finalizers.values().any(|n| *n > 0) => (
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    counted(&self.finalizers, |finalizer, n| format!(
                        "{finalizer} in {n} resource instances"
                    ))
                ),
            ),
            _ => return None,
        };
        Some(condition(condition_type, "True", reason, message, now))
    }
}

/// The non-zero counts, each described by `describe`, sorted, comma-separated.
fn counted(counts: &BTreeMap<String, usize>, describe: impl Fn(&str, usize) -> String) -> String {
    let mut parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(name, n)| describe(name, *n))
        .collect();
    parts.sort();
    parts.join(", ")
}

/// Merges `desired` into `existing` as upstream does: a missing type is added, a
/// type whose status, reason or message differs is updated (its transition time
/// moves only when the status changes). Returns whether anything changed.
pub fn merge(existing: &mut Vec<NamespaceCondition>, desired: Vec<NamespaceCondition>) -> bool {
    let mut changed = false;
    for new in desired {
        match existing.iter_mut().find(|c| c.type_ == new.type_) {
            None => {
                existing.push(new);
                changed = true;
            }
            Some(old)
                if old.status != new.status
                    || old.reason != new.reason
                    || old.message != new.message =>
            {
                if old.status != new.status {
                    old.last_transition_time = new.last_transition_time;
                }
                old.status = new.status;
                old.reason = new.reason;
                old.message = new.message;
                changed = true;
            }
            Some(_) => {}
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(second: i64) -> Time {
        Time(Timestamp::from_second(second).unwrap())
    }

    fn find<'a>(
        conditions: &'a [NamespaceCondition],
        condition_type: &str,
    ) -> &'a NamespaceCondition {
        conditions
            .iter()
            .find(|c| c.type_ == condition_type)
            .unwrap()
    }

    #[test]
    fn all_well_gives_five_false_conditions() {
        let conditions = ContentReport::default().conditions(&at(0));
        assert_eq!(conditions.len(), 5);
        assert!(conditions.iter().all(|c| c.status == "False"));
        let remaining = find(&conditions, CONTENT_REMAINING);
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(
            remaining.message.as_deref(),
            Some("All content successfully removed")
        );
        let finalizers = find(&conditions, FINALIZERS_REMAINING);
        assert_eq!(finalizers.reason.as_deref(), Some("ContentHasNoFinalizers"));
    }

    #[test]
    fn problems_give_upstream_messages() {
        let report = ContentReport {
            discovery_failure: Some("Discovery failed for some groups, 1 failing: x".into()),
            deletion_errors: vec!["b failed".into(), "a failed".into()],
            remaining: BTreeMap::from([
                ("configmaps.".to_string(), 2),
                ("deployments.apps".to_string(), 1),
                ("secrets.".to_string(), 0),
            ]),
            finalizers: BTreeMap::from([("example.com/hold".to_string(), 2)]),
        };
        let conditions = report.conditions(&at(0));
        let discovery = find(&conditions, DISCOVERY_FAILURE);
        assert_eq!(discovery.status, "True");
        assert_eq!(discovery.reason.as_deref(), Some("DiscoveryFailed"));
        assert_eq!(
            find(&conditions, CONTENT_FAILURE).message.as_deref(),
            Some("Failed to delete all resource types, 2 remaining: a failed, b failed")
        );
        assert_eq!(
            find(&conditions, CONTENT_REMAINING).message.as_deref(),
            Some(
                "Some resources are remaining: configmaps. has 2 resource instances, deployments.apps has 1 resource instances"
            )
        );
        let finalizers = find(&conditions, FINALIZERS_REMAINING);
        assert_eq!(finalizers.reason.as_deref(), Some("SomeFinalizersRemain"));
        assert_eq!(
            finalizers.message.as_deref(),
            Some(
                "Some content in the namespace has finalizers remaining: example.com/hold in 2 resource instances"
            )
        );
        assert_eq!(
            find(&conditions, GROUP_VERSION_PARSING_FAILURE).status,
            "False"
        );
    }

    #[test]
    fn merge_moves_transition_time_only_on_status_change() {
        let mut existing = ContentReport::default().conditions(&at(10));
        // Same state later: nothing changes.
        assert!(!merge(
            &mut existing,
            ContentReport::default().conditions(&at(20))
        ));
        let report = ContentReport {
            remaining: BTreeMap::from([("configmaps.".to_string(), 1)]),
            ..Default::default()
        };
        assert!(merge(&mut existing, report.conditions(&at(30))));
        let remaining = find(&existing, CONTENT_REMAINING);
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.last_transition_time, Some(at(30)));
        // Another message, same status: the transition time stays.
        let report = ContentReport {
            remaining: BTreeMap::from([("configmaps.".to_string(), 3)]),
            ..Default::default()
        };
        assert!(merge(&mut existing, report.conditions(&at(40))));
        assert_eq!(
            find(&existing, CONTENT_REMAINING).last_transition_time,
            Some(at(30))
        );
        assert_eq!(existing.len(), 5);
    }
}
