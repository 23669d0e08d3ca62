//! What the API server does for itself: the built-in namespaces and RBAC roles that
//! exist from the start, periodic compaction of the store, and the review resources
//! (access reviews, self subject review, token review) that are answered, not stored.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use krust_api::resources;
use krust_store::Store;
use serde_json::{Value, json};

use crate::auth::{self, Attributes, User};
use crate::errors::{ApiError, ApiResult};
use crate::handlers::{Api, Call, Tracking};
use crate::request::{self, Query};
use crate::server::{Body, json_response};

/// How often the store's history is compacted (the revision seen one period ago).
const COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "delete",
    "deletecollection",
    "patch",
    "update",
];

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

/// Rules of the `view` role: read everything users work with, except secrets.
fn view_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "persistentvolumeclaims/status",
                "pods",
                "pods/log",
                "pods/status",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "replicationcontrollers/status",
                "serviceaccounts",
                "services",
                "services/status",
                "bindings",
                "events",
                "limitranges",
                "namespaces",
                "namespaces/status",
                "resourcequotas",
                "resourcequotas/status",
            ],
            READ,
        ),
        rule(
            &["apps"],
            &[
                "controllerrevisions",
                "daemonsets",
                "daemonsets/status",
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
                "statefulsets",
                "statefulsets/scale",
                "statefulsets/status",
            ],
            READ,
        ),
        rule(
            &["autoscaling"],
            &[
                "horizontalpodautoscalers",
                "horizontalpodautoscalers/status",
            ],
            READ,
        ),
        rule(
            &["batch"],
            &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
            READ,
        ),
        rule(
            &["policy"],
            &["poddisruptionbudgets", "poddisruptionbudgets/status"],
            READ,
        ),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "ingresses/status", "networkpolicies"],
            READ,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
    ]
}

/// Rules `edit` adds to `view`: change workloads, read and change secrets.
fn edit_rules() -> Vec<Value> {
    vec![
        rule(
            &[""],
            &[
                "pods",
                "pods/attach",
                "pods/exec",
                "pods/portforward",
                "pods/proxy",
                "pods/eviction",
                "configmaps",
                "endpoints",
                "persistentvolumeclaims",
                "replicationcontrollers",
                "replicationcontrollers/scale",
                "secrets",
                "serviceaccounts",
                "services",
                "services/proxy",
            ],
            WRITE,
        ),
        rule(&[""], &["secrets"], READ),
        rule(&[""], &["serviceaccounts/token"], &["create"]),
        rule(
            &["apps"],
            &[
                "daemonsets",
                "deployments",
                "deployments/rollback",
                "deployments/scale",
                "replicasets",
                "replicasets/scale",
                "statefulsets",
                "statefulsets/scale",
            ],
            WRITE,
        ),
        rule(&["autoscaling"], &["horizontalpodautoscalers"], WRITE),
        rule(&["batch"], &["cronjobs", "jobs"], WRITE),
        rule(&["policy"], &["poddisruptionbudgets"], WRITE),
        rule(
            &["networking.k8s.io"],
            &["ingresses", "networkpolicies"],
            WRITE,
        ),
        rule(&["discovery.k8s.io"], &["endpointslices"], WRITE),
        rule(&["coordination.k8s.io"], &["leases"], READ_WRITE),
    ]
}

/// What a krust node agent needs beyond upstream's kubelet (the Node authorizer's
/// node rules): it also runs the pod network, the service proxy, NetworkPolicy
/// enforcement (upstream: flannel, kube-proxy, a policy agent, each with its own
/// identity) and the node's side of the local-path provisioner. No secrets or
/// configmaps: those stay limited to what the node's pods use.
fn node_agent_rules() -> Vec<Value> {
    vec![
        rule(&[""], &["namespaces", "endpoints"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        rule(&["networking.k8s.io"], &["networkpolicies"], READ),
        rule(&[""], &["persistentvolumeclaims"], READ),
        rule(
            &[""],
            &["persistentvolumes"],
            &["get", "list", "watch", "create", "delete"],
        ),
        rule(&["storage.k8s.io"], &["storageclasses"], READ),
        // The agent's CSI attacher and provisioner (external-attacher's part).
        rule(
            &["storage.k8s.io"],
            &["volumeattachments"],
            &[
                "get", "list", "watch", "create", "delete", "patch", "update",
            ],
        ),
        rule(
            &["storage.k8s.io"],
            &["volumeattachments/status"],
            &["patch", "update"],
        ),
        rule(&["storage.k8s.io"], &["csinodes"], READ),
    ]
}

fn admin_rules() -> Vec<Value> {
    vec![
        rule(
            &["rbac.authorization.k8s.io"],
            &["rolebindings", "roles"],
            READ_WRITE,
        ),
        rule(
            &["authorization.k8s.io"],
            &["localsubjectaccessreviews"],
            &["create"],
        ),
    ]
}

fn bootstrap_metadata(name: &str, aggregate_to: Option<&str>) -> Value {
    let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    if let Some(target) = aggregate_to {
        labels[format!("rbac.authorization.k8s.io/aggregate-to-{target}")] = json!("true");
    }
    json!({"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": bootstrap_metadata(name, None), "rules": rules})
}

/// A ClusterRole whose rules are those of the roles labelled `aggregate-to-<target>`;
/// it is itself labelled to aggregate into `into`.
fn aggregated_role(name: &str, target: &str, into: Option<&str>) -> Value {
    let selector = json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{target}"): "true"}});
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": bootstrap_metadata(name, into),
        "aggregationRule": {"clusterRoleSelectors": [selector]},
        "rules": [],
    })
}

