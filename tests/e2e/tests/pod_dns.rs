//! DNS from inside pods on a real node: a ClusterFirst pod's resolv.conf points at the
//! kube-dns ClusterIP with its namespace's search list, and through the service proxy
//! the server's cluster DNS answers it for the `kubernetes` Service and a Service of
//! the test, by full name and by short name; a pod with dnsPolicy None gets exactly
//! its dnsConfig. Needs root.

use krust_e2e::cluster::TestCluster;
use serde_json::json;

/// A line of `log` starting with `prefix`, trimmed.
fn line<'a>(log: &'a str, prefix: &str) -> Option<&'a str> {
    log.lines().map(str::trim).find(|l| l.starts_with(prefix))
}

#[test]
fn cluster_first_pods_resolve_services_through_the_cluster_dns() {
    let cluster = TestCluster::start(1);
    cluster.server.kubectl_ok(["create", "namespace", "shop"]);
    cluster.run_pod("shop", "web", 0, "krust/httpd:1", json!({"app": "web"}));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }));
    let out = cluster.server.kubectl_ok([
        "get",
        "service",
        "-n",
        "shop",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let web_ip = out.trim().to_string();

    // The proxy's rules for the kube-dns ClusterIP may still be coming: retry for a
    // while inside the pod, then show what the last attempt said.
    let lookup = |name: &str| {
        format!(
            "for i in $(seq 30); do nslookup {name} >/tmp/answer 2>&1 && break; sleep 1; done; \
             echo \"== {name}\"; cat /tmp/answer"
        )
    };
    let log = cluster.run_script(
        "shop",
        "client",
        0,
        json!({}),
        &format!(
            "cat /etc/resolv.conf; {}; {}; {}; echo \"== wget\"; \
             for i in $(seq 30); do timeout 3 wget -q -O - http://web/ && break; sleep 1; done",
            lookup("web.shop.svc.cluster.local"),
            lookup("kubernetes.default.svc.cluster.local"),
            lookup("web"),
        ),
    );
    assert_eq!(line(&log, "nameserver"), Some("nameserver 10.43.0.10"), "{log}");
    let search = line(&log, "search").unwrap_or_default();
    assert!(
        search.starts_with("search shop.svc.cluster.local svc.cluster.local cluster.local"),
        "{log}"
    );
    assert_eq!(line(&log, "options"), Some("options ndots:5"), "{log}");
    let section = |title: &str| {
        log.split(&format!("== {title}\n"))
            .nth(1)
            .and_then(|rest| rest.split("\n== ").next())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        section("web.shop.svc.cluster.local").contains(&web_ip),
        "the Service's name did not resolve to {web_ip}:\n{log}"
    );
    assert!(
        section("kubernetes.default.svc.cluster.local").contains("10.43.0.1"),
        "kubernetes.default did not resolve:\n{log}"
    );
    assert!(
        section("web").contains(&web_ip),
        "the short name did not resolve through the search list:\n{log}"
    );
    assert!(
        section("wget").contains("hello from krust"),
        "the Service was not reachable by its short name:\n{log}"
    );

    // dnsPolicy None: only what the pod asks for (duplicates dropped).
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "custom", "namespace": "shop"},
        "spec": {
            "nodeName": cluster.nodes[0].name,
            "restartPolicy": "Never",
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["192.0.2.53", "192.0.2.53"],
                "searches": ["corp.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            },
            "containers": [{"name": "c", "image": cluster.image("krust/busybox:1"),
                            "command": ["cat", "/etc/resolv.conf"]}],
        },
    }));
    krust_e2e::wait_until(
        "pod custom finishes",
        krust_e2e::cluster::CLUSTER_READY_TIMEOUT,
        || cluster.pod_field("shop", "custom", ".status.phase") == "Succeeded",
    );
    let resolv = cluster.server.kubectl_ok(["logs", "-n", "shop", "custom"]);
    let nameservers: Vec<&str> = resolv
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(nameservers, ["nameserver 192.0.2.53"], "{resolv}");
    assert_eq!(line(&resolv, "search"), Some("search corp.example"), "{resolv}");
    assert_eq!(
        line(&resolv, "options"),
        Some("options ndots:2 edns0"),
        "{resolv}"
    );
}
