//! The pod network across nodes (`krust-net`), on a multi-node cluster whose nodes
//! each live in their own network namespace: a pod on one node reaches a pod on the
//! other by its IP with either backend, pods reach addresses outside the cluster
//! (masqueraded), and each node holds its routes and safety routes; all of it with
//! the nodes' iptables FORWARD policy DROP (as Docker sets it). Needs root.

use std::time::Duration;

use krust_e2e::cluster::{ClusterOptions, TestCluster};

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
    // A forwarding policy of DROP: the agents' FORWARD accept for the cluster CIDR
    // keeps pod traffic flowing.
    for node in 0..2 {
        let out = cluster.exec_on_node(node, &["iptables", "-w", "-P", "FORWARD", "DROP"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = cluster.exec_on_node(node, &["iptables", "-w", "-S", "FORWARD"]);
        let forward = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(forward.contains("-P FORWARD DROP"), "{forward}");
        assert!(forward.contains("-j KRUST-FWD-krust0"), "{forward}");
    }

    let web_ip = cluster.run_pod("default", "web", 0, "krust/httpd:1", serde_json::json!({}));
    let prefix = a.pod_cidr.trim_end_matches("0/24");
    assert!(web_ip.starts_with(prefix), "{web_ip} not in {}", a.pod_cidr);

    // From the other node, by pod IP, without NAT on the way.
    let log = cluster.run_script(
        "default",
        "client",
        1,
        serde_json::json!({}),
        &format!(
            "for i in $(seq 30); do timeout 3 wget -q -O - http://{web_ip}:8080/ && exit 0; sleep 1; done; exit 1"
        ),
    );
    assert!(log.contains("hello from krust"), "{log}");

    // Out of the cluster CIDR (the registry on the test bridge): masqueraded, so
    // the reply finds its way back.
    let registry = cluster.image("x");
    let registry = registry.split('/').next().unwrap();
    let log = cluster.run_script(
        "default",
        "egress",
        1,
        serde_json::json!({}),
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
    krust_e2e::wait_until(
        "the deleted node's route is gone",
        Duration::from_secs(30),
        || {
            let routes = cluster.exec_on_node(1, &["ip", "route", "show", "proto", "75"]);
            !String::from_utf8_lossy(&routes.stdout).contains(&a.pod_cidr)
        },
    );
}

#[test]
fn pods_reach_each_other_across_nodes_with_host_gw() {
    pods_reach_each_other_across_nodes("host-gw");
}

#[test]
fn pods_reach_each_other_across_nodes_with_vxlan() {
    pods_reach_each_other_across_nodes("vxlan");
}
