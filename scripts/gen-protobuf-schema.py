#!/usr/bin/env python3
"""Generates crates/apiserver/src/protobuf_schema.txt, the message table that
crates/apiserver/src/protobuf.rs uses to decode Kubernetes protobuf request bodies.

Regenerate (from the workspace root) with:

    python3 scripts/gen-protobuf-schema.py > crates/apiserver/src/protobuf_schema.txt

or with explicit crate sources:

    python3 scripts/gen-protobuf-schema.py --k8s-pb PATH/k8s-pb-0.9.0 \
        --k8s-openapi PATH/k8s-openapi-0.29.0 > crates/apiserver/src/protobuf_schema.txt

Both default to the cargo registry: the unpacked sources in ~/.cargo/registry/src/*/,
else the downloaded ~/.cargo/registry/cache/*/<name>.crate; a path may also be a .crate
file. `cargo fetch` in the workspace brings k8s-openapi. k8s-pb is not a dependency of
the workspace (the table is data): fetch it once from a scratch crate, e.g.
`cargo new /tmp/pb && cd /tmp/pb && cargo add k8s-pb@=0.9.0 && cargo fetch`.

Where the facts come from:
  * k8s-pb 0.9.0 (prost code generated from the generated.proto files of k8s.io/api,
    apimachinery and apiextensions-apiserver, of a Kubernetes newer than 1.33): every
    message, its fields, their tag numbers, scalar types, repeated/map-ness and the
    message types they refer to.
  * k8s-openapi 0.29.0: the JSON name of each field (prost's snake_case loses it:
    `volumeID` becomes `volume_id`), from its newest src/v1_* so that every field has
    one; src/v1_33 then decides which fields 1.33 has (the others are left out, so
    the decoder skips them as a 1.33 server does) and which are required (not an
    `Option`). A proto field that has no JSON field of its own, refers to a
    message and whose message's fields are JSON fields of the parent is an embedded
    (`json:",inline"`) struct, such as Volume.volumeSource.
  * POINTER_FIELDS below: the optional scalar fields that are Go pointers
    (`*int32`, `*bool`, `*string`, ...) in k8s.io/api 1.33. Go's protobuf encoding
    writes every non-pointer field, zero or not, and Go's JSON encoding drops the zero
    value of an `omitempty` field, so the decoder drops zero scalars of optional
    fields unless they are pointers (an explicit `replicas: 0`) or required.

Output format, one record a line:
    # comment
    G <apiVersion> <package>            a served group version and its Go package
    M <package>.<Message> [list]        a message; `list`: a named Go slice ([]string)
    <tag> <jsonName> <type> [flags]     a field of the message above
  type: s (string) b (bool) i32 i64 u32 u64 f64 f32 y (bytes) or @Message (a message
  of the same package) or @package.Message; prefixed with [] when repeated and with
  {} for a map from string keys. flags: ! keep the zero value (required or a pointer);
  ^ embedded: the message's fields belong to the parent object.
"""

import argparse
import glob
import os
import re
import sys
import tarfile
import tempfile

# Group versions served, and their Go packages (k8s-pb module paths below src/).
GROUP_VERSIONS = [
    ("v1", "api/core/v1"),
    ("apps/v1", "api/apps/v1"),
    ("batch/v1", "api/batch/v1"),
    ("autoscaling/v1", "api/autoscaling/v1"),
    ("autoscaling/v2", "api/autoscaling/v2"),
    ("policy/v1", "api/policy/v1"),
    ("rbac.authorization.k8s.io/v1", "api/rbac/v1"),
    ("authorization.k8s.io/v1", "api/authorization/v1"),
    ("authentication.k8s.io/v1", "api/authentication/v1"),
    ("networking.k8s.io/v1", "api/networking/v1"),
    ("storage.k8s.io/v1", "api/storage/v1"),
    ("coordination.k8s.io/v1", "api/coordination/v1"),
    ("discovery.k8s.io/v1", "api/discovery/v1"),
    ("events.k8s.io/v1", "api/events/v1"),
    ("scheduling.k8s.io/v1", "api/scheduling/v1"),
    ("node.k8s.io/v1", "api/node/v1"),
    ("certificates.k8s.io/v1", "api/certificates/v1"),
    ("admissionregistration.k8s.io/v1", "api/admissionregistration/v1"),
    ("flowcontrol.apiserver.k8s.io/v1", "api/flowcontrol/v1"),
    ("apiextensions.k8s.io/v1", "apiextensions_apiserver/pkg/apis/apiextensions/v1"),
    ("meta.k8s.io/v1", "apimachinery/pkg/apis/meta/v1"),
]

