//! The DaemonSet controller in a real `krust server` with hollow nodes: pods follow
//! the nodes (node selectors, taints and tolerations, nodes that come, go and change
//! labels), carry their node affinity and default tolerations, and roll to a new
//! template with maxUnavailable or maxSurge (checked with `kubectl rollout status`).

mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use workloads::{Cluster, DEADLINE, merge_patch, phase, wait_event, wait_for};

fn daemon_set(name: &str, pod_spec: Value, strategy: Value) -> DaemonSet {
    let mut spec = pod_spec;
    spec["containers"] = json!([{"name": "main", "image": "agent:1"}]);
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
            "updateStrategy": strategy,
        },
    }))
    .unwrap()
}

/// Node name -> image of the running, bound pods of the DaemonSet `app`.
async fn placed(pods: &Api<Pod>, app: &str) -> BTreeMap<String, String> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && phase(p) == "Running")
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            Some((
                spec.node_name.clone()?,
                spec.containers[0].image.clone().unwrap_or_default(),
            ))
        })
        .collect()
}

async fn on_nodes(pods: &Api<Pod>, app: &str) -> Vec<String> {
    placed(pods, app).await.into_keys().collect()
}

async fn wait_nodes(pods: &Api<Pod>, app: &str, expected: &[&str]) {
    wait_for(&format!("{app} runs on {expected:?}"), DEADLINE, || async {
        on_nodes(pods, app).await == expected
    })
    .await;
}

