//! Persistent storage on a real node (real containerd): claims of the default
//! `local-path` class are provisioned on the node the scheduler picks, a pod's data
//! outlives it and is read back by the next pod, readOnly mounts refuse writes,
//! subPathExpr picks a directory per pod, an ephemeral volume's claim lives and dies
//! with its pod, a
//! StatefulSet's ordinals keep their own data across pod deletion, Delete removes the
//! volume's directory while Retain keeps it, a class that allows expansion grows a
//! claim (others refuse), and a claim no local directory can serve says why. One function, one containerd start-up.

use std::time::Duration;

use krust_e2e::node::TestNode;
use krust_e2e::wait_until;

const TIMEOUT: Duration = Duration::from_secs(60);

fn wait_value(node: &TestNode, args: &[&str], expected: &str) {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + TIMEOUT;
    while std::time::Instant::now() < deadline {
        last = node.server.kubectl_text(args);
        if last == expected {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "kubectl {args:?} is {last:?}, not {expected:?}; events:\n{}\nserver log:\n{}",
        node.server.kubectl_text(["get", "events", "-A"]),
        node.server.log_tail()
    );
}

fn claim(name: &str, class: &str, mode: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  {class}
  accessModes: [{mode}]
  resources: {{requests: {{storage: 64Mi}}}}
"#,
        class = if class.is_empty() {
            String::new()
        } else {
            format!("storageClassName: {class}")
        }
    )
}

fn pod(node: &TestNode, name: &str, claim: &str, read_only: bool, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext: {{fsGroup: 2000}}
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", {script:?}]
    volumeMounts: [{{name: data, mountPath: /data, readOnly: {read_only}}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#,
        image = node.image("krust/busybox:1"),
    )
}

fn wait_phase(node: &TestNode, pod: &str, phase: &str) {
    let jsonpath = "-o=jsonpath={.status.phase}";
    wait_value(node, &["get", "pod", pod, jsonpath], phase);
}

#[test]
fn claims_keep_data_across_pods_and_are_reclaimed_by_policy() {
    let node = TestNode::start();
    let volumes_dir = krust_kubelet::local_path::volumes_dir(node.agent_dir());

    // A pod writes to a claim of the default class; the volume lives on its node.
    node.server.apply_yaml(&claim("data", "", "ReadWriteOnce"));
    wait_value(
        &node,
        &["get", "pvc", "data", "-o=jsonpath={.status.phase}"],
        "Pending",
    );
    node.server.apply_yaml(&pod(
        &node,
        "writer",
        "data",
        false,
        "echo hello > /data/file && stat -c %g /data",
    ));
    wait_phase(&node, "writer", "Succeeded");
    assert_eq!(
        node.server.kubectl_text(["logs", "writer"]),
        "2000",
        "fsGroup owns the volume"
    );
    wait_value(
        &node,
        &["get", "pvc", "data", "-o=jsonpath={.status.phase}"],
        "Bound",
    );
    let volume = node
        .server
        .kubectl_text(["get", "pvc", "data", "-o=jsonpath={.spec.volumeName}"]);
    let path = node
        .server
        .kubectl_text(["get", "pv", &volume, "-o=jsonpath={.spec.local.path}"]);
    assert!(path.starts_with(volumes_dir.to_str().unwrap()), "{path}");
    assert_eq!(
        std::fs::read_to_string(format!("{path}/file")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        node.server.kubectl_text([
            "get",
            "pvc",
            "data",
            "-o=jsonpath={.metadata.annotations.volume\\.kubernetes\\.io/selected-node}"
        ]),
        node.node_name
    );

    // The writer goes; a new pod reads the data back, through a read-only mount.
    node.server
        .kubectl_text(["delete", "pod", "writer", "--wait=true"]);
    node.server.apply_yaml(&pod(
        &node,
        "reader",
        "data",
        true,
        "if touch /data/other 2>/dev/null; then echo writable; fi; cat /data/file",
    ));
    wait_phase(&node, "reader", "Succeeded");
    assert_eq!(node.server.kubectl_text(["logs", "reader"]), "hello");

    // subPathExpr: each pod its own directory in the volume, named from its env.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: expr}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo mine > /own/file"]
    env:
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts: [{{name: data, mountPath: /own, subPathExpr: "$(POD_NAME)"}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#,
        image = node.image("krust/busybox:1")
    ));
    wait_phase(&node, "expr", "Succeeded");
    assert_eq!(
        std::fs::read_to_string(format!("{path}/expr/file")).unwrap(),
        "mine\n"
    );
    node.server
        .kubectl_text(["delete", "pod", "expr", "--wait=true"]);

    // An ephemeral volume: its claim is made for the pod and goes with it.
    node.server.apply_yaml(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: scratch}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "echo temp > /scratch/file && cat /scratch/file"]
    volumeMounts: [{{name: work, mountPath: /scratch}}]
  volumes:
  - name: work
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {{requests: {{storage: 8Mi}}}}
"#,
        image = node.image("krust/busybox:1")
    ));
    wait_phase(&node, "scratch", "Succeeded");
    assert_eq!(node.server.kubectl_text(["logs", "scratch"]), "temp");
    let owner = "-o=jsonpath={.metadata.ownerReferences[0].name}";
    assert_eq!(
        node.server
            .kubectl_text(["get", "pvc", "scratch-work", owner]),
        "scratch"
    );
    let scratch_volume = node.server.kubectl_text([
        "get",
        "pvc",
        "scratch-work",
        "-o=jsonpath={.spec.volumeName}",
    ]);
    node.server
        .kubectl_text(["delete", "pod", "scratch", "--wait=true"]);
    wait_until(
        "the ephemeral claim and its volume go with the pod",
        TIMEOUT,
        || {
            node.server
                .kubectl_text([
                    "get",
                    "pvc",
                    "scratch-work",
                    "--ignore-not-found",
                    "-o=name",
                ])
                .is_empty()
                && node
                    .server
                    .kubectl_text([
                        "get",
                        "pv",
                        &scratch_volume,
                        "--ignore-not-found",
                        "-o=name",
                    ])
                    .is_empty()
        },
    );

    // A StatefulSet's ordinals keep their own data across pod deletion.
    node.server.apply_yaml(&format!(
            r#"apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  replicas: 2
  serviceName: web
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "cat /data/id 2>/dev/null || (hostname > /data/id && echo new); sleep 3600"]
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"#,
            image = node.image("krust/busybox:1")
        ),
    );
    for ordinal in ["web-0", "web-1"] {
        wait_phase(&node, ordinal, "Running");
        wait_value(&node, &["logs", ordinal], "new");
    }
    let uid = node
        .server
        .kubectl_text(["get", "pod", "web-0", "-o=jsonpath={.metadata.uid}"]);
    node.server
        .kubectl_text(["delete", "pod", "web-0", "--wait=true"]);
    wait_until("web-0 is recreated", TIMEOUT, || {
        let now = node
            .server
            .kubectl_text(["get", "pod", "web-0", "-o=jsonpath={.metadata.uid}"]);
        !now.is_empty() && now != uid
    });
    wait_phase(&node, "web-0", "Running");
    wait_value(&node, &["logs", "web-0"], "web-0");

    // Delete: the claim goes (once no pod uses it), then the volume and its directory.
    // The default class does not allow expansion: the API says so and changes nothing.
    let grow = r#"{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}"#;
    let out = node.server.kubectl(["patch", "pvc", "data", "-p", grow]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("only dynamically provisioned pvc can be resized"),
        "{error}"
    );
    let request = "-o=jsonpath={.spec.resources.requests.storage}";
    assert_eq!(
        node.server.kubectl_text(["get", "pvc", "data", request]),
        "64Mi"
    );
    node.server
        .kubectl_text(["delete", "pod", "reader", "--wait=true"]);
    node.server
        .kubectl_text(["delete", "pvc", "data", "--wait=true"]);
    wait_until("the Delete volume is removed", TIMEOUT, || {
        node.server
            .kubectl_text(["get", "pv", &volume, "--ignore-not-found", "-o=name"])
            .is_empty()
    });
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} kept after Delete"
    );

    // Retain: the volume and its data stay, Released.
    node.server.apply_yaml(
        r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: keep}
