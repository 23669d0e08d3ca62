//! The OpenAPI documents: `/openapi/v3` (an index), `/openapi/v3/<path>` (one
//! OpenAPI 3.0 document per group version) and `/openapi/v2` (one Swagger 2.0
//! document for everything, as JSON or as the gnostic protobuf message that
//! kubectl and client-go ask for).
//!
//! They are built from the resource table ([`resources::builtin`]) and the schemars
//! schemas of the k8s-openapi types behind its rows, so they can not drift from
//! what the server decodes. What clients read from them:
//!
//! - kubectl's field-validation check looks, in the v3 document of the object's group
//!   version, for a PATCH operation whose `x-kubernetes-group-version-kind` is the
//!   object's kind, and for a `fieldValidation` query parameter on that operation;
//!   when it finds one it leaves validation to the server.
//! - `kubectl explain` takes the kind from the operations of the resource's
//!   collection and item paths, then the schema in `components.schemas` whose
//!   `x-kubernetes-group-version-kind` lists it, following `$ref` and `allOf`.
//! - kubectl reads `/openapi/v2` (protobuf only) when the v3 documents do not
//!   answer: for client-side validation, and for `kubectl explain --output
//!   plaintext-openapiv2`.
//! - strategic-merge-patch clients (`kubectl apply`, from the v3 document) read
//!   `x-kubernetes-patch-merge-key` and `x-kubernetes-patch-strategy`; server-side
//!   apply tools read `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and
//!   `x-kubernetes-map-type`. k8s-openapi drops these extensions, so they come back
//!   from [`FIELD_EXTENSIONS`], a table of upstream's values for v1.33.
//!
//! Nothing is built at start: each document is built on first request and kept as
//! encoded bytes. The index carries a content hash per document, so asking for it
//! builds every v3 document once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::OnceLock;

use bytes::Bytes;
use k8s_openapi::api::{
    admissionregistration, apps, authentication, authorization, autoscaling, batch, certificates,
    coordination, core, discovery, events, flowcontrol, networking, node, policy, rbac, scheduling,
    storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use krust_api::resources::{self, ResourceInfo};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// The version the documents' `info` reports, as `/version` does.
const SERVER_VERSION: &str = concat!("v1.33.0+krust-", env!("CARGO_PKG_VERSION"));

// ---------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------

/// The `/openapi/v3` index: every document path with its server-relative URL, which
/// carries the document's content hash (clients cache by URL).
pub fn v3_index() -> Value {
    let paths: Map<String, Value> = v3_entries()
        .iter()
        .map(|entry| {
            let built = entry.get();
            let url = format!("/openapi/v3/{}?hash={}", entry.path, built.hash);
            (entry.path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

/// The v3 document at `/openapi/v3/<path>` (`api/v1`, `apis/apps/v1`, `apis/apps`,
/// `api`, `apis`), or `None` for a path the index does not list.
pub fn v3_document(path: &str) -> Option<Bytes> {
    let path = path.trim_matches('/');
    v3_entries()
        .iter()
        .find(|entry| entry.path == path)
        .map(|entry| entry.get().bytes.clone())
}

/// The content hash of a v3 document (upper-case hex SHA-512, as upstream), the
/// value of `hash` in its index URL.
pub fn v3_hash(path: &str) -> Option<String> {
    let path = path.trim_matches('/');
    v3_entries()
        .iter()
        .find(|entry| entry.path == path)
        .map(|entry| entry.get().hash.clone())
}

/// The Swagger 2.0 document at `/openapi/v2`: every path and every definition.
pub fn v2_document() -> Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT.get_or_init(build_v2).clone()
}

/// The `Accept` type under which clients (kubectl, client-go) ask `/openapi/v2`
/// for [`v2_document_protobuf`].
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The `Content-Type` upstream answers [`v2_document_protobuf`] with.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Whether an `Accept` header asks `/openapi/v2` for [`v2_document_protobuf`]
/// (else the JSON [`v2_document`] is the answer).
pub fn v2_wants_protobuf(accept: &str) -> bool {
    accept.contains("com.github.proto-openapi.spec.v2")
}

/// The Swagger 2.0 document as the protobuf message (gnostic's
/// `openapi.v2.Document`) that clients ask for with [`V2_PROTOBUF_ACCEPT`]; kubectl
/// reads `/openapi/v2` only in this form.
pub fn v2_document_protobuf() -> Bytes {
    static DOCUMENT: OnceLock<Bytes> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| Bytes::from(swagger_proto::document(&build_v2_value()).into_bytes()))
        .clone()
}

// ---------------------------------------------------------------------------------
// Caching
// ---------------------------------------------------------------------------------

/// An encoded document and its hash.
struct Built {
    hash: String,
    bytes: Bytes,
}

/// One v3 document, built on first use.
struct V3Entry {
    path: String,
    built: OnceLock<Built>,
}

impl V3Entry {
    fn get(&self) -> &Built {
        self.built.get_or_init(|| {
            let bytes = Bytes::from(
                serde_json::to_vec(&build_v3(&self.path)).expect("a JSON value encodes"),
            );
            Built {
                hash: content_hash(&bytes),
                bytes,
            }
        })
    }
}

/// The v3 document paths, in index order: `api`, `api/v1`, `apis`, then per group
/// `apis/<group>` and its versions.
fn v3_entries() -> &'static [V3Entry] {
    static ENTRIES: OnceLock<Vec<V3Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let mut paths = vec!["api".to_string()];
        let groups = resources::group_versions();
        for (group, versions) in &groups {
            if group.is_empty() {
                paths.extend(versions.iter().map(|v| format!("api/{v}")));
            }
        }
        paths.push("apis".to_string());
        for (group, versions) in &groups {
            if !group.is_empty() {
                paths.push(format!("apis/{group}"));
                paths.extend(versions.iter().map(|v| format!("apis/{group}/{v}")));
            }
        }
        paths
            .into_iter()
            .map(|path| V3Entry {
                path,
                built: OnceLock::new(),
            })
            .collect()
    })
}

fn content_hash(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA512, bytes);
    let mut hex = String::with_capacity(128);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02X}");
    }
    hex
}

// ---------------------------------------------------------------------------------
// Kinds and their schemas
// ---------------------------------------------------------------------------------

/// A kind whose schema comes from a k8s-openapi type.
struct TypedKind {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    schema_name: fn() -> Cow<'static, str>,
    /// Adds the type's schema (and every schema it uses) to a generator and returns
    /// a `$ref` to it.
    register: fn(&mut SchemaGenerator) -> schemars::Schema,
}

fn register_type<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

impl TypedKind {
    fn of<T: k8s_openapi::Resource + JsonSchema>() -> Self {
        TypedKind {
            group: T::GROUP,
            version: T::VERSION,
            kind: T::KIND,
            schema_name: T::schema_name,
            register: register_type::<T>,
        }
    }
}

/// Declares [`typed_kinds`] over a list of k8s-openapi types.
macro_rules! typed_kinds {
    ($($ty:ty),* $(,)?) => {
        /// Every kind the documents can describe: the types of the resource table
        /// (see `krust_api::resources`) and the kinds of subresources.
        fn typed_kinds() -> &'static [TypedKind] {
            static KINDS: OnceLock<Vec<TypedKind>> = OnceLock::new();
            KINDS.get_or_init(|| vec![$(TypedKind::of::<$ty>()),*])
        }
    };
}

typed_kinds!(
    // core/v1
    core::v1::Binding,
    core::v1::ComponentStatus,
    core::v1::ConfigMap,
    core::v1::Endpoints,
    core::v1::Event,
    core::v1::LimitRange,
    core::v1::Namespace,
    core::v1::Node,
    core::v1::PersistentVolumeClaim,
    core::v1::PersistentVolume,
    core::v1::Pod,
    core::v1::PodTemplate,
    core::v1::ReplicationController,
    core::v1::ResourceQuota,
    core::v1::Secret,
    core::v1::ServiceAccount,
    core::v1::Service,
    // apps/v1
    apps::v1::ControllerRevision,
    apps::v1::DaemonSet,
    apps::v1::Deployment,
    apps::v1::ReplicaSet,
    apps::v1::StatefulSet,
    // autoscaling
    autoscaling::v2::HorizontalPodAutoscaler,
    autoscaling::v1::HorizontalPodAutoscaler,
    // batch/v1
    batch::v1::CronJob,
    batch::v1::Job,
    // authentication, authorization
    authentication::v1::SelfSubjectReview,
    authentication::v1::TokenReview,
    authorization::v1::LocalSubjectAccessReview,
    authorization::v1::SelfSubjectAccessReview,
    authorization::v1::SelfSubjectRulesReview,
    authorization::v1::SubjectAccessReview,
    certificates::v1::CertificateSigningRequest,
    coordination::v1::Lease,
    discovery::v1::EndpointSlice,
    events::v1::Event,
    networking::v1::IngressClass,
    networking::v1::Ingress,
    networking::v1::IPAddress,
    networking::v1::NetworkPolicy,
    networking::v1::ServiceCIDR,
    node::v1::RuntimeClass,
    policy::v1::PodDisruptionBudget,
    rbac::v1::ClusterRoleBinding,
    rbac::v1::ClusterRole,
    rbac::v1::RoleBinding,
    rbac::v1::Role,
    scheduling::v1::PriorityClass,
    storage::v1::CSIDriver,
    storage::v1::CSINode,
    storage::v1::CSIStorageCapacity,
    storage::v1::StorageClass,
    storage::v1::VolumeAttachment,
    admissionregistration::v1::MutatingWebhookConfiguration,
    admissionregistration::v1::ValidatingAdmissionPolicy,
    admissionregistration::v1::ValidatingAdmissionPolicyBinding,
    admissionregistration::v1::ValidatingWebhookConfiguration,
    apiextensions::v1::CustomResourceDefinition,
    flowcontrol::v1::FlowSchema,
    flowcontrol::v1::PriorityLevelConfiguration,
    // kinds of subresources
    autoscaling::v1::Scale,
    policy::v1::Eviction,
    authentication::v1::TokenRequest,
);

fn typed_kind(group: &str, version: &str, kind: &str) -> Option<&'static TypedKind> {
    typed_kinds()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
}

/// A group, version and kind, as the `x-kubernetes-group-version-kind` extension
/// writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Gvk {
    group: String,
    version: String,
    kind: String,
}

impl Gvk {
    fn new(group: &str, version: &str, kind: &str) -> Self {
        Gvk {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
        }
    }

    fn to_json(&self) -> Value {
        json!({"group": self.group, "kind": self.kind, "version": self.version})
    }
}

// ---------------------------------------------------------------------------------
// Paths, operations and parameters
// ---------------------------------------------------------------------------------

/// Which document is being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// Swagger 2.0 (`/openapi/v2`): `#/definitions/...`.
    Swagger2,
    /// OpenAPI 3.0 (`/openapi/v3/...`): `#/components/schemas/...`.
    OpenApi3,
}

impl Flavor {
    fn definitions_pointer(self) -> &'static str {
        match self {
            Flavor::Swagger2 => "/definitions",
            Flavor::OpenApi3 => "/components/schemas",
        }
    }
}

/// A path or query parameter.
#[derive(Clone, Debug)]
struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    description: Cow<'static, str>,
    required: bool,
}

