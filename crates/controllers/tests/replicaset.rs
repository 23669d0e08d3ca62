//! The ReplicaSet and ReplicationController controllers against a real `krust
//! server` with hollow nodes: exact counts, self-healing, scale-down choosing
//! not-ready pods, adoption and release, status and events.

mod workload_common;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ReplicationController};
use krust_e2e::hollow::READY_ANNOTATION;
use kube::ResourceExt;
use kube::api::DeleteParams;
use serde_json::json;
use workload_common::{Workloads, eventually, is_ready, template, wait_for};

fn replica_set(name: &str, replicas: i32) -> serde_json::Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(json!({"app": name}), "busybox:1"),
        },
    })
}

async fn wait_ready(cluster: &Workloads, name: &str, replicas: i32) -> ReplicaSet {
    let api = cluster.api::<ReplicaSet>();
    wait_for(&format!("{name} has {replicas} ready replicas"), || async {
        let rs = api.get(name).await.unwrap();
        let status = rs.status.clone().unwrap_or_default();
        let done = status.replicas == replicas
            && status.ready_replicas == Some(replicas)
            && status.available_replicas == Some(replicas)
            && status.fully_labeled_replicas == Some(replicas)
            && status.observed_generation == rs.metadata.generation;
        done.then_some(rs)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_keeps_exactly_its_replicas_and_heals() {
    let cluster = Workloads::start("rs-heal", 3).await;
    cluster.create::<ReplicaSet>(replica_set("web", 3)).await;
    wait_ready(&cluster, "web", 3).await;
    let pods = cluster.active_pods("app=web").await;
    assert_eq!(pods.len(), 3, "exactly the replicas, no extra pod");
    for pod in &pods {
        assert!(pod.name_any().starts_with("web-"));
        let owner = &pod.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
    }
    cluster.wait_for_event("web", "SuccessfulCreate").await;

    // A deleted pod is replaced.
    let victim = pods[0].name_any();
    cluster
        .api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted pod is replaced", || async {
        let pods = cluster.active_pods("app=web").await;
        pods.len() == 3 && pods.iter().all(|p| p.name_any() != victim && is_ready(p))
    })
    .await;

    // Scaling down deletes the not-ready pod first.
    let pods = cluster.active_pods("app=web").await;
    let unready = pods[1].name_any();
    let patch = json!({"metadata": {"annotations": {READY_ANNOTATION: "false"}}});
    cluster.patch::<Pod>(&unready, patch).await;
    eventually("the pod turns not ready", || async {
        !is_ready(&cluster.api::<Pod>().get(&unready).await.unwrap())
    })
    .await;
    let scale = json!({"spec": {"replicas": 2}});
    cluster.patch::<ReplicaSet>("web", scale).await;
    wait_ready(&cluster, "web", 2).await;
    let left: Vec<String> = cluster
        .active_pods("app=web")
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(left.len(), 2);
    assert!(
        !left.contains(&unready),
        "the not-ready pod {unready} went first, left {left:?}"
    );
    cluster.wait_for_event("web", "SuccessfulDelete").await;

    // To zero and back.
    let scale = json!({"spec": {"replicas": 0}});
    cluster.patch::<ReplicaSet>("web", scale).await;
    eventually("no pod is left", || async {
        cluster.active_pods("app=web").await.is_empty()
    })
    .await;
    let scale = json!({"spec": {"replicas": 5}});
    cluster.patch::<ReplicaSet>("web", scale).await;
    wait_ready(&cluster, "web", 5).await;
    assert_eq!(cluster.active_pods("app=web").await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_adopts_matching_orphans_and_releases_pods_it_no_longer_selects() {
    let cluster = Workloads::start("rs-adopt", 2).await;
    let orphan: Pod = cluster
        .create(json!({
            "metadata": {"name": "orphan", "labels": {"app": "db"}},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
        }))
        .await;
    // Ready (and oldest) before the ReplicaSet exists: should the controller see its own
    // new pods before the orphan and count one too many, upstream's ranking deletes a
    // new, less ready pod, never the orphan.
    let pods = cluster.api::<Pod>();
    eventually("the orphan is ready", || async {
        is_ready(&pods.get("orphan").await.unwrap())
    })
    .await;
    // A pod another controller owns is not taken.
    let other: ConfigMap = cluster.create(json!({"metadata": {"name": "other"}})).await;
    let foreign: Pod = cluster
        .create(json!({
            "metadata": {"name": "foreign", "labels": {"app": "db"}, "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": other.metadata.uid, "controller": true,
            }]},
            "spec": {"containers": [{"name": "app", "image": "busybox:1"}]},
        }))
        .await;
    let rs: ReplicaSet = cluster.create(replica_set("db", 2)).await;
    wait_ready(&cluster, "db", 2).await;
    let adopted = cluster.api::<Pod>().get(&orphan.name_any()).await.unwrap();
    let owner = adopted
        .owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .unwrap();
    assert_eq!(
        Some(&owner.uid),
        rs.metadata.uid.as_ref(),
        "the orphan was adopted"
    );
    let owned: Vec<Pod> = cluster
        .active_pods("app=db")
        .await
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|r| Some(&r.uid) == rs.metadata.uid.as_ref())
        })
        .collect();
    assert_eq!(owned.len(), 2, "one created, one adopted");
    let foreign = cluster.api::<Pod>().get(&foreign.name_any()).await.unwrap();
    assert_eq!(
        Some(&foreign.owner_references()[0].uid),
        other.metadata.uid.as_ref()
    );

    // Relabelled out of the selector: released and replaced.
    let released = orphan.name_any();
    let relabel = json!({"metadata": {"labels": {"app": "elsewhere"}}});
    cluster.patch::<Pod>(&released, relabel).await;
    eventually("the relabelled pod is released", || async {
        let pod = cluster.api::<Pod>().get(&released).await.unwrap();
        pod.owner_references().is_empty()
    })
    .await;
    eventually("a replacement runs", || async {
        let owned: Vec<Pod> = cluster
            .active_pods("app=db")
            .await
            .into_iter()
            .filter(|p| p.name_any() != "foreign")
            .collect();
        owned.len() == 2 && owned.iter().all(is_ready)
    })
    .await;
    wait_ready(&cluster, "db", 2).await;
    assert_eq!(cluster.active_pods("app=elsewhere").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_controller_keeps_its_replicas_and_heals() {
    let cluster = Workloads::start("rc-heal", 2).await;
    cluster
        .create::<ReplicationController>(json!({
            "metadata": {"name": "legacy"},
            "spec": {"replicas": 2, "selector": {"app": "legacy"},
                     "template": template(json!({"app": "legacy"}), "busybox:1")},
        }))
        .await;
    let api = cluster.api::<ReplicationController>();
    let ready = || async {
        let rc = api.get("legacy").await.unwrap();
        let status = rc.status.unwrap_or_default();
        status.replicas == 2
            && status.ready_replicas == Some(2)
            && status.available_replicas == Some(2)
    };
    eventually("the RC has two ready replicas", ready).await;
    let pods = cluster.active_pods("app=legacy").await;
    assert_eq!(pods.len(), 2);
    assert_eq!(pods[0].owner_references()[0].kind, "ReplicationController");
    let victim = pods[0].name_any();
    cluster
        .api::<Pod>()
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();
    eventually("the RC replaces the deleted pod", || async {
        let pods = cluster.active_pods("app=legacy").await;
        pods.len() == 2 && pods.iter().all(|p| p.name_any() != victim)
    })
    .await;
    // kubectl scale goes through the scale subresource.
    cluster.kubectl(&["scale", "rc/legacy", "--replicas=1"]);
    eventually("the RC scales down", || async {
        cluster.active_pods("app=legacy").await.len() == 1
    })
    .await;
    cluster.wait_for_event("legacy", "SuccessfulDelete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_ready_seconds_holds_availability_back_until_it_passes() {
    let cluster = Workloads::start("rs-min-ready", 2).await;
    let mut object = replica_set("slow", 2);
    object["spec"]["minReadySeconds"] = json!(3600);
    cluster.create::<ReplicaSet>(object).await;
    let api = cluster.api::<ReplicaSet>();
    let status = wait_for("both pods are ready", || async {
        let status = api.get("slow").await.unwrap().status.unwrap_or_default();
        (status.ready_replicas == Some(2)).then_some(status)
    })
    .await;
    assert_eq!(
        status.available_replicas.unwrap_or(0),
        0,
        "available before minReadySeconds"
    );
    // One second: the controller looks again by itself once it has passed.
    cluster
        .patch::<ReplicaSet>("slow", json!({"spec": {"minReadySeconds": 1}}))
        .await;
    wait_ready(&cluster, "slow", 2).await;
}
