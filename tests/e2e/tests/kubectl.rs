//! The machine's real kubectl against a real `krust server`: the everyday commands
//! a user runs, and what bad input gets.

use std::io::{BufRead, BufReader};
use std::process::{Output, Stdio};
use std::time::Duration;

use krust_e2e::{TestServer, wait_until};

/// Stdout of a kubectl run that must succeed.
fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "kubectl failed: {}\nstdout: {}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr of a kubectl run that must fail.
fn fails(output: Output) -> String {
    assert!(
        !output.status.success(),
        "kubectl should have failed; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.35
        command: ["httpd", "-f"]
        env:
        - {name: MODE, value: production}
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: shop
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: password
  namespace: shop
stringData:
  password: s3cret
"#;

#[test]
fn apply_a_manifest_then_read_it_in_every_format() {
    let server = TestServer::start();
    let applied = ok(server.kubectl_stdin(["apply", "-f", "-"], MANIFEST));
    for line in [
        "namespace/shop created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
        "secret/password created",
    ] {
        assert!(applied.contains(line), "missing {line:?} in {applied}");
    }
    let again = ok(server.kubectl_stdin(["apply", "-f", "-"], MANIFEST));
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");

    let table = ok(server.kubectl(["get", "deployments", "-n", "shop"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("web"), "{table}");
    let wide = ok(server.kubectl(["get", "deployment", "web", "-n", "shop", "-o", "wide"]));
    assert!(wide.contains("busybox:1.35"), "{wide}");
    let json = ok(server.kubectl(["get", "deploy", "web", "-n", "shop", "-o", "json"]));
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(object["spec"]["replicas"], 2);
    assert!(
        object["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty())
    );
    assert_eq!(object["metadata"]["generation"], 1);
    let yaml = ok(server.kubectl(["get", "cm", "settings", "-n", "shop", "-o", "yaml"]));
    assert!(yaml.contains("color: blue"), "{yaml}");
    let name = ok(server.kubectl(["get", "svc", "-n", "shop", "-o", "name"]));
    assert_eq!(name.trim(), "service/web");
    let jsonpath = ok(server.kubectl([
        "get",
        "secret",
        "password",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.password}",
    ]));
    assert_eq!(jsonpath, "czNjcmV0");
    let columns = ok(server.kubectl([
        "get",
        "cm",
        "-n",
        "shop",
        "-o",
        "custom-columns=NAME:.metadata.name,COLOR:.data.color",
    ]));
    assert!(
        columns.contains("settings") && columns.contains("blue"),
        "{columns}"
    );
    let all = ok(server.kubectl(["get", "all", "-n", "shop"]));
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );
    let namespaces = ok(server.kubectl(["get", "namespaces"]));
    for ns in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "shop",
    ] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let described = ok(server.kubectl(["describe", "deployment", "web", "-n", "shop"]));
    assert!(
        described.contains("Name:") && described.contains("web"),
        "{described}"
    );
    assert!(described.contains("busybox:1.35"), "{described}");
}

#[test]
fn label_annotate_patch_scale_and_set_image_change_the_object() {
    let server = TestServer::start();
    ok(server.kubectl_stdin(["apply", "-f", "-"], MANIFEST));
    let ns = ["-n", "shop"];
    ok(server.kubectl(["label", "deployment", "web", "tier=front", ns[0], ns[1]]));
    ok(server.kubectl([
        "annotate",
        "deployment",
        "web",
        "owner=team-a",
        ns[0],
        ns[1],
    ]));
    ok(server.kubectl(["scale", "deployment", "web", "--replicas=5", ns[0], ns[1]]));
    ok(server.kubectl([
        "set",
        "image",
        "deployment/web",
        "web=busybox:1.36",
        ns[0],
        ns[1],
    ]));
    ok(server.kubectl([
        "patch",
        "deployment",
        "web",
        ns[0],
        ns[1],
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":3}}"#,
    ]));
    ok(server.kubectl([
        "patch",
        "deployment",
        "web",
        ns[0],
        ns[1],
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/revisionHistoryLimit","value":4}]"#,
    ]));
    ok(server.kubectl([
        "patch", "deployment", "web", ns[0], ns[1], "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"DEBUG","value":"1"}]}]}}}}"#,
    ]));
    let json = ok(server.kubectl(["get", "deployment", "web", ns[0], ns[1], "-o", "json"]));
    let d: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["spec"]["minReadySeconds"], 3);
    assert_eq!(d["spec"]["revisionHistoryLimit"], 4);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "busybox:1.36");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // Upstream's strategic merge puts the patched list elements first.
    assert_eq!(
        env,
        ["DEBUG", "MODE"],
        "strategic merge keeps MODE and adds DEBUG"
    );
    // Template changes bump the generation; metadata-only changes do not.
    assert_eq!(d["metadata"]["generation"], 6);
    // kubectl diff shows what applying the original manifest would change (exit 1).
    let diff = server.kubectl_stdin(["diff", "-f", "-"], MANIFEST);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let shown = String::from_utf8_lossy(&diff.stdout);
    assert!(
        shown.contains("-  replicas: 5") && shown.contains("+  replicas: 2"),
        "{shown}"
    );
    let unchanged = server.kubectl_stdin(["diff", "-f", "-"], "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: shop\ndata:\n  color: blue\n");
    assert_eq!(
        unchanged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&unchanged.stdout)
    );
}

