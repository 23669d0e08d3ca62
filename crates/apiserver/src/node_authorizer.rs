//! The Node authorizer, as upstream's (`--authorization-mode=Node,RBAC`): a kubelet
//! (user `system:node:<name>` in group `system:nodes`) may do what kubelets need and
//! no more. Reads of secrets, configmaps, persistentvolumeclaims and
//! persistentvolumes, and serviceaccount tokens, are allowed only for objects the pods
//! bound to that node use; its Lease only under its own name; everything else by
//! upstream's fixed node rules ([`node_rules`]). It answers Allow or NoOpinion, so
//! RBAC may still allow more; writes are narrowed further by the NodeRestriction
//! admission ([`crate::node_restriction`]).
//!
//! Upstream keeps a graph of pods, nodes and what they use; krust looks at the pods in
//! the watch cache when asked, which is the same relation without a second index.

use serde_json::{Value, json};

use krust_api::pod_references::{Reference, references};

use crate::auth::{Attributes, User, rule_allows};
use crate::cache::WatchCache;

/// The group of every node's identity.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// What the Node authorizer says about one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not this authorizer's to allow; the reason says why, for the log.
    NoOpinion(String),
}

/// The node a user is, when it is a node identity.
pub fn node_name(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    (!name.is_empty() && user.groups.iter().any(|g| g == NODES_GROUP)).then_some(name)
}

/// Decides a request of a node identity; NoOpinion for everyone else.
pub fn authorize(cache: &WatchCache, user: &User, attributes: &Attributes) -> Decision {
    let Some(node) = node_name(user) else {
        return Decision::NoOpinion("not a node".into());
    };
    if attributes.path.is_some() {
        return Decision::NoOpinion("non-resource request".into());
    }
    let kind = match (attributes.group.as_str(), attributes.resource.as_str()) {
        ("", "secrets") => Some(Reference::Secret),
        ("", "configmaps") => Some(Reference::ConfigMap),
        ("", "persistentvolumeclaims") => Some(Reference::Claim),
        ("", "persistentvolumes") => Some(Reference::Volume),
        ("", "serviceaccounts") if attributes.subresource == "token" => {
            Some(Reference::ServiceAccount)
        }
        _ => None,
    };
    if let Some(kind) = kind {
        return authorize_referenced(cache, node, attributes, kind);
    }
    if attributes.group == "coordination.k8s.io" && attributes.resource == "leases" {
        return authorize_lease(node, attributes);
    }
    match node_rules()
        .iter()
        .any(|rule| rule_allows(rule, attributes))
    {
        true => Decision::Allow,
        false => Decision::NoOpinion("not among the node rules".into()),
    }
}

fn authorize_lease(node: &str, attributes: &Attributes) -> Decision {
    if !matches!(
        attributes.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return Decision::NoOpinion(
            "can only get, create, update, patch, or delete a node lease".into(),
        );
    }
    if attributes.namespace != NODE_LEASE_NAMESPACE {
        return Decision::NoOpinion(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE} namespace"
        ));
    }
    // On create the name is in the body: NodeRestriction checks it there.
    if attributes.verb != "create" && attributes.name != node {
        return Decision::NoOpinion("can only access its own node lease".into());
    }
    Decision::Allow
}

fn authorize_referenced(
    cache: &WatchCache,
    node: &str,
    attributes: &Attributes,
    kind: Reference,
) -> Decision {
    let allowed_verb = match kind {
        Reference::ServiceAccount => attributes.verb == "create",
        Reference::Claim | Reference::Volume => attributes.verb == "get",
        Reference::Secret | Reference::ConfigMap => {
            matches!(attributes.verb.as_str(), "get" | "list" | "watch")
        }
    };
    if !allowed_verb {
        return Decision::NoOpinion(format!("can not {} this resource", attributes.verb));
    }
    // list and watch name one object by a metadata.name field selector.
    if attributes.name.is_empty() {
        return Decision::NoOpinion("can only get individual objects of this type".into());
    }
    let pods = pods_on_node(cache, node, &attributes.namespace);
    let related = match kind {
        Reference::Volume => pods.iter().any(|pod| {
            let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("");
            references(pod, Reference::Claim).iter().any(|claim| {
                claim_volume(cache, namespace, claim).as_deref() == Some(attributes.name.as_str())
            })
        }),
        _ => pods
            .iter()
            .any(|pod| references(pod, kind).contains(&attributes.name)),
    };
    match related {
        true => Decision::Allow,
        false => Decision::NoOpinion(format!(
            "no relationship found between node '{node}' and this object"
        )),
    }
}

