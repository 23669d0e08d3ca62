//! Scaling behavior, as upstream's `normalizeDesiredReplicasWithBehaviors`: what
//! becomes of a metrics proposal before it is written to the target.
//!
//! 1. *Stabilization*: the proposal is kept between the lowest recommendation of the
//!    scale-up window and the highest of the scale-down window (by default 0 s and
//!    300 s), so a short dip does not remove pods that a moment later are needed.
//! 2. *Rate*: each direction's policies (`Pods` or `Percent` per `periodSeconds`,
//!    counted from the changes made within that period) bound how far one step may
//!    go; `selectPolicy` picks the policy allowing the most (`Max`), the least
//!    (`Min`), or forbids the direction (`Disabled`).
//! 3. *Bounds*: minReplicas and maxReplicas.
//!
//! An HPA without `behavior` gets upstream's defaults: up by 100% or 4 pods per 15 s
//! (whichever is more), down by up to 100% per 15 s after a 300 s window. The
//! [`History`] of recommendations and scale events is kept in memory per HPA, as
//! upstream keeps it (a restarted controller starts a fresh one).

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The scale-down stabilization window of HPAs that do not set one
/// (`--horizontal-pod-autoscaler-downscale-stabilization`).
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// How a policy counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One scaling policy: at most `value` pods or percent per `period_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub value: i32,
    pub period_seconds: i32,
}

/// Which policy wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectPolicy {
    Max,
    Min,
    Disabled,
}

/// The rules of one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub stabilization_window_seconds: i32,
    pub select_policy: SelectPolicy,
    pub policies: Vec<Policy>,
}

/// The rules of both directions, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Behavior {
    pub scale_up: Rules,
    pub scale_down: Rules,
}

impl Behavior {
    /// The behavior an HPA's `spec.behavior` asks for, with upstream's defaults for
    /// what it leaves out. An HPA without a behavior has `unset_scale_down_window` as
    /// its scale-down stabilization window (the controller's flag); one whose
    /// behavior leaves the window out has the API's default, 300 s.
    pub fn from_spec(
        spec: Option<&HorizontalPodAutoscalerBehavior>,
        unset_scale_down_window: Duration,
    ) -> Behavior {
        let default_up = Rules {
            stabilization_window_seconds: 0,
            select_policy: SelectPolicy::Max,
            policies: vec![
                Policy {
                    kind: PolicyKind::Pods,
                    value: 4,
                    period_seconds: 15,
                },
                Policy {
                    kind: PolicyKind::Percent,
                    value: 100,
                    period_seconds: 15,
                },
            ],
        };
        let window = match spec {
            None => unset_scale_down_window,
            Some(_) => DEFAULT_SCALE_DOWN_WINDOW,
        };
        let default_down = Rules {
            stabilization_window_seconds: i32::try_from(window.as_secs()).unwrap_or(i32::MAX),
            select_policy: SelectPolicy::Max,
            policies: vec![Policy {
                kind: PolicyKind::Percent,
                value: 100,
                period_seconds: 15,
            }],
        };
        let spec = spec.cloned().unwrap_or_default();
        Behavior {
            scale_up: rules_from(spec.scale_up.as_ref(), default_up),
            scale_down: rules_from(spec.scale_down.as_ref(), default_down),
        }
    }
}

fn rules_from(spec: Option<&HPAScalingRules>, defaults: Rules) -> Rules {
    let Some(spec) = spec else {
        return defaults;
    };
    let policies: Vec<Policy> = spec
        .policies
        .iter()
        .flatten()
        .filter_map(|policy| {
            let kind = match policy.type_.as_str() {
                "Pods" => PolicyKind::Pods,
                "Percent" => PolicyKind::Percent,
                _ => return None,
            };
            Some(Policy {
                kind,
                value: policy.value,
                period_seconds: policy.period_seconds,
            })
        })
        .collect();
    Rules {
        stabilization_window_seconds: spec
            .stabilization_window_seconds
            .unwrap_or(defaults.stabilization_window_seconds),
        select_policy: match spec.select_policy.as_deref() {
            Some("Min") => SelectPolicy::Min,
            Some("Disabled") => SelectPolicy::Disabled,
            Some("Max") => SelectPolicy::Max,
            _ => defaults.select_policy,
        },
        policies: if policies.is_empty() {
            defaults.policies
        } else {
            policies
        },
    }
}

/// A change made to the target: how many pods, and when.
#[derive(Clone, Copy, Debug, PartialEq)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
}

/// What one HPA's past looks like to its next sync.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Unstabilized recommendations, newest last.
    recommendations: Vec<(i32, Timestamp)>,
    scale_ups: Vec<ScaleEvent>,
    scale_downs: Vec<ScaleEvent>,
}

