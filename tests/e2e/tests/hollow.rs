//! The hollow nodes of the harness against a real server: nodes and Leases appear,
//! a pending pod is bound and reported Running and Ready, an exit-code pod ends
//! Failed, and a deleted bound pod is removed for good.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use krust_e2e::TestServer;
use krust_e2e::hollow::{EXIT_CODE_ANNOTATION, HollowNodes, HollowOptions, NodeTemplate};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn pod(name: &str, annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

#[tokio::test]
async fn hollow_nodes_run_bind_finish_and_delete_pods() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let templates = vec![NodeTemplate::new("hollow-a"), NodeTemplate::new("hollow-b")];
    let options = HollowOptions {
        bind_pending: true,
        ..HollowOptions::default()
    };
    let _nodes = HollowNodes::start(client.clone(), templates, options).await;

    let node: Node = Api::<Node>::all(client.clone())
        .get("hollow-a")
        .await
        .unwrap();
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = tokio::time::timeout(
        DEADLINE,
        await_condition(leases, "hollow-b", |l: Option<&Lease>| l.is_some()),
    );
    lease.await.expect("no lease for hollow-b").unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("runs", json!({})))
        .await
        .unwrap();
    pods.create(
        &PostParams::default(),
        &pod("fails", json!({EXIT_CODE_ANNOTATION: "2"})),
    )
    .await
    .unwrap();
    let running = await_condition(pods.clone(), "runs", conditions::is_pod_running());
    tokio::time::timeout(DEADLINE, running)
        .await
        .expect("pod never ran")
        .unwrap();
    let failed = await_condition(pods.clone(), "fails", |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Failed")
    });
    tokio::time::timeout(DEADLINE, failed)
        .await
        .expect("pod never failed")
        .unwrap();
    let bound = pods
        .get("runs")
        .await
        .unwrap()
        .spec
        .unwrap()
        .node_name
        .unwrap();
    assert!(bound.starts_with("hollow-"), "bound to {bound}");

    // A bound, running pod waits for its kubelet to confirm the deletion.
    let uid = pods.get("runs").await.unwrap().metadata.uid.unwrap();
    pods.delete("runs", &DeleteParams::default()).await.unwrap();
    let gone = await_condition(pods.clone(), "runs", conditions::is_deleted(&uid));
    tokio::time::timeout(DEADLINE, gone)
        .await
        .expect("pod never went away")
        .unwrap();
}
