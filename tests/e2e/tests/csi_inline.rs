//! Inline CSI volumes (`spec.volumes[].csi`) on a real node (real containerd): for a
//! driver whose CSIDriver allows the Ephemeral lifecycle mode the node agent calls
//! NodePublishVolume directly (no VolumeAttachment, no staging), with the volume id
//! upstream derives from the pod's UID and the volume's name, the volume attributes,
//! the pod's details (`podInfoOnMount`, `csi.storage.k8s.io/ephemeral: "true"`) and
//! the `nodePublishSecretRef` Secret; the pod uses the volume, and deleting the pod
//! unpublishes it. Bad input: a driver that is not registered, or whose CSIDriver does
//! not allow Ephemeral, keeps the pod waiting with the reason in its status and a
//! FailedMount Event. One function, one containerd start-up.

use std::time::{Duration, Instant};

use krust_e2e::csi::TestCsiDriver;
use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

const TIMEOUT: Duration = Duration::from_secs(60);

fn pod(node: &TestNode, name: &str, driver: &str, secret: bool) -> String {
    let secret_ref = if secret {
        ", nodePublishSecretRef: {name: inline-secret}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo hello > /inline/file && cat /inline/file && sleep 3600"]
    volumeMounts: [{{name: scratch, mountPath: /inline}}]
  volumes:
  - name: scratch
    csi: {{driver: {driver}, volumeAttributes: {{size: small}}{secret_ref}}}
"#,
        image = node.image("krust/busybox:1"),
    )
}

