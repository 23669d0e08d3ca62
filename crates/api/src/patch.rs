//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes'
//! strategic merge patch.
//!
//! The strategic merge patch follows `k8s.io/apimachinery/pkg/util/strategicpatch`
//! as the API server applies it (`StrategicMergeMapPatch`): maps merge
//! recursively, `null` deletes a field, lists of objects that the Go types tag
//! `patchStrategy:"merge" patchMergeKey:"<key>"` merge element by element on that
//! key, primitive lists tagged `merge` are unioned, and every other list is
//! replaced. The tags are transcribed into a small type graph ([`Ty`]) so that a
//! lookup knows its context: `ports` merges on `containerPort` inside a container
//! but on `port` inside a ServiceSpec. Kinds outside the graph get JSON merge
//! patch semantics (lists replaced), except that built-in kinds still merge
//! `metadata.finalizers` and `metadata.ownerReferences`.
//!
//! Directives: `$patch: replace|delete` in a map, `$patch: replace|delete` as a
//! list element, `$retainKeys`, `$deleteFromPrimitiveList/<field>` and
//! `$setElementOrder/<field>` (the order kubectl asks for, merged with the order
//! of the live list the way upstream does).
use serde_json::{Map, Value};

use crate::BUILT_IN_GROUPS;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PatchError {
    /// The patch document itself is malformed (HTTP 400).
    #[error("{0}")]
    BadRequest(String),
    /// The patch is well formed but can not be applied to this object (HTTP 422),
    /// e.g. a JSON patch `test` that fails or a path that does not exist.
    #[error("{0}")]
    Unprocessable(String),
}

type PatchResult<T> = Result<T, PatchError>;

fn bad(message: impl Into<String>) -> PatchError {
    PatchError::BadRequest(message.into())
}

fn unprocessable(message: impl Into<String>) -> PatchError {
    PatchError::Unprocessable(message.into())
}

// ---------------------------------------------------------------------------
// JSON patch (RFC 6902)
// ---------------------------------------------------------------------------

/// One JSON patch operation, its pointers already split into reference tokens.
#[derive(Debug)]
enum Operation {
    Add { path: Pointer, value: Value },
    Remove { path: Pointer },
    Replace { path: Pointer, value: Value },
    Move { from: Pointer, path: Pointer },
    Copy { from: Pointer, path: Pointer },
    Test { path: Pointer, value: Value },
}

/// A JSON pointer (RFC 6901): its text and its unescaped reference tokens.
#[derive(Clone, Debug)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn parse(text: &str) -> PatchResult<Self> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(bad(format!(
                "invalid JSON pointer {text:?}: it must be empty or start with '/'"
            )));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(bad(format!(
                            "invalid JSON pointer {text:?}: '~' must be followed by '0' or '1'"
                        )));
                    }
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    fn parent_tokens(&self) -> &[String] {
        &self.tokens[..self.tokens.len().saturating_sub(1)]
    }

    fn last(&self) -> Option<&str> {
        self.tokens.last().map(String::as_str)
    }

    /// Whether `self` is a proper prefix of `other` (a move into a child).
    fn is_proper_prefix_of(&self, other: &Pointer) -> bool {
        self.tokens.len() < other.tokens.len() && other.tokens.starts_with(&self.tokens)
    }
}

fn parse_operations(patch: &Value) -> PatchResult<Vec<Operation>> {
    let Value::Array(items) = patch else {
        return Err(bad(
            "a JSON patch must be an array of operations, e.g. [{\"op\": \"add\", \"path\": \"/a\", \"value\": 1}]",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_operation(i, item))
        .collect()
}

fn parse_operation(index: usize, item: &Value) -> PatchResult<Operation> {
    let Value::Object(fields) = item else {
        return Err(bad(format!(
            "JSON patch operation {index} is not an object"
        )));
    };
    let op = fields
        .get("op")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("JSON patch operation {index} has no \"op\"")))?;
    let pointer = |name: &str| -> PatchResult<Pointer> {
        let text = fields.get(name).and_then(Value::as_str).ok_or_else(|| {
            bad(format!(
                "JSON patch operation {index} ({op}) has no string {name:?}"
            ))
        })?;
        Pointer::parse(text)
    };
    let value = || -> PatchResult<Value> {
        fields.get("value").cloned().ok_or_else(|| {
            bad(format!(
                "JSON patch operation {index} ({op}) has no \"value\""
            ))
        })
    };
    Ok(match op {
        "add" => Operation::Add {
            path: pointer("path")?,
            value: value()?,
        },
        "remove" => Operation::Remove {
            path: pointer("path")?,
        },
        "replace" => Operation::Replace {
            path: pointer("path")?,
            value: value()?,
        },
        "move" => Operation::Move {
            from: pointer("from")?,
            path: pointer("path")?,
        },
        "copy" => Operation::Copy {
            from: pointer("from")?,
            path: pointer("path")?,
        },
        "test" => Operation::Test {
            path: pointer("path")?,
            value: value()?,
        },
        other => return Err(bad(format!("Unexpected kind: {other}"))),
    })
}

/// Walks the tokens down from `doc`.
fn resolve<'a>(doc: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get(token),
        Value::Array(items) => array_index(token).and_then(|i| items.get(i)),
        _ => None,
    })
}

fn resolve_mut<'a>(doc: &'a mut Value, tokens: &[String]) -> Option<&'a mut Value> {
    tokens.iter().try_fold(doc, |current, token| match current {
        Value::Object(map) => map.get_mut(token),
        Value::Array(items) => array_index(token).and_then(|i| items.get_mut(i)),
        _ => None,
    })
}

/// An array index token: decimal digits without leading zeros.
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0"
        || (!token.is_empty()
            && !token.starts_with('0')
            && token.bytes().all(|b| b.is_ascii_digit()));
    if canonical { token.parse().ok() } else { None }
}

fn missing(op: &str, path: &Pointer) -> PatchError {
    unprocessable(format!(
        "{op} operation does not apply: doc is missing path: \"{}\": missing value",
        path.text
    ))
}

fn invalid_index(token: &str) -> PatchError {
    unprocessable(format!(
        "Unable to access invalid index: {token}: invalid index referenced"
    ))
}

