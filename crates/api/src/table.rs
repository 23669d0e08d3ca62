//! Server-side printing: the columns and cells of `meta.k8s.io/v1` Tables, as
//! kube-apiserver prints each built-in resource (`kubectl get`, `-o wide`).
//!
//! Every printed resource has one `Printer` in `PRINTERS`: a static column list and
//! a function that turns one object (JSON, as stored) into its cells. The column
//! names, types, cell values and wording follow upstream's
//! `pkg/printers/internalversion/printers.go`. Like kube-apiserver, the cells always
//! include the wide (`priority: 1`) columns; clients hide them unless asked for
//! `-o wide`.
//!
//! Resources without a printer get upstream's defaults: built-in ones (roles, limit
//! ranges, CRDs, ...) get `Name` and `Created At` (an RFC 3339 date), custom resources
//! get `Name` and `Age`, as a CRD without `additionalPrinterColumns` does.
//!
//! Ages use [`human_duration`], upstream's `HumanDuration` (`5s`, `3m2s`, `2d3h`,
//! `5y`), measured against the `now` the caller passes in. Quantities are shown in
//! upstream's canonical form ([`canonical_quantity`]: `1024Mi` prints as `1Gi`).
use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

/// Builds a row from cell values of mixed types (strings, integers, booleans).
macro_rules! row {
    ($($cell:expr),* $(,)?) => {
        vec![$(Value::from($cell)),*]
    };
}

/// One column definition of a Table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Column {
    pub name: &'static str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 for the default view, 1 for columns only `-o wide` shows.
    pub priority: i32,
}

/// The columns of a resource (`group` is "" for core, `plural` e.g. "pods").
/// Resources without their own printer get upstream's defaults: `Name` and
/// `Created At` for built-in groups, `Name` and `Age` for custom resources.
pub fn columns(group: &str, plural: &str) -> Vec<Column> {
    match find_printer(group, plural) {
        Some(printer) => printer.columns.to_vec(),
        None if is_builtin_group(group) => CREATED_AT_COLUMNS.to_vec(),
        None => CUSTOM_RESOURCE_COLUMNS.to_vec(),
    }
}

/// The cells of one object's row, in the order of [`columns`], as of `now`.
pub fn cells(group: &str, plural: &str, object: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match find_printer(group, plural) {
        Some(printer) => (printer.cells)(object, now),
        None if is_builtin_group(group) => created_at_cells(object),
        None => custom_resource_cells(object, now),
    }
}

/// Upstream's `HumanDuration`: a short, approximate rendering with two or three
/// significant figures (`59s`, `119s`, `2m`, `3m2s`, `10m`, `3h`, `7h5m`, `47h`,
/// `2d3h`, `20d`, `2y3d`, `10y`). Up to a second in the future reads `0s`; further
/// ahead is `<invalid>`.
pub fn human_duration(elapsed: Duration) -> String {
    // Whole seconds, truncated toward zero as Go's int(d.Seconds()) does.
    let seconds = elapsed.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with_remainder(days, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        return with_remainder(years, "y", days % 365, "d");
    }
    format!("{years}y")
}

/// `3m` or `3m2s`: the remainder is left out when it is zero.
fn with_remainder(major: i64, major_unit: &str, minor: i64, minor_unit: &str) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

// ---------------------------------------------------------------------------
// The printer table
// ---------------------------------------------------------------------------

/// Fills the cells of one object's row, as of `now`.
type CellsFn = fn(&Value, DateTime<Utc>) -> Vec<Value>;

/// How one resource is printed: its columns and the function filling one row.
struct Printer {
    plural: &'static str,
    columns: &'static [Column],
    cells: CellsFn,
}

const fn printer(plural: &'static str, columns: &'static [Column], cells: CellsFn) -> Printer {
    Printer {
        plural,
        columns,
        cells,
    }
}

/// Every resource with its own printer, by API group.
const PRINTERS: &[(&str, &[Printer])] = &[
    ("", CORE_PRINTERS),
    ("apps", APPS_PRINTERS),
    ("batch", BATCH_PRINTERS),
    ("autoscaling", AUTOSCALING_PRINTERS),
    ("networking.k8s.io", NETWORKING_PRINTERS),
    ("policy", POLICY_PRINTERS),
    ("rbac.authorization.k8s.io", RBAC_PRINTERS),
    ("storage.k8s.io", STORAGE_PRINTERS),
    ("coordination.k8s.io", COORDINATION_PRINTERS),
    ("discovery.k8s.io", DISCOVERY_PRINTERS),
    ("events.k8s.io", EVENTS_PRINTERS),
    ("scheduling.k8s.io", SCHEDULING_PRINTERS),
    ("node.k8s.io", NODE_PRINTERS),
    ("certificates.k8s.io", CERTIFICATES_PRINTERS),
    ("admissionregistration.k8s.io", ADMISSION_PRINTERS),
    ("flowcontrol.apiserver.k8s.io", FLOWCONTROL_PRINTERS),
];

/// core/v1 (limitranges use the default table).
const CORE_PRINTERS: &[Printer] = &[
    printer("pods", POD_COLUMNS, pod_cells),
    printer("podtemplates", POD_TEMPLATE_COLUMNS, pod_template_cells),
    printer("replicationcontrollers", REPLICA_COLUMNS, rc_cells),
    printer("services", SERVICE_COLUMNS, service_cells),
    printer("endpoints", ENDPOINTS_COLUMNS, endpoints_cells),
    printer("nodes", NODE_COLUMNS, node_cells),
    printer("events", EVENT_COLUMNS, core_event_cells),
    printer("namespaces", NAMESPACE_COLUMNS, namespace_cells),
    printer("secrets", SECRET_COLUMNS, secret_cells),
    printer(
        "serviceaccounts",
        SERVICE_ACCOUNT_COLUMNS,
        service_account_cells,
    ),
    printer("configmaps", CONFIG_MAP_COLUMNS, config_map_cells),
    printer("persistentvolumes", PV_COLUMNS, pv_cells),
    printer("persistentvolumeclaims", PVC_COLUMNS, pvc_cells),
    printer("resourcequotas", QUOTA_COLUMNS, resource_quota_cells),
    printer(
        "componentstatuses",
        COMPONENT_COLUMNS,
        component_status_cells,
    ),
];

const APPS_PRINTERS: &[Printer] = &[
    printer("deployments", DEPLOYMENT_COLUMNS, deployment_cells),
    printer("replicasets", REPLICA_COLUMNS, replica_set_cells),
    printer("statefulsets", STATEFUL_SET_COLUMNS, stateful_set_cells),
    printer("daemonsets", DAEMON_SET_COLUMNS, daemon_set_cells),
    printer("controllerrevisions", REVISION_COLUMNS, revision_cells),
];

const BATCH_PRINTERS: &[Printer] = &[
    printer("jobs", JOB_COLUMNS, job_cells),
    printer("cronjobs", CRON_JOB_COLUMNS, cron_job_cells),
];

const AUTOSCALING_PRINTERS: &[Printer] =
    &[printer("horizontalpodautoscalers", HPA_COLUMNS, hpa_cells)];

const NETWORKING_PRINTERS: &[Printer] = &[
    printer("ingresses", INGRESS_COLUMNS, ingress_cells),
    printer("ingressclasses", INGRESS_CLASS_COLUMNS, ingress_class_cells),
    printer(
        "networkpolicies",
        NETWORK_POLICY_COLUMNS,
        network_policy_cells,
    ),
    printer("ipaddresses", IP_ADDRESS_COLUMNS, ip_address_cells),
    printer("servicecidrs", SERVICE_CIDR_COLUMNS, service_cidr_cells),
];

const POLICY_PRINTERS: &[Printer] = &[printer("poddisruptionbudgets", PDB_COLUMNS, pdb_cells)];

/// rbac.authorization.k8s.io (roles and clusterroles use the default table).
const RBAC_PRINTERS: &[Printer] = &[
    printer("rolebindings", BINDING_COLUMNS, binding_cells),
    printer("clusterrolebindings", BINDING_COLUMNS, binding_cells),
];

const STORAGE_PRINTERS: &[Printer] = &[
    printer("storageclasses", STORAGE_CLASS_COLUMNS, storage_class_cells),
    printer("csidrivers", CSI_DRIVER_COLUMNS, csi_driver_cells),
    printer("csinodes", CSI_NODE_COLUMNS, csi_node_cells),
    printer("volumeattachments", ATTACHMENT_COLUMNS, attachment_cells),
    printer("csistoragecapacities", CAPACITY_COLUMNS, capacity_cells),
];

const COORDINATION_PRINTERS: &[Printer] = &[printer("leases", LEASE_COLUMNS, lease_cells)];

const DISCOVERY_PRINTERS: &[Printer] = &[printer("endpointslices", SLICE_COLUMNS, slice_cells)];

/// events.k8s.io: the same table as core events.
const EVENTS_PRINTERS: &[Printer] = &[printer("events", EVENT_COLUMNS, events_v1_event_cells)];

const SCHEDULING_PRINTERS: &[Printer] = &[printer(
    "priorityclasses",
    PRIORITY_CLASS_COLUMNS,
    priority_class_cells,
)];

const NODE_PRINTERS: &[Printer] = &[printer(
    "runtimeclasses",
    RUNTIME_CLASS_COLUMNS,
    runtime_class_cells,
)];

const CERTIFICATES_PRINTERS: &[Printer] = &[printer(
    "certificatesigningrequests",
    CSR_COLUMNS,
    csr_cells,
)];

const ADMISSION_PRINTERS: &[Printer] = &[
    printer(
        "mutatingwebhookconfigurations",
        WEBHOOK_COLUMNS,
        webhook_cells,
    ),
    printer(
        "validatingwebhookconfigurations",
        WEBHOOK_COLUMNS,
        webhook_cells,
    ),
    printer("validatingadmissionpolicies", VAP_COLUMNS, vap_cells),
    printer(
        "validatingadmissionpolicybindings",
        VAP_BINDING_COLUMNS,
        vap_binding_cells,
    ),
];

const FLOWCONTROL_PRINTERS: &[Printer] = &[
    printer("flowschemas", FLOW_SCHEMA_COLUMNS, flow_schema_cells),
    printer("prioritylevelconfigurations", LEVEL_COLUMNS, level_cells),
];

fn find_printer(group: &str, plural: &str) -> Option<&'static Printer> {
    let (_, printers) = PRINTERS.iter().find(|(g, _)| *g == group)?;
    printers.iter().find(|p| p.plural == plural)
}

fn is_builtin_group(group: &str) -> bool {
    crate::BUILT_IN_GROUPS.contains(&group)
}

// ---------------------------------------------------------------------------
// Column building blocks
// ---------------------------------------------------------------------------

/// A column of the default view, of any type.
const fn typed_col(name: &'static str, type_: &'static str, description: &'static str) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A string column of the default view.
const fn col(name: &'static str, description: &'static str) -> Column {
    typed_col(name, "string", description)
}

/// An integer column of the default view.
const fn int_col(name: &'static str, description: &'static str) -> Column {
    typed_col(name, "integer", description)
}

/// A boolean column of the default view.
const fn bool_col(name: &'static str, description: &'static str) -> Column {
    typed_col(name, "boolean", description)
}

/// A string column only `-o wide` shows.
const fn wide(name: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..col(name, description)
    }
}

