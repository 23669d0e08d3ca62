//! Node-pressure eviction with the real node agent and containerd: an agent whose
//! memory threshold is always crossed (`--eviction-hard=memory.available<100Ti`)
//! reports MemoryPressure, gets the memory-pressure taint, refuses a new BestEffort
//! pod, evicts a running Burstable one (Failed, reason Evicted, DisruptionTarget) and
//! leaves a system-node-critical pod running. Image garbage collection removes the
//! images no container uses and keeps the others. Local storage limits are enforced
//! whatever the pressure: an emptyDir above its sizeLimit and a container above its
//! ephemeral-storage limit get their pods evicted, a neighbour within its limit keeps
//! running.

use std::time::Duration;

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

const TIMEOUT: Duration = Duration::from_secs(60);

fn get(node: &TestNode, kind: &str, name: &str, path: &str) -> String {
    let out = node
        .server
        .kubectl(["get", kind, name, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_for(node: &TestNode, kind: &str, name: &str, path: &str, expected: &str) {
    wait_until(
        &format!("{kind} {name} {path} is {expected:?}"),
        TIMEOUT,
        || get(node, kind, name, path) == expected,
    );
}

fn pod(node: &TestNode, name: &str, extra_spec: &str, resources: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  {extra_spec}
  containers:
  - name: main
    image: {image}
    command: ["sleep", "3600"]
    {resources}
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    )
}

#[test]
fn memory_pressure_taints_refuses_and_evicts_by_qos() {
    let node = TestNode::start_with_agent_args(&["--eviction-hard=memory.available<100Ti"]);
    let name = node.node_name.clone();

    // The condition and, from the node lifecycle controller, the taint.
    wait_for(
        &node,
        "node",
        &name,
        "{.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        "True",
    );
    assert_eq!(
        get(
            &node,
            "node",
            &name,
            "{.status.conditions[?(@.type==\"MemoryPressure\")].reason}"
        ),
        "KubeletHasInsufficientMemory"
    );
    assert_eq!(
        get(
            &node,
            "node",
            &name,
            "{.status.conditions[?(@.type==\"DiskPressure\")].status}"
        ),
        "False"
    );
    wait_for(
        &node,
        "node",
        &name,
        "{.spec.taints[?(@.key==\"node.kubernetes.io/memory-pressure\")].effect}",
        "NoSchedule",
    );

    // A critical pod is admitted and never chosen.
    node.server.apply_yaml(&pod(
        &node,
        "critical",
        "priorityClassName: system-node-critical",
        "",
    ));
    wait_for(&node, "pod", "critical", "{.status.phase}", "Running");

    // A new BestEffort pod is refused: Failed, reason Evicted, nothing started.
    node.server.apply_yaml(&pod(&node, "best-effort", "", ""));
    wait_for(&node, "pod", "best-effort", "{.status.phase}", "Failed");
    assert_eq!(
        get(&node, "pod", "best-effort", "{.status.reason}"),
        "Evicted"
    );
    assert_eq!(
        get(&node, "pod", "best-effort", "{.status.message}"),
        "Pod was rejected: The node had condition: [MemoryPressure]."
    );
    assert_eq!(
        get(&node, "pod", "best-effort", "{.status.containerStatuses}"),
        ""
    );

    // A Burstable pod is admitted under memory pressure alone, then evicted: the
    // kubelet stops it and says why.
    node.server.apply_yaml(&pod(
        &node,
        "burstable",
        "",
        "resources: {requests: {memory: 1Mi}}",
    ));
    wait_for(&node, "pod", "burstable", "{.status.reason}", "Evicted");
    assert_eq!(get(&node, "pod", "burstable", "{.status.phase}"), "Failed");
    let message = get(&node, "pod", "burstable", "{.status.message}");
    assert!(
        message.starts_with("The node was low on resource: memory. Threshold quantity: 100Ti"),
        "{message}"
    );
    assert_eq!(
        get(
            &node,
            "pod",
            "burstable",
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].reason}"
        ),
        "TerminationByKubelet"
    );
    assert_eq!(
        get(
            &node,
            "pod",
            "burstable",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    assert_eq!(
        get(
            &node,
            "pod",
            "burstable",
            "{.status.containerStatuses[0].state.running}"
        ),
        ""
    );

    wait_until(
        "the burstable pod has a Warning Evicted Event",
        TIMEOUT,
        || {
            node.server
                .kubectl_text([
                    "get",
                    "events",
                    "--field-selector=involvedObject.name=burstable",
                    "-o=jsonpath={range .items[*]}{.type} {.reason}{\"\\n\"}{end}",
                ])
                .lines()
                .any(|l| l == "Warning Evicted")
        },
    );

    // Still running: the critical pod.
    assert_eq!(get(&node, "pod", "critical", "{.status.phase}"), "Running");
    assert_eq!(get(&node, "pod", "critical", "{.status.reason}"), "");
}

/// Whether the node's containerd has the image.
fn has_image(node: &TestNode, image: &str) -> bool {
    let socket = krust_kubelet::containerd::Layout::new(node.agent_dir()).socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut cri = krust_kubelet::cri::Cri::connect(&socket)
            .await
            .expect("the node's containerd answers");
        cri.image_status(image)
            .await
            .expect("ImageStatus")
            .is_some()
    })
}