fn json_add(doc: &mut Value, path: &Pointer, value: Value, op: &str) -> PatchResult<()> {
    let Some(last) = path.last() else {
        *doc = value;
        return Ok(());
    };
    let last = last.to_string();
    match resolve_mut(doc, path.parent_tokens()) {
        Some(Value::Object(map)) => {
            map.insert(last, value);
            Ok(())
        }
        Some(Value::Array(items)) => {
            if last == "-" {
                items.push(value);
                return Ok(());
            }
            match array_index(&last) {
                Some(i) if i <= items.len() => {
                    items.insert(i, value);
                    Ok(())
                }
                _ => Err(invalid_index(&last)),
            }
        }
        _ => Err(missing(op, path)),
    }
}

fn json_remove(doc: &mut Value, path: &Pointer) -> PatchResult<Value> {
    let Some(last) = path.last() else {
        return Err(missing("remove", path));
    };
    match resolve_mut(doc, path.parent_tokens()) {
        Some(Value::Object(map)) => map.shift_remove(last).ok_or_else(|| {
            unprocessable(format!(
                "error in remove for path: '{}': Unable to remove nonexistent key: {last}: missing value",
                path.text
            ))
        }),
        Some(Value::Array(items)) => match array_index(last) {
            Some(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(unprocessable(format!(
                "error in remove for path: '{}': Unable to access invalid index: {last}: invalid index referenced",
                path.text
            ))),
        },
        _ => Err(missing("remove", path)),
    }
}

fn apply_operation(doc: &mut Value, operation: Operation) -> PatchResult<()> {
    match operation {
        Operation::Add { path, value } => json_add(doc, &path, value, "add"),
        Operation::Remove { path } => json_remove(doc, &path).map(|_| ()),
        Operation::Replace { path, value } => {
            if path.tokens.is_empty() {
                *doc = value;
                return Ok(());
            }
            let Some(parent) = resolve_mut(doc, path.parent_tokens()) else {
                return Err(unprocessable(format!(
                    "replace operation does not apply: doc is missing path: {}: missing value",
                    path.text
                )));
            };
            let last = path.last().unwrap_or_default();
            let slot = match parent {
                Value::Object(map) => map.get_mut(last),
                Value::Array(items) => match array_index(last) {
                    Some(i) => items.get_mut(i),
                    None => return Err(invalid_index(last)),
                },
                _ => None,
            };
            match slot {
                Some(slot) => {
                    *slot = value;
                    Ok(())
                }
                None => Err(unprocessable(format!(
                    "replace operation does not apply: doc is missing key: {}: missing value",
                    path.text
                ))),
            }
        }
        Operation::Move { from, path } => {
            if from.is_proper_prefix_of(&path) {
                return Err(unprocessable(format!(
                    "move operation does not apply: cannot move {} into its own child {}",
                    from.text, path.text
                )));
            }
            if resolve(doc, &from.tokens).is_none() {
                return Err(unprocessable(format!(
                    "move operation does not apply: doc is missing from path: {}: missing value",
                    from.text
                )));
            }
            let value = if from.tokens.is_empty() {
                std::mem::take(doc)
            } else {
                json_remove(doc, &from)?
            };
            json_add(doc, &path, value, "move")
        }
        Operation::Copy { from, path } => {
            let value = resolve(doc, &from.tokens).cloned().ok_or_else(|| {
                unprocessable(format!(
                    "copy operation does not apply: doc is missing from path: {}: missing value",
                    from.text
                ))
            })?;
            json_add(doc, &path, value, "copy")
        }
        Operation::Test { path, value } => {
            let passed = match resolve(doc, &path.tokens) {
                Some(actual) => json_equal(actual, &value),
                None => value.is_null(),
            };
            if passed {
                Ok(())
            } else {
                Err(unprocessable(format!(
                    "testing value {} failed: test failed",
                    path.text
                )))
            }
        }
    }
}

/// Applies a JSON patch document (an array of operations) to `target`.
pub fn apply_json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let operations = parse_operations(patch)?;
    let mut doc = target.clone();
    for operation in operations {
        apply_operation(&mut doc, operation)?;
    }
    Ok(doc)
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)
// ---------------------------------------------------------------------------

/// Applies a JSON merge patch to `target`.
pub fn apply_merge_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        // Upstream (evanphx/json-patch) rejects a patch that is not an object.
        return Err(bad("Invalid JSON Patch"));
    }
    let mut doc = target.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

// ---------------------------------------------------------------------------
// Strategic merge patch: the patch metadata of the built-in types
// ---------------------------------------------------------------------------

/// A node of the type graph: the Go types whose fields carry patch tags, and the
/// types on the paths leading to them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    /// No patch metadata: maps merge, lists are replaced.
    Unknown,
    /// A built-in kind without tagged fields of its own (only its ObjectMeta).
    Object,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    /// core/v1 PodTemplate (the kind).
    PodTemplate,
    /// PodTemplateSpec (`metadata` + `spec`).
    PodTemplateSpec,
    /// Container and EphemeralContainer.
    Container,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, ReplicationController, Job.
    Workload,
    /// Their specs: `template` is a PodTemplateSpec.
    WorkloadSpec,
    /// A status whose `conditions` merge on `type`.
    ConditionsStatus,
    CronJob,
    CronJobSpec,
    /// JobTemplateSpec (`metadata` + `spec`).
    JobTemplateSpec,
    Service,
    ServiceSpec,
    Node,
    NodeSpec,
    NodeStatus,
    ServiceAccount,
    /// A kind whose only tagged list is `status.conditions` (merge on `type`).
    StatusConditions,
    /// core/v1 ComponentStatus: top-level `conditions` merge on `type`.
    ComponentStatus,
    /// Mutating/ValidatingWebhookConfiguration: `webhooks` merge on `name`.
    WebhookConfiguration,
    CsiNode,
    CsiNodeSpec,
}

/// How a list field is patched (its `patchStrategy` and `patchMergeKey` tags), as
/// [`list_strategy`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// No `patchStrategy:"merge"`: the patch's list replaces the live one.
    Replace,
    /// `patchStrategy:"merge"` with a `patchMergeKey` (lists of objects).
    MergeOnKey(&'static str),
    /// `patchStrategy:"merge"` without a key (lists of scalars, e.g. finalizers).
    Merge,
}

/// The patch metadata of one field: its type and, for lists, its strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FieldMeta {
    ty: Ty,
    list: ListStrategy,
}

