//! `krust controller-manager` as its own process, leader-elected: of two instances
//! against a server that runs no controllers of its own, one holds the
//! `kube-system/kube-controller-manager` Lease and works; killed, the other takes over.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use krust_e2e::{ServerOptions, TestServer, krust_bin, run_krust};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Lease expiry (15 s) plus a candidate's retry period, with room for a slow machine.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);

/// A `krust controller-manager` process, killed when dropped.
struct ControllerManager(std::process::Child);

impl ControllerManager {
    fn start(server: &TestServer) -> ControllerManager {
        let child = Command::new(krust_bin())
            .args(["controller-manager", "--kubeconfig"])
            .arg(server.kubeconfig_path())
            .arg("--root-ca-file")
            .arg(server.data_dir().join("tls/ca.crt"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start krust controller-manager");
        ControllerManager(child)
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("kube-controller-manager").await.unwrap()?;
    lease.spec?.holder_identity
}

async fn wait_until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + FAILOVER_DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a namespace and waits for the controllers to give it its default
/// ServiceAccount: proof that a controller manager is at work.
async fn served_by_controllers(client: &kube::Client, namespace: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    wait_until("the namespace has its default ServiceAccount", || async {
        accounts.get_opt("default").await.unwrap().map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_controller_manager_takes_over_when_the_leader_dies() {
    let server = tokio::task::spawn_blocking(|| {
        TestServer::start_with(ServerOptions {
            extra_args: vec!["--disable-controllers".into()],
            ..ServerOptions::default()
        })
    })
    .await
    .unwrap();
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");

    let mut first = ControllerManager::start(&server);
    let first_identity = wait_until("the first instance holds the Lease", || async {
        holder(&leases).await
    })
    .await;
    let _second = ControllerManager::start(&server);
    served_by_controllers(&client, "elected-one").await;
    assert_eq!(
        holder(&leases).await.as_deref(),
        Some(first_identity.as_str()),
        "the second instance must not take a Lease that is being renewed"
    );

    // kill -9: the Lease is not released, the second instance waits for it to expire.
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let second_identity = wait_until("the second instance holds the Lease", || async {
        holder(&leases).await.filter(|h| *h != first_identity)
    })
    .await;
    assert_ne!(second_identity, first_identity);
    served_by_controllers(&client, "elected-two").await;
}

#[test]
fn a_missing_root_ca_file_is_a_one_line_error() {
    let output = run_krust(
        [
            "controller-manager",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--root-ca-file",
            "/nonexistent/ca.crt",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: cannot read the root CA /nonexistent/ca.crt"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}
