//! Node IPAM and node lifecycle in a real `krust server`: pod CIDRs per node from
//! `--cluster-cidr` (freed when a node goes), and a hollow node that stops renewing
//! its Lease becoming Unknown, tainted, its pods not Ready and evicted once their
//! tolerations run out.

mod common;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use krust_e2e::hollow::{HollowNodes, HollowOptions, NodeTemplate};
use krust_e2e::{ServerOptions, TestServer};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

async fn start(extra_args: &[&str]) -> (TestServer, kube::Client) {
    let options = ServerOptions {
        extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    };
    let server = tokio::task::spawn_blocking(move || TestServer::start_with(options))
        .await
        .unwrap();
    let client = server.client().await;
    (server, client)
}

/// Polls `condition` until it holds, for at most `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec.as_ref()?.pod_cidr.clone()
}

async fn create_node(nodes: &Api<Node>, name: &str) {
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_gets_its_own_pod_cidr_until_the_range_is_full() {
    // Room for two /24s only.
    let (_server, client) = start(&["--cluster-cidr=10.200.0.0/23"]).await;
    let nodes: Api<Node> = Api::all(client.clone());
    create_node(&nodes, "ipam-a").await;
    create_node(&nodes, "ipam-b").await;
    let cidrs_of = || async {
        let mut cidrs = BTreeSet::new();
        for name in ["ipam-a", "ipam-b"] {
            let node = nodes.get(name).await.unwrap();
            let spec = node.spec.unwrap_or_default();
            if let Some(cidr) = spec.pod_cidr {
                assert_eq!(spec.pod_cidrs, Some(vec![cidr.clone()]));
                cidrs.insert(cidr);
            }
        }
        cidrs
    };
    within(common::DEADLINE, "both nodes have a pod CIDR", || async {
        cidrs_of().await.len() == 2
    })
    .await;
    let cidrs = cidrs_of().await;
    assert_eq!(
        cidrs,
        BTreeSet::from(["10.200.0.0/24".to_string(), "10.200.1.0/24".to_string()])
    );

    // A third waits until a node goes, then gets its subnet.
    create_node(&nodes, "ipam-c").await;
    let freed = pod_cidr(&nodes.get("ipam-a").await.unwrap()).unwrap();
    assert_eq!(pod_cidr(&nodes.get("ipam-c").await.unwrap()), None);
    nodes
        .delete("ipam-a", &DeleteParams::default())
        .await
        .unwrap();
    within(
        common::DEADLINE,
        "the third node gets the freed subnet",
        || async { pod_cidr(&nodes.get("ipam-c").await.unwrap()).as_ref() == Some(&freed) },
    )
    .await;
}

fn ready_condition(node: &Node) -> Option<(String, Option<String>)> {
    let condition = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    Some((condition.status.clone(), condition.message.clone()))
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn taint_keys(node: &Node) -> BTreeSet<(String, String)> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_is_tainted_and_its_pods_evicted() {
    // Hollow kubelets renew their Leases every 10 s: the grace period must be longer.
    let (_server, client) = start(&["--node-monitor-grace-period=15s"]).await;
    let hollow = HollowNodes::start(
        client.clone(),
        vec![NodeTemplate::new("life-0"), NodeTemplate::new("life-1")],
        HollowOptions::default(),
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = |name: &str, node: &str, tolerations: serde_json::Value| {
        serde_json::from_value::<Pod>(json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "tolerations": tolerations,
                     "containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap()
    };
    let quick = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 2}]);
    pods.create(&PostParams::default(), &pod("quick", "life-0", quick))
        .await
        .unwrap();
    let patient = pods
        .create(&PostParams::default(), &pod("patient", "life-0", json!([])))
        .await
        .unwrap();
    // The DefaultTolerationSeconds admission gave it 300 s for both taints.
    let defaults: BTreeSet<(String, i64)> = patient
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .map(|t| (t.key.unwrap(), t.toleration_seconds.unwrap()))
        .collect();
    assert_eq!(
        defaults,
        BTreeSet::from([
            ("node.kubernetes.io/not-ready".to_string(), 300),
            ("node.kubernetes.io/unreachable".to_string(), 300)
        ])
    );
    pods.create(
        &PostParams::default(),
        &pod("bystander", "life-1", json!([])),
    )
    .await
    .unwrap();
    within(common::DEADLINE, "the pods are ready", || async {
        let mut ready = true;
        for name in ["quick", "patient", "bystander"] {
            ready &= pod_ready(&pods.get(name).await.unwrap());
        }
        ready
    })
    .await;

    hollow.stop_node("life-0");
    let limit = Duration::from_secs(60);
    within(limit, "the silent node is Unknown and tainted", || async {
        let node = nodes.get("life-0").await.unwrap();
        ready_condition(&node)
            == Some((
                "Unknown".into(),
                Some("Kubelet stopped posting node status.".into()),
            ))
            && taint_keys(&node)
                == BTreeSet::from([
                    (
                        "node.kubernetes.io/unreachable".to_string(),
                        "NoExecute".to_string(),
                    ),
                    (
                        "node.kubernetes.io/unreachable".to_string(),
                        "NoSchedule".to_string(),
                    ),
                ])
    })
    .await;
    within(limit, "its pods are not Ready", || async {
        !pod_ready(&pods.get("patient").await.unwrap())
    })
    .await;
    // Evicted: being deleted (it stays Terminating, as upstream, until its silent
    // kubelet confirms or the node object goes).
    within(limit, "the pod tolerating 2 s is evicted", || async {
        pods.get("quick")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    // Both are told in events, as `kubectl describe` shows them.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::all(client.clone());
    within(
        limit,
        "the eviction and the node's state are recorded",
        || async {
            let reasons: BTreeSet<String> = events
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| e.reason)
                .collect();
            reasons.contains("TaintManagerEviction") && reasons.contains("NodeNotReady")
        },
    )
    .await;
    // The pod tolerating 300 s stays (for now), and the other node is untouched.
    assert!(
        pods.get("patient")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
    );
    let healthy = nodes.get("life-1").await.unwrap();
    assert_eq!(ready_condition(&healthy).unwrap().0, "True");
    assert!(taint_keys(&healthy).is_empty());
    assert!(pod_ready(&pods.get("bystander").await.unwrap()));
}