# The Kubernetes version served: k8s-openapi's src/<API_VERSION> decides which fields exist.
API_VERSION = "v1_33"

# Messages the decoder converts by hand (their JSON is not an object of their fields).
SPECIAL_MESSAGES = {
    "meta/v1.Time",
    "meta/v1.MicroTime",
    "meta/v1.Duration",
    "meta/v1.FieldsV1",
    "intstr.IntOrString",
    "resource.Quantity",
    "runtime.RawExtension",
    "apiextensions/v1.JSON",
    "apiextensions/v1.JSONSchemaPropsOrArray",
    "apiextensions/v1.JSONSchemaPropsOrBool",
    "apiextensions/v1.JSONSchemaPropsOrStringArray",
}

# Optional scalar fields that are Go pointers in k8s.io/api 1.33 (their zero value is
# kept). "Message": "jsonName ...", the message named as in the table.
POINTER_FIELDS = {
    "admissionregistration/v1.MatchResources": "matchPolicy",
    "admissionregistration/v1.MutatingWebhook": "timeoutSeconds failurePolicy matchPolicy reinvocationPolicy",
    "admissionregistration/v1.ParamRef": "parameterNotFoundAction",
    "admissionregistration/v1.Rule": "scope",
    "admissionregistration/v1.ServiceReference": "port path",
    "admissionregistration/v1.ValidatingAdmissionPolicySpec": "failurePolicy",
    "admissionregistration/v1.ValidatingWebhook": "timeoutSeconds failurePolicy matchPolicy",
    "admissionregistration/v1.Validation": "reason",
    "admissionregistration/v1.WebhookClientConfig": "url",
    "apiextensions/v1.CustomResourceDefinitionVersion": "deprecationWarning",
    "apiextensions/v1.CustomResourceSubresourceScale": "labelSelectorPath",
    "apiextensions/v1.JSONSchemaProps": "$ref maximum minimum multipleOf maxLength minLength maxItems"
    " minItems maxProperties minProperties x-kubernetes-preserve-unknown-fields"
    " x-kubernetes-list-type x-kubernetes-map-type",
    "apiextensions/v1.ServiceReference": "port path",
    "apiextensions/v1.ValidationRule": "optionalOldSelf reason",
    "apiextensions/v1.WebhookClientConfig": "url",
    "apps/v1.DaemonSetSpec": "revisionHistoryLimit",
    "apps/v1.DaemonSetStatus": "collisionCount",
    "apps/v1.DeploymentSpec": "replicas revisionHistoryLimit progressDeadlineSeconds",
    "apps/v1.DeploymentStatus": "collisionCount terminatingReplicas",
    "apps/v1.ReplicaSetSpec": "replicas",
    "apps/v1.ReplicaSetStatus": "terminatingReplicas",
    "apps/v1.RollingUpdateStatefulSetStrategy": "partition",
    "apps/v1.StatefulSetSpec": "replicas revisionHistoryLimit",
    "apps/v1.StatefulSetStatus": "collisionCount",
    "authentication/v1.TokenRequestSpec": "expirationSeconds",
    "autoscaling/v1.HorizontalPodAutoscalerSpec": "minReplicas targetCPUUtilizationPercentage",
    "autoscaling/v1.HorizontalPodAutoscalerStatus": "observedGeneration currentCPUUtilizationPercentage",
    "autoscaling/v2.HPAScalingRules": "stabilizationWindowSeconds selectPolicy",
    "autoscaling/v2.HorizontalPodAutoscalerSpec": "minReplicas",
    "autoscaling/v2.HorizontalPodAutoscalerStatus": "observedGeneration",
    "autoscaling/v2.MetricTarget": "averageUtilization",
    "autoscaling/v2.MetricValueStatus": "averageUtilization",
    "batch/v1.CronJobSpec": "startingDeadlineSeconds suspend successfulJobsHistoryLimit"
    " failedJobsHistoryLimit timeZone",
    "batch/v1.JobSpec": "parallelism completions activeDeadlineSeconds manualSelector backoffLimit"
    " ttlSecondsAfterFinished suspend backoffLimitPerIndex maxFailedIndexes completionMode"
    " podReplacementPolicy managedBy",
    "batch/v1.JobStatus": "ready terminating failedIndexes",
    "batch/v1.PodFailurePolicyOnExitCodesRequirement": "containerName",
    "batch/v1.SuccessPolicyRule": "succeededIndexes succeededCount",
    "certificates/v1.CertificateSigningRequestSpec": "expirationSeconds",
    "coordination/v1.LeaseSpec": "holderIdentity leaseDurationSeconds leaseTransitions strategy preferredHolder",
    "core/v1.AppArmorProfile": "localhostProfile",
    "core/v1.AzureDiskVolumeSource": "cachingMode fsType readOnly kind",
    "core/v1.CSIVolumeSource": "readOnly fsType",
    "core/v1.ClientIPConfig": "timeoutSeconds",
    "core/v1.ClusterTrustBundleProjection": "name signerName optional",
    "core/v1.ConfigMap": "immutable",
    "core/v1.ConfigMapEnvSource": "optional",
    "core/v1.ConfigMapKeySelector": "optional",
    "core/v1.ConfigMapProjection": "optional",
    "core/v1.ConfigMapVolumeSource": "defaultMode optional",
    "core/v1.Container": "restartPolicy",
    "core/v1.ContainerStatus": "started stopSignal",
    "core/v1.DownwardAPIVolumeFile": "mode",
    "core/v1.DownwardAPIVolumeSource": "defaultMode",
    "core/v1.EndpointAddress": "nodeName",
    "core/v1.EndpointPort": "appProtocol",
    "core/v1.EphemeralContainerCommon": "restartPolicy",
    "core/v1.FCVolumeSource": "lun",
    "core/v1.GRPCAction": "service",
    "core/v1.HostPathVolumeSource": "type",
    "core/v1.ISCSIPersistentVolumeSource": "initiatorName",
    "core/v1.ISCSIVolumeSource": "initiatorName",
    "core/v1.KeyToPath": "mode",
    "core/v1.Lifecycle": "stopSignal",
    "core/v1.LoadBalancerIngress": "ipMode",
    "core/v1.NodeFeatures": "supplementalGroupsPolicy",
    "core/v1.NodeRuntimeHandlerFeatures": "recursiveReadOnlyMounts userNamespaces",
    "core/v1.NodeSwapStatus": "capacity",
    "core/v1.PersistentVolumeClaimSpec": "storageClassName volumeMode volumeAttributesClassName",
    "core/v1.PersistentVolumeClaimStatus": "currentVolumeAttributesClassName",
    "core/v1.PersistentVolumeSpec": "volumeMode volumeAttributesClassName",
    "core/v1.PodDNSConfigOption": "value",
    "core/v1.PodResourceClaim": "resourceClaimName resourceClaimTemplateName",
    "core/v1.PodResourceClaimStatus": "resourceClaimName",
    "core/v1.PodSecurityContext": "runAsUser runAsNonRoot fsGroup runAsGroup fsGroupChangePolicy"
    " supplementalGroupsPolicy seLinuxChangePolicy",
    "core/v1.PodSpec": "terminationGracePeriodSeconds activeDeadlineSeconds automountServiceAccountToken"
    " priority shareProcessNamespace enableServiceLinks setHostnameAsFQDN hostUsers"
    " runtimeClassName preemptionPolicy",
    "core/v1.Probe": "terminationGracePeriodSeconds",
    "core/v1.ProjectedVolumeSource": "defaultMode",
    "core/v1.ReplicationControllerSpec": "replicas",
    "core/v1.SeccompProfile": "localhostProfile",
    "core/v1.Secret": "immutable",
    "core/v1.SecretEnvSource": "optional",
    "core/v1.SecretKeySelector": "optional",
    "core/v1.SecretProjection": "optional",
    "core/v1.SecretVolumeSource": "defaultMode optional",
    "core/v1.SecurityContext": "privileged runAsUser runAsNonRoot readOnlyRootFilesystem"
    " allowPrivilegeEscalation runAsGroup procMount",
    "core/v1.ServiceAccount": "automountServiceAccountToken",
    "core/v1.ServiceAccountTokenProjection": "expirationSeconds",
    "core/v1.ServicePort": "appProtocol",
    "core/v1.ServiceSpec": "allocateLoadBalancerNodePorts ipFamilyPolicy loadBalancerClass"
    " internalTrafficPolicy trafficDistribution",
    "core/v1.Toleration": "tolerationSeconds",
    "core/v1.TopologySpreadConstraint": "minDomains nodeAffinityPolicy nodeTaintsPolicy",
    "core/v1.TypedLocalObjectReference": "apiGroup",
    "core/v1.TypedObjectReference": "apiGroup namespace",
    "core/v1.VolumeMount": "mountPropagation recursiveReadOnly",
    "core/v1.VolumeMountStatus": "recursiveReadOnly",
    "core/v1.WindowsSecurityContextOptions": "gmsaCredentialSpecName gmsaCredentialSpec runAsUserName hostProcess",
    "discovery/v1.Endpoint": "hostname nodeName zone",
    "discovery/v1.EndpointConditions": "ready serving terminating",
    "discovery/v1.EndpointPort": "name protocol port appProtocol",
    "flowcontrol/v1.ExemptPriorityLevelConfiguration": "nominalConcurrencyShares lendablePercent",
    "flowcontrol/v1.LimitedPriorityLevelConfiguration": "nominalConcurrencyShares lendablePercent"
    " borrowingLimitPercent",
    "meta/v1.DeleteOptions": "gracePeriodSeconds orphanDependents propagationPolicy"
    " ignoreStoreReadErrorWithClusterBreakingPotential",
    "meta/v1.ListMeta": "remainingItemCount",
    "meta/v1.ObjectMeta": "deletionGracePeriodSeconds",
    "meta/v1.OwnerReference": "controller blockOwnerDeletion",
    "meta/v1.Preconditions": "uid resourceVersion",
    "networking/v1.IngressClassParametersReference": "apiGroup scope namespace",
    "networking/v1.IngressPortStatus": "error",
    "networking/v1.IngressSpec": "ingressClassName",
    "networking/v1.NetworkPolicyPort": "protocol endPort",
    "policy/v1.PodDisruptionBudgetSpec": "unhealthyPodEvictionPolicy",
    "scheduling/v1.PriorityClass": "preemptionPolicy",
    "storage/v1.CSIDriverSpec": "attachRequired podInfoOnMount fsGroupPolicy storageCapacity"
    " requiresRepublish seLinuxMount nodeAllocatableUpdatePeriodSeconds",
    "storage/v1.StorageClass": "reclaimPolicy allowVolumeExpansion volumeBindingMode",
    "storage/v1.TokenRequest": "expirationSeconds",
    "storage/v1.VolumeAttachmentSource": "persistentVolumeName",
    "storage/v1.VolumeError": "errorCode",
    "storage/v1.VolumeNodeResources": "count",
}

