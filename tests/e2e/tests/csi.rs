//! CSI on a real node (real containerd): the test driver (`krust-test-csi`) runs as
//! a process on the node and registers through the agent's plugin registry; the
//! node agent lists it in the CSINode, provisions a claim of a class naming it
//! (CreateVolume, a PersistentVolume with `spec.csi` and the node's topology),
//! attaches it (a VolumeAttachment, as the CSIDriver requires), stages and
//! publishes it for a pod; the data outlives the pod and is read back by the next
//! one; deleting the pods unpublishes and unstages, deleting the claim deletes the
//! volume. Bad input: a class whose driver is not registered leaves its claim
//! Pending with an Event, a driver that fails CreateVolume gives ProvisioningFailed
//! and retries, and a driver that goes away leaves the CSINode. A driver without
//! staging and attaching publishes directly, with no VolumeAttachment, and its
//! pod's volume is unpublished also after an agent restart. One function, one
//! containerd start-up.

use std::time::Duration;

use krust_e2e::csi::TestCsiDriver;
use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

const TIMEOUT: Duration = Duration::from_secs(60);
/// Events as `<reason>: <message>` lines.
const EVENTS: &str = "-o=jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}";
const TOPOLOGY_KEY: &str = "topology.csi.krust.test/node";

fn wait_value(node: &TestNode, args: &[&str], expected: &str) {
    wait_for(node, args, |value| value == expected, expected);
}

fn wait_for(node: &TestNode, args: &[&str], ok: impl Fn(&str) -> bool, what: &str) {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        last = node.server.kubectl_text(args);
        if ok(&last) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "kubectl {args:?} is {last:?}, not {what:?}; events:\n{}\nserver log:\n{}",
        node.server.kubectl_text(["get", "events", "-A"]),
        node.server.log_tail()
    );
}

fn claim(name: &str, class: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  storageClassName: {class}
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 64Mi}}}}
"#
    )
}

fn class(name: &str, provisioner: &str, binding: &str, parameters: &str) -> String {
    format!(
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {name}}}
provisioner: {provisioner}
reclaimPolicy: Delete
volumeBindingMode: {binding}
parameters: {{{parameters}}}
"#
    )
}

fn pod(node: &TestNode, name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#,
        image = node.image("krust/busybox:1"),
    )
}

fn wait_phase(node: &TestNode, pod: &str, phase: &str) {
    wait_value(
        node,
        &["get", "pod", pod, "-o=jsonpath={.status.phase}"],
        phase,
    );
}

/// The calls of the driver for one volume, in order.
fn calls_for(driver: &TestCsiDriver, volume: &str) -> Vec<String> {
    driver
        .calls()
        .into_iter()
        .filter_map(|line| {
            let (call, id) = line.split_once(' ')?;
            (id == volume).then(|| call.to_string())
        })
        .collect()
}

