//! The table of built-in resources: everything routing, discovery and storage need
//! to know about a kind, in one row per resource and version.
//!
//! Rows are built from the k8s-openapi types (group, version, kind, plural and scope
//! come from [`k8s_openapi::Resource`]), so the table can not drift from the types,
//! and each row carries a typed decoder: a request body is decoded into the typed
//! struct and encoded back, which checks field types, canonicalises the object and
//! reveals unknown fields (see [`unknown_fields`]).

use std::any::TypeId;
use std::sync::OnceLock;

use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates,
    coordination, core, discovery, events, flowcontrol, networking, node, policy, rbac, scheduling,
    storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::validation::NameRule;

/// Decodes a JSON object into its typed form and encodes it back.
pub type Decoder = fn(Value) -> Result<Value, serde_json::Error>;

/// What krust knows about one resource in one version.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group, "" for core.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural, the URL path segment (`pods`).
    pub plural: &'static str,
    /// Lower-case singular (`pod`).
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Subresources served under `<plural>/<name>/<subresource>`.
    pub subresources: &'static [&'static str],
    /// Which rule object names follow.
    pub name_rule: NameRule,
    /// Only `create` is served and nothing is stored (reviews, bindings).
    pub create_only: bool,
    /// The typed decoder of this kind.
    pub decode: Decoder,
}

impl ResourceInfo {
    /// `group/version`, or just `version` for core.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of the list type (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Whether the resource has a status subresource (status is then ignored on
    /// writes to the main resource, and spec on writes to status).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            &["create"]
        } else if self.plural == "componentstatuses" || self.group == METRICS_GROUP {
            &["get", "list"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }

    /// The store key prefix of this resource, shared by all its versions
    /// (`/registry/pods/` for core, `/registry/apps/deployments/` otherwise).
    pub fn key_prefix(&self) -> String {
        // events.k8s.io Events are the core Events, seen in another version.
        if self.group.is_empty() || (self.group == "events.k8s.io" && self.plural == "events") {
            format!("/registry/{}/", self.plural)
        } else {
            format!("/registry/{}/{}/", self.group, self.plural)
        }
    }
}

fn roundtrip<T: Serialize + DeserializeOwned>(value: Value) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(value)?)
}

/// Optional facts of a row that the types do not carry.
#[derive(Default, Clone, Copy)]
struct Extra {
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
    name_rule: Option<NameRule>,
    create_only: bool,
}

fn row<T>(extra: Extra) -> ResourceInfo
where
    T: k8s_openapi::Resource + Serialize + DeserializeOwned + 'static,
    T::Scope: 'static,
{
    ResourceInfo {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        plural: T::URL_PATH_SEGMENT,
        singular: singular_of(T::KIND),
        namespaced: TypeId::of::<T::Scope>() == TypeId::of::<k8s_openapi::NamespaceResourceScope>(),
        short_names: extra.short_names,
        categories: extra.categories,
        subresources: extra.subresources,
        name_rule: extra.name_rule.unwrap_or(NameRule::Subdomain),
        create_only: extra.create_only,
        decode: roundtrip::<T>,
    }
}

fn singular_of(kind: &str) -> &'static str {
    Box::leak(kind.to_ascii_lowercase().into_boxed_str())
}

const ALL: &[&str] = &["all"];
const STATUS: &[&str] = &["status"];
const SCALE_STATUS: &[&str] = &["scale", "status"];

fn extra(short_names: &'static [&'static str]) -> Extra {
    Extra {
        short_names,
        ..Extra::default()
    }
}

/// The group of resource metrics (NodeMetrics, PodMetrics): computed from the node
/// agents on request, never stored; only get and list are served.
pub const METRICS_GROUP: &str = "metrics.k8s.io";

/// A metrics.k8s.io/v1beta1 row (no typed form in k8s-openapi: served as JSON only).
fn metrics_row(kind: &'static str, plural: &'static str, namespaced: bool) -> ResourceInfo {
    ResourceInfo {
        group: METRICS_GROUP,
        version: "v1beta1",
        kind,
        plural,
        singular: "",
        namespaced,
        short_names: &[],
        categories: &[],
        subresources: &[],
        name_rule: NameRule::Subdomain,
        create_only: false,
        decode: Ok,
    }
}