/// The query parameters krust understands, with their types and descriptions.
const QUERY_PARAMS: &[(&str, &str, &str)] = &[
    (
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    ),
    (
        "dryRun",
        "string",
        "When present, the request is processed but nothing is persisted. The only valid value is All: every dry run stage is processed.",
    ),
    (
        "fieldManager",
        "string",
        "The name of the actor making these changes, recorded in managedFields. At most 128 printable characters. Required for apply patches (application/apply-patch+yaml), optional otherwise.",
    ),
    (
        "fieldValidation",
        "string",
        "How the server treats unknown and duplicate fields in the request object. Ignore: drops them silently. Warn: drops them and answers with a warning for each. Strict: fails the request.",
    ),
    (
        "force",
        "boolean",
        "Force an apply patch: take over the fields that other managers own. Must be unset for other patch types.",
    ),
    (
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted; a non-negative integer, zero meaning now. Unset means the default of the kind.",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy. Whether the dependents of the object are orphaned.",
    ),
    (
        "propagationPolicy",
        "string",
        "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
    ),
    (
        "allowWatchBookmarks",
        "boolean",
        "Ask for BOOKMARK watch events. The server sends them at its discretion; ignored unless watching.",
    ),
    (
        "continue",
        "string",
        "The continue token of a previous list answer, to fetch the next chunk of the same list.",
    ),
    (
        "fieldSelector",
        "string",
        "Restrict the returned objects by their fields. Defaults to everything.",
    ),
    (
        "labelSelector",
        "string",
        "Restrict the returned objects by their labels. Defaults to everything.",
    ),
    (
        "limit",
        "integer",
        "The most objects a list answer holds; when more exist, the answer's metadata carries a continue token.",
    ),
    (
        "resourceVersion",
        "string",
        "Constrains which resource versions the request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion applies to list calls: Exact or NotOlderThan.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "With watch=true: start the watch with synthetic ADDED events for the current objects, then a bookmark.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "Timeout of the list or watch call, whatever the activity.",
    ),
    (
        "watch",
        "boolean",
        "Watch for changes to the described resources and return them as a stream of add, update and remove notifications. Specify resourceVersion.",
    ),
    (
        "container",
        "string",
        "The container to address. Defaults to the only container if there is one.",
    ),
    ("follow", "boolean", "Follow the log stream of the pod."),
    (
        "insecureSkipTLSVerifyBackend",
        "boolean",
        "Do not verify the serving certificate of the kubelet the log is read from.",
    ),
    ("limitBytes", "integer", "The most bytes of log to return."),
    (
        "previous",
        "boolean",
        "Return the log of the previous, terminated container.",
    ),
    (
        "sinceSeconds",
        "integer",
        "Only return log lines newer than this many seconds.",
    ),
    (
        "stream",
        "string",
        "Which log stream to return: All, Stdout or Stderr. Defaults to All.",
    ),
    (
        "tailLines",
        "integer",
        "Only return this many lines from the end of the log.",
    ),
    (
        "timestamps",
        "boolean",
        "Prefix every log line with its RFC3339 timestamp.",
    ),
    (
        "command",
        "string",
        "The command to execute, one argument per parameter.",
    ),
    (
        "stdin",
        "boolean",
        "Redirect the standard input stream of the container.",
    ),
    (
        "stdout",
        "boolean",
        "Redirect the standard output stream of the container.",
    ),
    (
        "stderr",
        "boolean",
        "Redirect the standard error stream of the container.",
    ),
    ("tty", "boolean", "Allocate a terminal for the session."),
    ("ports", "integer", "The ports to forward."),
    ("path", "string", "The path of the request to proxy."),
];

fn query(name: &'static str) -> Param {
    let (_, ty, description) = QUERY_PARAMS
        .iter()
        .find(|(n, _, _)| *n == name)
        .unwrap_or_else(|| panic!("query parameter {name} is not in QUERY_PARAMS"));
    Param {
        name,
        location: "query",
        ty,
        description: Cow::Borrowed(description),
        required: false,
    }
}

fn queries(names: &[&'static str]) -> Vec<Param> {
    names.iter().map(|name| query(name)).collect()
}

fn path_param(name: &'static str, description: impl Into<Cow<'static, str>>) -> Param {
    Param {
        name,
        location: "path",
        ty: "string",
        description: description.into(),
        required: true,
    }
}

const LIST_PARAMS: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_PARAMS: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION_PARAMS: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
const LOG_PARAMS: &[&str] = &[
    "container",
    "follow",
    "insecureSkipTLSVerifyBackend",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "stream",
    "tailLines",
    "timestamps",
];

const OBJECT_TYPES: &[&str] = &["application/json", "application/yaml"];
const LIST_TYPES: &[&str] = &[
    "application/json",
    "application/json;stream=watch",
    "application/yaml",
];
const WATCH_TYPES: &[&str] = &["application/json", "application/json;stream=watch"];
const ANY_TYPE: &[&str] = &["*/*"];
const TEXT_TYPES: &[&str] = &["text/plain", "application/json", "application/yaml"];
/// The patch types a PATCH accepts, as upstream declares them.
const PATCH_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// A request body.
#[derive(Clone, Debug)]
struct Body {
    schema: Value,
    content_types: &'static [&'static str],
    required: bool,
}

/// One response of an operation.
#[derive(Clone, Debug)]
struct Response {
    code: &'static str,
    description: &'static str,
    schema: Option<Value>,
}

/// One operation (an HTTP method on a path).
#[derive(Clone, Debug)]
struct Operation {
    method: &'static str,
    id: String,
    description: String,
    /// `x-kubernetes-action`; `None` for discovery operations.
    action: Option<&'static str>,
    gvk: Option<Gvk>,
    parameters: Vec<Param>,
    body: Option<Body>,
    responses: Vec<Response>,
    produces: &'static [&'static str],
    tag: String,
}

impl Operation {
    fn new(method: &'static str, id: String, description: String, tag: &str) -> Self {
        Operation {
            method,
            id,
            description,
            action: None,
            gvk: None,
            parameters: Vec::new(),
            body: None,
            responses: Vec::new(),
            produces: OBJECT_TYPES,
            tag: tag.to_string(),
        }
    }

    fn kind(mut self, action: &'static str, gvk: &Gvk) -> Self {
        self.action = Some(action);
        self.gvk = Some(gvk.clone());
        self
    }

    fn params(mut self, names: &[&'static str]) -> Self {
        self.parameters.extend(queries(names));
        self
    }

    fn body(
        mut self,
        schema: &Value,
        content_types: &'static [&'static str],
        required: bool,
    ) -> Self {
        self.body = Some(Body {
            schema: schema.clone(),
            content_types,
            required,
        });
        self
    }

    fn respond(mut self, codes: &[(&'static str, &'static str)], schema: &Value) -> Self {
        for (code, description) in codes {
            self.responses.push(Response {
                code,
                description,
                schema: Some(schema.clone()),
            });
        }
        self
    }

    fn produces(mut self, types: &'static [&'static str]) -> Self {
        self.produces = types;
        self
    }

    fn render(&self, flavor: Flavor) -> Value {
        let mut op = Map::new();
        let mut parameters: Vec<Value> = Vec::new();
        if let (Flavor::Swagger2, Some(body)) = (flavor, &self.body) {
            op.insert("consumes".into(), json!(body.content_types));
            parameters.push(json!({
                "in": "body",
                "name": "body",
                "required": body.required,
                "schema": body.schema,
            }));
        }
        op.insert("description".into(), json!(self.description));
        op.insert("operationId".into(), json!(self.id));
        parameters.extend(self.parameters.iter().map(|p| render_param(p, flavor)));
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if flavor == Flavor::Swagger2 {
            op.insert("produces".into(), json!(self.produces));
        }
        if let (Flavor::OpenApi3, Some(body)) = (flavor, &self.body) {
            let content: Map<String, Value> = body
                .content_types
                .iter()
                .map(|ct| (ct.to_string(), json!({ "schema": body.schema })))
                .collect();
            let mut request = Map::new();
            request.insert("content".into(), Value::Object(content));
            if body.required {
                request.insert("required".into(), json!(true));
            }
            op.insert("requestBody".into(), Value::Object(request));
        }
        let mut responses = Map::new();
        for response in &self.responses {
            let mut rendered = Map::new();
            if let Some(schema) = &response.schema {
                match flavor {
                    Flavor::Swagger2 => {
                        rendered.insert("schema".into(), schema.clone());
                    }
                    Flavor::OpenApi3 => {
                        let content: Map<String, Value> = self
                            .produces
                            .iter()
                            .map(|ct| (ct.to_string(), json!({ "schema": schema })))
                            .collect();
                        rendered.insert("content".into(), Value::Object(content));
                    }
                }
            }
            rendered.insert("description".into(), json!(response.description));
            responses.insert(response.code.to_string(), Value::Object(rendered));
        }
        responses.insert("401".into(), json!({"description": "Unauthorized"}));
        op.insert("responses".into(), Value::Object(responses));
        if flavor == Flavor::Swagger2 {
            op.insert("schemes".into(), json!(["https"]));
        }
        op.insert("tags".into(), json!([self.tag]));
        if let Some(action) = self.action {
            op.insert("x-kubernetes-action".into(), json!(action));
        }
        if let Some(gvk) = &self.gvk {
            op.insert("x-kubernetes-group-version-kind".into(), gvk.to_json());
        }
        Value::Object(op)
    }
}

fn render_param(param: &Param, flavor: Flavor) -> Value {
    let mut p = Map::new();
    if !param.description.is_empty() {
        p.insert("description".into(), json!(param.description));
    }
    p.insert("in".into(), json!(param.location));
    p.insert("name".into(), json!(param.name));
    if param.required {
        p.insert("required".into(), json!(true));
    }
    match flavor {
        Flavor::Swagger2 => {
            p.insert("type".into(), json!(param.ty));
            p.insert("uniqueItems".into(), json!(true));
        }
        Flavor::OpenApi3 => {
            p.insert(
                "schema".into(),
                json!({"type": param.ty, "uniqueItems": true}),
            );
        }
    }
    Value::Object(p)
}

/// The operations on one path, with the parameters they share.
#[derive(Default, Debug)]
struct PathItem {
    parameters: Vec<Param>,
    operations: Vec<Operation>,
}

impl PathItem {
    fn render(&self, flavor: Flavor) -> Value {
        let mut item = Map::new();
        let mut operations: Vec<&Operation> = self.operations.iter().collect();
        operations.sort_by_key(|op| op.method);
        for op in operations {
            item.insert(op.method.to_string(), op.render(flavor));
        }
        if !self.parameters.is_empty() {
            let params = self
                .parameters
                .iter()
                .map(|p| render_param(p, flavor))
                .collect();
            item.insert("parameters".into(), Value::Array(params));
        }
        Value::Object(item)
    }
}

/// `Apps`, `RbacAuthorization`, `Core`: the group as operation ids spell it.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".to_string();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    trimmed.split('.').map(capitalize).collect()
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// `apps_v1`, `rbacAuthorization_v1`, `core_v1`: the tag of a group version.
fn tag_of(group: &str, version: &str) -> String {
    let camel = group_camel(group);
    let mut chars = camel.chars();
    let first = chars
        .next()
        .map(|c| c.to_ascii_lowercase().to_string())
        .unwrap_or_default();
    format!("{first}{}_{version}", chars.as_str())
}

/// `/api/v1` or `/apis/<group>/<version>`.
fn group_version_prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

// ---------------------------------------------------------------------------------
// Building one document
// ---------------------------------------------------------------------------------

/// Collects paths and schemas for one document.
struct DocBuilder {
    flavor: Flavor,
    generator: SchemaGenerator,
    paths: BTreeMap<String, PathItem>,
    /// The kinds of schemas: schema name -> `x-kubernetes-group-version-kind`.
    kinds: BTreeMap<String, Vec<Gvk>>,
}

impl DocBuilder {
    fn new(flavor: Flavor) -> Self {
        let settings = SchemaSettings::draft07().with(|s| {
            s.definitions_path = flavor.definitions_pointer().into();
            s.meta_schema = None;
            s.transforms = Vec::new();
        });
        DocBuilder {
            flavor,
            generator: SchemaGenerator::new(settings),
            paths: BTreeMap::new(),
            kinds: BTreeMap::new(),
        }
    }

    fn ref_to(&self, name: &str) -> Value {
        json!({ "$ref": format!("#{}/{}", self.flavor.definitions_pointer(), name) })
    }

    fn path(&mut self, path: String) -> &mut PathItem {
        self.paths.entry(path).or_default()
    }

    fn add_kind(&mut self, schema_name: &str, gvk: Gvk) {
        let gvks = self.kinds.entry(schema_name.to_string()).or_default();
        if !gvks.contains(&gvk) {
            gvks.push(gvk);
        }
    }

    /// A `$ref` to the schema of a kind, registering the schema and its kind.
    fn kind_ref(&mut self, group: &str, version: &str, kind: &str) -> Option<(Value, String)> {
        let typed = typed_kind(group, version, kind)?;
        let reference = (typed.register)(&mut self.generator).to_value();
        let name = (typed.schema_name)().into_owned();
        self.add_kind(&name, Gvk::new(group, version, kind));
        Some((reference, name))
    }