/// The pods bound to `node`, in `namespace` (every namespace when empty).
fn pods_on_node(cache: &WatchCache, node: &str, namespace: &str) -> Vec<Value> {
    let Some(resource) = krust_api::resources::find("", "v1", "pods") else {
        return Vec::new();
    };
    let prefix = match namespace {
        "" => resource.key_prefix(),
        namespace => format!("{}{namespace}/", resource.key_prefix()),
    };
    cache
        .list(&prefix, None)
        .objects
        .into_iter()
        .map(|(_, pod)| pod.value())
        .filter(|pod| pod["spec"]["nodeName"] == node)
        .collect()
}

/// The volume a claim is bound to.
fn claim_volume(cache: &WatchCache, namespace: &str, claim: &str) -> Option<String> {
    let resource = krust_api::resources::find("", "v1", "persistentvolumeclaims")?;
    let claim = cache.get(&format!("{}{namespace}/{claim}", resource.key_prefix()))?;
    claim.value()["spec"]["volumeName"]
        .as_str()
        .map(str::to_string)
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// What every node may do, as upstream's NodeRules (system:node), less what krust
/// does not serve (dynamic resource allocation objects).
pub fn node_rules() -> Vec<Value> {
    const READ: &[&str] = &["get", "list", "watch"];
    vec![
        rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        rule(
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
            &["create"],
        ),
        rule(&[""], &["services"], READ),
        rule(&[""], &["nodes"], &["create", "get", "list", "watch"]),
        rule(&[""], &["nodes/status"], &["update", "patch"]),
        rule(&[""], &["nodes"], &["update", "patch"]),
        rule(&[""], &["events"], &["create", "update", "patch"]),
        rule(
            &["events.k8s.io"],
            &["events"],
            &["create", "update", "patch"],
        ),
        rule(&[""], &["pods"], READ),
        rule(&[""], &["pods"], &["create", "delete"]),
        rule(&[""], &["pods/status"], &["update", "patch"]),
        rule(&[""], &["pods/eviction"], &["create"]),
        rule(&[""], &["endpoints"], &["get"]),
        rule(
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
            &["create", "get", "list", "watch"],
        ),
        rule(&["storage.k8s.io"], &["volumeattachments"], &["get"]),
        rule(&["storage.k8s.io"], &["csidrivers"], READ),
        rule(
            &["storage.k8s.io"],
            &["csinodes"],
            &["get", "create", "update", "patch", "delete"],
        ),
        rule(&["node.k8s.io"], &["runtimeclasses"], READ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_node_identities_are_nodes() {
        let user = |name: &str, groups: &[&str]| User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(
            node_name(&user("system:node:n1", &["system:nodes"])),
            Some("n1")
        );
        assert_eq!(
            node_name(&user("system:node:n1", &["system:masters"])),
            None
        );
        assert_eq!(node_name(&user("system:node:", &["system:nodes"])), None);
        assert_eq!(node_name(&user("alice", &["system:nodes"])), None);
    }

    #[test]
    fn leases_only_under_the_nodes_own_name() {
        let attributes = |verb: &str, namespace: &str, name: &str| Attributes {
            verb: verb.into(),
            group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        };
        let allow = |a: &Attributes| authorize_lease("n1", a) == Decision::Allow;
        assert!(allow(&attributes("update", NODE_LEASE_NAMESPACE, "n1")));
        assert!(allow(&attributes("create", NODE_LEASE_NAMESPACE, "")));
        assert!(!allow(&attributes("update", NODE_LEASE_NAMESPACE, "n2")));
        assert!(!allow(&attributes("get", "kube-system", "n1")));
        assert!(!allow(&attributes("list", NODE_LEASE_NAMESPACE, "")));
    }

    #[test]
    fn node_rules_allow_reads_and_status_but_not_secrets_or_deletes_of_nodes() {
        let allows = |verb: &str, group: &str, resource: &str, sub: &str| {
            let a = Attributes {
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                ..Default::default()
            };
            node_rules().iter().any(|r| rule_allows(r, &a))
        };
        assert!(allows("get", "", "nodes", ""));
        assert!(allows("patch", "", "nodes", "status"));
        assert!(allows("update", "", "pods", "status"));
        assert!(allows(
            "create",
            "certificates.k8s.io",
            "certificatesigningrequests",
            ""
        ));
        assert!(!allows("delete", "", "nodes", ""));
        assert!(!allows("list", "", "secrets", ""));
        assert!(!allows("update", "", "pods", ""));
        assert!(!allows("create", "", "namespaces", ""));
    }
}