fn build_table() -> Vec<ResourceInfo> {
    use NameRule::*;
    let status = |short_names| Extra {
        short_names,
        subresources: STATUS,
        ..Extra::default()
    };
    let workload = |short_names, subresources| Extra {
        short_names,
        categories: ALL,
        subresources,
        ..Extra::default()
    };
    let path_segment = Extra {
        name_rule: Some(PathSegment),
        ..Extra::default()
    };
    let review = Extra {
        create_only: true,
        ..Extra::default()
    };
    vec![
        // core/v1
        row::<core::v1::Binding>(review),
        row::<core::v1::ComponentStatus>(extra(&["cs"])),
        row::<core::v1::ConfigMap>(extra(&["cm"])),
        row::<core::v1::Endpoints>(extra(&["ep"])),
        row::<core::v1::Event>(extra(&["ev"])),
        row::<core::v1::LimitRange>(extra(&["limits"])),
        row::<core::v1::Namespace>(Extra {
            short_names: &["ns"],
            subresources: &["finalize", "status"],
            name_rule: Some(Label),
            ..Extra::default()
        }),
        row::<core::v1::Node>(Extra {
            short_names: &["no"],
            subresources: &["proxy", "status"],
            ..Extra::default()
        }),
        row::<core::v1::PersistentVolumeClaim>(status(&["pvc"])),
        row::<core::v1::PersistentVolume>(status(&["pv"])),
        row::<core::v1::Pod>(workload(
            &["po"],
            &[
                "attach",
                "binding",
                "ephemeralcontainers",
                "eviction",
                "exec",
                "log",
                "portforward",
                "proxy",
                "resize",
                "status",
            ],
        )),
        row::<core::v1::PodTemplate>(Extra::default()),
        row::<core::v1::ReplicationController>(workload(&["rc"], SCALE_STATUS)),
        row::<core::v1::ResourceQuota>(status(&["quota"])),
        row::<core::v1::Secret>(Extra::default()),
        row::<core::v1::ServiceAccount>(Extra {
            short_names: &["sa"],
            subresources: &["token"],
            ..Extra::default()
        }),
        row::<core::v1::Service>(Extra {
            short_names: &["svc"],
            categories: ALL,
            subresources: &["proxy", "status"],
            name_rule: Some(Label),
            ..Extra::default()
        }),
        // apps/v1
        row::<apps::v1::ControllerRevision>(Extra::default()),
        row::<apps::v1::DaemonSet>(workload(&["ds"], STATUS)),
        row::<apps::v1::Deployment>(workload(&["deploy"], SCALE_STATUS)),
        row::<apps::v1::ReplicaSet>(workload(&["rs"], SCALE_STATUS)),
        row::<apps::v1::StatefulSet>(workload(&["sts"], SCALE_STATUS)),
        // autoscaling
        row::<autoscaling::v2::HorizontalPodAutoscaler>(workload(&["hpa"], STATUS)),
        row::<autoscaling::v1::HorizontalPodAutoscaler>(workload(&["hpa"], STATUS)),
        // batch/v1
        row::<batch::v1::CronJob>(workload(&["cj"], STATUS)),
        row::<batch::v1::Job>(workload(&[], STATUS)),
        // authentication, authorization: reviews are answered, not stored
        row::<authentication::v1::SelfSubjectReview>(review),
        row::<authentication::v1::TokenReview>(review),
        row::<authorization::v1::LocalSubjectAccessReview>(review),
        row::<authorization::v1::SelfSubjectAccessReview>(review),
        row::<authorization::v1::SelfSubjectRulesReview>(review),
        row::<authorization::v1::SubjectAccessReview>(review),
        // certificates.k8s.io/v1
        row::<certificates::v1::CertificateSigningRequest>(Extra {
            short_names: &["csr"],
            subresources: &["approval", "status"],
            ..Extra::default()
        }),
        // coordination.k8s.io/v1
        row::<coordination::v1::Lease>(Extra::default()),
        // discovery.k8s.io/v1
        row::<discovery::v1::EndpointSlice>(Extra::default()),
        // events.k8s.io/v1
        row::<events::v1::Event>(extra(&["ev"])),
        // networking.k8s.io/v1
        row::<networking::v1::IngressClass>(Extra::default()),
        row::<networking::v1::Ingress>(status(&["ing"])),
        row::<networking::v1::IPAddress>(extra(&["ip"])),
        row::<networking::v1::NetworkPolicy>(extra(&["netpol"])),
        row::<networking::v1::ServiceCIDR>(status(&[])),
        // node.k8s.io/v1
        row::<node::v1::RuntimeClass>(Extra::default()),
        // policy/v1
        row::<policy::v1::PodDisruptionBudget>(status(&["pdb"])),
        // rbac.authorization.k8s.io/v1
        row::<rbac::v1::ClusterRoleBinding>(path_segment),
        row::<rbac::v1::ClusterRole>(path_segment),
        row::<rbac::v1::RoleBinding>(path_segment),
        row::<rbac::v1::Role>(path_segment),
        // scheduling.k8s.io/v1
        row::<scheduling::v1::PriorityClass>(extra(&["pc"])),
        // storage.k8s.io/v1
        row::<storage::v1::CSIDriver>(Extra::default()),
        row::<storage::v1::CSINode>(Extra::default()),
        row::<storage::v1::CSIStorageCapacity>(Extra::default()),
        row::<storage::v1::StorageClass>(extra(&["sc"])),
        row::<storage::v1::VolumeAttachment>(status(&[])),
        // admissionregistration.k8s.io/v1
        row::<admissionregistration::v1::MutatingWebhookConfiguration>(Extra::default()),
        row::<admissionregistration::v1::ValidatingAdmissionPolicy>(status(&[])),
        row::<admissionregistration::v1::ValidatingAdmissionPolicyBinding>(Extra::default()),
        row::<admissionregistration::v1::ValidatingWebhookConfiguration>(Extra::default()),
        // apiextensions.k8s.io/v1
        row::<apiextensions::v1::CustomResourceDefinition>(status(&["crd", "crds"])),
        // flowcontrol.apiserver.k8s.io/v1
        row::<flowcontrol::v1::FlowSchema>(status(&[])),
        row::<flowcontrol::v1::PriorityLevelConfiguration>(status(&[])),
        // metrics.k8s.io/v1beta1
        metrics_row("NodeMetrics", "nodes", false),
        metrics_row("PodMetrics", "pods", true),
    ]
}