    /// A `$ref` to a type's schema.
    fn type_ref<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().to_value()
    }

    /// A `$ref` to a meta type that is a kind of `v1` in every group version (like
    /// `Status`), registering the kind.
    fn meta_kind_ref<T: JsonSchema>(&mut self, kind: &str) -> Value {
        let reference = self.type_ref::<T>();
        self.add_kind(&T::schema_name(), Gvk::new("", "v1", kind));
        reference
    }

    /// A `$ref` to `<Kind>List`, writing its schema (k8s-openapi has none).
    fn list_ref(&mut self, info: &ResourceInfo, item_name: &str, item_ref: &Value) -> Value {
        let name = format!("{item_name}List");
        let list_meta = self.type_ref::<meta::ListMeta>();
        if !self.generator.definitions().contains_key(&name) {
            let item_schema = self.generator.definitions().get(item_name);
            let type_meta = |field: &str| {
                item_schema
                    .and_then(|s| s.pointer(&format!("/properties/{field}")))
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "string"}))
            };
            let mut metadata = list_meta;
            metadata["description"] = json!(
                "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
            );
            let schema = json!({
                "description": format!("{}List is a list of {} objects.", info.kind, info.kind),
                "properties": {
                    "apiVersion": type_meta("apiVersion"),
                    "items": {
                        "description": format!("The list of {}.", info.plural),
                        "items": item_ref,
                        "type": "array",
                    },
                    "kind": type_meta("kind"),
                    "metadata": metadata,
                },
                "required": ["items"],
                "type": "object",
            });
            self.generator
                .definitions_mut()
                .insert(name.clone(), schema);
        }
        self.add_kind(&name, Gvk::new(info.group, info.version, &info.list_kind()));
        self.ref_to(&name)
    }

    /// `/api/`: the core API versions.
    fn add_core_versions(&mut self) {
        let schema = self.meta_kind_ref::<meta::APIVersions>("APIVersions");
        let op = Operation::new(
            "get",
            "getCoreAPIVersions".into(),
            "get available API versions".into(),
            "core",
        )
        .respond(&[("200", "OK")], &schema);
        self.path("/api/".into()).operations.push(op);
    }

    /// `/apis/`: the API groups.
    fn add_groups(&mut self) {
        let schema = self.meta_kind_ref::<meta::APIGroupList>("APIGroupList");
        let op = Operation::new(
            "get",
            "getAPIVersions".into(),
            "get available API versions".into(),
            "apis",
        )
        .respond(&[("200", "OK")], &schema);
        self.path("/apis/".into()).operations.push(op);
    }

    /// `/apis/<group>/`: one API group.
    fn add_group(&mut self, group: &str) {
        let schema = self.meta_kind_ref::<meta::APIGroup>("APIGroup");
        let camel = group_camel(group);
        let tag = tag_of(group, "").trim_end_matches('_').to_string();
        let op = Operation::new(
            "get",
            format!("get{camel}APIGroup"),
            "get information of a group".into(),
            &tag,
        )
        .respond(&[("200", "OK")], &schema);
        self.path(format!("/apis/{group}/")).operations.push(op);
    }

    /// Every path of one group version: its resource list and its resources.
    fn add_group_version(&mut self, group: &str, version: &str) {
        let schema = self.meta_kind_ref::<meta::APIResourceList>("APIResourceList");
        let prefix = group_version_prefix(group, version);
        let id = format!(
            "get{}{}APIResources",
            group_camel(group),
            capitalize(version)
        );
        let op = Operation::new(
            "get",
            id,
            "get available resources".into(),
            &tag_of(group, version),
        )
        .respond(&[("200", "OK")], &schema);
        self.path(format!("{prefix}/")).operations.push(op);
        for info in resources::builtin()
            .iter()
            .filter(|r| r.group == group && r.version == version)
        {
            self.add_resource(info);
        }
    }

    /// The collection, item, watch and subresource paths of one resource.
    fn add_resource(&mut self, info: &'static ResourceInfo) {
        let Some((kind_ref, kind_name)) = self.kind_ref(info.group, info.version, info.kind) else {
            return;
        };
        let list_ref = info
            .verbs()
            .contains(&"list")
            .then(|| self.list_ref(info, &kind_name, &kind_ref));
        let resource = ResourcePaths {
            info,
            gvk: Gvk::new(info.group, info.version, info.kind),
            names: OperationNames::new(info),
            prefix: group_version_prefix(info.group, info.version),
            scope_path: if info.namespaced {
                format!("namespaces/{{namespace}}/{}", info.plural)
            } else {
                info.plural.to_string()
            },
            kind_ref,
            list_ref,
            status_ref: self.meta_kind_ref::<meta::Status>("Status"),
            delete_options_ref: self.type_ref::<meta::DeleteOptions>(),
            patch_ref: self.type_ref::<meta::Patch>(),
            watch_event_ref: self.type_ref::<meta::WatchEvent<()>>(),
        };
        self.add_collection(&resource);
        self.add_item(&resource);
        self.add_watches(&resource);
        for sub in info.subresources {
            self.add_subresource(&resource, sub);
        }
    }

    /// `<collection>`: list, create, deletecollection; and the list across
    /// namespaces.
    fn add_collection(&mut self, resource: &ResourcePaths) {
        let (kind, gvk, names) = (resource.info.kind, &resource.gvk, &resource.names);
        let tag = names.tag.as_str();
        let mut operations = Vec::new();
        if let Some(list_ref) = &resource.list_ref {
            operations.push(
                Operation::new(
                    "get",
                    names.id("list", ""),
                    format!("list or watch objects of kind {kind}"),
                    tag,
                )
                .kind("list", gvk)
                .params(LIST_PARAMS)
                .respond(&[("200", "OK")], list_ref)
                .produces(LIST_TYPES),
            );
        }
        if resource.has("create") {
            operations.push(
                Operation::new(
                    "post",
                    names.id("create", ""),
                    format!("create a {kind}"),
                    tag,
                )
                .kind("post", gvk)
                .params(WRITE_PARAMS)
                .body(&resource.kind_ref, ANY_TYPE, true)
                .respond(
                    &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                    &resource.kind_ref,
                ),
            );
        }
        if resource.has("deletecollection") {
            operations.push(
                Operation::new(
                    "delete",
                    names.collection_id(),
                    format!("delete collection of {kind}"),
                    tag,
                )
                .kind("deletecollection", gvk)
                .params(DELETE_COLLECTION_PARAMS)
                .body(&resource.delete_options_ref, ANY_TYPE, false)
                .respond(&[("200", "OK")], &resource.status_ref),
            );
        }
        if !operations.is_empty() {
            let mut parameters = resource.scope_params();
            parameters.push(query("pretty"));
            self.set_path(resource.path(""), parameters, operations);
        }
        if let (Some(list_ref), true) = (&resource.list_ref, resource.info.namespaced) {
            let id = format!("list{}{}{kind}ForAllNamespaces", names.group, names.version);
            let list = Operation::new(
                "get",
                id,
                format!("list or watch objects of kind {kind}"),
                tag,
            )
            .kind("list", gvk)
            .respond(&[("200", "OK")], list_ref)
            .produces(LIST_TYPES);
            let path = format!("{}/{}", resource.prefix, resource.info.plural);
            self.set_path(path, list_path_params(), vec![list]);
        }
    }

    /// `<collection>/{name}`: get, replace, patch, delete.
    fn add_item(&mut self, resource: &ResourcePaths) {
        let (kind, gvk, names) = (resource.info.kind, &resource.gvk, &resource.names);
        let (tag, object) = (names.tag.as_str(), &resource.kind_ref);
        let mut operations = Vec::new();
        if resource.has("get") {
            operations.push(
                Operation::new(
                    "get",
                    names.id("read", ""),
                    format!("read the specified {kind}"),
                    tag,
                )
                .kind("get", gvk)
                .respond(&[("200", "OK")], object),
            );
        }
        if resource.has("update") {
            operations.push(
                Operation::new(
                    "put",
                    names.id("replace", ""),
                    format!("replace the specified {kind}"),
                    tag,
                )
                .kind("put", gvk)
                .params(WRITE_PARAMS)
                .body(object, ANY_TYPE, true)
                .respond(&[("200", "OK"), ("201", "Created")], object),
            );
        }
        if resource.has("patch") {
            let description = format!("partially update the specified {kind}");
            operations.push(
                Operation::new("patch", names.id("patch", ""), description, tag)
                    .kind("patch", gvk)
                    .params(PATCH_PARAMS)
                    .body(&resource.patch_ref, PATCH_TYPES, true)
                    .respond(&[("200", "OK"), ("201", "Created")], object),
            );
        }
        if resource.has("delete") {
            operations.push(
                Operation::new(
                    "delete",
                    names.id("delete", ""),
                    format!("delete a {kind}"),
                    tag,
                )
                .kind("delete", gvk)
                .params(DELETE_PARAMS)
                .body(&resource.delete_options_ref, ANY_TYPE, false)
                .respond(&[("200", "OK"), ("202", "Accepted")], &resource.status_ref),
            );
        }
        if !operations.is_empty() {
            self.set_path(resource.path("/{name}"), resource.item_params(), operations);
        }
    }

    /// The deprecated `watch/` paths.
    fn add_watches(&mut self, resource: &ResourcePaths) {
        if !resource.has("watch") {
            return;
        }
        let (kind, gvk, names) = (resource.info.kind, &resource.gvk, &resource.names);
        let tag = names.tag.as_str();
        let watch = |id: String, description: String, action: &'static str| {
            Operation::new("get", id, description, tag)
                .kind(action, gvk)
                .respond(&[("200", "OK")], &resource.watch_event_ref)
                .produces(WATCH_TYPES)
        };
        let list_description = format!(
            "watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."
        );
        let one_description = format!(
            "watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."
        );
        let prefix = &resource.prefix;
        let scope_path = &resource.scope_path;

        let mut parameters = resource.scope_params();
        parameters.extend(list_path_params());
        let list = watch(
            names.id("watch", "List"),
            list_description.clone(),
            "watchlist",
        );
        self.set_path(
            format!("{prefix}/watch/{scope_path}"),
            parameters.clone(),
            vec![list],
        );

        parameters.insert(0, resource.name_param());
        let one = watch(names.id("watch", ""), one_description, "watch");
        self.set_path(
            format!("{prefix}/watch/{scope_path}/{{name}}"),
            parameters,
            vec![one],
        );

        if resource.info.namespaced {
            let id = format!(
                "watch{}{}{kind}ListForAllNamespaces",
                names.group, names.version
            );
            let all = watch(id, list_description, "watchlist");
            let path = format!("{prefix}/watch/{}", resource.info.plural);
            self.set_path(path, list_path_params(), vec![all]);
        }
    }

    /// `<collection>/{name}/<sub>` (and `proxy/{path}`).
    fn add_subresource(&mut self, resource: &ResourcePaths, sub: &str) {
        let Some(operations) = self.subresource_operations(resource, sub) else {
            return;
        };
        let path = resource.path(&format!("/{{name}}/{sub}"));
        self.set_path(path.clone(), resource.item_params(), operations);
        if sub == "proxy" {
            let operations = proxy_operations(resource, "WithPath");
            let mut parameters = resource.item_params();
            parameters.insert(1, path_param("path", "path to the resource"));
            self.set_path(format!("{path}/{{path}}"), parameters, operations);
        }
    }

    fn set_path(&mut self, path: String, parameters: Vec<Param>, operations: Vec<Operation>) {
        self.paths.insert(
            path,
            PathItem {
                parameters,
                operations,
            },
        );
    }

    /// The operations of `<item>/<sub>`, or `None` for a subresource these documents
    /// do not describe.
    fn subresource_operations(
        &mut self,
        resource: &ResourcePaths,
        sub: &str,
    ) -> Option<Vec<Operation>> {
        let (kind, gvk, names) = (resource.info.kind, &resource.gvk, &resource.names);
        let suffix = subresource_suffix(sub);
        let tag = names.tag.as_str();
        // get / put / patch of an object: the resource's own kind, or Scale.
        let read_write = |gvk: &Gvk, object: &Value| {
            vec![
                Operation::new(
                    "get",
                    names.id("read", suffix),
                    format!("read {sub} of the specified {kind}"),
                    tag,
                )
                .kind("get", gvk)
                .respond(&[("200", "OK")], object),
                Operation::new(
                    "put",
                    names.id("replace", suffix),
                    format!("replace {sub} of the specified {kind}"),
                    tag,
                )
                .kind("put", gvk)
                .params(WRITE_PARAMS)
                .body(object, ANY_TYPE, true)
                .respond(&[("200", "OK"), ("201", "Created")], object),
                Operation::new(
                    "patch",
                    names.id("patch", suffix),
                    format!("partially update {sub} of the specified {kind}"),
                    tag,
                )
                .kind("patch", gvk)
                .params(PATCH_PARAMS)
                .body(&resource.patch_ref, PATCH_TYPES, true)
                .respond(&[("200", "OK"), ("201", "Created")], object),
            ]
        };
        // post of another kind: eviction, binding, token.
        let mut create = |group: &str, version: &str, sub_kind: &str| {
            let (object, _) = self.kind_ref(group, version, sub_kind)?;
            Some(vec![
                Operation::new(
                    "post",
                    names.id("create", suffix),
                    format!("create {sub_kind} of a {kind}"),
                    tag,
                )
                .kind("post", &Gvk::new(group, version, sub_kind))
                .params(WRITE_PARAMS)
                .body(&object, ANY_TYPE, true)
                .respond(
                    &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                    &object,
                ),
            ])
        };
        let text = json!({"type": "string"});
        let connect = |options: &str, params: &[&'static str]| {
            let options_gvk = Gvk::new("", "v1", options);
            ["get", "post"]
                .into_iter()
                .map(|method| {
                    let description = format!(
                        "connect {} requests to {sub} of {kind}",
                        method.to_uppercase()
                    );
                    Operation::new(method, names.connect_id(method, suffix), description, tag)
                        .kind("connect", &options_gvk)
                        .params(params)
                        .respond(&[("200", "OK")], &text)
                        .produces(ANY_TYPE)
                })
                .collect::<Vec<_>>()
        };
        let operations = match sub {
            "status" | "ephemeralcontainers" | "resize" | "approval" => {
                read_write(gvk, &resource.kind_ref)
            }
            "scale" => {
                let (scale_ref, _) = self.kind_ref("autoscaling", "v1", "Scale")?;
                read_write(&Gvk::new("autoscaling", "v1", "Scale"), &scale_ref)
            }
            "finalize" => vec![
                Operation::new(
                    "put",
                    names.id("replace", suffix),
                    format!("replace finalize of the specified {kind}"),
                    tag,
                )
                .kind("put", gvk)
                .params(WRITE_PARAMS)
                .body(&resource.kind_ref, ANY_TYPE, true)
                .respond(&[("200", "OK"), ("201", "Created")], &resource.kind_ref),
            ],
            "eviction" => create("policy", "v1", "Eviction")?,
            "binding" => create("", "v1", "Binding")?,
            "token" => create("authentication.k8s.io", "v1", "TokenRequest")?,
            "log" => vec![
                Operation::new(
                    "get",
                    names.id("read", suffix),
                    format!("read log of the specified {kind}"),
                    tag,
                )
                .kind("get", gvk)
                .params(LOG_PARAMS)
                .respond(&[("200", "OK")], &text)
                .produces(TEXT_TYPES),
            ],
            "exec" => connect(
                "PodExecOptions",
                &["command", "container", "stderr", "stdin", "stdout", "tty"],
            ),
            "attach" => connect(
                "PodAttachOptions",
                &["container", "stderr", "stdin", "stdout", "tty"],
            ),
            "portforward" => connect("PodPortForwardOptions", &["ports"]),
            "proxy" => proxy_operations(resource, ""),
            _ => return None,
        };
        Some(operations)
    }

    /// Writes the document.
    fn finish(mut self) -> Value {
        let flavor = self.flavor;
        let mut definitions = self.generator.take_definitions(false);
        let mut sorted: BTreeMap<String, Value> = BTreeMap::new();
        for (name, mut schema) in std::mem::take(&mut definitions) {
            fix_special_schema(&name, &mut schema, flavor);
            apply_field_extensions(&name, &mut schema);
            if let Some(gvks) = self.kinds.get(&name) {
                schema["x-kubernetes-group-version-kind"] =
                    Value::Array(gvks.iter().map(Gvk::to_json).collect());
            }
            if flavor == Flavor::OpenApi3 {
                for_each_subschema(&mut schema, &mut wrap_ref_with_siblings);
            }
            sorted.insert(name, schema);
        }
        let definitions: Map<String, Value> = sorted.into_iter().collect();
        let paths: Map<String, Value> = self
            .paths
            .iter()
            .map(|(path, item)| (path.clone(), item.render(flavor)))
            .collect();
        let security_scheme = json!({
            "description": "Bearer Token authentication",
            "in": "header",
            "name": "authorization",
            "type": "apiKey",
        });
        match flavor {
            Flavor::OpenApi3 => json!({
                "components": {
                    "schemas": definitions,
                    "securitySchemes": {"BearerToken": security_scheme},
                },
                "info": {"title": "Kubernetes", "version": SERVER_VERSION},
                "openapi": "3.0.0",
                "paths": paths,
                "security": [{"BearerToken": []}],
            }),
            Flavor::Swagger2 => json!({
                "definitions": definitions,
                "info": {"title": "Kubernetes", "version": SERVER_VERSION},
                "paths": paths,
                "security": [{"BearerToken": []}],
                "securityDefinitions": {"BearerToken": security_scheme},
                "swagger": "2.0",
            }),
        }
    }
}

