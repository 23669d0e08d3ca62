//! Multi-node clusters on one machine (`krust_e2e::cluster::TestCluster`): a server
//! and agents each in its own network namespace with its own containerd. Needs root.

use krust_e2e::cluster::TestCluster;

/// A field of node `name`'s Lease spec.
fn lease_field(cluster: &TestCluster, name: &str, field: &str) -> String {
    cluster.server.kubectl_text([
        "get",
        "lease",
        "-n",
        "kube-node-lease",
        name,
        "-o",
        &format!("jsonpath={{.spec.{field}}}"),
    ])
}

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

/// `kill -9` of the server, then a start on the same data dir: a pod running on an
/// agent node keeps running (same container, no restart) and the node stays Ready.
#[test]
fn running_pods_survive_a_server_kill_and_restart() {
    let mut cluster = TestCluster::start(1);
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "steady"},
        "spec": {"containers": [{"name": "web", "image": cluster.image("krust/httpd:1")}]},
    });
    let out = cluster
        .server
        .kubectl_stdin(["apply", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |cluster: &TestCluster, path: &str| {
        let out = cluster.server.kubectl([
            "get",
            "pod",
            "steady",
            "-o",
            &format!("jsonpath={{{path}}}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let timeout = std::time::Duration::from_secs(90);
    krust_e2e::wait_until("pod steady is Ready", timeout, || {
        field(&cluster, ".status.conditions[?(@.type==\"Ready\")].status") == "True"
    });
    let container = field(&cluster, ".status.containerStatuses[0].containerID");
    assert!(!container.is_empty());

    cluster.server.kill9();
    cluster.server.restart();
    cluster.wait_all_ready();
    krust_e2e::wait_until("pod steady is Ready after the restart", timeout, || {
        field(&cluster, ".status.conditions[?(@.type==\"Ready\")].status") == "True"
    });
    assert_eq!(
        field(&cluster, ".status.containerStatuses[0].containerID"),
        container,
        "the container was replaced\n{}",
        cluster.agent_logs()
    );
    assert_eq!(
        field(&cluster, ".status.containerStatuses[0].restartCount"),
        "0"
    );
}

/// An agent given only a bootstrap token gets its client certificate through a CSR
/// (auto-approved, signed), becomes Ready as `system:node:<name>`, and after a restart
/// reuses the stored certificate without a new request.
#[test]
fn an_agent_joining_with_a_bootstrap_token_becomes_ready_as_its_node() {
    let mut cluster = TestCluster::start_with(
        1,
        krust_e2e::cluster::ClusterOptions {
            bootstrap_token: true,
            ..Default::default()
        },
    );
    let name = cluster.nodes[0].name.clone();
    let csrs = |cluster: &TestCluster| -> Vec<String> {
        let out = cluster.server.kubectl([
            "get",
            "csr",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.username}{\"\\n\"}{end}",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("node-csr-{name}-")))
            .map(String::from)
            .collect()
    };
    let made = csrs(&cluster);
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].ends_with("system:bootstrap:e2ejoi"), "{made:?}");
    let pki = cluster.nodes[0].data_dir().join("pki");
    for file in ["kubelet-client.key", "kubelet-client.crt"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(pki.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // The Node's Lease is renewed by the node's own identity: its holder is the node.
    assert_eq!(lease_field(&cluster, &name, "holderIdentity"), name);
    // A restart reuses the certificate: no second request.
    cluster.stop_agent(0);
    cluster.start_agent(0);
    cluster.wait_node_ready(0, true);
    let after = csrs(&cluster);
    assert_eq!(after.len(), 1, "{after:?}");
}

/// A node joined with a bootstrap token reads only what its pods use (the Node
/// authorizer): its pod still gets a ConfigMap value in its environment, a Secret as
/// a file, its service account token (with the CA and namespace) that authenticates
/// as the account, and reaches the API at the `kubernetes` Service's address; none of
/// the agent's requests is refused.
#[test]
fn a_bootstrap_joined_node_runs_a_pod_with_its_config_map_secret_and_token() {
    let cluster = TestCluster::start_with(
        1,
        krust_e2e::cluster::ClusterOptions {
            bootstrap_token: true,
            ..Default::default()
        },
    );
    cluster.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "greeting", "namespace": "default"},
        "data": {"text": "hello-from-config"},
    }));
    cluster.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "password", "namespace": "default"},
        "stringData": {"value": "s3cret-value"},
    }));
    let script = "echo env=$GREETING; cat /etc/password/value; echo; \
                  cd /var/run/secrets/kubernetes.io/serviceaccount && \
                  echo namespace=$(cat namespace) && grep -c 'BEGIN CERTIFICATE' ca.crt && \
                  echo token=$(cat token) && \
                  nc -w 5 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo api-reachable";
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "uses-objects", "namespace": "default"},
        "spec": {
            "nodeName": cluster.nodes[0].name,
            "restartPolicy": "Never",
            "volumes": [{"name": "password", "secret": {"secretName": "password"}}],
            "containers": [{
                "name": "c", "image": cluster.image("krust/busybox:1"),
                "command": ["sh", "-c", script],
                "env": [{"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "greeting", "key": "text"}}}],
                "volumeMounts": [{"name": "password", "mountPath": "/etc/password"}],
            }],
        },
    });
    cluster.apply(&pod);
    let timeout = std::time::Duration::from_secs(90);
    let mut phase = String::new();
    krust_e2e::wait_until("pod uses-objects finishes", timeout, || {
        phase = cluster.pod_field("default", "uses-objects", ".status.phase");
        phase == "Succeeded" || phase == "Failed"
    });
    let log = cluster.server.kubectl_text(["logs", "uses-objects"]);
    assert_eq!(phase, "Succeeded", "{log}\n{}", cluster.agent_logs());
    assert!(log.contains("env=hello-from-config"), "{log}");
    assert!(log.contains("s3cret-value"), "{log}");
    // The service account token the node got for the pod works, as the account.
    assert!(log.contains("namespace=default"), "{log}");
    assert!(
        log.contains("api-reachable"),
        "the kubernetes Service: {log}"
    );
    let token = log
        .lines()
        .find_map(|line| line.strip_prefix("token="))
        .filter(|t| t.split('.').count() == 3)
        .unwrap_or_else(|| panic!("no token in the pod's log: {log}"));
    let bare = cluster.server.data_dir().join("bare.kubeconfig");
    std::fs::write(&bare, "apiVersion: v1\nkind: Config\n").unwrap();
    let whoami = std::process::Command::new(krust_e2e::kubectl_bin())
        .arg(format!("--kubeconfig={}", bare.display()))
        .arg(format!("--server={}", cluster.server.url()))
        .arg(format!(
            "--certificate-authority={}",
            cluster.server.data_dir().join("tls/ca.crt").display()
        ))
        .arg(format!("--token={token}"))
        .args([
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&whoami.stdout),
        "system:serviceaccount:default:default",
        "{}",
        String::from_utf8_lossy(&whoami.stderr)
    );
    let agent_log = cluster.nodes[0].log();
    assert!(
        !agent_log.contains("forbidden") && !agent_log.contains("Forbidden"),
        "the node was refused something it needs:\n{}",
        cluster.agent_logs()
    );
}

