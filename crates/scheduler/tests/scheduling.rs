//! The scheduler inside a real `krust server`, against hollow nodes: placement by each
//! filter, the FailedScheduling explanation, a pod that fits once a node is added,
//! pods of other schedulers left alone, spreading and affinity, and preemption.

mod common;

use std::collections::BTreeMap;

use common::{Cluster, wait_for};
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use kube::api::{Api, PostParams};
use serde_json::json;

fn node(name: &str, cpu: &str) -> NodeTemplate {
    NodeTemplate::new(name).capacity(cpu, "32Gi", "110")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_bound_with_an_event_and_other_schedulers_pods_are_left_alone() {
    let cluster = Cluster::start(vec![node("n0", "2"), node("n1", "2"), node("n2", "2")]).await;
    for i in 0..6 {
        cluster.pod(&format!("p{i}"), "900m", json!({})).await;
    }
    let mut per_node = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(cluster.bound_node(&format!("p{i}")).await)
            .or_insert(0) += 1;
    }
    // 900m each on 2-cpu nodes: at most two per node, so exactly two on each.
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2],
        "{per_node:?}"
    );
    let note = cluster.event_note("p0", "Scheduled").await;
    let node = cluster.node_of("p0").await.unwrap();
    assert_eq!(note, format!("Successfully assigned test/p0 to {node}"));

    cluster
        .pod(
            "theirs",
            "100m",
            json!({"spec": {"schedulerName": "someone-else"}}),
        )
        .await;
    cluster.pod("mine", "100m", json!({})).await;
    // Once a later pod of ours is placed, the other scheduler's pod was seen and skipped.
    cluster.pod("cheap", "0", json!({})).await;
    cluster.bound_node("cheap").await;
    let theirs = cluster.pods().get("theirs").await.unwrap();
    assert_eq!(theirs.spec.unwrap().node_name, None);
    assert!(
        theirs
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .is_empty(),
        "no condition written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_is_explained_and_the_pod_fits_once_a_node_is_added() {
    let mut templates = vec![node("small-0", "1"), node("small-1", "1")];
    for i in 0..3 {
        templates.push(node(&format!("infra-{i}"), "8").taint("dedicated", "infra", "NoSchedule"));
    }
    let cluster = Cluster::start(templates).await;
    cluster.pod("big", "2", json!({})).await;
    let expected = "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated taint {dedicated: infra}. \
        preemption: 0/5 nodes are available: 2 No preemption victims found for incoming pod, 3 Preemption is not helpful for scheduling.";
    // The node watch may lag behind the pod watch; the message settles once it caught up.
    assert_eq!(cluster.wait_message("big", expected).await, expected);
    // The event explains the failure too. Events are best effort (dropped while
    // too many are in flight, as upstream's broadcaster drops them), so under load
    // the one with the settled message may be missing while an earlier one is there.
    cluster
        .wait_event_note("big", "FailedScheduling", |note| {
            note == expected || (note.starts_with("0/") && note.contains("nodes are available: "))
        })
        .await;
    let pod = cluster.pods().get("big").await.unwrap();
    assert_eq!(pod.spec.unwrap().node_name, None);

    // A node with room appears: the node event moves the pod, no polling needed.
    let _more = HollowNodes::start(
        cluster.client.clone(),
        vec![node("large", "4")],
        HollowOptions::default(),
    )
    .await;
    assert_eq!(cluster.bound_node("big").await, "large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_place_pods_where_they_fit() {
    let cluster = Cluster::start(vec![
        node("plain", "4"),
        node("ssd", "4").label("disk", "ssd"),
        node("gpu", "4").resource("example.com/gpu", "1"),
        node("tainted", "4").taint("team", "a", "NoSchedule"),
    ])
    .await;
    cluster
        .pod(
            "by-selector",
            "0",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        )
        .await;
    cluster
        .pod("by-affinity", "0", json!({"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["plain"]}]}]}}}}}))
        .await;
    cluster
        .pod("needs-gpu", "0", json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}}}]}}))
        .await;
    cluster
        .pod("tolerates", "0", json!({"spec": {
            "nodeSelector": {"kubernetes.io/hostname": "tainted"},
            "tolerations": [{"key": "team", "operator": "Equal", "value": "a", "effect": "NoSchedule"}]}}))
        .await;
    assert_eq!(cluster.bound_node("by-selector").await, "ssd");
    assert_eq!(cluster.bound_node("by-affinity").await, "plain");
    assert_eq!(cluster.bound_node("needs-gpu").await, "gpu");
    assert_eq!(cluster.bound_node("tolerates").await, "tainted");

    // The only gpu is taken: the second gpu pod waits, saying why.
    cluster
        .pod("needs-gpu-2", "0", json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"example.com/gpu": "1"}, "limits": {"example.com/gpu": "1"}}}]}}))
        .await;
    cluster
        .wait_message(
            "needs-gpu-2",
            "0/4 nodes are available: 1 node(s) had untolerated taint {team: a}, 3 Insufficient example.com/gpu.",
        )
        .await;

    // Host ports: two pods asking for the same host port land on different nodes.
    let port = || {
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "ports": [{"containerPort": 80, "hostPort": 8080}]}],
        "nodeSelector": {"hollow.krust.io/node": "true"}}})
    };
    cluster.pod("port-a", "0", port()).await;
    let a = cluster.bound_node("port-a").await;
    cluster.pod("port-b", "0", port()).await;
    let b = cluster.bound_node("port-b").await;
    assert_ne!(a, b);

    // A pod nothing matches is explained by node affinity.
    cluster
        .pod(
            "nowhere",
            "0",
            json!({"spec": {"nodeSelector": {"disk": "tape"}}}),
        )
        .await;
    cluster
        .wait_message(
            "nowhere",
            "0/4 nodes are available: 1 node(s) had untolerated taint {team: a}, 3 node(s) didn't match Pod's node affinity/selector.",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_spread_and_pod_anti_affinity() {
    let cluster = Cluster::start(vec![
        node("a1", "8").label("zone", "a"),
        node("a2", "8").label("zone", "a"),
        node("b1", "8").label("zone", "b"),
        node("b2", "8").label("zone", "b"),
    ])
    .await;
    let spread = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
         "labelSelector": {"matchLabels": {"app": "spread"}}}]}});
    let mut zones = BTreeMap::new();
    for i in 0..6 {
        let name = format!("spread-{i}");
        cluster.pod(&name, "0", spread.clone()).await;
        let node = cluster.bound_node(&name).await;
        *zones.entry(node[..1].to_string()).or_insert(0) += 1;
    }
    assert_eq!(
        zones.values().copied().collect::<Vec<_>>(),
        vec![3, 3],
        "{zones:?}"
    );

    let lonely = json!({"metadata": {"labels": {"app": "lonely"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "lonely"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    let mut nodes = Vec::new();
    for i in 0..4 {
        let name = format!("lonely-{i}");
        cluster.pod(&name, "0", lonely.clone()).await;
        nodes.push(cluster.bound_node(&name).await);
    }
    nodes.sort();
    assert_eq!(nodes, vec!["a1", "a2", "b1", "b2"]);
    cluster.pod("lonely-4", "0", lonely.clone()).await;
    assert_eq!(
        cluster.wait_message("lonely-4", "0/4").await,
        "0/4 nodes are available: 4 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/4 nodes are available: 4 No preemption victims found for incoming pod."
    );

    // Required affinity: follow the pod labelled db.
    cluster.pod("db", "0", json!({"metadata": {"labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "b2"}}})).await;
    assert_eq!(cluster.bound_node("db").await, "b2");
    cluster
        .pod("near-db", "0", json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}}}))
        .await;
    let node = cluster.bound_node("near-db").await;
    assert!(node.starts_with('b'), "{node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_lower_priority_pods_and_spares_pdb_protected_ones() {
    let cluster = Cluster::start(vec![node("n0", "2"), node("n1", "2")]).await;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> =
        Api::all(cluster.client.clone());
    for (name, value) in [("low", 10), ("high", 1000)] {
        classes
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let pdbs: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(cluster.client.clone(), "test");
    pdbs.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "guard"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}}}))
        .unwrap(),
    )
    .await
    .unwrap();
    let low = |app: &str, host: &str| {
        json!({"metadata": {"labels": {"app": app}},
        "spec": {"priority": 10, "priorityClassName": "low", "nodeSelector": {"kubernetes.io/hostname": host}}})
    };
    cluster.pod("guarded", "2", low("guarded", "n0")).await;
    cluster.pod("plain", "2", low("plain", "n1")).await;
    assert_eq!(cluster.bound_node("guarded").await, "n0");
    assert_eq!(cluster.bound_node("plain").await, "n1");
    cluster
        .pod(
            "vip",
            "2",
            // Priority from the class only (the scheduler resolves it if admission did not).
            json!({"spec": {"priorityClassName": "high"}}),
        )
        .await;
    // The plain pod goes (its node has no PDB to violate); the guarded one stays.
    let pods = cluster.pods();
    wait_for("the plain pod is preempted", || async {
        pods.get_opt("plain").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(cluster.bound_node("vip").await, "n1");
    assert!(pods.get_opt("guarded").await.unwrap().is_some());
    let note = cluster.event_note("plain", "Preempted").await;
    assert!(
        note.starts_with("Preempted by pod ") && note.ends_with(" on node n1"),
        "{note}"
    );

    // preemptionPolicy Never: waits instead.
    cluster
        .pod(
            "polite",
            "2",
            json!({"spec": {"priority": 1000, "preemptionPolicy": "Never"}}),
        )
        .await;
    let message = cluster.wait_message("polite", "0/2").await;
    assert_eq!(
        message,
        "0/2 nodes are available: 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    assert!(pods.get_opt("guarded").await.unwrap().is_some());
    assert_eq!(cluster.node_of("polite").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_pod_gets_the_room_a_deleted_pod_leaves() {
    let cluster = Cluster::start(vec![node("only", "1")]).await;
    cluster.pod("first", "1", json!({})).await;
    assert_eq!(cluster.bound_node("first").await, "only");
    cluster.pod("second", "1", json!({})).await;
    assert_eq!(
        cluster.wait_message("second", "0/1").await,
        "0/1 nodes are available: 1 Insufficient cpu. \
         preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
    );
    // The deletion (a cluster event) moves the waiting pod; nothing polls.
    cluster
        .pods()
        .delete("first", &Default::default())
        .await
        .unwrap();
    assert_eq!(cluster.bound_node("second").await, "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_schedules_again_without_waiting_for_its_old_lease() {
    let mut cluster = Cluster::start(vec![node("n", "2")]).await;
    cluster.pod("before", "0", json!({})).await;
    assert_eq!(cluster.bound_node("before").await, "n");
    tokio::task::block_in_place(|| cluster.server.restart());
    let restarted = std::time::Instant::now();
    cluster.client = cluster.server.client().await;
    cluster.pod("after", "0", json!({})).await;
    assert_eq!(cluster.bound_node("after").await, "n");
    // The Lease lasts 15 s: a new identity would have had to wait for it to expire.
    assert!(
        restarted.elapsed() < std::time::Duration::from_secs(10),
        "took {:?}",
        restarted.elapsed()
    );
}
