//! ResourceQuotas through kube-rs and the real kubectl: the controller fills in
//! `status.hard` and `status.used` promptly, admission charges new objects at once
//! and refuses what would exceed `hard` (403, nothing created), pods must name the
//! compute resources a quota constrains, scopes select the pods counted, and what a
//! deleted object used is given back.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret};
use krust_e2e::TestServer;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

async fn wait_used(quotas: &Api<ResourceQuota>, name: &str, want: Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let quota = quotas.get(name).await.unwrap();
        let used =
            serde_json::to_value(quota.status.as_ref().and_then(|s| s.used.clone())).unwrap();
        let matches = want
            .as_object()
            .unwrap()
            .iter()
            .all(|(resource, quantity)| used.get(resource) == Some(quantity));
        if matches {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} used is {used}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn pod(name: &str, resources: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox:1", "resources": resources}]},
    }))
    .unwrap()
}

async fn refused(result: kube::Result<Pod>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("the pod should be refused, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_count_charge_refuse_and_give_back() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let output = server.kubectl(["create", "namespace", "quota"]);
    assert!(output.status.success());
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "quota");
    let quota = serde_json::from_value(json!({
        "metadata": {"name": "compute"},
        "spec": {"hard": {"pods": "2", "requests.cpu": "1", "requests.memory": "1Gi", "secrets": "3"}},
    }))
    .unwrap();
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // Promptly calculated: every hard resource has a used figure.
    wait_used(
        &quotas,
        "compute",
        json!({"pods": "0", "requests.cpu": "0", "requests.memory": "0", "secrets": "0"}),
    )
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "quota");
    let small = json!({"requests": {"cpu": "500m", "memory": "256Mi"}});
    pods.create(&PostParams::default(), &pod("first", small.clone()))
        .await
        .unwrap();
    // Charged by admission before the pod was written.
    let charged = quotas
        .get("compute")
        .await
        .unwrap()
        .status
        .unwrap()
        .used
        .unwrap();
    assert_eq!(charged["pods"].0, "1");
    assert_eq!(charged["requests.cpu"].0, "500m");
    assert_eq!(charged["requests.memory"].0, "256Mi");

    // Beyond hard: refused with upstream's message, nothing created or charged.
    let big = json!({"requests": {"cpu": "600m", "memory": "1Mi"}});
    let message = refused(
        pods.create(&PostParams::default(), &pod("greedy", big))
            .await,
    )
    .await;
    assert!(
        message.contains("exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"),
        "{message}"
    );
    assert!(pods.get_opt("greedy").await.unwrap().is_none());
    // A pod that does not say what it requests cannot be counted.
    let message = refused(
        pods.create(&PostParams::default(), &pod("vague", json!({})))
            .await,
    )
    .await;
    assert!(
        message.contains("failed quota: compute: must specify requests.cpu,requests.memory"),
        "{message}"
    );
    // A server dry run checks but charges nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry, &pod("dry", small.clone())).await.unwrap();
    wait_used(
        &quotas,
        "compute",
        json!({"pods": "1", "requests.cpu": "500m"}),
    )
    .await;

    // Secrets count too; what deleted objects used comes back.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "quota");
    let secret = serde_json::from_value(json!({"metadata": {"name": "s1"}})).unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_used(&quotas, "compute", json!({"secrets": "1"})).await;
    secrets
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap();
    pods.delete("first", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_used(
        &quotas,
        "compute",
        json!({"pods": "0", "requests.cpu": "0", "secrets": "0"}),
    )
    .await;

    // kubectl describes the quota with used and hard side by side.
    let described = server.kubectl(["describe", "quota", "compute", "-n", "quota"]);
    let text = String::from_utf8_lossy(&described.stdout);
    assert!(
        text.contains("requests.cpu") && text.contains("Used") && text.contains("Hard"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_quotas_count_only_their_pods() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    assert!(
        server
            .kubectl(["create", "namespace", "scoped"])
            .status
            .success()
    );
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "scoped");
    for (name, scope) in [
        ("best-effort", "BestEffort"),
        ("not-best-effort", "NotBestEffort"),
    ] {
        let quota = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"hard": {"pods": "5"}, "scopes": [scope]},
        }))
        .unwrap();
        quotas.create(&PostParams::default(), &quota).await.unwrap();
        wait_used(&quotas, name, json!({"pods": "0"})).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "scoped");
    pods.create(&PostParams::default(), &pod("plain", json!({})))
        .await
        .unwrap();
    wait_used(&quotas, "best-effort", json!({"pods": "1"})).await;
    wait_used(&quotas, "not-best-effort", json!({"pods": "0"})).await;
    let guaranteed = json!({"requests": {"cpu": "100m", "memory": "10Mi"}, "limits": {"cpu": "100m", "memory": "10Mi"}});
    pods.create(&PostParams::default(), &pod("sized", guaranteed))
        .await
        .unwrap();
    wait_used(&quotas, "not-best-effort", json!({"pods": "1"})).await;
    wait_used(&quotas, "best-effort", json!({"pods": "1"})).await;
}