/// The sha256 of a text, in hex, with sha256sum (as upstream names inline volumes).
fn sha256_hex(text: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf %s '{text}' | sha256sum")])
        .output()
        .expect("sha256sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Waits until the pod's container waits with a message containing `needle`, and
/// a FailedMount Event says so.
fn wait_refused(node: &TestNode, pod: &str, needle: &str) {
    let status = [
        "get",
        "pod",
        pod,
        "-o=jsonpath={.status.containerStatuses[0].state.waiting.message}",
    ];
    let selector = format!("--field-selector=involvedObject.name={pod}");
    let format = "-o=jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}";
    let events = ["get", "events", &selector, format];
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let message = node.server.kubectl_text(status);
        let event = node.server.kubectl_text(events);
        let reported = event
            .lines()
            .any(|line| line.starts_with("FailedMount: ") && line.contains(needle));
        if message.contains(needle) && reported {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "pod {pod}: waiting {message:?} and FailedMount events {event:?} should say {needle:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn inline_csi_volumes_are_published_for_their_pod_only() {
    let node = TestNode::start();
    let registry = krust_kubelet::csi::registry_dir(node.agent_dir());
    let suffix = &node.node_name["node-".len()..];
    let name = format!("inline-{suffix}.krust.test");
    let driver = TestCsiDriver::start(&name, &node.node_name, &registry, &["--no-attach"]);
    let csidriver = |modes: &str| {
        format!(
            "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {{name: {name}}}\nspec: {{attachRequired: false, podInfoOnMount: true, volumeLifecycleModes: [{modes}]}}\n"
        )
    };
    node.server.apply_yaml(&csidriver("Persistent, Ephemeral"));
    wait_until("the driver is in the CSINode", TIMEOUT, || {
        node.server.kubectl_text([
            "get",
            "csinode",
            &node.node_name,
            "-o=jsonpath={.spec.drivers[*].name}",
        ]) == name
    });
    node.server.apply_yaml(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: inline-secret}\nstringData: {token: s3cret}\n",
    );

    // Published for the pod, which writes into it.
    node.server
        .apply_yaml(&pod(&node, "inline-user", &name, true));
    wait_until("inline-user wrote to its volume", TIMEOUT, || {
        node.server.kubectl_text(["logs", "inline-user"]) == "hello"
    });
    let uid =
        node.server
            .kubectl_text(["get", "pod", "inline-user", "-o=jsonpath={.metadata.uid}"]);
    let id = format!("csi-{}", sha256_hex(&format!("{uid}scratch")));
    assert!(
        driver.calls().contains(&format!("NodePublishVolume {id}")),
        "{:?}",
        driver.calls()
    );
    assert!(
        !driver
            .calls()
            .iter()
            .any(|c| c.starts_with("NodeStageVolume") || c.starts_with("ControllerPublish")),
        "no staging, no attaching: {:?}",
        driver.calls()
    );
    let published = driver.published(&id).expect("the driver has the volume");
    let context = &published["volumeContext"];
    assert_eq!(context["size"], "small", "{published}");
    assert_eq!(context["csi.storage.k8s.io/ephemeral"], "true");
    assert_eq!(context["csi.storage.k8s.io/pod.name"], "inline-user");
    assert_eq!(context["csi.storage.k8s.io/pod.namespace"], "default");
    assert_eq!(context["csi.storage.k8s.io/pod.uid"], uid.as_str());
    assert_eq!(context["csi.storage.k8s.io/serviceAccount.name"], "default");
    assert_eq!(published["secrets"], serde_json::json!(["token"]));
    assert_eq!(
        std::fs::read_to_string(driver.volume_dir(&id).join("file")).unwrap(),
        "hello\n"
    );
    assert!(
        node.server
            .kubectl_text(["get", "volumeattachments", "-o=name"])
            .is_empty()
    );

    // The summary has the volume: measured by statvfs of its mount, since this
    // driver does not offer NodeGetVolumeStats.
    let summary_path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.node_name);
    wait_until("the summary has the inline volume", TIMEOUT, || {
        let out = node.server.kubectl(["get", "--raw", &summary_path]);
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        summary["pods"].as_array().into_iter().flatten().any(|p| {
            p["podRef"]["name"] == "inline-user"
                && p["volume"].as_array().into_iter().flatten().any(|v| {
                    v["name"] == "scratch"
                        && v["capacityBytes"].as_u64().is_some_and(|n| n > 0)
                        && v.get("pvcRef").is_none()
                })
        })
    });
    assert!(
        !driver
            .calls()
            .iter()
            .any(|c| c.starts_with("NodeGetVolumeStats"))
    );

    // Deleting the pod unpublishes the volume, and the driver drops it.
    node.server
        .kubectl_text(["delete", "pod", "inline-user", "--wait=true"]);
    wait_until("the inline volume is unpublished", TIMEOUT, || {
        driver
            .calls()
            .contains(&format!("NodeUnpublishVolume {id}"))
    });
    assert!(!driver.volume_dir(&id).exists());

    // Refused: a driver that is not registered here, one that does not allow inline
    // volumes, and a missing nodePublishSecretRef Secret.
    node.server
        .apply_yaml(&pod(&node, "inline-ghost", "ghost.krust.test", false));
    wait_refused(
        &node,
        "inline-ghost",
        "\"ghost.krust.test\" is not registered",
    );
    node.server
        .kubectl_text(["delete", "pod", "inline-ghost", "--wait=true"]);
    node.server.kubectl_text(["delete", "csidriver", &name]);
    node.server.apply_yaml(&csidriver("Persistent"));
    node.server
        .apply_yaml(&pod(&node, "inline-refused", &name, false));
    wait_refused(&node, "inline-refused", "does not take inline volumes");
    node.server
        .kubectl_text(["delete", "pod", "inline-refused", "--wait=true"]);
    node.server.kubectl_text(["delete", "csidriver", &name]);
    node.server.apply_yaml(&csidriver("Ephemeral"));
    node.server
        .kubectl_text(["delete", "secret", "inline-secret"]);
    node.server
        .apply_yaml(&pod(&node, "inline-nosecret", &name, true));
    wait_refused(
        &node,
        "inline-nosecret",
        "\"inline-secret\" (nodePublishSecretRef) not found",
    );
    node.server
        .kubectl_text(["delete", "pod", "inline-nosecret", "--wait=true"]);
    assert!(
        !driver
            .calls()
            .iter()
            .any(|c| c.starts_with("NodePublishVolume ") && !c.ends_with(&id)),
        "nothing else was published: {:?}",
        driver.calls()
    );
}
