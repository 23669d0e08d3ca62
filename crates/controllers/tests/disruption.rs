//! PodDisruptionBudgets against a real `krust server` with hollow nodes: the
//! disruption controller's status (healthy, desired and expected pods, allowed
//! disruptions, the DisruptionAllowed condition) and the `pods/eviction` subresource
//! that spends it, through kube-rs and the real kubectl.

mod workload_common;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams};
use serde_json::{Value, json};
use workload_common::{Workloads, eventually, template, wait_for};

fn deployment(name: &str, replicas: i32) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template(json!({"app": name}), "busybox:1"),
        },
    })
}

fn budget(name: &str, app: &str, rule: Value) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    spec.as_object_mut()
        .unwrap()
        .extend(rule.as_object().unwrap().clone());
    json!({"metadata": {"name": name}, "spec": spec})
}

/// The budget's status once it reports `(currentHealthy, desiredHealthy,
/// expectedPods, disruptionsAllowed)` for its current generation.
async fn wait_status(
    cluster: &Workloads,
    name: &str,
    want: (i32, i32, i32, i32),
) -> PodDisruptionBudget {
    let api = cluster.api::<PodDisruptionBudget>();
    wait_for(&format!("{name} to report {want:?}"), || async {
        let budget = api.get(name).await.ok()?;
        let status = budget.status.clone()?;
        let seen = (
            status.current_healthy,
            status.desired_healthy,
            status.expected_pods,
            status.disruptions_allowed,
        );
        (seen == want && status.observed_generation == budget.metadata.generation).then_some(budget)
    })
    .await
}

async fn running_pods(cluster: &Workloads, app: &str) -> Vec<Pod> {
    cluster.active_pods(&format!("app={app}")).await
}

/// Pods of the test namespace through a client that does not retry 429 answers
/// (kube-rs's default retries them for minutes; a refused eviction is a 429).
async fn pods_without_retries(cluster: &Workloads) -> Api<Pod> {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.server.kubeconfig_path()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    Api::namespaced(kube::Client::try_from(config).unwrap(), &cluster.namespace)
}