# The short package names used in the table.
def short_package(module):
    prefixes = [
        ("api/", ""),
        ("apimachinery/pkg/apis/", ""),
        ("apimachinery/pkg/util/", ""),
        ("apimachinery/pkg/api/", ""),
        ("apimachinery/pkg/", ""),
        ("apiextensions_apiserver/pkg/apis/", ""),
        ("kube_aggregator/pkg/apis/", ""),
        ("metrics/pkg/apis/", "metrics/"),
    ]
    for prefix, replacement in prefixes:
        if module.startswith(prefix):
            return replacement + module[len(prefix):]
    return module


def openapi_package(definition):
    """io.k8s.api.apps.v1 -> apps/v1, io.k8s.apimachinery.pkg.apis.meta.v1 -> meta/v1."""
    parts = definition.split(".")
    prefixes = [
        ["io", "k8s", "api"],
        ["io", "k8s", "apimachinery", "pkg", "apis"],
        ["io", "k8s", "apimachinery", "pkg", "util"],
        ["io", "k8s", "apimachinery", "pkg", "api"],
        ["io", "k8s", "apimachinery", "pkg"],
        ["io", "k8s", "apiextensions-apiserver", "pkg", "apis"],
        ["io", "k8s", "kube-aggregator", "pkg", "apis"],
    ]
    for prefix in prefixes:
        if parts[: len(prefix)] == prefix:
            rest = parts[len(prefix):]
            return "/".join(rest[:-1]), rest[-1]
    return None, parts[-1]