impl Ty {
    /// Types that carry an ObjectMeta under `metadata`.
    fn has_object_meta(self) -> bool {
        !matches!(
            self,
            Ty::Unknown
                | Ty::ObjectMeta
                | Ty::PodSpec
                | Ty::PodStatus
                | Ty::Container
                | Ty::WorkloadSpec
                | Ty::ConditionsStatus
                | Ty::CronJobSpec
                | Ty::ServiceSpec
                | Ty::NodeSpec
                | Ty::NodeStatus
                | Ty::CsiNodeSpec
        )
    }

    /// The type of the top-level object of a kind (`group` "" for core).
    fn of_kind(group: &str, kind: &str) -> Ty {
        match (group, kind) {
            ("", "Pod") => Ty::Pod,
            ("", "PodTemplate") => Ty::PodTemplate,
            ("", "ReplicationController")
            | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job") => Ty::Workload,
            ("batch", "CronJob") => Ty::CronJob,
            ("", "Service") => Ty::Service,
            ("", "Node") => Ty::Node,
            ("", "ServiceAccount") => Ty::ServiceAccount,
            ("", "Namespace" | "PersistentVolumeClaim")
            | ("autoscaling", "HorizontalPodAutoscaler")
            | ("policy", "PodDisruptionBudget")
            | ("apiregistration.k8s.io", "APIService")
            | ("flowcontrol.apiserver.k8s.io", "FlowSchema" | "PriorityLevelConfiguration") => {
                Ty::StatusConditions
            }
            ("", "ComponentStatus") => Ty::ComponentStatus,
            (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
            ) => Ty::WebhookConfiguration,
            ("storage.k8s.io", "CSINode") => Ty::CsiNode,
            (group, _) if BUILT_IN_GROUPS.contains(&group) => Ty::Object,
            // Custom resources have no Go types: JSON merge patch semantics.
            _ => Ty::Unknown,
        }
    }

    /// The patch metadata of field `name` of this type (the Go struct tags).
    fn field(self, name: &str) -> FieldMeta {
        use ListStrategy::{Merge, MergeOnKey, Replace};
        let (ty, list) = match (self, name) {
            (Ty::Unknown, _) => (Ty::Unknown, Replace),
            (ty, "metadata") if ty.has_object_meta() => (Ty::ObjectMeta, Replace),

            // ObjectMeta
            (Ty::ObjectMeta, "finalizers") => (Ty::Unknown, Merge),
            (Ty::ObjectMeta, "ownerReferences") => (Ty::Unknown, MergeOnKey("uid")),

            // Pods and pod templates
            (Ty::Pod | Ty::PodTemplateSpec, "spec") => (Ty::PodSpec, Replace),
            (Ty::Pod, "status") => (Ty::PodStatus, Replace),
            (Ty::PodTemplate | Ty::WorkloadSpec, "template") => (Ty::PodTemplateSpec, Replace),
            (Ty::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                (Ty::Container, MergeOnKey("name"))
            }
            (
                Ty::PodSpec,
                "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates",
            ) => (Ty::Unknown, MergeOnKey("name")),
            (Ty::PodSpec, "hostAliases") => (Ty::Unknown, MergeOnKey("ip")),
            (Ty::PodSpec, "topologySpreadConstraints") => (Ty::Unknown, MergeOnKey("topologyKey")),
            (Ty::Container, "ports") => (Ty::Unknown, MergeOnKey("containerPort")),
            (Ty::Container, "env") => (Ty::Unknown, MergeOnKey("name")),
            (Ty::Container, "volumeMounts") => (Ty::Unknown, MergeOnKey("mountPath")),
            (Ty::Container, "volumeDevices") => (Ty::Unknown, MergeOnKey("devicePath")),
            (Ty::PodStatus, "conditions") => (Ty::Unknown, MergeOnKey("type")),
            (Ty::PodStatus, "podIPs" | "hostIPs") => (Ty::Unknown, MergeOnKey("ip")),
            (Ty::PodStatus, "resourceClaimStatuses") => (Ty::Unknown, MergeOnKey("name")),

            // Workloads
            (Ty::Workload | Ty::JobTemplateSpec, "spec") => (Ty::WorkloadSpec, Replace),
            (Ty::Workload | Ty::Service | Ty::StatusConditions, "status") => {
                (Ty::ConditionsStatus, Replace)
            }
            (Ty::CronJob, "spec") => (Ty::CronJobSpec, Replace),
            (Ty::CronJobSpec, "jobTemplate") => (Ty::JobTemplateSpec, Replace),
            (Ty::ConditionsStatus | Ty::NodeStatus | Ty::ComponentStatus, "conditions") => {
                (Ty::Unknown, MergeOnKey("type"))
            }

            // Services, nodes and the rest
            (Ty::Service, "spec") => (Ty::ServiceSpec, Replace),
            (Ty::ServiceSpec, "ports") => (Ty::Unknown, MergeOnKey("port")),
            (Ty::Node, "spec") => (Ty::NodeSpec, Replace),
            (Ty::Node, "status") => (Ty::NodeStatus, Replace),
            (Ty::NodeSpec, "podCIDRs") => (Ty::Unknown, Merge),
            (Ty::NodeStatus, "addresses") => (Ty::Unknown, MergeOnKey("type")),
            (Ty::ServiceAccount, "secrets") => (Ty::Unknown, MergeOnKey("name")),
            (Ty::WebhookConfiguration, "webhooks") => (Ty::Unknown, MergeOnKey("name")),
            (Ty::CsiNode, "spec") => (Ty::CsiNodeSpec, Replace),
            (Ty::CsiNodeSpec, "drivers") => (Ty::Unknown, MergeOnKey("name")),

            _ => (Ty::Unknown, Replace),
        };
        FieldMeta { ty, list }
    }
}

/// The patch strategy of the list field at `path` in an object of the given kind
/// (`group` "" for core), read from the same type graph the strategic merge patch
/// uses. `path` names the fields from the object's root and skips list elements:
/// `["spec", "template", "spec", "containers", "ports"]` is
/// `MergeOnKey("containerPort")`, `["metadata", "finalizers"]` of a built-in kind
/// is `Merge`. Fields without a tag, kinds outside the graph and the empty path
/// are `Replace`.
pub fn list_strategy(group: &str, kind: &str, path: &[&str]) -> ListStrategy {
    let mut ty = Ty::of_kind(group, kind);
    let mut list = ListStrategy::Replace;
    for name in path {
        let meta = ty.field(name);
        ty = meta.ty;
        list = meta.list;
    }
    list
}

