//! Horizontal pod autoscaling with a real node: a Deployment whose pod burns CPU
//! far above its request is scaled out by an HPA made with `kubectl autoscale`,
//! through the Deployment's scale subresource, from the pods' metrics.k8s.io usage,
//! and back in once its pods idle (the controller's sync period and downscale
//! stabilization flags shortened);
//! an HPA aimed at a Deployment that does not exist says it cannot get its scale;
//! HPAs with impossible bounds or unknown metric types are rejected.

use std::time::{Duration, Instant};

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;
use serde_json::Value;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn get_json(node: &TestNode, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let out = node.server.kubectl(full);
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn condition<'a>(autoscaler: &'a Value, type_: &str) -> &'a Value {
    autoscaler["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

#[test]
fn an_hpa_scales_a_busy_deployment_out_and_back_in() {
    // The server's controller flags: sync every 5 s, scale down without waiting.
    let node = TestNode::start_with_agent_args(&[
        "--horizontal-pod-autoscaler-sync-period=5s",
        "--horizontal-pod-autoscaler-downscale-stabilization=0s",
    ]);
    node.wait_ready();
    let started = Instant::now();
    // 20m requested, ~100m used (the limit): 500% against a 10% target.
    let deployment = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: burner}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: burner}}}}
  template:
    metadata: {{labels: {{app: burner}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: spin
        image: {image}
        command: ["sh", "-c", "while :; do :; done"]
        resources: {{requests: {{cpu: 20m}}, limits: {{cpu: 100m}}}}
"#,
        image = node.image("krust/busybox:1"),
    );
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], &deployment);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    let out = node.server.kubectl([
        "autoscale",
        "deployment",
        "burner",
        "--cpu-percent=10",
        "--min=1",
        "--max=3",
    ]);
    assert!(out.status.success(), "autoscale: {}", text(&out.stderr));

    let mut autoscaler = Value::Null;
    wait_until(
        "the HPA wants more than one replica",
        Duration::from_secs(90),
        || {
            autoscaler = get_json(&node, &["hpa", "burner"]);
            autoscaler["status"]["desiredReplicas"]
                .as_i64()
                .unwrap_or(0)
                > 1
        },
    );
    let desired = autoscaler["status"]["desiredReplicas"].as_i64().unwrap();
    assert!(desired <= 3, "maxReplicas bounds it: {autoscaler}");
    assert!(
        autoscaler["status"]["lastScaleTime"].is_string(),
        "{autoscaler}"
    );
    assert_eq!(
        condition(&autoscaler, "AbleToScale")["reason"],
        "SucceededRescale"
    );
    assert_eq!(
        condition(&autoscaler, "ScalingActive")["reason"],
        "ValidMetricFound"
    );
    let current = &autoscaler["status"]["currentMetrics"][0]["resource"];
    assert_eq!(current["name"], "cpu", "{autoscaler}");
    assert!(
        current["current"]["averageUtilization"]
            .as_i64()
            .unwrap_or(0)
            > 100,
        "the pod uses far more than it requests: {autoscaler}"
    );

    // The Deployment itself was scaled, and an Event says why.
    let scaled = get_json(&node, &["deployment", "burner"]);
    assert_eq!(
        scaled["spec"]["replicas"].as_i64(),
        Some(desired),
        "{scaled}"
    );
    wait_until("a SuccessfulRescale event", Duration::from_secs(20), || {
        let events = get_json(
            &node,
            &[
                "events",
                "--field-selector",
                "involvedObject.name=burner,reason=SuccessfulRescale",
            ],
        );
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| {
                event["message"].as_str().is_some_and(|message| {
                    message.starts_with(&format!("New size: {desired}; reason: "))
                        && message.contains(
                            "cpu resource utilization (percentage of request) above target",
                        )
                })
            })
    });
    eprintln!(
        "scaled out {:?} after the node was ready",
        started.elapsed()
    );

    // Idle pods: back to minReplicas (no stabilization window: the flag says 0 s).
    let idle = r#"{"spec":{"template":{"spec":{"containers":[{"name":"spin","command":["sleep","3600"]}]}}}}"#;
    let out = node
        .server
        .kubectl(["patch", "deployment", "burner", "-p", idle]);
    assert!(out.status.success(), "patch: {}", text(&out.stderr));
    wait_until(
        "the HPA scales the idle Deployment in",
        Duration::from_secs(120),
        || {
            let scaled = get_json(&node, &["deployment", "burner"]);
            scaled["spec"]["replicas"].as_i64() == Some(1)
        },
    );
    autoscaler = get_json(&node, &["hpa", "burner"]);
    assert_eq!(autoscaler["status"]["desiredReplicas"], 1, "{autoscaler}");
    assert_eq!(
        condition(&autoscaler, "AbleToScale")["reason"],
        "SucceededRescale"
    );
    // Its own Event, after the scale-out's.
    let events = get_json(
        &node,
        &[
            "events",
            "--field-selector",
            "involvedObject.name=burner,reason=SuccessfulRescale",
        ],
    );
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|event| event["message"] == "New size: 1; reason: All metrics below target"),
        "{events}"
    );
    assert_eq!(
        autoscaler["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"]
            .as_i64()
            .map(|used| used < 10),
        Some(true),
        "idle pods are below the target: {autoscaler}"
    );

    // An HPA whose target does not exist cannot get its scale.
    let ghost = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: ghost}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: no-such-deployment}
  maxReplicas: 2
"#;
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], ghost);
    assert!(out.status.success(), "apply: {}", text(&out.stderr));
    wait_until(
        "the ghost HPA reports FailedGetScale",
        Duration::from_secs(30),
        || {
            autoscaler = get_json(&node, &["hpa", "ghost"]);
            let able = condition(&autoscaler, "AbleToScale");
            able["status"] == "False" && able["reason"] == "FailedGetScale"
        },
    );
    assert!(
        condition(&autoscaler, "AbleToScale")["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not found"),
        "{autoscaler}"
    );
    wait_until("a FailedGetScale event", Duration::from_secs(20), || {
        let events = get_json(
            &node,
            &[
                "events",
                "--field-selector",
                "involvedObject.name=ghost,reason=FailedGetScale",
            ],
        );
        events["items"]
            .as_array()
            .is_some_and(|items| !items.is_empty())
    });

    // Bad input is rejected and nothing is created.
    let inverted = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: inverted}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burner}
  minReplicas: 5
  maxReplicas: 2
"#;
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], inverted);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"
        ),
        "{}",
        text(&out.stderr)
    );
    let unknown = r#"apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: unknown-metric}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burner}
  maxReplicas: 2
  metrics: [{type: Bogus}]
"#;
    let out = node.server.kubectl_stdin(["apply", "-f", "-"], unknown);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spec.metrics[0].type: Unsupported value: \"Bogus\""),
        "{}",
        text(&out.stderr)
    );
    for name in ["inverted", "unknown-metric"] {
        let out = node.server.kubectl(["get", "hpa", name]);
        assert!(!out.status.success(), "{name} must not exist");
    }
}
