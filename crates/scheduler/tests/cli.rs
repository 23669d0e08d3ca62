//! `krust scheduler` as its own process: it schedules for a server that runs without
//! one (`--disable-scheduler`), and a bad kubeconfig is a one-line error.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use krust_e2e::{ServerOptions, TestServer, krust_bin, run_krust};
use kube::api::{Api, PostParams};
use serde_json::json;

#[test]
fn a_missing_kubeconfig_is_a_one_line_error() {
    let output = run_krust(
        ["scheduler", "--kubeconfig", "/nonexistent/kubeconfig"],
        Duration::from_secs(20),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot read the kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

/// Kills the scheduler process when the test ends, passing or not.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_scheduler_process_schedules_for_a_server_without_one() {
    let server = tokio::task::spawn_blocking(|| {
        TestServer::start_with(ServerOptions {
            extra_args: vec!["--disable-scheduler".into()],
            ..ServerOptions::default()
        })
    })
    .await
    .unwrap();
    let client = server.client().await;
    let _nodes = HollowNodes::start(
        client.clone(),
        vec![NodeTemplate::new("solo")],
        HollowOptions::default(),
    )
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({"metadata": {"name": "waiting"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(pod).unwrap(),
    )
    .await
    .unwrap();

    let _scheduler = Child(
        Command::new(krust_bin())
            .args(["scheduler", "--kubeconfig"])
            .arg(server.kubeconfig_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start krust scheduler"),
    );
    let node = common::wait_for("the pod is bound by krust scheduler", || async {
        pods.get("waiting")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.node_name)
    })
    .await;
    assert_eq!(node, "solo");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client, "kube-system");
    let lease = leases.get("kube-scheduler").await.unwrap();
    assert!(lease.spec.unwrap().holder_identity.is_some());
}