const NAME: Column = Column {
    format: "name",
    ..col("Name", "Name of the object.")
};
const AGE: Column = col("Age", "Time since the object was created.");
const CONTAINERS: Column = wide("Containers", "Names of each container in the template.");
const IMAGES: Column = wide("Images", "Images of each container in the template.");
const SELECTOR: Column = wide("Selector", "Label selector of the pods it manages.");

/// Upstream's default table for built-in resources without a printer.
const CREATED_AT_COLUMNS: &[Column] = &[
    NAME,
    typed_col("Created At", "date", "When the object was created."),
];

/// The table of a CRD that declares no printer columns.
const CUSTOM_RESOURCE_COLUMNS: &[Column] = &[
    NAME,
    typed_col("Age", "date", "Time since the object was created."),
];

// ---------------------------------------------------------------------------
// Core: pods
// ---------------------------------------------------------------------------

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "Ready containers out of all containers."),
    col("Status", "The pod's phase or container state."),
    col("Restarts", "Restarts, and time since the last one."),
    AGE,
    wide("IP", "The pod's primary IP address."),
    wide("Node", "The node the pod is bound to."),
    wide("Nominated Node", "Node nominated while preempting."),
    wide("Readiness Gates", "Readiness gates that pass, of all."),
];

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let summary = pod_summary(pod, now);
    let status = &pod["status"];
    let pod_ip = list(status, "podIPs")
        .first()
        .map(|ip| text(ip, "ip"))
        .unwrap_or_else(|| text(status, "podIP"));
    row![
        name(pod),
        format!("{}/{}", summary.ready, summary.total),
        summary.status,
        summary.restarts,
        age(pod, now),
        or_none(pod_ip),
        or_none(text(pod, "spec.nodeName")),
        or_none(text(status, "nominatedNodeName")),
        readiness_gates(pod),
    ]
}

/// The READY, STATUS and RESTARTS cells of a pod.
#[derive(Debug, PartialEq)]
struct PodSummary {
    ready: usize,
    total: usize,
    status: String,
    restarts: String,
}

/// Computes a pod's row summary exactly as upstream's `printPod` does.
fn pod_summary(pod: &Value, now: DateTime<Utc>) -> PodSummary {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let phase = text(status, "phase");
    let mut reason = match text(status, "reason") {
        "" => phase.to_string(),
        reason => reason.to_string(),
    };
    if list(status, "conditions")
        .iter()
        .any(|c| text(c, "type") == "PodScheduled" && text(c, "reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_specs = list(spec, "initContainers");
    // Sidecars: init containers with restartPolicy Always, counted as app containers.
    let is_sidecar = |name: &str| {
        init_specs
            .iter()
            .any(|c| text(c, "name") == name && text(c, "restartPolicy") == "Always")
    };
    let sidecars = init_specs
        .iter()
        .filter(|c| text(c, "restartPolicy") == "Always")
        .count();
    let total = list(spec, "containers").len() + sidecars;
    let mut ready = 0;
    let mut restarts = 0;
    let mut last_restart = None;
    let mut sidecar_restarts = 0;
    let mut sidecar_last_restart = None;

    let mut initializing = false;
    for (index, container) in list(status, "initContainerStatuses").iter().enumerate() {
        let finished = time(container, "lastState.terminated.finishedAt");
        restarts += int(container, "restartCount");
        last_restart = latest(last_restart, finished);
        let sidecar = is_sidecar(text(container, "name"));
        if sidecar {
            sidecar_restarts += int(container, "restartCount");
            sidecar_last_restart = latest(sidecar_last_restart, finished);
        }
        let terminated = object_at(container, "state.terminated");
        let waiting_reason = text(container, "state.waiting.reason");
        if terminated.is_some_and(|t| int(t, "exitCode") == 0) {
            continue;
        }
        if sidecar && flag(container, "started") == Some(true) {
            if flag(container, "ready") == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(terminated) = terminated {
            match text(terminated, "reason") {
                "" if int(terminated, "signal") != 0 => {
                    format!("Init:Signal:{}", int(terminated, "signal"))
                }
                "" => format!("Init:ExitCode:{}", int(terminated, "exitCode")),
                why => format!("Init:{why}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{index}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_is_true(status, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let mut has_running = false;
        for container in list(status, "containerStatuses").iter().rev() {
            restarts += int(container, "restartCount");
            last_restart = latest(
                last_restart,
                time(container, "lastState.terminated.finishedAt"),
            );
            let waiting_reason = text(container, "state.waiting.reason");
            let terminated = object_at(container, "state.terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(terminated) = terminated {
                reason = match text(terminated, "reason") {
                    "" if int(terminated, "signal") != 0 => {
                        format!("Signal:{}", int(terminated, "signal"))
                    }
                    "" => format!("ExitCode:{}", int(terminated, "exitCode")),
                    why => why.to_string(),
                };
            } else if flag(container, "ready") == Some(true)
                && object_at(container, "state.running").is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last container completed but others still run is not Completed.
        if reason == "Completed" && has_running {
            reason = if condition_is_true(status, "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if has(pod, "metadata.deletionTimestamp") {
        if text(status, "reason") == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }
    }

    let restarts = match last_restart {
        Some(when) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - when)),
        _ => restarts.to_string(),
    };
    PodSummary {
        ready,
        total,
        status: reason,
        restarts,
    }
}

/// `True` gates out of all readiness gates, or `<none>` when the pod has none.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, "spec.readinessGates");
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let conditions = list(pod, "status.conditions");
    let passing = gates
        .iter()
        .filter(|gate| {
            conditions
                .iter()
                .find(|c| text(c, "type") == text(gate, "conditionType"))
                .is_some_and(|c| text(c, "status") == "True")
        })
        .count();
    format!("{passing}/{}", gates.len())
}

// ---------------------------------------------------------------------------
// Core: other namespaced resources
// ---------------------------------------------------------------------------

const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    col("Containers", "Names of each container in the template."),
    col("Images", "Images of each container in the template."),
    col("Pod Labels", "The labels of the pod template."),
];

fn pod_template_cells(template: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(&template["template"]);
    row![
        name(template),
        names,
        images,
        format_labels(at(template, "template.metadata.labels")),
    ]
}

/// ReplicationControllers and ReplicaSets print alike; only their selectors differ
/// in shape (a plain map, a LabelSelector).
const REPLICA_COLUMNS: &[Column] = &[
    NAME,
    int_col("Desired", "Number of replicas wanted."),
    int_col("Current", "Number of replicas that exist."),
    int_col("Ready", "Number of replicas that are ready."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replica_cells(object: &Value, now: DateTime<Utc>, selector: String) -> Vec<Value> {
    let (names, images) = container_cells(at(object, "spec.template"));
    row![
        name(object),
        desired_replicas(object),
        int(object, "status.replicas"),
        int(object, "status.readyReplicas"),
        age(object, now),
        names,
        images,
        selector,
    ]
}

fn rc_cells(rc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    replica_cells(rc, now, format_labels(at(rc, "spec.selector")))
}

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "How the service is exposed."),
    col("Cluster-IP", "The service's cluster IP address."),
    col("External-IP", "Addresses reachable from outside."),
    col("Port(s)", "The service's ports, with node ports."),
    AGE,
    wide("Selector", "Label selector of the pods it routes to."),
];

fn service_cells(service: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &service["spec"];
    let cluster_ip = list(spec, "clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| text(spec, "clusterIP"));
    let ports: Vec<String> = list(spec, "ports")
        .iter()
        .map(|port| {
            let protocol = opt_text(port, "protocol").unwrap_or("TCP");
            match int(port, "nodePort") {
                node_port if node_port > 0 => {
                    format!("{}:{node_port}/{protocol}", int(port, "port"))
                }
                _ => format!("{}/{protocol}", int(port, "port")),
            }
        })
        .collect();
    row![
        name(service),
        service_type(service),
        or_none(cluster_ip),
        service_external_ip(service),
        or_none(&ports.join(",")),
        age(service, now),
        format_labels(at(spec, "selector")),
    ]
}

fn service_type(service: &Value) -> &str {
    opt_text(service, "spec.type").unwrap_or("ClusterIP")
}

fn service_external_ip(service: &Value) -> String {
    let external_ips: Vec<&str> = list(service, "spec.externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match service_type(service) {
        "ClusterIP" | "NodePort" => or_none(&external_ips.join(",")),
        "LoadBalancer" => {
            let mut addresses = load_balancer_addresses(at(service, "status.loadBalancer"));
            addresses.extend(external_ips.iter().map(|ip| ip.to_string()));
            if addresses.is_empty() {
                "<pending>".to_string()
            } else {
                addresses.join(",")
            }
        }
        "ExternalName" => text(service, "spec.externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// The sorted, distinct IPs (or else host names) of a load balancer status.
fn load_balancer_addresses(status: &Value) -> Vec<String> {
    let addresses: BTreeSet<&str> = list(status, "ingress")
        .iter()
        .filter_map(
            |ingress| match (text(ingress, "ip"), text(ingress, "hostname")) {
                ("", "") => None,
                ("", hostname) => Some(hostname),
                (ip, _) => Some(ip),
            },
        )
        .collect();
    addresses.into_iter().map(str::to_string).collect()
}

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col("Endpoints", "Addresses and ports of the endpoints."),
    AGE,
];

fn endpoints_cells(endpoints: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(endpoints),
        format_endpoints(endpoints),
        age(endpoints, now)
    ]
}

/// Up to three `ip:port` pairs, then `+ N more...`.
fn format_endpoints(endpoints: &Value) -> String {
    const SHOWN: usize = 3;
    let subsets = list(endpoints, "subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut shown = Vec::new();
    let mut more = false;
    let mut count = 0;
    for subset in subsets {
        let addresses = list(subset, "addresses");
        let ports = list(subset, "ports");
        // Headless services may have no ports: list the bare IPs.
        let port_numbers: Vec<Option<i64>> = if ports.is_empty() {
            vec![None]
        } else {
            ports.iter().map(|p| Some(int(p, "port"))).collect()
        };
        for port in port_numbers {
            count += addresses.len();
            for address in addresses {
                if shown.len() == SHOWN {
                    more = true;
                    break;
                }
                let ip = text(address, "ip");
                shown.push(match port {
                    None => ip.to_string(),
                    Some(port) => join_host_port(ip, port),
                });
            }
        }
    }
    let joined = shown.join(",");
    if more {
        format!("{joined} + {} more...", count - SHOWN)
    } else {
        joined
    }
}

/// `ip:port`, with IPv6 addresses in brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "Time since the event was last seen."),
    col("Type", "Type of the event (Normal, Warning)."),
    col("Reason", "Why the event happened, in CamelCase."),
    col("Object", "The object the event is about."),
    wide("Subobject", "The part of the object the event is about."),
    wide("Source", "The component that reported the event."),
    col("Message", "Human readable description of the event."),
    wide("First Seen", "Time since the event was first seen."),
    wide("Count", "How many times the event was seen."),
    Column {
        format: "name",
        ..wide("Name", "Name of the event object.")
    },
];

/// Where the fields of an event live: core/v1 and events.k8s.io/v1 name them differently.
struct EventFields {
    regarding: &'static str,
    note: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
    source: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    regarding: "involvedObject",
    note: "message",
    first_timestamp: "firstTimestamp",
    last_timestamp: "lastTimestamp",
    count: "count",
    source: "source",
};

const EVENTS_V1_EVENT: EventFields = EventFields {
    regarding: "regarding",
    note: "note",
    first_timestamp: "deprecatedFirstTimestamp",
    last_timestamp: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    source: "deprecatedSource",
};

fn core_event_cells(event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    event_cells(event, now, &CORE_EVENT)
}

fn events_v1_event_cells(event: &Value, now: DateTime<Utc>) -> Vec<Value> {
    event_cells(event, now, &EVENTS_V1_EVENT)
}

fn event_cells(event: &Value, now: DateTime<Utc>, fields: &EventFields) -> Vec<Value> {
    let first_seen = match time(event, fields.first_timestamp) {
        Some(first) => human_duration(now - first),
        None => since(time(event, "eventTime"), now),
    };
    let mut last_seen = match time(event, fields.last_timestamp) {
        Some(last) => human_duration(now - last),
        None => first_seen.clone(),
    };
    let mut count = int(event, fields.count);
    if let Some(series) = object_at(event, "series") {
        last_seen = since(time(series, "lastObservedTime"), now);
        count = int(series, "count");
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let regarding = &event[fields.regarding];
    let kind = text(regarding, "kind").to_lowercase();
    let object = match text(regarding, "name") {
        "" => kind,
        object_name => format!("{kind}/{object_name}"),
    };
    let source = &event[fields.source];
    let component = first_non_empty(
        text(source, "component"),
        text(event, "reportingController"),
    );
    let instance = first_non_empty(text(source, "host"), text(event, "reportingInstance"));
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    row![
        last_seen,
        text(event, "type"),
        text(event, "reason"),
        object,
        text(regarding, "fieldPath"),
        source,
        text(event, fields.note).trim(),
        first_seen,
        count,
        name(event),
    ]
}

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "The phase of the namespace."), AGE];

fn namespace_cells(namespace: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(namespace),
        text(namespace, "status.phase"),
        age(namespace, now)
    ]
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "The type of the secret's data."),
    col("Data", "Number of keys in the secret."),
    AGE,
];

fn secret_cells(secret: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // stringData is merged into data on write; count its keys not yet in data.
    let data = at(secret, "data").as_object();
    let extra = at(secret, "stringData")
        .as_object()
        .map_or(0, |string_data| {
            string_data
                .keys()
                .filter(|key| data.is_none_or(|data| !data.contains_key(*key)))
                .count()
        });
    let keys = data.map_or(0, |data| data.len()) + extra;
    row![name(secret), text(secret, "type"), keys, age(secret, now)]
}

const SERVICE_ACCOUNT_COLUMNS: &[Column] =
    &[NAME, col("Secrets", "Number of secrets referenced."), AGE];

fn service_account_cells(account: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(account),
        list(account, "secrets").len(),
        age(account, now)
    ]
}

const CONFIG_MAP_COLUMNS: &[Column] =
    &[NAME, col("Data", "Number of keys in the config map."), AGE];

fn config_map_cells(config_map: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let keys = entries(config_map, "data") + entries(config_map, "binaryData");
    row![name(config_map), keys, age(config_map, now)]
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "Storage capacity of the volume."),
    col("Access Modes", "Ways the volume can be mounted."),
    col("Reclaim Policy", "What happens on release."),
    col("Status", "The phase of the volume."),
    col("Claim", "The claim bound to the volume."),
    col("StorageClass", "StorageClass of the volume."),
    col("VolumeAttributesClass", "Attributes class of the volume."),
    col("Reason", "Why the volume is in its phase."),
    AGE,
    wide("VolumeMode", "Filesystem or raw Block."),
];

fn pv_cells(volume: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &volume["spec"];
    let claim = match object_at(spec, "claimRef") {
        Some(claim) => format!("{}/{}", text(claim, "namespace"), text(claim, "name")),
        None => String::new(),
    };
    row![
        name(volume),
        quantity_or_zero(at(spec, "capacity.storage")),
        access_modes(list(spec, "accessModes")),
        text(spec, "persistentVolumeReclaimPolicy"),
        phase_or_terminating(volume),
        claim,
        storage_class_of(volume),
        opt_text(spec, "volumeAttributesClassName").unwrap_or("<unset>"),
        text(volume, "status.reason"),
        age(volume, now),
        opt_text(spec, "volumeMode").unwrap_or("<unset>"),
    ]
}

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "The phase of the claim."),
    col("Volume", "The volume bound to the claim."),
    col("Capacity", "Storage capacity of the bound volume."),
    col("Access Modes", "Ways the bound volume can be mounted."),
    col("StorageClass", "StorageClass of the claim."),
    col("VolumeAttributesClass", "Attributes class of the claim."),
    AGE,
    wide("VolumeMode", "Filesystem or raw Block."),
];

