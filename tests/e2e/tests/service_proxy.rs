//! The service proxy (`krust-proxy`) on a two-node cluster whose nodes each live in
//! their own network namespace: a ClusterIP answers from a pod on the other node, a
//! NodePort answers on a node without local endpoints, a LoadBalancer gets the
//! nodes' addresses as ingress and answers there, and a Service without
//! endpoints refuses at once (reject, not a silent drop). Needs root.

use std::io::{Read, Write};
use std::time::Duration;

use krust_e2e::cluster::TestCluster;
use serde_json::json;

/// An HTTP GET from the test process (the host namespace); the body, if any.
fn http_get(address: &str) -> Option<String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[test]
fn cluster_ips_node_ports_load_balancers_and_services_without_endpoints() {
    let cluster = TestCluster::start(2);
    cluster.run_pod("default", "web", 0, "krust/httpd:1", json!({"app": "web"}));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "empty"},
        "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]},
    }));
    let field = |service: &str, path: &str| {
        let out = cluster.server.kubectl([
            "get",
            "service",
            service,
            "-o",
            &format!("jsonpath={{{path}}}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let web_ip = field("web", ".spec.clusterIP");
    let node_port = field("web", ".spec.ports[0].nodePort");
    let empty_ip = field("empty", ".spec.clusterIP");

    // A pod on the other node reaches the ClusterIP.
    let log = cluster.run_script(
        "default",
        "client",
        1,
        json!({}),
        &format!(
            "for i in $(seq 30); do timeout 3 wget -q -O - http://{web_ip}/ && exit 0; sleep 1; done; exit 1"
        ),
    );
    assert!(log.contains("hello from krust"), "{log}");

    // The NodePort answers on the node without a local endpoint.
    let address = format!("{}:{node_port}", cluster.nodes[1].ip);
    let mut response = None;
    krust_e2e::wait_until(
        &format!("node port {address} answers"),
        Duration::from_secs(30),
        || {
            response = http_get(&address);
            response
                .as_deref()
                .is_some_and(|r| r.contains("hello from krust"))
        },
    );

    // LoadBalancer: the built-in service load balancer publishes the nodes'
    // addresses, and each answers on the Service port.
    let mut ingress = String::new();
    krust_e2e::wait_until(
        "the LoadBalancer has its ingress",
        Duration::from_secs(30),
        || {
            ingress = field("web", ".status.loadBalancer.ingress[*].ip");
            ingress.split(' ').count() == 2
        },
    );
    for node in &cluster.nodes {
        assert!(ingress.contains(&node.ip.to_string()), "{ingress}");
    }
    let address = format!("{}:80", cluster.nodes[1].ip);
    krust_e2e::wait_until(
        &format!("load balancer address {address} answers"),
        Duration::from_secs(30),
        || http_get(&address).is_some_and(|r| r.contains("hello from krust")),
    );

    // No endpoints: refused at once, not a timeout.
    let log = cluster.run_script(
        "default",
        "refused",
        1,
        json!({}),
        &format!("timeout 5 wget -q -O - http://{empty_ip}/ 2>&1; echo rc=$?"),
    );
    assert!(log.contains("refused"), "{log}");
}
