//! DNS from inside pods on a real node: a ClusterFirst pod's resolv.conf points at the
//! kube-dns ClusterIP with its namespace's search list, and through the service proxy
//! the server's cluster DNS answers it (busybox nslookup) for every kind of record: a
//! Service by full and by short name, `kubernetes.default`, a headless Service and
//! its pod by `<hostname>.<subdomain>`, SRV for a named port, an ExternalName alias,
//! a pod's `a-b-c-d.<ns>.pod` name and a ClusterIP's PTR; a pod with dnsPolicy None
//! gets exactly its dnsConfig. Needs root.

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
        "spec": {"selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }));
    // A StatefulSet-style pod behind a headless Service, and an alias of `web`.
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"clusterIP": "None", "selector": {"app": "db"},
                 "ports": [{"name": "http", "port": 8080}]},
    }));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "alias", "namespace": "shop"},
        "spec": {"type": "ExternalName", "externalName": "web.shop.svc.cluster.local"},
    }));
    cluster.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "shop", "labels": {"app": "db"}},
        "spec": {
            "nodeName": cluster.nodes[0].name,
            "hostname": "db-0", "subdomain": "db",
            "containers": [{"name": "c", "image": cluster.image("krust/httpd:1"),
                            "ports": [{"name": "http", "containerPort": 8080}]}],
        },
    }));
    let mut db_ip = String::new();
    krust_e2e::wait_until(
        "pod db-0 runs",
        krust_e2e::cluster::CLUSTER_READY_TIMEOUT,
        || {
            db_ip = cluster.pod_field("shop", "db-0", ".status.podIP");
            !db_ip.is_empty() && cluster.pod_field("shop", "db-0", ".status.phase") == "Running"
        },
    );
    let db_dashed = db_ip.replace('.', "-");
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
            "cat /etc/resolv.conf; {}; echo \"== wget\"; \
             for i in $(seq 30); do timeout 3 wget -q -O - http://web/ && break; sleep 1; done",
            [
                lookup("web.shop.svc.cluster.local"),
                lookup("kubernetes.default.svc.cluster.local"),
                lookup("web"),
                lookup("db-0.db.shop.svc.cluster.local"),
                lookup("db.shop.svc.cluster.local"),
                lookup("-type=srv _http._tcp.web.shop.svc.cluster.local"),
                lookup("alias.shop.svc.cluster.local"),
                lookup(&format!("{db_dashed}.shop.pod.cluster.local")),
                lookup(&web_ip),
            ]
            .join("; "),
        ),
    );
    assert_eq!(
        line(&log, "nameserver"),
        Some("nameserver 10.43.0.10"),
        "{log}"
    );
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
    for (name, expected) in [
        ("db-0.db.shop.svc.cluster.local", db_ip.as_str()),
        ("db.shop.svc.cluster.local", &db_ip),
        (
            "-type=srv _http._tcp.web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local",
        ),
        ("alias.shop.svc.cluster.local", &web_ip),
        (&format!("{db_dashed}.shop.pod.cluster.local"), &db_ip),
        (&web_ip, "web.shop.svc.cluster.local"),
    ] {
        assert!(
            section(name).contains(expected),
            "nslookup {name} did not answer {expected}:\n{log}"
        );
    }
    assert!(
        section("-type=srv _http._tcp.web.shop.svc.cluster.local").contains("80"),
        "the SRV record has no port 80:\n{log}"
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
    assert_eq!(
        line(&resolv, "search"),
        Some("search corp.example"),
        "{resolv}"
    );
    assert_eq!(
        line(&resolv, "options"),
        Some("options ndots:2 edns0"),
        "{resolv}"
    );
}