#[test]
fn get_watch_receives_events() {
    let server = TestServer::start();
    let mut watch = server
        .kubectl_command([
            "get",
            "configmaps",
            "-n",
            "default",
            "-w",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    // Create objects until the watch has started and reports one (the watch may
    // start after the first create; every create after that must show).
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut created = 0;
    while std::time::Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("ADDED"))
    {
        ok(server.kubectl(["create", "configmap", &format!("watched-{created}")]));
        created += 1;
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(line);
        }
    }
    ok(server.kubectl(["delete", "configmap", "watched-0"]));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !seen.iter().any(|l| l.contains("DELETED")) {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        seen.iter()
            .any(|l| l.contains("ADDED") && l.contains("watched-")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("DELETED") && l.contains("watched-0")),
        "{seen:?}"
    );
}

#[test]
fn api_resources_lists_every_group() {
    let server = TestServer::start();
    let resources = ok(server.kubectl(["api-resources"]));
    for needle in [
        "pods",
        "deployments",
        "cronjobs",
        "ingresses",
        "clusterroles",
        "leases",
        "endpointslices",
        "customresourcedefinitions",
        "storageclasses",
        "priorityclasses",
        "flowschemas",
    ] {
        assert!(
            resources.contains(needle),
            "{needle} missing from {resources}"
        );
    }
    let versions = ok(server.kubectl(["api-versions"]));
    assert!(
        versions.contains("apps/v1") && versions.contains("autoscaling/v2"),
        "{versions}"
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = TestServer::start();
    let bad_name = fails(server.kubectl(["create", "configmap", "Bad_Name"]));
    assert!(bad_name.contains("RFC 1123"), "{bad_name}");
    let malformed = fails(server.kubectl_stdin(
        ["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [oops\n",
    ));
    assert!(!malformed.is_empty());
    let wrong_kind = fails(server.kubectl_stdin(
        ["create", "-f", "-"],
        "apiVersion: v1\nkind: NoSuchKind\nmetadata:\n  name: x\n",
    ));
    assert!(wrong_kind.contains("NoSuchKind"), "{wrong_kind}");
    let missing_ns = fails(server.kubectl(["create", "configmap", "x", "-n", "nowhere"]));
    assert!(missing_ns.contains("not found"), "{missing_ns}");
    let duplicate = {
        ok(server.kubectl(["create", "configmap", "once"]));
        fails(server.kubectl(["create", "configmap", "once"]))
    };
    assert!(duplicate.contains("already exists"), "{duplicate}");
    // A body over the 3 MiB limit is refused with 413 and not stored.
    let huge = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  big: {}\n",
        "x".repeat(4 * 1024 * 1024)
    );
    let too_large = fails(server.kubectl_stdin(["create", "--validate=false", "-f", "-"], &huge));
    assert!(
        too_large.to_lowercase().contains("too large"),
        "{too_large}"
    );
    // Only `once` was stored (beside the cluster CA every namespace gets).
    let listed = ok(server.kubectl([
        "get",
        "configmaps",
        "-o",
        "name",
        "--field-selector=metadata.name!=kube-root-ca.crt",
    ]));
    assert_eq!(listed.trim(), "configmap/once");
    let (code, _) = server.get("/readyz").unwrap();
    assert_eq!(code, 200);
}

#[test]
fn auth_can_i_for_an_unprivileged_user() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "bob-token,bob,1001,\"developers\"\n").unwrap();
    let server = TestServer::start_with(krust_e2e::ServerOptions {
        extra_args: vec!["--token-auth-file".into(), tokens.display().to_string()],
        ..Default::default()
    });
    // Bob's kubeconfig has the cluster and his token, no client certificate.
    let bob_config = dir.path().join("bob.kubeconfig");
    let config = |args: &[&str]| {
        let status = std::process::Command::new(krust_e2e::kubectl_bin())
            .arg("--kubeconfig")
            .arg(&bob_config)
            .arg("config")
            .args(args)
            .output()
            .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
    };
    let ca = server.data_dir().join("tls/ca.crt");
    config(&[
        "set-cluster",
        "krust",
        &format!("--server={}", server.url()),
        &format!("--certificate-authority={}", ca.display()),
    ]);
    config(&["set-credentials", "bob", "--token=bob-token"]);
    config(&["set-context", "bob", "--cluster=krust", "--user=bob"]);
    config(&["use-context", "bob"]);
    let cache = dir.path().join("cache");
    let as_bob = |args: &[&str]| {
        std::process::Command::new(krust_e2e::kubectl_bin())
            .arg("--kubeconfig")
            .arg(&bob_config)
            .arg("--cache-dir")
            .arg(&cache)
            .args(args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    };
    let before = as_bob(&["auth", "can-i", "create", "deployments", "-n", "default"]);
    assert_eq!(String::from_utf8_lossy(&before.stdout).trim(), "no");
    let denied = fails(as_bob(&["get", "pods", "-n", "default"]));
    assert!(
        denied.contains("forbidden") && denied.contains("bob"),
        "{denied}"
    );
    ok(server.kubectl([
        "create",
        "rolebinding",
        "bob-edit",
        "--clusterrole=edit",
        "--user=bob",
        "-n",
        "default",
    ]));
    wait_until(
        "bob may create deployments",
        Duration::from_secs(10),
        || {
            let after = as_bob(&["auth", "can-i", "create", "deployments", "-n", "default"]);
            String::from_utf8_lossy(&after.stdout).trim() == "yes"
        },
    );
    let elsewhere = as_bob(&[
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        "kube-system",
    ]);
    assert_eq!(String::from_utf8_lossy(&elsewhere.stdout).trim(), "no");
    ok(as_bob(&["get", "pods", "-n", "default"]));
    let whoami = ok(as_bob(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]));
    assert_eq!(whoami, "bob");
}