/// What the paths of one resource share.
struct ResourcePaths {
    info: &'static ResourceInfo,
    gvk: Gvk,
    names: OperationNames,
    /// `/api/v1` or `/apis/<group>/<version>`.
    prefix: String,
    /// `namespaces/{namespace}/<plural>` or `<plural>`.
    scope_path: String,
    kind_ref: Value,
    list_ref: Option<Value>,
    status_ref: Value,
    delete_options_ref: Value,
    patch_ref: Value,
    watch_event_ref: Value,
}

impl ResourcePaths {
    fn has(&self, verb: &str) -> bool {
        self.info.verbs().contains(&verb)
    }

    /// `<prefix>/<scope path><rest>`.
    fn path(&self, rest: &str) -> String {
        format!("{}/{}{rest}", self.prefix, self.scope_path)
    }

    fn name_param(&self) -> Param {
        path_param("name", format!("name of the {}", self.info.kind))
    }

    /// `namespace` for namespaced resources.
    fn scope_params(&self) -> Vec<Param> {
        if self.info.namespaced {
            vec![path_param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
            )]
        } else {
            Vec::new()
        }
    }

    /// `name`, `namespace`, `pretty`: the parameters of an item path.
    fn item_params(&self) -> Vec<Param> {
        let mut parameters = vec![self.name_param()];
        parameters.extend(self.scope_params());
        parameters.push(query("pretty"));
        parameters
    }
}

/// The path-level parameters of list and watch paths.
fn list_path_params() -> Vec<Param> {
    let mut parameters = queries(LIST_PARAMS);
    parameters.push(query("pretty"));
    parameters
}

/// The connect operations of `proxy` (with `id_suffix` `WithPath` for
/// `proxy/{path}`).
fn proxy_operations(resource: &ResourcePaths, id_suffix: &str) -> Vec<Operation> {
    let options = match resource.info.plural {
        "nodes" => "NodeProxyOptions",
        "services" => "ServiceProxyOptions",
        _ => "PodProxyOptions",
    };
    let options_gvk = Gvk::new("", "v1", options);
    let text = json!({"type": "string"});
    let kind = resource.info.kind;
    ["delete", "get", "head", "options", "patch", "post", "put"]
        .into_iter()
        .map(|method| {
            let id = resource
                .names
                .connect_id(method, &format!("Proxy{id_suffix}"));
            let description = format!(
                "connect {} requests to proxy of {kind}",
                method.to_uppercase()
            );
            let operation = Operation::new(method, id, description, &resource.names.tag)
                .kind("connect", &options_gvk)
                .respond(&[("200", "OK")], &text)
                .produces(ANY_TYPE);
            if id_suffix.is_empty() {
                operation.params(&["path"])
            } else {
                operation
            }
        })
        .collect()
}

/// The kind-name part of an operation id of a subresource.
fn subresource_suffix(sub: &str) -> &'static str {
    match sub {
        "status" => "Status",
        "scale" => "Scale",
        "ephemeralcontainers" => "EphemeralContainers",
        "resize" => "Resize",
        "approval" => "Approval",
        "finalize" => "Finalize",
        "eviction" => "Eviction",
        "binding" => "Binding",
        "token" => "Token",
        "log" => "Log",
        "exec" => "Exec",
        "attach" => "Attach",
        "portforward" => "Portforward",
        "proxy" => "Proxy",
        _ => "",
    }
}

/// Builds operation ids the way upstream spells them
/// (`patchAppsV1NamespacedDeploymentStatus`).
struct OperationNames {
    group: String,
    version: String,
    scope: &'static str,
    kind: &'static str,
    tag: String,
}

impl OperationNames {
    fn new(info: &ResourceInfo) -> Self {
        OperationNames {
            group: group_camel(info.group),
            version: capitalize(info.version),
            scope: if info.namespaced { "Namespaced" } else { "" },
            kind: info.kind,
            tag: tag_of(info.group, info.version),
        }
    }

    fn id(&self, verb: &str, suffix: &str) -> String {
        format!(
            "{verb}{}{}{}{}{suffix}",
            self.group, self.version, self.scope, self.kind
        )
    }

    fn collection_id(&self) -> String {
        format!(
            "delete{}{}Collection{}{}",
            self.group, self.version, self.scope, self.kind
        )
    }

    fn connect_id(&self, method: &str, suffix: &str) -> String {
        format!(
            "connect{}{}{}{}{}{suffix}",
            self.group,
            self.version,
            capitalize(method),
            self.scope,
            self.kind
        )
    }
}

// ---------------------------------------------------------------------------------
// Schema fix-ups
// ---------------------------------------------------------------------------------

/// Schemas whose k8s-openapi form differs from upstream's: int-or-string types and
/// the free-form JSON types of CRDs (upstream gives them a description only).
fn fix_special_schema(name: &str, schema: &mut Value, flavor: Flavor) {
    const CRD_FREE_FORM: &[&str] = &[
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
    ];
    let description = schema.get("description").cloned().unwrap_or(Value::Null);
    let replacement = match name {
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString" => match flavor {
            Flavor::Swagger2 => {
                json!({"description": description, "format": "int-or-string", "type": "string"})
            }
            Flavor::OpenApi3 => json!({
                "description": description,
                "format": "int-or-string",
                "oneOf": [{"type": "integer"}, {"type": "string"}],
            }),
        },
        "io.k8s.apimachinery.pkg.api.resource.Quantity" => match flavor {
            Flavor::Swagger2 => json!({"description": description, "type": "string"}),
            Flavor::OpenApi3 => json!({
                "description": description,
                "oneOf": [{"type": "string"}, {"type": "number"}],
            }),
        },
        _ if CRD_FREE_FORM.contains(&name) => json!({"description": description}),
        _ => return,
    };
    *schema = replacement;
}

/// Calls `f` on a schema and on every schema nested in it (properties, items,
/// additionalProperties, allOf/oneOf/anyOf, not).
fn for_each_subschema(schema: &mut Value, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(map) = schema else {
        return;
    };
    f(map);
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for property in properties.values_mut() {
            for_each_subschema(property, f);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get_mut(key) {
            match child {
                Value::Array(children) => {
                    children.iter_mut().for_each(|c| for_each_subschema(c, f))
                }
                other => for_each_subschema(other, f),
            }
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(children)) = map.get_mut(key) {
            children.iter_mut().for_each(|c| for_each_subschema(c, f));
        }
    }
}

/// OpenAPI 3.0 ignores the siblings of `$ref`; upstream wraps the reference in
/// `allOf` so that a field's description and extensions count.
fn wrap_ref_with_siblings(map: &mut Map<String, Value>) {
    if map.len() > 1
        && let Some(reference) = map.remove("$ref")
    {
        map.insert("allOf".into(), json!([{ "$ref": reference }]));
    }
}

