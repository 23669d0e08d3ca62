//! The service proxy (`krust-proxy`) on a two-node cluster whose nodes each live in
//! their own network namespace: a ClusterIP answers from a pod on the other node, a
//! NodePort answers on a node without local endpoints, a LoadBalancer gets the
//! nodes' addresses as ingress and answers there, and a Service without
//! endpoints refuses at once (reject, not a silent drop); ClientIP session affinity
//! keeps a client on one endpoint, a pod reaches itself through its Service
//! (hairpin), externalTrafficPolicy Local preserves the client's address and answers
//! only on nodes with a local endpoint, and a Service whose pod is deleted refuses;
//! a LoadBalancer Service with externalTrafficPolicy Local answers 200 on its
//! healthCheckNodePort on the node with its endpoint, 503 on the other and once the
//! endpoint is gone; `loadBalancerSourceRanges` admit the test's client to a
//! LoadBalancer address while they hold it and drop it once they do not (its node
//! port still answers).
//! Each test runs once per proxy mode (`--proxy-mode nftables`, the default, and
//! `iptables`). Needs root.

use std::io::{Read, Write};
use std::time::Duration;

use krust_e2e::cluster::{ClusterOptions, TestCluster};
use serde_json::json;

/// A two-node cluster whose agents program Services in `mode`; in iptables mode the
/// nodes hold the proxy's chains and no nftables table of it.
fn start(mode: &str) -> TestCluster {
    let cluster = TestCluster::start_with(
        2,
        ClusterOptions {
            agent_args: vec![format!("--proxy-mode={mode}")],
            ..ClusterOptions::default()
        },
    );
    if mode == "iptables" {
        for node in &cluster.nodes {
            let in_node = |argv: &[&str]| {
                std::process::Command::new("ip")
                    .args(["netns", "exec", &node.netns])
                    .args(argv)
                    .output()
                    .expect("cannot run ip netns exec")
            };
            krust_e2e::wait_until(
                &format!("{} has the proxy's iptables chains", node.name),
                Duration::from_secs(30),
                || {
                    String::from_utf8_lossy(&in_node(&["iptables-save", "-t", "nat"]).stdout)
                        .contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES")
                },
            );
            assert!(
                !in_node(&["nft", "list", "table", "ip", "krust-proxy"])
                    .status
                    .success(),
                "the nftables mode's table is on {} in iptables mode",
                node.name
            );
        }
    }
    cluster
}

/// An HTTP GET of `/` from the test process (the host namespace); the response, if any.
fn http_get(address: &str) -> Option<String> {
    http_get_path(address, "/")
}

#[test]
fn cluster_ips_node_ports_load_balancers_and_services_without_endpoints() {
    services_answer("nftables");
}

#[test]
fn iptables_mode_cluster_ips_node_ports_load_balancers_and_services_without_endpoints() {
    services_answer("iptables");
}

fn services_answer(mode: &str) {
    let cluster = start(mode);
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

/// A busybox httpd pod on node `node` that answers `/` with its own name and
/// `/cgi-bin/ip` with the client address it sees.
fn who_am_i_pod(cluster: &TestCluster, name: &str, node: usize, id: &str) -> serde_json::Value {
    let script = "mkdir -p /var/www/cgi-bin && hostname > /var/www/index.html && \
                  printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"$REMOTE_ADDR\"\\n' \
                  > /var/www/cgi-bin/ip && chmod +x /var/www/cgi-bin/ip && \
                  exec httpd -f -p 8080 -h /var/www";
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "who", "id": id}},
        "spec": {
            "nodeName": cluster.nodes[node].name,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": cluster.image("krust/busybox:1"),
                            "command": ["sh", "-c", script]}],
        },
    })
}

/// The body of an HTTP response (after the first blank line; CGI output ends its
/// header lines with a bare newline), trimmed.
fn body(response: &str) -> &str {
    let normalized = response.find("\r\n\r\n").map(|at| at + 4);
    let bare = response.find("\n\n").map(|at| at + 2);
    match (normalized, bare) {
        (Some(a), Some(b)) => response[a.min(b)..].trim(),
        (Some(at), None) | (None, Some(at)) => response[at..].trim(),
        (None, None) => "",
    }
}

#[test]
fn session_affinity_hairpin_local_traffic_policy_and_endpoint_removal() {
    affinity_hairpin_and_local_policy("nftables");
}

#[test]
fn iptables_mode_session_affinity_hairpin_local_traffic_policy_and_endpoint_removal() {
    affinity_hairpin_and_local_policy("iptables");
}