provisioner: krust.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
"#,
    );
    node.server
        .apply_yaml(&claim("kept", "keep", "ReadWriteOnce"));
    node.server.apply_yaml(&pod(
        &node,
        "keeper",
        "kept",
        false,
        "echo kept > /data/file",
    ));
    wait_phase(&node, "keeper", "Succeeded");
    let kept = node
        .server
        .kubectl_text(["get", "pvc", "kept", "-o=jsonpath={.spec.volumeName}"]);
    let kept_path =
        node.server
            .kubectl_text(["get", "pv", &kept, "-o=jsonpath={.spec.local.path}"]);
    // Expansion: allowed by this class, to the volume and the claim's capacity;
    // shrinking below the capacity is refused.
    let grow = r#"{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}"#;
    let out = node.server.kubectl(["patch", "pvc", "kept", "-p", grow]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let capacity = "-o=jsonpath={.status.capacity.storage}";
    wait_value(&node, &["get", "pvc", "kept", capacity], "128Mi");
    let size = "-o=jsonpath={.spec.capacity.storage}";
    assert_eq!(
        node.server.kubectl_text(["get", "pv", &kept, size]),
        "128Mi"
    );
    let shrink = r#"{"spec":{"resources":{"requests":{"storage":"64Mi"}}}}"#;
    let out = node.server.kubectl(["patch", "pvc", "kept", "-p", shrink]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("field can not be less than status.capacity"),
        "{error}"
    );
    node.server
        .kubectl_text(["delete", "pod", "keeper", "--wait=true"]);
    node.server
        .kubectl_text(["delete", "pvc", "kept", "--wait=true"]);
    wait_value(
        &node,
        &["get", "pv", &kept, "-o=jsonpath={.status.phase}"],
        "Released",
    );
    assert_eq!(
        std::fs::read_to_string(format!("{kept_path}/file")).unwrap(),
        "kept\n"
    );
    node.server
        .kubectl_text(["delete", "pv", &kept, "--wait=true"]);
    std::fs::remove_dir_all(&kept_path).unwrap();

    // A directory on one node cannot be ReadWriteMany: the claim says so and stays Pending.
    node.server
        .apply_yaml(&claim("shared", "", "ReadWriteMany"));
    node.server
        .apply_yaml(&pod(&node, "sharer", "shared", false, "true"));
    wait_until(
        "ProvisioningFailed for the ReadWriteMany claim",
        TIMEOUT,
        || {
            node.server
                .kubectl_text([
                    "get",
                    "events",
                    "--field-selector=involvedObject.name=shared,reason=ProvisioningFailed",
                    "-o=jsonpath={.items[*].message}",
                ])
                .contains("cannot offer access mode ReadWriteMany")
        },
    );
    assert_eq!(
        node.server
            .kubectl_text(["get", "pvc", "shared", "-o=jsonpath={.status.phase}"]),
        "Pending"
    );
    assert_ne!(
        node.server
            .kubectl_text(["get", "pod", "sharer", "-o=jsonpath={.status.phase}"]),
        "Running"
    );
}
