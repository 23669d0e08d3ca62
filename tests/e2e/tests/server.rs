//! `krust server` as a user meets it: start-up, the kubeconfig it prints, restarts,
//! the built-in namespaces, and command line errors.

use std::fs;
use std::time::Duration;

use krust_e2e::{EtcdServer, ServerOptions, TestServer, free_port, run_krust};

/// How long a command line error may take to be reported.
const CLI_TIMEOUT: Duration = Duration::from_secs(20);

const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

fn stdout_of(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_success(output: &std::process::Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Asserts a failed run printed exactly one line, starting with `error:` and containing
/// every needle, and returns that line.
fn assert_one_line_error(output: &std::process::Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure, got {}; stderr:\n{stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{stderr}"
    );
    let line = lines[0];
    assert!(line.starts_with("error: "), "{line}");
    for needle in needles {
        assert!(line.contains(needle), "expected {needle:?} in: {line}");
    }
    line.to_string()
}

fn namespaces_of(server: &TestServer) -> Vec<String> {
    let output = server.kubectl(["get", "namespaces", "-o", "name"]);
    assert_success(&output, "kubectl get namespaces");
    stdout_of(&output)
        .lines()
        .map(|line| line.trim().trim_start_matches("namespace/").to_string())
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn server_starts_and_kubectl_reports_version_1_33() {
    let server = TestServer::start();

    // The line follows readiness (the API answers a moment before it is printed).
    let export_line = format!("export KUBECONFIG={}", server.kubeconfig_path().display());
    let printed = || server.stdout().lines().any(|line| line == export_line);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !printed() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        printed(),
        "expected {export_line:?} on stdout, got:\n{}",
        server.stdout()
    );

    let output = server.kubectl(["version", "-o", "json"]);
    assert_success(&output, "kubectl version");
    let version: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("kubectl version -o json prints JSON");
    let server_version = &version["serverVersion"];
    assert_eq!(server_version["major"], "1", "{version:#}");
    let minor = server_version["minor"].as_str().unwrap_or_default();
    assert!(minor.starts_with("33"), "minor {minor:?} in {version:#}");
    let git_version = server_version["gitVersion"].as_str().unwrap_or_default();
    assert!(git_version.starts_with("v1.33."), "{version:#}");
}

#[test]
fn certificates_and_kubeconfig_are_reused_after_restarts() {
    let mut server = TestServer::start();
    let tls = server.data_dir().join("tls");
    let read_all = || {
        ["ca.crt", "ca.key", "apiserver.crt", "admin.crt"]
            .map(|name| fs::read(tls.join(name)).unwrap_or_else(|e| panic!("{name}: {e}")))
    };
    let before = read_all();
    let kubeconfig_before = fs::read(server.kubeconfig_path()).unwrap();

    server.restart();
    assert_eq!(
        read_all(),
        before,
        "certificates changed on a clean restart"
    );
    assert_eq!(
        fs::read(server.kubeconfig_path()).unwrap(),
        kubeconfig_before
    );

    server.kill9();
    server.restart();
    assert_eq!(read_all(), before, "certificates changed after a crash");
    assert_eq!(
        fs::read(server.kubeconfig_path()).unwrap(),
        kubeconfig_before
    );

    // The old kubeconfig still works against the restarted server.
    let output = server.kubectl(["get", "--raw", "/readyz"]);
    assert_success(&output, "kubectl get --raw /readyz");
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let mut server = TestServer::start();
    let status = server.stop();
    assert!(
        status.success(),
        "exit status {status}\n{}",
        server.log_tail()
    );
}

#[test]
fn kubectl_get_namespaces_lists_the_builtin_ones() {
    let server = TestServer::start();
    let namespaces = namespaces_of(&server);
    for expected in BUILTIN_NAMESPACES {
        assert!(
            namespaces.iter().any(|name| name == expected),
            "{expected} missing from {namespaces:?}"
        );
    }
}

#[tokio::test]
async fn kube_rs_client_lists_the_builtin_namespaces() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, ListParams};

    let server = TestServer::start();
    let client = server.client().await;
    let namespaces: Api<Namespace> = Api::all(client);
    let list = namespaces
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|err| panic!("listing namespaces failed: {err}\n{}", server.log_tail()));
    let names: Vec<String> = list
        .items
        .iter()
        .filter_map(|ns| ns.metadata.name.clone())
        .collect();
    for expected in BUILTIN_NAMESPACES {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[tokio::test]
async fn server_runs_on_etcd() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{Api, PostParams};

    let etcd = EtcdServer::start();
    let mut server = TestServer::start_with(ServerOptions {
        datastore: Some(etcd.url()),
        ..Default::default()
    });
    let namespaces = namespaces_of(&server);
    assert!(
        namespaces.iter().any(|n| n == "kube-system"),
        "{namespaces:?}"
    );

    // The state lives in etcd: a restarted server sees what the first one wrote.
    let api: Api<Namespace> = Api::all(server.client().await);
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "e2e-on-etcd"}})).unwrap();
    api.create(&PostParams::default(), &namespace)
        .await
        .unwrap_or_else(|err| panic!("creating a namespace failed: {err}\n{}", server.log_tail()));
    server.restart();
    let namespaces = namespaces_of(&server);
    assert!(
        namespaces.iter().any(|n| n == "e2e-on-etcd"),
        "{namespaces:?}"
    );
}

#[test]
fn unknown_flag_is_a_one_line_error() {
    let output = run_krust(["server", "--no-such-flag"], CLI_TIMEOUT);
    let line = assert_one_line_error(&output, &["--no-such-flag"]);
    assert_eq!(output.status.code(), Some(2), "{line}");
}

#[test]
fn bad_datastore_url_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let data_dir = dir.path().join("data");
    let output = run_krust(
        [
            "server",
            "--port",
            &port,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--datastore",
            "bogus://127.0.0.1:1",
        ],
        CLI_TIMEOUT,
    );
    assert_one_line_error(&output, &["datastore", "bogus://127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn bad_token_file_is_a_one_line_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    fs::write(&tokens, "t1,alice,1001,\"system:masters\"\nt2,bob\n").unwrap();
    let port = free_port().to_string();
    let data_dir = dir.path().join("data");
    let output = run_krust(
        [
            "server",
            "--port",
            &port,
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--token-auth-file",
            tokens.to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert_one_line_error(&output, &["tokens.csv", "line 2"]);
}
