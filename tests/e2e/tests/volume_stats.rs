//! Volume usage in the kubelet's Summary API and metrics, on a real node (real
//! containerd): a pod writes 3 MiB into an emptyDir, a claim of the default
//! `local-path` class and a claim of the test CSI driver (which has
//! GET_VOLUME_STATS), and `/stats/summary` (through `nodes/<name>/proxy`) shows each
//! volume's usage with the claim's `pvcRef`, the pod's `ephemeral-storage` counts the
//! emptyDir, the driver was asked (NodeGetVolumeStats), and `/metrics` has
//! `kubelet_volume_stats_*` for the two claims only. A deleted pod leaves the summary.
//! One function, one containerd start-up.

use std::time::{Duration, Instant};

use krust_e2e::csi::TestCsiDriver;
use krust_e2e::node::TestNode;
use krust_e2e::wait_until;
use serde_json::Value;

const MIB: u64 = 1 << 20;
/// Long enough for a new measurement (the kubelet measures a volume every 20 s).
const TIMEOUT: Duration = Duration::from_secs(90);

fn raw(node: &TestNode, path: &str) -> Vec<u8> {
    let out = node.server.kubectl(["get", "--raw", path]);
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn summary(node: &TestNode) -> Value {
    let path = format!("/api/v1/nodes/{}/proxy/stats/summary", node.node_name);
    serde_json::from_slice(&raw(node, &path)).expect("the summary is JSON")
}

fn pod_of<'a>(summary: &'a Value, name: &str) -> Option<&'a Value> {
    summary["pods"]
        .as_array()?
        .iter()
        .find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == "default")
}

fn volume_of<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["volume"].as_array()?.iter().find(|v| v["name"] == name)
}

#[test]
fn summary_and_metrics_show_volume_usage() {
    let node = TestNode::start();
    let registry = krust_kubelet::csi::registry_dir(node.agent_dir());
    let suffix = &node.node_name["node-".len()..];
    let driver_name = format!("stats-{suffix}.krust.test");
    let driver = TestCsiDriver::start(
        &driver_name,
        &node.node_name,
        &registry,
        &["--volume-stats", "--no-attach"],
    );
    node.server.apply_yaml(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {{name: {driver_name}}}\nspec: {{attachRequired: false}}\n"
    ));
    let class = format!("stats-{suffix}");
    node.server.apply_yaml(&format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {class}}}\nprovisioner: {driver_name}\nreclaimPolicy: Delete\nvolumeBindingMode: WaitForFirstConsumer\n"
    ));
    let claim = |name: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  {class}\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 64Mi}}}}\n"
        )
    };
    node.server.apply_yaml(&claim("vs-local", ""));
    node.server
        .apply_yaml(&claim("vs-csi", &format!("storageClassName: {class}")));
    node.server.apply_yaml(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: vs-config}\ndata: {greeting: hello}\n",
    );
    let script = "for d in scratch local csi; do dd if=/dev/zero of=/$d/blob bs=1M count=3 2>/dev/null || exit 1; done; sync; echo written; sleep 3600";
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: vs-writer}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: local, mountPath: /local}}
    - {{name: csi, mountPath: /csi}}
    - {{name: config, mountPath: /config}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: local, persistentVolumeClaim: {{claimName: vs-local}}}}
  - {{name: csi, persistentVolumeClaim: {{claimName: vs-csi}}}}
  - {{name: config, configMap: {{name: vs-config}}}}