/// A condition to set: status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub status: bool,
    pub reason: &'static str,
    pub message: &'static str,
}

/// The outcome of [`History::normalize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// For the `AbleToScale` condition.
    pub able_to_scale: Verdict,
    /// For the `ScalingLimited` condition.
    pub scaling_limited: Verdict,
}

/// The replica bounds of an HPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    pub min: i32,
    pub max: i32,
}

impl History {
    /// Starts the history with the target's current size, so that a controller that
    /// just started does not scale down before a window has passed.
    pub fn record_initial(&mut self, current_replicas: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push((current_replicas, now));
        }
    }

    /// The replica count to set for the metrics' `proposal`, given the target's
    /// `current` count; records the proposal as a recommendation.
    pub fn normalize(
        &mut self,
        behavior: &Behavior,
        bounds: Bounds,
        current: i32,
        proposal: i32,
        now: Timestamp,
    ) -> Normalized {
        let stabilized = self.stabilize(behavior, current, proposal, now);
        let able_to_scale = if stabilized != proposal {
            if proposal >= current {
                Verdict {
                    status: true,
                    reason: "ScaleUpStabilized",
                    message: "recent recommendations were lower than current one, applying the lowest recent recommendation",
                }
            } else {
                Verdict {
                    status: true,
                    reason: "ScaleDownStabilized",
                    message: "recent recommendations were higher than current one, applying the highest recent recommendation",
                }
            }
        } else {
            Verdict {
                status: true,
                reason: "ReadyForNewScale",
                message: "recommended size matches current size",
            }
        };
        let (replicas, reason, message) =
            self.limit_rate(behavior, bounds, current, stabilized, now);
        Normalized {
            replicas,
            able_to_scale,
            scaling_limited: Verdict {
                status: replicas != stabilized,
                reason,
                message,
            },
        }
    }

    /// Remembers a change the controller made to the target.
    pub fn record_scale(&mut self, behavior: &Behavior, previous: i32, new: i32, now: Timestamp) {
        let (events, rules, change) = if new > previous {
            (&mut self.scale_ups, &behavior.scale_up, new - previous)
        } else {
            (&mut self.scale_downs, &behavior.scale_down, previous - new)
        };
        let longest = rules
            .policies
            .iter()
            .map(|policy| policy.period_seconds)
            .max()
            .unwrap_or(0);
        events.retain(|event| event.at > now - seconds(longest));
        events.push(ScaleEvent { change, at: now });
    }

    /// Upstream's `stabilizeRecommendationWithBehaviors`: the proposal kept between
    /// the lowest recommendation of the scale-up window and the highest of the
    /// scale-down window.
    fn stabilize(
        &mut self,
        behavior: &Behavior,
        current: i32,
        proposal: i32,
        now: Timestamp,
    ) -> i32 {
        let up_window = behavior.scale_up.stabilization_window_seconds;
        let down_window = behavior.scale_down.stabilization_window_seconds;
        let up_cutoff = now - seconds(up_window);
        let down_cutoff = now - seconds(down_window);
        let mut up_recommendation = proposal;
        let mut down_recommendation = proposal;
        for (recommendation, at) in &self.recommendations {
            if *at > up_cutoff {
                up_recommendation = up_recommendation.min(*recommendation);
            }
            if *at > down_cutoff {
                down_recommendation = down_recommendation.max(*recommendation);
            }
        }
        let oldest_needed = now - seconds(up_window.max(down_window));
        self.recommendations.retain(|(_, at)| *at > oldest_needed);
        self.recommendations.push((proposal, now));
        current.max(up_recommendation).min(down_recommendation)
    }

    /// Upstream's `convertDesiredReplicasWithBehaviorRate`: the policies' rate limit
    /// and the bounds, with the `ScalingLimited` reason.
    fn limit_rate(
        &self,
        behavior: &Behavior,
        bounds: Bounds,
        current: i32,
        desired: i32,
        now: Timestamp,
    ) -> (i32, &'static str, &'static str) {
        if desired > current {
            let limit = self
                .scale_up_limit(&behavior.scale_up, current, now)
                .max(current);
            let (allowed, reason, message) = if bounds.max > limit {
                (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            } else {
                (
                    bounds.max,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            };
            if desired > allowed {
                return (allowed, reason, message);
            }
        } else if desired < current {
            let limit = self
                .scale_down_limit(&behavior.scale_down, current, now)
                .min(current);
            let (allowed, reason, message) = if bounds.min < limit {
                (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            } else {
                (
                    bounds.min,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            };
            if desired < allowed {
                return (allowed, reason, message);
            }
        }
        (
            desired,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    }

    /// The most replicas the scale-up policies allow now.
    fn scale_up_limit(&self, rules: &Rules, current: i32, now: Timestamp) -> i32 {
        let pick: fn(i32, i32) -> i32 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => std::cmp::min,
            SelectPolicy::Max => std::cmp::max,
        };
        let mut result: Option<i32> = None;
        for policy in &rules.policies {
            let added = changes_within(&self.scale_ups, policy.period_seconds, now);
            let removed = changes_within(&self.scale_downs, policy.period_seconds, now);
            let period_start = i64::from(current) - added + removed;
            let proposed = match policy.kind {
                PolicyKind::Pods => period_start + i64::from(policy.value),
                PolicyKind::Percent => {
                    (period_start as f64 * (1.0 + f64::from(policy.value) / 100.0)).ceil() as i64
                }
            };
            let proposed = clamp_i32(proposed);
            result = Some(result.map_or(proposed, |r| pick(r, proposed)));
        }
        result.unwrap_or(current)
    }

    /// The fewest replicas the scale-down policies allow now.
    fn scale_down_limit(&self, rules: &Rules, current: i32, now: Timestamp) -> i32 {
        // Scaling down, the policy allowing the most change gives the fewest replicas.
        let pick: fn(i32, i32) -> i32 = match rules.select_policy {
            SelectPolicy::Disabled => return current,
            SelectPolicy::Min => std::cmp::max,
            SelectPolicy::Max => std::cmp::min,
        };
        let mut result: Option<i32> = None;
        for policy in &rules.policies {
            let added = changes_within(&self.scale_ups, policy.period_seconds, now);
            let removed = changes_within(&self.scale_downs, policy.period_seconds, now);
            let period_start = i64::from(current) + removed - added;
            let proposed = match policy.kind {
                PolicyKind::Pods => period_start - i64::from(policy.value),
                PolicyKind::Percent => {
                    (period_start as f64 * (1.0 - f64::from(policy.value) / 100.0)) as i64
                }
            };
            let proposed = clamp_i32(proposed);
            result = Some(result.map_or(proposed, |r| pick(r, proposed)));
        }
        result.unwrap_or(current)
    }
}

fn seconds(seconds: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(seconds))
}

fn clamp_i32(value: i64) -> i32 {
    value.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// The pods changed by `events` within the last `period_seconds`.
fn changes_within(events: &[ScaleEvent], period_seconds: i32, now: Timestamp) -> i64 {
    let cutoff = now - seconds(period_seconds);
    events
        .iter()
        .filter(|event| event.at > cutoff)
        .map(|event| i64::from(event.change))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + second).unwrap()
    }

    fn behavior(spec: serde_json::Value) -> Behavior {
        Behavior::from_spec(
            Some(&serde_json::from_value(spec).unwrap()),
            Duration::from_secs(30),
        )
    }

    const BOUNDS: Bounds = Bounds { min: 1, max: 100 };

    #[test]
    fn defaults_are_upstreams() {
        let defaults = Behavior::from_spec(None, DEFAULT_SCALE_DOWN_WINDOW);
        assert_eq!(defaults.scale_up.stabilization_window_seconds, 0);
        assert_eq!(defaults.scale_down.stabilization_window_seconds, 300);
        assert_eq!(defaults.scale_up.policies.len(), 2);
        // A behavior giving only a scale-down window keeps every other default.
        let partial = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 60}}));
        assert_eq!(partial.scale_down.stabilization_window_seconds, 60);
        assert_eq!(partial.scale_down.policies, defaults.scale_down.policies);
        assert_eq!(partial.scale_up, defaults.scale_up);
    }

    #[test]
    fn the_flags_window_applies_only_to_hpas_without_a_behavior() {
        let none = Behavior::from_spec(None, Duration::ZERO);
        assert_eq!(none.scale_down.stabilization_window_seconds, 0);
        // The behavior() helper passes a 30 s flag: a behavior without a scale-down
        // window has the API's 300 s, not the flag's.
        let up_only = behavior(json!({"scaleUp": {"stabilizationWindowSeconds": 5}}));
        assert_eq!(up_only.scale_down.stabilization_window_seconds, 300);
    }

    #[test]
    fn default_scale_up_is_the_larger_of_4_pods_or_100_percent_per_15_seconds() {
        let defaults = Behavior::from_spec(None, DEFAULT_SCALE_DOWN_WINDOW);
        let mut history = History::default();
        // From 1: 4 pods beat 100%: 5.
        let out = history.normalize(&defaults, BOUNDS, 1, 50, at(0));
        assert_eq!(out.replicas, 5);
        assert_eq!(out.scaling_limited.reason, "ScaleUpLimit");
        assert!(out.scaling_limited.status);
        // From 10: 100% beats 4 pods: 20.
        let mut history = History::default();
        assert_eq!(
            history.normalize(&defaults, BOUNDS, 10, 50, at(0)).replicas,
            20
        );
    }

    #[test]
    fn changes_within_the_period_count_against_the_limit() {
        let rules = behavior(
            json!({"scaleUp": {"policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}}),
        );
        let mut history = History::default();
        let out = history.normalize(&rules, BOUNDS, 2, 10, at(0));
        assert_eq!(out.replicas, 4);
        history.record_scale(&rules, 2, 4, at(0));
        // 30 s later the period still holds the +2: no room.
        assert_eq!(history.normalize(&rules, BOUNDS, 4, 10, at(30)).replicas, 4);
        // After the period, 2 more.
        assert_eq!(history.normalize(&rules, BOUNDS, 4, 10, at(61)).replicas, 6);
    }

    #[test]
    fn select_policy_min_takes_the_smallest_change_and_disabled_none() {
        let policies = json!([
            {"type": "Pods", "value": 1, "periodSeconds": 15},
            {"type": "Percent", "value": 50, "periodSeconds": 15},
        ]);
        let min = behavior(
            json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Min", "policies": policies}}),
        );
        let max = behavior(
            json!({"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": policies}}),
        );
        let disabled = behavior(
            json!({"scaleDown": {"selectPolicy": "Disabled"}, "scaleUp": {"selectPolicy": "Disabled"}}),
        );
        // From 10 towards 1: Min removes 1 pod, Max removes 50%.
        assert_eq!(
            History::default()
                .normalize(&min, BOUNDS, 10, 1, at(0))
                .replicas,
            9
        );
        let out = History::default().normalize(&max, BOUNDS, 10, 1, at(0));
        assert_eq!(out.replicas, 5);
        assert_eq!(out.scaling_limited.reason, "ScaleDownLimit");
        assert_eq!(
            History::default()
                .normalize(&disabled, BOUNDS, 10, 1, at(0))
                .replicas,
            10
        );
        assert_eq!(
            History::default()
                .normalize(&disabled, BOUNDS, 10, 20, at(0))
                .replicas,
            10
        );
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_its_window() {
        let defaults = Behavior::from_spec(None, DEFAULT_SCALE_DOWN_WINDOW);
        let mut history = History::default();
        history.record_initial(5, at(0));
        // Load drops at once: the initial 5 holds for the 300 s window.
        let out = history.normalize(&defaults, BOUNDS, 5, 2, at(10));
        assert_eq!(out.replicas, 5);
        assert_eq!(out.able_to_scale.reason, "ScaleDownStabilized");
        assert_eq!(
            history.normalize(&defaults, BOUNDS, 5, 3, at(200)).replicas,
            5
        );
        // Past the window of the 5, the highest recent recommendation (3) wins.
        let out = history.normalize(&defaults, BOUNDS, 5, 2, at(301));
        assert_eq!(out.replicas, 3);
        // And past that one too, the newest.
        assert_eq!(
            history.normalize(&defaults, BOUNDS, 3, 2, at(600)).replicas,
            2
        );
    }

    #[test]
    fn a_scale_up_window_takes_the_lowest_recommendation() {
        let rules = behavior(json!({"scaleUp": {"stabilizationWindowSeconds": 60}}));
        let mut history = History::default();
        history.record_initial(2, at(0));
        let out = history.normalize(&rules, BOUNDS, 2, 6, at(10));
        assert_eq!(out.replicas, 2);
        assert_eq!(out.able_to_scale.reason, "ScaleUpStabilized");
        assert_eq!(history.normalize(&rules, BOUNDS, 2, 8, at(61)).replicas, 6);
    }

    #[test]
    fn bounds_clamp_with_their_reasons() {
        let defaults = Behavior::from_spec(None, DEFAULT_SCALE_DOWN_WINDOW);
        let bounds = Bounds { min: 2, max: 6 };
        let out = History::default().normalize(&defaults, bounds, 4, 50, at(0));
        assert_eq!(
            (out.replicas, out.scaling_limited.reason),
            (6, "TooManyReplicas")
        );
        let no_window = behavior(json!({"scaleDown": {"stabilizationWindowSeconds": 0}}));
        let out = History::default().normalize(&no_window, bounds, 4, 1, at(0));
        assert_eq!(
            (out.replicas, out.scaling_limited.reason),
            (2, "TooFewReplicas")
        );
        let out = History::default().normalize(&defaults, bounds, 4, 5, at(0));
        assert_eq!(out.replicas, 5);
        assert_eq!(out.scaling_limited.reason, "DesiredWithinRange");
        assert!(!out.scaling_limited.status);
        assert_eq!(out.able_to_scale.reason, "ReadyForNewScale");
    }
}