def normalize(name):
    return re.sub(r"[^a-z0-9]", "", name.lower())


def default_crate(name):
    registry = os.path.expanduser("~/.cargo/registry")
    for pattern in [os.path.join(registry, "src", "*", name), os.path.join(registry, "cache", "*", name + ".crate")]:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def crate_sources(path, scratch):
    """The directory of a crate's sources; a .crate file is unpacked into scratch."""
    if not path.endswith(".crate"):
        return path
    with tarfile.open(path) as archive:
        try:
            archive.extractall(scratch, filter="data")
        except TypeError:  # Python before 3.11.4 has no filters
            archive.extractall(scratch)
    return os.path.join(scratch, os.path.basename(path)[: -len(".crate")])


# ---------------------------------------------------------------------------------
# k8s-pb: the messages.

PROST_ATTR = re.compile(r"#\[prost\((.*)\)\]")
STRUCT_START = re.compile(r"^pub struct (\w+) \{(\})?\s*$")


class Field:
    def __init__(self, tag, rust_name, kind, label, scalar, ref):
        self.tag = tag
        self.rust_name = rust_name
        self.kind = kind  # "scalar", "message", "map"
        self.label = label  # "optional", "repeated", "map"
        self.scalar = scalar  # for scalars and map values: string, int32, ...
        self.ref = ref  # referenced message, "package.Name"
        self.json = None
        self.required = False
        self.inline = False


