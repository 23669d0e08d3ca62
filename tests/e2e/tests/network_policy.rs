//! NetworkPolicy enforcement (`krust-netpol`) on a two-node cluster whose nodes each
//! live in their own network namespace: default deny, then allow by pod label and by
//! namespace label, for clients on the other node (routed) and on the same node
//! (bridged). Needs root.

use krust_e2e::cluster::{ClusterOptions, TestCluster};
use serde_json::json;

/// Runs a client pod that polls `url` until it is `want` ("open" or "closed").
fn expect(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    node: usize,
    role: &str,
    url: &str,
    want: &str,
) {
    let script = format!(
        "for i in $(seq 30); do if timeout 2 wget -q -O - {url} >/dev/null 2>&1; then r=open; else r=closed; fi; \
         [ $r = {want} ] && echo $r && exit 0; sleep 1; done; echo last=$r; exit 1"
    );
    let log = cluster.run_script(ns, name, node, json!({"role": role}), &script);
    assert!(log.contains(want), "{name}: {log}");
}

#[test]
fn policies_deny_by_default_then_allow_by_pod_and_namespace_labels() {
    let cluster = TestCluster::start_with(
        2,
        ClusterOptions {
            agent_args: vec!["--flannel-backend=host-gw".into()],
            ..Default::default()
        },
    );
    for (name, labels) in [("np-app", json!({})), ("np-team", json!({"team": "x"}))] {
        cluster.apply(&json!({"apiVersion": "v1", "kind": "Namespace",
                              "metadata": {"name": name, "labels": labels}}));
    }
    let web = cluster.run_pod("np-app", "web", 0, "krust/httpd:1", json!({"app": "web"}));
    let url = format!("http://{web}:8080/");

    // Not selected by any policy: open to all.
    expect(&cluster, "np-app", "before", 1, "other", &url, "open");

    // Default deny for ingress in np-app.
    cluster.apply(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "deny", "namespace": "np-app"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }));
    expect(&cluster, "np-app", "denied", 1, "ok", &url, "closed");

    // Allow pods labelled role=ok in np-app, on the web's port by name.
    cluster.apply(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-ok", "namespace": "np-app"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "ok"}}}],
                         "ports": [{"protocol": "TCP", "port": 8080}]}],
        },
    }));
    expect(&cluster, "np-app", "allowed-remote", 1, "ok", &url, "open");
    expect(&cluster, "np-app", "allowed-local", 0, "ok", &url, "open");
    expect(
        &cluster,
        "np-app",
        "other-local",
        0,
        "other",
        &url,
        "closed",
    );
    expect(
        &cluster,
        "np-team",
        "team-before",
        1,
        "other",
        &url,
        "closed",
    );

    // Allow every pod of namespaces labelled team=x.
    cluster.apply(&json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "allow-team", "namespace": "np-app"},
        "spec": {
            "podSelector": {},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]}],
        },
    }));
    expect(&cluster, "np-team", "team-after", 1, "other", &url, "open");

    // Deleting the policies opens the pod again.
    let out = cluster
        .server
        .kubectl(["delete", "networkpolicy", "-n", "np-app", "--all"]);
    assert!(out.status.success());
    expect(&cluster, "np-app", "after", 1, "other", &url, "open");
}
