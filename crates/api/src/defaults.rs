//! Defaulting: the fields kube-apiserver fills in before it validates and stores an
//! object, so that stored objects look as upstream stores them (what `kubectl get -o
//! yaml` shows, and what controllers rely on).
//!
//! [`apply_defaults`] is called on every create and update, before validation. It
//! looks the kind up in `DEFAULTERS` (one function per group and kind) and fills in
//! what is unset. "Unset" follows upstream's Go types: a pointer field is unset when
//! missing or null, a plain `string` or `int32` field also at its zero value (`""`,
//! `0`), which is why a probe's `timeoutSeconds: 0` becomes 1 as it does upstream.
//! Values the client chose are kept, except in the three places where upstream
//! rewrites them too: a namespace's name label, a Service's session affinity config
//! that does not apply, and the deprecated `serviceAccount` alias.
//!
//! The facts come from upstream's `pkg/apis/<group>/<version>/defaults.go` and the
//! generated `zz_generated.defaults.go`, which decides where nested types are
//! defaulted: every pod template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job,
//! CronJob's job template, ReplicationController, PodTemplate) gets the pod spec,
//! container, probe and volume defaults; only a Pod itself gets the `SetDefaults_Pod`
//! extras (requests copied from limits, `enableServiceLinks`, host ports on the host
//! network). A few mutations from outside defaulting are included because every
//! stored object shows them:
//!
//! - the `Priority` admission plugin: a Pod without a priority class gets priority 0
//!   and `PreemptLowerPriority` (the built-in `system-*` classes resolve too),
//! - the `DefaultTolerationSeconds` admission plugin: NoExecute tolerations of 300s
//!   for `node.kubernetes.io/not-ready` and `unreachable`, on Pods only,
//! - the service registry's IP family defaults (`ipFamilyPolicy`, `ipFamilies`, for a
//!   single-stack IPv4 cluster) and the `clusterIP`/`clusterIPs` pairing,
//! - conversion artefacts: `serviceAccount` mirroring `serviceAccountName`, a
//!   container's `resources: {}`, and `apiVersion`/`kind` on a StatefulSet's claim
//!   templates.
//!
//! Left to others because they need cluster state: ClusterIP and NodePort allocation,
//! resolving a user-defined PriorityClass or a default (`globalDefault`) one, the
//! ServiceAccount admission plugin (service account name and token volume), the
//! default StorageClass, a Job's generated selector and labels, and status that a
//! registry strategy resets on create.

use serde_json::{Map, Value, json};

type Object = Map<String, Value>;

/// Fills in one kind's defaults on the object's top level.
type Defaulter = fn(&mut Object);

/// Every kind with defaults, by API group ("" for core) and kind.
const DEFAULTERS: &[(&str, &str, Defaulter)] = &[
    ("", "Pod", default_pod),
    ("", "PodTemplate", default_pod_template_object),
    ("", "ReplicationController", default_replication_controller),
    ("", "Service", default_service),
    ("", "Endpoints", default_endpoints),
    ("", "Secret", default_secret),
    ("", "Namespace", default_namespace),
    ("", "Node", default_node),
    ("", "PersistentVolume", default_persistent_volume),
    ("", "PersistentVolumeClaim", default_persistent_volume_claim),
    ("", "LimitRange", default_limit_range),
    ("apps", "Deployment", default_deployment),
    ("apps", "ReplicaSet", default_replica_set),
    ("apps", "StatefulSet", default_stateful_set),
    ("apps", "DaemonSet", default_daemon_set),
    ("batch", "Job", default_job),
    ("batch", "CronJob", default_cron_job),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        default_horizontal_pod_autoscaler,
    ),
    ("networking.k8s.io", "NetworkPolicy", default_network_policy),
    ("networking.k8s.io", "IngressClass", default_ingress_class),
    ("discovery.k8s.io", "EndpointSlice", default_endpoint_slice),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        default_role_binding,
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        default_role_binding,
    ),
    ("storage.k8s.io", "StorageClass", default_storage_class),
    ("storage.k8s.io", "CSIDriver", default_csi_driver),
    ("scheduling.k8s.io", "PriorityClass", default_priority_class),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        default_validating_webhooks,
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        default_mutating_webhooks,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        default_validating_admission_policy,
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        default_validating_admission_policy_binding,
    ),
    (
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        default_custom_resource_definition,
    ),
];

/// Fills in the defaults kube-apiserver applies to an object of `kind` in `group` ("" for
/// core), in place. Fields that are set are left alone; kinds without defaults and
/// objects that are not JSON objects are left as they are. Applying it twice gives the
/// same result as applying it once.
pub fn apply_defaults(group: &str, kind: &str, object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    if let Some((_, _, defaulter)) = DEFAULTERS
        .iter()
        .find(|(g, k, _)| *g == group && *k == kind)
    {
        defaulter(root);
    }
}

// ---------------------------------------------------------------------------------
// Field helpers

/// How upstream's Go type tells that a field is unset.
#[derive(Clone, Copy, Debug)]
enum Unset {
    /// A pointer, slice or map field: missing or null.
    Missing,
    /// A plain `string` or integer field: missing, null, `""` or `0`.
    Zero,
}

/// A default value that fits in a table.
#[derive(Clone, Copy, Debug)]
enum Literal {
    Str(&'static str),
    Int(i64),
    Bool(bool),
}

impl Literal {
    fn to_json(self) -> Value {
        match self {
            Literal::Str(text) => Value::from(text),
            Literal::Int(number) => Value::from(number),
            Literal::Bool(flag) => Value::from(flag),
        }
    }
}

/// One field's default: its name, how upstream tells it is unset, and the value.
type FieldDefault = (&'static str, Unset, Literal);

use Literal::{Bool, Int, Str};
use Unset::{Missing, Zero};

fn is_missing(object: &Object, key: &str) -> bool {
    object.get(key).is_none_or(Value::is_null)
}

fn is_zero(object: &Object, key: &str) -> bool {
    match object.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.is_empty(),
        Some(Value::Number(number)) => number.as_f64() == Some(0.0),
        Some(_) => false,
    }
}

/// Missing, null, or an empty list or map (Go's `len(x) == 0`).
fn is_empty(object: &Object, key: &str) -> bool {
    match object.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(fields)) => fields.is_empty(),
        Some(_) => false,
    }
}

/// Sets a pointer-like field when it is missing or null.
fn fill(object: &mut Object, key: &str, value: Value) {
    if is_missing(object, key) {
        object.insert(key.to_string(), value);
    }
}

/// Sets a plain field when it is missing, null or at its zero value.
fn fill_zero(object: &mut Object, key: &str, value: Value) {
    if is_zero(object, key) {
        object.insert(key.to_string(), value);
    }
}

fn apply_field_defaults(object: &mut Object, defaults: &[FieldDefault]) {
    for &(key, unset, value) in defaults {
        match unset {
            Missing => fill(object, key, value.to_json()),
            Zero => fill_zero(object, key, value.to_json()),
        }
    }
}

/// The object under `key`, if the field holds one.
fn child<'a>(object: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    object.get_mut(key)?.as_object_mut()
}

/// The object under `key`, created empty when unset; `None` when the field holds
/// something other than an object (left for validation to report).
fn child_or_insert<'a>(object: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    if is_missing(object, key) {
        object.insert(key.to_string(), Value::Object(Object::new()));
    }
    child(object, key)
}

/// The object at a path of keys, if every step is an object.
fn at<'a>(object: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    path.iter()
        .try_fold(object, |current, key| child(current, key))
}