/// The upstream extensions of one schema.
#[derive(Default)]
struct SchemaExtensions {
    /// `x-kubernetes-map-type` of the schema itself.
    map_type: Option<&'static str>,
    /// property -> extensions to insert on it.
    fields: Vec<(&'static str, Map<String, Value>)>,
}

/// [`FIELD_EXTENSIONS`], parsed.
fn field_extensions() -> &'static HashMap<&'static str, SchemaExtensions> {
    static TABLE: OnceLock<HashMap<&'static str, SchemaExtensions>> = OnceLock::new();
    TABLE.get_or_init(|| parse_field_extensions(FIELD_EXTENSIONS))
}

fn parse_field_extensions(text: &'static str) -> HashMap<&'static str, SchemaExtensions> {
    let mut table: HashMap<&'static str, SchemaExtensions> = HashMap::new();
    let mut current: Option<&'static str> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let mut tokens = line.split_whitespace();
        let Some(first) = tokens.next() else { continue };
        if !line.starts_with(char::is_whitespace) {
            current = Some(first);
            let entry = table.entry(first).or_default();
            for token in tokens {
                if let Some(map_type) = token.strip_prefix("map=") {
                    entry.map_type = Some(map_type);
                }
            }
            continue;
        }
        let Some(schema) = current else { continue };
        let mut extensions = Map::new();
        for token in tokens {
            let Some((key, value)) = token.split_once('=') else {
                continue;
            };
            match key {
                "list" => {
                    let (list_type, keys) = value.split_once(':').unwrap_or((value, ""));
                    extensions.insert("x-kubernetes-list-type".into(), json!(list_type));
                    if !keys.is_empty() {
                        let keys: Vec<&str> = keys.split(',').collect();
                        extensions.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                    }
                }
                "patch" => {
                    let (strategy, merge_key) = value.split_once(':').unwrap_or((value, ""));
                    if !merge_key.is_empty() {
                        extensions.insert("x-kubernetes-patch-merge-key".into(), json!(merge_key));
                    }
                    extensions.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
                }
                "map" => {
                    extensions.insert("x-kubernetes-map-type".into(), json!(value));
                }
                _ => {}
            }
        }
        table
            .entry(schema)
            .or_default()
            .fields
            .push((first, extensions));
    }
    table
}

/// Puts the upstream patch and list extensions on a schema and its properties.
fn apply_field_extensions(name: &str, schema: &mut Value) {
    let Some(extensions) = field_extensions().get(name) else {
        return;
    };
    let Value::Object(map) = schema else { return };
    if let Some(map_type) = extensions.map_type {
        map.insert("x-kubernetes-map-type".into(), json!(map_type));
    }
    let Some(Value::Object(properties)) = map.get_mut("properties") else {
        return;
    };
    for (property, values) in &extensions.fields {
        if let Some(Value::Object(field)) = properties.get_mut(*property) {
            for (key, value) in values {
                field.insert(key.clone(), value.clone());
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// The documents
// ---------------------------------------------------------------------------------

/// Registers `DeleteOptions` and `WatchEvent` as kinds of every served group
/// version, as upstream does.
fn add_shared_kinds(builder: &mut DocBuilder) {
    let delete_options = meta::DeleteOptions::schema_name().into_owned();
    let watch_event = <meta::WatchEvent<()> as JsonSchema>::schema_name().into_owned();
    for (group, versions) in resources::group_versions() {
        for version in versions {
            builder.add_kind(&delete_options, Gvk::new(group, version, "DeleteOptions"));
            builder.add_kind(&watch_event, Gvk::new(group, version, "WatchEvent"));
        }
    }
}

fn build_v3(path: &str) -> Value {
    let mut builder = DocBuilder::new(Flavor::OpenApi3);
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["api"] => builder.add_core_versions(),
        ["apis"] => builder.add_groups(),
        ["api", version] => builder.add_group_version("", version),
        ["apis", group] => builder.add_group(group),
        ["apis", group, version] => builder.add_group_version(group, version),
        _ => {}
    }
    add_shared_kinds(&mut builder);
    builder.finish()
}

fn build_v2() -> Bytes {
    Bytes::from(serde_json::to_vec(&build_v2_value()).expect("a JSON value encodes"))
}

fn build_v2_value() -> Value {
    let mut builder = DocBuilder::new(Flavor::Swagger2);
    builder.add_core_versions();
    builder.add_groups();
    for (group, versions) in resources::group_versions() {
        if !group.is_empty() {
            builder.add_group(group);
        }
        for version in versions {
            builder.add_group_version(group, version);
        }
    }
    add_shared_kinds(&mut builder);
    builder.finish()
}

// ---------------------------------------------------------------------------------
// The Swagger 2.0 document as protobuf
// ---------------------------------------------------------------------------------

/// Writes the Swagger 2.0 document as gnostic's `openapi.v2.Document` protobuf
/// message, the form kubectl and client-go ask `/openapi/v2` for. Vendor
/// extensions travel as `Any { yaml }` with the value's JSON text (JSON is YAML),
/// which is how clients read them back.
mod swagger_proto {
    use serde_json::{Map, Value};

    /// A protobuf message being written.
    #[derive(Default)]
    pub(super) struct Message(Vec<u8>);

    impl Message {
        pub(super) fn into_bytes(self) -> Vec<u8> {
            self.0
        }

        fn varint(&mut self, mut value: u64) {
            while value >= 0x80 {
                self.0.push((value as u8) | 0x80);
                value >>= 7;
            }
            self.0.push(value as u8);
        }

        fn key(&mut self, field: u32, wire_type: u8) {
            self.varint(u64::from(field) << 3 | u64::from(wire_type));
        }

        fn bytes(&mut self, field: u32, bytes: &[u8]) {
            self.key(field, 2);
            self.varint(bytes.len() as u64);
            self.0.extend_from_slice(bytes);
        }

        /// A string field; proto3 leaves empty strings out.
        fn string(&mut self, field: u32, value: &str) {
            if !value.is_empty() {
                self.bytes(field, value.as_bytes());
            }
        }

        fn strings(&mut self, field: u32, values: &[&str]) {
            for value in values {
                self.bytes(field, value.as_bytes());
            }
        }

        fn boolean(&mut self, field: u32, value: bool) {
            if value {
                self.key(field, 0);
                self.varint(1);
            }
        }

        fn int64(&mut self, field: u32, value: i64) {
            if value != 0 {
                self.key(field, 0);
                self.varint(value as u64);
            }
        }

        fn double(&mut self, field: u32, value: f64) {
            if value != 0.0 {
                self.key(field, 1);
                self.0.extend_from_slice(&value.to_le_bytes());
            }
        }

        /// An embedded message, written even when empty (a oneof member or a
        /// message-typed field is present by being written).
        fn message(&mut self, field: u32, message: Message) {
            self.bytes(field, &message.0);
        }
    }

    fn str_of<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
        map.get(key).and_then(Value::as_str).unwrap_or("")
    }

    fn bool_of(map: &Map<String, Value>, key: &str) -> bool {
        map.get(key).and_then(Value::as_bool).unwrap_or(false)
    }

    fn strings_of<'a>(map: &'a Map<String, Value>, key: &str) -> Vec<&'a str> {
        match map.get(key) {
            Some(Value::String(one)) => vec![one.as_str()],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// `Any { yaml = 2 }`.
    fn any(value: &Value) -> Message {
        let mut any = Message::default();
        any.string(2, &value.to_string());
        any
    }

    /// `NamedAny { name = 1, value = 2 }` for each `x-` key.
    fn vendor_extensions(message: &mut Message, field: u32, map: &Map<String, Value>) {
        for (key, value) in map.iter().filter(|(key, _)| key.starts_with("x-")) {
            let mut named = Message::default();
            named.string(1, key);
            named.message(2, any(value));
            message.message(field, named);
        }
    }

    /// `Schema`.
    fn schema(value: &Value) -> Message {
        let mut message = Message::default();
        let Value::Object(map) = value else {
            return message;
        };
        message.string(1, str_of(map, "$ref"));
        message.string(2, str_of(map, "format"));
        message.string(3, str_of(map, "title"));
        message.string(4, str_of(map, "description"));
        if let Some(default) = map.get("default") {
            message.message(5, any(default));
        }
        message.double(
            6,
            map.get("multipleOf").and_then(Value::as_f64).unwrap_or(0.0),
        );
        message.double(7, map.get("maximum").and_then(Value::as_f64).unwrap_or(0.0));
        message.boolean(8, bool_of(map, "exclusiveMaximum"));
        message.double(9, map.get("minimum").and_then(Value::as_f64).unwrap_or(0.0));
        message.boolean(10, bool_of(map, "exclusiveMinimum"));
        message.int64(
            11,
            map.get("maxLength").and_then(Value::as_i64).unwrap_or(0),
        );
        message.int64(
            12,
            map.get("minLength").and_then(Value::as_i64).unwrap_or(0),
        );
        message.string(13, str_of(map, "pattern"));
        message.int64(14, map.get("maxItems").and_then(Value::as_i64).unwrap_or(0));
        message.int64(15, map.get("minItems").and_then(Value::as_i64).unwrap_or(0));
        message.boolean(16, bool_of(map, "uniqueItems"));
        message.strings(19, &strings_of(map, "required"));
        for value in map
            .get("enum")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message.message(20, any(value));
        }
        match map.get("additionalProperties") {
            Some(Value::Bool(allowed)) => {
                let mut item = Message::default();
                item.key(2, 0);
                item.varint(u64::from(*allowed));
                message.message(21, item);
            }
            Some(additional @ Value::Object(_)) => {
                let mut item = Message::default();
                item.message(1, schema(additional));
                message.message(21, item);
            }
            _ => {}
        }
        let types = strings_of(map, "type");
        if !types.is_empty() {
            let mut type_item = Message::default();
            type_item.strings(1, &types);
            message.message(22, type_item);
        }
        match map.get("items") {
            Some(Value::Array(items)) => {
                let mut items_item = Message::default();
                items
                    .iter()
                    .for_each(|item| items_item.message(1, schema(item)));
                message.message(23, items_item);
            }
            Some(item @ Value::Object(_)) => {
                let mut items_item = Message::default();
                items_item.message(1, schema(item));
                message.message(23, items_item);
            }
            _ => {}
        }
        for item in map
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message.message(24, schema(item));
        }
        if let Some(Value::Object(properties)) = map.get("properties") {
            let mut named_schemas = Message::default();
            for (name, property) in properties {
                named_schemas.message(1, named(name, schema(property)));
            }
            message.message(25, named_schemas);
        }
        message.boolean(27, bool_of(map, "readOnly"));
        if let Some(example) = map.get("example") {
            message.message(30, any(example));
        }
        vendor_extensions(&mut message, 31, map);
        message
    }

    /// A `Named*` message: `{ name = 1, value = 2 }`.
    fn named(name: &str, value: Message) -> Message {
        let mut message = Message::default();
        message.string(1, name);
        message.message(2, value);
        message
    }

    /// `ParametersItem { parameter = 1 }`.
    fn parameter(value: &Value) -> Message {
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let location = str_of(map, "in");
        let mut parameter = Message::default();
        if location == "body" {
            let mut body = Message::default();
            body.string(1, str_of(map, "description"));
            body.string(2, str_of(map, "name"));
            body.string(3, location);
            body.boolean(4, bool_of(map, "required"));
            if let Some(body_schema) = map.get("schema") {
                body.message(5, schema(body_schema));
            }
            parameter.message(1, body);
        } else {
            // Query and form-data sub-schemas carry allowEmptyValue at 5 and so
            // number the rest one higher than path and header ones.
            let (oneof_field, shift) = match location {
                "header" => (1, 0),
                "formData" => (2, 1),
                "path" => (4, 0),
                _ => (3, 1),
            };
            let mut sub = Message::default();
            sub.boolean(1, bool_of(map, "required"));
            sub.string(2, location);
            sub.string(3, str_of(map, "description"));
            sub.string(4, str_of(map, "name"));
            if shift == 1 {
                sub.boolean(5, bool_of(map, "allowEmptyValue"));
            }
            sub.string(5 + shift, str_of(map, "type"));
            sub.string(6 + shift, str_of(map, "format"));
            sub.boolean(19 + shift, bool_of(map, "uniqueItems"));
            vendor_extensions(&mut sub, 22 + shift, map);
            let mut non_body = Message::default();
            non_body.message(oneof_field, sub);
            parameter.message(2, non_body);
        }
        let mut item = Message::default();
        item.message(1, parameter);
        item
    }

    /// `Responses`.
    fn responses(map: &Map<String, Value>) -> Message {
        let mut message = Message::default();
        for (code, value) in map {
            let empty = Map::new();
            let response_map = value.as_object().unwrap_or(&empty);
            let mut response = Message::default();
            response.string(1, str_of(response_map, "description"));
            if let Some(response_schema) = response_map.get("schema") {
                let mut schema_item = Message::default();
                schema_item.message(1, schema(response_schema));
                response.message(2, schema_item);
            }
            let mut response_value = Message::default();
            response_value.message(1, response);
            message.message(1, named(code, response_value));
        }
        message
    }

    /// `Operation`.
    fn operation(map: &Map<String, Value>) -> Message {
        let mut message = Message::default();
        message.strings(1, &strings_of(map, "tags"));
        message.string(2, str_of(map, "summary"));
        message.string(3, str_of(map, "description"));
        message.string(5, str_of(map, "operationId"));
        message.strings(6, &strings_of(map, "produces"));
        message.strings(7, &strings_of(map, "consumes"));
        for param in map
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message.message(8, parameter(param));
        }
        if let Some(Value::Object(responses_map)) = map.get("responses") {
            message.message(9, responses(responses_map));
        }
        message.strings(10, &strings_of(map, "schemes"));
        message.boolean(11, bool_of(map, "deprecated"));
        vendor_extensions(&mut message, 13, map);
        message
    }

