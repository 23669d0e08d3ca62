//! The node agent with the real containerd: pods from a local registry run, report
//! their status, restart with backoff, get their environment, volumes, limits and
//! hooks, and bad input ends in a clear pod status. Each test function checks several
//! behaviours on one cluster ([`TestNode`]), to keep the number of containerd
//! start-ups small.

use std::time::Duration;

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

/// How long a pod may take to reach a state (image pulls are local, ~20 ms).
const POD_TIMEOUT: Duration = Duration::from_secs(60);

fn kubectl_text(node: &TestNode, args: &[&str]) -> String {
    let out = node.server.kubectl(args);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn jsonpath(node: &TestNode, pod: &str, path: &str) -> String {
    let out = node
        .server
        .kubectl(["get", "pod", pod, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits until `path` of the pod reads `expected`; panics with the pod's status.
fn wait_for(node: &TestNode, pod: &str, path: &str, expected: &str) {
    let deadline = std::time::Instant::now() + POD_TIMEOUT;
    loop {
        let value = jsonpath(node, pod, path);
        if value == expected {
            return;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "pod {pod}: {path} is {value:?}, not {expected:?} after {POD_TIMEOUT:?}; status: {}",
                jsonpath(node, pod, "{.status}")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pod_yaml(node: &TestNode, name: &str, policy: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node_name}
  restartPolicy: {policy}
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
"#,
        node_name = node.node_name,
        image = node.image("krust/busybox:1"),
    )
}

/// Waits until the pod's Events include each `"<type> <reason> <fieldPath>"`.
/// The ClusterIP of the `kubernetes` Service, which every pod's environment names.
fn api_service_ip(node: &TestNode) -> String {
    kubectl_text(
        node,
        &[
            "get",
            "service",
            "kubernetes",
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ],
    )
}

fn wait_for_events(node: &TestNode, pod: &str, expected: &[&str]) {
    let selector = format!("--field-selector=involvedObject.name={pod}");
    let format =
        "-o=jsonpath={range .items[*]}{.type} {.reason} {.involvedObject.fieldPath}{\"\\n\"}{end}";
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + POD_TIMEOUT;
    while std::time::Instant::now() < deadline {
        seen = node
            .server
            .kubectl_text(["get", "events", &selector, format]);
        if expected.iter().all(|e| seen.lines().any(|line| line == *e)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("pod {pod}: events {expected:?} expected, got:\n{seen}");
}

#[test]
fn pods_run_restart_and_report_bad_input() {
    let node = TestNode::start();

    // A server pod from the registry reaches Running and Ready, with a pod IP.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: web}}
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 2
  containers:
  - name: httpd
    image: {}
"#,
        node.node_name,
        node.image("krust/httpd:1")
    ));
    wait_for(&node, "web", "{.status.phase}", "Running");
    wait_for(
        &node,
        "web",
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
    );
    let ip = jsonpath(&node, "web", "{.status.podIP}");
    assert!(ip.starts_with("10.42."), "pod IP {ip:?}");
    let image_id = jsonpath(&node, "web", "{.status.containerStatuses[0].imageID}");
    assert!(image_id.starts_with("sha256:"), "imageID {image_id:?}");
    // The kubelet's Events tell the story, on the container.
    wait_for_events(
        &node,
        "web",
        &[
            "Normal Pulling spec.containers{httpd}",
            "Normal Pulled spec.containers{httpd}",
            "Normal Created spec.containers{httpd}",
            "Normal Started spec.containers{httpd}",
        ],
    );

    // A crash-looping container: restarted, then CrashLoopBackOff with its last exit.
    node.server
        .apply_yaml(&pod_yaml(&node, "crash", "Always", "echo crashing; exit 3"));
    wait_for(
        &node,
        "crash",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CrashLoopBackOff",
    );
    assert_eq!(
        jsonpath(
            &node,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.exitCode}"
        ),
        "3"
    );
    assert_eq!(
        jsonpath(
            &node,
            "crash",
            "{.status.containerStatuses[0].lastState.terminated.reason}"
        ),
        "Error"
    );
    let restarts: u32 = jsonpath(
        &node,
        "crash",
        "{.status.containerStatuses[0].restartCount}",
    )
    .parse()
    .unwrap();
    assert!(restarts >= 1, "restartCount {restarts}");
    assert_eq!(jsonpath(&node, "crash", "{.status.phase}"), "Running");
    wait_for_events(&node, "crash", &["Warning BackOff spec.containers{main}"]);

    // Logs through the API server and the kubelet API: all, tail, previous, follow.
    node.server.apply_yaml(&pod_yaml(
        &node,
        "talker",
        "Always",
        "echo line1; echo line2; sleep 1000",
    ));
    wait_for(&node, "talker", "{.status.phase}", "Running");
    wait_until("talker logged two lines", POD_TIMEOUT, || {
        kubectl_text(&node, &["logs", "talker"]) == "line1\nline2\n"
    });
    assert_eq!(
        kubectl_text(&node, &["logs", "talker", "--tail=1"]),
        "line2\n"
    );
    assert!(
        kubectl_text(&node, &["logs", "crash", "--previous"]).contains("crashing"),
        "logs --previous of crash"
    );
    node.server.apply_yaml(&pod_yaml(
        &node,
        "follower",
        "Never",
        "sleep 1; for i in 1 2 3; do echo n$i; sleep 0.3; done",
    ));
    wait_for(&node, "follower", "{.status.phase}", "Running");
    let followed = node
        .server
        .kubectl(["logs", "-f", "follower", "--request-timeout=60s"]);
    assert!(
        followed.status.success(),
        "kubectl logs -f: {}",
        String::from_utf8_lossy(&followed.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&followed.stdout), "n1\nn2\nn3\n");
    let bad = node.server.kubectl(["logs", "web", "-c", "nosuch"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("container nosuch is not valid for pod web"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // restartPolicy Never: Succeeded with the termination message, Failed on error.
    node.server.apply_yaml(&pod_yaml(
        &node,
        "done",
        "Never",
        "echo -n finished > /dev/termination-log",
    ));
    wait_for(&node, "done", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "done",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "finished"
    );
    assert_eq!(
        jsonpath(
            &node,
            "done",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    node.server
        .apply_yaml(&pod_yaml(&node, "fails", "Never", "exit 1"));
    wait_for(&node, "fails", "{.status.phase}", "Failed");

    // An image that does not exist: ErrImagePull, then ImagePullBackOff.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: noimage}}
spec:
  nodeName: {}
  containers:
  - name: main
    image: {}
"#,
        node.node_name,
        node.image("krust/does-not-exist:1")
    ));
    wait_until("noimage shows ErrImagePull", POD_TIMEOUT, || {
        let reason = jsonpath(
            &node,
            "noimage",
            "{.status.containerStatuses[0].state.waiting.reason}",
        );
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    wait_for(
        &node,
        "noimage",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "ImagePullBackOff",
    );
    assert_eq!(jsonpath(&node, "noimage", "{.status.phase}"), "Pending");
    wait_for_events(
        &node,
        "noimage",
        &[
            "Warning Failed spec.containers{main}",
            "Normal BackOff spec.containers{main}",
        ],
    );

    // An invalid command: the start fails and the status says why.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: badcmd}}
spec:
  nodeName: {}
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["/no/such/binary"]
"#,
        node.node_name,
        node.image("krust/busybox:1")
    ));
    wait_until("badcmd reports its failed start", POD_TIMEOUT, || {
        let status = jsonpath(&node, "badcmd", "{.status.containerStatuses[0].state}");
        status.contains("no such file") || status.contains("StartError")
    });

    // A ConfigMap that does not exist yet: CreateContainerConfigError; once it is
    // created the pod starts, with env from it, from a Secret and the API Service's.
    let env_pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: envpod}}
spec:
  nodeName: {}
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "echo -n \"$(GREETING) $WHO $PASSWORD $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\" > /dev/termination-log"]
    env:
    - {{name: WHO, valueFrom: {{configMapKeyRef: {{name: settings, key: who}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: GREETING, value: hello}}
"#,
        node.node_name,
        node.image("krust/busybox:1")
    );
    node.server.apply_yaml(&env_pod);
    wait_for(
        &node,
        "envpod",
        "{.status.containerStatuses[0].state.waiting.reason}",
        "CreateContainerConfigError",
    );
    let message = jsonpath(
        &node,
        "envpod",
        "{.status.containerStatuses[0].state.waiting.message}",
    );
    assert!(message.contains("settings"), "message {message:?}");
    node.server.apply_yaml(
        r#"apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: s3cret}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {who: world}
"#,
    );
    wait_for(&node, "envpod", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "envpod",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        format!("hello world s3cret {}:443", api_service_ip(&node))
    );

    // Nothing else was disturbed: the server pod never restarted.
    assert_eq!(
        jsonpath(&node, "web", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(jsonpath(&node, "web", "{.status.phase}"), "Running");

    // Deleting pods stops their containers and removes the objects.
    let out = node.server.kubectl([
        "delete",
        "pod",
        "crash",
        "noimage",
        "badcmd",
        "--wait=true",
        "--timeout=60s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_sidecar_limits_volumes_hooks_and_agent_restart() {
    let mut node = TestNode::start();
    let hook_dir = tempfile::tempdir().unwrap();

    // Init containers run in order before the main container; a native sidecar runs
    // alongside; limits reach the container's cgroup.
    node.server.apply_yaml(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: ordered}}
spec:
  nodeName: {node}
  restartPolicy: Never
  initContainers:
  - name: first
    image: {image}
    command: ["sh", "-c", "echo -n 1 >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: {image}
    command: ["sh", "-c", "echo -n 2 >> /work/order"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: sidecar
    image: {image}
    restartPolicy: Always
    command: ["sh", "-c", "echo -n s >> /work/order; sleep 1000"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "m=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max); echo -n \"$(cat /work/order) $m $q\" > /dev/termination-log"]
    resources:
      limits: {{cpu: 500m, memory: 64Mi}}
    volumeMounts: [{{name: work, mountPath: /work}}]
  volumes:
  - name: work
    emptyDir: {{}}
"#,
            node = node.node_name,
            image = node.image("krust/busybox:1")
        ),
    );
    wait_until("the main container of ordered ran", POD_TIMEOUT, || {
        !jsonpath(
            &node,
            "ordered",
            "{.status.containerStatuses[0].state.terminated.message}",
        )
        .is_empty()
    });
    assert_eq!(
        jsonpath(
            &node,
            "ordered",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "12s 67108864 50000"
    );
    assert_eq!(
        jsonpath(
            &node,
            "ordered",
            "{.status.initContainerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );
    assert_eq!(
        jsonpath(
            &node,
            "ordered",
            "{.status.initContainerStatuses[2].started}"
        ),
        "true"
    );
    assert_eq!(
        jsonpath(&node, "ordered", "{.status.qosClass}"),
        "Burstable"
    );

    // emptyDir in memory is a tmpfs; a downwardAPI volume holds the pod's fields.
    node.server.apply_yaml(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: memvol, labels: {{app: demo}}}}
spec:
  nodeName: {}
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "t=$(awk '$2 == \"/mem\" {{print $3}}' /proc/mounts); echo -n \"$t $(cat /info/name) $(cat /info/labels)\" > /dev/termination-log"]
    volumeMounts:
    - {{name: mem, mountPath: /mem}}
    - {{name: info, mountPath: /info}}
  volumes:
  - name: mem
    emptyDir: {{medium: Memory, sizeLimit: 8Mi}}
  - name: info
    downwardAPI:
      items:
      - {{path: name, fieldRef: {{fieldPath: metadata.name}}}}
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
"#,
            node.node_name,
            node.image("krust/busybox:1")
        ),
    );
    wait_for(&node, "memvol", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "memvol",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "tmpfs memvol app=\"demo\""
    );

    // /etc/hosts carries the hostAliases; the hostname is the pod's.
    node.server.apply_yaml(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hosts}}
spec:
  nodeName: {}
  restartPolicy: Never
  hostAliases: [{{ip: 10.1.2.3, hostnames: [foo.local]}}]
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "echo -n \"$(grep foo.local /etc/hosts | cut -f1) $(hostname)\" > /dev/termination-log"]
"#,
            node.node_name,
            node.image("krust/busybox:1")
        ),
    );
    wait_for(&node, "hosts", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "hosts",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "10.1.2.3 hosts"
    );

    // An OOM-killed container says so.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: oom}}
spec:
  nodeName: {}
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "tail /dev/zero"]
    resources:
      limits: {{memory: 16Mi}}
"#,
        node.node_name,
        node.image("krust/busybox:1")
    ));
    wait_for(&node, "oom", "{.status.phase}", "Failed");
    assert_eq!(
        jsonpath(
            &node,
            "oom",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "OOMKilled"
    );

    // A ConfigMap volume follows changes to the ConfigMap while the pod runs.
    node.server.apply_yaml(&format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: live}}
data: {{key: v1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: watcher}}
spec:
  nodeName: {}
  restartPolicy: Never
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "until grep -q v2 /cfg/key; do sleep 0.2; done; cat /cfg/key > /dev/termination-log"]
    volumeMounts: [{{name: cfg, mountPath: /cfg}}]
  volumes:
  - name: cfg
    configMap: {{name: live}}
"#,
            node.node_name,
            node.image("krust/busybox:1")
        ),
    );
    wait_for(&node, "watcher", "{.status.phase}", "Running");
    node.server
        .apply_yaml("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: live}\ndata: {key: v2}\n");
    wait_for(&node, "watcher", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "watcher",
            "{.status.containerStatuses[0].state.terminated.message}"
        ),
        "v2"
    );

    // Graceful termination runs the preStop hook before SIGTERM.
    node.server.apply_yaml(&format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: hooked}}
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: {}
    command: ["sh", "-c", "trap 'echo -n term >> /hook/log; exit 0' TERM; while true; do sleep 0.1; done"]
    lifecycle:
      preStop:
        exec: {{command: ["sh", "-c", "echo -n prestop, >> /hook/log"]}}
    volumeMounts: [{{name: hook, mountPath: /hook}}]
  volumes:
  - name: hook
    hostPath: {{path: {}}}
