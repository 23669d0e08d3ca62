//! NodeRestriction admission, as upstream's: a node identity (see
//! [`crate::node_authorizer::node_name`]) may write only its own Node and Lease and
//! the pods bound to it, and may not set or change its own labels under
//! `node-restriction.kubernetes.io/` (those are for administrators to place workloads
//! by, so a node must not be able to claim them).
//!
//! Called with the stored object (`old`) and the object to store (`new`): a create has
//! no old object, a delete no new one.

use serde_json::Value;

use crate::auth::User;
use crate::errors::ApiError;
use crate::node_authorizer::{NODE_LEASE_NAMESPACE, node_name};

/// The label prefix nodes may not set on themselves.
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";
/// The annotation that makes a pod a mirror pod (of a static pod).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Refuses a node's write outside its own objects; passes everything else.
pub fn admit(
    user: &User,
    group: &str,
    plural: &str,
    subresource: Option<&str>,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<(), ApiError> {
    let Some(node) = node_name(user) else {
        return Ok(());
    };
    let forbidden = |message: String| {
        Err(ApiError::forbidden(format!(
            "node \"{node}\" is not allowed to {message}"
        )))
    };
    let name = |object: Option<&Value>| {
        object
            .and_then(|o| o["metadata"]["name"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let bound_node = |object: Option<&Value>| {
        object
            .and_then(|o| o["spec"]["nodeName"].as_str())
            .unwrap_or("")
            .to_string()
    };
    match (group, plural) {
        ("", "nodes") => {
            let target = name(old.or(new));
            if target != node {
                return forbidden(format!("modify node \"{target}\""));
            }
            if let Some(new) = new {
                let label = |object: Option<&Value>, key: &str| {
                    object
                        .and_then(|o| o["metadata"]["labels"].get(key))
                        .cloned()
                };
                let keys = |object: Option<&Value>| -> Vec<String> {
                    object
                        .and_then(|o| o["metadata"]["labels"].as_object())
                        .map(|labels| labels.keys().cloned().collect())
                        .unwrap_or_default()
                };
                let mut changed: Vec<String> = keys(Some(new))
                    .into_iter()
                    .chain(keys(old))
                    .filter(|key| is_restricted_label(key))
                    .filter(|key| label(Some(new), key) != label(old, key))
                    .collect();
                changed.sort();
                changed.dedup();
                if !changed.is_empty() {
                    return forbidden(format!(
                        "modify labels: {} (labels under {RESTRICTED_LABEL_PREFIX} are set by administrators)",
                        changed.join(", ")
                    ));
                }
            }
            Ok(())
        }
        ("", "pods") => {
            let pod = name(old.or(new));
            match (old, new, subresource) {
                (None, Some(new), _) => {
                    if new["metadata"]["annotations"][MIRROR_ANNOTATION].is_null() {
                        return forbidden(format!("create pod \"{pod}\": only mirror pods"));
                    }
                    if bound_node(Some(new)) != node {
                        return forbidden(format!("create pod \"{pod}\" bound to another node"));
                    }
                    Ok(())
                }
                (Some(_), None, _) | (Some(_), Some(_), Some("status")) => {
                    if bound_node(old) != node {
                        return forbidden(format!(
                            "modify pod \"{pod}\" bound to node \"{}\"",
                            bound_node(old)
                        ));
                    }
                    Ok(())
                }
                _ => forbidden(format!("update pod \"{pod}\" (only its status)")),
            }
        }
        ("coordination.k8s.io", "leases") => {
            let object = new.or(old);
            let namespace = object
                .and_then(|o| o["metadata"]["namespace"].as_str())
                .unwrap_or("");
            let lease = name(object);
            if namespace != NODE_LEASE_NAMESPACE || lease != node {
                return forbidden(format!("modify lease \"{namespace}/{lease}\""));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a label is one a node may not set on itself.
fn is_restricted_label(key: &str) -> bool {
    let domain = key.split('/').next().unwrap_or("");
    key.contains('/')
        && (domain == "node-restriction.kubernetes.io"
            || domain.ends_with(".node-restriction.kubernetes.io"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node_user(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn node(name: &str, labels: Value) -> Value {
        json!({"metadata": {"name": name, "labels": labels}})
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_not_restricted_labels() {
        let me = node_user("n1");
        let mine = node("n1", json!({"a": "1"}));
        assert!(admit(&me, "", "nodes", None, None, Some(&mine)).is_ok());
        assert!(admit(&me, "", "nodes", Some("status"), Some(&mine), Some(&mine)).is_ok());
        let other = node("n2", json!({}));
        let error = admit(&me, "", "nodes", None, Some(&other), Some(&other)).unwrap_err();
        assert_eq!(error.code, 403);
        assert!(error.message.contains("node \"n2\""), "{}", error.message);
        assert!(admit(&me, "", "nodes", None, Some(&other), None).is_err());

        let labelled = node(
            "n1",
            json!({"a": "1", "node-restriction.kubernetes.io/pool": "gpu"}),
        );
        let error = admit(&me, "", "nodes", None, Some(&mine), Some(&labelled)).unwrap_err();
        assert!(
            error
                .message
                .contains("node-restriction.kubernetes.io/pool"),
            "{}",
            error.message
        );
        // Removing one is a change too; keeping one unchanged is not.
        assert!(admit(&me, "", "nodes", None, Some(&labelled), Some(&mine)).is_err());
        assert!(admit(&me, "", "nodes", None, Some(&labelled), Some(&labelled)).is_ok());
        let sub = node("n1", json!({"x.node-restriction.kubernetes.io/a": "b"}));
        assert!(admit(&me, "", "nodes", None, None, Some(&sub)).is_err());

        // Other users are not this plugin's concern.
        let admin = User {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        assert!(admit(&admin, "", "nodes", None, Some(&other), Some(&labelled)).is_ok());
    }

    #[test]
    fn a_node_writes_only_pods_bound_to_it() {
        let me = node_user("n1");
        let pod = |node: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}});
        let mut mirror = pod("n1");
        mirror["metadata"]["annotations"] = json!({MIRROR_ANNOTATION: "hash"});
        assert!(admit(&me, "", "pods", None, None, Some(&mirror)).is_ok());
        assert!(admit(&me, "", "pods", None, None, Some(&pod("n1"))).is_err());
        let mut elsewhere = mirror.clone();
        elsewhere["spec"]["nodeName"] = json!("n2");
        assert!(admit(&me, "", "pods", None, None, Some(&elsewhere)).is_err());

        assert!(
            admit(
                &me,
                "",
                "pods",
                Some("status"),
                Some(&pod("n1")),
                Some(&pod("n1"))
            )
            .is_ok()
        );
        assert!(
            admit(
                &me,
                "",
                "pods",
                Some("status"),
                Some(&pod("n2")),
                Some(&pod("n2"))
            )
            .is_err()
        );
        assert!(admit(&me, "", "pods", None, Some(&pod("n1")), None).is_ok());
        assert!(admit(&me, "", "pods", None, Some(&pod("n2")), None).is_err());
        assert!(admit(&me, "", "pods", None, Some(&pod("n1")), Some(&pod("n1"))).is_err());
    }

    #[test]
    fn a_node_writes_only_its_own_lease() {
        let me = node_user("n1");
        let lease = |ns: &str, name: &str| json!({"metadata": {"name": name, "namespace": ns}});
        let own = lease(NODE_LEASE_NAMESPACE, "n1");
        assert!(admit(&me, "coordination.k8s.io", "leases", None, None, Some(&own)).is_ok());
        let other = lease(NODE_LEASE_NAMESPACE, "n2");
        assert!(
            admit(
                &me,
                "coordination.k8s.io",
                "leases",
                None,
                None,
                Some(&other)
            )
            .is_err()
        );
        let elsewhere = lease("kube-system", "n1");
        assert!(
            admit(
                &me,
                "coordination.k8s.io",
                "leases",
                None,
                None,
                Some(&elsewhere)
            )
            .is_err()
        );
    }
}