fn pvc_cells(claim: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &claim["spec"];
    let volume = text(spec, "volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_or_zero(at(claim, "status.capacity.storage")),
            access_modes(list(claim, "status.accessModes")),
        )
    };
    row![
        name(claim),
        phase_or_terminating(claim),
        volume,
        capacity,
        modes,
        storage_class_of(claim),
        opt_text(spec, "volumeAttributesClassName").unwrap_or("<unset>"),
        age(claim, now),
        opt_text(spec, "volumeMode").unwrap_or("<unset>"),
    ]
}

/// The phase, or `Terminating` once deletion started.
fn phase_or_terminating(object: &Value) -> String {
    if has(object, "metadata.deletionTimestamp") {
        "Terminating".to_string()
    } else {
        text(object, "status.phase").to_string()
    }
}

/// The storage class of a volume or claim; the beta annotation wins over the field.
fn storage_class_of(object: &Value) -> &str {
    annotation(object, "volume.beta.kubernetes.io/storage-class")
        .unwrap_or_else(|| text(object, "spec.storageClassName"))
}

/// `RWO,ROX,RWX,RWOP`: the modes present, in this fixed order.
fn access_modes(modes: &[Value]) -> String {
    const ABBREVIATIONS: [(&str, &str); 4] = [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ];
    ABBREVIATIONS
        .iter()
        .filter(|(mode, _)| modes.iter().any(|m| m.as_str() == Some(mode)))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

const QUOTA_COLUMNS: &[Column] = &[
    NAME,
    col("Request", "Used/hard of requests and counts."),
    col("Limit", "Used out of hard limits for resource limits."),
    AGE,
];

fn resource_quota_cells(quota: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    if let Some(hard) = at(quota, "status.hard").as_object() {
        let mut resources: Vec<&String> = hard.keys().collect();
        resources.sort();
        for resource in resources {
            let used = quantity_or_zero(&quota["status"]["used"][resource.as_str()]);
            let entry = format!(
                "{resource}: {used}/{}",
                quantity_or_zero(&hard[resource.as_str()])
            );
            if resource.split('.').next() == Some("limits") && resource.contains('.') {
                limits.push(entry);
            } else {
                requests.push(entry);
            }
        }
    }
    row![
        name(quota),
        requests.join(", "),
        limits.join(", "),
        age(quota, now)
    ]
}

const COMPONENT_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "Whether the component is healthy."),
    col("Message", "Message of the component's health condition."),
    col("Error", "Error of the component's health condition."),
];

fn component_status_cells(component: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let healthy = list(component, "conditions")
        .iter()
        .find(|c| text(c, "type") == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) if text(c, "status") == "True" => ("Healthy", text(c, "message"), text(c, "error")),
        Some(c) => ("Unhealthy", text(c, "message"), text(c, "error")),
        None => ("Unknown", "", ""),
    };
    row![name(component), status, message, error]
}

// ---------------------------------------------------------------------------
// Core: nodes
// ---------------------------------------------------------------------------

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "Readiness, and if cordoned."),
    col("Roles", "Roles from the node-role labels."),
    AGE,
    col("Version", "Version of the node's kubelet."),
    wide("Internal-IP", "The node's first internal IP address."),
    wide("External-IP", "The node's first external IP address."),
    wide("OS-Image", "The operating system image of the node."),
    wide("Kernel-Version", "The kernel version of the node."),
    wide("Container-Runtime", "Container runtime and version."),
];

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = at(node, "status.nodeInfo");
    let unknown_if_empty = |field: &str| match text(info, field) {
        "" => "<unknown>".to_string(),
        value => value.to_string(),
    };
    row![
        name(node),
        node_status(node),
        or_none(&node_roles(node).join(",")),
        age(node, now),
        text(info, "kubeletVersion"),
        node_address(node, "InternalIP"),
        node_address(node, "ExternalIP"),
        unknown_if_empty("osImage"),
        unknown_if_empty("kernelVersion"),
        unknown_if_empty("containerRuntimeVersion"),
    ]
}

/// `Ready`, `NotReady` or `Unknown`, with `,SchedulingDisabled` when cordoned.
fn node_status(node: &Value) -> String {
    // The last Ready condition wins, as upstream indexes conditions by type.
    let ready = list(node, "status.conditions")
        .iter()
        .rfind(|c| text(c, "type") == "Ready");
    let mut status = match ready {
        Some(c) if text(c, "status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if flag(node, "spec.unschedulable") == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

/// Roles from `node-role.kubernetes.io/<role>` keys and `kubernetes.io/role` values.
fn node_roles(node: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, "metadata.labels").as_object() {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                let role = value.as_str().unwrap_or("");
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            }
        }
    }
    roles.into_iter().collect()
}

/// The node's first address of a type, or `<none>`.
fn node_address(node: &Value, address_type: &str) -> String {
    list(node, "status.addresses")
        .iter()
        .find(|a| text(a, "type") == address_type)
        .map(|a| text(a, "address").to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

// ---------------------------------------------------------------------------
// apps/v1
// ---------------------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "Ready replicas out of desired replicas."),
    col("Up-to-date", "Replicas updated to the latest template."),
    col("Available", "Replicas available to serve."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment_cells(deployment: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(deployment, "spec.template"));
    let selector =
        selector_string(at(deployment, "spec.selector")).unwrap_or_else(|| "<invalid>".to_string());
    row![
        name(deployment),
        format!(
            "{}/{}",
            int(deployment, "status.readyReplicas"),
            desired_replicas(deployment)
        ),
        int(deployment, "status.updatedReplicas"),
        int(deployment, "status.availableReplicas"),
        age(deployment, now),
        names,
        images,
        selector,
    ]
}

fn replica_set_cells(set: &Value, now: DateTime<Utc>) -> Vec<Value> {
    replica_cells(set, now, format_selector(at(set, "spec.selector")))
}

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "Ready replicas out of desired replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn stateful_set_cells(set: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(set, "spec.template"));
    row![
        name(set),
        format!(
            "{}/{}",
            int(set, "status.readyReplicas"),
            desired_replicas(set)
        ),
        age(set, now),
        names,
        images,
    ]
}

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    int_col("Desired", "Nodes that should run the pod."),
    int_col("Current", "Number of nodes running the daemon pod."),
    int_col("Ready", "Number of nodes whose daemon pod is ready."),
    int_col("Up-to-date", "Nodes running the latest template."),
    int_col("Available", "Nodes whose pod is available."),
    col("Node Selector", "Node selector of the pod template."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemon_set_cells(set: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let status = &set["status"];
    let (names, images) = container_cells(at(set, "spec.template"));
    row![
        name(set),
        int(status, "desiredNumberScheduled"),
        int(status, "currentNumberScheduled"),
        int(status, "numberReady"),
        int(status, "updatedNumberScheduled"),
        int(status, "numberAvailable"),
        format_labels(at(set, "spec.template.spec.nodeSelector")),
        age(set, now),
        names,
        images,
        format_selector(at(set, "spec.selector")),
    ]
}

const REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "The object that owns the revision."),
    col("Revision", "The revision number."),
    AGE,
];