// ---------------------------------------------------------------------------
// Strategic merge patch: applying
// ---------------------------------------------------------------------------

const DIRECTIVE_MARKER: &str = "$patch";
const RETAIN_KEYS_DIRECTIVE: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST_PREFIX: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER_PREFIX: &str = "$setElementOrder";

/// Applies a strategic merge patch to `target`, an object of the given kind
/// (`group` is "" for core). Lists are merged by their patch merge key where the
/// Kubernetes type declares one, and the `$patch`, `$retainKeys`,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` directives are honoured.
pub fn apply_strategic_merge_patch(
    target: &Value,
    patch: &Value,
    group: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(bad("a strategic merge patch must be a JSON object"));
    };
    let original = match target {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        _ => return Err(unprocessable("the object to patch is not a JSON object")),
    };
    let merged = merge_map(original, patch.clone(), Ty::of_kind(group, kind))?;
    Ok(Value::Object(merged))
}

/// Merges a patch map into an original map of type `ty` (upstream's `mergeMap`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ty: Ty,
) -> PatchResult<Map<String, Value>> {
    if let Some(directive) = patch.get(DIRECTIVE_MARKER).cloned() {
        return match directive.as_str() {
            Some("replace") => {
                patch.shift_remove(DIRECTIVE_MARKER);
                merge_map(Map::new(), patch, ty)
            }
            Some("delete") => Ok(Map::new()),
            _ => Err(bad(format!(
                "unknown patch type: {} in map: {}",
                go_format(&directive),
                go_format(&Value::Object(patch))
            ))),
        };
    }
    apply_retain_keys(&mut original, &mut patch)?;
    apply_set_element_order(&mut original, &mut patch, ty)?;

    let mut deletion_lists = Vec::new();
    for (key, value) in patch {
        if key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX) {
            let field = directive_field(&key, DELETE_FROM_PRIMITIVE_LIST_PREFIX)
                .ok_or_else(|| bad("invalid patch format of primitive list"))?;
            deletion_lists.push((field.to_string(), value));
            continue;
        }
        merge_field(&mut original, key, value, ty)?;
    }
    for (field, value) in deletion_lists {
        delete_from_primitive_list(&mut original, &field, value)?;
    }
    Ok(original)
}

/// The field a directive key such as `$setElementOrder/containers` refers to.
fn directive_field<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    let (head, field) = key.split_once('/')?;
    (head == prefix && !field.is_empty()).then_some(field)
}

/// Merges one patch field into the original map.
fn merge_field(
    original: &mut Map<String, Value>,
    key: String,
    patch_value: Value,
    ty: Ty,
) -> PatchResult<()> {
    if patch_value.is_null() {
        original.shift_remove(&key);
        return Ok(());
    }
    let meta = ty.field(&key);
    match original.get_mut(&key) {
        Some(slot) if !slot.is_null() => {
            let current = std::mem::take(slot);
            *slot = merge_value(current, patch_value, meta)?;
        }
        _ => {
            let value = clean_value(patch_value, meta)?;
            original.insert(key, value);
        }
    }
    Ok(())
}

/// Merges a patch value into the live value of a field with this metadata.
fn merge_value(current: Value, patch: Value, meta: FieldMeta) -> PatchResult<Value> {
    match (current, patch) {
        (Value::Object(current), Value::Object(patch)) => {
            Ok(Value::Object(merge_map(current, patch, meta.ty)?))
        }
        (Value::Array(current), Value::Array(patch)) => {
            Ok(Value::Array(merge_list(current, patch, meta)?))
        }
        // Different types, or scalars: the patch wins.
        (_, patch) => clean_value(patch, meta),
    }
}

/// A patch value taken for a field the original lacks: merged into an empty value
/// so that nulls and directives inside it do not end up in the object.
fn clean_value(patch: Value, meta: FieldMeta) -> PatchResult<Value> {
    match patch {
        Value::Object(patch) => Ok(Value::Object(merge_map(Map::new(), patch, meta.ty)?)),
        Value::Array(patch) => Ok(Value::Array(merge_list(Vec::new(), patch, meta)?)),
        scalar => Ok(scalar),
    }
}

/// Merges a patch list into the live list of a field (upstream's `mergeSliceHandler`).
fn merge_list(original: Vec<Value>, patch: Vec<Value>, meta: FieldMeta) -> PatchResult<Vec<Value>> {
    match meta.list {
        ListStrategy::Replace => Ok(patch),
        ListStrategy::Merge => merge_slice(original, patch, meta.ty, None),
        ListStrategy::MergeOnKey(key) => merge_slice(original, patch, meta.ty, Some(key)),
    }
}

/// Whether the elements of a list are objects or scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ElementKind {
    Map,
    Scalar,
}