/// With short-lived certificates (`--cluster-signing-duration`) a joined node renews
/// its client certificate on its own identity before it ends, restarts on it, and
/// stays Ready past the first certificate's end.
#[test]
fn a_joined_node_renews_its_client_certificate_before_it_expires() {
    let lifetime = std::time::Duration::from_secs(40);
    let cluster = TestCluster::start_with(
        1,
        krust_e2e::cluster::ClusterOptions {
            bootstrap_token: true,
            server_args: vec![format!(
                "--cluster-signing-duration={}s",
                lifetime.as_secs()
            )],
            ..Default::default()
        },
    );
    let joined = std::time::Instant::now();
    let name = cluster.nodes[0].name.clone();
    let renewals = |cluster: &TestCluster| -> usize {
        let out = cluster.server.kubectl_text([
            "get",
            "csr",
            "-o",
            "jsonpath={range .items[*]}{.spec.username} {.status.certificate}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter(|l| l.starts_with(&format!("system:node:{name} ")) && l.len() > 40)
            .count()
    };
    krust_e2e::wait_until(
        "the node renewed its certificate as itself",
        lifetime * 2,
        || renewals(&cluster) >= 1,
    );
    // Past the first certificate's end the node still renews its Lease.
    krust_e2e::wait_until("the first certificate has ended", lifetime * 2, || {
        joined.elapsed() > lifetime + std::time::Duration::from_secs(5)
    });
    let renewed_at = |cluster: &TestCluster| lease_field(cluster, &name, "renewTime");
    let before = renewed_at(&cluster);
    krust_e2e::wait_until(
        "the node renews its Lease on the new certificate",
        std::time::Duration::from_secs(30),
        || renewed_at(&cluster) != before,
    );
    cluster.wait_node_ready(0, true);
    assert!(
        cluster.nodes[0]
            .log()
            .contains("renewed the node's client certificate"),
        "{}",
        cluster.agent_logs()
    );
}

/// A pod with a claim of `class`-less (default, WaitForFirstConsumer) local-path
/// storage, placed by the scheduler; `node` pins it by nodeSelector when given.
fn claim_pod(
    cluster: &TestCluster,
    name: &str,
    node: Option<usize>,
    script: &str,
) -> serde_json::Value {
    let mut pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "notes"}}],
            "containers": [{
                "name": "c", "image": cluster.image("krust/busybox:1"),
                "command": ["sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
        },
    });
    if let Some(node) = node {
        pod["spec"]["nodeSelector"] =
            serde_json::json!({"kubernetes.io/hostname": cluster.nodes[node].name});
    }
    pod
}