/// Every built-in resource, grouped by group version in the order discovery lists them.
pub fn builtin() -> &'static [ResourceInfo] {
    static TABLE: OnceLock<Vec<ResourceInfo>> = OnceLock::new();
    TABLE.get_or_init(build_table)
}

/// The group versions served, preferred version first within a group, core first.
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in builtin() {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => groups.push((r.group, vec![r.version])),
        }
    }
    groups
}

/// The row for a plural resource name in a group version.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
    builtin()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The row for a kind in a group version.
pub fn find_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    builtin()
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits an `apiVersion` into group and version.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Paths (`spec.foo`, `spec.containers[0].bar`) of fields present in `input` that
/// the typed round-trip dropped: fields the schema does not know. Null values do
/// not count (they mean "unset").
pub fn unknown_fields(input: &Value, decoded: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_unknown(input, decoded, String::new(), &mut found);
    found
}

fn collect_unknown(input: &Value, decoded: &Value, path: String, found: &mut Vec<String>) {
    match (input, decoded) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match b.get(key) {
                    Some(decoded_value) => collect_unknown(value, decoded_value, child, found),
                    None if value.is_null() => {}
                    None => found.push(child),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                collect_unknown(x, y, format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_knows_core_and_groups() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.kind, "Pod");
        assert!(pods.namespaced);
        assert_eq!(pods.key_prefix(), "/registry/pods/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert!(!nodes.namespaced);
        let deploy = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.key_prefix(), "/registry/apps/deployments/");
        assert!(deploy.has_status());
        assert!(find("", "v1", "nosuch").is_none());
        let groups = group_versions();
        assert_eq!(groups[0], ("", vec!["v1"]));
        let autoscaling = groups.iter().find(|(g, _)| *g == "autoscaling").unwrap();
        assert_eq!(autoscaling.1, vec!["v2", "v1"]);
    }

    #[test]
    fn decode_reports_unknown_fields_and_bad_types() {
        let cm = find("", "v1", "configmaps").unwrap();
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "bogus": 1, "labels": null}, "data": {"k": "v"}, "extra": true});
        let decoded = (cm.decode)(input.clone()).unwrap();
        assert_eq!(decoded["data"]["k"], "v");
        assert_eq!(
            unknown_fields(&input, &decoded),
            vec!["metadata.bogus", "extra"]
        );
        let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 5}});
        assert!((cm.decode)(bad).is_err());
    }
}