/// The common element kind of the lists (upstream's `sliceElementType`).
fn element_kind(lists: &[&[Value]]) -> PatchResult<Option<ElementKind>> {
    let mut seen: Option<&Value> = None;
    for item in lists.iter().flat_map(|l| l.iter()) {
        if item.is_array() {
            return Err(unprocessable("lists of lists are not supported"));
        }
        match seen {
            None => seen = Some(item),
            Some(first) if std::mem::discriminant(first) != std::mem::discriminant(item) => {
                let shown: Vec<String> = lists
                    .iter()
                    .map(|l| go_format(&Value::Array(l.to_vec())))
                    .collect();
                return Err(unprocessable(format!(
                    "list element types are not identical: [{}]",
                    shown.join(" ")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(seen.map(|item| {
        if item.is_object() {
            ElementKind::Map
        } else {
            ElementKind::Scalar
        }
    }))
}

/// Merges two lists with the `merge` strategy (upstream's `mergeSlice`).
fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    elem_ty: Ty,
    merge_key: Option<&'static str>,
) -> PatchResult<Vec<Value>> {
    let Some(kind) = element_kind(&[&original, &patch])? else {
        return Ok(original);
    };
    let (original, patch, merged, key) = match kind {
        ElementKind::Scalar => {
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for item in original.iter().chain(patch.iter()) {
                if !merged.iter().any(|m| json_equal(m, item)) {
                    merged.push(item.clone());
                }
            }
            (original, patch, merged, None)
        }
        ElementKind::Map => {
            let key = merge_key.ok_or_else(|| {
                unprocessable("cannot merge lists without merge key for type map")
            })?;
            let (original, patch) = merge_special_elements(original, patch, key, elem_ty)?;
            let merged = merge_elements(original.clone(), &patch, key, elem_ty)?;
            (original, patch, merged, Some(key))
        }
    };
    let (patch_items, server_only) = partition_by_presence(merged, &patch, key)?;
    normalize_element_order(patch_items, server_only, &patch, &original, key, kind)
}

/// Handles the list elements carrying `$patch` (upstream's
/// `mergeSliceWithSpecialElements`): `delete` removes the matching live elements,
/// `replace` makes the patch's other elements the whole list.
fn merge_special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
    elem_ty: Ty,
) -> PatchResult<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE_MARKER) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = item.get(key).ok_or_else(|| no_merge_key(&item, key))?;
                original.retain(|live| !live.get(key).is_some_and(|v| json_equal(v, value)));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(bad("merging lists cannot yet be specified in the patch"));
            }
            _ => {
                return Err(bad(format!(
                    "unknown patch type: {} in map: {}",
                    go_format(directive),
                    go_format(&item)
                )));
            }
        }
    }
    if replace {
        let replacement = plain
            .into_iter()
            .map(|item| {
                clean_value(
                    item,
                    FieldMeta {
                        ty: elem_ty,
                        list: ListStrategy::Replace,
                    },
                )
            })
            .collect::<PatchResult<Vec<_>>>()?;
        Ok((replacement, Vec::new()))
    } else {
        Ok((original, plain))
    }
}

fn no_merge_key(item: &Value, key: &str) -> PatchError {
    bad(format!(
        "map: {} does not contain declared merge key: {key}",
        go_format(item)
    ))
}

/// Merges each patch element into the live element with the same merge key, or
/// appends it (upstream's `mergeSliceWithoutSpecialElements`).
fn merge_elements(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    elem_ty: Ty,
) -> PatchResult<Vec<Value>> {
    for item in patch {
        let value = item.get(key).ok_or_else(|| no_merge_key(item, key))?;
        let Value::Object(patch_map) = item.clone() else {
            return Err(bad(format!("{} is not a map", go_format(item))));
        };
        let position = original
            .iter()
            .position(|live| live.get(key).is_some_and(|v| json_equal(v, value)));
        match position {
            Some(i) => {
                let Value::Object(live) = std::mem::take(&mut original[i]) else {
                    return Err(unprocessable(format!("value for key {i} is not a map.")));
                };
                original[i] = Value::Object(merge_map(live, patch_map, elem_ty)?);
            }
            None => original.push(Value::Object(merge_map(Map::new(), patch_map, elem_ty)?)),
        }
    }
    Ok(original)
}

/// Removes from a live primitive list the values of a `$deleteFromPrimitiveList`
/// directive; `null` removes the whole field.
fn delete_from_primitive_list(
    original: &mut Map<String, Value>,
    field: &str,
    values: Value,
) -> PatchResult<()> {
    let to_delete = match values {
        Value::Null => {
            original.shift_remove(field);
            return Ok(());
        }
        Value::Array(items) => items,
        _ => return Err(bad("invalid patch format of primitive list")),
    };
    if let Some(Value::Array(items)) = original.get_mut(field) {
        items.retain(|item| !to_delete.iter().any(|d| json_equal(d, item)));
    }
    Ok(())
}

/// Applies and removes `$retainKeys`: live keys not listed are dropped, and every
/// key the patch sets must be listed.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> PatchResult<()> {
    let Some(retain) = patch.shift_remove(RETAIN_KEYS_DIRECTIVE) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(bad("invalid patch format of retainKeys"));
    };
    let retained = |key: &str| retain.iter().any(|k| k.as_str() == Some(key));
    for (key, value) in patch.iter() {
        if value.is_null()
            || key.starts_with(DELETE_FROM_PRIMITIVE_LIST_PREFIX)
            || key.starts_with(SET_ELEMENT_ORDER_PREFIX)
        {
            continue;
        }
        if !retained(key) {
            return Err(bad("invalid patch format of retainKeys"));
        }
    }
    original.retain(|key, _| retained(key));
    Ok(())
}

/// Processes the `$setElementOrder/<field>` directives together with their lists
/// (upstream's `mergePatchIntoOriginal`): the field's list is merged, then ordered
/// by the directive, the patch and the live list, in that precedence.
fn apply_set_element_order(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ty: Ty,
) -> PatchResult<()> {
    let directives: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER_PREFIX))
        .cloned()
        .collect();
    for directive in directives {
        let order_value = patch.shift_remove(&directive).unwrap_or(Value::Null);
        let format_error = || bad("invalid patch format of setElementOrder list");
        let field = directive_field(&directive, SET_ELEMENT_ORDER_PREFIX)
            .ok_or_else(format_error)?
            .to_string();
        let Value::Array(order) = order_value else {
            return Err(format_error());
        };
        let meta = ty.field(&field);
        let key = match meta.list {
            ListStrategy::MergeOnKey(key) => Some(key),
            _ => None,
        };
        let original_list = match original.get(&field) {
            None | Some(Value::Null) => None,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(other) => {
                return Err(unprocessable(format!(
                    "expected a list for {field}, but the object has {}",
                    go_format(other)
                )));
            }
        };
        let patch_list = match patch.get(&field) {
            None => None,
            // A null deletes the field; the main loop does that.
            Some(Value::Null) => continue,
            Some(Value::Array(items)) => Some(items.clone()),
            Some(_) => return Err(format_error()),
        };
        patch.shift_remove(&field);
        validate_patch_with_set_order_list(patch_list.as_deref().unwrap_or(&[]), &order, key)?;
        let merged = match (original_list.clone(), patch_list) {
            (Some(live), None) => live,
            (None, Some(patch_list)) => merge_list(Vec::new(), patch_list, meta)?,
            (Some(live), Some(patch_list)) => merge_list(live, patch_list, meta)?,
            (None, None) => continue,
        };
        let live = original_list.unwrap_or_default();
        let ordered = match element_kind(&[&merged])? {
            None => merged,
            Some(kind) => {
                let (in_order, server_only) = partition_by_presence(merged, &order, key)?;
                normalize_element_order(in_order, server_only, &order, &live, key, kind)?
            }
        };
        original.insert(field, Value::Array(ordered));
    }
    Ok(())
}