#[test]
fn unused_images_are_collected_and_used_ones_kept() {
    // Collect whenever anything is used: every image no container has used for
    // 20 s goes (the minimum age keeps a just-pulled image for its container).
    let node = TestNode::start_with_agent_args(&[
        "--image-gc-high-threshold=0",
        "--image-gc-low-threshold=0",
        "--image-minimum-gc-age=20s",
    ]);
    let busybox = node.image("krust/busybox:1");
    let httpd = node.image("krust/httpd:1");
    node.server.apply_yaml(&pod(&node, "keeps", "", ""));
    wait_for(&node, "pod", "keeps", "{.status.phase}", "Running");
    node.server
        .apply_yaml(&pod(&node, "goes", "", "").replace(&busybox, &httpd));
    wait_for(&node, "pod", "goes", "{.status.phase}", "Running");
    assert!(has_image(&node, &httpd));

    node.server
        .kubectl_ok(["delete", "pod", "goes", "--wait=true", "--timeout=60s"]);
    wait_until("the unused httpd image is removed", TIMEOUT, || {
        !has_image(&node, &httpd)
    });
    // The image in use, and the sandboxes' pause image, stay.
    assert!(has_image(&node, &busybox));
    assert!(has_image(&node, krust_kubelet::containerd::PAUSE_IMAGE));
    assert_eq!(get(&node, "pod", "keeps", "{.status.phase}"), "Running");
}

/// A soft threshold raises the pressure condition at once but evicts only once it has
/// stayed crossed for its grace period; the pod then gets at most
/// `--eviction-max-pod-grace-period` to stop.
#[test]
fn soft_thresholds_evict_only_after_their_grace_period() {
    let grace = 15;
    let node = TestNode::start_with_agent_args(&[
        "--eviction-soft=memory.available<100Ti",
        &format!("--eviction-soft-grace-period=memory.available={grace}s"),
        "--eviction-max-pod-grace-period=2",
    ]);
    let name = node.node_name.clone();
    wait_for(
        &node,
        "node",
        &name,
        "{.status.conditions[?(@.type==\"MemoryPressure\")].status}",
        "True",
    );
    let pressure_since = get(
        &node,
        "node",
        &name,
        "{.status.conditions[?(@.type==\"MemoryPressure\")].lastTransitionTime}",
    );
    let burstable = pod(
        &node,
        "soft-victim",
        "",
        "resources: {requests: {memory: 1Mi}}",
    )
    .replace(
        "terminationGracePeriodSeconds: 1",
        "terminationGracePeriodSeconds: 60",
    );
    node.server.apply_yaml(&burstable);
    wait_until("the pod is evicted", TIMEOUT * 2, || {
        get(&node, "pod", "soft-victim", "{.status.reason}") == "Evicted"
    });
    let evicted_at = get(
        &node,
        "pod",
        "soft-victim",
        "{.status.conditions[?(@.type==\"DisruptionTarget\")].lastTransitionTime}",
    );
    let seconds = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap_or_else(|e| panic!("{t:?}: {e}"))
            .timestamp()
    };
    let waited = seconds(&evicted_at) - seconds(&pressure_since);
    assert!(
        waited >= grace - 1,
        "evicted {waited} s after the pressure began, before the {grace} s grace period"
    );
    assert_eq!(
        get(&node, "pod", "soft-victim", "{.status.phase}"),
        "Failed"
    );
}

