//! The `pods/eviction` subresource's decision: may this pod go now without breaking
//! the PodDisruptionBudget that covers it? Upstream's rules (the pod eviction REST
//! storage): finished, pending and already terminating pods go at once; a pod covered
//! by no budget goes at once; more than one budget is an error; otherwise the budget
//! must have been processed by the disruption controller (`observedGeneration`) and
//! allow a disruption, which the eviction spends by decrementing
//! `disruptionsAllowed` and recording the pod in `disruptedPods` (the controller counts
//! it as gone until it is, or for two minutes). An unhealthy pod may go without
//! spending a disruption when the budget's `unhealthyPodEvictionPolicy` says so.

use chrono::{DateTime, SecondsFormat, Utc};
use krust_api::selector::LabelSelector;
use serde_json::{Value, json};

use crate::errors::ApiError;

/// At most this many pods may be recorded as being disrupted in one budget.
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// What the eviction may do.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Delete the pod; no budget is touched.
    Delete,
    /// Write the budget at this index of the candidates (disruption spent), then
    /// delete the pod.
    SpendDisruption { budget: usize, updated: Value },
}

/// Decides the eviction of `pod` given the budgets of its namespace.
pub fn decide(pod: &Value, budgets: &[Value], now: DateTime<Utc>) -> Result<Verdict, ApiError> {
    let deleting = pod["metadata"]["deletionTimestamp"].is_string();
    let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
    if deleting || matches!(phase, "Succeeded" | "Failed" | "Pending") {
        return Ok(Verdict::Delete);
    }
    let labels = pod["metadata"]["labels"].as_object();
    let covering: Vec<usize> = budgets
        .iter()
        .enumerate()
        .filter(|(_, budget)| {
            LabelSelector::from_json(&budget["spec"]["selector"])
                .map(|selector| selector.matches(labels))
                .unwrap_or(false)
        })
        .map(|(index, _)| index)
        .collect();
    let index = match covering.as_slice() {
        [] => return Ok(Verdict::Delete),
        [index] => *index,
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let budget = &budgets[index];
    let name = budget["metadata"]["name"].as_str().unwrap_or("");
    let generation = budget["metadata"]["generation"].as_i64().unwrap_or(0);
    let observed = budget["status"]["observedGeneration"].as_i64().unwrap_or(0);
    if observed < generation {
        return Err(budget_violation(format!(
            "The disruption budget {name} is still being processed by the server."
        )));
    }
    let status = &budget["status"];
    let current_healthy = status["currentHealthy"].as_i64().unwrap_or(0);
    let desired_healthy = status["desiredHealthy"].as_i64().unwrap_or(0);
    if !is_ready(pod) {
        let policy = budget["spec"]["unhealthyPodEvictionPolicy"]
            .as_str()
            .unwrap_or("IfHealthyBudget");
        if policy == "AlwaysAllow" || (current_healthy >= desired_healthy && desired_healthy > 0) {
            return Ok(Verdict::Delete);
        }
    }
    let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
    if allowed < 0 {
        return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
    }
    let disrupted = status["disruptedPods"].as_object();
    if disrupted.map_or(0, |pods| pods.len()) > MAX_DISRUPTED_PODS {
        return Err(ApiError::forbidden(
            "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
        ));
    }
    if allowed == 0 {
        return Err(budget_violation(format!(
            "The disruption budget {name} needs {desired_healthy} healthy pods and has {current_healthy} currently"
        )));
    }
    let mut updated = budget.clone();
    updated["status"]["disruptionsAllowed"] = json!(allowed - 1);
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    if !updated["status"]["disruptedPods"].is_object() {
        updated["status"]["disruptedPods"] = json!({});
    }
    updated["status"]["disruptedPods"][pod_name] =
        json!(now.to_rfc3339_opts(SecondsFormat::Secs, true));
    Ok(Verdict::SpendDisruption {
        budget: index,
        updated,
    })
}

/// The condition an evicted pod gets before it is deleted (upstream's
/// DisruptionTarget, which Job pod failure policies match on).
pub fn disruption_condition(now: DateTime<Utc>) -> Value {
    json!({
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
        "lastTransitionTime": now.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// 429 with the `DisruptionBudget` cause, as clients (kubectl drain) expect it.
fn budget_violation(cause: String) -> ApiError {
    let mut error = ApiError::too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    error.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}));
    error
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str, ready: bool) -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "ns", "labels": {"app": "web"}},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        })
    }

    fn budget(allowed: i64, current: i64, desired: i64) -> Value {
        json!({
            "metadata": {"name": "web-pdb", "namespace": "ns", "generation": 2},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "minAvailable": desired},
            "status": {"observedGeneration": 2, "disruptionsAllowed": allowed,
                       "currentHealthy": current, "desiredHealthy": desired, "expectedPods": current},
        })
    }

    fn reason_of(error: ApiError) -> (u16, String) {
        (
            error.code,
            error.status()["details"]["causes"][0]["message"].to_string(),
        )
    }

    #[test]
    fn a_pod_without_a_budget_or_not_running_goes_at_once() {
        assert_eq!(
            decide(&pod("Running", true), &[], Utc::now()),
            Ok(Verdict::Delete)
        );
        let blocking = budget(0, 1, 1);
        for phase in ["Pending", "Succeeded", "Failed"] {
            assert_eq!(
                decide(
                    &pod(phase, false),
                    std::slice::from_ref(&blocking),
                    Utc::now()
                ),
                Ok(Verdict::Delete)
            );
        }
        let mut terminating = pod("Running", true);
        terminating["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(
            decide(&terminating, &[blocking], Utc::now()),
            Ok(Verdict::Delete)
        );
    }

    #[test]
    fn an_allowed_disruption_is_spent_and_recorded() {
        let now = Utc::now();
        let other = json!({"metadata": {"name": "other"}, "spec": {"selector": {"matchLabels": {"app": "db"}}}});
        let verdict = decide(&pod("Running", true), &[other, budget(2, 3, 1)], now).unwrap();
        let Verdict::SpendDisruption { budget, updated } = verdict else {
            panic!("expected a spent disruption");
        };
        assert_eq!(budget, 1);
        assert_eq!(updated["status"]["disruptionsAllowed"], 1);
        assert!(updated["status"]["disruptedPods"]["web-1"].is_string());
    }

    #[test]
    fn no_disruption_left_is_429_with_the_budget_cause() {
        let error = decide(&pod("Running", true), &[budget(0, 2, 2)], Utc::now()).unwrap_err();
        let (code, cause) = reason_of(error);
        assert_eq!(code, 429);
        assert!(
            cause.contains("needs 2 healthy pods and has 2 currently"),
            "{cause}"
        );
    }

    #[test]
    fn an_unprocessed_budget_blocks() {
        let mut stale = budget(5, 5, 1);
        stale["metadata"]["generation"] = json!(3);
        let (code, cause) =
            reason_of(decide(&pod("Running", true), &[stale], Utc::now()).unwrap_err());
        assert_eq!(code, 429);
        assert!(cause.contains("still being processed"), "{cause}");
    }

    #[test]
    fn two_budgets_are_an_error() {
        let error = decide(
            &pod("Running", true),
            &[budget(1, 2, 1), budget(1, 2, 1)],
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(error.code, 500);
        assert!(error.message.contains("more than one PodDisruptionBudget"));
    }

    #[test]
    fn unhealthy_pods_follow_the_unhealthy_pod_eviction_policy() {
        // IfHealthyBudget: an unready pod may go while the budget is healthy.
        assert_eq!(
            decide(&pod("Running", false), &[budget(0, 2, 2)], Utc::now()),
            Ok(Verdict::Delete)
        );
        // ... but spends a disruption (here: none left) when it is not.
        assert_eq!(
            decide(&pod("Running", false), &[budget(0, 1, 2)], Utc::now())
                .unwrap_err()
                .code,
            429
        );
        let mut always = budget(0, 1, 2);
        always["spec"]["unhealthyPodEvictionPolicy"] = json!("AlwaysAllow");
        assert_eq!(
            decide(&pod("Running", false), &[always], Utc::now()),
            Ok(Verdict::Delete)
        );
    }
}