/// Checks the patch list's elements appear in the directive's order (upstream's
/// `validatePatchWithSetOrderList`).
fn validate_patch_with_set_order_list(
    patch_list: &[Value],
    order: &[Value],
    key: Option<&str>,
) -> PatchResult<()> {
    if patch_list.is_empty() || order.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = match key {
        Some(_) => patch_list
            .iter()
            .filter(|item| item.get(DIRECTIVE_MARKER).and_then(Value::as_str) != Some("delete"))
            .collect(),
        None => patch_list.iter().collect(),
    };
    let (mut patch_index, mut order_index) = (0, 0);
    while patch_index < non_delete.len() && order_index < order.len() {
        let item = non_delete[patch_index];
        if item.get(DIRECTIVE_MARKER).is_some() {
            patch_index += 1;
            continue;
        }
        if merge_key_value_equal(item, &order[order_index], key)? {
            patch_index += 1;
        }
        order_index += 1;
    }
    if patch_index < non_delete.len() && order_index >= order.len() {
        return Err(bad(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ELEMENT_ORDER_PREFIX} list:\n{}\n",
            go_format(&Value::Array(patch_list.to_vec())),
            go_format(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

fn merge_key_value_equal(left: &Value, right: &Value, key: Option<&str>) -> PatchResult<bool> {
    let Some(key) = key else {
        return Ok(json_equal(left, right));
    };
    let left = left.get(key).ok_or_else(|| no_merge_key(left, key))?;
    let right = right.get(key).ok_or_else(|| no_merge_key(right, key))?;
    Ok(json_equal(left, right))
}

/// Whether two list elements are "the same" element: equal merge keys, or equal
/// values for scalars (and for objects of lists without a merge key).
fn same_element(a: &Value, b: &Value, key: Option<&str>) -> bool {
    match key {
        Some(key) => match (a.get(key), b.get(key)) {
            (Some(x), Some(y)) => json_equal(x, y),
            (None, None) => true,
            _ => false,
        },
        None => json_equal(a, b),
    }
}

fn index_of(list: &[Value], item: &Value, key: Option<&str>) -> Option<usize> {
    list.iter()
        .position(|candidate| same_element(candidate, item, key))
}

/// Splits the merged list into the elements present in `by` and the others.
fn partition_by_presence(
    merged: Vec<Value>,
    by: &[Value],
    key: Option<&str>,
) -> PatchResult<(Vec<Value>, Vec<Value>)> {
    let mut present = Vec::new();
    let mut others = Vec::new();
    for item in merged {
        if let Some(key) = key
            && item.get(key).is_none()
        {
            return Err(unprocessable(format!(
                "map: {} does not contain declared merge key: {key}",
                go_format(&item)
            )));
        }
        if index_of(by, &item, key).is_some() {
            present.push(item);
        } else {
            others.push(item);
        }
    }
    Ok((present, others))
}

/// Orders the patch's elements by `patch_order` and the server-only elements by
/// `server_order`, then interleaves them (upstream's `normalizeElementOrder`).
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    key: Option<&str>,
    kind: ElementKind,
) -> PatchResult<Vec<Value>> {
    let patch_items = normalize_slice_order(patch_items, patch_order, key, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, key, kind)?;
    Ok(merge_sorted_slices(
        server_only,
        patch_items,
        server_order,
        key,
    ))
}

/// Sorts `items` by their position in `order` (stable; elements not in `order`
/// keep their relative order after the others), `$patch: delete` elements last.
fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    key: Option<&str>,
    kind: ElementKind,
) -> PatchResult<Vec<Value>> {
    let mut to_delete = Vec::new();
    let mut to_sort = Vec::with_capacity(items.len());
    if kind == ElementKind::Map
        && let Some(key) = key
    {
        for item in items.iter().chain(order.iter()) {
            if item.get(key).is_none() {
                return Err(no_merge_key(item, key));
            }
        }
    }
    for item in items {
        let is_delete = kind == ElementKind::Map
            && item.get(DIRECTIVE_MARKER).and_then(Value::as_str) == Some("delete");
        if is_delete {
            to_delete.push(item);
        } else {
            to_sort.push(item);
        }
    }
    to_sort.sort_by_key(|item| index_of(order, item, key).unwrap_or(usize::MAX));
    to_sort.extend(to_delete);
    Ok(to_sort)
}

/// Interleaves server-only elements (`left`) with the patch's elements (`right`):
/// a server-only element goes first only when both are in the live list and it
/// came before there (upstream's `mergeSortedSlice`).
fn merge_sorted_slices(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    key: Option<&str>,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                index_of(server_order, l, key),
                index_of(server_order, r, key),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

// ---------------------------------------------------------------------------
// Go-compatible comparisons and formatting
// ---------------------------------------------------------------------------

/// Structural JSON equality with numbers compared by value (`1` equals `1.0`), as
/// Go compares decoded JSON (every number is a float64 there).
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A value as Go's `%v` prints a decoded JSON value (`map[a:1 b:[x y]]`), for
/// error messages that mirror upstream's.
fn go_format(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_format).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{k}:{}", go_format(&map[k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(target: Value, patch: Value, group: &str, kind: &str) -> Value {
        apply_strategic_merge_patch(&target, &patch, group, kind).unwrap()
    }

    fn smp_err(target: Value, patch: Value, kind: &str) -> PatchError {
        apply_strategic_merge_patch(&target, &patch, "", kind).unwrap_err()
    }

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a/x"]},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web",
                                "image": "nginx:1.25",
                                "ports": [{"containerPort": 80}, {"containerPort": 443}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "args": ["--a", "--b"]
                            },
                            {"name": "sidecar", "image": "busybox"}
                        ],
                        "tolerations": [{"key": "k1", "operator": "Exists"}]
                    }
                }
            }
        })
    }

    fn containers(object: &Value) -> &Vec<Value> {
        object
            .pointer("/spec/template/spec/containers")
            .unwrap()
            .as_array()
            .unwrap()
    }

    // ----- JSON patch -----

    #[test]
    fn json_patch_operations() {
        let doc = json!({"a": {"b": [1, 2]}, "c": "x"});
        let patch = json!([
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c", "value": "y"},
            {"op": "copy", "from": "/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e~1f"},
            {"op": "remove", "path": "/a/b/1"},
            {"op": "test", "path": "/a/b", "value": [0, 2, 3]},
            {"op": "test", "path": "/e~1f", "value": "y"}
        ]);
        let out = apply_json_patch(&doc, &patch).unwrap();
        assert_eq!(out, json!({"a": {"b": [0, 2, 3]}, "c": "y", "e/f": "y"}));
        // Replacing the whole document.
        let out =
            apply_json_patch(&doc, &json!([{"op": "replace", "path": "", "value": 1}])).unwrap();
        assert_eq!(out, json!(1));
    }

    #[test]
    fn json_patch_malformed_is_bad_request() {
        let doc = json!({});
        for patch in [
            json!({"op": "add"}),
            json!([{"path": "/a"}]),
            json!([{"op": "jump", "path": "/a"}]),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "add", "path": "a", "value": 1}]),
            json!([{"op": "add", "path": "/a~2", "value": 1}]),
            json!([{"op": "move", "path": "/a"}]),
        ] {
            let err = apply_json_patch(&doc, &patch).unwrap_err();
            assert!(matches!(err, PatchError::BadRequest(_)), "{patch}: {err:?}");
        }
        assert_eq!(
            apply_json_patch(&doc, &json!([{"op": "jump", "path": "/a"}])).unwrap_err(),
            PatchError::BadRequest("Unexpected kind: jump".into())
        );
    }

    #[test]
    fn json_patch_failing_operation_is_unprocessable() {
        let doc = json!({"metadata": {"labels": {"a": "1"}}, "list": [1]});
        let err = |p: Value| apply_json_patch(&doc, &p).unwrap_err();
        assert_eq!(
            err(json!([{"op": "test", "path": "/metadata/labels/a", "value": "2"}])),
            PatchError::Unprocessable(
                "testing value /metadata/labels/a failed: test failed".into()
            )
        );
        assert_eq!(
            err(json!([{"op": "add", "path": "/spec/replicas", "value": 1}])),
            PatchError::Unprocessable(
                "add operation does not apply: doc is missing path: \"/spec/replicas\": missing value".into()
            )
        );
        assert_eq!(
            err(json!([{"op": "replace", "path": "/metadata/name", "value": "x"}])),
            PatchError::Unprocessable(
                "replace operation does not apply: doc is missing key: /metadata/name: missing value".into()
            )
        );
        assert!(matches!(
            err(json!([{"op": "remove", "path": "/metadata/annotations"}])),
            PatchError::Unprocessable(_)
        ));
        assert!(matches!(
            err(json!([{"op": "add", "path": "/list/5", "value": 1}])),
            PatchError::Unprocessable(_)
        ));
        assert!(matches!(
            err(json!([{"op": "move", "from": "/metadata", "path": "/metadata/labels/m"}])),
            PatchError::Unprocessable(_)
        ));
        // A failed operation leaves nothing half-applied: the input is untouched.
        assert_eq!(doc["metadata"]["labels"]["a"], "1");
    }

    #[test]
    fn json_patch_test_compares_numbers_by_value() {
        let doc = json!({"n": 1});
        assert!(
            apply_json_patch(&doc, &json!([{"op": "test", "path": "/n", "value": 1.0}])).is_ok()
        );
    }

    // ----- JSON merge patch -----

    #[test]
    fn merge_patch_rfc7386() {
        let doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null, "h": {"i": null, "j": 1}}, "list": [3]});
        let out = apply_merge_patch(&doc, &patch).unwrap();
        assert_eq!(
            out,
            json!({"a": "z", "c": {"d": "e", "h": {"j": 1}}, "list": [3]})
        );
        assert_eq!(
            apply_merge_patch(&doc, &json!([1])).unwrap_err(),
            PatchError::BadRequest("Invalid JSON Patch".into())
        );
    }

    // ----- strategic merge patch -----

    #[test]
    fn set_image_changes_one_container() {
        // What `kubectl set image deployment/web web=nginx:1.27` sends.
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:1.27", "name": "web"}]}}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        let c = containers(&out);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["image"], "nginx:1.27");
        assert_eq!(c[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(c[1], json!({"name": "sidecar", "image": "busybox"}));
        assert_eq!(out["spec"]["replicas"], 2);
    }

    #[test]
    fn kubectl_apply_three_way_patch() {
        // kubectl apply after changing the image and dropping env B.
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
                "containers": [{
                    "$setElementOrder/env": [{"name": "A"}],
                    "env": [{"$patch": "delete", "name": "B"}],
                    "image": "nginx:1.27",
                    "name": "web"
                }]
            }}}
        });
        let out = smp(deployment(), patch, "apps", "Deployment");
        let c = containers(&out);
        assert_eq!(c[0]["image"], "nginx:1.27");
        assert_eq!(c[0]["env"], json!([{"name": "A", "value": "1"}]));
        assert_eq!(c[1]["name"], "sidecar");
        assert_eq!(
            out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"],
            "{}"
        );
        assert!(
            out.to_string().find('$').is_none(),
            "directives leaked: {out}"
        );
    }

    #[test]
    fn null_deletes_fields_and_lists() {
        let patch = json!({"spec": {"strategy": {"rollingUpdate": null}, "template": {"spec": {
            "containers": [{"name": "web", "env": null}]
        }}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(out["spec"]["strategy"], json!({"type": "RollingUpdate"}));
        assert!(containers(&out)[0].get("env").is_none());
        // A null for a field the object lacks is dropped, not stored.
        let out = smp(
            deployment(),
            json!({"spec": {"paused": null}}),
            "apps",
            "Deployment",
        );
        assert!(out["spec"].get("paused").is_none());
    }

    #[test]
    fn edit_that_reorders_containers() {
        // kubectl edit swapping the two containers sends only the new order.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]
        }}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        let names: Vec<&str> = containers(&out)
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["sidecar", "web"]);
        assert_eq!(containers(&out)[1]["image"], "nginx:1.25");
    }

    #[test]
    fn new_elements_are_placed_like_upstream() {
        let target = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "x"}, {"name": "d"}]}});
        let out = smp(target, patch, "", "Pod");
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "d", "c"]);
        assert_eq!(out["spec"]["containers"][1]["image"], "x");
    }

    #[test]
    fn lists_without_merge_key_are_replaced() {
        let patch = json!({"spec": {"template": {"spec": {
            "tolerations": [{"key": "k2", "operator": "Exists"}],
            "containers": [{"name": "web", "args": ["--c"]}]
        }}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "k2", "operator": "Exists"}])
        );
        assert_eq!(containers(&out)[0]["args"], json!(["--c"]));
    }

    #[test]
    fn ports_merge_on_context_dependent_keys() {
        // Container ports merge on containerPort.
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 8080}]}
        ]}}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(
            containers(&out)[0]["ports"],
            json!([{"containerPort": 80, "name": "http"}, {"containerPort": 8080}, {"containerPort": 443}])
        );
        // Service ports merge on port.
        let service = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
        let out = smp(
            service,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
            "",
            "Service",
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
    }

    #[test]
    fn finalizers_union_and_delete_from_primitive_list() {
        // The union takes the patch's order for the elements it names.
        let patch = json!({"metadata": {"finalizers": ["b/y", "a/x"]}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(out["metadata"]["finalizers"], json!(["b/y", "a/x"]));

        let patch = json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a/x"]}});
        let out = smp(out, patch, "apps", "Deployment");
        assert_eq!(out["metadata"]["finalizers"], json!(["b/y"]));

        // kubectl apply's shape: order directive plus deletion list.
        let target = json!({"metadata": {"finalizers": ["a", "b", "c"]}});
        let patch = json!({"metadata": {
            "$setElementOrder/finalizers": ["c", "a", "d"],
            "$deleteFromPrimitiveList/finalizers": ["b"],
            "finalizers": ["d"]
        }});
        let out = smp(target, patch, "", "ConfigMap");
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "d"]));
    }

    #[test]
    fn owner_references_and_conditions_merge_on_keys() {
        let pod = json!({
            "metadata": {"ownerReferences": [{"uid": "1", "name": "rs"}]},
            "status": {"conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "PodScheduled", "status": "True"}
            ]}
        });
        let patch = json!({
            "metadata": {"ownerReferences": [{"uid": "2", "name": "other"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let out = smp(pod, patch, "", "Pod");
        assert_eq!(
            out["metadata"]["ownerReferences"].as_array().unwrap().len(),
            2
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
    }

    #[test]
    fn patch_replace_directive_in_map_and_list() {
        let patch = json!({"metadata": {"labels": {"$patch": "replace", "tier": "fe"}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));

        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "only", "image": "alpine"},
            {"$patch": "replace"}
        ]}}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(
            containers(&out),
            &vec![json!({"name": "only", "image": "alpine"})]
        );
    }

    #[test]
    fn patch_delete_directive_in_map_and_list() {
        let patch = json!({"spec": {"strategy": {"$patch": "delete"}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(out["spec"]["strategy"], json!({}));

        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "$patch": "delete"}
        ]}}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(containers(&out).len(), 1);
        assert_eq!(containers(&out)[0]["name"], "web");
    }

    #[test]
    fn retain_keys_clears_unlisted_fields() {
        // Switching a Deployment to Recreate, as kubectl apply sends it.
        let patch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = smp(deployment(), patch, "apps", "Deployment");
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let err = smp_err(
            deployment(),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}}),
            "Deployment",
        );
        assert_eq!(
            err,
            PatchError::BadRequest("invalid patch format of retainKeys".into())
        );
    }

    #[test]
    fn custom_resources_get_merge_patch_semantics() {
        let target = json!({
            "metadata": {"finalizers": ["a"]},
            "spec": {"items": [{"name": "x", "v": 1}], "size": 1}
        });
        let patch = json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [{"name": "y"}]}});
        let out = smp(target, patch, "example.com", "Widget");
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        assert_eq!(out["spec"], json!({"items": [{"name": "y"}], "size": 1}));
    }

    #[test]
    fn built_in_kinds_without_tags_still_merge_metadata_lists() {
        let target = json!({"metadata": {"finalizers": ["a"]}, "data": {"k": "v"}});
        let out = smp(
            target,
            json!({"metadata": {"finalizers": ["b"]}, "data": {"k2": "v2"}}),
            "",
            "ConfigMap",
        );
        // Upstream places an element the live list lacks before the server-only ones.
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
        assert_eq!(out["data"], json!({"k": "v", "k2": "v2"}));
    }

    #[test]
    fn cronjob_pod_template_is_reached() {
        let cronjob = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]
        }}}}}});
        let patch = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "b", "image": "z"}]
        }}}}}});
        let out = smp(cronjob, patch, "batch", "CronJob");
        let c = out
            .pointer("/spec/jobTemplate/spec/template/spec/containers")
            .unwrap();
        assert_eq!(
            c,
            &json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}])
        );
    }

    #[test]
    fn strategic_patch_errors() {
        assert_eq!(
            smp_err(json!({}), json!([1]), "Pod"),
            PatchError::BadRequest("a strategic merge patch must be a JSON object".into())
        );
        let pod = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            smp_err(
                pod.clone(),
                json!({"spec": {"containers": [{"$patch": "merge"}]}}),
                "Pod"
            ),
            PatchError::BadRequest("merging lists cannot yet be specified in the patch".into())
        );
        assert_eq!(
            smp_err(
                pod.clone(),
                json!({"spec": {"containers": [{"image": "x"}]}}),
                "Pod"
            ),
            PatchError::BadRequest(
                "map: map[image:x] does not contain declared merge key: name".into()
            )
        );
        assert_eq!(
            smp_err(pod.clone(), json!({"spec": {"$patch": "explode"}}), "Pod"),
            PatchError::BadRequest(
                "unknown patch type: explode in map: map[$patch:explode]".into()
            )
        );
        assert!(matches!(
            smp_err(
                pod.clone(),
                json!({"spec": {"$setElementOrder/containers": "a"}}),
                "Pod"
            ),
            PatchError::BadRequest(_)
        ));
        assert!(matches!(
            smp_err(
                pod.clone(),
                json!({"spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [{"name": "b"}]
                }}),
                "Pod"
            ),
            PatchError::BadRequest(_)
        ));
        assert!(matches!(
            smp_err(
                json!({"metadata": {"finalizers": ["a"]}}),
                json!({"metadata": {"finalizers": [["b"]]}}),
                "Pod"
            ),
            PatchError::Unprocessable(_)
        ));
    }
}
