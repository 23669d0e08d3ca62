//! The `krust/testserver` test image (tests/testserver) on a real node, as later tests
//! use it: from a busybox pod, the server reports its hostname, echoes, sees the
//! client's pod IP, resolves names through the cluster DNS (statically linked, with
//! the pod's resolv.conf and search list), dials another test server pod over HTTP and
//! UDP, refuses a malformed request without dying, and exits with the code asked for,
//! which the node agent reports as the container's last termination. Needs root.

use std::time::Duration;

use krust_e2e::cluster::TestCluster;
use serde_json::json;

/// The value after `key=` on its own line of `log`.
fn value<'a>(log: &'a str, key: &str) -> &'a str {
    log.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{log}"))
        .trim()
}

#[test]
fn the_test_server_answers_from_inside_the_cluster() {
    let cluster = TestCluster::start(1);
    let a = cluster.run_pod("default", "ts-a", 0, "krust/testserver:1", json!({}));
    let b = cluster.run_pod("default", "ts-b", 0, "krust/testserver:1", json!({}));
    let script = format!(
        "for i in $(seq 30); do wget -q -O /dev/null http://{a}:8080/healthz && break; sleep 1; done
         echo hostname=$(wget -q -O - http://{a}:8080/hostname)
         echo echo=$(wget -q -O - 'http://{a}:8080/echo?msg=hello+from%20a+pod')
         echo client=$(wget -q -O - http://{a}:8080/clientip)
         echo full=$(wget -q -O - 'http://{a}:8080/dnslookup?host=kubernetes.default.svc.cluster.local')
         echo short=$(wget -q -O - 'http://{a}:8080/dnslookup?host=kubernetes.default')
         echo http=$(wget -q -O - 'http://{a}:8080/dial?request=hostname&host={b}&port=8080&tries=2')
         echo udp=$(wget -q -O - 'http://{a}:8080/dial?request=clientip&host={b}&port=8081&protocol=udp')
         echo bad=$(wget -q -O - 'http://{a}:8080/exit?code=seven' 2>&1)
         echo after=$(wget -q -O - http://{a}:8080/hostname)
         echo exit=$(wget -q -O - 'http://{a}:8080/exit?code=7')"
    );
    let log = cluster.run_script("default", "asker", 0, json!({}), &script);

    assert_eq!(value(&log, "hostname"), "ts-a", "{log}");
    assert_eq!(value(&log, "echo"), "hello from a pod", "{log}");
    let client = value(&log, "client");
    let prefix = cluster.nodes[0].pod_cidr.trim_end_matches("0/24");
    assert!(
        client.starts_with(prefix) && !client.starts_with(&format!("{a}:")),
        "the client pod's address, not NATed: {client}"
    );
    // The `kubernetes` Service's ClusterIP, by full name and through the search list.
    let api_ip = cluster.server.kubectl_ok([
        "get",
        "service",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let expected = format!("{{\"addresses\":[\"{}\"]}}", api_ip.trim());
    assert_eq!(value(&log, "full"), expected, "{log}");
    assert_eq!(value(&log, "short"), expected, "{log}");
    assert_eq!(
        value(&log, "http"),
        r#"{"responses":["ts-b","ts-b"],"errors":[]}"#,
        "{log}"
    );
    assert!(
        value(&log, "udp").starts_with(&format!("{{\"responses\":[\"{a}:")),
        "ts-b saw ts-a's pod IP over UDP: {log}"
    );
    assert!(value(&log, "bad").contains("400"), "{log}");
    assert_eq!(value(&log, "after"), "ts-a", "still serving: {log}");
    assert_eq!(value(&log, "exit"), "exiting with code 7", "{log}");

    // The exit code reaches the pod's status; the container is restarted.
    krust_e2e::wait_until(
        "ts-a's last termination shows exit code 7",
        Duration::from_secs(60),
        || {
            cluster.pod_field(
                "default",
                "ts-a",
                ".status.containerStatuses[0].lastState.terminated.exitCode",
            ) == "7"
        },
    );
    let restarts = cluster.pod_field(
        "default",
        "ts-a",
        ".status.containerStatuses[0].restartCount",
    );
    assert!(
        restarts.parse::<u32>().unwrap_or(0) >= 1,
        "restartCount {restarts}"
    );
}
