//! The Deployment controller against a real `krust server` with hollow nodes,
//! driven by kube-rs and the real kubectl: rolling updates watched to stay within
//! maxSurge/maxUnavailable, Recreate, `kubectl rollout status/history/undo/pause/
//! resume/restart`, proportional scaling, the progress deadline and revision
//! history limits.

mod workload_common;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use krust_e2e::hollow::READY_ANNOTATION;
use kube::ResourceExt;
use serde_json::{Value, json};
use workload_common::{PodCensus, Workloads, eventually, is_complete, template, wait_for};

fn deployment(name: &str, replicas: i32, strategy: Value) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "template": template(json!({"app": name}), "busybox:1"),
        },
    })
}

fn revision(rs: &ReplicaSet) -> Option<&str> {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .map(String::as_str)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn image(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .image
        .clone()
        .unwrap()
}

/// Runs a blocking kubectl call without stalling the test's other tasks.
fn kubectl(cluster: &Workloads, args: &[&str]) -> String {
    tokio::task::block_in_place(|| cluster.kubectl(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_stays_within_surge_and_unavailability_and_rolls_back() {
    let cluster = Workloads::start("deploy-rolling", 3).await;
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    cluster
        .create::<Deployment>(deployment("web", 4, strategy))
        .await;
    cluster.wait_complete("web").await;
    let out = kubectl(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let sets = cluster.replica_sets().await;
    assert_eq!(sets.len(), 1);
    let first = sets[0].clone();
    assert_eq!(revision(&first), Some("1"));
    let hash = first.labels()["pod-template-hash"].clone();
    assert_eq!(first.name_any(), format!("web-{hash}"));
    let pods = cluster
        .active_pods(&format!("app=web,pod-template-hash={hash}"))
        .await;
    assert_eq!(pods.len(), 4);

    // Roll out a new image while a watch counts the pods at every step.
    let census = PodCensus::start(cluster.api::<Pod>()).await;
    kubectl(
        &cluster,
        &["set", "image", "deployment/web", "app=busybox:2"],
    );
    let out = kubectl(
        &cluster,
        &["rollout", "status", "deployment/web", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    let rolled = cluster.wait_complete("web").await;
    assert_eq!(image(&rolled), "busybox:2");
    eventually("only the new pods are left", || async {
        let pods = cluster.active_pods("app=web").await;
        pods.len() == 4 && pods.iter().all(|p| p.labels()["pod-template-hash"] != hash)
    })
    .await;
    let seen = census.census();
    assert!(seen.events > 0);
    assert!(
        seen.max_active <= 5,
        "more than replicas + maxSurge pods: {seen:?}"
    );
    assert!(
        seen.min_ready >= 3,
        "fewer than replicas - maxUnavailable ready: {seen:?}"
    );
    assert_eq!(
        seen.max_templates, 2,
        "old and new ran side by side: {seen:?}"
    );
    drop(census);

    let sets = cluster.replica_sets().await;
    assert_eq!(sets.len(), 2);
    assert_eq!(replicas(&sets[0]), 0);
    assert_eq!((replicas(&sets[1]), revision(&sets[1])), (4, Some("2")));
    cluster.wait_for_event("web", "ScalingReplicaSet").await;
    let history = kubectl(&cluster, &["rollout", "history", "deployment/web"]);
    assert!(
        history.contains("\n1 ") && history.contains("\n2 "),
        "{history}"
    );
    let one = kubectl(
        &cluster,
        &["rollout", "history", "deployment/web", "--revision=1"],
    );
    assert!(one.contains("busybox:1"), "{one}");

    // Undo: the first ReplicaSet comes back as revision 3.
    let out = kubectl(&cluster, &["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let undone = wait_for("the undo completes", || async {
        let d = cluster.api::<Deployment>().get("web").await.unwrap();
        (is_complete(&d) && image(&d) == "busybox:1").then_some(d)
    })
    .await;
    assert_eq!(
        undone
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    let back = cluster
        .api::<ReplicaSet>()
        .get(&first.name_any())
        .await
        .unwrap();
    assert_eq!((replicas(&back), revision(&back)), (4, Some("3")));
    assert_eq!(
        back.annotations()
            .get("deployment.kubernetes.io/revision-history")
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        cluster.replica_sets().await.len(),
        2,
        "no new ReplicaSet for an old template"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_pod_before_starting_new_ones_and_history_is_limited() {
    let cluster = Workloads::start("deploy-recreate", 2).await;
    let mut object = deployment("batch", 3, json!({"type": "Recreate"}));
    object["spec"]["revisionHistoryLimit"] = json!(1);
    cluster.create::<Deployment>(object).await;
    cluster.wait_complete("batch").await;
    let census = PodCensus::start(cluster.api::<Pod>()).await;
    for (round, image) in ["busybox:2", "busybox:3"].into_iter().enumerate() {
        kubectl(
            &cluster,
            &["set", "image", "deployment/batch", &format!("app={image}")],
        );
        wait_for(&format!("rollout {round} completes"), || async {
            let d = cluster.api::<Deployment>().get("batch").await.unwrap();
            (is_complete(&d) && self::image(&d) == image).then_some(())
        })
        .await;
    }
    let seen = census.census();
    assert!(seen.events > 0);
    assert_eq!(
        seen.max_templates, 1,
        "old and new pods ran at once: {seen:?}"
    );
    assert!(seen.max_active <= 3, "{seen:?}");
    // Three revisions, one old one kept.
    eventually("only one old ReplicaSet is kept", || async {
        cluster.replica_sets().await.len() == 2
    })
    .await;
    let sets = cluster.replica_sets().await;
    let revisions: Vec<Option<&str>> = sets.iter().map(revision).collect();
    assert_eq!(revisions, [Some("2"), Some("3")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_pause_resume_and_restart() {
    let cluster = Workloads::start("deploy-pause", 2).await;
    cluster
        .create::<Deployment>(deployment("api", 2, json!({})))
        .await;
    cluster.wait_complete("api").await;

    kubectl(&cluster, &["rollout", "pause", "deployment/api"]);
    kubectl(
        &cluster,
        &["set", "image", "deployment/api", "app=busybox:2"],
    );
    // Once the controller has seen the change, a rollout would have made a new
    // ReplicaSet already (it does so before it writes the status).
    wait_for("the paused change is observed", || async {
        let d = cluster.api::<Deployment>().get("api").await.unwrap();
        let status = d.status.clone().unwrap_or_default();
        let paused =
            status.conditions.unwrap_or_default().iter().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("DeploymentPaused")
            });
        (paused && status.observed_generation == d.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(
        cluster.replica_sets().await.len(),
        1,
        "a paused Deployment rolled out"
    );

    kubectl(&cluster, &["rollout", "resume", "deployment/api"]);
    let out = kubectl(
        &cluster,
        &["rollout", "status", "deployment/api", "--timeout=60s"],
    );
    assert!(out.contains("successfully rolled out"), "{out}");
    eventually("the resumed rollout makes a second ReplicaSet", || async {
        cluster.replica_sets().await.len() == 2
    })
    .await;

    kubectl(&cluster, &["rollout", "restart", "deployment/api"]);
    let restarted = wait_for("the restart rolls out", || async {
        let d = cluster.api::<Deployment>().get("api").await.unwrap();
        let marked = d
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .is_some_and(|a| a.contains_key("kubectl.kubernetes.io/restartedAt"));
        (marked && is_complete(&d)).then_some(d)
    })
    .await;
    assert_eq!(
        restarted
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("3")
    );
    let sets = cluster.replica_sets().await;
    assert_eq!(sets.len(), 3);
    assert_eq!(sets.iter().map(replicas).collect::<Vec<_>>(), [0, 0, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_stuck_rollout_is_proportional_and_the_deadline_is_reported() {
    let cluster = Workloads::start("deploy-scale", 3).await;
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}});
    let mut object = deployment("wide", 10, strategy);
    object["spec"]["progressDeadlineSeconds"] = json!(2);
    cluster.create::<Deployment>(object).await;
    cluster.wait_complete("wide").await;

    // New pods never get ready: the rollout stops at 8 old + 5 new.
    let broken = json!({"spec": {"template": {
        "metadata": {"annotations": {READY_ANNOTATION: "false"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:broken"}]},
    }}});
    cluster.patch::<Deployment>("wide", broken).await;
    let sizes = || async {
        let sets = cluster.replica_sets().await;
        sets.iter().map(replicas).collect::<Vec<_>>()
    };
    eventually("the rollout is stuck at 8 old and 5 new", || async {
        sizes().await == [8, 5]
    })
    .await;
    let timed_out = wait_for("the progress deadline is exceeded", || async {
        let d = cluster.api::<Deployment>().get("wide").await.unwrap();
        let conditions = d.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions.into_iter().find(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        })
    })
    .await;
    assert_eq!(timed_out.status, "False");
    let output = tokio::task::block_in_place(|| {
        cluster.kubectl_output(&["rollout", "status", "deployment/wide", "--timeout=30s"])
    });
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("exceeded its progress deadline"),
        "{stderr}"
    );

    // 13 -> 23 replicas allowed: the 10 more are shared 6 old, 4 new (8/13 and 5/13).
    kubectl(&cluster, &["scale", "deployment/wide", "--replicas=20"]);
    eventually("both ReplicaSets grow in proportion", || async {
        sizes().await == [14, 9]
    })
    .await;
    let sets = cluster.replica_sets().await;
    for rs in &sets {
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/desired-replicas"],
            "20"
        );
        assert_eq!(
            rs.annotations()["deployment.kubernetes.io/max-replicas"],
            "23"
        );
    }
    eventually("the pods follow", || async {
        cluster.active_pods("app=wide").await.len() == 23
    })
    .await;
}
