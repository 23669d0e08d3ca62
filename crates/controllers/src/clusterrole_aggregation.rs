//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` gets, as its
//! rules, the rules of every ClusterRole its selectors match, as upstream's
//! clusterrole-aggregation controller does (this is how `admin`, `edit` and `view`
//! grow when a ClusterRole labelled `rbac.authorization.k8s.io/aggregate-to-view`
//! appears).
//!
//! Level-triggered: any change to any ClusterRole recomputes every aggregated role
//! from the cached set, and only roles whose rules differ are written.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use krust_api::selector::LabelSelector;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::Value;

/// Runs the controller until the watch ends for good.
pub async fn run(client: kube::Client) -> anyhow::Result<()> {
    let roles: Api<ClusterRole> = Api::all(client);
    let (reader, writer) = reflector::store();
    // Every watch event, the end of the initial listing included, recomputes:
    // the cache is only complete once that listing is done.
    let mut events = reflector(writer, watcher(roles.clone(), watcher::Config::default()))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        if matches!(
            event,
            Err(_) | Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_))
        ) {
            continue;
        }
        let all: Vec<ClusterRole> = reader.state().iter().map(|r| (**r).clone()).collect();
        for (name, rules) in aggregated_rules(&all) {
            let Some(mut role) = all
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(&name))
                .cloned()
            else {
                continue;
            };
            if role.rules.as_ref() == Some(&rules) {
                continue;
            }
            role.rules = Some(rules);
            if let Err(error) = roles.replace(&name, &PostParams::default(), &role).await {
                // A conflict means a newer version is on its way through the watch.
                tracing::debug!(%error, role = name, "updating an aggregated ClusterRole failed");
            }
        }
    }
    Ok(())
}

/// For every ClusterRole with an aggregation rule, the rules it should have: the
/// rules of the roles its selectors match, in role-name order, without repeats.
pub fn aggregated_rules(roles: &[ClusterRole]) -> BTreeMap<String, Vec<PolicyRule>> {
    let mut by_name: Vec<&ClusterRole> = roles.iter().collect();
    by_name.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut result = BTreeMap::new();
    for role in &by_name {
        let Some(rule) = &role.aggregation_rule else {
            continue;
        };
        let selectors: Vec<LabelSelector> = rule
            .cluster_role_selectors
            .iter()
            .flatten()
            .filter_map(|s| serde_json::to_value(s).ok())
            .filter_map(|s| LabelSelector::from_json(&s).ok())
            .collect();
        let mut rules: Vec<PolicyRule> = Vec::new();
        for other in &by_name {
            if other.metadata.name == role.metadata.name {
                continue;
            }
            let labels = serde_json::to_value(&other.metadata.labels).unwrap_or(Value::Null);
            if !selectors.iter().any(|s| s.matches(labels.as_object())) {
                continue;
            }
            for candidate in other.rules.iter().flatten() {
                if !rules.contains(candidate) {
                    rules.push(candidate.clone());
                }
            }
        }
        result.insert(role.metadata.name.clone().unwrap_or_default(), rules);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(value: Value) -> ClusterRole {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn aggregated_roles_collect_matching_rules_once() {
        let roles = vec![
            role(
                json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}}),
            ),
            role(
                json!({"metadata": {"name": "b", "labels": {"agg": "view"}}, "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            role(
                json!({"metadata": {"name": "a", "labels": {"agg": "view"}}, "rules": [
                {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]},
                {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]}),
            ),
            role(
                json!({"metadata": {"name": "other"}, "rules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]}),
            ),
        ];
        let result = aggregated_rules(&roles);
        let verbs: Vec<&str> = result["view"].iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["list", "get"]);
        assert_eq!(result.len(), 1);
    }
}