class Message:
    def __init__(self, package, name):
        self.package = package
        self.name = name
        self.go_name = name
        self.fields = []

    @property
    def key(self):
        return f"{self.package}.{self.name}"


def resolve_path(module, path):
    """Resolves a Rust type path relative to module (a list of segments)."""
    segments = path.split("::")
    base = list(module)
    while segments and segments[0] == "super":
        base.pop()
        segments.pop(0)
    if segments and segments[0] == "crate":
        base = []
        segments.pop(0)
    name = segments[-1]
    full = base + segments[:-1]
    return f"{short_package('/'.join(full))}.{name}"


def message_type(rust_type):
    """The message path inside a field's Rust type, without the containers."""
    t = re.sub(r"\s+", "", rust_type).replace(",>", ">")
    for wrapper in [
        "::core::option::Option<",
        "::prost::alloc::vec::Vec<",
        "::prost::alloc::boxed::Box<",
    ]:
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    m = re.match(r"::prost::alloc::collections::BTreeMap<::prost::alloc::string::String,(.*)>$", t)
    if m:
        t = m.group(1)
    return t


def parse_k8s_pb(root):
    messages = {}
    src = os.path.join(root, "src")
    for path in sorted(glob.glob(os.path.join(src, "**", "mod.rs"), recursive=True)):
        module = os.path.relpath(os.path.dirname(path), src).split(os.sep)
        package = short_package("/".join(module))
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        current = None
        attr = None
        i = 0
        while i < len(lines):
            line = lines[i]
            start = STRUCT_START.match(line)
            if start:
                current = Message(package, start.group(1))
                messages[current.key] = current
                if start.group(2):
                    current = None
                i += 1
                continue
            if current is None:
                i += 1
                continue
            if line == "}":
                current = None
                i += 1
                continue
            stripped = line.strip()
            m = PROST_ATTR.match(stripped)
            if m:
                attr = m.group(1)
                i += 1
                continue
            if stripped.startswith("pub ") and attr is not None:
                text = stripped
                while not (text.endswith(",") and text.count("<") == text.count(">")):
                    i += 1
                    text += " " + lines[i].strip()
                name, rust_type = text[4:-1].split(":", 1)
                name = name.strip()
                if name.startswith("r#"):
                    name = name[2:]
                current.fields.append(parse_field(attr, name, rust_type.strip(), module))
                attr = None
            i += 1
    return messages