#[test]
fn server_side_apply_tracks_owners_and_reports_conflicts() {
    let server = TestServer::start();
    let config = |replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: ssa}}\n  template:\n    metadata:\n      labels: {{app: ssa}}\n    spec:\n      containers:\n      - name: app\n        image: busybox:1.35\n"
        )
    };
    let created = ok(server.kubectl_stdin(["apply", "--server-side", "-f", "-"], &config(2)));
    assert!(
        created.contains("deployment.apps/ssa serverside-applied"),
        "{created}"
    );
    let managers = ok(server.kubectl([
        "get",
        "deployment",
        "ssa",
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[?(@.manager==\"kubectl\")].operation}",
    ]));
    // The Deployment controller's writes are recorded under their own manager.
    assert_eq!(managers, "Apply");
    // Another manager claiming replicas with a different value conflicts.
    let conflict = fails(server.kubectl_stdin(
        ["apply", "--server-side", "--field-manager=ops", "-f", "-"],
        &config(4),
    ));
    assert!(
        conflict.contains("conflict") && conflict.contains(".spec.replicas"),
        "{conflict}"
    );
    let replicas = ok(server.kubectl([
        "get",
        "deployment",
        "ssa",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "2", "a conflicting apply changes nothing");
    // With --force-conflicts the new manager takes the field.
    ok(server.kubectl_stdin(
        [
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "-f",
            "-",
        ],
        &config(4),
    ));
    let replicas = ok(server.kubectl([
        "get",
        "deployment",
        "ssa",
        "-o",
        "jsonpath={.spec.replicas}",
    ]));
    assert_eq!(replicas, "4");
    // A plain update (scale) is recorded as an Update by its manager.
    ok(server.kubectl(["scale", "deployment", "ssa", "--replicas=6"]));
    let json = ok(server.kubectl([
        "get",
        "deployment",
        "ssa",
        "--show-managed-fields",
        "-o",
        "json",
    ]));
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entries = object["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["operation"] == "Update" && e["subresource"] == "scale"),
        "{entries:?}"
    );
}

#[test]
fn explain_and_edit_work_from_the_served_schemas() {
    let server = TestServer::start();
    let explained = ok(server.kubectl(["explain", "deployment.spec.replicas"]));
    assert!(
        explained.contains("KIND:") && explained.contains("Deployment"),
        "{explained}"
    );
    assert!(explained.contains("replicas"), "{explained}");
    let containers = ok(server.kubectl(["explain", "pods.spec.containers.image"]));
    assert!(containers.contains("image"), "{containers}");

    ok(server.kubectl_stdin(["apply", "-f", "-"], MANIFEST));
    // kubectl edit runs $EDITOR on the object's YAML and sends the difference.
    let output = server
        .kubectl_command(["edit", "configmap", "settings", "-n", "shop"])
        .env("EDITOR", "sed -i s/color:\\ blue/color:\\ green/")
        .output()
        .unwrap();
    let edited = ok(output);
    assert!(edited.contains("configmap/settings edited"), "{edited}");
    let color = ok(server.kubectl([
        "get",
        "cm",
        "settings",
        "-n",
        "shop",
        "-o",
        "jsonpath={.data.color}",
    ]));
    assert_eq!(color, "green");
    // Unknown fields are refused by the server's strict field validation.
    let strict = fails(server.kubectl_stdin(
        ["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: strict\n  namespace: shop\ndata: {a: b}\nbogus: 1\n",
    ));
    assert!(strict.contains("bogus"), "{strict}");
    let absent = fails(server.kubectl(["get", "cm", "strict", "-n", "shop"]));
    assert!(absent.contains("not found"), "{absent}");
}

/// Creates an owner ConfigMap and a dependent that names it in ownerReferences.
fn owner_and_dependent(server: &TestServer, owner: &str, blocking: bool) {
    ok(server.kubectl(["create", "configmap", owner]));
    let uid = ok(server.kubectl(["get", "configmap", owner, "-o", "jsonpath={.metadata.uid}"]));
    let dependent = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {owner}-dependent\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: {blocking}\n"
    );
    ok(server.kubectl_stdin(["apply", "-f", "-"], &dependent));
}

fn exists(server: &TestServer, name: &str) -> bool {
    server.kubectl(["get", "configmap", name]).status.success()
}

#[test]
fn delete_honours_each_propagation_policy() {
    let server = TestServer::start();
    let gone = |name: &str| {
        wait_until(
            &format!("{name} to be deleted"),
            Duration::from_secs(30),
            || !exists(&server, name),
        );
    };
    // Background (kubectl's default): the owner goes at once, the garbage collector
    // removes the dependent.
    owner_and_dependent(&server, "bg", false);
    ok(server.kubectl(["delete", "configmap", "bg", "--cascade=background"]));
    assert!(!exists(&server, "bg"));
    gone("bg-dependent");

    // Orphan: the dependent stays, without its owner reference.
    owner_and_dependent(&server, "orphan", false);
    ok(server.kubectl(["delete", "configmap", "orphan", "--cascade=orphan"]));
    gone("orphan");
    let owners = ok(server.kubectl([
        "get",
        "configmap",
        "orphan-dependent",
        "-o",
        "jsonpath={.metadata.ownerReferences}",
    ]));
    assert_eq!(
        owners, "",
        "the orphaned dependent lost its owner reference"
    );

    // Foreground: the dependent goes first, then the owner; kubectl waits for both.
    owner_and_dependent(&server, "fg", true);
    ok(server.kubectl([
        "delete",
        "configmap",
        "fg",
        "--cascade=foreground",
        "--timeout=30s",
    ]));
    gone("fg");
    assert!(!exists(&server, "fg-dependent"));

    // Deleting a namespace deletes what is in it, then the namespace.
    ok(server.kubectl(["create", "namespace", "doomed"]));
    ok(server.kubectl(["create", "configmap", "inside", "-n", "doomed"]));
    ok(server.kubectl(["delete", "namespace", "doomed", "--timeout=60s"]));
    let after = fails(server.kubectl(["get", "namespace", "doomed"]));
    assert!(after.contains("not found"), "{after}");

    // While a namespace terminates (here: held by an object's finalizer) nothing new
    // can be created in it.
    ok(server.kubectl(["create", "namespace", "held"]));
    ok(server.kubectl_stdin(
        ["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pinned\n  namespace: held\n  finalizers: [example.com/hold]\n",
    ));
    ok(server.kubectl(["delete", "namespace", "held", "--wait=false"]));
    wait_until(
        "the namespace to terminate",
        Duration::from_secs(20),
        || {
            ok(server.kubectl(["get", "namespace", "held", "-o", "jsonpath={.status.phase}"]))
                == "Terminating"
        },
    );
    let refused = fails(server.kubectl(["create", "configmap", "late", "-n", "held"]));
    assert!(refused.contains("being terminated"), "{refused}");
    ok(server.kubectl([
        "patch",
        "configmap",
        "pinned",
        "-n",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]));
    wait_until("the held namespace to go", Duration::from_secs(30), || {
        !server
            .kubectl(["get", "namespace", "held"])
            .status
            .success()
    });
}

#[test]
fn cluster_roles_aggregate_into_view_edit_and_admin() {
    let server = TestServer::start();
    let rules_of =
        |role: &str| ok(server.kubectl(["get", "clusterrole", role, "-o", "jsonpath={.rules}"]));
    wait_until(
        "admin to hold view's rules",
        Duration::from_secs(20),
        || {
            let admin = rules_of("admin");
            admin.contains("pods/log") && admin.contains("rolebindings")
        },
    );
    assert!(
        !rules_of("view").contains("secrets"),
        "view never reads secrets"
    );
    // A new role labelled aggregate-to-view flows into view, edit and admin.
    ok(server.kubectl_stdin(
        ["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: widgets-view\n  labels:\n    rbac.authorization.k8s.io/aggregate-to-view: \"true\"\nrules:\n- apiGroups: [example.com]\n  resources: [widgets]\n  verbs: [get, list, watch]\n",
    ));
    for role in ["view", "edit", "admin"] {
        wait_until(
            &format!("{role} to include widgets"),
            Duration::from_secs(20),
            || rules_of(role).contains("widgets"),
        );
    }
}

#[test]
fn pods_print_upstreams_columns_and_filter_by_fields() {
    let server = TestServer::start();
    ok(server.kubectl([
        "run",
        "solo",
        "--image=busybox:1.35",
        "--restart=Never",
        "--",
        "sleep",
        "60",
    ]));
    let table = ok(server.kubectl(["get", "pods"]));
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        table.contains("solo") && table.contains("0/1") && table.contains("Pending"),
        "{table}"
    );
    let wide = ok(server.kubectl(["get", "pods", "-o", "wide"]));
    assert!(
        wide.lines().next().unwrap().contains("NOMINATED NODE"),
        "{wide}"
    );
    // Field selectors the server supports for pods, and one it does not.
    let pending = ok(server.kubectl([
        "get",
        "pods",
        "--field-selector",
        "status.phase=Pending",
        "-o",
        "name",
    ]));
    assert_eq!(pending.trim(), "pod/solo");
    let running = ok(server.kubectl([
        "get",
        "pods",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "name",
    ]));
    assert_eq!(running.trim(), "");
    let unsupported = fails(server.kubectl(["get", "pods", "--field-selector", "spec.bogus=x"]));
    assert!(unsupported.contains("spec.bogus"), "{unsupported}");
    // Label selectors with set-based terms.
    ok(server.kubectl(["label", "pod", "solo", "tier=back", "env=prod"]));
    let selected = ok(server.kubectl([
        "get",
        "pods",
        "-l",
        "tier in (front,back),env!=dev",
        "-o",
        "name",
    ]));
    assert_eq!(selected.trim(), "pod/solo");
    let none = ok(server.kubectl(["get", "pods", "-l", "!tier", "-o", "name"]));
    assert_eq!(none.trim(), "");
    // fieldValidation=Warn stores the object and warns about the unknown field.
    let warned = server.kubectl_stdin(
        ["apply", "--validate=warn", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: warned\ndata: {a: b}\nextra: 1\n",
    );
    assert!(warned.status.success());
    assert!(
        String::from_utf8_lossy(&warned.stderr).contains("unknown field \"extra\""),
        "{warned:?}"
    );
    ok(server.kubectl(["get", "configmap", "warned"]));
}