fn revision_cells(revision: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let controller = list(revision, "metadata.ownerReferences")
        .iter()
        .find(|owner| flag(owner, "controller") == Some(true));
    let controller = match controller {
        None => "<none>".to_string(),
        Some(owner) => {
            let group = text(owner, "apiVersion")
                .rsplit_once('/')
                .map_or("", |(group, _)| group);
            let kind = text(owner, "kind");
            let owner_name = text(owner, "name");
            match (group, kind) {
                ("", "") => owner_name.to_string(),
                ("", kind) => format!("{}/{owner_name}", kind.to_lowercase()),
                (group, kind) => format!(
                    "{}.{}/{owner_name}",
                    kind.to_lowercase(),
                    group.to_lowercase()
                ),
            }
        }
    };
    row![
        name(revision),
        controller,
        int(revision, "revision"),
        age(revision, now)
    ]
}

// ---------------------------------------------------------------------------
// batch/v1
// ---------------------------------------------------------------------------

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "Status of the job."),
    col("Completions", "Succeeded pods out of those wanted."),
    col("Duration", "Time the job took, or has been running."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &job["spec"];
    let status = &job["status"];
    let succeeded = int(status, "succeeded");
    let completions = match opt_int(spec, "completions") {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match int(spec, "parallelism") {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (time(status, "startTime"), time(status, "completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let job_status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if has(job, "metadata.deletionTimestamp") {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(at(spec, "template"));
    row![
        name(job),
        job_status,
        completions,
        duration,
        age(job, now),
        names,
        images,
        format_selector(at(spec, "selector")),
    ]
}

/// Whether the first condition of this type is True.
fn job_condition(job: &Value, condition_type: &str) -> bool {
    list(job, "status.conditions")
        .iter()
        .find(|c| text(c, "type") == condition_type)
        .is_some_and(|c| text(c, "status") == "True")
}

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "The cron schedule."),
    col("Timezone", "The time zone of the schedule."),
    bool_col("Suspend", "Whether new runs are suspended."),
    int_col("Active", "Number of running jobs."),
    col("Last Schedule", "Time since a job was last scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cron_job_cells(cron_job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &cron_job["spec"];
    let last_schedule = match time(cron_job, "status.lastScheduleTime") {
        Some(last) => human_duration(now - last),
        None => "<none>".to_string(),
    };
    let job_spec = at(spec, "jobTemplate.spec");
    let (names, images) = container_cells(at(job_spec, "template"));
    row![
        name(cron_job),
        text(spec, "schedule"),
        opt_text(spec, "timeZone").unwrap_or("<none>"),
        bool_word(flag(spec, "suspend")),
        list(cron_job, "status.active").len(),
        last_schedule,
        age(cron_job, now),
        names,
        images,
        format_selector(at(job_spec, "selector")),
    ]
}

/// `True`, `False`, or `<unset>`.
fn bool_word(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

// ---------------------------------------------------------------------------
// autoscaling
// ---------------------------------------------------------------------------

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "The object whose scale is controlled."),
    col("Targets", "Current metric values/targets."),
    col("MinPods", "The lower limit of replicas."),
    col("MaxPods", "The upper limit of replicas."),
    col("Replicas", "Current number of replicas."),
    AGE,
];

fn hpa_cells(hpa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &hpa["spec"];
    let reference = format!(
        "{}/{}",
        text(spec, "scaleTargetRef.kind"),
        text(spec, "scaleTargetRef.name")
    );
    let (specs, statuses) = hpa_metrics(hpa);
    let min_pods =
        opt_int(spec, "minReplicas").map_or_else(|| "<unset>".to_string(), |n| n.to_string());
    row![
        name(hpa),
        reference,
        format_hpa_metrics(&specs, &statuses),
        min_pods,
        int(spec, "maxReplicas"),
        int(hpa, "status.currentReplicas"),
        age(hpa, now),
    ]
}

/// The metric specs and statuses in the autoscaling/v2 shape; autoscaling/v1's CPU
/// utilization fields become one Resource metric, as upstream's conversion does.
/// An object without `apiVersion` is taken as v1 when it has no `spec.metrics`.
fn hpa_metrics(hpa: &Value) -> (Vec<Value>, Vec<Value>) {
    let v1 = match text(hpa, "apiVersion") {
        "" => !has(hpa, "spec.metrics"),
        api_version => api_version == "autoscaling/v1",
    };
    if !v1 {
        return (
            list(hpa, "spec.metrics").to_vec(),
            list(hpa, "status.currentMetrics").to_vec(),
        );
    }
    let specs = opt_int(hpa, "spec.targetCPUUtilizationPercentage")
        .map(|target| {
            json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": target}}})
        })
        .into_iter()
        .collect();
    let statuses = opt_int(hpa, "status.currentCPUUtilizationPercentage")
        .map(|current| {
            json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": current}}})
        })
        .into_iter()
        .collect();
    (specs, statuses)
}

/// Upstream's TARGETS cell: `cpu: 50%/80%`, `<unknown>/10 (avg)`, at most two, then
/// `+ N more...`.
fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    const SHOWN: usize = 2;
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let mut shown: Vec<String> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        // The status at the same index, when it is of the same source.
        let status_of = |source: &str| {
            statuses
                .get(index)
                .and_then(|status| object_at(status, source))
        };
        let unknown = || "<unknown>".to_string();
        let entry = match text(spec, "type") {
            source_type @ ("External" | "Object") => {
                let source = if source_type == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(spec, &format!("{source}.target"));
                if has(target, "averageValue") {
                    let current = status_of(source)
                        .filter(|s| has(s, "current.averageValue"))
                        .map_or_else(unknown, |s| quantity_or_nil(at(s, "current.averageValue")));
                    format!(
                        "{current}/{} (avg)",
                        quantity_or_nil(at(target, "averageValue"))
                    )
                } else {
                    let current = status_of(source)
                        .map_or_else(unknown, |s| quantity_or_nil(at(s, "current.value")));
                    format!("{current}/{}", quantity_or_nil(at(target, "value")))
                }
            }
            "Pods" => {
                let current = status_of("pods")
                    .map_or_else(unknown, |s| quantity_or_nil(at(s, "current.averageValue")));
                format!(
                    "{current}/{}",
                    quantity_or_nil(at(spec, "pods.target.averageValue"))
                )
            }
            source_type @ ("Resource" | "ContainerResource") => {
                let source = if source_type == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = text(spec, &format!("{source}.name"));
                let target = at(spec, &format!("{source}.target"));
                if has(target, "averageValue") {
                    let current = status_of(source)
                        .map_or_else(unknown, |s| quantity_or_nil(at(s, "current.averageValue")));
                    format!(
                        "{resource}: {current}/{}",
                        quantity_or_nil(at(target, "averageValue"))
                    )
                } else {
                    let current = status_of(source)
                        .and_then(|s| opt_int(s, "current.averageUtilization"))
                        .map_or_else(unknown, |u| format!("{u}%"));
                    let target = opt_int(target, "averageUtilization")
                        .map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                    format!("{resource}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        shown.push(entry);
    }
    let count = shown.len();
    if count > SHOWN {
        shown.truncate(SHOWN);
        format!("{} + {} more...", shown.join(", "), count - SHOWN)
    } else {
        shown.join(", ")
    }
}

// ---------------------------------------------------------------------------
// networking.k8s.io/v1
// ---------------------------------------------------------------------------

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col("Class", "The IngressClass that handles the ingress."),
    col("Hosts", "Hosts that requests are matched against."),
    col("Address", "Addresses of the load balancer."),
    col("Ports", "Ports the load balancer listens on."),
    AGE,
];

fn ingress_cells(ingress: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if list(ingress, "spec.tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    row![
        name(ingress),
        opt_text(ingress, "spec.ingressClassName").unwrap_or("<none>"),
        ingress_hosts(list(ingress, "spec.rules")),
        load_balancer_addresses(at(ingress, "status.loadBalancer")).join(","),
        ports,
        age(ingress, now),
    ]
}

/// Up to three rule hosts, `*` when no rule names one.
fn ingress_hosts(rules: &[Value]) -> String {
    const SHOWN: usize = 3;
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == SHOWN {
            more = true;
        }
        let host = text(rule, "host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_string();
    }
    let joined = hosts.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - SHOWN)
    } else {
        joined
    }
}

const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "The controller that handles the class."),
    col("Parameters", "The resource holding parameters."),
    AGE,
];

fn ingress_class_cells(class: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match object_at(class, "spec.parameters") {
        None => "<none>".to_string(),
        Some(parameters) => {
            let kind = match opt_text(parameters, "apiGroup") {
                Some(group) => format!("{}.{group}", text(parameters, "kind")),
                None => text(parameters, "kind").to_string(),
            };
            format!("{kind}/{}", text(parameters, "name"))
        }
    };
    row![
        name(class),
        text(class, "spec.controller"),
        parameters,
        age(class, now)
    ]
}

const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col("Pod-Selector", "Pods the policy applies to."),
    AGE,
];

fn network_policy_cells(policy: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // The pod selector is a required field: absent reads as empty, selecting all.
    let selector = match at(policy, "spec.podSelector") {
        Value::Null => &json!({}),
        selector => selector,
    };
    row![name(policy), format_selector(selector), age(policy, now)]
}

const IP_ADDRESS_COLUMNS: &[Column] = &[
    NAME,
    col("ParentRef", "The object the address is allocated to."),
];

fn ip_address_cells(address: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let parent = match object_at(address, "spec.parentRef") {
        None => "<none>".to_string(),
        Some(parent) => {
            let mut parent_name = match text(parent, "group") {
                "" => text(parent, "resource").to_lowercase(),
                group => format!("{}.{group}", text(parent, "resource")).to_lowercase(),
            };
            if let Some(namespace) = opt_text(parent, "namespace").filter(|ns| !ns.is_empty()) {
                parent_name = format!("{parent_name}/{namespace}");
            }
            format!("{parent_name}/{}", text(parent, "name"))
        }
    };
    // Upstream fills an Age cell too, though it declares no Age column; the row
    // here keeps to the declared columns.
    row![name(address), parent]
}

const SERVICE_CIDR_COLUMNS: &[Column] = &[
    NAME,
    col("CIDRs", "The ranges service IPs are allocated from."),
    AGE,
];