def parse_field(attr, name, rust_type, module):
    tag = int(re.search(r'tag\s*=\s*"(\d+)"', attr).group(1))
    first = attr.split(",")[0].strip()
    map_match = re.match(r'btree_map\s*=\s*"string,\s*(\w+)"', attr)
    if map_match:
        value = map_match.group(1)
        ref = resolve_path(module, message_type(rust_type)) if value == "message" else None
        return Field(tag, name, "map", "map", value, ref)
    label = "repeated" if re.search(r"\brepeated\b", attr) else "optional"
    if first == "message":
        ref = resolve_path(module, message_type(rust_type))
        return Field(tag, name, "message", label, None, ref)
    scalar = first.split("=")[0].strip()
    return Field(tag, name, "scalar", label, scalar, None)


# ---------------------------------------------------------------------------------
# k8s-openapi: JSON names and required fields.

DEFINITION = re.compile(r"^// Generated from definition ([\w.\-]+)")
JSON_KEY = re.compile(r'^\s*"([^"]+)" => Field::Key_(\w+),')
STRUCT_FIELD = re.compile(r"^    pub (\w+): (.*),$")


def parse_k8s_openapi(root, version):
    """{"apps/v1.DeploymentSpec": {rust_name: (json_name, required)}} of one version."""
    definitions = {}
    src = os.path.join(root, "src", version)
    for path in sorted(glob.glob(os.path.join(src, "**", "*.rs"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            text = f.read()
        first = text.split("\n", 1)[0]
        m = DEFINITION.match(first)
        if not m:
            continue
        package, name = openapi_package(m.group(1))
        if package is None:
            continue
        required = {}
        in_struct = False
        for line in text.split("\n"):
            if line.startswith(f"pub struct {name} {{"):
                in_struct = True
                continue
            if in_struct:
                if line == "}":
                    break
                fm = STRUCT_FIELD.match(line)
                if fm:
                    required[fm.group(1)] = not fm.group(2).startswith("Option<")
        fields = {}
        for line in text.split("\n"):
            jm = JSON_KEY.match(line)
            if jm and jm.group(2) in required:
                fields[jm.group(2)] = (jm.group(1), required[jm.group(2)])
        definitions[f"{package}.{name}"] = fields
    return definitions


# ---------------------------------------------------------------------------------
# Joining the two.

def camel(name):
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def match_definitions(messages, definitions):
    """Gives each message its Go name and its definition's fields, by normalized name."""
    by_normal = {}
    for key in definitions:
        package, name = key.split(".", 1)
        by_normal[(package, name.lower())] = key
    matched = {}
    for message in messages.values():
        key = by_normal.get((message.package, message.name.lower()))
        if key:
            message.go_name = key.split(".", 1)[1]
            # Newtypes and enums (JSON, WatchEvent<T>) have no struct fields to name.
            if definitions[key] or not message.fields:
                matched[message.key] = definitions[key]
    # Lists and other kinds without a definition of their own: CsiDriverList -> CSIDriverList.
    for message in messages.values():
        if message.key in matched or not message.name.endswith("List"):
            continue
        base = messages.get(f"{message.package}.{message.name[:-4]}")
        if base is not None:
            message.go_name = base.go_name + "List"
    return matched


def embeds(message, available, messages):
    """Whether every field of message is a JSON field in available, directly or
    through a message embedded in it in turn."""
    if not message.fields:
        return False
    for field in message.fields:
        if normalize(field.rust_name) in available:
            continue
        inner = messages.get(field.ref) if field.kind == "message" else None
        if inner is None or not embeds(inner, available, messages):
            return False
    return True


def mark_embedded(message, available, messages, embedded_names):
    embedded_names.setdefault(message.key, {}).update(available)
    for field in message.fields:
        if normalize(field.rust_name) not in available and field.kind == "message":
            mark_embedded(messages[field.ref], available, messages, embedded_names)


def assign_json_names(messages, matched, warnings):
    """Sets json, required and inline on every field; fields of messages without a
    definition take the names of the definition that embeds them."""
    # Definition fields as {normalized json name: (json, required)}.
    def json_fields(fields):
        return {normalize(json): (json, required) for json, required in fields.values()}

    embedded_names = {}  # message key -> {normalized: (json, required)} from embedding parents
    for message in messages.values():
        if message.key not in matched:
            continue
        available = json_fields(matched[message.key])
        for field in message.fields:
            hit = available.get(normalize(field.rust_name))
            if hit:
                field.json, field.required = hit
                continue
            if field.kind == "message" and field.label == "optional":
                inner = messages.get(field.ref)
                if inner is not None and embeds(inner, available, messages):
                    field.inline = True
                    field.json = ""
                    mark_embedded(inner, available, messages, embedded_names)
                    continue
            warnings.append(f"{message.key}.{field.rust_name}: no JSON field")
    for message in messages.values():
        if message.key in matched:
            continue
        available = embedded_names.get(message.key, {})
        for field in message.fields:
            hit = available.get(normalize(field.rust_name))
            if hit:
                field.json, field.required = hit
            elif available and field.kind == "message" and field.ref in embedded_names:
                field.inline = True
                field.json = ""
            else:
                if available:
                    warnings.append(f"{message.key}.{field.rust_name}: no JSON field")
                field.json = camel(field.rust_name)


def drop_newer_fields(messages, matched, served):
    """Removes the fields that the served version does not have (they are skipped as
    unknown fields, as a 1.33 server does) and takes required-ness from it."""
    served_json = {}
    for key, fields in served.items():
        served_json[key] = {json: required for json, required in fields.values()}
    # Embedded messages are checked against the definition that embeds them.
    checks = {}
    for message in messages.values():
        go_key = f"{message.package}.{message.go_name}"
        if message.key in matched:
            checks.setdefault(message.key, served_json.get(go_key, {}))
            for field in message.fields:
                if field.inline:
                    mark = [field.ref]
                    while mark:
                        inner = messages[mark.pop()]
                        checks[inner.key] = served_json.get(go_key, {})
                        mark += [f.ref for f in inner.fields if f.inline]
    for key, available in checks.items():
        message = messages[key]
        if not available and f"{message.package}.{message.go_name}" not in served_json:
            continue  # a message 1.33 does not have: unreachable once its fields go
        kept = []
        for field in message.fields:
            if field.inline or field.json in available:
                if not field.inline:
                    field.required = available[field.json]
                kept.append(field)
        message.fields = kept


def reachable(messages, roots):
    seen = set()
    stack = list(roots)
    while stack:
        key = stack.pop()
        if key in seen or key not in messages:
            continue
        seen.add(key)
        if f"{messages[key].package}.{messages[key].go_name}" in SPECIAL_MESSAGES:
            continue
        for field in messages[key].fields:
            if field.ref:
                stack.append(field.ref)
    return seen


SCALARS = {
    "string": "s",
    "bool": "b",
    "int32": "i32",
    "int64": "i64",
    "uint32": "u32",
    "uint64": "u64",
    "double": "f64",
    "float": "f32",
    "bytes": "y",
}


def type_code(field, package, messages):
    if field.ref:
        ref_package, _ = field.ref.split(".", 1)
        target = messages[field.ref]
        name = target.go_name
        base = f"@{name}" if ref_package == package else f"@{ref_package}.{name}"
    else:
        base = SCALARS[field.scalar]
    if field.label == "repeated":
        return "[]" + base
    if field.label == "map":
        return "{}" + base
    return base


def is_list_wrapper(message, matched):
    """A named Go slice such as ExtraValue ([]string): one repeated field `items`."""
    return (
        message.key not in matched
        and not message.name.endswith("List")
        and len(message.fields) == 1
        and message.fields[0].rust_name == "items"
        and message.fields[0].label == "repeated"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k8s-pb", default=default_crate("k8s-pb-0.9.0"))
    parser.add_argument("--k8s-openapi", default=default_crate("k8s-openapi-0.29.0"))
    args = parser.parse_args()
    if not args.k8s_pb or not args.k8s_openapi:
        sys.exit("the k8s-pb 0.9.0 and k8s-openapi 0.29.0 sources were not found; pass their paths")

    with tempfile.TemporaryDirectory() as scratch:
        generate(crate_sources(args.k8s_pb, scratch), crate_sources(args.k8s_openapi, scratch))


def generate(k8s_pb, k8s_openapi):
    messages = parse_k8s_pb(k8s_pb)
    # k8s-pb 0.9.0 is generated from a newer Kubernetes than 1.33: the newest
    # definitions name every field, and fields that 1.33 lacks are left out.
    versions = sorted(
        (d for d in os.listdir(os.path.join(k8s_openapi, "src")) if re.match(r"v1_\d+$", d)),
        key=lambda d: int(d.split("_")[1]),
    )
    newest = parse_k8s_openapi(k8s_openapi, versions[-1])
    served = parse_k8s_openapi(k8s_openapi, API_VERSION)
    matched = match_definitions(messages, newest)
    warnings = []
    assign_json_names(messages, matched, warnings)
    drop_newer_fields(messages, matched, served)

    packages = [short_package(module) for _, module in GROUP_VERSIONS]
    served_keys = set(served)
    roots = [
        m.key
        for m in messages.values()
        if m.package in packages
        and (
            f"{m.package}.{m.go_name}" in served_keys
            or (m.go_name.endswith("List") and f"{m.package}.{m.go_name[:-4]}" in served_keys)
        )
    ]
    keep = reachable(messages, roots)

    by_go_name = {f"{m.package}.{m.go_name}": m for m in messages.values()}
    pointers = set()
    for key, names in POINTER_FIELDS.items():
        message = by_go_name.get(key)
        if message is None:
            warnings.append(f"pointer list: no message {key}")
            continue
        for json in names.split():
            field = next((f for f in message.fields if f.json == json), None)
            if field is None:
                warnings.append(f"pointer list: no field {key}.{json}")
            elif field.kind != "scalar" or field.label != "optional":
                warnings.append(f"pointer list: {key}.{json} is not an optional scalar")
            else:
                pointers.add(id(field))

    out = sys.stdout
    out.write("# Generated by scripts/gen-protobuf-schema.py from k8s-pb 0.9.0 and k8s-openapi 0.29.0 (v1_33).\n")
    out.write("# Do not edit; see the script for the format and how to regenerate.\n")
    for api_version, module in GROUP_VERSIONS:
        out.write(f"G {api_version} {short_package(module)}\n")
    for message in sorted((messages[k] for k in keep), key=lambda m: (m.package, m.go_name)):
        special = f"{message.package}.{message.go_name}" in SPECIAL_MESSAGES
        flag = " list" if is_list_wrapper(message, matched) else ""
        out.write(f"M {message.package}.{message.go_name}{flag}\n")
        if special:
            continue
        for field in sorted(message.fields, key=lambda f: f.tag):
            flags = ""
            if field.kind == "scalar" and field.label == "optional" and (
                field.required or id(field) in pointers
            ):
                flags += "!"
            if field.inline:
                flags += "^"
            json = field.json or "-"
            code = type_code(field, message.package, messages)
            out.write(f"{field.tag} {json} {code}{' ' + flags if flags else ''}\n")
    # Fields left without a JSON name, unless a special message or a field the served
    # version lacks (dropped on purpose).
    special = {k for k in keep if f"{messages[k].package}.{messages[k].go_name}" in SPECIAL_MESSAGES}
    remaining = {f"{k}.{f.rust_name}" for k in keep for f in messages[k].fields}
    for warning in warnings:
        field_key = warning.split(":")[0]
        message_key = field_key.rsplit(".", 1)[0]
        if warning.startswith("pointer list") or (field_key in remaining and message_key not in special):
            print(f"warning: {warning}", file=sys.stderr)
    print(f"{len(keep)} messages", file=sys.stderr)


if __name__ == "__main__":
    main()