/// The pod's Warning Evicted Event messages.
fn evicted_events(node: &TestNode, pod: &str) -> Vec<String> {
    node.server
        .kubectl_text([
            "get",
            "events",
            &format!("--field-selector=involvedObject.name={pod}"),
            "-o=jsonpath={range .items[*]}{.type}/{.reason}/{.message}{\"\\n\"}{end}",
        ])
        .lines()
        .filter_map(|l| l.strip_prefix("Warning/Evicted/"))
        .map(|m| m.trim().to_string())
        .collect()
}

/// Waits until the pod is evicted for `message` (trailing space as upstream's), and
/// checks its status and Event say so.
fn wait_evicted_for(node: &TestNode, pod: &str, message: &str) {
    // Usage is measured in the background every few seconds, a volume at most every
    // 20 s, the limits checked every 10 s.
    wait_until(&format!("pod {pod} is evicted"), TIMEOUT * 2, || {
        get(node, "pod", pod, "{.status.reason}") == "Evicted"
    });
    assert_eq!(get(node, "pod", pod, "{.status.phase}"), "Failed");
    assert_eq!(get(node, "pod", pod, "{.status.message}"), message.trim());
    // Not a disruption by node pressure: upstream sets no DisruptionTarget here.
    assert_eq!(
        get(
            node,
            "pod",
            pod,
            "{.status.conditions[?(@.type==\"DisruptionTarget\")].status}"
        ),
        ""
    );
    wait_until(
        &format!("pod {pod} has a Warning Evicted Event"),
        TIMEOUT,
        || {
            evicted_events(node, pod)
                .iter()
                .any(|m| m == message.trim())
        },
    );
}

/// A pod writing `mib` MiB into an emptyDir limited to 8Mi, then sleeping.
fn empty_dir_writer(node: &TestNode, name: &str, mib: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: 8Mi}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "dd if=/dev/zero of=/scratch/blob bs=1048576 count={mib} && sync && sleep 3600"]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    )
}

#[test]
fn an_empty_dir_above_its_size_limit_evicts_its_pod_only() {
    let node = TestNode::start();
    node.server
        .apply_yaml(&empty_dir_writer(&node, "within-limit", 2));
    node.server
        .apply_yaml(&empty_dir_writer(&node, "over-limit", 20));
    wait_for(&node, "pod", "within-limit", "{.status.phase}", "Running");
    wait_evicted_for(
        &node,
        "over-limit",
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"8Mi\". ",
    );
    assert_eq!(
        get(
            &node,
            "pod",
            "over-limit",
            "{.status.containerStatuses[0].state.running}"
        ),
        ""
    );
    // The neighbour, measured at least as often, is within its limit and stays.
    assert_eq!(
        get(&node, "pod", "within-limit", "{.status.phase}"),
        "Running"
    );
    assert_eq!(get(&node, "pod", "within-limit", "{.status.reason}"), "");
    assert!(evicted_events(&node, "within-limit").is_empty());
}

#[test]
fn a_container_above_its_ephemeral_storage_limit_is_evicted() {
    let node = TestNode::start();
    // Two containers, so that the pod's total limit (108Mi) is not what is crossed.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: layer-writer}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: writer
    image: {image}
    command: ["sh", "-c", "dd if=/dev/zero of=/blob bs=1048576 count=20 && sync && sleep 3600"]
    resources: {{limits: {{ephemeral-storage: 8Mi}}}}
  - name: idle
    image: {image}
    command: ["sleep", "3600"]
    resources: {{limits: {{ephemeral-storage: 100Mi}}}}
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    ));
    wait_evicted_for(
        &node,
        "layer-writer",
        "Container writer exceeded its local ephemeral storage limit \"8Mi\". ",
    );
}