fn condition(budget: &PodDisruptionBudget) -> (String, String) {
    let condition = &budget.status.as_ref().unwrap().conditions.as_ref().unwrap()[0];
    assert_eq!(condition.type_, "DisruptionAllowed");
    (condition.status.clone(), condition.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_is_blocked_until_the_budget_allows_it() {
    let cluster = Workloads::start("pdb-block", 2).await;
    let _: k8s_openapi::api::apps::v1::Deployment = cluster.create(deployment("web", 3)).await;
    let _: PodDisruptionBudget = cluster
        .create(budget("web", "web", json!({"minAvailable": 3})))
        .await;
    let blocked = wait_status(&cluster, "web", (3, 3, 3, 0)).await;
    assert_eq!(
        condition(&blocked),
        ("False".into(), "InsufficientPods".into())
    );

    let pods = pods_without_retries(&cluster).await;
    let victim = running_pods(&cluster, "web").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    match pods.evict(&victim, &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 429, "{status:?}");
            assert!(
                status
                    .message
                    .contains("would violate the pod's disruption budget"),
                "{status:?}"
            );
        }
        other => panic!("the eviction should be refused, got {other:?}"),
    }
    let still_there = pods.get(&victim).await.unwrap();
    assert!(
        still_there.metadata.deletion_timestamp.is_none(),
        "a refused eviction changes nothing"
    );

    cluster
        .patch::<PodDisruptionBudget>("web", json!({"spec": {"minAvailable": 2}}))
        .await;
    let allowing = wait_status(&cluster, "web", (3, 2, 3, 1)).await;
    assert_eq!(
        condition(&allowing),
        ("True".into(), "SufficientPods".into())
    );
    pods.evict(&victim, &EvictParams::default()).await.unwrap();
    let evicted = pods.get_opt(&victim).await.unwrap();
    if let Some(evicted) = evicted {
        assert!(evicted.metadata.deletion_timestamp.is_some());
        let conditions = evicted.status.unwrap().conditions.unwrap_or_default();
        assert!(
            conditions.iter().any(|c| c.type_ == "DisruptionTarget"
                && c.reason.as_deref() == Some("EvictionByEvictionAPI")),
            "{conditions:?}"
        );
    }
    // The Deployment replaces the pod and the budget recovers.
    wait_status(&cluster, "web", (3, 2, 3, 1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percentages_and_max_unavailable_use_the_controllers_scale() {
    let cluster = Workloads::start("pdb-scale", 2).await;
    let _: k8s_openapi::api::apps::v1::Deployment = cluster.create(deployment("api", 4)).await;
    let _: PodDisruptionBudget = cluster
        .create(budget("half", "api", json!({"maxUnavailable": "50%"})))
        .await;
    // 50% of 4 rounds up to 2 unavailable: 2 must stay healthy.
    wait_status(&cluster, "half", (4, 2, 4, 2)).await;
    cluster
        .patch::<PodDisruptionBudget>(
            "half",
            json!({"spec": {"maxUnavailable": null, "minAvailable": "30%"}}),
        )
        .await;
    // 30% of 4 rounds up to 2.
    wait_status(&cluster, "half", (4, 2, 4, 2)).await;

    // A bare pod has no controller to take a scale from: no disruption is allowed.
    let _: Pod = cluster
        .create(json!({
            "metadata": {"name": "bare", "labels": {"app": "bare"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]},
        }))
        .await;
    let _: PodDisruptionBudget = cluster
        .create(budget("bare", "bare", json!({"maxUnavailable": 1})))
        .await;
    let api = cluster.api::<PodDisruptionBudget>();
    let failed = wait_for("the bare budget to fail safe", || async {
        let budget = api.get("bare").await.ok()?;
        let (status, reason) = budget
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .first()
            .map(|c| (c.status.clone(), c.reason.clone()))?;
        (reason == "SyncFailed").then_some((status, budget))
    })
    .await;
    assert_eq!(failed.0, "False");
    assert_eq!(failed.1.status.unwrap().disruptions_allowed, 0);

    // kubectl shows the budgets with upstream's columns.
    let table = cluster.kubectl(&["get", "pdb", "half"]);
    assert!(
        table.contains("MIN AVAILABLE") && table.contains("ALLOWED DISRUPTIONS"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_evictions_get_clear_errors_and_change_nothing() {
    let cluster = Workloads::start("pdb-bad", 1).await;
    let _: k8s_openapi::api::apps::v1::Deployment = cluster.create(deployment("db", 2)).await;
    for name in ["one", "two"] {
        let _: PodDisruptionBudget = cluster
            .create(budget(name, "db", json!({"minAvailable": 1})))
            .await;
        wait_status(&cluster, name, (2, 1, 2, 1)).await;
    }
    let pods = pods_without_retries(&cluster).await;
    let victim = running_pods(&cluster, "db").await[0]
        .metadata
        .name
        .clone()
        .unwrap();
    match pods.evict(&victim, &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 500, "{status:?}");
            assert!(
                status.message.contains("more than one PodDisruptionBudget"),
                "{status:?}"
            );
        }
        other => panic!("two budgets should refuse the eviction, got {other:?}"),
    }
    // An Eviction naming another pod than the URL is a bad request.
    let body = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "someone-else"}});
    let path = format!(
        "/api/v1/namespaces/{}/pods/{victim}/eviction",
        cluster.namespace
    );
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    match cluster.client.request::<Value>(request).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 400, "{status:?}"),
        other => panic!("a mismatched name should be refused, got {other:?}"),
    }
    // Nothing was spent: both budgets still allow their disruption and the pod runs.
    for name in ["one", "two"] {
        wait_status(&cluster, name, (2, 1, 2, 1)).await;
    }
    let pod = pods.get(&victim).await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none());
    eventually("the pod to be evictable once one budget goes", || async {
        let _ = cluster
            .api::<PodDisruptionBudget>()
            .delete("two", &Default::default())
            .await;
        pods.evict(&victim, &EvictParams::default()).await.is_ok()
    })
    .await;
}
