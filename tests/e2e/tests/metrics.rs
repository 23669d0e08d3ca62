//! Resource metrics with the real containerd: the kubelet samples usage, serves
//! `/stats/summary` and `/metrics/resource` (reached through `nodes/<name>/proxy`),
//! and the API server's metrics.k8s.io makes `kubectl top nodes` and `kubectl top
//! pods` work. A pod that burns CPU shows it; bad requests get clear errors.

use std::time::Duration;

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// Millicores of a quantity as `kubectl top` prints it (`123m`) or the API has it (`123456n`).
fn millicores(quantity: &str) -> f64 {
    if let Some(n) = quantity.strip_suffix('n') {
        n.parse::<f64>().unwrap() / 1e6
    } else if let Some(m) = quantity.strip_suffix('m') {
        m.parse().unwrap()
    } else {
        quantity.parse::<f64>().unwrap() * 1000.0
    }
}

#[test]
fn kubectl_top_and_the_kubelet_stats() {
    let node = TestNode::start();
    node.wait_ready();
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: burner, labels: {{app: burn}}}}
spec:
  nodeName: {node_name}
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: {image}
    command: ["sh", "-c", "while :; do :; done"]
    resources: {{limits: {{cpu: 300m, memory: 64Mi}}}}
  - name: idle
    image: {image}
    command: ["sleep", "3600"]
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    );
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], &pod);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));

    // The pod's metrics appear once the kubelet has two samples of it.
    let mut metrics = Value::Null;
    wait_until("PodMetrics of burner", Duration::from_secs(60), || {
        let out = node.server.kubectl([
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
        ]);
        metrics = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        metrics["kind"] == "PodMetrics"
    });
    let usage = |name: &str| {
        metrics["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no container {name} in {metrics}"))["usage"]
            .clone()
    };
    let spin = millicores(usage("spin")["cpu"].as_str().unwrap());
    // Limited to 300m: it uses most of that, never much more.
    assert!(spin > 100.0 && spin < 400.0, "spin uses {spin}m: {metrics}");
    assert!(millicores(usage("idle")["cpu"].as_str().unwrap()) < 50.0);
    assert_eq!(metrics["metadata"]["labels"]["app"], "burn");
    assert_eq!(metrics["window"], "5s");

    // kubectl top, with a label selector and per container.
    let out = node
        .server
        .kubectl(["top", "pod", "-l", "app=burn", "--containers"]);
    let printed = text(&out.stdout);
    assert!(out.status.success(), "top pod: {}", text(&out.stderr));
    assert!(
        printed.contains("burner") && printed.contains("spin") && printed.contains("idle"),
        "{printed}"
    );
    let out = node.server.kubectl(["top", "pod", "-l", "app=nothing"]);
    assert!(
        text(&out.stdout).is_empty(),
        "no pod matches: {}",
        text(&out.stdout)
    );
    wait_until("kubectl top node", Duration::from_secs(30), || {
        let out = node.server.kubectl(["top", "node"]);
        out.status.success() && text(&out.stdout).contains(&node.node_name)
    });
    let out = node.server.kubectl(["top", "node", &node.node_name]);
    let printed = text(&out.stdout);
    assert!(
        printed.contains("CPU(cores)") && printed.contains('%'),
        "{printed}"
    );

    // The kubelet's own endpoints, through nodes/proxy.
    let out = node.server.kubectl([
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/stats/summary", node.node_name),
    ]);
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("summary: {} {}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(summary["node"]["nodeName"], node.node_name.as_str());
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        summary["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["podRef"]["name"] == "burner")
    );
    let out = node.server.kubectl([
        "get",
        "--raw",
        &format!("/api/v1/nodes/{}/proxy/metrics/resource", node.node_name),
    ]);
    let exposition = text(&out.stdout);
    assert!(
        exposition.contains("container_cpu_usage_seconds_total{container=\"spin\",namespace=\"default\",pod=\"burner\"}"),
        "{exposition}"
    );
    assert!(exposition.contains("node_memory_working_set_bytes "));

    // Bad input: unknown objects are not found, metrics cannot be written.
    let out = node.server.kubectl(["top", "pod", "ghost"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("not found"),
        "{}",
        text(&out.stderr)
    );
    let out = node.server.kubectl_stdin(
        [
            "create",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            "-f",
            "-",
        ],
        r#"{"kind":"PodMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"x"}}"#,
    );
    assert!(!out.status.success(), "metrics are read-only");
    assert!(
        text(&out.stderr).contains("MethodNotAllowed") || text(&out.stderr).contains("read-only"),
        "{}",
        text(&out.stderr)
    );
}