    /// `PathItem`.
    fn path_item(map: &Map<String, Value>) -> Message {
        const METHODS: &[(&str, u32)] = &[
            ("get", 2),
            ("put", 3),
            ("post", 4),
            ("delete", 5),
            ("options", 6),
            ("head", 7),
            ("patch", 8),
        ];
        let mut message = Message::default();
        for (method, field) in METHODS {
            if let Some(Value::Object(op)) = map.get(*method) {
                message.message(*field, operation(op));
            }
        }
        for param in map
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            message.message(9, parameter(param));
        }
        vendor_extensions(&mut message, 10, map);
        message
    }

    /// `Document`.
    pub(super) fn document(value: &Value) -> Message {
        let empty = Map::new();
        let map = value.as_object().unwrap_or(&empty);
        let mut message = Message::default();
        message.string(1, str_of(map, "swagger"));
        if let Some(Value::Object(info_map)) = map.get("info") {
            let mut info = Message::default();
            info.string(1, str_of(info_map, "title"));
            info.string(2, str_of(info_map, "version"));
            info.string(3, str_of(info_map, "description"));
            message.message(2, info);
        }
        if let Some(Value::Object(paths_map)) = map.get("paths") {
            let mut paths = Message::default();
            for (path, item) in paths_map {
                let item = item.as_object().unwrap_or(&empty);
                paths.message(2, named(path, path_item(item)));
            }
            message.message(8, paths);
        }
        if let Some(Value::Object(definitions_map)) = map.get("definitions") {
            let mut definitions = Message::default();
            for (name, definition) in definitions_map {
                definitions.message(1, named(name, schema(definition)));
            }
            message.message(9, definitions);
        }
        for requirement in map
            .get("security")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mut requirement_message = Message::default();
            for (name, scopes) in requirement.as_object().unwrap_or(&empty) {
                let mut array = Message::default();
                array.strings(
                    1,
                    &scopes
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>(),
                );
                requirement_message.message(1, named(name, array));
            }
            message.message(12, requirement_message);
        }
        if let Some(Value::Object(schemes)) = map.get("securityDefinitions") {
            let mut definitions = Message::default();
            for (name, scheme) in schemes {
                let scheme = scheme.as_object().unwrap_or(&empty);
                let mut api_key = Message::default();
                api_key.string(1, str_of(scheme, "type"));
                api_key.string(2, str_of(scheme, "name"));
                api_key.string(3, str_of(scheme, "in"));
                api_key.string(4, str_of(scheme, "description"));
                let mut item = Message::default();
                item.message(2, api_key);
                definitions.message(1, named(name, item));
            }
            message.message(13, definitions);
        }
        vendor_extensions(&mut message, 16, map);
        message
    }
}

// ---------------------------------------------------------------------------------
// Upstream's extensions
// ---------------------------------------------------------------------------------

/// Upstream's (v1.33) list, map and patch extensions of the schemas krust serves.
///
/// A line without indentation names a schema (`map=atomic`: its
/// `x-kubernetes-map-type`); the indented lines under it name a property and its
/// extensions: `list=<type>[:<map keys>]` (`x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`), `patch=<strategy>[:<merge key>]`
/// (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) and
/// `map=<type>` (`x-kubernetes-map-type`).
const FIELD_EXTENSIONS: &str = "
io.k8s.api.admissionregistration.v1.MatchResources map=atomic
    excludeResourceRules list=atomic
    resourceRules list=atomic
io.k8s.api.admissionregistration.v1.MutatingWebhook
    admissionReviewVersions list=atomic
    matchConditions list=map:name patch=merge:name
    rules list=atomic
io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration
    webhooks list=map:name patch=merge:name
io.k8s.api.admissionregistration.v1.NamedRuleWithOperations map=atomic
    apiGroups list=atomic
    apiVersions list=atomic
    operations list=atomic
    resourceNames list=atomic
    resources list=atomic
io.k8s.api.admissionregistration.v1.ParamKind map=atomic
io.k8s.api.admissionregistration.v1.ParamRef map=atomic
io.k8s.api.admissionregistration.v1.RuleWithOperations
    apiGroups list=atomic
    apiVersions list=atomic
    operations list=atomic
    resources list=atomic
io.k8s.api.admissionregistration.v1.TypeChecking
    expressionWarnings list=atomic
io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBindingSpec
    validationActions list=set
io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicySpec
    auditAnnotations list=atomic
    matchConditions list=map:name patch=merge:name
    validations list=atomic
    variables list=map:name patch=merge:name
io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyStatus
    conditions list=map:type
io.k8s.api.admissionregistration.v1.ValidatingWebhook
    admissionReviewVersions list=atomic
    matchConditions list=map:name patch=merge:name
    rules list=atomic
io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration
    webhooks list=map:name patch=merge:name
io.k8s.api.admissionregistration.v1.Variable map=atomic
io.k8s.api.apps.v1.DaemonSetStatus
    conditions list=map:type patch=merge:type
io.k8s.api.apps.v1.DeploymentSpec
    strategy patch=retainKeys
io.k8s.api.apps.v1.DeploymentStatus
    conditions list=map:type patch=merge:type
io.k8s.api.apps.v1.ReplicaSetStatus
    conditions list=map:type patch=merge:type
io.k8s.api.apps.v1.StatefulSetSpec
    volumeClaimTemplates list=atomic
io.k8s.api.apps.v1.StatefulSetStatus
    conditions list=map:type patch=merge:type
io.k8s.api.authentication.v1.TokenRequestSpec
    audiences list=atomic
io.k8s.api.authentication.v1.TokenReviewSpec
    audiences list=atomic
io.k8s.api.authentication.v1.TokenReviewStatus
    audiences list=atomic
io.k8s.api.authentication.v1.UserInfo
    groups list=atomic
io.k8s.api.authorization.v1.FieldSelectorAttributes
    requirements list=atomic
io.k8s.api.authorization.v1.LabelSelectorAttributes
    requirements list=atomic
io.k8s.api.authorization.v1.NonResourceRule
    nonResourceURLs list=atomic
    verbs list=atomic
io.k8s.api.authorization.v1.ResourceRule
    apiGroups list=atomic
    resourceNames list=atomic
    resources list=atomic
    verbs list=atomic
io.k8s.api.authorization.v1.SubjectAccessReviewSpec
    groups list=atomic
io.k8s.api.authorization.v1.SubjectRulesReviewStatus
    nonResourceRules list=atomic
    resourceRules list=atomic
io.k8s.api.autoscaling.v1.CrossVersionObjectReference map=atomic
io.k8s.api.autoscaling.v2.HPAScalingRules
    policies list=atomic
io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec
    metrics list=atomic
io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus
    conditions list=map:type patch=merge:type
    currentMetrics list=atomic
io.k8s.api.batch.v1.CronJobStatus
    active list=atomic
io.k8s.api.batch.v1.JobStatus
    conditions list=atomic patch=merge:type
io.k8s.api.batch.v1.PodFailurePolicy
    rules list=atomic
io.k8s.api.batch.v1.PodFailurePolicyOnExitCodesRequirement
    values list=set
io.k8s.api.batch.v1.PodFailurePolicyRule
    onPodConditions list=atomic
io.k8s.api.batch.v1.SuccessPolicy
    rules list=atomic
io.k8s.api.batch.v1.UncountedTerminatedPods
    failed list=set
    succeeded list=set
io.k8s.api.certificates.v1.CertificateSigningRequestSpec
    groups list=atomic
    request list=atomic
    usages list=atomic
io.k8s.api.certificates.v1.CertificateSigningRequestStatus
    certificate list=atomic
    conditions list=map:type
io.k8s.api.core.v1.Capabilities
    add list=atomic
    drop list=atomic
io.k8s.api.core.v1.CephFSPersistentVolumeSource
    monitors list=atomic
io.k8s.api.core.v1.CephFSVolumeSource
    monitors list=atomic
io.k8s.api.core.v1.ComponentStatus
    conditions list=map:type patch=merge:type
io.k8s.api.core.v1.ConfigMapKeySelector map=atomic
io.k8s.api.core.v1.ConfigMapProjection
    items list=atomic
io.k8s.api.core.v1.ConfigMapVolumeSource
    items list=atomic
io.k8s.api.core.v1.Container
    args list=atomic
    command list=atomic
    env list=map:name patch=merge:name
    envFrom list=atomic
    ports list=map:containerPort,protocol patch=merge:containerPort
    resizePolicy list=atomic
    volumeDevices list=map:devicePath patch=merge:devicePath
    volumeMounts list=map:mountPath patch=merge:mountPath
io.k8s.api.core.v1.ContainerImage
    names list=atomic
io.k8s.api.core.v1.ContainerStatus
    allocatedResourcesStatus list=map:name patch=merge:name
    volumeMounts list=map:mountPath patch=merge:mountPath
io.k8s.api.core.v1.DownwardAPIProjection
    items list=atomic
io.k8s.api.core.v1.DownwardAPIVolumeSource
    items list=atomic
io.k8s.api.core.v1.EndpointAddress map=atomic
io.k8s.api.core.v1.EndpointPort map=atomic
io.k8s.api.core.v1.EndpointSubset
    addresses list=atomic
    notReadyAddresses list=atomic
    ports list=atomic
io.k8s.api.core.v1.Endpoints
    subsets list=atomic
io.k8s.api.core.v1.EphemeralContainer
    args list=atomic
    command list=atomic
    env list=map:name patch=merge:name
    envFrom list=atomic
    ports list=map:containerPort,protocol patch=merge:containerPort
    resizePolicy list=atomic
    volumeDevices list=map:devicePath patch=merge:devicePath
    volumeMounts list=map:mountPath patch=merge:mountPath
io.k8s.api.core.v1.ExecAction
    command list=atomic
io.k8s.api.core.v1.FCVolumeSource
    targetWWNs list=atomic
    wwids list=atomic
io.k8s.api.core.v1.HTTPGetAction
    httpHeaders list=atomic
io.k8s.api.core.v1.HostAlias
    hostnames list=atomic
io.k8s.api.core.v1.ISCSIPersistentVolumeSource
    portals list=atomic
io.k8s.api.core.v1.ISCSIVolumeSource
    portals list=atomic
io.k8s.api.core.v1.LimitRangeSpec
    limits list=atomic
io.k8s.api.core.v1.LinuxContainerUser
    supplementalGroups list=atomic
io.k8s.api.core.v1.LoadBalancerIngress
    ports list=atomic
io.k8s.api.core.v1.LoadBalancerStatus
    ingress list=atomic
io.k8s.api.core.v1.LocalObjectReference map=atomic
io.k8s.api.core.v1.NamespaceSpec
    finalizers list=atomic
io.k8s.api.core.v1.NamespaceStatus
    conditions list=map:type patch=merge:type
io.k8s.api.core.v1.NodeAffinity
    preferredDuringSchedulingIgnoredDuringExecution list=atomic
io.k8s.api.core.v1.NodeSelector map=atomic
    nodeSelectorTerms list=atomic
io.k8s.api.core.v1.NodeSelectorRequirement
    values list=atomic
io.k8s.api.core.v1.NodeSelectorTerm map=atomic
    matchExpressions list=atomic
    matchFields list=atomic
io.k8s.api.core.v1.NodeSpec
    podCIDRs list=set patch=merge
    taints list=atomic
io.k8s.api.core.v1.NodeStatus
    addresses list=map:type patch=merge:type
    conditions list=map:type patch=merge:type
    images list=atomic
    runtimeHandlers list=atomic
    volumesAttached list=atomic
    volumesInUse list=atomic
io.k8s.api.core.v1.ObjectFieldSelector map=atomic
io.k8s.api.core.v1.ObjectReference map=atomic
io.k8s.api.core.v1.PersistentVolumeClaimSpec
    accessModes list=atomic
io.k8s.api.core.v1.PersistentVolumeClaimStatus
    accessModes list=atomic
    allocatedResourceStatuses map=granular
    conditions list=map:type patch=merge:type
io.k8s.api.core.v1.PersistentVolumeSpec
    accessModes list=atomic
    claimRef map=granular
    mountOptions list=atomic
io.k8s.api.core.v1.PodAffinity
    preferredDuringSchedulingIgnoredDuringExecution list=atomic
    requiredDuringSchedulingIgnoredDuringExecution list=atomic
io.k8s.api.core.v1.PodAffinityTerm
    matchLabelKeys list=atomic
    mismatchLabelKeys list=atomic
    namespaces list=atomic
io.k8s.api.core.v1.PodAntiAffinity
    preferredDuringSchedulingIgnoredDuringExecution list=atomic
    requiredDuringSchedulingIgnoredDuringExecution list=atomic
io.k8s.api.core.v1.PodDNSConfig
    nameservers list=atomic
    options list=atomic
    searches list=atomic