/// WaitForFirstConsumer on two real nodes joined by bootstrap token: the default
/// class's claim stays unbound until its first pod is scheduled, then its directory
/// is made on that pod's node (by that node's agent, as the node) and its volume is
/// pinned there; a later pod of the claim is scheduled to the same node and reads
/// the data; a pod that must run on the other node cannot be placed and says why;
/// deleting the claim removes the directory on its node.
#[test]
fn a_wait_for_first_consumer_claim_is_provisioned_on_its_first_pods_node() {
    let cluster = TestCluster::start_with(
        2,
        krust_e2e::cluster::ClusterOptions {
            bootstrap_token: true,
            ..Default::default()
        },
    );
    let timeout = std::time::Duration::from_secs(90);
    cluster.apply(&serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "notes", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    }));
    krust_e2e::wait_until("the claim waits for its consumer", timeout, || {
        cluster
            .server
            .kubectl_text([
                "get",
                "events",
                "--field-selector=involvedObject.name=notes",
            ])
            .contains("WaitForFirstConsumer")
    });
    assert_eq!(
        cluster
            .server
            .kubectl_text(["get", "pvc", "notes", "-o=jsonpath={.spec.volumeName}"]),
        ""
    );

    let finish = |name: &str| {
        let mut phase = String::new();
        krust_e2e::wait_until(&format!("pod {name} finishes"), timeout, || {
            phase = cluster.pod_field("default", name, ".status.phase");
            phase == "Succeeded" || phase == "Failed"
        });
        let log = cluster.server.kubectl_text(["logs", name]);
        assert_eq!(
            phase,
            "Succeeded",
            "{name}: {log}\n{}",
            cluster.agent_logs()
        );
        log
    };
    let second = &cluster.nodes[1];
    cluster.apply(&claim_pod(
        &cluster,
        "writer",
        Some(1),
        "echo written-on-$(hostname) > /data/note",
    ));
    finish("writer");
    let claim_field = |path: &str| {
        cluster
            .server
            .kubectl_text(["get", "pvc", "notes", &format!("-o=jsonpath={{{path}}}")])
    };
    assert_eq!(claim_field(".status.phase"), "Bound");
    assert_eq!(
        claim_field(".metadata.annotations.volume\\.kubernetes\\.io/selected-node"),
        second.name
    );
    let volume = claim_field(".spec.volumeName");
    let volume_field = |path: &str| {
        cluster
            .server
            .kubectl_text(["get", "pv", &volume, &format!("-o=jsonpath={{{path}}}")])
    };
    assert_eq!(
        volume_field(
            ".spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]"
        ),
        second.name
    );
    let path = std::path::PathBuf::from(volume_field(".spec.local.path"));
    assert!(
        path.starts_with(second.data_dir()),
        "{} is not under the second node's data dir {}",
        path.display(),
        second.data_dir().display()
    );
    assert_eq!(
        std::fs::read_to_string(path.join("note")).unwrap(),
        "written-on-writer\n"
    );
    assert!(!path.starts_with(cluster.nodes[0].data_dir()));

    // A later pod goes where the volume is, without being told.
    cluster.apply(&claim_pod(&cluster, "reader", None, "cat /data/note"));
    assert_eq!(finish("reader").trim(), "written-on-writer");
    assert_eq!(
        cluster.pod_field("default", "reader", ".spec.nodeName"),
        second.name
    );

    // One that must run on the other node cannot be placed, and says why.
    cluster.apply(&claim_pod(&cluster, "elsewhere", Some(0), "cat /data/note"));
    krust_e2e::wait_until("the misplaced pod is refused", timeout, || {
        cluster
            .server
            .kubectl_text([
                "get",
                "events",
                "--field-selector=involvedObject.name=elsewhere",
            ])
            .contains("had volume node affinity conflict")
    });
    assert_eq!(
        cluster.pod_field("default", "elsewhere", ".spec.nodeName"),
        ""
    );

    // Delete (the class's policy): the directory goes from its node with the claim.
    for pod in ["writer", "reader", "elsewhere"] {
        cluster
            .server
            .kubectl_text(["delete", "pod", pod, "--wait=true"]);
    }
    cluster
        .server
        .kubectl_text(["delete", "pvc", "notes", "--wait=true"]);
    krust_e2e::wait_until("the volume and its directory are removed", timeout, || {
        !path.exists()
            && cluster
                .server
                .kubectl_text(["get", "pv", &volume, "--ignore-not-found", "-o=name"])
                .is_empty()
    });
    let refused = cluster
        .nodes
        .iter()
        .any(|node| node.log().contains("forbidden") || node.log().contains("Forbidden"));
    assert!(
        !refused,
        "a node was refused something it needs:\n{}",
        cluster.agent_logs()
    );
}