fn service_cidr_cells(cidr: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let cidrs: Vec<&str> = list(cidr, "spec.cidrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    row![name(cidr), cidrs.join(","), age(cidr, now)]
}

// ---------------------------------------------------------------------------
// policy/v1
// ---------------------------------------------------------------------------

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col("Min Available", "Pods that must stay available."),
    col("Max Unavailable", "Pods that may be unavailable."),
    int_col("Allowed Disruptions", "Pods that may go down now."),
    AGE,
];

fn pdb_cells(budget: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let int_or_string = |path: &str| match at(budget, path) {
        Value::Null => "N/A".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    row![
        name(budget),
        int_or_string("spec.minAvailable"),
        int_or_string("spec.maxUnavailable"),
        int(budget, "status.disruptionsAllowed"),
        age(budget, now),
    ]
}

// ---------------------------------------------------------------------------
// rbac.authorization.k8s.io/v1
// ---------------------------------------------------------------------------

const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "The role the binding grants."),
    AGE,
    wide("Users", "Users in the binding."),
    wide("Groups", "Groups in the binding."),
    wide("ServiceAccounts", "Service accounts in the binding."),
];

fn binding_cells(binding: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in list(binding, "subjects") {
        match text(subject, "kind") {
            "User" => users.push(text(subject, "name").to_string()),
            "Group" => groups.push(text(subject, "name").to_string()),
            "ServiceAccount" => service_accounts.push(format!(
                "{}/{}",
                text(subject, "namespace"),
                text(subject, "name")
            )),
            _ => {}
        }
    }
    row![
        name(binding),
        format!(
            "{}/{}",
            text(binding, "roleRef.kind"),
            text(binding, "roleRef.name")
        ),
        age(binding, now),
        users.join(", "),
        groups.join(", "),
        service_accounts.join(", "),
    ]
}

// ---------------------------------------------------------------------------
// storage.k8s.io/v1
// ---------------------------------------------------------------------------

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Provisioner", "The plugin provisioning volumes."),
    col("ReclaimPolicy", "What happens on release."),
    col("VolumeBindingMode", "When volumes are bound."),
    col("AllowVolumeExpansion", "Whether volumes can be expanded."),
    AGE,
];

fn storage_class_cells(class: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let is_default = annotation(class, "storageclass.kubernetes.io/is-default-class")
        == Some("true")
        || annotation(class, "storageclass.beta.kubernetes.io/is-default-class") == Some("true");
    let shown_name = if is_default {
        format!("{} (default)", name(class))
    } else {
        name(class).to_string()
    };
    row![
        shown_name,
        text(class, "provisioner"),
        opt_text(class, "reclaimPolicy").unwrap_or("Delete"),
        opt_text(class, "volumeBindingMode").unwrap_or("Immediate"),
        flag(class, "allowVolumeExpansion").unwrap_or(false),
        age(class, now),
    ]
}

const CSI_DRIVER_COLUMNS: &[Column] = &[
    NAME,
    bool_col("AttachRequired", "Volumes need attaching."),
    bool_col("PodInfoOnMount", "Pod info is passed on mount."),
    bool_col("StorageCapacity", "Driver reports capacity."),
    col("TokenRequests", "Audiences of mount tokens."),
    bool_col("RequiresRepublish", "Volumes are republished."),
    col("Modes", "The volume lifecycle modes the driver supports."),
    AGE,
];

fn csi_driver_cells(driver: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &driver["spec"];
    let token_requests = match at(spec, "tokenRequests").as_array() {
        None => "<unset>".to_string(),
        Some(requests) => requests
            .iter()
            .map(|r| text(r, "audience"))
            .collect::<Vec<_>>()
            .join(","),
    };
    let modes: Vec<&str> = list(spec, "volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    row![
        name(driver),
        flag(spec, "attachRequired").unwrap_or(true),
        flag(spec, "podInfoOnMount").unwrap_or(false),
        flag(spec, "storageCapacity").unwrap_or(false),
        token_requests,
        flag(spec, "requiresRepublish").unwrap_or(false),
        or_none(&modes.join(",")),
        age(driver, now),
    ]
}

const CSI_NODE_COLUMNS: &[Column] = &[
    NAME,
    int_col("Drivers", "Number of CSI drivers registered on the node."),
    AGE,
];

fn csi_node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![name(node), list(node, "spec.drivers").len(), age(node, now)]
}

const ATTACHMENT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        format: "name",
        ..col("Attacher", "The volume driver that attaches the volume.")
    },
    col("PV", "The persistent volume being attached."),
    col("Node", "The node the volume is attached to."),
    bool_col("Attached", "The volume is attached."),
    AGE,
];

fn attachment_cells(attachment: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &attachment["spec"];
    row![
        name(attachment),
        text(spec, "attacher"),
        text(spec, "source.persistentVolumeName"),
        text(spec, "nodeName"),
        flag(attachment, "status.attached").unwrap_or(false),
        age(attachment, now),
    ]
}

const CAPACITY_COLUMNS: &[Column] = &[
    NAME,
    col("StorageClassName", "Storage class it is for."),
    col("Capacity", "The capacity available."),
];

fn capacity_cells(capacity: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let available = match at(capacity, "capacity") {
        Value::Null => "<unset>".to_string(),
        quantity => quantity_or_zero(quantity),
    };
    row![
        name(capacity),
        text(capacity, "storageClassName"),
        available
    ]
}

// ---------------------------------------------------------------------------
// coordination, discovery, scheduling, node, certificates
// ---------------------------------------------------------------------------

const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "The identity holding the lease."), AGE];

fn lease_cells(lease: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(lease),
        text(lease, "spec.holderIdentity"),
        age(lease, now)
    ]
}

const SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "IPv4, IPv6 or FQDN."),
    col("Ports", "The ports of the slice."),
    col("Endpoints", "Addresses of the endpoints."),
    AGE,
];

fn slice_cells(slice: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = list(slice, "ports")
        .iter()
        .map(
            |port| match (opt_int(port, "port"), opt_text(port, "name")) {
                (Some(number), _) => number.to_string(),
                (None, Some(port_name)) => port_name.to_string(),
                (None, None) => "*".to_string(),
            },
        )
        .collect();
    let addresses: Vec<String> = list(slice, "endpoints")
        .iter()
        .flat_map(|endpoint| list(endpoint, "addresses"))
        .map(|address| address.as_str().unwrap_or("").to_string())
        .collect();
    row![
        name(slice),
        text(slice, "addressType"),
        first_few(ports),
        first_few(addresses),
        age(slice, now),
    ]
}

/// Up to three items, then `+ N more...`; `<unset>` when there are none.
fn first_few(items: Vec<String>) -> String {
    const SHOWN: usize = 3;
    match items.len() {
        0 => "<unset>".to_string(),
        count if count > SHOWN => {
            format!("{} + {} more...", items[..SHOWN].join(","), count - SHOWN)
        }
        _ => items.join(","),
    }
}

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    int_col("Value", "The priority pods of this class get."),
    bool_col("Global-Default", "Default for pods."),
    AGE,
    col("PreemptionPolicy", "Whether pods preempt."),
];

fn priority_class_cells(class: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(class),
        int(class, "value"),
        flag(class, "globalDefault").unwrap_or(false),
        age(class, now),
        text(class, "preemptionPolicy"),
    ]
}

const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Handler", "The CRI handler that runs pods of this class."),
    AGE,
];

fn runtime_class_cells(class: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![name(class), text(class, "handler"), age(class, now)]
}

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "The signer asked to sign the certificate."),
    col("Requestor", "The user who created the request."),
    col("RequestedDuration", "The validity period asked for."),
    col("Condition", "Approval and issuance state of the request."),
];

fn csr_cells(request: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &request["spec"];
    let requested_duration = opt_int(spec, "expirationSeconds").map_or_else(
        || "<none>".to_string(),
        |s| human_duration(Duration::seconds(s)),
    );
    row![
        name(request),
        age(request, now),
        or_none(text(spec, "signerName")),
        text(spec, "username"),
        requested_duration,
        csr_condition(request),
    ]
}

/// `Pending`, `Approved` or `Denied`, then `,Failed` and `,Issued` as they apply.
fn csr_condition(request: &Value) -> String {
    let conditions = list(request, "status.conditions");
    let has_condition = |kind: &str| conditions.iter().any(|c| text(c, "type") == kind);
    let mut condition = if has_condition("Denied") {
        "Denied".to_string()
    } else if has_condition("Approved") {
        "Approved".to_string()
    } else {
        "Pending".to_string()
    };
    if has_condition("Failed") {
        condition.push_str(",Failed");
    }
    if !text(request, "status.certificate").is_empty() {
        condition.push_str(",Issued");
    }
    condition
}

// ---------------------------------------------------------------------------
// admissionregistration.k8s.io/v1
// ---------------------------------------------------------------------------

const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    int_col("Webhooks", "Number of webhooks in the configuration."),
    AGE,
];

fn webhook_cells(configuration: &Value, now: DateTime<Utc>) -> Vec<Value> {
    row![
        name(configuration),
        list(configuration, "webhooks").len(),
        age(configuration, now),
    ]
}

const VAP_COLUMNS: &[Column] = &[
    NAME,
    int_col("Validations", "Number of validation rules in the policy."),
    col("ParamKind", "Kind of the parameters."),
    AGE,
];

fn vap_cells(policy: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let param_kind = match object_at(policy, "spec.paramKind") {
        Some(kind) => format!("{}/{}", text(kind, "apiVersion"), text(kind, "kind")),
        None => "<unset>".to_string(),
    };
    row![
        name(policy),
        list(policy, "spec.validations").len(),
        param_kind,
        age(policy, now),
    ]
}

const VAP_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("PolicyName", "The policy the binding applies."),
    col("ParamRef", "The parameter resource the binding uses."),
    AGE,
];

fn vap_binding_cells(binding: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let param = match object_at(binding, "spec.paramRef") {
        None => "<unset>".to_string(),
        Some(param) => match (text(param, "name"), text(param, "namespace")) {
            ("", _) => object_at(param, "selector")
                .map_or_else(|| "<unset>".to_string(), go_label_selector),
            // Cluster-scoped or not cannot be told here: unnamespaced reads `*/`.
            (param_name, "") => format!("*/{param_name}"),
            (param_name, namespace) => format!("{namespace}/{param_name}"),
        },
    };
    row![
        name(binding),
        text(binding, "spec.policyName"),
        param,
        age(binding, now),
    ]
}