"#,
        image = node.image("krust/busybox:1"),
    ));
    let deadline = Instant::now() + TIMEOUT;
    while node.server.kubectl_text(["logs", "vs-writer"]) != "written" {
        assert!(
            Instant::now() < deadline,
            "vs-writer did not write its data: {}\nevents:\n{}\nstatus: {}\nagent log:\n{}",
            node.server.kubectl_text(["logs", "vs-writer"]),
            node.server.kubectl_text(["get", "events"]),
            node.server
                .kubectl_text(["get", "pod", "vs-writer", "-o=jsonpath={.status}"]),
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Each volume's usage shows up once the kubelet measured it after the writes.
    let mut last: Value;
    let deadline = Instant::now() + TIMEOUT;
    let used =
        |pod: &Value, volume: &str| volume_of(pod, volume).and_then(|v| v["usedBytes"].as_u64());
    loop {
        last = summary(&node);
        if let Some(pod) = pod_of(&last, "vs-writer")
            && ["scratch", "local", "csi"]
                .iter()
                .all(|v| used(pod, v).is_some_and(|bytes| bytes >= 3 * MIB))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the summary never showed 3 MiB in each volume: {last:#}\nagent log:\n{}",
            node.agent_log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let pod = pod_of(&last, "vs-writer").unwrap();
    for (volume, claim) in [("local", "vs-local"), ("csi", "vs-csi")] {
        let stats = volume_of(pod, volume).unwrap();
        assert_eq!(
            stats["pvcRef"],
            serde_json::json!({"name": claim, "namespace": "default"}),
            "{stats}"
        );
        for field in ["capacityBytes", "availableBytes", "inodes", "inodesFree"] {
            assert!(
                stats[field].as_u64().is_some_and(|n| n > 0),
                "{field}: {stats}"
            );
        }
        assert!(stats["inodesUsed"].as_u64().unwrap() >= 2, "{stats}");
        assert!(stats["time"].is_string());
    }
    let scratch = volume_of(pod, "scratch").unwrap();
    assert!(scratch.get("pvcRef").is_none(), "{scratch}");
    let config = volume_of(pod, "config").expect("the configMap volume is measured");
    assert!(config["usedBytes"].as_u64().unwrap() > 0, "{config}");
    // The emptyDir is the pod's ephemeral storage, the claims are not.
    let ephemeral = pod["ephemeral-storage"]["usedBytes"].as_u64().unwrap();
    assert!(
        (3 * MIB..6 * MIB).contains(&ephemeral),
        "ephemeral storage {ephemeral}: {pod:#}"
    );
    assert!(last["node"]["fs"]["capacityBytes"].as_u64().unwrap() > 0);
    assert!(
        driver
            .calls()
            .iter()
            .any(|c| c.starts_with("NodeGetVolumeStats ")),
        "the driver was asked: {:?}",
        driver.calls()
    );

    // The summary is served from what was measured: quick however big the volumes.
    let started = Instant::now();
    for _ in 0..5 {
        summary(&node);
    }
    eprintln!(
        "volume_stats: GET /stats/summary through the API server {:?} on average",
        started.elapsed() / 5
    );

    // /metrics: the claims' volumes, labelled by namespace and claim.
    let path = format!("/api/v1/nodes/{}/proxy/metrics", node.node_name);
    let metrics = String::from_utf8(raw(&node, &path)).unwrap();
    for claim in ["vs-local", "vs-csi"] {
        let prefix = format!(
            "kubelet_volume_stats_used_bytes{{namespace=\"default\",persistentvolumeclaim=\"{claim}\"}} "
        );
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {prefix}in:\n{metrics}"));
        let value: f64 = line[prefix.len()..].parse().unwrap();
        assert!(value >= (3 * MIB) as f64, "{line}");
        for family in [
            "capacity_bytes",
            "available_bytes",
            "inodes",
            "inodes_free",
            "inodes_used",
        ] {
            assert!(
                metrics.contains(&format!(
                    "kubelet_volume_stats_{family}{{namespace=\"default\",persistentvolumeclaim=\"{claim}\"}} "
                )),
                "{family} of {claim}:\n{metrics}"
            );
        }
    }
    assert_eq!(
        metrics.matches("kubelet_volume_stats_used_bytes{").count(),
        2,
        "only claims: {metrics}"
    );

    // A deleted pod leaves the summary; the claims go too.
    node.server
        .kubectl_text(["delete", "pod", "vs-writer", "--wait=true"]);
    wait_until("vs-writer left the summary", TIMEOUT, || {
        pod_of(&summary(&node), "vs-writer").is_none()
    });
    node.server
        .kubectl_text(["delete", "pvc", "vs-local", "vs-csi", "--wait=true"]);
    node.server
        .kubectl_text(["delete", "configmap", "vs-config"]);
}
