//! The garbage collector against a real `krust server`: background, orphan and
//! foreground deletion, and dangling owner references.

mod common;

use common::{Cluster, create_configmap, eventually, is_gone, owner_reference};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletion_collects_dependents_of_a_deleted_owner() {
    let cluster = Cluster::start().await;
    cluster.namespace("bg").await;
    let maps = cluster.configmaps("bg");
    let owner = create_configmap(&maps, json!({"name": "owner"})).await;
    create_configmap(
        &maps,
        json!({"name": "dependent", "ownerReferences": [owner_reference(&owner, false)]}),
    )
    .await;
    // A dependent of another type, watched by another informer.
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "bg");
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "dependent-secret", "ownerReferences": [owner_reference(&owner, false)]},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    // A dependent of an owner that stays is left alone.
    let keeper = create_configmap(&maps, json!({"name": "keeper"})).await;
    create_configmap(
        &maps,
        json!({"name": "kept", "ownerReferences": [owner_reference(&keeper, false)]}),
    )
    .await;

    maps.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the owner is gone", || is_gone(&maps, "owner")).await;
    eventually("the dependent is collected", || is_gone(&maps, "dependent")).await;
    eventually("the dependent secret is collected", || async {
        secrets.get_opt("dependent-secret").await.unwrap().is_none()
    })
    .await;

    assert!(maps.get_opt("kept").await.unwrap().is_some());
    assert!(maps.get_opt("keeper").await.unwrap().is_some());
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_deletion_releases_dependents() {
    let cluster = Cluster::start().await;
    cluster.namespace("orphan").await;
    let maps = cluster.configmaps("orphan");
    let owner = create_configmap(&maps, json!({"name": "owner"})).await;
    let other = create_configmap(&maps, json!({"name": "other-owner"})).await;
    create_configmap(
        &maps,
        json!({"name": "dependent", "ownerReferences": [
            owner_reference(&owner, true),
            owner_reference(&other, false),
        ]}),
    )
    .await;
    create_configmap(
        &maps,
        json!({"name": "only-child", "ownerReferences": [owner_reference(&owner, false)]}),
    )
    .await;

    maps.delete("owner", &DeleteParams::orphan()).await.unwrap();
    eventually("the orphaned owner is gone", || is_gone(&maps, "owner")).await;

    let owner_uid = owner.metadata.uid.clone();
    let dependent = maps.get("dependent").await.unwrap();
    let references = dependent.metadata.owner_references.unwrap_or_default();
    assert!(
        references
            .iter()
            .all(|r| Some(&r.uid) != owner_uid.as_ref()),
        "the deleted owner's reference was not removed: {references:?}"
    );
    assert_eq!(references.len(), 1, "the other owner's reference stays");
    assert_eq!(references[0].uid, other.metadata.uid.clone().unwrap());
    let only_child = maps.get("only-child").await.unwrap();
    assert!(
        only_child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
    assert!(only_child.metadata.deletion_timestamp.is_none());
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = Cluster::start().await;
    cluster.namespace("fg").await;
    let maps = cluster.configmaps("fg");
    let owner = create_configmap(&maps, json!({"name": "owner"})).await;
    // A test finalizer keeps the blocking dependent around after it is deleted.
    create_configmap(
        &maps,
        json!({
            "name": "blocking",
            "finalizers": ["krust.test/hold"],
            "ownerReferences": [owner_reference(&owner, true)],
        }),
    )
    .await;
    create_configmap(
        &maps,
        json!({"name": "plain", "ownerReferences": [owner_reference(&owner, false)]}),
    )
    .await;

    maps.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the blocking dependent is being deleted", || async {
        maps.get("blocking")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    eventually("the non-blocking dependent is deleted too", || {
        is_gone(&maps, "plain")
    })
    .await;
    let waiting = maps.get("owner").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert!(
        waiting
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string())
    );

    // Once the blocking dependent goes, so does the owner.
    maps.patch(
        "blocking",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the blocking dependent is gone", || {
        is_gone(&maps, "blocking")
    })
    .await;
    eventually("the owner is gone", || is_gone(&maps, "owner")).await;
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_blocking_dependents_do_not_hold_a_foreground_owner() {
    let cluster = Cluster::start().await;
    cluster.namespace("fg-nb").await;
    let maps = cluster.configmaps("fg-nb");
    let owner = create_configmap(&maps, json!({"name": "owner"})).await;
    create_configmap(
        &maps,
        json!({
            "name": "lingering",
            "finalizers": ["krust.test/hold"],
            "ownerReferences": [owner_reference(&owner, false)],
        }),
    )
    .await;

    maps.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually("the owner is gone", || is_gone(&maps, "owner")).await;
    // The dependent was deleted, and waits only for its own finalizer.
    let lingering = maps.get("lingering").await.unwrap();
    assert!(lingering.metadata.deletion_timestamp.is_some());
    maps.patch(
        "lingering",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    eventually("the dependent is gone", || is_gone(&maps, "lingering")).await;
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_of_owners_that_never_existed_are_collected() {
    let cluster = Cluster::start().await;
    cluster.namespace("dangling").await;
    let maps = cluster.configmaps("dangling");
    create_configmap(
        &maps,
        json!({"name": "no-such-owner", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "ghost",
            "uid": "00000000-0000-0000-0000-000000000001",
        }]}),
    )
    .await;
    // The owner's name exists, but with another uid: still gone.
    create_configmap(&maps, json!({"name": "namesake"})).await;
    create_configmap(
        &maps,
        json!({"name": "wrong-uid", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "namesake",
            "uid": "00000000-0000-0000-0000-000000000002",
        }]}),
    )
    .await;
    // A cluster-scoped owner that never existed, referenced from a namespaced object.
    create_configmap(
        &maps,
        json!({"name": "no-such-namespace-owner", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Namespace", "name": "ghost-namespace",
            "uid": "00000000-0000-0000-0000-000000000003",
        }]}),
    )
    .await;

    eventually("the dependent of a missing owner is collected", || {
        is_gone(&maps, "no-such-owner")
    })
    .await;
    eventually(
        "the dependent of an owner with another uid is collected",
        || is_gone(&maps, "wrong-uid"),
    )
    .await;
    eventually(
        "the dependent of a missing cluster-scoped owner is collected",
        || is_gone(&maps, "no-such-namespace-owner"),
    )
    .await;
    assert!(maps.get_opt("namesake").await.unwrap().is_some());
    cluster.assert_controllers_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_cascade_flags_work_end_to_end() {
    let cluster = Cluster::start().await;
    cluster.namespace("kubectl").await;
    let maps = cluster.configmaps("kubectl");
    let owner = create_configmap(&maps, json!({"name": "owner"})).await;
    create_configmap(
        &maps,
        json!({"name": "dependent", "ownerReferences": [owner_reference(&owner, true)]}),
    )
    .await;
    let server = &cluster.server;
    let output = tokio::task::block_in_place(|| {
        server.kubectl([
            "-n",
            "kubectl",
            "delete",
            "configmap",
            "owner",
            "--cascade=foreground",
            "--wait=true",
            "--timeout=30s",
        ])
    });
    assert!(
        output.status.success(),
        "kubectl delete failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eventually("the dependent is gone", || is_gone(&maps, "dependent")).await;
    assert!(is_gone(&maps, "owner").await);
    cluster.assert_controllers_running();
}