"#,
            node.node_name,
            node.image("krust/busybox:1"),
            hook_dir.path().display()
        ),
    );
    wait_for(&node, "hooked", "{.status.phase}", "Running");

    let container_id = jsonpath(
        &node,
        "hooked",
        "{.status.containerStatuses[0].containerID}",
    );

    // containerd dying does not stop containers: the agent starts it again and new
    // pods run.
    let pid_file = node.agent_dir().join("containerd/containerd.pid");
    let read_pid = || {
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let old_pid = read_pid();
    let killed = std::process::Command::new("kill")
        .args(["-9", &old_pid])
        .status()
        .unwrap();
    assert!(killed.success(), "kill -9 containerd {old_pid}");
    wait_until("the agent restarted containerd", POD_TIMEOUT, || {
        let pid = read_pid();
        pid != old_pid && std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    node.server.apply_yaml(&pod_yaml(
        &node,
        "after",
        "Never",
        "echo -n ok > /dev/termination-log",
    ));
    wait_for(&node, "after", "{.status.phase}", "Succeeded");
    assert_eq!(
        jsonpath(
            &node,
            "hooked",
            "{.status.containerStatuses[0].containerID}"
        ),
        container_id
    );
    assert_eq!(jsonpath(&node, "hooked", "{.status.phase}"), "Running");

    // Restarting the agent (the whole server, killed) does not restart containers.
    node.server.kill9();
    node.server.restart();
    wait_until("the agent reports on hooked again", POD_TIMEOUT, || {
        jsonpath(
            &node,
            "hooked",
            "{.status.containerStatuses[0].containerID}",
        ) == container_id
            && jsonpath(&node, "hooked", "{.status.phase}") == "Running"
    });
    assert_eq!(
        jsonpath(
            &node,
            "hooked",
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );

    let out = node
        .server
        .kubectl(["delete", "pod", "hooked", "--wait=true", "--timeout=60s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(hook_dir.path().join("log")).unwrap(),
        "prestop,term"
    );
}

#[test]
fn probes_fail_and_recover() {
    let node = TestNode::start();
    let busybox = node.image("krust/busybox:1");
    let httpd = node.image("krust/httpd:1");
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: flapping
    image: {busybox}
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 1000"]
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
      failureThreshold: 1
  - name: web
    image: {httpd}
    ports: [{{name: http, containerPort: 8080}}]
    startupProbe:
      tcpSocket: {{port: 8080}}
      periodSeconds: 1
    readinessProbe:
      httpGet: {{path: /healthz, port: http}}
      periodSeconds: 1
  - name: missing
    image: {httpd}
    command: ["/bin/httpd", "-f", "-p", "8081", "-h", "/var/www"]
    readinessProbe:
      httpGet: {{path: /no-such-page, port: 8081}}
      periodSeconds: 1
  - name: dies
    image: {busybox}
    command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 1000"]
    livenessProbe:
      exec: {{command: ["cat", "/tmp/alive"]}}
      periodSeconds: 1
      failureThreshold: 2
"#,
        node = node.node_name,
    ));
    let ready = |name: &str| {
        jsonpath(
            &node,
            "probed",
            &format!("{{.status.containerStatuses[?(@.name==\"{name}\")].ready}}"),
        )
    };
    wait_for(&node, "probed", "{.status.phase}", "Running");
    // The exec readiness probe: not ready, then ready, then not ready again.
    wait_until("flapping becomes ready", POD_TIMEOUT, || {
        ready("flapping") == "true"
    });
    wait_until("flapping becomes unready", POD_TIMEOUT, || {
        ready("flapping") == "false"
    });
    // httpGet on a named port after a tcpSocket startup probe: ready and started.
    wait_until("web becomes ready", POD_TIMEOUT, || ready("web") == "true");
    assert_eq!(
        jsonpath(
            &node,
            "probed",
            "{.status.containerStatuses[?(@.name==\"web\")].started}"
        ),
        "true"
    );
    // A 404 never makes a container ready, so neither is the pod.
    assert_eq!(ready("missing"), "false");
    assert_eq!(
        jsonpath(
            &node,
            "probed",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    // The failing liveness probe restarts its container.
    wait_until(
        "dies is restarted by its liveness probe",
        POD_TIMEOUT,
        || {
            jsonpath(
                &node,
                "probed",
                "{.status.containerStatuses[?(@.name==\"dies\")].restartCount}",
            )
            .parse::<u32>()
            .unwrap_or(0)
                >= 1
        },
    );
    assert_eq!(
        jsonpath(
            &node,
            "probed",
            "{.status.containerStatuses[?(@.name==\"web\")].restartCount}"
        ),
        "0"
    );
    // What the probes found is in the pod's events, as upstream's kubelet tells it.
    wait_for_events(
        &node,
        "probed",
        &[
            "Warning Unhealthy spec.containers{missing}",
            "Warning Unhealthy spec.containers{dies}",
            "Normal Killing spec.containers{dies}",
        ],
    );
    let notes = node.server.kubectl_text([
        "get",
        "events",
        "--field-selector=involvedObject.name=probed",
        "-o=jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        notes
            .lines()
            .any(|n| n
                == "Unhealthy: Readiness probe failed: HTTP probe failed with statuscode: 404"),
        "{notes}"
    );
    assert!(
        notes
            .lines()
            .any(|n| n.starts_with("Unhealthy: Liveness probe failed: cat:")),
        "{notes}"
    );
}

/// Processes whose command line is exactly `sleep <seconds>`.
fn sleepers(seconds: u64) -> usize {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).ends_with(wanted.as_str()))
        })
        .count()
}

#[test]
fn separate_agent_joins_and_cleans_up_pods_deleted_while_away() {
    let mut node = TestNode::start_separate_agent();
    // A sleep length no other test uses, to find this pod's process.
    let seconds = 1_000_000 + u64::from(std::process::id()) % 1_000_000;
    let sleeper = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {}
    command: ["sleep", "{seconds}"]
"#,
            node.node_name,
            node.image("krust/busybox:1")
        )
    };
    node.server.apply_yaml(&sleeper("stay"));
    node.server.apply_yaml(&sleeper("gone"));
    wait_for(&node, "stay", "{.status.phase}", "Running");
    wait_for(&node, "gone", "{.status.phase}", "Running");
    let stay_id = jsonpath(&node, "stay", "{.status.containerStatuses[0].containerID}");
    assert_eq!(sleepers(seconds), 2);

    // With the agent away, a forced delete removes only the object.
    node.kill_agent();
    let out = node
        .server
        .kubectl(["delete", "pod", "gone", "--force", "--grace-period=0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sleepers(seconds), 2, "containers run on without the agent");

    // Back again, the agent removes the deleted pod's containers and keeps the other.
    node.start_agent();
    wait_until("the deleted pod's container is gone", POD_TIMEOUT, || {
        sleepers(seconds) == 1
    });
    assert_eq!(
        jsonpath(&node, "stay", "{.status.containerStatuses[0].containerID}"),
        stay_id
    );
    assert_eq!(
        jsonpath(&node, "stay", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // A static pod: its manifest file makes a mirror pod that runs; a broken file
    // next to it changes nothing; removing the file removes the pod.
    let manifests = node.manifest_dir();
    std::fs::write(manifests.join("broken.yaml"), "kind: Pod\nmetadata: {}\n").unwrap();
    std::fs::write(
        manifests.join("static.yaml"),
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: static}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    command: [sleep, \"1000\"]\n",
            node.image("krust/busybox:1")
        ),
    )
    .unwrap();
    let mirror = format!("static-{}", node.node_name);
    wait_for(&node, &mirror, "{.status.phase}", "Running");
    assert_eq!(
        jsonpath(
            &node,
            &mirror,
            "{.metadata.annotations.kubernetes\\.io/config\\.source}"
        ),
        "file"
    );
    std::fs::remove_file(manifests.join("static.yaml")).unwrap();
    wait_until("the static pod is gone", POD_TIMEOUT, || {
        let out = node.server.kubectl(["get", "pod", &mirror]);
        String::from_utf8_lossy(&out.stderr).contains("NotFound")
    });
    assert!(
        node.agent_log()
            .contains("broken.yaml: metadata.name is missing"),
        "the agent reports the broken manifest"
    );
}