/// A LabelSelector as Go's generated `String()` prints it, which upstream shows
/// for selector-based parameter references.
fn go_label_selector(selector: &Value) -> String {
    let mut labels: Vec<(&String, &Value)> = at(selector, "matchLabels")
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    labels.sort_by(|a, b| a.0.cmp(b.0));
    let labels: String = labels
        .iter()
        .map(|(key, value)| format!("{key}: {},", value.as_str().unwrap_or("")))
        .collect();
    let expressions: String = list(selector, "matchExpressions")
        .iter()
        .map(|expr| {
            let values: Vec<&str> = list(expr, "values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                text(expr, "key"),
                text(expr, "operator"),
                values.join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

// ---------------------------------------------------------------------------
// flowcontrol.apiserver.k8s.io/v1
// ---------------------------------------------------------------------------

const FLOW_SCHEMA_COLUMNS: &[Column] = &[
    NAME,
    col("PriorityLevel", "Priority level it assigns."),
    col("MatchingPrecedence", "Lowest is matched first."),
    col("DistinguisherMethod", "How flows are told apart."),
    AGE,
    col("MissingPL", "Priority level is missing."),
];

fn flow_schema_cells(schema: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &schema["spec"];
    let missing_level = list(schema, "status.conditions")
        .iter()
        .find(|c| text(c, "type") == "Dangling")
        .map_or("?", |c| text(c, "status"));
    row![
        name(schema),
        text(spec, "priorityLevelConfiguration.name"),
        int(spec, "matchingPrecedence"),
        opt_text(spec, "distinguisherMethod.type").unwrap_or("<none>"),
        age(schema, now),
        missing_level,
    ]
}

const LEVEL_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "Whether requests are limited or exempt."),
    col("NominalConcurrencyShares", "Share of concurrency."),
    col("Queues", "Number of queues."),
    col("HandSize", "Queues a flow may use."),
    col("QueueLengthLimit", "Requests a queue may hold."),
    AGE,
];

fn level_cells(level: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let none = || Value::from("<none>");
    let (shares, queues, hand_size, queue_length) = match object_at(level, "spec.limited") {
        None => (none(), none(), none(), none()),
        Some(limited) => {
            let shares = Value::from(int(limited, "nominalConcurrencyShares"));
            match object_at(limited, "limitResponse.queuing") {
                None => (shares, none(), none(), none()),
                Some(queuing) => (
                    shares,
                    Value::from(int(queuing, "queues")),
                    Value::from(int(queuing, "handSize")),
                    Value::from(int(queuing, "queueLengthLimit")),
                ),
            }
        }
    };
    row![
        name(level),
        text(level, "spec.type"),
        shares,
        queues,
        hand_size,
        queue_length,
        age(level, now),
    ]
}

// ---------------------------------------------------------------------------
// Defaults for resources without a printer
// ---------------------------------------------------------------------------

/// Name and the creation time in RFC 3339, as upstream's default table convertor.
fn created_at_cells(object: &Value) -> Vec<Value> {
    // Go formats a missing (zero) time as year 1.
    let created = time(object, "metadata.creationTimestamp")
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    row![name(object), created]
}

/// Name and age, as a CRD without printer columns (a `date` column over
/// `.metadata.creationTimestamp`, shown as an age; null when absent).
fn custom_resource_cells(object: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let age = time(object, "metadata.creationTimestamp")
        .map_or(Value::Null, |t| Value::from(human_duration(now - t)));
    row![name(object), age]
}

// ---------------------------------------------------------------------------
// Shared cell helpers
// ---------------------------------------------------------------------------

static NULL: Value = Value::Null;

/// The value at a dotted path (`spec.template.spec`), or null.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .try_fold(value, |value, key| value.get(key))
        .unwrap_or(&NULL)
}

fn has(value: &Value, path: &str) -> bool {
    !at(value, path).is_null()
}

/// The object at a path, if there is one (Go's non-nil pointer to a struct).
fn object_at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    Some(at(value, path)).filter(|v| v.is_object())
}

fn opt_text<'a>(value: &'a Value, path: &str) -> Option<&'a str> {
    at(value, path).as_str()
}

/// The string at a path, empty when absent.
fn text<'a>(value: &'a Value, path: &str) -> &'a str {
    opt_text(value, path).unwrap_or("")
}

fn opt_int(value: &Value, path: &str) -> Option<i64> {
    at(value, path).as_i64()
}

/// The integer at a path, 0 when absent.
fn int(value: &Value, path: &str) -> i64 {
    opt_int(value, path).unwrap_or(0)
}

fn flag(value: &Value, path: &str) -> Option<bool> {
    at(value, path).as_bool()
}

/// The array at a path, empty when absent.
fn list<'a>(value: &'a Value, path: &str) -> &'a [Value] {
    at(value, path).as_array().map_or(&[], Vec::as_slice)
}

/// The number of keys of the map at a path.
fn entries(value: &Value, path: &str) -> usize {
    at(value, path).as_object().map_or(0, |m| m.len())
}

fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object["metadata"]["annotations"][key].as_str()
}

/// The RFC 3339 time at a path.
fn time(value: &Value, path: &str) -> Option<DateTime<Utc>> {
    let text = opt_text(value, path)?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The later of two optional times.
fn latest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

fn name(object: &Value) -> &str {
    text(object, "metadata.name")
}

/// Time since `when`, or `<unknown>` without one.
fn since(when: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    when.map_or_else(|| "<unknown>".to_string(), |t| human_duration(now - t))
}

/// The AGE cell: time since creation.
fn age(object: &Value, now: DateTime<Utc>) -> String {
    since(time(object, "metadata.creationTimestamp"), now)
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text.to_string()
    }
}

fn first_non_empty<'a>(first: &'a str, second: &'a str) -> &'a str {
    if first.is_empty() { second } else { first }
}

/// Whether a status condition of this type is True.
fn condition_is_true(status: &Value, condition_type: &str) -> bool {
    list(status, "conditions")
        .iter()
        .find(|c| text(c, "type") == condition_type)
        .is_some_and(|c| text(c, "status") == "True")
}

/// `spec.replicas`, defaulted to 1 as the API server does.
fn desired_replicas(object: &Value) -> i64 {
    opt_int(object, "spec.replicas").unwrap_or(1)
}

