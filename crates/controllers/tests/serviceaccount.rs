//! The serviceaccount and root-ca-cert-publisher controllers in a real `krust server`:
//! every namespace gets a `default` ServiceAccount and a `kube-root-ca.crt` ConfigMap
//! with the cluster CA, and both come back when deleted or changed.

mod common;

use base64::Engine;
use common::eventually;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use krust_e2e::TestServer;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The CA the server's admin kubeconfig trusts.
fn cluster_ca(server: &TestServer) -> String {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig_path()).unwrap();
    let data = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .unwrap()
        .certificate_authority_data
        .clone()
        .unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap()
}

async fn root_ca(maps: &Api<ConfigMap>) -> Option<String> {
    let map = maps.get_opt("kube-root-ca.crt").await.unwrap()?;
    map.data?.get("ca.crt").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .unwrap();
    let client = server.client().await;
    let ca = cluster_ca(&server);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "fresh"}})).unwrap(),
        )
        .await
        .unwrap();
    for namespace in ["default", "kube-system", "fresh"] {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        eventually(
            &format!("{namespace} has its ServiceAccount and CA"),
            || async {
                accounts.get_opt("default").await.unwrap().is_some()
                    && root_ca(&maps).await.as_deref() == Some(ca.as_str())
            },
        )
        .await;
    }

    // Deleted or changed, they come back.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "fresh");
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "fresh");
    let before = accounts.get("default").await.unwrap().metadata.uid;
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the ServiceAccount is recreated", || async {
        accounts
            .get_opt("default")
            .await
            .unwrap()
            .is_some_and(|account| account.metadata.uid != before)
    })
    .await;
    maps.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "tampered"}})),
    )
    .await
    .unwrap();
    eventually("the CA is put back", || async {
        root_ca(&maps).await.as_deref() == Some(ca.as_str())
    })
    .await;
    maps.delete("kube-root-ca.crt", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the CA ConfigMap is recreated", || async {
        root_ca(&maps).await.as_deref() == Some(ca.as_str())
    })
    .await;

    // kubectl sees them as users do.
    let output = tokio::task::block_in_place(|| {
        server.kubectl(["get", "serviceaccounts", "-n", "fresh", "-o", "name"])
    });
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "serviceaccount/default"
    );
}