/// `system:aggregate-to-<target>`: the built-in rules that flow into `<target>`.
fn aggregating_role(target: &str, rules: Vec<Value>) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": bootstrap_metadata(&format!("system:aggregate-to-{target}"), Some(target)),
        "rules": rules,
    })
}

fn cluster_role_binding(name: &str, role: &str, groups: &[&str]) -> Value {
    let subjects: Vec<Value> = groups
        .iter()
        .map(|g| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": g}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": bootstrap_metadata(name, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

/// The objects every cluster has from its first start.
fn builtin_objects() -> Vec<(&'static str, &'static str, Value)> {
    let namespace =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let rbac = "rbac.authorization.k8s.io";
    vec![
        ("", "namespaces", namespace("default")),
        ("", "namespaces", namespace("kube-system")),
        ("", "namespaces", namespace("kube-public")),
        ("", "namespaces", namespace("kube-node-lease")),
        (
            "storage.k8s.io",
            "storageclasses",
            crate::storage_admission::local_path_class(),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "cluster-admin",
                vec![
                    rule(&["*"], &["*"], &["*"]),
                    json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
                ],
            ),
        ),
        // As upstream: admin, edit and view are aggregated (the ClusterRole
        // aggregation controller fills their rules) from the system:aggregate-to-*
        // roles, and view's rules flow into edit, edit's into admin.
        (
            rbac,
            "clusterroles",
            aggregated_role("admin", "admin", None),
        ),
        (
            rbac,
            "clusterroles",
            aggregated_role("edit", "edit", Some("admin")),
        ),
        (
            rbac,
            "clusterroles",
            aggregated_role("view", "view", Some("edit")),
        ),
        (
            rbac,
            "clusterroles",
            aggregating_role("admin", admin_rules()),
        ),
        (rbac, "clusterroles", aggregating_role("edit", edit_rules())),
        (rbac, "clusterroles", aggregating_role("view", view_rules())),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:discovery",
                vec![
                    json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:basic-user",
                vec![
                    rule(
                        &["authorization.k8s.io"],
                        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                        &["create"],
                    ),
                    rule(
                        &["authentication.k8s.io"],
                        &["selfsubjectreviews"],
                        &["create"],
                    ),
                ],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:public-info-viewer",
                vec![
                    json!({"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}),
                ],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:service-account-issuer-discovery",
                vec![
                    json!({"nonResourceURLs": ["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"], "verbs": ["get"]}),
                ],
            ),
        ),
        // Node joining, as upstream's bootstrap policy and kubeadm's bindings: bootstrap
        // tokens may create CSRs and have their node client CSRs approved; nodes may
        // have their renewals approved.
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:node-bootstrapper",
                vec![rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &["create", "get", "list", "watch"],
                )],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                vec![rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests/nodeclient"],
                    &["create"],
                )],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role(
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                vec![rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests/selfnodeclient"],
                    &["create"],
                )],
            ),
        ),
        (
            rbac,
            "clusterroles",
            cluster_role("krust:node-agent", node_agent_rules()),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "krust:kubelet-bootstrap",
                "system:node-bootstrapper",
                &["system:bootstrappers"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "krust:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                &["system:bootstrappers"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "krust:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                &["system:nodes"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding("krust:node-agent", "krust:node-agent", &["system:nodes"]),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding("cluster-admin", "cluster-admin", &["system:masters"]),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "system:discovery",
                "system:discovery",
                &["system:authenticated"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "system:basic-user",
                "system:basic-user",
                &["system:authenticated"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "system:public-info-viewer",
                "system:public-info-viewer",
                &["system:authenticated", "system:unauthenticated"],
            ),
        ),
        (
            rbac,
            "clusterrolebindings",
            cluster_role_binding(
                "system:service-account-issuer-discovery",
                "system:service-account-issuer-discovery",
                &["system:serviceaccounts"],
            ),
        ),
    ]
}

pub(crate) fn system_user() -> User {
    User {
        name: "system:apiserver".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    }
}

/// Creates the built-in objects that do not exist yet.
pub async fn ensure_builtin_objects(api: &Api) -> anyhow::Result<()> {
    for (group, plural, object) in builtin_objects() {
        let resource = resources::builtin()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("built-in resource");
        let call = Call {
            resource,
            namespace: None,
            name: None,
            subresource: None,
            query: Query::default(),
            accept: String::new(),
            content_type: String::new(),
            user: system_user(),
            field_manager: "krust-apiserver".to_string(),
        };
        match api.create_object(&call, object, Tracking::Update).await {
            Ok(_) => {}
            Err(error) if error.code == 409 => {}
            Err(error) => anyhow::bail!("creating the built-in {plural}: {}", error.message),
        }
    }
    Ok(())
}

/// Compacts the store's history every interval, to the revision it had one
/// interval before, so watchers and paged lists have that long to catch up.
pub async fn compact_periodically(store: Arc<dyn Store>) {
    let mut previous = None;
    let mut ticker = tokio::time::interval(COMPACTION_INTERVAL);
    loop {
        ticker.tick().await;
        if let Some(revision) = previous
            && let Err(error) = store.compact(revision).await
        {
            tracing::warn!(%error, revision, "compaction failed");
        }
        previous = store.current_revision().await.ok();
    }
}

/// Answers a create of a review resource (or a core/v1 Binding).
pub async fn review(api: &Api, call: &Call, body: &[u8]) -> ApiResult<Response<Body>> {
    if call.resource.plural == "bindings" {
        return api.bind(call, body).await;
    }
    let mut review = request::decode_body(body, &request::media_type(Some(&call.content_type)))?;
    let user = match call.resource.kind {
        "SelfSubjectAccessReview" | "SelfSubjectRulesReview" | "SelfSubjectReview" => {
            call.user.clone()
        }
        _ => User {
            name: review["spec"]["user"].as_str().unwrap_or("").to_string(),
            uid: review["spec"]["uid"].as_str().unwrap_or("").to_string(),
            groups: review["spec"]["groups"]
                .as_array()
                .map(|g| {
                    g.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        },
    };
    let status = match call.resource.kind {
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => {
            let spec = &review["spec"];
            let attributes = if let Some(resource) =
                spec.get("resourceAttributes").filter(|v| v.is_object())
            {
                let namespace = match (&call.namespace, resource["namespace"].as_str()) {
                    (Some(url_ns), Some(ns)) if ns != url_ns && !ns.is_empty() => {
                        return Err(ApiError::bad_request(format!(
                            "spec.resourceAttributes.namespace must match namespace: {url_ns}"
                        )));
                    }
                    (Some(url_ns), _) => url_ns.clone(),
                    (None, ns) => ns.unwrap_or("").to_string(),
                };
                let field = |name: &str| resource[name].as_str().unwrap_or("").to_string();
                Attributes {
                    verb: field("verb"),
                    group: field("group"),
                    resource: field("resource"),
                    subresource: field("subresource"),
                    namespace,
                    name: field("name"),
                    path: None,
                }
            } else if let Some(non_resource) =
                spec.get("nonResourceAttributes").filter(|v| v.is_object())
            {
                Attributes {
                    verb: non_resource["verb"].as_str().unwrap_or("").to_string(),
                    path: Some(non_resource["path"].as_str().unwrap_or("").to_string()),
                    ..Default::default()
                }
            } else {
                return Err(ApiError::invalid(
                    call.resource.group,
                    call.resource.kind,
                    "",
                    vec![krust_api::Cause::new(
                        "FieldValueRequired",
                        "spec.resourceAttributes",
                        "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            };
            let allowed = auth::authorize(&api.cache, &user, &attributes);
            let mut status = json!({"allowed": allowed});
            if allowed {
                status["reason"] = json!("allowed by RBAC");
            }
            status
        }
        "SelfSubjectRulesReview" => {
            let namespace = review["spec"]["namespace"].as_str().unwrap_or("");
            let rules = auth::rules_for(&api.cache, &user, namespace);
            let masters = user.groups.iter().any(|g| g == "system:masters");
            let (resource_rules, non_resource_rules): (Vec<Value>, Vec<Value>) = if masters {
                (
                    vec![rule(&["*"], &["*"], &["*"])],
                    vec![json!({"verbs": ["*"], "nonResourceURLs": ["*"]})],
                )
            } else {
                rules
                    .into_iter()
                    .partition(|r| r.get("nonResourceURLs").is_none())
            };
            json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false})
        }
        "SelfSubjectReview" => {
            json!({"userInfo": {"username": user.name, "uid": user.uid, "groups": user.groups}})
        }
        "TokenReview" => {
            let token = review["spec"]["token"].as_str().unwrap_or("");
            match auth::authenticate_bearer(
                &api.tokens,
                &api.cache,
                Some(&format!("Bearer {token}")),
            ) {
                Ok(Some(found)) => {
                    json!({"authenticated": true, "user": {"username": found.name, "uid": found.uid, "groups": found.groups}})
                }
                _ => json!({"authenticated": false, "error": "invalid bearer token"}),
            }
        }
        other => {
            return Err(ApiError::method_not_allowed(format!(
                "{other} can not be created"
            )));
        }
    };
    review["status"] = status;
    if review["apiVersion"].is_null() {
        review["apiVersion"] = json!(call.resource.api_version());
        review["kind"] = json!(call.resource.kind);
    }
    Ok(json_response(201, &review))
}
