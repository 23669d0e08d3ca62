//! Multi-node clusters on one machine (`krust_e2e::cluster::TestCluster`): a server
//! and agents each in its own network namespace with its own containerd. Needs root.

use krust_e2e::cluster::TestCluster;

/// A server and two agents in their own namespaces register and become Ready; drop
/// removes the namespaces, veths and bridge again.
#[test]
fn two_agent_nodes_in_their_own_netns_become_ready_and_are_torn_down() {
    let cluster = TestCluster::start(2);
    let out = cluster.server.kubectl(["get", "nodes", "-o", "name"]);
    let names = String::from_utf8_lossy(&out.stdout).to_string();
    for node in &cluster.nodes {
        assert!(names.contains(&format!("node/{}", node.name)), "{names}");
    }
    // Each node has its own address and no default route: nothing leaves.
    let routes = cluster.exec_on_node(0, &["ip", "route", "show", "default"]);
    assert!(routes.status.success());
    assert_eq!(String::from_utf8_lossy(&routes.stdout).trim(), "");
    let netns: Vec<String> = cluster.nodes.iter().map(|n| n.netns.clone()).collect();
    let bridge = cluster.bridge.clone();
    drop(cluster);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for ns in netns {
        assert!(!listed.contains(&ns), "{ns} is still there: {listed}");
    }
    let link = std::process::Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .expect("ip link show");
    assert!(!link.status.success(), "bridge {bridge} is still there");
}

/// A node cut off the network becomes NotReady (short grace period) and Ready again
/// once healed.
#[test]
fn a_node_cut_off_becomes_not_ready_and_recovers_when_healed() {
    let cluster = TestCluster::start_with(
        1,
        krust_e2e::cluster::ClusterOptions {
            server_args: vec!["--node-monitor-grace-period=8s".into()],
            ..Default::default()
        },
    );
    cluster.cut_off(0);
    cluster.wait_node_ready(0, false);
    cluster.heal(0);
    cluster.wait_node_ready(0, true);
}