io.k8s.api.core.v1.PodSecurityContext
    supplementalGroups list=atomic
    sysctls list=atomic
io.k8s.api.core.v1.PodSpec
    containers list=map:name patch=merge:name
    ephemeralContainers list=map:name patch=merge:name
    hostAliases list=map:ip patch=merge:ip
    imagePullSecrets list=map:name patch=merge:name
    initContainers list=map:name patch=merge:name
    nodeSelector map=atomic
    readinessGates list=atomic
    resourceClaims list=map:name patch=merge,retainKeys:name
    schedulingGates list=map:name patch=merge:name
    tolerations list=atomic
    topologySpreadConstraints list=map:topologyKey,whenUnsatisfiable patch=merge:topologyKey
    volumes list=map:name patch=merge,retainKeys:name
io.k8s.api.core.v1.PodStatus
    conditions list=map:type patch=merge:type
    containerStatuses list=atomic
    ephemeralContainerStatuses list=atomic
    hostIPs list=atomic patch=merge:ip
    initContainerStatuses list=atomic
    podIPs list=map:ip patch=merge:ip
    resourceClaimStatuses list=map:name patch=merge,retainKeys:name
io.k8s.api.core.v1.ProjectedVolumeSource
    sources list=atomic
io.k8s.api.core.v1.RBDPersistentVolumeSource
    monitors list=atomic
io.k8s.api.core.v1.RBDVolumeSource
    monitors list=atomic
io.k8s.api.core.v1.ReplicationControllerSpec
    selector map=atomic
io.k8s.api.core.v1.ReplicationControllerStatus
    conditions list=map:type patch=merge:type
io.k8s.api.core.v1.ResourceFieldSelector map=atomic
io.k8s.api.core.v1.ResourceQuotaSpec
    scopes list=atomic
io.k8s.api.core.v1.ResourceRequirements
    claims list=map:name
io.k8s.api.core.v1.ResourceStatus
    resources list=map:resourceID
io.k8s.api.core.v1.ScopeSelector map=atomic
    matchExpressions list=atomic
io.k8s.api.core.v1.ScopedResourceSelectorRequirement
    values list=atomic
io.k8s.api.core.v1.SecretKeySelector map=atomic
io.k8s.api.core.v1.SecretProjection
    items list=atomic
io.k8s.api.core.v1.SecretReference map=atomic
io.k8s.api.core.v1.SecretVolumeSource
    items list=atomic
io.k8s.api.core.v1.ServiceAccount
    imagePullSecrets list=atomic
    secrets list=map:name patch=merge:name
io.k8s.api.core.v1.ServiceSpec
    clusterIPs list=atomic
    externalIPs list=atomic
    ipFamilies list=atomic
    loadBalancerSourceRanges list=atomic
    ports list=map:port,protocol patch=merge:port
    selector map=atomic
io.k8s.api.core.v1.ServiceStatus
    conditions list=map:type patch=merge:type
io.k8s.api.core.v1.TopologySelectorLabelRequirement
    values list=atomic
io.k8s.api.core.v1.TopologySelectorTerm map=atomic
    matchLabelExpressions list=atomic
io.k8s.api.core.v1.TopologySpreadConstraint
    matchLabelKeys list=atomic
io.k8s.api.core.v1.TypedLocalObjectReference map=atomic
io.k8s.api.discovery.v1.Endpoint
    addresses list=set
io.k8s.api.discovery.v1.EndpointHints
    forNodes list=atomic
    forZones list=atomic
io.k8s.api.discovery.v1.EndpointPort map=atomic
io.k8s.api.discovery.v1.EndpointSlice
    endpoints list=atomic
    ports list=atomic
io.k8s.api.flowcontrol.v1.FlowSchemaSpec
    rules list=atomic
io.k8s.api.flowcontrol.v1.FlowSchemaStatus
    conditions list=map:type patch=merge:type
io.k8s.api.flowcontrol.v1.NonResourcePolicyRule
    nonResourceURLs list=set
    verbs list=set
io.k8s.api.flowcontrol.v1.PolicyRulesWithSubjects
    nonResourceRules list=atomic
    resourceRules list=atomic
    subjects list=atomic
io.k8s.api.flowcontrol.v1.PriorityLevelConfigurationStatus
    conditions list=map:type patch=merge:type
io.k8s.api.flowcontrol.v1.ResourcePolicyRule
    apiGroups list=set
    namespaces list=set
    resources list=set
    verbs list=set
io.k8s.api.networking.v1.HTTPIngressRuleValue
    paths list=atomic
io.k8s.api.networking.v1.IPBlock
    except list=atomic
io.k8s.api.networking.v1.IngressLoadBalancerIngress
    ports list=atomic
io.k8s.api.networking.v1.IngressLoadBalancerStatus
    ingress list=atomic
io.k8s.api.networking.v1.IngressSpec
    rules list=atomic
    tls list=atomic
io.k8s.api.networking.v1.IngressTLS
    hosts list=atomic
io.k8s.api.networking.v1.NetworkPolicyEgressRule
    ports list=atomic
    to list=atomic
io.k8s.api.networking.v1.NetworkPolicyIngressRule
    from list=atomic
    ports list=atomic
io.k8s.api.networking.v1.NetworkPolicySpec
    egress list=atomic
    ingress list=atomic
    policyTypes list=atomic
io.k8s.api.networking.v1.ServiceBackendPort map=atomic
io.k8s.api.networking.v1.ServiceCIDRSpec
    cidrs list=atomic
io.k8s.api.networking.v1.ServiceCIDRStatus
    conditions list=map:type patch=merge:type
io.k8s.api.node.v1.Scheduling
    nodeSelector map=atomic
    tolerations list=atomic
io.k8s.api.policy.v1.PodDisruptionBudgetSpec
    selector patch=replace
io.k8s.api.policy.v1.PodDisruptionBudgetStatus
    conditions list=map:type patch=merge:type
io.k8s.api.rbac.v1.AggregationRule
    clusterRoleSelectors list=atomic
io.k8s.api.rbac.v1.ClusterRole
    rules list=atomic
io.k8s.api.rbac.v1.ClusterRoleBinding
    subjects list=atomic
io.k8s.api.rbac.v1.PolicyRule
    apiGroups list=atomic
    nonResourceURLs list=atomic
    resourceNames list=atomic
    resources list=atomic
    verbs list=atomic
io.k8s.api.rbac.v1.Role
    rules list=atomic
io.k8s.api.rbac.v1.RoleBinding
    subjects list=atomic
io.k8s.api.rbac.v1.RoleRef map=atomic
io.k8s.api.rbac.v1.Subject map=atomic
io.k8s.api.storage.v1.CSIDriverSpec
    tokenRequests list=atomic
    volumeLifecycleModes list=set
io.k8s.api.storage.v1.CSINodeDriver
    topologyKeys list=atomic
io.k8s.api.storage.v1.CSINodeSpec
    drivers list=map:name patch=merge:name
io.k8s.api.storage.v1.StorageClass
    allowedTopologies list=atomic
    mountOptions list=atomic
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionNames
    categories list=atomic
    shortNames list=atomic
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionSpec
    versions list=atomic
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus
    conditions list=map:type
    storedVersions list=atomic
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionVersion
    additionalPrinterColumns list=atomic
    selectableFields list=atomic
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps
    allOf list=atomic
    anyOf list=atomic
    enum list=atomic
    oneOf list=atomic
    required list=atomic
    x-kubernetes-list-map-keys list=atomic
    x-kubernetes-validations list=map:rule patch=merge:rule
io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.WebhookConversion
    conversionReviewVersions list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.APIGroup
    serverAddressByClientCIDRs list=atomic
    versions list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.APIGroupList
    groups list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.APIResource
    categories list=atomic
    shortNames list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList
    resources list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions
    serverAddressByClientCIDRs list=atomic
    versions list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions
    dryRun list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.FieldSelectorRequirement
    values list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector map=atomic
    matchExpressions list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement
    values list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta
    finalizers list=set patch=merge
    managedFields list=atomic
    ownerReferences list=map:uid patch=merge:uid
io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference map=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.Status
    details list=atomic
io.k8s.apimachinery.pkg.apis.meta.v1.StatusDetails
    causes list=atomic
