//! The Kubernetes object model as krust serves it.
//!
//! Objects travel through krust as JSON ([`serde_json::Value`]): one generic pipeline
//! handles every resource, and the typed k8s-openapi structs are used where types
//! matter (decoding and canonicalising a request body, see [`resources`]).
//!
//! - [`resources`]: the table of built-in resources (group, version, kind, plural,
//!   scope, short names, subresources) that drives routing and discovery.
//! - [`selector`]: label and field selectors.
//! - [`patch`]: JSON patch, merge patch and strategic merge patch.
//! - [`apply`]: server-side apply and `metadata.managedFields` (field ownership).
//! - [`validation`]: names, labels and object metadata, reported as field causes.
//! - [`defaults`]: the fields kube-apiserver fills in on create and update.
//! - [`cidr`]: IPv4 address ranges and port ranges (Service and node IPAM).
//! - [`volume`]: whether a PersistentVolume can serve a claim; storage quantities.
//! - [`pod_references`]: the Secrets, ConfigMaps and claims a pod uses by name.
//! - [`table`]: server-side printing (`as=Table`) with upstream's columns.
//!
//! A newcomer starts at [`resources::ResourceInfo`].

pub mod apply;
pub mod cidr;
pub mod convert;
pub mod defaults;
pub mod patch;
pub mod pod_references;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod table;
pub mod validation;
pub mod volume;

/// API groups served by kube-apiserver itself; any other group belongs to custom
/// resources (their printing and selector errors are worded differently).
pub const BUILT_IN_GROUPS: &[&str] = &[
    "",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "apiregistration.k8s.io",
    "apps",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "events.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "internal.apiserver.k8s.io",
    "networking.k8s.io",
    "node.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "resource.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
    "storagemigration.k8s.io",
];

/// One reason an object is invalid, as reported in a Status's `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cause {
    /// Upstream's cause type, e.g. `FieldValueInvalid`, `FieldValueRequired`,
    /// `FieldValueNotSupported`, `FieldValueDuplicate`, `FieldValueForbidden`,
    /// `FieldValueTooLong`.
    pub reason: String,
    /// Human readable, as upstream words it, e.g.
    /// `Invalid value: "Foo": a lowercase RFC 1123 subdomain must consist of ...`.
    pub message: String,
    /// The field path, e.g. `metadata.name` or `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }
}