async fn label_node(nodes: &Api<Node>, name: &str, value: Value) {
    let patch = json!({"metadata": {"labels": {"role": value}}});
    merge_patch(nodes, name, patch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_pods_follow_the_nodes() {
    let templates = vec![
        NodeTemplate::new("ds-a").label("role", "worker"),
        NodeTemplate::new("ds-b")
            .label("role", "worker")
            .taint("dedicated", "gpu", "NoSchedule"),
        NodeTemplate::new("ds-c"),
    ];
    let cluster = Cluster::start(templates).await;
    cluster.namespace("daemons").await;
    let sets: Api<DaemonSet> = cluster.api("daemons");
    let pods: Api<Pod> = cluster.api("daemons");
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    let params = PostParams::default();
    let rolling = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}});
    sets.create(
        &params,
        &daemon_set(
            "agent",
            json!({"nodeSelector": {"role": "worker"}}),
            rolling.clone(),
        ),
    )
    .await
    .unwrap();
    let tolerant = json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]});
    sets.create(&params, &daemon_set("everywhere", tolerant, rolling))
        .await
        .unwrap();

    // The selector and the untolerated taint leave one node for `agent`.
    wait_nodes(&pods, "agent", &["ds-a"]).await;
    wait_nodes(&pods, "everywhere", &["ds-a", "ds-b", "ds-c"]).await;
    wait_for("agent's status counts its pod", DEADLINE, || async {
        let status = sets.get("agent").await.unwrap().status.unwrap_or_default();
        (
            status.desired_number_scheduled,
            status.current_number_scheduled,
            status.number_ready,
        ) == (1, 1, 1)
            && status.number_available == Some(1)
    })
    .await;
    let pod = &pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items[0];
    let spec = pod.spec.as_ref().unwrap();
    let affinity = serde_json::to_value(spec.affinity.as_ref().unwrap()).unwrap();
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchFields"][0],
        json!({"key": "metadata.name", "operator": "In", "values": ["ds-a"]})
    );
    let tolerated: Vec<&str> = spec
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
        "node.kubernetes.io/unschedulable",
    ] {
        assert!(tolerated.contains(&key), "{key} in {tolerated:?}");
    }
    assert!(pod.labels().contains_key("controller-revision-hash"));
    assert_eq!(pod.labels()["pod-template-generation"], "1");

    // A failed daemon pod is replaced on its node.
    let failed_name = pod.name_any();
    let failed = json!({"status": {"phase": "Failed"}});
    pods.patch_status(
        &failed_name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&failed),
    )
    .await
    .unwrap();
    wait_for("the failed pod is replaced", DEADLINE, || async {
        let listed = pods
            .list(&ListParams::default().labels("app=agent"))
            .await
            .unwrap()
            .items;
        listed.iter().all(|p| p.name_any() != failed_name)
            && listed.iter().any(|p| {
                phase(p) == "Running"
                    && p.spec.as_ref().unwrap().node_name.as_deref() == Some("ds-a")
            })
    })
    .await;
    wait_event(&cluster.client, "daemons", "agent", "FailedDaemonPod").await;

    // A node that starts matching gets a pod; a new node gets pods.
    label_node(&nodes, "ds-c", json!("worker")).await;
    wait_nodes(&pods, "agent", &["ds-a", "ds-c"]).await;
    let options = HollowOptions {
        bind_pending: true,
        ..Default::default()
    };
    let _late = HollowNodes::start(
        cluster.client.clone(),
        vec![NodeTemplate::new("ds-d").label("role", "worker")],
        options,
    )
    .await;
    wait_nodes(&pods, "agent", &["ds-a", "ds-c", "ds-d"]).await;
    wait_nodes(&pods, "everywhere", &["ds-a", "ds-b", "ds-c", "ds-d"]).await;

    // A removed node loses its pods; a node that stops matching loses agent's.
    nodes
        .delete("ds-a", &DeleteParams::default())
        .await
        .unwrap();
    label_node(&nodes, "ds-c", Value::Null).await;
    wait_nodes(&pods, "agent", &["ds-d"]).await;
    wait_nodes(&pods, "everywhere", &["ds-b", "ds-c", "ds-d"]).await;
    wait_event(&cluster.client, "daemons", "agent", "SuccessfulCreate").await;
    wait_event(&cluster.client, "daemons", "agent", "SuccessfulDelete").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_sets_roll_out_with_max_unavailable_or_max_surge() {
    let templates = (0..3)
        .map(|i| NodeTemplate::new(format!("ds-roll-{i}")))
        .collect();
    let cluster = Cluster::start(templates).await;
    cluster.namespace("roll").await;
    let sets: Api<DaemonSet> = cluster.api("roll");
    let pods: Api<Pod> = cluster.api("roll");
    let params = PostParams::default();
    let unavailable = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}});
    let surge =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}});
    sets.create(&params, &daemon_set("replace", json!({}), unavailable))
        .await
        .unwrap();
    sets.create(&params, &daemon_set("surge", json!({}), surge))
        .await
        .unwrap();
    let all = ["ds-roll-0", "ds-roll-1", "ds-roll-2"];
    wait_nodes(&pods, "replace", &all).await;
    wait_nodes(&pods, "surge", &all).await;

    let image = json!({"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "agent:2"}]}}}});
    for name in ["replace", "surge"] {
        merge_patch(&sets, name, image.clone()).await;
    }
    for name in ["replace", "surge"] {
        let kubeconfig = cluster.server.kubeconfig_path();
        let target = format!("daemonset/{name}");
        let rollout = tokio::task::spawn_blocking(move || {
            std::process::Command::new(krust_e2e::kubectl_bin())
                .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
                .args(["rollout", "status", &target, "-n", "roll", "--timeout=30s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(
            rollout.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&rollout.stderr)
        );
        wait_for(
            &format!("{name} runs the new image everywhere"),
            DEADLINE,
            || async {
                let placed = placed(&pods, name).await;
                placed.len() == 3 && placed.values().all(|image| image == "agent:2")
            },
        )
        .await;
        let status = sets.get(name).await.unwrap().status.unwrap();
        assert_eq!(status.updated_number_scheduled, Some(3), "{name}");
        assert_eq!(status.number_available, Some(3), "{name}");
    }
    // One pod per node at the end, the old ones gone.
    let listed = pods.list(&ListParams::default()).await.unwrap().items;
    let live = listed
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(live, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_restarts_only_the_pods_that_were_updated() {
    let templates = (0..3)
        .map(|i| NodeTemplate::new(format!("ds-back-{i}")))
        .collect();
    let cluster = Cluster::start(templates).await;
    cluster.namespace("back").await;
    let sets: Api<DaemonSet> = cluster.api("back");
    let pods: Api<Pod> = cluster.api("back");
    let strategy = json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}});
    sets.create(
        &PostParams::default(),
        &daemon_set("steady", json!({}), strategy),
    )
    .await
    .unwrap();
    wait_nodes(&pods, "steady", &["ds-back-0", "ds-back-1", "ds-back-2"]).await;
    let uids = || async {
        let mut uids: Vec<String> = pods
            .list(&ListParams::default().labels("app=steady"))
            .await
            .unwrap()
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.uid())
            .collect();
        uids.sort();
        uids
    };
    let before = uids().await;

    // A template whose pods never get ready: the update stops after one node.
    let broken = json!({"spec": {"template": {
        "metadata": {"annotations": {krust_e2e::hollow::READY_ANNOTATION: "false"}},
        "spec": {"containers": [{"name": "main", "image": "agent:bad"}]},
    }}});
    merge_patch(&sets, "steady", broken).await;
    wait_for("one pod runs the broken template", DEADLINE, || async {
        let placed = placed(&pods, "steady").await;
        placed.len() == 3
            && placed
                .values()
                .filter(|image| *image == "agent:bad")
                .count()
                == 1
    })
    .await;
    let during = uids().await;
    let kept: Vec<&String> = before.iter().filter(|uid| during.contains(uid)).collect();
    assert_eq!(
        kept.len(),
        2,
        "maxUnavailable 1 stops the rollout at one unready pod"
    );

    // Back to the first template: the two untouched pods keep running.
    let back = json!({"spec": {"template": {
        "metadata": {"annotations": null},
        "spec": {"containers": [{"name": "main", "image": "agent:1"}]},
    }}});
    merge_patch(&sets, "steady", back).await;
    wait_for(
        "every pod runs the first template again",
        DEADLINE,
        || async {
            let placed = placed(&pods, "steady").await;
            placed.len() == 3 && placed.values().all(|image| image == "agent:1")
        },
    )
    .await;
    let after = uids().await;
    for uid in kept {
        assert!(
            after.contains(uid),
            "pod {uid} was restarted by the rollback"
        );
    }
}
