//! LimitRanger admission through the real kubectl and kube-rs: a namespace's
//! LimitRange fills in the resources new pods leave out, refuses pods and claims
//! outside its bounds with 403 and every reason, and a changed LimitRange applies to
//! the next pod.

use k8s_openapi::api::core::v1::{LimitRange, Pod};
use krust_e2e::TestServer;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const RANGE: &str = r#"
apiVersion: v1
kind: LimitRange
metadata: {name: bounds}
spec:
  limits:
  - type: Container
    min: {cpu: 100m, memory: 100Mi}
    max: {cpu: 500m, memory: 500Mi}
    default: {cpu: 500m, memory: 500Mi}
    defaultRequest: {cpu: 100m, memory: 200Mi}
  - type: PersistentVolumeClaim
    max: {storage: 2Gi}
"#;

fn stdout(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_ranges_default_and_bound_new_pods() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    stdout(server.kubectl(["create", "namespace", "limits"]));
    stdout(server.kubectl_stdin(["apply", "-n", "limits", "-f", "-"], RANGE));

    // The stored LimitRange shows its own defaulting, as upstream's does.
    let client = server.client().await;
    let ranges: Api<LimitRange> = Api::namespaced(client.clone(), "limits");
    let range = ranges.get("bounds").await.unwrap();
    assert_eq!(range.spec.unwrap().limits.len(), 2);

    // A pod without resources gets the defaults.
    stdout(server.kubectl(["run", "plain", "-n", "limits", "--image=busybox:1"]));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "limits");
    let plain = pods.get("plain").await.unwrap();
    let resources = plain.spec.unwrap().containers[0].resources.clone().unwrap();
    let requests = resources.requests.unwrap();
    let limits = resources.limits.unwrap();
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(requests["memory"].0, "200Mi");
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, "500Mi");
    let annotation = plain.metadata.annotations.unwrap()["kubernetes.io/limit-ranger"].clone();
    assert!(
        annotation.starts_with("LimitRanger plugin set:"),
        "{annotation}"
    );

    // One over the max is refused with 403 and the reason; nothing is created.
    let greedy = serde_json::from_value(json!({
        "metadata": {"name": "greedy"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1",
            "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}}]},
    }))
    .unwrap();
    match pods.create(&PostParams::default(), &greedy).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("pods \"greedy\" is forbidden"),
                "{status:?}"
            );
            assert!(
                status
                    .message
                    .contains("maximum cpu usage per Container is 500m, but limit is 600m"),
                "{status:?}"
            );
        }
        other => panic!("a pod over the max should be refused, got {other:?}"),
    }
    assert!(pods.get_opt("greedy").await.unwrap().is_none());

    // kubectl shows the same refusal.
    let output = server.kubectl_stdin(
        ["apply", "-n", "limits", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: big}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 5Gi}}\n",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{stderr}"
    );

    // A changed LimitRange applies to the next pod.
    let patch = json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "300m"}, "defaultRequest": {"cpu": "200m"}}]}});
    ranges
        .patch("bounds", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // Admission reads LimitRanges from the watch cache, as upstream's from its
    // informer: the change shows within moments (seen through server dry runs).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dry = stdout(server.kubectl([
            "run",
            "later",
            "-n",
            "limits",
            "--image=busybox:1",
            "--dry-run=server",
            "-o",
            "jsonpath={.spec.containers[0].resources.requests.cpu}",
        ]));
        if dry == "200m" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new defaults never applied: {dry}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    stdout(server.kubectl(["run", "later", "-n", "limits", "--image=busybox:1"]));
    let later = pods.get("later").await.unwrap();
    let resources = later.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "200m");
    assert_eq!(resources.limits.unwrap()["cpu"].0, "300m");
}