/// The objects in the list under `key` (other entries are skipped).
fn elements<'a>(object: &'a mut Object, key: &str) -> impl Iterator<Item = &'a mut Object> {
    object
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The string under `key`, or "" when it is not a string.
fn text<'a>(object: &'a Object, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Copies the entries of `source` that the map under `key` lacks into it, creating the
/// map when there is anything to copy (Go leaves an empty map out of the JSON).
fn copy_missing_entries(object: &mut Object, key: &str, source: &Object) {
    let target = object.get(key);
    if target.is_some_and(|target| !target.is_null() && !target.is_object()) {
        return;
    }
    let missing: Vec<(String, Value)> = source
        .iter()
        .filter(|(name, _)| {
            target
                .and_then(|target| target.get(name.as_str()))
                .is_none()
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    if missing.is_empty() {
        return;
    }
    if let Some(target) = child_or_insert(object, key) {
        target.extend(missing);
    }
}

/// A clone of the map under `key`, or an empty map.
fn map_of(object: &Object, key: &str) -> Object {
    object
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------
// Pods, pod templates and their parts (core/v1 defaults.go)

const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
const DEFAULT_SCHEDULER: &str = "default-scheduler";
const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// 0644, the file mode of secret, config map, downward API and projected volumes.
const DEFAULT_VOLUME_MODE: i64 = 0o644;
/// A projected service account token lives an hour unless asked otherwise.
const DEFAULT_TOKEN_EXPIRATION_SECONDS: i64 = 3600;

const PROBE_DEFAULTS: &[FieldDefault] = &[
    ("timeoutSeconds", Zero, Int(1)),
    ("periodSeconds", Zero, Int(10)),
    ("successThreshold", Zero, Int(1)),
    ("failureThreshold", Zero, Int(3)),
];

const HTTP_GET_DEFAULTS: &[FieldDefault] =
    &[("path", Zero, Str("/")), ("scheme", Zero, Str("HTTP"))];

/// Defaults of volume sources, shared by pod volumes and persistent volumes.
const VOLUME_SOURCE_DEFAULTS: &[(&str, &[FieldDefault])] = &[
    ("hostPath", &[("type", Missing, Str(""))]),
    (
        "secret",
        &[("defaultMode", Missing, Int(DEFAULT_VOLUME_MODE))],
    ),
    (
        "configMap",
        &[("defaultMode", Missing, Int(DEFAULT_VOLUME_MODE))],
    ),
    (
        "downwardAPI",
        &[("defaultMode", Missing, Int(DEFAULT_VOLUME_MODE))],
    ),
    (
        "projected",
        &[("defaultMode", Missing, Int(DEFAULT_VOLUME_MODE))],
    ),
    ("iscsi", &[("iscsiInterface", Zero, Str("default"))]),
    (
        "rbd",
        &[
            ("pool", Zero, Str("rbd")),
            ("user", Zero, Str("admin")),
            ("keyring", Zero, Str("/etc/ceph/keyring")),
        ],
    ),
    (
        "azureDisk",
        &[
            ("cachingMode", Missing, Str("ReadWrite")),
            ("kind", Missing, Str("Shared")),
            ("fsType", Missing, Str("ext4")),
            ("readOnly", Missing, Bool(false)),
        ],
    ),
    (
        "scaleIO",
        &[
            ("storageMode", Zero, Str("ThinProvisioned")),
            ("fsType", Zero, Str("xfs")),
        ],
    ),
];

/// The built-in priority classes the `Priority` admission plugin knows without a lookup.
const SYSTEM_PRIORITY_CLASSES: &[(&str, i64)] = &[
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// The taints the `DefaultTolerationSeconds` admission plugin makes every Pod tolerate
/// for five minutes, so that its Pods are not evicted at the first hiccup of a node.
const DEFAULT_TOLERATED_TAINTS: &[&str] = &[
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
];
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

fn default_pod(pod: &mut Object) {
    let Some(spec) = child_or_insert(pod, "spec") else {
        return;
    };
    default_pod_spec(spec);

    // SetDefaults_Pod: a Pod's own extras, which pod templates do not get.
    for key in ["initContainers", "containers"] {
        for container in elements(spec, key) {
            if let Some(resources) = child(container, "resources") {
                let limits = map_of(resources, "limits");
                copy_missing_entries(resources, "requests", &limits);
            }
        }
    }
    fill(spec, "enableServiceLinks", json!(true));
    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        for key in ["initContainers", "containers"] {
            for container in elements(spec, key) {
                for port in elements(container, "ports") {
                    if let Some(container_port) = port.get("containerPort").cloned() {
                        fill_zero(port, "hostPort", container_port);
                    }
                }
            }
        }
    }

    admit_priority(spec);
    admit_default_tolerations(spec);
}

/// The `Priority` admission plugin: resolves the priority (and preemption policy) from
/// the priority class. Only the no-class case and the built-in classes are resolved
/// here; a user-defined or `globalDefault` class needs a lookup the server does.
fn admit_priority(spec: &mut Object) {
    let class = text(spec, "priorityClassName");
    let priority = if class.is_empty() {
        Some(0)
    } else {
        SYSTEM_PRIORITY_CLASSES
            .iter()
            .find(|(name, _)| *name == class)
            .map(|(_, value)| *value)
    };
    if let Some(priority) = priority {
        fill(spec, "priority", json!(priority));
        fill(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

/// The `DefaultTolerationSeconds` admission plugin: adds the default toleration of each
/// taint the Pod does not tolerate yet (for NoExecute, by key or by a wildcard).
fn admit_default_tolerations(spec: &mut Object) {
    let existing: &[Value] = match spec.get("tolerations") {
        None | Some(Value::Null) => &[],
        Some(Value::Array(tolerations)) => tolerations,
        Some(_) => return,
    };
    let added: Vec<Value> = DEFAULT_TOLERATED_TAINTS
        .iter()
        .filter(|taint| {
            !existing
                .iter()
                .any(|toleration| tolerates(toleration, taint))
        })
        .map(|taint| {
            json!({
                "key": taint,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            })
        })
        .collect();
    if added.is_empty() {
        return;
    }
    match spec.get_mut("tolerations") {
        Some(Value::Array(tolerations)) => tolerations.extend(added),
        _ => {
            spec.insert("tolerations".to_string(), Value::Array(added));
        }
    }
}

/// Whether a toleration covers a NoExecute taint with this key, as the plugin checks it.
fn tolerates(toleration: &Value, taint: &str) -> bool {
    let field = |name: &str| toleration.get(name).and_then(Value::as_str).unwrap_or("");
    let (key, effect) = (field("key"), field("effect"));
    (key.is_empty() || key == taint) && (effect.is_empty() || effect == "NoExecute")
}

/// A pod template (`{metadata, spec}`), wherever a workload keeps one.
fn default_pod_template(template: &mut Object) {
    if let Some(spec) = child(template, "spec") {
        default_pod_spec(spec);
    }
}

/// SetDefaults_PodSpec and everything nested in a pod spec; shared by Pods and templates.
fn default_pod_spec(spec: &mut Object) {
    fill_zero(spec, "dnsPolicy", json!("ClusterFirst"));
    fill_zero(spec, "restartPolicy", json!("Always"));
    fill(spec, "securityContext", json!({}));
    fill(
        spec,
        "terminationGracePeriodSeconds",
        json!(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
    );
    fill_zero(spec, "schedulerName", json!(DEFAULT_SCHEDULER));

    // v1 conversion: the deprecated `serviceAccount` is an alias of
    // `serviceAccountName`, which wins when both are given, and is written back equal.
    if is_zero(spec, "serviceAccountName") {
        let alias = text(spec, "serviceAccount").to_string();
        if !alias.is_empty() {
            spec.insert("serviceAccountName".to_string(), Value::from(alias));
        }
    }
    let service_account_name = text(spec, "serviceAccountName").to_string();
    if !service_account_name.is_empty() {
        spec.insert(
            "serviceAccount".to_string(),
            Value::from(service_account_name),
        );
    }

    for volume in elements(spec, "volumes") {
        default_volume(volume);
    }
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for container in elements(spec, key) {
            default_container(container);
        }
    }
}

fn default_container(container: &mut Object) {
    let pull_policy = image_pull_policy(text(container, "image"));
    fill_zero(container, "imagePullPolicy", json!(pull_policy));
    fill_zero(
        container,
        "terminationMessagePath",
        json!(TERMINATION_MESSAGE_PATH),
    );
    fill_zero(container, "terminationMessagePolicy", json!("File"));
    // A Go struct, not a pointer: upstream always writes it, empty or not.
    fill(container, "resources", json!({}));

    for port in elements(container, "ports") {
        fill_zero(port, "protocol", json!("TCP"));
    }
    for variable in elements(container, "env") {
        if let Some(field_ref) = at(variable, &["valueFrom", "fieldRef"]) {
            default_field_ref(field_ref);
        }
    }
    for key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = child(container, key) {
            apply_field_defaults(probe, PROBE_DEFAULTS);
            if let Some(http_get) = child(probe, "httpGet") {
                apply_field_defaults(http_get, HTTP_GET_DEFAULTS);
            }
            if let Some(grpc) = child(probe, "grpc") {
                fill(grpc, "service", json!(""));
            }
        }
    }
    if let Some(lifecycle) = child(container, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(http_get) = at(lifecycle, &[hook, "httpGet"]) {
                apply_field_defaults(http_get, HTTP_GET_DEFAULTS);
            }
        }
    }
}

/// Upstream's rule: `Always` for the `latest` tag, which is also what an image without
/// tag or digest means; `IfNotPresent` for any other tag, a digest, or an image
/// reference that does not parse.
fn image_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    // A colon before the last slash belongs to a registry host's port.
    let last_component = name.rsplit('/').next().unwrap_or(name);
    let (repository, tag) = match last_component.rsplit_once(':') {
        Some((_, tag)) => (&name[..name.len() - tag.len() - 1], Some(tag)),
        None => (name, None),
    };
    // The first component is a registry host when it looks like one (as Docker decides).
    let path = match repository.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            rest
        }
        _ => repository,
    };
    let parses = !repository.is_empty()
        && !path
            .chars()
            .any(|c| c.is_ascii_uppercase() || c.is_whitespace())
        && tag.is_none_or(|tag| !tag.is_empty());
    match tag {
        _ if !parses => "IfNotPresent",
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest.is_some() => "IfNotPresent",
        None => "Always",
    }
}

fn default_field_ref(field_ref: &mut Object) {
    fill_zero(field_ref, "apiVersion", json!("v1"));
}

/// The fields of a volume that are not its source.
const VOLUME_NON_SOURCE_FIELDS: &[&str] = &["name"];

fn default_volume(volume: &mut Object) {
    let has_source = volume
        .iter()
        .any(|(key, value)| !value.is_null() && !VOLUME_NON_SOURCE_FIELDS.contains(&key.as_str()));
    if !has_source {
        volume.insert("emptyDir".to_string(), json!({}));
    }
    default_volume_sources(volume);

    if let Some(downward_api) = child(volume, "downwardAPI") {
        default_downward_api_items(downward_api);
    }
    if let Some(projected) = child(volume, "projected") {
        for source in elements(projected, "sources") {
            if let Some(downward_api) = child(source, "downwardAPI") {
                default_downward_api_items(downward_api);
            }
            if let Some(token) = child(source, "serviceAccountToken") {
                fill(
                    token,
                    "expirationSeconds",
                    json!(DEFAULT_TOKEN_EXPIRATION_SECONDS),
                );
            }
        }
    }
    if let Some(claim_spec) = at(volume, &["ephemeral", "volumeClaimTemplate", "spec"]) {
        default_claim_spec(claim_spec);
    }
}

/// The table-driven defaults of whichever volume sources the object holds.
fn default_volume_sources(object: &mut Object) {
    for (source, defaults) in VOLUME_SOURCE_DEFAULTS {
        if let Some(source) = child(object, source) {
            apply_field_defaults(source, defaults);
        }
    }
}

fn default_downward_api_items(downward_api: &mut Object) {
    for item in elements(downward_api, "items") {
        if let Some(field_ref) = child(item, "fieldRef") {
            default_field_ref(field_ref);
        }
    }
}

fn default_claim_spec(claim_spec: &mut Object) {
    fill(claim_spec, "volumeMode", json!("Filesystem"));
}

fn default_pod_template_object(pod_template: &mut Object) {
    if let Some(template) = child(pod_template, "template") {
        default_pod_template(template);
    }
}

// ---------------------------------------------------------------------------------
// Other core/v1 kinds

fn default_replication_controller(controller: &mut Object) {
    let Some(spec) = child_or_insert(controller, "spec") else {
        return;
    };
    fill(spec, "replicas", json!(1));
    let Some(template) = child(spec, "template") else {
        return;
    };
    default_pod_template(template);
    let labels = template.get("metadata").map(|metadata| {
        metadata
            .get("labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    });
    let Some(labels) = labels.filter(|labels| !labels.is_empty()) else {
        return;
    };
    if is_empty(spec, "selector") {
        spec.insert("selector".to_string(), Value::Object(labels.clone()));
    }
    if let Some(metadata) = child_or_insert(controller, "metadata")
        && is_empty(metadata, "labels")
    {
        metadata.insert("labels".to_string(), Value::Object(labels));
    }
}

const SESSION_AFFINITY_TIMEOUT_SECONDS: i64 = 10800;

fn default_service(service: &mut Object) {
    let Some(spec) = child_or_insert(service, "spec") else {
        return;
    };
    fill_zero(spec, "sessionAffinity", json!("None"));
    // Upstream drops a session affinity config that does not apply, and completes one
    // that does.
    match text(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let timeout_set = spec
                .get("sessionAffinityConfig")
                .and_then(|config| config.get("clientIP"))
                .and_then(|client_ip| client_ip.get("timeoutSeconds"))
                .is_some_and(|timeout| !timeout.is_null());
            if !timeout_set {
                spec.insert(
                    "sessionAffinityConfig".to_string(),
                    json!({"clientIP": {"timeoutSeconds": SESSION_AFFINITY_TIMEOUT_SECONDS}}),
                );
            }
        }
        _ => {}
    }
    fill_zero(spec, "type", json!("ClusterIP"));

    for port in elements(spec, "ports") {
        fill_zero(port, "protocol", json!("TCP"));
        if let Some(number) = port.get("port").cloned() {
            fill_zero(port, "targetPort", number);
        }
    }

    let service_type = text(spec, "type").to_string();
    let externally_accessible = matches!(service_type.as_str(), "NodePort" | "LoadBalancer")
        || (service_type == "ClusterIP" && !is_empty(spec, "externalIPs"));
    if externally_accessible {
        fill_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(
        service_type.as_str(),
        "ClusterIP" | "NodePort" | "LoadBalancer"
    ) {
        fill(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if service_type == "LoadBalancer" {
        fill(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if service_type != "ExternalName" {
        default_service_ip_families(spec);
    }

    if service_type == "LoadBalancer"
        && let Some(load_balancer) = at(service, &["status", "loadBalancer"])
    {
        for ingress in elements(load_balancer, "ingress") {
            if !text(ingress, "ip").is_empty() {
                fill(ingress, "ipMode", json!("VIP"));
            }
        }
    }
}

/// What the service registry fills in before it allocates: `clusterIP` and
/// `clusterIPs` agree, the IP family policy (dual-stack only for a headless service
/// without selector), and the families (from the given cluster IPs, else IPv4: krust
/// runs a single-stack IPv4 service network).
fn default_service_ip_families(spec: &mut Object) {
    let cluster_ip = text(spec, "clusterIP").to_string();
    if !cluster_ip.is_empty() {
        if is_empty(spec, "clusterIPs") {
            spec.insert("clusterIPs".to_string(), json!([cluster_ip]));
        }
    } else if let Some(first) = spec
        .get("clusterIPs")
        .and_then(|ips| ips.get(0))
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
    {
        let first = first.to_string();
        spec.insert("clusterIP".to_string(), Value::from(first));
    }

    let headless_without_selector = text(spec, "clusterIP") == "None" && is_empty(spec, "selector");
    let policy = if headless_without_selector {
        "RequireDualStack"
    } else {
        "SingleStack"
    };
    fill(spec, "ipFamilyPolicy", json!(policy));

    if is_empty(spec, "ipFamilies") {
        let mut families: Vec<&str> = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .take_while(|ip| *ip != "None" && !ip.is_empty())
            .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" })
            .collect();
        if families.is_empty() {
            families.push("IPv4");
        }
        if headless_without_selector
            && text(spec, "ipFamilyPolicy") != "SingleStack"
            && families.len() < 2
        {
            families.push(if families[0] == "IPv4" {
                "IPv6"
            } else {
                "IPv4"
            });
        }
        spec.insert("ipFamilies".to_string(), json!(families));
    }
}

fn default_endpoints(endpoints: &mut Object) {
    for subset in elements(endpoints, "subsets") {
        for port in elements(subset, "ports") {
            fill_zero(port, "protocol", json!("TCP"));
        }
    }
}

fn default_secret(secret: &mut Object) {
    fill_zero(secret, "type", json!("Opaque"));
}

/// The label every namespace carries with its own name. Upstream sets it
/// unconditionally, so that selectors can trust it.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

fn default_namespace(namespace: &mut Object) {
    if let Some(metadata) = child(namespace, "metadata") {
        let name = text(metadata, "name").to_string();
        if !name.is_empty()
            && let Some(labels) = child_or_insert(metadata, "labels")
        {
            labels.insert(NAMESPACE_NAME_LABEL.to_string(), Value::from(name));
        }
    }
    if let Some(status) = child_or_insert(namespace, "status") {
        fill_zero(status, "phase", json!("Active"));
    }
}

fn default_node(node: &mut Object) {
    let Some(status) = child(node, "status") else {
        return;
    };
    if is_missing(status, "allocatable")
        && !is_empty(status, "capacity")
        && let Some(capacity) = status.get("capacity").cloned()
    {
        status.insert("allocatable".to_string(), capacity);
    }
}

fn default_persistent_volume(volume: &mut Object) {
    if let Some(spec) = child_or_insert(volume, "spec") {
        fill_zero(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        fill(spec, "volumeMode", json!("Filesystem"));
        default_volume_sources(spec);
    }
    if let Some(status) = child_or_insert(volume, "status") {
        fill_zero(status, "phase", json!("Pending"));
    }
}

fn default_persistent_volume_claim(claim: &mut Object) {
    if let Some(spec) = child_or_insert(claim, "spec") {
        default_claim_spec(spec);
    }
    if let Some(status) = child_or_insert(claim, "status") {
        fill_zero(status, "phase", json!("Pending"));
    }
}

/// For container limits: the default limit falls back to the max, the default request
/// to the default limit and then to the min.
fn default_limit_range(limit_range: &mut Object) {
    let Some(spec) = child(limit_range, "spec") else {
        return;
    };
    for item in elements(spec, "limits") {
        if text(item, "type") != "Container" {
            continue;
        }
        let max = map_of(item, "max");
        copy_missing_entries(item, "default", &max);
        let default = map_of(item, "default");
        copy_missing_entries(item, "defaultRequest", &default);
        let min = map_of(item, "min");
        copy_missing_entries(item, "defaultRequest", &min);
    }
}

// ---------------------------------------------------------------------------------
// apps/v1

fn default_template_of(spec: &mut Object) {
    if let Some(template) = child(spec, "template") {
        default_pod_template(template);
    }
}

fn default_deployment(deployment: &mut Object) {
    let Some(spec) = child_or_insert(deployment, "spec") else {
        return;
    };
    fill(spec, "replicas", json!(1));
    if let Some(strategy) = child_or_insert(spec, "strategy") {
        fill_zero(strategy, "type", json!("RollingUpdate"));
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling_update) = child_or_insert(strategy, "rollingUpdate")
        {
            fill(rolling_update, "maxUnavailable", json!("25%"));
            fill(rolling_update, "maxSurge", json!("25%"));
        }
    }
    fill(spec, "revisionHistoryLimit", json!(10));
    fill(spec, "progressDeadlineSeconds", json!(600));
    default_template_of(spec);
}

fn default_replica_set(replica_set: &mut Object) {
    let Some(spec) = child_or_insert(replica_set, "spec") else {
        return;
    };
    fill(spec, "replicas", json!(1));
    default_template_of(spec);
}

fn default_stateful_set(stateful_set: &mut Object) {
    let Some(spec) = child_or_insert(stateful_set, "spec") else {
        return;
    };
    fill_zero(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = child_or_insert(spec, "updateStrategy") {
        if is_zero(strategy, "type") {
            strategy.insert("type".to_string(), json!("RollingUpdate"));
            fill(strategy, "rollingUpdate", json!({}));
        }
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling_update) = child(strategy, "rollingUpdate")
        {
            fill(rolling_update, "partition", json!(0));
        }
    }
    if let Some(retention) = child_or_insert(spec, "persistentVolumeClaimRetentionPolicy") {
        fill_zero(retention, "whenDeleted", json!("Retain"));
        fill_zero(retention, "whenScaled", json!("Retain"));
    }
    fill(spec, "replicas", json!(1));
    fill(spec, "revisionHistoryLimit", json!(10));
    default_template_of(spec);
    for claim in elements(spec, "volumeClaimTemplates") {
        fill_zero(claim, "apiVersion", json!("v1"));
        fill_zero(claim, "kind", json!("PersistentVolumeClaim"));
        default_persistent_volume_claim(claim);
    }
}

fn default_daemon_set(daemon_set: &mut Object) {
    let Some(spec) = child_or_insert(daemon_set, "spec") else {
        return;
    };
    if let Some(strategy) = child_or_insert(spec, "updateStrategy") {
        fill_zero(strategy, "type", json!("RollingUpdate"));
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling_update) = child_or_insert(strategy, "rollingUpdate")
        {
            fill(rolling_update, "maxUnavailable", json!(1));
            fill(rolling_update, "maxSurge", json!(0));
        }
    }
    fill(spec, "revisionHistoryLimit", json!(10));
    default_template_of(spec);
}

// ---------------------------------------------------------------------------------
// batch/v1

fn default_job(job: &mut Object) {
    let Some(spec) = child_or_insert(job, "spec") else {
        return;
    };
    // A job with neither is a single pod run once.
    if is_missing(spec, "completions") && is_missing(spec, "parallelism") {
        spec.insert("completions".to_string(), json!(1));
    }
    fill(spec, "parallelism", json!(1));
    let backoff_limit = if is_missing(spec, "backoffLimitPerIndex") {
        6
    } else {
        i64::from(i32::MAX)
    };
    fill(spec, "backoffLimit", json!(backoff_limit));
    fill(spec, "completionMode", json!("NonIndexed"));
    fill(spec, "suspend", json!(false));
    default_pod_failure_policy(spec);
    let replacement_policy = if is_missing(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    fill(spec, "podReplacementPolicy", json!(replacement_policy));
    fill(spec, "manualSelector", json!(false));
    // Like upstream, a template without `restartPolicy` gets `Always` here, which Job
    // validation then rejects (a Job's pods use `Never` or `OnFailure`).
    default_template_of(spec);

    let template_labels =
        at(spec, &["template", "metadata"]).map(|metadata| map_of(metadata, "labels"));
    if let Some(labels) = template_labels.filter(|labels| !labels.is_empty())
        && let Some(metadata) = child_or_insert(job, "metadata")
        && is_empty(metadata, "labels")
    {
        metadata.insert("labels".to_string(), Value::Object(labels));
    }
}

fn default_pod_failure_policy(job_spec: &mut Object) {
    let Some(policy) = child(job_spec, "podFailurePolicy") else {
        return;
    };
    for rule in elements(policy, "rules") {
        for pattern in elements(rule, "onPodConditions") {
            fill_zero(pattern, "status", json!("True"));
        }
    }
}

const CRON_JOB_DEFAULTS: &[FieldDefault] = &[
    ("concurrencyPolicy", Zero, Str("Allow")),
    ("suspend", Missing, Bool(false)),
    ("successfulJobsHistoryLimit", Missing, Int(3)),
    ("failedJobsHistoryLimit", Missing, Int(1)),
];

/// The job template of a CronJob gets the pod template defaults, not a Job's own
/// (upstream defaults the Job type, and a job template holds only a job spec).
fn default_cron_job(cron_job: &mut Object) {
    let Some(spec) = child_or_insert(cron_job, "spec") else {
        return;
    };
    apply_field_defaults(spec, CRON_JOB_DEFAULTS);
    if let Some(job_spec) = at(spec, &["jobTemplate", "spec"]) {
        default_pod_failure_policy(job_spec);
        default_template_of(job_spec);
    }
}

// ---------------------------------------------------------------------------------
// autoscaling

/// The CPU utilization an HPA without metrics aims at.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

fn default_horizontal_pod_autoscaler(autoscaler: &mut Object) {
    let is_v1 = text(autoscaler, "apiVersion") == "autoscaling/v1";
    let Some(spec) = child_or_insert(autoscaler, "spec") else {
        return;
    };
    fill(spec, "minReplicas", json!(1));
    if is_v1 {
        // Upstream stores autoscaling/v2 and defaults its metrics; read back as v1
        // they are this field.
        fill(
            spec,
            "targetCPUUtilizationPercentage",
            json!(DEFAULT_CPU_UTILIZATION),
        );
        return;
    }
    if is_empty(spec, "metrics") {
        spec.insert(
            "metrics".to_string(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }]),
        );
    }
    // A behavior, once given, is completed with the controller's built-in rules. The
    // scale-down window stays unset: the controller takes it from its flags.
    if let Some(behavior) = child(spec, "behavior") {
        if let Some(scale_up) = child_or_insert(behavior, "scaleUp") {
            fill(scale_up, "stabilizationWindowSeconds", json!(0));
            fill(scale_up, "selectPolicy", json!("Max"));
            fill(
                scale_up,
                "policies",
                json!([
                    {"type": "Pods", "value": 4, "periodSeconds": 15},
                    {"type": "Percent", "value": 100, "periodSeconds": 15},
                ]),
            );
        }
        if let Some(scale_down) = child_or_insert(behavior, "scaleDown") {
            fill(scale_down, "selectPolicy", json!("Max"));
            fill(
                scale_down,
                "policies",
                json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// networking, discovery, rbac, storage, scheduling

fn default_network_policy(policy: &mut Object) {
    let Some(spec) = child_or_insert(policy, "spec") else {
        return;
    };
    for direction in ["ingress", "egress"] {
        for rule in elements(spec, direction) {
            for port in elements(rule, "ports") {
                fill(port, "protocol", json!("TCP"));
            }
        }
    }
    if is_empty(spec, "policyTypes") {
        let mut types = vec!["Ingress"];
        if !is_empty(spec, "egress") {
            types.push("Egress");
        }
        spec.insert("policyTypes".to_string(), json!(types));
    }
}

fn default_ingress_class(class: &mut Object) {
    if let Some(parameters) = at(class, &["spec", "parameters"]) {
        fill(parameters, "scope", json!("Cluster"));
    }
}

fn default_endpoint_slice(slice: &mut Object) {
    for port in elements(slice, "ports") {
        fill(port, "name", json!(""));
        fill(port, "protocol", json!("TCP"));
    }
}

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn default_role_binding(binding: &mut Object) {
    if let Some(role_ref) = child(binding, "roleRef") {
        fill_zero(role_ref, "apiGroup", json!(RBAC_GROUP));
    }
    for subject in elements(binding, "subjects") {
        if matches!(text(subject, "kind"), "User" | "Group") {
            fill_zero(subject, "apiGroup", json!(RBAC_GROUP));
        }
    }
}

const STORAGE_CLASS_DEFAULTS: &[FieldDefault] = &[
    ("reclaimPolicy", Missing, Str("Delete")),
    ("volumeBindingMode", Missing, Str("Immediate")),
];

fn default_storage_class(class: &mut Object) {
    apply_field_defaults(class, STORAGE_CLASS_DEFAULTS);
}

const CSI_DRIVER_DEFAULTS: &[FieldDefault] = &[
    ("attachRequired", Missing, Bool(true)),
    ("podInfoOnMount", Missing, Bool(false)),
    ("storageCapacity", Missing, Bool(false)),
    ("fsGroupPolicy", Missing, Str("ReadWriteOnceWithFSType")),
    ("requiresRepublish", Missing, Bool(false)),
    ("seLinuxMount", Missing, Bool(false)),
];

fn default_csi_driver(driver: &mut Object) {
    let Some(spec) = child_or_insert(driver, "spec") else {
        return;
    };
    apply_field_defaults(spec, CSI_DRIVER_DEFAULTS);
    if is_empty(spec, "volumeLifecycleModes") {
        spec.insert("volumeLifecycleModes".to_string(), json!(["Persistent"]));
    }
}

fn default_priority_class(class: &mut Object) {
    fill(class, "preemptionPolicy", json!("PreemptLowerPriority"));
}

// ---------------------------------------------------------------------------------
// admissionregistration/v1, apiextensions/v1

const WEBHOOK_DEFAULTS: &[FieldDefault] = &[
    ("failurePolicy", Missing, Str("Fail")),
    ("matchPolicy", Missing, Str("Equivalent")),
    ("timeoutSeconds", Missing, Int(10)),
];

fn default_webhooks(configuration: &mut Object, mutating: bool) {
    for webhook in elements(configuration, "webhooks") {
        apply_field_defaults(webhook, WEBHOOK_DEFAULTS);
        fill(webhook, "namespaceSelector", json!({}));
        fill(webhook, "objectSelector", json!({}));
        if mutating {
            fill(webhook, "reinvocationPolicy", json!("Never"));
        }
        for rule in elements(webhook, "rules") {
            fill(rule, "scope", json!("*"));
        }
        if let Some(service) = at(webhook, &["clientConfig", "service"]) {
            fill(service, "port", json!(443));
        }
    }
}

fn default_validating_webhooks(configuration: &mut Object) {
    default_webhooks(configuration, false);
}

fn default_mutating_webhooks(configuration: &mut Object) {
    default_webhooks(configuration, true);
}

fn default_match_resources(resources: &mut Object) {
    fill(resources, "matchPolicy", json!("Equivalent"));
    fill(resources, "namespaceSelector", json!({}));
    fill(resources, "objectSelector", json!({}));
    for key in ["resourceRules", "excludeResourceRules"] {
        for rule in elements(resources, key) {
            fill(rule, "scope", json!("*"));
        }
    }
}

fn default_validating_admission_policy(policy: &mut Object) {
    let Some(spec) = child_or_insert(policy, "spec") else {
        return;
    };
    fill(spec, "failurePolicy", json!("Fail"));
    if let Some(constraints) = child(spec, "matchConstraints") {
        default_match_resources(constraints);
    }
}

fn default_validating_admission_policy_binding(binding: &mut Object) {
    if let Some(resources) = at(binding, &["spec", "matchResources"]) {
        default_match_resources(resources);
    }
}

fn default_custom_resource_definition(definition: &mut Object) {
    let Some(spec) = child_or_insert(definition, "spec") else {
        return;
    };
    if let Some(names) = child(spec, "names") {
        let kind = text(names, "kind").to_string();
        if !kind.is_empty() {
            fill_zero(names, "singular", Value::from(kind.to_lowercase()));
            fill_zero(names, "listKind", Value::from(format!("{kind}List")));
        }
    }
    fill(spec, "conversion", json!({"strategy": "None"}));
    if let Some(service) = at(spec, &["conversion", "webhook", "clientConfig", "service"]) {
        fill(service, "port", json!(443));
    }
    let storage_version = spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|version| version.get("storage") == Some(&Value::Bool(true)))
        .and_then(|version| version.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(storage_version) = storage_version
        && let Some(status) = child_or_insert(definition, "status")
        && is_empty(status, "storedVersions")
    {
        status.insert("storedVersions".to_string(), json!([storage_version]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaulted(group: &str, kind: &str, mut object: Value) -> Value {
        apply_defaults(group, kind, &mut object);
        object
    }

    fn nginx_container() -> Value {
        json!({"name": "nginx", "image": "nginx:1.25"})
    }

    fn bare_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [nginx_container()]},
                },
            },
        })
    }

    #[test]
    fn bare_deployment_is_fully_defaulted() {
        let deployment = defaulted("apps", "Deployment", bare_deployment());
        let spec = &deployment["spec"];
        assert_eq!(spec["replicas"], json!(1));
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], json!(10));
        assert_eq!(spec["progressDeadlineSeconds"], json!(600));
        assert_eq!(spec["selector"], json!({"matchLabels": {"app": "web"}}));
        assert_eq!(
            spec["template"]["spec"],
            json!({
                "containers": [{
                    "name": "nginx",
                    "image": "nginx:1.25",
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "resources": {},
                }],
                "dnsPolicy": "ClusterFirst",
                "restartPolicy": "Always",
                "securityContext": {},
                "terminationGracePeriodSeconds": 30,
                "schedulerName": "default-scheduler",
            })
        );
    }

    #[test]
    fn templates_do_not_get_pod_only_defaults() {
        let mut deployment = bare_deployment();
        deployment["spec"]["template"]["spec"]["containers"][0]["resources"] =
            json!({"limits": {"cpu": "1"}});
        let deployment = defaulted("apps", "Deployment", deployment);
        let spec = &deployment["spec"]["template"]["spec"];
        for field in [
            "enableServiceLinks",
            "priority",
            "preemptionPolicy",
            "tolerations",
        ] {
            assert!(spec.get(field).is_none(), "{field} set on a template");
        }
        assert_eq!(
            spec["containers"][0]["resources"],
            json!({"limits": {"cpu": "1"}})
        );
    }

    #[test]
    fn pod_gets_pod_level_defaults_and_admission_mutations() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["containers"][0]["imagePullPolicy"], json!("Always"));
        assert_eq!(spec["enableServiceLinks"], json!(true));
        assert_eq!(spec["restartPolicy"], json!("Always"));
        assert_eq!(spec["priority"], json!(0));
        assert_eq!(spec["preemptionPolicy"], json!("PreemptLowerPriority"));
        assert_eq!(
            spec["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
    }

    #[test]
    fn existing_tolerations_suppress_the_default_ones() {
        let tolerate_all = json!({"operator": "Exists"});
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [nginx_container()], "tolerations": [tolerate_all.clone()]}}),
        );
        assert_eq!(pod["spec"]["tolerations"], json!([tolerate_all]));

        let not_ready = json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5});
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [nginx_container()], "tolerations": [not_ready.clone()]}}),
        );
        let tolerations = pod["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 2);
        assert_eq!(tolerations[0], not_ready);
        assert_eq!(
            tolerations[1]["key"],
            json!("node.kubernetes.io/unreachable")
        );
    }

    #[test]
    fn pod_priority_follows_the_priority_class() {
        let with_class = |class: &str| {
            defaulted(
                "",
                "Pod",
                json!({"spec": {"priorityClassName": class, "containers": [nginx_container()]}}),
            )
        };
        assert_eq!(
            with_class("system-node-critical")["spec"]["priority"],
            json!(2_000_001_000)
        );
        assert_eq!(
            with_class("system-cluster-critical")["spec"]["priority"],
            json!(2_000_000_000)
        );
        let custom = with_class("batch-low");
        assert!(custom["spec"].get("priority").is_none());
        assert!(custom["spec"].get("preemptionPolicy").is_none());
    }

    #[test]
    fn service_account_alias_follows_the_name() {
        let spec_of = |spec: Value| defaulted("", "Pod", json!({"spec": spec}))["spec"].clone();
        let named = spec_of(json!({"serviceAccountName": "builder", "containers": []}));
        assert_eq!(named["serviceAccount"], json!("builder"));
        let aliased = spec_of(json!({"serviceAccount": "legacy", "containers": []}));
        assert_eq!(aliased["serviceAccountName"], json!("legacy"));
        let both = spec_of(json!({"serviceAccountName": "new", "serviceAccount": "old"}));
        assert_eq!(both["serviceAccount"], json!("new"));
        let neither = spec_of(json!({"containers": []}));
        assert!(neither.get("serviceAccount").is_none());
        assert!(neither.get("serviceAccountName").is_none());
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let cases = [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("docker.io/library/nginx:latest", "Always"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1.25", "IfNotPresent"),
            ("nginx:1.25", "IfNotPresent"),
            (
                "nginx@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "IfNotPresent",
            ),
            (
                "nginx:latest@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "Always",
            ),
            ("registry.example.com:443/team/app", "Always"),
            ("", "IfNotPresent"),
            ("Nginx", "IfNotPresent"),
        ];
        for (image, expected) in cases {
            assert_eq!(image_pull_policy(image), expected, "image {image:?}");
        }
    }

    #[test]
    fn pod_limits_are_copied_to_missing_requests() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {
                "initContainers": [{"name": "init", "image": "busybox", "resources": {"limits": {"memory": "64Mi"}}}],
                "containers": [
                    {"name": "a", "image": "nginx", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
                    {"name": "b", "image": "nginx", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "100m"}}},
                    {"name": "c", "image": "nginx"},
                ],
            }}),
        );
        let spec = &pod["spec"];
        assert_eq!(
            spec["initContainers"][0]["resources"]["requests"],
            json!({"memory": "64Mi"})
        );
        assert_eq!(
            spec["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "128Mi"})
        );
        assert_eq!(
            spec["containers"][1]["resources"]["requests"],
            json!({"cpu": "100m", "memory": "1Gi"})
        );
        assert_eq!(spec["containers"][2]["resources"], json!({}));
    }

    #[test]
    fn host_network_pods_get_host_ports() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"hostNetwork": true, "containers": [
                {"name": "c", "image": "nginx", "ports": [{"containerPort": 80}, {"containerPort": 81, "hostPort": 8081}]},
            ]}}),
        );
        assert_eq!(
            pod["spec"]["containers"][0]["ports"],
            json!([
                {"containerPort": 80, "protocol": "TCP", "hostPort": 80},
                {"containerPort": 81, "hostPort": 8081, "protocol": "TCP"},
            ])
        );
    }

    #[test]
    fn container_parts_are_defaulted() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [{
                "name": "c",
                "image": "nginx",
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                "livenessProbe": {"httpGet": {"port": 8080}},
                "readinessProbe": {"grpc": {"port": 9090}, "timeoutSeconds": 0, "periodSeconds": 5},
                "startupProbe": {"exec": {"command": ["true"]}},
                "lifecycle": {"preStop": {"httpGet": {"port": 8080, "path": "/quit"}}},
            }]}}),
        );
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["env"][0]["valueFrom"]["fieldRef"],
            json!({"fieldPath": "spec.nodeName", "apiVersion": "v1"})
        );
        assert_eq!(
            container["livenessProbe"],
            json!({
                "httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"},
                "timeoutSeconds": 1,
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            })
        );
        assert_eq!(container["readinessProbe"]["timeoutSeconds"], json!(1));
        assert_eq!(container["readinessProbe"]["periodSeconds"], json!(5));
        assert_eq!(
            container["readinessProbe"]["grpc"],
            json!({"port": 9090, "service": ""})
        );
        assert_eq!(container["startupProbe"]["failureThreshold"], json!(3));
        assert_eq!(
            container["lifecycle"]["preStop"]["httpGet"],
            json!({"port": 8080, "path": "/quit", "scheme": "HTTP"})
        );
    }

    #[test]
    fn volumes_are_defaulted() {
        let pod = defaulted(
            "",
            "Pod",
            json!({"spec": {"containers": [nginx_container()], "volumes": [
                {"name": "scratch"},
                {"name": "config", "configMap": {"name": "cfg"}},
                {"name": "secret", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "host", "hostPath": {"path": "/var/log"}},
                {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"name": "token", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                ]}},
                {"name": "claim", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
            ]}}),
        );
        let volumes = &pod["spec"]["volumes"];
        assert_eq!(volumes[0], json!({"name": "scratch", "emptyDir": {}}));
        assert_eq!(
            volumes[1]["configMap"],
            json!({"name": "cfg", "defaultMode": 420})
        );
        assert_eq!(volumes[2]["secret"]["defaultMode"], json!(256));
        assert_eq!(
            volumes[3]["hostPath"],
            json!({"path": "/var/log", "type": ""})
        );
        assert_eq!(volumes[4]["downwardAPI"]["defaultMode"], json!(420));
        assert_eq!(
            volumes[4]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
            json!("v1")
        );
        assert_eq!(volumes[5]["projected"]["defaultMode"], json!(420));
        assert_eq!(
            volumes[5]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            json!(3600)
        );
        assert_eq!(
            volumes[5]["projected"]["sources"][1]["downwardAPI"]["items"][0]["fieldRef"]["apiVersion"],
            json!("v1")
        );
        assert_eq!(
            volumes[6]["ephemeral"]["volumeClaimTemplate"]["spec"]["volumeMode"],
            json!("Filesystem")
        );
    }

    #[test]
    fn present_values_are_not_overwritten() {
        let deployment = json!({
            "spec": {
                "replicas": 0,
                "revisionHistoryLimit": 2,
                "progressDeadlineSeconds": 60,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "restartPolicy": "OnFailure",
                        "dnsPolicy": "Default",
                        "schedulerName": "custom",
                        "terminationGracePeriodSeconds": 0,
                        "securityContext": {"runAsUser": 1000},
                        "containers": [{
                            "name": "c",
                            "image": "nginx",
                            "imagePullPolicy": "Never",
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "ports": [{"containerPort": 53, "protocol": "UDP"}],
                            "livenessProbe": {"tcpSocket": {"port": 53}, "failureThreshold": 7},
                        }],
                        "volumes": [{"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 0}}],
                    },
                },
            },
        });
        let result = defaulted("apps", "Deployment", deployment.clone());
        assert_eq!(result["spec"]["replicas"], json!(0));
        assert_eq!(result["spec"]["revisionHistoryLimit"], json!(2));
        assert_eq!(result["spec"]["progressDeadlineSeconds"], json!(60));
        assert_eq!(result["spec"]["strategy"], json!({"type": "Recreate"}));
        let spec = &result["spec"]["template"]["spec"];
        for field in [
            "restartPolicy",
            "dnsPolicy",
            "schedulerName",
            "terminationGracePeriodSeconds",
            "securityContext",
            "volumes",
        ] {
            assert_eq!(
                spec[field], deployment["spec"]["template"]["spec"][field],
                "{field}"
            );
        }
        let container = &spec["containers"][0];
        assert_eq!(container["imagePullPolicy"], json!("Never"));
        assert_eq!(
            container["terminationMessagePolicy"],
            json!("FallbackToLogsOnError")
        );
        assert_eq!(container["ports"][0]["protocol"], json!("UDP"));
        assert_eq!(container["livenessProbe"]["failureThreshold"], json!(7));
    }

    #[test]
    fn service_ports_and_policies_are_defaulted() {
        let service = defaulted(
            "",
            "Service",
            json!({"spec": {"selector": {"app": "web"}, "ports": [
                {"port": 80},
                {"port": 443, "targetPort": "https", "protocol": "TCP"},
                {"port": 53, "targetPort": 0, "protocol": "UDP"},
            ]}}),
        );
        let spec = &service["spec"];
        assert_eq!(
            spec["ports"],
            json!([
                {"port": 80, "protocol": "TCP", "targetPort": 80},
                {"port": 443, "targetPort": "https", "protocol": "TCP"},
                {"port": 53, "targetPort": 53, "protocol": "UDP"},
            ])
        );
        assert_eq!(spec["type"], json!("ClusterIP"));
        assert_eq!(spec["sessionAffinity"], json!("None"));
        assert_eq!(spec["internalTrafficPolicy"], json!("Cluster"));
        assert_eq!(spec["ipFamilyPolicy"], json!("SingleStack"));
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert!(spec.get("externalTrafficPolicy").is_none());
        assert!(
            spec.get("clusterIP").is_none(),
            "allocation is not defaulting"
        );
    }

    #[test]
    fn service_type_specific_defaults() {
        let load_balancer = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "ports": [{"port": 80}]}}),
        );
        assert_eq!(
            load_balancer["spec"]["externalTrafficPolicy"],
            json!("Cluster")
        );
        assert_eq!(
            load_balancer["spec"]["allocateLoadBalancerNodePorts"],
            json!(true)
        );

        let headless = defaulted(
            "",
            "Service",
            json!({"spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
        );
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        assert_eq!(
            headless["spec"]["ipFamilyPolicy"],
            json!("RequireDualStack")
        );
        assert_eq!(headless["spec"]["ipFamilies"], json!(["IPv4", "IPv6"]));

        let headless_with_selector = defaulted(
            "",
            "Service",
            json!({"spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
        );
        assert_eq!(
            headless_with_selector["spec"]["ipFamilyPolicy"],
            json!("SingleStack")
        );
        assert_eq!(
            headless_with_selector["spec"]["ipFamilies"],
            json!(["IPv4"])
        );

        let external_name = defaulted(
            "",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
        );
        for field in ["ipFamilyPolicy", "ipFamilies", "internalTrafficPolicy"] {
            assert!(external_name["spec"].get(field).is_none(), "{field}");
        }

        let client_ip = defaulted(
            "",
            "Service",
            json!({"spec": {"sessionAffinity": "ClientIP", "clusterIP": "fd00::10"}}),
        );
        assert_eq!(
            client_ip["spec"]["sessionAffinityConfig"],
            json!({"clientIP": {"timeoutSeconds": 10800}})
        );
        assert_eq!(client_ip["spec"]["ipFamilies"], json!(["IPv6"]));
    }

    #[test]
    fn workload_kinds_are_defaulted() {
        let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [nginx_container()]}});

        let replica_set = defaulted(
            "apps",
            "ReplicaSet",
            json!({"spec": {"template": template.clone()}}),
        );
        assert_eq!(replica_set["spec"]["replicas"], json!(1));
        assert_eq!(
            replica_set["spec"]["template"]["spec"]["dnsPolicy"],
            json!("ClusterFirst")
        );

        let daemon_set = defaulted(
            "apps",
            "DaemonSet",
            json!({"spec": {"template": template.clone()}}),
        );
        assert_eq!(
            daemon_set["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        assert_eq!(daemon_set["spec"]["revisionHistoryLimit"], json!(10));

        let stateful_set = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"serviceName": "db", "template": template.clone(), "volumeClaimTemplates": [
                {"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}},
            ]}}),
        );
        let spec = &stateful_set["spec"];
        assert_eq!(spec["replicas"], json!(1));
        assert_eq!(spec["podManagementPolicy"], json!("OrderedReady"));
        assert_eq!(
            spec["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(
            spec["persistentVolumeClaimRetentionPolicy"],
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
        );
        assert_eq!(spec["revisionHistoryLimit"], json!(10));
        let claim = &spec["volumeClaimTemplates"][0];
        assert_eq!(claim["apiVersion"], json!("v1"));
        assert_eq!(claim["kind"], json!("PersistentVolumeClaim"));
        assert_eq!(claim["spec"]["volumeMode"], json!("Filesystem"));
        assert_eq!(claim["status"], json!({"phase": "Pending"}));

        let on_delete = defaulted(
            "apps",
            "StatefulSet",
            json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}),
        );
        assert_eq!(
            on_delete["spec"]["updateStrategy"],
            json!({"type": "OnDelete"})
        );

        let controller = defaulted(
            "",
            "ReplicationController",
            json!({"metadata": {"name": "rc"}, "spec": {"template": template.clone()}}),
        );
        assert_eq!(controller["spec"]["replicas"], json!(1));
        assert_eq!(controller["spec"]["selector"], json!({"app": "x"}));
        assert_eq!(controller["metadata"]["labels"], json!({"app": "x"}));

        let pod_template = defaulted("", "PodTemplate", json!({"template": template}));
        assert_eq!(
            pod_template["template"]["spec"]["restartPolicy"],
            json!("Always")
        );
    }

    #[test]
    fn jobs_are_defaulted() {
        let template = json!({"metadata": {"labels": {"app": "batch"}}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}],
        }});
        let job = defaulted(
            "batch",
            "Job",
            json!({"metadata": {"name": "j"}, "spec": {"template": template.clone()}}),
        );
        let spec = &job["spec"];
        assert_eq!(spec["completions"], json!(1));
        assert_eq!(spec["parallelism"], json!(1));
        assert_eq!(spec["backoffLimit"], json!(6));
        assert_eq!(spec["completionMode"], json!("NonIndexed"));
        assert_eq!(spec["suspend"], json!(false));
        assert_eq!(spec["podReplacementPolicy"], json!("TerminatingOrFailed"));
        assert_eq!(spec["manualSelector"], json!(false));
        assert_eq!(spec["template"]["spec"]["restartPolicy"], json!("Never"));
        assert_eq!(
            spec["template"]["spec"]["schedulerName"],
            json!("default-scheduler")
        );
        assert_eq!(job["metadata"]["labels"], json!({"app": "batch"}));

        // As upstream: a Job template without restart policy gets `Always`, for
        // validation to reject.
        let mut no_restart_policy = template.clone();
        no_restart_policy["spec"]
            .as_object_mut()
            .unwrap()
            .remove("restartPolicy");
        let job = defaulted(
            "batch",
            "Job",
            json!({"spec": {"template": no_restart_policy}}),
        );
        assert_eq!(
            job["spec"]["template"]["spec"]["restartPolicy"],
            json!("Always")
        );

        // A work queue: parallelism without completions leaves completions unset.
        let queue = defaulted(
            "batch",
            "Job",
            json!({"spec": {"parallelism": 3, "backoffLimitPerIndex": 1, "completionMode": "Indexed",
                "podFailurePolicy": {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
                "template": template.clone()}}),
        );
        let spec = &queue["spec"];
        assert!(spec.get("completions").is_none());
        assert_eq!(spec["parallelism"], json!(3));
        assert_eq!(spec["backoffLimit"], json!(2_147_483_647));
        assert_eq!(spec["podReplacementPolicy"], json!("Failed"));
        assert_eq!(
            spec["podFailurePolicy"]["rules"][0]["onPodConditions"][0],
            json!({"type": "DisruptionTarget", "status": "True"})
        );

        let cron_job = defaulted(
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        );
        let spec = &cron_job["spec"];
        assert_eq!(spec["concurrencyPolicy"], json!("Allow"));
        assert_eq!(spec["suspend"], json!(false));
        assert_eq!(spec["successfulJobsHistoryLimit"], json!(3));
        assert_eq!(spec["failedJobsHistoryLimit"], json!(1));
        let job_spec = &spec["jobTemplate"]["spec"];
        assert_eq!(
            job_spec["template"]["spec"]["dnsPolicy"],
            json!("ClusterFirst")
        );
        assert!(
            job_spec.get("backoffLimit").is_none(),
            "a job template is not a Job"
        );
    }

    #[test]
    fn horizontal_pod_autoscalers_are_defaulted() {
        let v2 = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 5, "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}}}),
        );
        let spec = &v2["spec"];
        assert_eq!(spec["minReplicas"], json!(1));
        assert_eq!(
            spec["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert_eq!(
            spec["behavior"]["scaleUp"],
            json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ]})
        );
        assert_eq!(
            spec["behavior"]["scaleDown"],
            json!({"stabilizationWindowSeconds": 60, "selectPolicy": "Max", "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ]})
        );

        let without_behavior = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v2", "spec": {"maxReplicas": 5}}),
        );
        assert!(without_behavior["spec"].get("behavior").is_none());

        let v1 = defaulted(
            "autoscaling",
            "HorizontalPodAutoscaler",
            json!({"apiVersion": "autoscaling/v1", "spec": {"maxReplicas": 5}}),
        );
        assert_eq!(v1["spec"]["minReplicas"], json!(1));
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], json!(80));
        assert!(v1["spec"].get("metrics").is_none());
    }

    #[test]
    fn small_kinds_are_defaulted() {
        let secret = defaulted("", "Secret", json!({"metadata": {"name": "s"}}));
        assert_eq!(secret["type"], json!("Opaque"));

        let namespace = defaulted(
            "",
            "Namespace",
            json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "other"}}}),
        );
        assert_eq!(
            namespace["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "team-a"})
        );
        assert_eq!(namespace["status"], json!({"phase": "Active"}));

        let claim = defaulted(
            "",
            "PersistentVolumeClaim",
            json!({"spec": {"accessModes": ["ReadWriteOnce"]}}),
        );
        assert_eq!(claim["spec"]["volumeMode"], json!("Filesystem"));

        let volume = defaulted(
            "",
            "PersistentVolume",
            json!({"spec": {"hostPath": {"path": "/data"}}}),
        );
        assert_eq!(
            volume["spec"]["persistentVolumeReclaimPolicy"],
            json!("Retain")
        );
        assert_eq!(volume["spec"]["volumeMode"], json!("Filesystem"));
        assert_eq!(volume["spec"]["hostPath"]["type"], json!(""));
        assert_eq!(volume["status"], json!({"phase": "Pending"}));

        let storage_class = defaulted(
            "storage.k8s.io",
            "StorageClass",
            json!({"provisioner": "x"}),
        );
        assert_eq!(storage_class["reclaimPolicy"], json!("Delete"));
        assert_eq!(storage_class["volumeBindingMode"], json!("Immediate"));

        let priority_class = defaulted("scheduling.k8s.io", "PriorityClass", json!({"value": 10}));
        assert_eq!(
            priority_class["preemptionPolicy"],
            json!("PreemptLowerPriority")
        );

        let endpoints = defaulted(
            "",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
        );
        assert_eq!(
            endpoints["subsets"][0]["ports"][0]["protocol"],
            json!("TCP")
        );

        let slice = defaulted(
            "discovery.k8s.io",
            "EndpointSlice",
            json!({"ports": [{"port": 80}]}),
        );
        assert_eq!(
            slice["ports"][0],
            json!({"port": 80, "name": "", "protocol": "TCP"})
        );

        let limit_range = defaulted(
            "",
            "LimitRange",
            json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]}}),
        );
        let item = &limit_range["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );

        let node = defaulted(
            "",
            "Node",
            json!({"status": {"capacity": {"cpu": "4", "pods": "110"}}}),
        );
        assert_eq!(
            node["status"]["allocatable"],
            json!({"cpu": "4", "pods": "110"})
        );
    }

    #[test]
    fn network_policies_and_role_bindings_are_defaulted() {
        let policy = defaulted(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 443}]}]}}),
        );
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            policy["spec"]["egress"][0]["ports"][0]["protocol"],
            json!("UDP")
        );
        assert_eq!(
            policy["spec"]["egress"][0]["ports"][1]["protocol"],
            json!("TCP")
        );

        let ingress_only = defaulted(
            "networking.k8s.io",
            "NetworkPolicy",
            json!({"spec": {"podSelector": {}}}),
        );
        assert_eq!(ingress_only["spec"]["policyTypes"], json!(["Ingress"]));

        let binding = defaulted(
            "rbac.authorization.k8s.io",
            "RoleBinding",
            json!({
                "roleRef": {"kind": "Role", "name": "reader"},
                "subjects": [
                    {"kind": "User", "name": "alice"},
                    {"kind": "Group", "name": "devs"},
                    {"kind": "ServiceAccount", "name": "default", "namespace": "default"},
                ],
            }),
        );
        assert_eq!(
            binding["roleRef"]["apiGroup"],
            json!("rbac.authorization.k8s.io")
        );
        assert_eq!(
            binding["subjects"][0]["apiGroup"],
            json!("rbac.authorization.k8s.io")
        );
        assert_eq!(
            binding["subjects"][1]["apiGroup"],
            json!("rbac.authorization.k8s.io")
        );
        assert!(binding["subjects"][2].get("apiGroup").is_none());
    }

    #[test]
    fn extension_kinds_are_defaulted() {
        let webhooks = defaulted(
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            json!({"webhooks": [{"name": "w.example.com", "clientConfig": {"service": {"name": "svc", "namespace": "ns"}},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}),
        );
        let webhook = &webhooks["webhooks"][0];
        assert_eq!(webhook["failurePolicy"], json!("Fail"));
        assert_eq!(webhook["matchPolicy"], json!("Equivalent"));
        assert_eq!(webhook["timeoutSeconds"], json!(10));
        assert_eq!(webhook["namespaceSelector"], json!({}));
        assert_eq!(webhook["objectSelector"], json!({}));
        assert_eq!(webhook["reinvocationPolicy"], json!("Never"));
        assert_eq!(webhook["rules"][0]["scope"], json!("*"));
        assert_eq!(webhook["clientConfig"]["service"]["port"], json!(443));

        let definition = defaulted(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            json!({"spec": {"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}, "scope": "Namespaced",
                "versions": [{"name": "v1beta1", "served": true, "storage": false}, {"name": "v1", "served": true, "storage": true}]}}),
        );
        assert_eq!(definition["spec"]["names"]["singular"], json!("widget"));
        assert_eq!(definition["spec"]["names"]["listKind"], json!("WidgetList"));
        assert_eq!(
            definition["spec"]["conversion"],
            json!({"strategy": "None"})
        );
        assert_eq!(definition["status"]["storedVersions"], json!(["v1"]));
    }

    /// One object of every defaulted kind, bare enough that most defaults apply.
    fn one_of_each_kind() -> Vec<(&'static str, &'static str, Value)> {
        let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {
            "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}],
                "readinessProbe": {"httpGet": {"port": 80}}, "resources": {"limits": {"cpu": "1"}}}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "s"}}],
        }});
        vec![
            (
                "",
                "Pod",
                json!({"metadata": {"name": "p"}, "spec": template["spec"].clone()}),
            ),
            ("", "PodTemplate", json!({"template": template.clone()})),
            (
                "",
                "ReplicationController",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "",
                "Service",
                json!({"spec": {"type": "NodePort", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}}),
            ),
            ("", "Service", json!({"spec": {"clusterIP": "None"}})),
            (
                "",
                "Endpoints",
                json!({"subsets": [{"ports": [{"port": 80}]}]}),
            ),
            ("", "Secret", json!({})),
            ("", "Namespace", json!({"metadata": {"name": "n"}})),
            ("", "Node", json!({"status": {"capacity": {"cpu": "1"}}})),
            (
                "",
                "PersistentVolume",
                json!({"spec": {"rbd": {"monitors": ["m"], "image": "i"}}}),
            ),
            ("", "PersistentVolumeClaim", json!({"spec": {}})),
            (
                "",
                "LimitRange",
                json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}}),
            ),
            ("apps", "Deployment", bare_deployment()),
            (
                "apps",
                "ReplicaSet",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "apps",
                "StatefulSet",
                json!({"spec": {"template": template.clone(), "volumeClaimTemplates": [{"spec": {}}]}}),
            ),
            (
                "apps",
                "DaemonSet",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "batch",
                "Job",
                json!({"spec": {"template": template.clone()}}),
            ),
            (
                "batch",
                "CronJob",
                json!({"spec": {"jobTemplate": {"spec": {"template": template}}}}),
            ),
            (
                "autoscaling",
                "HorizontalPodAutoscaler",
                json!({"spec": {"behavior": {}}}),
            ),
            (
                "networking.k8s.io",
                "NetworkPolicy",
                json!({"spec": {"ingress": [{"ports": [{"port": 80}]}]}}),
            ),
            (
                "networking.k8s.io",
                "IngressClass",
                json!({"spec": {"parameters": {"kind": "K", "name": "n"}}}),
            ),
            ("discovery.k8s.io", "EndpointSlice", json!({"ports": [{}]})),
            (
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                json!({"roleRef": {}, "subjects": [{"kind": "User"}]}),
            ),
            ("storage.k8s.io", "StorageClass", json!({})),
            ("storage.k8s.io", "CSIDriver", json!({})),
            ("scheduling.k8s.io", "PriorityClass", json!({})),
            (
                "admissionregistration.k8s.io",
                "ValidatingWebhookConfiguration",
                json!({"webhooks": [{"rules": [{}]}]}),
            ),
            (
                "admissionregistration.k8s.io",
                "ValidatingAdmissionPolicy",
                json!({"spec": {"matchConstraints": {"resourceRules": [{}]}}}),
            ),
            (
                "admissionregistration.k8s.io",
                "ValidatingAdmissionPolicyBinding",
                json!({"spec": {"matchResources": {}}}),
            ),
            (
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                json!({"spec": {"names": {"kind": "K"}, "versions": [{"name": "v1", "storage": true}]}}),
            ),
        ]
    }

    #[test]
    fn defaulting_is_idempotent() {
        for (group, kind, object) in one_of_each_kind() {
            let once = defaulted(group, kind, object.clone());
            assert_ne!(once, object, "{group}/{kind} got no defaults");
            let twice = defaulted(group, kind, once.clone());
            assert_eq!(twice, once, "{group}/{kind} changed on the second pass");
        }
    }

    #[test]
    fn every_defaulted_kind_is_a_served_kind() {
        for (group, kind, _) in DEFAULTERS {
            assert!(
                crate::resources::builtin()
                    .iter()
                    .any(|info| info.group == *group && info.kind == *kind),
                "{group}/{kind} is not in the resource table"
            );
        }
    }

    #[test]
    fn other_kinds_and_values_are_left_alone() {
        let config_map = json!({"metadata": {"name": "c"}, "data": {"a": "b"}});
        assert_eq!(defaulted("", "ConfigMap", config_map.clone()), config_map);
        let custom = json!({"spec": {"replicas": null}});
        assert_eq!(
            defaulted("example.com", "Deployment", custom.clone()),
            custom
        );
        assert_eq!(
            defaulted("apps", "Deployment", json!("text")),
            json!("text")
        );
        // Malformed fields are left for validation to report.
        let malformed =
            json!({"spec": {"strategy": "fast", "template": {"spec": {"containers": "c"}}}});
        let result = defaulted("apps", "Deployment", malformed);
        assert_eq!(result["spec"]["strategy"], json!("fast"));
        assert_eq!(result["spec"]["template"]["spec"]["containers"], json!("c"));
    }
}