#[test]
fn csi_driver_provisions_attaches_stages_and_publishes_for_pods() {
    let mut node = TestNode::start();
    let registry = krust_kubelet::csi::registry_dir(node.agent_dir());
    let suffix = &node.node_name["node-".len()..];
    let name = format!("csi-{suffix}.krust.test");
    let topology_flag = format!("--topology-key={TOPOLOGY_KEY}");
    let mut driver = TestCsiDriver::start(&name, &node.node_name, &registry, &[&topology_flag]);

    // Registration: the CSINode lists the driver with its node id and topology key,
    // and the Node carries the topology label.
    let csinode = |path: &str| -> Vec<String> {
        vec![
            "get".into(),
            "csinode".into(),
            node.node_name.clone(),
            format!("-o=jsonpath={path}"),
        ]
    };
    let args = csinode("{.spec.drivers[*].name}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wait_value(&node, &args, &name);
    let args = csinode("{.spec.drivers[0].nodeID} {.spec.drivers[0].topologyKeys[0]}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        node.server.kubectl_text(args),
        format!("{} {TOPOLOGY_KEY}", node.node_name)
    );
    let label_path = format!(
        "-o=jsonpath={{.metadata.labels.{}}}",
        TOPOLOGY_KEY.replace('.', "\\.")
    );
    assert_eq!(
        node.server
            .kubectl_text(["get", "node", &node.node_name, &label_path]),
        node.node_name
    );
    assert!(
        driver
            .calls()
            .contains(&"NotifyRegistrationStatus registered".to_string()),
        "{:?}",
        driver.calls()
    );

    // The driver wants attaching; a class names it, waiting for the first consumer.
    node.server.apply_yaml(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {{name: {name}}}\nspec: {{attachRequired: true, podInfoOnMount: true}}\n"
        ),
    );
    let class_name = format!("csi-{suffix}");
    node.server.apply_yaml(&class(
        &class_name,
        &name,
        "WaitForFirstConsumer",
        "tier: gold",
    ));
    node.server.apply_yaml(&claim("data", &class_name));
    node.server.apply_yaml(&pod(
        &node,
        "writer",
        "data",
        "echo hello > /data/file && echo written",
    ));
    wait_phase(&node, "writer", "Succeeded");
    assert_eq!(node.server.kubectl_text(["logs", "writer"]), "written");
    wait_value(
        &node,
        &["get", "pvc", "data", "-o=jsonpath={.status.phase}"],
        "Bound",
    );
    let uid = node
        .server
        .kubectl_text(["get", "pvc", "data", "-o=jsonpath={.metadata.uid}"]);
    let volume = format!("pvc-{uid}");
    assert_eq!(
        node.server
            .kubectl_text(["get", "pvc", "data", "-o=jsonpath={.spec.volumeName}"]),
        volume
    );
    assert_eq!(
        node.server.kubectl_text([
                "get",
                "pv",
                &volume,
                "-o=jsonpath={.spec.csi.driver} {.spec.csi.volumeHandle} {.spec.csi.volumeAttributes.tier} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"
            ]
        ),
        format!("{name} {volume} gold {}", node.node_name)
    );
    assert_eq!(
        std::fs::read_to_string(driver.volume_dir(&volume).join("file")).unwrap(),
        "hello\n",
        "the pod wrote into the driver's volume"
    );
    // The volume was attached through a VolumeAttachment of this node.
    assert_eq!(
        node.server.kubectl_text([
                "get",
                "volumeattachments",
                "-o=jsonpath={.items[*].spec.attacher} {.items[*].spec.nodeName} {.items[*].status.attached}"
            ]
        ),
        format!("{name} {} true", node.node_name)
    );

    // The writer goes: unpublished and unstaged (and detached) before it is gone.
    node.server
        .kubectl_text(["delete", "pod", "writer", "--wait=true"]);
    wait_until("the writer's volume is unstaged", TIMEOUT, || {
        calls_for(&driver, &volume).contains(&"NodeUnstageVolume".to_string())
    });
    // A new pod reads the data back.
    node.server
        .apply_yaml(&pod(&node, "reader", "data", "cat /data/file"));
    wait_phase(&node, "reader", "Succeeded");
    assert_eq!(node.server.kubectl_text(["logs", "reader"]), "hello");
    node.server
        .kubectl_text(["delete", "pod", "reader", "--wait=true"]);
    wait_value(
        &node,
        &[
            "get",
            "volumeattachments",
            "-o=jsonpath={.items[*].metadata.name}",
        ],
        "",
    );

    // Deleting the claim deletes the volume in the driver and the PV.
    node.server
        .kubectl_text(["delete", "pvc", "data", "--wait=true"]);
    wait_value(
        &node,
        &["get", "pv", "-o=jsonpath={.items[*].metadata.name}"],
        "",
    );
    wait_until("the driver deleted the volume", TIMEOUT, || {
        !driver.volume_dir(&volume).exists()
    });
    let pod_round = [
        "ControllerPublishVolume",
        "NodeStageVolume",
        "NodePublishVolume",
        "NodeUnpublishVolume",
        "NodeUnstageVolume",
        "ControllerUnpublishVolume",
    ];
    let mut expected = vec!["CreateVolume"];
    expected.extend(pod_round);
    expected.extend(pod_round);
    expected.push("DeleteVolume");
    assert_eq!(calls_for(&driver, &volume), expected);

    // A class whose driver is registered nowhere: the claim waits, and says for what.
    let missing = format!("missing-{suffix}.krust.test");
    node.server.apply_yaml(&class(
        &format!("missing-{suffix}"),
        &missing,
        "Immediate",
        "",
    ));
    node.server
        .apply_yaml(&claim("orphan", &format!("missing-{suffix}")));
    wait_for(
        &node,
        &[
            "get",
            "events",
            "--field-selector=involvedObject.name=orphan",
            EVENTS,
        ],
        |v| v.contains("ExternalProvisioning") && v.contains(&missing),
        "an ExternalProvisioning event naming the driver",
    );
    assert_eq!(
        node.server
            .kubectl_text(["get", "pvc", "orphan", "-o=jsonpath={.status.phase}"]),
        "Pending"
    );

    // A driver that fails CreateVolume: ProvisioningFailed, tried again, nothing made.
    let failing = format!("failing-{suffix}");
    node.server.apply_yaml(&class(
        &failing,
        &name,
        "Immediate",
        "failCreate: no space left in the test pool",
    ));
    node.server.apply_yaml(&claim("broken", &failing));
    wait_for(
        &node,
        &[
            "get",
            "events",
            "--field-selector=involvedObject.name=broken",
            EVENTS,
        ],
        |v| {
            v.lines().any(|l| {
                l.starts_with("ProvisioningFailed: ")
                    && l.contains("no space left in the test pool")
            })
        },
        "a ProvisioningFailed event with the driver's message",
    );
    let broken_uid =
        node.server
            .kubectl_text(["get", "pvc", "broken", "-o=jsonpath={.metadata.uid}"]);
    let broken = format!("pvc-{broken_uid}");
    wait_until("CreateVolume is retried", TIMEOUT, || {
        calls_for(&driver, &broken).len() >= 2
    });
    assert!(
        calls_for(&driver, &broken)
            .iter()
            .all(|c| c == "CreateVolumeFailed")
    );
    assert_eq!(
        node.server
            .kubectl_text(["get", "pvc", "broken", "-o=jsonpath={.status.phase}"]),
        "Pending"
    );
    assert_eq!(
        node.server
            .kubectl_text(["get", "pv", "-o=jsonpath={.items[*].metadata.name}"]),
        ""
    );
    node.server
        .kubectl_text(["delete", "pvc", "broken", "orphan", "--wait=true"]);

    // A driver that neither stages nor attaches (CSIDriver attachRequired: false):
    // no VolumeAttachment, NodePublishVolume straight into the pod. Its pod's volume
    // is unpublished after an agent restart (the whole server, killed) too.
    let plain = format!("plain-{suffix}.krust.test");
    let plain_driver = TestCsiDriver::start(
        &plain,
        &node.node_name,
        &registry,
        &["--no-stage", "--no-attach"],
    );
    node.server.apply_yaml(&format!(
            "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {{name: {plain}}}\nspec: {{attachRequired: false}}\n"
        ),
    );
    let plain_class = format!("plain-{suffix}");
    node.server
        .apply_yaml(&class(&plain_class, &plain, "Immediate", ""));
    node.server.apply_yaml(&claim("plain", &plain_class));
    wait_value(
        &node,
        &["get", "pvc", "plain", "-o=jsonpath={.status.phase}"],
        "Bound",
    );
    let plain_volume =
        node.server
            .kubectl_text(["get", "pvc", "plain", "-o=jsonpath={.spec.volumeName}"]);
    node.server.apply_yaml(&pod(
        &node,
        "sleeper",
        "plain",
        "echo there > /data/file && sleep 3600",
    ));
    wait_phase(&node, "sleeper", "Running");
    wait_until("the sleeper wrote into the volume", TIMEOUT, || {
        std::fs::read_to_string(plain_driver.volume_dir(&plain_volume).join("file")).ok()
            == Some("there\n".into())
    });
    assert_eq!(
        node.server.kubectl_text([
            "get",
            "volumeattachments",
            "-o=jsonpath={.items[*].metadata.name}"
        ]),
        "",
        "attachRequired: false makes no VolumeAttachment"
    );
    node.server.kill9();
    node.server.restart();
    node.wait_ready();
    node.server
        .kubectl_text(["delete", "pod", "sleeper", "--wait=true"]);
    assert_eq!(
        calls_for(&plain_driver, &plain_volume),
        vec!["CreateVolume", "NodePublishVolume", "NodeUnpublishVolume"]
    );
    node.server
        .kubectl_text(["delete", "pvc", "plain", "--wait=true"]);
    wait_until("the plain driver deleted its volume", TIMEOUT, || {
        calls_for(&plain_driver, &plain_volume)
            .last()
            .map(String::as_str)
            == Some("DeleteVolume")
    });
    drop(plain_driver);

    // The driver goes away: the CSINode no longer lists it.
    driver.stop();
    let args = csinode("{.spec.drivers[*].name}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    wait_value(&node, &args, "");
}