/// The comma-separated container names and images of a pod template.
fn container_cells(template: &Value) -> (String, String) {
    let containers = list(template, "spec.containers");
    let names: Vec<&str> = containers.iter().map(|c| text(c, "name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| text(c, "image")).collect();
    (names.join(","), images.join(","))
}

/// A label map as `a=b,c=d`, sorted by key; `<none>` when empty.
fn format_labels(labels: &Value) -> String {
    let Some(labels) = labels.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<(&String, &str)> = labels
        .iter()
        .map(|(key, value)| (key, value.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A metav1.LabelSelector as printed in tables: `<none>` when it selects nothing or
/// everything, `<error>` when malformed.
fn format_selector(selector: &Value) -> String {
    match selector_string(selector) {
        None => "<error>".to_string(),
        Some(text) if text.is_empty() => "<none>".to_string(),
        Some(text) => text,
    }
}

/// A metav1.LabelSelector in selector syntax (`app=web,tier in (a,b),!canary`),
/// requirements sorted by key; None when an expression is malformed.
fn selector_string(selector: &Value) -> Option<String> {
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = at(selector, "matchLabels").as_object() {
        for (key, value) in labels {
            requirements.push((
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or("")),
            ));
        }
    }
    for expression in list(selector, "matchExpressions") {
        let key = text(expression, "key");
        let mut values: Vec<&str> = list(expression, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let requirement = match (text(expression, "operator"), values.is_empty()) {
            ("In", false) => format!("{key} in ({})", values.join(",")),
            ("NotIn", false) => format!("{key} notin ({})", values.join(",")),
            ("Exists", true) => key.to_string(),
            ("DoesNotExist", true) => format!("!{key}"),
            _ => return None,
        };
        requirements.push((key.to_string(), requirement));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        requirements
            .into_iter()
            .map(|(_, requirement)| requirement)
            .collect::<Vec<_>>()
            .join(","),
    )
}

// ---------------------------------------------------------------------------
// Quantities
// ---------------------------------------------------------------------------

/// A quantity in canonical form; an absent one is zero, `0`.
fn quantity_or_zero(quantity: &Value) -> String {
    match quantity {
        Value::Null => "0".to_string(),
        other => canonical_quantity_value(other),
    }
}

/// A quantity in canonical form; an absent one is `<nil>`, as Go prints a nil pointer.
fn quantity_or_nil(quantity: &Value) -> String {
    match quantity {
        Value::Null => "<nil>".to_string(),
        other => canonical_quantity_value(other),
    }
}

fn canonical_quantity_value(quantity: &Value) -> String {
    match quantity {
        Value::String(text) => canonical_quantity(text),
        other => canonical_quantity(&other.to_string()),
    }
}

/// How a quantity is written: the suffix family decides the canonical form.
#[derive(Clone, Copy, Debug, PartialEq)]
enum QuantityFormat {
    /// `k`, `M`, `m`, no suffix ...
    DecimalSi,
    /// `Ki`, `Mi`, `Gi` ...
    BinarySi,
    /// `1e3`, `5E-2`.
    DecimalExponent,
}

/// A resource quantity (`1024Mi`, `0.5`, `1e3`) as upstream's `Quantity.String()`
/// prints it (`1Gi`, `500m`, `1e3`). Text that is not a quantity is kept as is.
pub fn canonical_quantity(text: &str) -> String {
    parse_quantity(text).map_or_else(
        || text.to_string(),
        |(mantissa, exponent, format)| format_quantity(mantissa, exponent, format),
    )
}

/// A resource quantity in nano units (`100m` is 100_000_000), for comparing and
/// adding quantities exactly; None when the text is not a quantity or too large.
pub fn quantity_nanos(text: &str) -> Option<i128> {
    let (mantissa, exponent, _) = parse_quantity(text)?;
    let shift = u32::try_from(exponent.checked_add(9)?).ok()?;
    mantissa.checked_mul(10i128.checked_pow(shift)?)
}

/// A resource quantity as a number (`100m` is 0.1, `1Ki` is 1024), for arithmetic
/// where nano precision is not needed; None when the text is not a quantity.
pub fn quantity_value(text: &str) -> Option<f64> {
    quantity_nanos(text).map(|nanos| nanos as f64 / 1e9)
}

/// Writes an amount in nano units in the format (decimal, binary, exponent) of the
/// quantity `like`, as upstream keeps the format of the first operand of a sum.
pub fn quantity_from_nanos(nanos: i128, like: &str) -> String {
    let format = parse_quantity(like).map_or(QuantityFormat::DecimalSi, |(_, _, format)| format);
    format_quantity(nanos, -9, format)
}

/// Parses a quantity into `mantissa * 10^exponent`, binary suffixes multiplied out,
/// rounded up to nano units as upstream stores them.
fn parse_quantity(text: &str) -> Option<(i128, i32, QuantityFormat)> {
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let number_len = unsigned
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    if digits.len() > 30 {
        return None;
    }
    let mut mantissa: i128 = digits.parse().ok()?;
    let mut exponent = -i32::try_from(fraction.len()).ok()?;

    let (format, decimal_exponent, binary_exponent) = match suffix {
        "" => (QuantityFormat::DecimalSi, 0, 0),
        "n" => (QuantityFormat::DecimalSi, -9, 0),
        "u" => (QuantityFormat::DecimalSi, -6, 0),
        "m" => (QuantityFormat::DecimalSi, -3, 0),
        "k" => (QuantityFormat::DecimalSi, 3, 0),
        "M" => (QuantityFormat::DecimalSi, 6, 0),
        "G" => (QuantityFormat::DecimalSi, 9, 0),
        "T" => (QuantityFormat::DecimalSi, 12, 0),
        "P" => (QuantityFormat::DecimalSi, 15, 0),
        "E" => (QuantityFormat::DecimalSi, 18, 0),
        "Ki" => (QuantityFormat::BinarySi, 0, 10),
        "Mi" => (QuantityFormat::BinarySi, 0, 20),
        "Gi" => (QuantityFormat::BinarySi, 0, 30),
        "Ti" => (QuantityFormat::BinarySi, 0, 40),
        "Pi" => (QuantityFormat::BinarySi, 0, 50),
        "Ei" => (QuantityFormat::BinarySi, 0, 60),
        _ => {
            let power: i32 = suffix.strip_prefix(['e', 'E'])?.parse().ok()?;
            (QuantityFormat::DecimalExponent, power, 0)
        }
    };
    exponent = exponent.checked_add(decimal_exponent)?;
    mantissa = mantissa.checked_mul(1i128.checked_shl(binary_exponent)?)?;
    if exponent < -9 {
        // Round up to nano units.
        let divisor = 10i128.checked_pow((-9 - exponent) as u32);
        mantissa = match divisor {
            Some(divisor) => (mantissa + divisor - 1) / divisor,
            None => i128::from(mantissa != 0),
        };
        exponent = -9;
    }
    if negative {
        mantissa = -mantissa;
    }
    Some((mantissa, exponent, format))
}

/// Writes `mantissa * 10^exponent` in upstream's canonical form for the format.
fn format_quantity(mantissa: i128, exponent: i32, format: QuantityFormat) -> String {
    if mantissa == 0 {
        return "0".to_string();
    }
    if format == QuantityFormat::BinarySi {
        // Whole numbers of at least 1024 keep a binary suffix; the rest read as decimal.
        let whole = if exponent >= 0 {
            10i128
                .checked_pow(exponent as u32)
                .and_then(|scale| mantissa.checked_mul(scale))
        } else {
            10i128
                .checked_pow(exponent.unsigned_abs())
                .filter(|scale| mantissa % scale == 0)
                .map(|scale| mantissa / scale)
        };
        if let Some(whole) = whole.filter(|w| w.abs() >= 1024) {
            return format_binary(whole);
        }
        return format_decimal(mantissa, exponent, QuantityFormat::DecimalSi);
    }
    format_decimal(mantissa, exponent, format)
}

fn format_binary(mut value: i128) -> String {
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut power = 0;
    while power < SUFFIXES.len() - 1 && value % 1024 == 0 {
        value /= 1024;
        power += 1;
    }
    format!("{value}{}", SUFFIXES[power])
}

fn format_decimal(mut mantissa: i128, mut exponent: i32, format: QuantityFormat) -> String {
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    // Lower the exponent to a multiple of three.
    let remainder = exponent.rem_euclid(3);
    mantissa *= 10i128.pow(remainder as u32);
    exponent -= remainder;
    if format == QuantityFormat::DecimalExponent {
        return if exponent == 0 {
            mantissa.to_string()
        } else {
            format!("{mantissa}e{exponent}")
        };
    }
    while exponent > 18 {
        match mantissa.checked_mul(1000) {
            Some(scaled) => {
                mantissa = scaled;
                exponent -= 3;
            }
            None => return format!("{mantissa}e{exponent}"),
        }
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{mantissa}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-05-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// An RFC 3339 time `seconds` before [`now`].
    fn ago(seconds: i64) -> String {
        (now() - Duration::seconds(seconds))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    fn pod_row(pod: Value) -> Vec<Value> {
        cells("", "pods", &pod, now())
    }

    #[test]
    fn human_duration_boundaries() {
        let cases = [
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (7 * 3600 + 5 * 60, "7h5m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (51 * 3600, "2d3h"),
            (8 * 86400 - 1, "7d23h"),
            (8 * 86400, "8d"),
            (2 * 365 * 86400 - 1, "729d"),
            (2 * 365 * 86400, "2y"),
            ((2 * 365 + 3) * 86400, "2y3d"),
            (8 * 365 * 86400, "8y"),
            (10 * 365 * 86400 + 86400, "10y"),
        ];
        for (seconds, want) in cases {
            assert_eq!(
                human_duration(Duration::seconds(seconds)),
                want,
                "{seconds}s"
            );
        }
        // A second and a half ahead is still "now"; truncation toward zero.
        assert_eq!(human_duration(Duration::milliseconds(-1500)), "0s");
    }

    #[test]
    fn pod_running_and_ready() {
        let row = pod_row(json!({
            "metadata": {"name": "web", "creationTimestamp": ago(300)},
            "spec": {"containers": [{"name": "c", "image": "nginx"}], "nodeName": "node-1"},
            "status": {
                "phase": "Running",
                "podIP": "10.0.0.5",
                "podIPs": [{"ip": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{
                    "name": "c", "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": ago(290)}}
                }]
            }
        }));
        assert_eq!(
            row,
            vec![
                json!("web"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("5m"),
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn pod_crash_loop_with_restarts() {
        let row = pod_row(json!({
            "metadata": {"name": "crash", "creationTimestamp": ago(3600)},
            "spec": {"containers": [{"name": "c"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{
                    "name": "c", "ready": false, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(10)}}
                }]
            }
        }));
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("CrashLoopBackOff"));
        assert_eq!(row[3], json!("3 (10s ago)"));
        assert_eq!(row[4], json!("60m"));
    }

    #[test]
    fn pod_waiting_on_init_containers() {
        let row = pod_row(json!({
            "metadata": {"name": "init", "creationTimestamp": ago(20)},
            "spec": {
                "initContainers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "c"}]
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0, "state": {"running": {}}},
                    {"name": "b", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
                ],
                "containerStatuses": [
                    {"name": "c", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
                ]
            }
        }));
        assert_eq!(row[1], json!("0/1"));
        assert_eq!(row[2], json!("Init:0/2"));
        assert_eq!(row[3], json!("0"));
    }

    #[test]
    fn pod_init_failures() {
        let status = |state: Value| {
            let pod = json!({
                "spec": {"initContainers": [{"name": "a"}], "containers": [{"name": "c"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [
                    {"name": "a", "restartCount": 4, "state": state}
                ]}
            });
            pod_summary(&pod, now())
        };
        let crash = status(json!({"waiting": {"reason": "CrashLoopBackOff"}}));
        assert_eq!(crash.status, "Init:CrashLoopBackOff");
        assert_eq!(crash.restarts, "4");
        assert_eq!(
            status(json!({"terminated": {"exitCode": 2}})).status,
            "Init:ExitCode:2"
        );
        assert_eq!(
            status(json!({"terminated": {"exitCode": 137, "signal": 9}})).status,
            "Init:Signal:9"
        );
        assert_eq!(
            status(json!({"terminated": {"exitCode": 1, "reason": "Error"}})).status,
            "Init:Error"
        );
    }

    #[test]
    fn pod_terminating() {
        let pod = json!({
            "metadata": {"name": "bye", "deletionTimestamp": ago(1)},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": true, "state": {"running": {}}}
            ]}
        });
        assert_eq!(pod_row(pod)[2], json!("Terminating"));
        let lost = json!({
            "metadata": {"deletionTimestamp": ago(1)},
            "status": {"phase": "Running", "reason": "NodeLost"}
        });
        assert_eq!(pod_summary(&lost, now()).status, "Unknown");
        // Terminal pods keep their phase.
        let done =
            json!({"metadata": {"deletionTimestamp": ago(1)}, "status": {"phase": "Succeeded"}});
        assert_eq!(pod_summary(&done, now()).status, "Succeeded");
    }

    #[test]
    fn pod_completed_and_not_ready() {
        let completed = json!({
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Succeeded", "containerStatuses": [
                {"name": "c", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ]}
        });
        let summary = pod_summary(&completed, now());
        assert_eq!((summary.ready, summary.status.as_str()), (0, "Completed"));

        // One container completed, the other still runs: Running or NotReady.
        let partly = |ready: &str| {
            json!({
                "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": ready}],
                    "containerStatuses": [
                        {"name": "a", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "b", "ready": true, "state": {"running": {}}}
                    ]
                }
            })
        };
        assert_eq!(pod_summary(&partly("True"), now()).status, "Running");
        assert_eq!(pod_summary(&partly("False"), now()).status, "NotReady");
    }

    #[test]
    fn pod_sidecars_count_as_containers() {
        let pod = json!({
            "spec": {
                "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
                "containers": [{"name": "app"}]
            },
            "status": {
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{
                    "name": "proxy", "started": true, "ready": true, "restartCount": 2,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(125)}}
                }],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}]
            }
        });
        let summary = pod_summary(&pod, now());
        assert_eq!(summary.ready, 2);
        assert_eq!(summary.total, 2);
        assert_eq!(summary.status, "Running");
        assert_eq!(summary.restarts, "2 (2m5s ago)");
    }

    #[test]
    fn pod_wide_cells() {
        let row = pod_row(json!({
            "spec": {"containers": [], "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]},
            "status": {
                "podIP": "fd00::1",
                "nominatedNodeName": "n2",
                "conditions": [{"type": "a", "status": "True"}, {"type": "b", "status": "False"}]
            }
        }));
        assert_eq!(row[4], json!("<unknown>"));
        assert_eq!(
            row[5..],
            [json!("fd00::1"), json!("<none>"), json!("n2"), json!("1/2")]
        );
    }

    #[test]
    fn service_with_node_port() {
        let service = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(90)},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "ports": [
                    {"port": 80, "nodePort": 30080, "protocol": "TCP"},
                    {"port": 53, "protocol": "UDP"}
                ],
                "selector": {"tier": "front", "app": "web"}
            }
        });
        assert_eq!(
            cells("", "services", &service, now()),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("90s"),
                json!("app=web,tier=front"),
            ]
        );
    }

    #[test]
    fn service_external_ips() {
        let external = |spec: Value, status: Value| {
            service_external_ip(&json!({"spec": spec, "status": status}))
        };
        assert_eq!(
            external(json!({"type": "LoadBalancer"}), json!({})),
            "<pending>"
        );
        assert_eq!(
            external(
                json!({"type": "LoadBalancer", "externalIPs": ["5.5.5.5"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "2.2.2.2"}, {"hostname": "lb.example"}, {"ip": "1.1.1.1"}]}})
            ),
            "1.1.1.1,2.2.2.2,lb.example,5.5.5.5"
        );
        assert_eq!(
            external(
                json!({"type": "ExternalName", "externalName": "db.example"}),
                json!({})
            ),
            "db.example"
        );
        assert_eq!(external(json!({}), json!({})), "<none>");
        let headless = json!({"spec": {"clusterIP": "None"}});
        assert_eq!(
            cells("", "services", &headless, now())[2..5],
            [json!("None"), json!("<none>"), json!("<none>")]
        );
    }

    #[test]
    fn deployment_row() {
        let deployment = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(2 * 86400 + 3 * 3600)},
            "spec": {
                "replicas": 3,
                "selector": {
                    "matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]
                },
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25"},
                    {"name": "log", "image": "busybox"}
                ]}}
            },
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        assert_eq!(
            cells("apps", "deployments", &deployment, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2d3h"),
                json!("web,log"),
                json!("nginx:1.25,busybox"),
                json!("app=web,env in (dev,prod)"),
            ]
        );
        let names: Vec<&str> = columns("apps", "deployments")
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
    }

    #[test]
    fn node_status_and_roles() {
        let node = json!({
            "metadata": {"name": "n1", "labels": {
                "node-role.kubernetes.io/worker": "",
                "node-role.kubernetes.io/control-plane": "",
                "kubernetes.io/role": "edge"
            }},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.2"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"}
            }
        });
        let row = cells("", "nodes", &node, now());
        assert_eq!(row[1], json!("Ready,SchedulingDisabled"));
        assert_eq!(row[2], json!("control-plane,edge,worker"));
        assert_eq!(
            row[4..],
            [
                json!("v1.33.0"),
                json!("192.168.1.2"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("<unknown>"),
            ]
        );
        assert_eq!(node_status(&json!({})), "Unknown");
    }

    #[test]
    fn job_and_cron_job() {
        let job = json!({
            "metadata": {"name": "pi", "creationTimestamp": ago(600)},
            "spec": {"completions": 1, "parallelism": 1, "template": {"spec": {"containers": []}}},
            "status": {
                "succeeded": 1,
                "startTime": ago(600),
                "completionTime": ago(590),
                "conditions": [{"type": "Complete", "status": "True"}]
            }
        });
        assert_eq!(
            cells("batch", "jobs", &job, now())[1..5],
            [json!("Complete"), json!("1/1"), json!("10s"), json!("10m")]
        );
        let running = json!({"spec": {"parallelism": 3}, "status": {"startTime": ago(30)}});
        assert_eq!(
            cells("batch", "jobs", &running, now())[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("30s")]
        );

        let cron = json!({
            "metadata": {"name": "tick"},
            "spec": {"schedule": "*/5 * * * *", "suspend": false},
            "status": {"active": [{"name": "tick-1"}], "lastScheduleTime": ago(65)}
        });
        assert_eq!(
            cells("batch", "cronjobs", &cron, now())[..6],
            [
                json!("tick"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("65s")
            ]
        );
    }

    #[test]
    fn events_of_both_apis() {
        let core = json!({
            "metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{c}"},
            "reason": "Pulled", "type": "Normal", "message": " pulled \n",
            "firstTimestamp": ago(300), "lastTimestamp": ago(60), "count": 4,
            "source": {"component": "kubelet", "host": "n1"}
        });
        assert_eq!(
            cells("", "events", &core, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{c}"),
                json!("kubelet, n1"),
                json!("pulled"),
                json!("5m"),
                json!(4),
                json!("web.1"),
            ]
        );
        let v1 = json!({
            "metadata": {"name": "web.2"},
            "regarding": {"kind": "Node", "name": "n1"},
            "reason": "Ready", "type": "Normal", "note": "ok",
            "eventTime": "2024-05-01T11:59:30.000000Z",
            "reportingController": "kubelet"
        });
        assert_eq!(
            cells("events.k8s.io", "events", &v1, now()),
            vec![
                json!("30s"),
                json!("Normal"),
                json!("Ready"),
                json!("node/n1"),
                json!(""),
                json!("kubelet"),
                json!("ok"),
                json!("30s"),
                json!(1),
                json!("web.2"),
            ]
        );
    }

    #[test]
    fn storage_rows() {
        let pv = json!({
            "metadata": {"name": "pv1", "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {
                "capacity": {"storage": "1024Mi"},
                "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "claimRef": {"namespace": "default", "name": "data"},
                "storageClassName": "fast",
                "volumeMode": "Filesystem"
            },
            "status": {"phase": "Bound"}
        });
        assert_eq!(
            cells("", "persistentvolumes", &pv, now()),
            vec![
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("old"),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("Filesystem"),
            ]
        );
        let pending = json!({"spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}});
        assert_eq!(
            cells("", "persistentvolumeclaims", &pending, now())[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("fast")
            ]
        );
        let class = json!({
            "metadata": {"name": "std", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "csi.example"
        });
        assert_eq!(
            cells("storage.k8s.io", "storageclasses", &class, now())[..5],
            [
                json!("std (default)"),
                json!("csi.example"),
                json!("Delete"),
                json!("Immediate"),
                json!(false)
            ]
        );
    }

    #[test]
    fn quota_and_hpa() {
        let quota = json!({
            "status": {
                "hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi", "cpu": "1500m"},
                "used": {"pods": "3", "limits.cpu": "500m", "cpu": "1"}
            }
        });
        assert_eq!(
            cells("", "resourcequotas", &quota, now())[1..3],
            [
                json!("cpu: 1/1500m, pods: 3/10, requests.memory: 0/1Gi"),
                json!("limits.cpu: 500m/2"),
            ]
        );
        let v2 = json!({
            "apiVersion": "autoscaling/v2",
            "spec": {
                "scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "512Mi"}}}
                ]
            },
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 50}}}
            ]}
        });
        assert_eq!(
            cells("autoscaling", "horizontalpodautoscalers", &v2, now())[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 50%/80%, <unknown>/1k + 1 more..."),
                json!("<unset>"),
                json!(5),
                json!(2),
            ]
        );
        let v1 = json!({
            "apiVersion": "autoscaling/v1",
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                     "maxReplicas": 3, "targetCPUUtilizationPercentage": 70}
        });
        assert_eq!(
            cells("autoscaling", "horizontalpodautoscalers", &v1, now())[2..4],
            [json!("cpu: <unknown>/70%"), json!("1")]
        );
    }

    #[test]
    fn endpoints_and_slices() {
        let endpoints = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}
        ]});
        assert_eq!(
            format_endpoints(&endpoints),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more..."
        );
        assert_eq!(
            format_endpoints(
                &json!({"subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]})
            ),
            "[fd00::1]:80"
        );
        assert_eq!(format_endpoints(&json!({})), "<none>");
        let slice = json!({
            "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "dns"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3", "10.0.0.4"]}]
        });
        assert_eq!(
            cells("discovery.k8s.io", "endpointslices", &slice, now())[1..4],
            [
                json!("IPv4"),
                json!("80,dns,*"),
                json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...")
            ]
        );
    }

    #[test]
    fn bindings_revisions_and_references() {
        let binding = json!({
            "metadata": {"name": "b"},
            "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "User", "name": "alice"},
                {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "namespace": "kube-system", "name": "robot"},
                {"kind": "User", "name": "bob"}
            ]
        });
        let row = cells("rbac.authorization.k8s.io", "rolebindings", &binding, now());
        assert_eq!(row[1], json!("ClusterRole/view"));
        assert_eq!(
            row[3..],
            [
                json!("alice, bob"),
                json!("devs"),
                json!("kube-system/robot")
            ]
        );

        let revision = json!({
            "metadata": {"name": "r", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "controller": true}
            ]},
            "revision": 3
        });
        assert_eq!(
            cells("apps", "controllerrevisions", &revision, now())[1..3],
            [json!("daemonset.apps/agent"), json!(3)]
        );

        let by_selector = json!({"spec": {"policyName": "p", "paramRef": {"selector": {"matchLabels": {"a": "b"}}}}});
        assert_eq!(
            cells(
                "admissionregistration.k8s.io",
                "validatingadmissionpolicybindings",
                &by_selector,
                now()
            )[2],
            json!(
                "&LabelSelector{MatchLabels:map[string]string{a: b,},MatchExpressions:[]LabelSelectorRequirement{},}"
            )
        );
        let by_name = json!({"spec": {"paramRef": {"name": "limits"}}});
        assert_eq!(
            cells(
                "admissionregistration.k8s.io",
                "validatingadmissionpolicybindings",
                &by_name,
                now()
            )[2],
            json!("*/limits")
        );
    }

    #[test]
    fn selectors_and_labels() {
        assert_eq!(format_selector(&Value::Null), "<none>");
        assert_eq!(format_selector(&json!({})), "<none>");
        assert_eq!(
            format_selector(&json!({"matchExpressions": [
                {"key": "z", "operator": "Exists"},
                {"key": "a", "operator": "DoesNotExist"},
                {"key": "m", "operator": "NotIn", "values": ["y", "x"]}
            ]})),
            "!a,m notin (x,y),z"
        );
        assert_eq!(
            format_selector(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]})),
            "<error>"
        );
        assert_eq!(format_labels(&json!({"a.b": "1", "a": "2"})), "a=2,a.b=1");
        assert_eq!(format_labels(&json!({})), "<none>");
    }

    #[test]
    fn quantities_in_canonical_form() {
        let cases = [
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1000Mi", "1000Mi"),
            ("0.5Gi", "512Mi"),
            ("0.5Ki", "512"),
            ("0.1Gi", "107374182400m"),
            ("1.5", "1500m"),
            ("2000", "2k"),
            ("1500", "1500"),
            ("100m", "100m"),
            ("0.0000000001", "1n"),
            ("1e3", "1e3"),
            ("1.5e3", "1500"),
            ("10", "10"),
            ("-2k", "-2k"),
            ("0Gi", "0"),
            ("5G", "5G"),
            ("banana", "banana"),
        ];
        for (input, want) in cases {
            assert_eq!(canonical_quantity(input), want, "{input}");
        }
    }

    #[test]
    fn defaults_for_resources_without_printer() {
        let role =
            json!({"metadata": {"name": "reader", "creationTimestamp": "2024-01-02T03:04:05Z"}});
        let names: Vec<&str> = columns("rbac.authorization.k8s.io", "roles")
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["Name", "Created At"]);
        assert_eq!(
            columns("rbac.authorization.k8s.io", "roles")[1].type_,
            "date"
        );
        assert_eq!(
            cells("rbac.authorization.k8s.io", "roles", &role, now()),
            vec![json!("reader"), json!("2024-01-02T03:04:05Z")]
        );
        assert_eq!(
            cells(
                "",
                "limitranges",
                &json!({"metadata": {"name": "l"}}),
                now()
            ),
            vec![json!("l"), json!("0001-01-01T00:00:00Z")]
        );
        assert_eq!(
            columns("apiextensions.k8s.io", "customresourcedefinitions").len(),
            2
        );

        let custom = json!({"metadata": {"name": "w", "creationTimestamp": ago(45)}});
        let names: Vec<&str> = columns("example.com", "widgets")
            .iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["Name", "Age"]);
        assert_eq!(
            cells("example.com", "widgets", &custom, now()),
            vec![json!("w"), json!("45s")]
        );
    }

    #[test]
    fn every_printer_fills_every_column() {
        let mut resources = Vec::new();
        for (group, printers) in PRINTERS {
            for printer in *printers {
                let resource = format!("{group}/{}", printer.plural);
                let row = cells(group, printer.plural, &json!({}), now());
                assert_eq!(row.len(), printer.columns.len(), "{resource}");
                assert!(
                    printer.columns.iter().any(|c| c.format == "name"),
                    "{resource}"
                );
                assert!(printer.columns.iter().all(|c| !c.description.is_empty()));
                resources.push(resource);
            }
        }
        // Each resource has one printer.
        let count = resources.len();
        resources.sort();
        resources.dedup();
        assert_eq!(resources.len(), count);
    }

    #[test]
    fn columns_serialize_like_upstream() {
        let column = serde_json::to_value(&columns("", "pods")[0]).unwrap();
        assert_eq!(
            column,
            json!({
                "name": "Name", "type": "string", "format": "name",
                "description": "Name of the object.",
                "priority": 0
            })
        );
    }
}