fn affinity_hairpin_and_local_policy(mode: &str) {
    let cluster = start(mode);
    for (name, node, id) in [("who-a", 0, "a"), ("who-b", 1, "b"), ("who-c", 1, "c")] {
        cluster.apply(&who_am_i_pod(&cluster, name, node, id));
    }
    let service = |name: &str, spec: serde_json::Value| {
        cluster.apply(&json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec,
        }));
    };
    let port = json!([{"port": 80, "targetPort": 8080}]);
    service("spread", json!({"selector": {"app": "who"}, "ports": port}));
    service(
        "sticky",
        json!({"selector": {"app": "who"}, "ports": port, "sessionAffinity": "ClientIP"}),
    );
    service(
        "local",
        json!({"type": "NodePort", "selector": {"id": "a"}, "ports": port,
               "externalTrafficPolicy": "Local"}),
    );
    service(
        "self",
        json!({"type": "NodePort", "selector": {"id": "a"}, "ports": port}),
    );
    service(
        "lb-local",
        json!({"type": "LoadBalancer", "selector": {"id": "a"},
               "ports": [{"port": 81, "targetPort": 8080}], "externalTrafficPolicy": "Local"}),
    );
    // The test process reaches the nodes from the cluster's bridge address.
    service(
        "guarded",
        json!({"type": "LoadBalancer", "selector": {"app": "who"},
               "ports": [{"port": 82, "targetPort": 8080}],
               "loadBalancerSourceRanges": [format!("{}/32", cluster.bridge_ip)]}),
    );
    for name in ["who-a", "who-b", "who-c"] {
        krust_e2e::wait_until(
            &format!("pod {name} runs"),
            krust_e2e::cluster::CLUSTER_READY_TIMEOUT,
            || cluster.pod_field("default", name, ".status.phase") == "Running",
        );
    }
    let field = |service: &str, path: &str| {
        cluster
            .server
            .kubectl_ok([
                "get",
                "service",
                service,
                "-o",
                &format!("jsonpath={{{path}}}"),
            ])
            .trim()
            .to_string()
    };
    let spread_ip = field("spread", ".spec.clusterIP");
    let sticky_ip = field("sticky", ".spec.clusterIP");
    let self_ip = field("self", ".spec.clusterIP");

    // Without affinity a client meets several endpoints; with ClientIP always one.
    let log = cluster.run_script(
        "default",
        "client",
        0,
        json!({}),
        &format!(
            "for i in $(seq 30); do timeout 3 wget -q -O - http://{sticky_ip}/ >/dev/null && break; sleep 1; done; \
             echo '== spread'; for i in $(seq 20); do timeout 3 wget -q -O - http://{spread_ip}/; done; \
             echo '== sticky'; for i in $(seq 10); do timeout 3 wget -q -O - http://{sticky_ip}/; done"
        ),
    );
    let answers = |title: &str| -> Vec<String> {
        log.split(&format!("== {title}\n"))
            .nth(1)
            .unwrap_or_default()
            .split("\n== ")
            .next()
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let spread = answers("spread");
    let sticky = answers("sticky");
    let distinct = |answers: &[String]| {
        answers
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert_eq!(spread.len(), 20, "{log}");
    assert!(
        distinct(&spread) >= 2,
        "no load spreading without affinity:\n{log}"
    );
    assert_eq!(sticky.len(), 10, "{log}");
    assert_eq!(
        distinct(&sticky),
        1,
        "ClientIP affinity was not kept:\n{log}"
    );

    // Hairpin: a pod reaches itself through its own Service.
    let mut hairpin = String::new();
    krust_e2e::wait_until(
        "who-a reaches itself through its Service",
        Duration::from_secs(30),
        || {
            let out = cluster.server.kubectl([
                "exec",
                "who-a",
                "--",
                "timeout",
                "3",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{self_ip}/"),
            ]);
            hairpin = String::from_utf8_lossy(&out.stdout).trim().to_string();
            hairpin == "who-a"
        },
    );

    // externalTrafficPolicy Local: the endpoint sees the client's own address, and a
    // node without a local endpoint does not answer.
    let local_port = field("local", ".spec.ports[0].nodePort");
    let on_node = |node: usize, port: &str, path: &str| {
        http_get_path(&format!("{}:{port}", cluster.nodes[node].ip), path)
    };
    krust_e2e::wait_until(
        "the Local NodePort answers on node 0",
        Duration::from_secs(30),
        || on_node(0, &local_port, "/").is_some_and(|r| body(&r) == "who-a"),
    );
    let response = on_node(0, &local_port, "/cgi-bin/ip").unwrap_or_default();
    // busybox httpd writes IPv4 clients in their IPv6-mapped form.
    let seen = body(&response)
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']');
    assert_eq!(
        seen,
        cluster.bridge_ip.to_string(),
        "the client address was not preserved: {response}"
    );
    assert!(
        on_node(1, &local_port, "/").is_none(),
        "a node without a local endpoint answered a Local NodePort"
    );

    // The health check node port of a Local LoadBalancer: 200 where its endpoint is.
    let health_port = field("lb-local", ".spec.healthCheckNodePort");
    assert!(!health_port.is_empty(), "no healthCheckNodePort allocated");
    let health = |node: usize| on_node(node, &health_port, "/healthz").unwrap_or_default();
    let endpoints_seen = |response: &str, status: &str, count: usize| {
        response.starts_with(&format!("HTTP/1.1 {status}"))
            && response.contains(&format!("\"localEndpoints\": {count}"))
            && response.contains("\"namespace\": \"default\"")
            && response.contains("\"name\": \"lb-local\"")
            && response.contains("X-Content-Type-Options: nosniff")
    };
    let mut response = String::new();
    krust_e2e::wait_until(
        "lb-local's health check answers 200 on node 0",
        Duration::from_secs(30),
        || {
            response = health(0);
            endpoints_seen(&response, "200", 1)
        },
    );
    krust_e2e::wait_until(
        "lb-local's health check answers 503 on node 1",
        Duration::from_secs(30),
        || {
            response = health(1);
            endpoints_seen(&response, "503", 0)
        },
    );
    // The proxy's own health: 503 on /healthz (not /livez) while its node is
    // tainted for deletion by the cluster autoscaler, 200 again once untainted.
    let healthz = on_node(1, "10256", "/healthz").unwrap_or_default();
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(healthz.contains("\"nodeEligible\": true"), "{healthz}");
    let drained = &cluster.nodes[1].name;
    let taint = "ToBeDeletedByClusterAutoscaler=1700000000:NoSchedule";
    cluster.server.kubectl_ok(["taint", "node", drained, taint]);
    krust_e2e::wait_until(
        "the proxy's /healthz answers 503 on the node tainted for deletion",
        Duration::from_secs(30),
        || {
            on_node(1, "10256", "/healthz").is_some_and(|r| {
                r.starts_with("HTTP/1.1 503") && r.contains("\"nodeEligible\": false")
            })
        },
    );
    let livez = on_node(1, "10256", "/livez").unwrap_or_default();
    assert!(livez.starts_with("HTTP/1.1 200"), "{livez}");
    let other = on_node(0, "10256", "/healthz").unwrap_or_default();
    assert!(other.starts_with("HTTP/1.1 200"), "{other}");
    cluster.server.kubectl_ok([
        "taint",
        "node",
        drained,
        "ToBeDeletedByClusterAutoscaler:NoSchedule-",
    ]);
    krust_e2e::wait_until(
        "the proxy's /healthz answers 200 once the taint is gone",
        Duration::from_secs(30),
        || on_node(1, "10256", "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200")),
    );

    // loadBalancerSourceRanges: admitted while they hold the client, dropped (no
    // answer at all, not a refusal) once they do not; the node port is not subject.
    let guarded = format!("{}:82", cluster.nodes[1].ip);
    krust_e2e::wait_until(
        &format!("{guarded} answers the admitted client"),
        Duration::from_secs(30),
        || http_get(&guarded).is_some_and(|r| body(&r).starts_with("who-")),
    );
    cluster.server.kubectl_ok([
        "patch",
        "service",
        "guarded",
        "--type=merge",
        "-p",
        r#"{"spec": {"loadBalancerSourceRanges": ["192.0.2.0/24"]}}"#,
    ]);
    krust_e2e::wait_until(
        &format!("{guarded} drops the client outside the ranges"),
        Duration::from_secs(30),
        || {
            std::net::TcpStream::connect_timeout(
                &guarded.parse().unwrap(),
                Duration::from_millis(500),
            )
            .is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        },
    );
    let guarded_node_port = field("guarded", ".spec.ports[0].nodePort");
    assert!(
        on_node(1, &guarded_node_port, "/").is_some_and(|r| body(&r).starts_with("who-")),
        "the node port of a LoadBalancer with source ranges does not answer"
    );

    // The pod behind `self` goes: its NodePort refuses soon after.
    let self_port = field("self", ".spec.ports[0].nodePort");
    let address = format!("{}:{self_port}", cluster.nodes[1].ip);
    krust_e2e::wait_until(
        "the NodePort of self answers",
        Duration::from_secs(30),
        || http_get(&address).is_some_and(|r| body(&r) == "who-a"),
    );
    let deleted = std::time::Instant::now();
    cluster.server.kubectl_ok([
        "delete",
        "pod",
        "who-a",
        "--grace-period=0",
        "--force",
        "--wait=false",
    ]);
    krust_e2e::wait_until(
        "the NodePort of self refuses",
        Duration::from_secs(10),
        || {
            std::net::TcpStream::connect_timeout(
                &address.parse().unwrap(),
                Duration::from_millis(500),
            )
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        },
    );
    eprintln!(
        "self refused {} ms after its only pod was deleted",
        deleted.elapsed().as_millis()
    );
    // That pod was lb-local's endpoint too: node 0 fails its health check now.
    krust_e2e::wait_until(
        "lb-local's health check answers 503 on node 0 once its pod is gone",
        Duration::from_secs(30),
        || {
            response = health(0);
            endpoints_seen(&response, "503", 0)
        },
    );
}

/// An HTTP GET of `path` from the test process; the whole response, if any.
fn http_get_path(address: &str, path: &str) -> Option<String> {
    let mut stream =
        std::net::TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response).filter(|r| !r.is_empty())
}
