//! The namespace controller against a real `krust server`: a deleted namespace is
//! emptied, reports what holds it in its conditions, and is finalized.

mod common;

use common::{Cluster, create_configmap, eventually, is_gone};
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn condition<'a>(namespace: &'a Namespace, condition_type: &str) -> Option<&'a NamespaceCondition> {
    namespace
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == condition_type)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_namespace_removes_its_content_then_the_namespace() {
    let cluster = Cluster::start().await;
    cluster.namespace("doomed").await;
    let maps = cluster.configmaps("doomed");
    create_configmap(&maps, json!({"name": "settings"})).await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "doomed");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "token"}, "stringData": {"t": "x"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    // Another namespace is left alone.
    cluster.namespace("bystander").await;
    let bystanders = cluster.configmaps("bystander");
    create_configmap(&bystanders, json!({"name": "settings"})).await;

    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();

    // As `kubectl wait --for=delete` does, with a deadline.
    let server = &cluster.server;
    let output = tokio::task::block_in_place(|| {
        server.kubectl(["wait", "--for=delete", "namespace/doomed", "--timeout=30s"])
    });
    assert!(
        output.status.success(),
        "kubectl wait failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eventually("the namespace is gone", || async {
        namespaces.get_opt("doomed").await.unwrap().is_none()
    })
    .await;
    let output = tokio::task::block_in_place(|| server.kubectl(["get", "namespace", "doomed"]));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("NotFound"),
        "kubectl get: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(is_gone(&maps, "settings").await);
    assert!(secrets.get_opt("token").await.unwrap().is_none());
    assert!(bystanders.get_opt("settings").await.unwrap().is_some());
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_held_by_a_finalizer_is_reported_and_then_released() {
    let cluster = Cluster::start().await;
    cluster.namespace("held").await;
    let maps = cluster.configmaps("held");
    create_configmap(&maps, json!({"name": "plain"})).await;
    create_configmap(
        &maps,
        json!({"name": "held", "finalizers": ["krust.test/hold"]}),
    )
    .await;

    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    namespaces
        .delete("held", &DeleteParams::default())
        .await
        .unwrap();

    eventually("the namespace reports the remaining content", || async {
        let Some(namespace) = namespaces.get_opt("held").await.unwrap() else {
            return false;
        };
        let remaining = condition(&namespace, "NamespaceContentRemaining");
        let finalizers = condition(&namespace, "NamespaceFinalizersRemaining");
        remaining.is_some_and(|c| {
            c.status == "True"
                && c.reason.as_deref() == Some("SomeResourcesRemain")
                && c.message.as_deref()
                    == Some("Some resources are remaining: configmaps. has 1 resource instances")
        }) && finalizers.is_some_and(|c| {
            c.status == "True"
                && c.reason.as_deref() == Some("SomeFinalizersRemain")
                && c.message.as_deref()
                    == Some("Some content in the namespace has finalizers remaining: krust.test/hold in 1 resource instances")
        })
    })
    .await;
    let namespace = namespaces.get("held").await.unwrap();
    assert_eq!(
        namespace.status.as_ref().unwrap().phase.as_deref(),
        Some("Terminating")
    );
    for (condition_type, reason) in [
        ("NamespaceDeletionDiscoveryFailure", "ResourcesDiscovered"),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            "ParsedGroupVersions",
        ),
        ("NamespaceDeletionContentFailure", "ContentDeleted"),
    ] {
        let found = condition(&namespace, condition_type)
            .unwrap_or_else(|| panic!("no {condition_type} condition"));
        assert_eq!(found.status, "False", "{condition_type}");
        assert_eq!(found.reason.as_deref(), Some(reason), "{condition_type}");
    }
    assert!(is_gone(&maps, "plain").await);
    assert!(
        maps.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(
        namespace.spec.unwrap().finalizers.unwrap_or_default(),
        vec!["kubernetes".to_string()]
    );

    // The finalizer's owner lets go: the object, then the namespace, disappear.
    maps.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the namespace is gone", || async {
        namespaces.get_opt("held").await.unwrap().is_none()
    })
    .await;
    cluster.assert_controllers_running();
}
