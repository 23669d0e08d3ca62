//! The pod network across nodes (`krust-net`), on a multi-node cluster whose nodes
//! each live in their own network namespace: a pod on one node reaches a pod on the
//! other by its IP with either backend, pods reach addresses outside the cluster
//! (masqueraded), and each node holds its routes and safety routes. Needs root.

use std::time::Duration;

use krust_e2e::cluster::{ClusterOptions, TestCluster};

const TIMEOUT: Duration = Duration::from_secs(90);

fn apply(cluster: &TestCluster, object: serde_json::Value) {
    let out = cluster
        .server
        .kubectl_stdin(["apply", "-f", "-"], &object.to_string());
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pod_field(cluster: &TestCluster, pod: &str, path: &str) -> String {
    let out = cluster
        .server
        .kubectl(["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `script` in a busybox pod on node `node` and waits for it to succeed;
/// returns its log.
fn run_to_success(cluster: &TestCluster, name: &str, node: usize, script: &str) -> String {
    apply(
        cluster,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "nodeName": cluster.nodes[node].name,
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": cluster.image("krust/busybox:1"),
                                "command": ["sh", "-c", script]}],
            },
        }),
    );
    let mut phase = String::new();
    krust_e2e::wait_until(&format!("pod {name} finishes"), TIMEOUT, || {
        phase = pod_field(cluster, name, ".status.phase");
        phase == "Succeeded" || phase == "Failed"
    });
    let log = cluster.server.kubectl(["logs", name]);
    let log = String::from_utf8_lossy(&log.stdout).to_string();
    assert_eq!(
        phase,
        "Succeeded",
        "pod {name} failed; its log:\n{log}\n{}",
        cluster.agent_logs()
    );
    log
}

fn pods_reach_each_other_across_nodes(backend: &str) {
    let cluster = TestCluster::start_with(
        2,
        ClusterOptions {
            agent_args: vec![format!("--flannel-backend={backend}")],
            ..Default::default()
        },
    );
    // Node IPAM gave each node its own /24 of the cluster CIDR.
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert!(a.pod_cidr.starts_with("10.42."), "{}", a.pod_cidr);
    assert_ne!(a.pod_cidr, b.pod_cidr);

    apply(
        &cluster,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web"},
            "spec": {
                "nodeName": cluster.nodes[0].name,
                "containers": [{"name": "web", "image": cluster.image("krust/httpd:1")}],
            },
        }),
    );
    let mut web_ip = String::new();
    krust_e2e::wait_until("pod web has an IP and runs", TIMEOUT, || {
        web_ip = pod_field(&cluster, "web", ".status.podIP");
        !web_ip.is_empty() && pod_field(&cluster, "web", ".status.phase") == "Running"
    });
    let prefix = a.pod_cidr.trim_end_matches("0/24");
    assert!(web_ip.starts_with(prefix), "{web_ip} not in {}", a.pod_cidr);

    // From the other node, by pod IP, without NAT on the way.
    let log = run_to_success(
        &cluster,
        "client",
        1,
        &format!(
            "for i in $(seq 30); do timeout 3 wget -q -O - http://{web_ip}:8080/ && exit 0; sleep 1; done; exit 1"
        ),
    );
    assert!(log.contains("hello from krust"), "{log}");

    // Out of the cluster CIDR (the registry on the test bridge): masqueraded, so
    // the reply finds its way back.
    let registry = cluster.image("x");
    let registry = registry.split('/').next().unwrap();
    let log = run_to_success(
        &cluster,
        "egress",
        1,
        &format!("timeout 5 wget -q -O - http://{registry}/v2/ && echo reached"),
    );
    assert!(log.contains("reached"), "{log}");

    // Each node's routes: the other node's pod CIDR and the safety routes, tagged.
    let routes = cluster.exec_on_node(1, &["ip", "route", "show", "proto", "75"]);
    let routes = String::from_utf8_lossy(&routes.stdout).to_string();
    assert!(routes.contains(&a.pod_cidr), "{routes}");
    assert!(routes.contains("unreachable 10.42.0.0/16"), "{routes}");
    assert!(routes.contains("10.43.0.0/16 dev krust0"), "{routes}");
    let table = cluster.exec_on_node(1, &["nft", "list", "table", "ip", "krust-net-krust0"]);
    assert!(table.status.success(), "no masquerade table");

    // A node that goes takes its route with it.
    let out = cluster
        .server
        .kubectl(["delete", "node", &a.name, "--wait=false"]);
    assert!(out.status.success());
    krust_e2e::wait_until("the deleted node's route is gone", TIMEOUT, || {
        let routes = cluster.exec_on_node(1, &["ip", "route", "show", "proto", "75"]);
        !String::from_utf8_lossy(&routes.stdout).contains(&a.pod_cidr)
    });
}

#[test]
fn pods_reach_each_other_across_nodes_with_host_gw() {
    pods_reach_each_other_across_nodes("host-gw");
}

#[test]
fn pods_reach_each_other_across_nodes_with_vxlan() {
    pods_reach_each_other_across_nodes("vxlan");
}