";

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(path: &str) -> Value {
        serde_json::from_slice(&v3_document(path).expect("document exists")).unwrap()
    }

    /// Every `$ref` (a string value under the key `$ref`) in a document.
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    match (key.as_str(), child) {
                        ("$ref", Value::String(target)) => found.push(target.clone()),
                        _ => refs(child, found),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }

    fn assert_refs_resolve(document: &Value, prefix: &str, definitions: &str) {
        let mut found = Vec::new();
        refs(document, &mut found);
        assert!(!found.is_empty());
        for target in found {
            let name = target
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{target} is not under {prefix}"));
            assert!(
                document
                    .pointer(definitions)
                    .and_then(|d| d.get(name))
                    .is_some(),
                "{target} does not resolve"
            );
        }
    }

    fn gvk(group: &str, version: &str, kind: &str) -> Value {
        json!({"group": group, "kind": kind, "version": version})
    }

    #[test]
    fn openapi_index_lists_documents_with_hashes() {
        let index = v3_index();
        let paths = index["paths"].as_object().unwrap();
        for path in [
            "api",
            "api/v1",
            "apis",
            "apis/apps",
            "apis/apps/v1",
            "apis/autoscaling/v2",
        ] {
            let url = paths[path]["serverRelativeURL"].as_str().unwrap();
            let hash = url
                .strip_prefix(&format!("/openapi/v3/{path}?hash="))
                .unwrap();
            assert_eq!(hash.len(), 128);
            assert_eq!(Some(hash.to_string()), v3_hash(path));
            assert_eq!(hash, content_hash(&v3_document(path).unwrap()));
        }
        assert!(v3_document("apis/nosuch/v1").is_none());
        assert_eq!(v3_document("/apis/apps/v1/"), v3_document("apis/apps/v1"));
    }

    #[test]
    fn openapi_apps_document_describes_deployments() {
        let doc = v3("apis/apps/v1");
        assert_eq!(doc["openapi"], "3.0.0");
        let schemas = &doc["components"]["schemas"];
        let deployment = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["x-kubernetes-group-version-kind"],
            json!([gvk("apps", "v1", "Deployment")])
        );
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"],
            json!([gvk("apps", "v1", "DeploymentList")])
        );
        // A field's description survives next to its reference.
        assert_eq!(
            deployment["properties"]["metadata"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );

        let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        let patch = &item["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"],
            gvk("apps", "v1", "Deployment")
        );
        assert_eq!(patch["x-kubernetes-action"], "patch");
        assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let content = patch["requestBody"]["content"].as_object().unwrap();
        for content_type in PATCH_TYPES {
            assert_eq!(
                content[*content_type]["schema"]["$ref"],
                "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
            );
        }
        let path_params: Vec<&str> = item["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(path_params, ["name", "namespace", "pretty"]);

        let collection = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
        let list_params: Vec<&str> = collection["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for name in [
            "labelSelector",
            "fieldSelector",
            "limit",
            "continue",
            "resourceVersion",
            "watch",
        ] {
            assert!(
                list_params.contains(&name),
                "{name} missing from {list_params:?}"
            );
        }
        assert_eq!(collection["get"]["x-kubernetes-action"], "list");
        assert_eq!(
            collection["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
        );
        assert_eq!(collection["post"]["x-kubernetes-action"], "post");
        assert_eq!(
            collection["delete"]["x-kubernetes-action"],
            "deletecollection"
        );
        let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            gvk("autoscaling", "v1", "Scale")
        );
        assert!(
            schemas["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"]
                .is_array()
        );
        assert!(doc["paths"]["/apis/apps/v1/deployments"]["get"].is_object());
        assert!(
            doc["paths"]["/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}"]["get"]
                .is_object()
        );
    }

    /// What kubectl's field-validation check does: every PATCH operation of a kind
    /// declares `fieldValidation`. What `kubectl explain` does: the kind found on the
    /// resource's paths has a schema.
    #[test]
    fn openapi_every_resource_supports_field_validation_and_explain() {
        for entry in v3_entries() {
            let doc = v3(&entry.path);
            let paths = doc["paths"].as_object().unwrap();
            for op in paths.values().filter_map(|item| item.get("patch")) {
                let has_param = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"));
                let is_connect = op["x-kubernetes-action"] == "connect";
                assert!(
                    has_param || is_connect,
                    "{} lacks fieldValidation",
                    op["operationId"]
                );
            }
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            // Resource metrics have no typed schema (as with metrics-server's).
            for info in resources::builtin()
                .iter()
                .filter(|r| entry.path == group_version_prefix(r.group, r.version)[1..])
                .filter(|r| r.group != resources::METRICS_GROUP)
            {
                let prefix = group_version_prefix(info.group, info.version);
                let scope = if info.namespaced {
                    "namespaces/{namespace}/"
                } else {
                    ""
                };
                let collection = format!("{prefix}/{scope}{}", info.plural);
                let op = ["get", "post"]
                    .iter()
                    .find_map(|m| paths.get(&collection).and_then(|p| p.get(*m)))
                    .unwrap_or_else(|| panic!("no operation on {collection}"));
                let kind = &op["x-kubernetes-group-version-kind"];
                assert_eq!(kind, &gvk(info.group, info.version, info.kind));
                let found = schemas.values().any(|s| {
                    s["x-kubernetes-group-version-kind"]
                        .as_array()
                        .is_some_and(|gvks| gvks.contains(kind))
                });
                assert!(found, "no schema for {kind}");
            }
        }
    }

    #[test]
    fn openapi_refs_resolve_in_every_document() {
        for entry in v3_entries() {
            let doc = v3(&entry.path);
            assert_refs_resolve(&doc, "#/components/schemas/", "/components/schemas");
        }
        let v2: Value = serde_json::from_slice(&v2_document()).unwrap();
        assert_refs_resolve(&v2, "#/definitions/", "/definitions");
    }

    #[test]
    fn openapi_schemas_carry_patch_metadata() {
        let doc = v3("api/v1");
        let schemas = &doc["components"]["schemas"];
        let field = |schema: &str, property: &str| schemas[schema]["properties"][property].clone();
        let containers = field("io.k8s.api.core.v1.PodSpec", "containers");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
        assert_eq!(
            field("io.k8s.api.core.v1.Container", "env")["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            field("io.k8s.api.core.v1.Container", "ports")["x-kubernetes-patch-merge-key"],
            "containerPort"
        );
        assert_eq!(
            field("io.k8s.api.core.v1.Container", "volumeMounts")["x-kubernetes-patch-merge-key"],
            "mountPath"
        );
        assert_eq!(
            field("io.k8s.api.core.v1.ServiceSpec", "ports")["x-kubernetes-patch-merge-key"],
            "port"
        );
        assert_eq!(
            field("io.k8s.api.core.v1.PodSpec", "volumes")["x-kubernetes-patch-strategy"],
            "merge,retainKeys"
        );
        let meta = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
        assert_eq!(
            field(meta, "finalizers")["x-kubernetes-patch-strategy"],
            "merge"
        );
        assert_eq!(
            field(meta, "ownerReferences")["x-kubernetes-patch-merge-key"],
            "uid"
        );
        assert_eq!(
            field("io.k8s.api.core.v1.PodStatus", "conditions")["x-kubernetes-patch-merge-key"],
            "type"
        );
        assert_eq!(
            schemas["io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"]["x-kubernetes-map-type"],
            "atomic"
        );
        // int-or-string types read as their names in kubectl explain.
        let int_or_string = &schemas["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!(int_or_string["format"], "int-or-string");
        assert!(int_or_string.get("type").is_none());

        let apps = v3("apis/apps/v1");
        let strategy = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]
            ["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
    }

    #[test]
    fn openapi_core_document_has_subresources_and_meta_kinds() {
        let doc = v3("api/v1");
        let paths = &doc["paths"];
        let pods = "/api/v1/namespaces/{namespace}/pods/{name}";
        assert_eq!(
            paths[format!("{pods}/status")]["patch"]["x-kubernetes-group-version-kind"],
            gvk("", "v1", "Pod")
        );
        assert_eq!(
            paths[format!("{pods}/eviction")]["post"]["x-kubernetes-group-version-kind"],
            gvk("policy", "v1", "Eviction")
        );
        assert_eq!(
            paths[format!("{pods}/log")]["get"]["operationId"],
            "readCoreV1NamespacedPodLog"
        );
        assert_eq!(
            paths[format!("{pods}/exec")]["post"]["x-kubernetes-group-version-kind"],
            gvk("", "v1", "PodExecOptions")
        );
        assert!(paths[format!("{pods}/proxy/{{path}}")]["get"].is_object());
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token"]["post"]["x-kubernetes-group-version-kind"],
            gvk("authentication.k8s.io", "v1", "TokenRequest")
        );
        assert!(paths["/api/v1/namespaces/{name}/finalize"]["put"].is_object());
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/bindings"]["post"]["x-kubernetes-action"],
            "post"
        );
        assert!(paths["/api/v1/componentstatuses/{name}"]["patch"].is_null());
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["io.k8s.apimachinery.pkg.apis.meta.v1.Status"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Status")])
        );
        let delete_kinds = schemas["io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"]["x-kubernetes-group-version-kind"]
            .as_array()
            .unwrap();
        assert!(delete_kinds.contains(&gvk("apps", "v1", "DeleteOptions")));
        // No schema was renamed by a name clash.
        let names = schemas.as_object().unwrap();
        for name in names.keys() {
            assert!(name.starts_with("io.k8s."), "{name}");
            if let Some(base) = name.strip_suffix('2') {
                assert!(!names.contains_key(base), "{name} clashes");
            }
        }
        let review = v3("apis/authorization.k8s.io/v1");
        let sar = &review["paths"]["/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews"];
        assert_eq!(sar["post"]["x-kubernetes-action"], "post");
        assert!(sar.get("get").is_none());
    }

    #[test]
    fn openapi_group_and_root_documents() {
        let apis = v3("apis");
        assert_eq!(
            apis["paths"]["/apis/"]["get"]["operationId"],
            "getAPIVersions"
        );
        let apps = v3("apis/apps");
        assert_eq!(
            apps["paths"]["/apis/apps/"]["get"]["operationId"],
            "getAppsAPIGroup"
        );
        let api = v3("api");
        assert!(
            api["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.APIVersions"]
                .is_object()
        );
        let rbac = v3("apis/rbac.authorization.k8s.io/v1");
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["patch"]["operationId"],
            "patchRbacAuthorizationV1ClusterRole"
        );
        assert_eq!(
            rbac["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles"]["get"]["tags"],
            json!(["rbacAuthorization_v1"])
        );
    }

    #[test]
    fn openapi_v2_document_is_swagger() {
        let doc: Value = serde_json::from_slice(&v2_document()).unwrap();
        assert_eq!(doc["swagger"], "2.0");
        let definitions = &doc["definitions"];
        assert_eq!(
            definitions["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"],
            json!([gvk("", "v1", "Pod")])
        );
        assert_eq!(
            definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["x-kubernetes-patch-merge-key"],
            "name"
        );
        // Swagger 2.0 keeps the description next to the reference.
        assert_eq!(
            definitions["io.k8s.api.core.v1.Pod"]["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert_eq!(
            definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"],
            "string"
        );
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["consumes"], json!(PATCH_TYPES));
        let params = patch["parameters"].as_array().unwrap();
        assert_eq!(params[0]["in"], "body");
        assert!(
            params
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["type"] == "string")
        );
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"].is_object());
        assert!(
            doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}/status"]["put"]
                .is_object()
        );
    }

    #[test]
    fn openapi_extension_table_parses() {
        let table = field_extensions();
        let pod_spec = &table["io.k8s.api.core.v1.PodSpec"];
        let (_, containers) = pod_spec
            .fields
            .iter()
            .find(|(p, _)| *p == "containers")
            .unwrap();
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            table["io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"].map_type,
            Some("atomic")
        );
        // Every schema named in the table exists in some document.
        let v2: Value = serde_json::from_slice(&v2_document()).unwrap();
        let definitions = v2["definitions"].as_object().unwrap();
        let known = table
            .keys()
            .filter(|name| definitions.contains_key(**name))
            .count();
        assert!(
            known * 10 >= table.len() * 9,
            "{known} of {} known",
            table.len()
        );
    }

    /// The fields of a protobuf message: field number and payload (empty for
    /// varints and fixed-width fields, which these tests do not read).
    fn proto_fields(mut bytes: &[u8]) -> Vec<(u64, &[u8])> {
        fn varint(bytes: &mut &[u8]) -> u64 {
            let mut value = 0;
            for shift in (0..64).step_by(7) {
                let byte = bytes[0];
                *bytes = &bytes[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    break;
                }
            }
            value
        }
        let mut fields = Vec::new();
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            let payload: &[u8] = match key & 7 {
                0 => {
                    varint(&mut bytes);
                    &[]
                }
                1 => {
                    bytes = &bytes[8..];
                    &[]
                }
                2 => {
                    let len = varint(&mut bytes) as usize;
                    let (payload, rest) = bytes.split_at(len);
                    bytes = rest;
                    payload
                }
                wire => panic!("unexpected wire type {wire}"),
            };
            fields.push((key >> 3, payload));
        }
        fields
    }

    fn proto_field(bytes: &[u8], number: u64) -> Vec<&[u8]> {
        proto_fields(bytes)
            .into_iter()
            .filter(|(n, _)| *n == number)
            .map(|(_, payload)| payload)
            .collect()
    }

    /// The value of a `Named*` entry (`name = 1`, `value = 2`) in a repeated field.
    fn proto_named<'a>(bytes: &'a [u8], number: u64, name: &str) -> &'a [u8] {
        proto_field(bytes, number)
            .into_iter()
            .find(|entry| proto_field(entry, 1).first() == Some(&name.as_bytes()))
            .and_then(|entry| proto_field(entry, 2).first().copied())
            .unwrap_or_else(|| panic!("no {name}"))
    }

    /// A vendor extension of a message, its `Any.yaml` read as JSON.
    fn proto_extension(bytes: &[u8], number: u64, name: &str) -> Value {
        let any = proto_named(bytes, number, name);
        serde_json::from_slice(proto_field(any, 2)[0]).unwrap()
    }

    #[test]
    fn openapi_knows_the_type_of_every_resource() {
        for info in resources::builtin()
            .iter()
            .filter(|r| r.group != resources::METRICS_GROUP)
        {
            let typed = typed_kind(info.group, info.version, info.kind);
            assert!(
                typed.is_some(),
                "no type for {} {}",
                info.api_version(),
                info.kind
            );
        }
        assert!(v2_wants_protobuf(V2_PROTOBUF_ACCEPT));
        assert!(!v2_wants_protobuf("application/json"));
    }

    #[test]
    fn openapi_v2_protobuf_is_gnostic_document() {
        let document = v2_document_protobuf();
        assert_eq!(proto_field(&document, 1), [b"2.0"]);
        let definitions = proto_field(&document, 9)[0];
        let deployment = proto_named(definitions, 1, "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            proto_extension(deployment, 31, "x-kubernetes-group-version-kind"),
            json!([gvk("apps", "v1", "Deployment")])
        );
        let pod_spec = proto_named(definitions, 1, "io.k8s.api.core.v1.PodSpec");
        let properties = proto_field(pod_spec, 25)[0];
        let containers = proto_named(properties, 1, "containers");
        assert_eq!(
            proto_extension(containers, 31, "x-kubernetes-patch-merge-key"),
            "name"
        );
        // type = 22 (TypeItem), items = 23 (ItemsItem) with a $ref (1).
        assert_eq!(proto_field(proto_field(containers, 22)[0], 1), [b"array"]);
        let item = proto_field(proto_field(containers, 23)[0], 1)[0];
        assert_eq!(
            proto_field(item, 1),
            [b"#/definitions/io.k8s.api.core.v1.Container"]
        );

        let paths = proto_field(&document, 8)[0];
        let path = proto_named(
            paths,
            2,
            "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        );
        let patch = proto_field(path, 8)[0];
        assert_eq!(proto_field(patch, 5), [b"patchAppsV1NamespacedDeployment"]);
        assert_eq!(
            proto_extension(patch, 13, "x-kubernetes-group-version-kind"),
            gvk("apps", "v1", "Deployment")
        );
        let query_names: Vec<&[u8]> = proto_field(patch, 8)
            .into_iter()
            .map(|item| proto_field(item, 1)[0])
            .filter_map(|parameter| proto_field(parameter, 2).first().copied())
            .filter_map(|non_body| proto_field(non_body, 3).first().copied())
            .map(|query| proto_field(query, 4)[0])
            .collect();
        assert!(query_names.contains(&b"fieldValidation".as_slice()));
        // The body parameter comes first, with the Patch schema.
        let body = proto_field(proto_field(proto_field(patch, 8)[0], 1)[0], 1)[0];
        assert_eq!(proto_field(body, 3), [b"body"]);
    }
}
