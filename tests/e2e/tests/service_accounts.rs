//! Service account tokens against a real server, through the machine's kubectl:
//! TokenRequest (`kubectl create token`), the tokens as bearer credentials (with RBAC
//! on the account), tokens bound to a pod dying with it, OIDC discovery, and the
//! ServiceAccount admission mounting a token volume into pods.

use std::process::Output;
use std::time::Duration;

use krust_e2e::{TestServer, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kubectl as the bearer of `token` alone (no client certificate).
fn kubectl_as(server: &TestServer, token: &str, args: &[&str]) -> Output {
    let bare = server.data_dir().join("bare.kubeconfig");
    std::fs::write(&bare, "apiVersion: v1\nkind: Config\n").unwrap();
    let mut command = std::process::Command::new(krust_e2e::kubectl_bin());
    command
        .arg(format!("--kubeconfig={}", bare.display()))
        .arg(format!("--server={}", server.url()))
        .arg(format!(
            "--certificate-authority={}",
            server.data_dir().join("tls/ca.crt").display()
        ))
        .arg(format!("--token={token}"))
        .args(args)
        .env_remove("KUBECONFIG");
    command.output().expect("cannot run kubectl")
}

fn whoami(server: &TestServer, token: &str) -> Output {
    kubectl_as(
        server,
        token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
}

fn wait_default_account(server: &TestServer, namespace: &str) {
    wait_until("the default ServiceAccount exists", TIMEOUT, || {
        server
            .kubectl(["get", "serviceaccount", "default", "-n", namespace])
            .status
            .success()
    });
}

/// A new namespace and a token of its default ServiceAccount.
fn namespace_with_token(server: &TestServer, namespace: &str) -> String {
    server.kubectl_ok(["create", "namespace", namespace]);
    wait_default_account(server, namespace);
    let token = server.kubectl_ok(["create", "token", "default", "-n", namespace]);
    token.trim().to_string()
}

/// `kubectl create token` gives a token that authenticates as the account, with the
/// account's RBAC; bad requests get clear errors; discovery documents are served.
#[test]
fn create_token_authenticates_as_the_service_account() {
    let server = TestServer::start();
    let token = namespace_with_token(&server, "tokens");
    let token = token.as_str();
    let me = whoami(&server, token);
    assert!(me.status.success(), "{}", text(&me));
    assert_eq!(
        String::from_utf8_lossy(&me.stdout),
        "system:serviceaccount:tokens:default"
    );
    // RBAC applies to the account: nothing until a binding, then what it grants.
    let denied = kubectl_as(&server, token, &["get", "pods", "-n", "tokens"]);
    assert!(!denied.status.success());
    assert!(text(&denied).contains("forbidden"), "{}", text(&denied));
    server.kubectl_ok([
        "create",
        "rolebinding",
        "view-default",
        "-n",
        "tokens",
        "--clusterrole=view",
        "--serviceaccount=tokens:default",
    ]);
    wait_until("the binding lets the account list pods", TIMEOUT, || {
        kubectl_as(&server, token, &["get", "pods", "-n", "tokens"])
            .status
            .success()
    });
    // OIDC discovery, allowed to every service account.
    let config = kubectl_as(
        &server,
        token,
        &["get", "--raw", "/.well-known/openid-configuration"],
    );
    assert!(config.status.success(), "{}", text(&config));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    assert_eq!(
        config["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    let keys = kubectl_as(&server, token, &["get", "--raw", "/openid/v1/jwks"]);
    let keys: serde_json::Value = serde_json::from_slice(&keys.stdout).unwrap();
    assert_eq!(keys["keys"][0]["alg"], "ES256");

    // Bad input: too short, an unknown account; a forged token is refused.
    let short = server.kubectl([
        "create",
        "token",
        "default",
        "-n",
        "tokens",
        "--duration=5m",
    ]);
    assert!(!short.status.success());
    assert!(
        text(&short).contains("may not specify a duration less than 10 minutes"),
        "{}",
        text(&short)
    );
    let missing = server.kubectl(["create", "token", "nobody", "-n", "tokens"]);
    assert!(!missing.status.success());
    assert!(text(&missing).contains("not found"), "{}", text(&missing));
    let forged = format!("{}x", token);
    let refused = whoami(&server, &forged);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Unauthorized"),
        "{}",
        text(&refused)
    );

    // Deleting the account ends its tokens.
    server.kubectl_ok(["delete", "serviceaccount", "default", "-n", "tokens"]);
    wait_until("the deleted account's token is refused", TIMEOUT, || {
        !whoami(&server, token).status.success()
    });
}

/// A token bound to a pod works while the pod exists and stops when it is deleted;
/// new pods get the token volume mounted unless they opt out; a pod naming an
/// account that does not exist is refused.
#[test]
fn pod_tokens_and_the_service_account_admission() {
    let server = TestServer::start();
    server.kubectl_ok(["create", "namespace", "bound"]);
    wait_default_account(&server, "bound");
    server.apply_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: holder, namespace: bound}\n\
         spec: {containers: [{name: c, image: krust/busybox:1}]}\n",
    );
    let volumes = server.kubectl_ok([
        "get",
        "pod",
        "holder",
        "-n",
        "bound",
        "-o",
        "jsonpath={.spec.volumes[0].name} {.spec.containers[0].volumeMounts[0].mountPath} {.spec.serviceAccountName}",
    ]);
    assert!(
        volumes.starts_with("kube-api-access-")
            && volumes.contains(" /var/run/secrets/kubernetes.io/serviceaccount default"),
        "{volumes}"
    );
    let token = server.kubectl_ok([
        "create",
        "token",
        "default",
        "-n",
        "bound",
        "--bound-object-kind=Pod",
        "--bound-object-name=holder",
    ]);
    let token = token.trim();
    let me = whoami(&server, token);
    assert!(me.status.success(), "{}", text(&me));
    let unknown_pod = server.kubectl([
        "create",
        "token",
        "default",
        "-n",
        "bound",
        "--bound-object-kind=Pod",
        "--bound-object-name=nobody",
    ]);
    assert!(!unknown_pod.status.success(), "{}", text(&unknown_pod));
    server.kubectl_ok([
        "delete",
        "pod",
        "holder",
        "-n",
        "bound",
        "--grace-period=0",
        "--force",
    ]);
    wait_until(
        "the token bound to the deleted pod is refused",
        TIMEOUT,
        || !whoami(&server, token).status.success(),
    );

    server.apply_yaml(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: no-token, namespace: bound}\n\
         spec: {automountServiceAccountToken: false, containers: [{name: c, image: krust/busybox:1}]}\n",
    );
    let volumes = server.kubectl_ok([
        "get",
        "pod",
        "no-token",
        "-n",
        "bound",
        "-o",
        "jsonpath={.spec.volumes}",
    ]);
    assert_eq!(volumes.trim(), "");
    let refused = server.kubectl_stdin(
        ["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: wrong-account, namespace: bound}\n\
         spec: {serviceAccountName: nobody, containers: [{name: c, image: krust/busybox:1}]}\n",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("serviceaccount \"nobody\" not found"),
        "{}",
        text(&refused)
    );
    assert!(
        !server
            .kubectl(["get", "pod", "wrong-account", "-n", "bound"])
            .status
            .success()
    );
}

/// Opening pods/exec with GET (as WebSocket clients do) needs `create` as well as
/// `get` on pods/exec: reading the subresource does not let one run commands.
#[test]
fn exec_over_get_needs_create_permission() {
    let server = TestServer::start();
    let token = namespace_with_token(&server, "streams");
    let token = token.as_str();
    let exec = "/api/v1/namespaces/streams/pods/nobody/exec?command=true&stdout=true";
    let role = |verbs: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
             metadata: {{name: exec, namespace: streams}}\n\
             rules: [{{apiGroups: [\"\"], resources: [pods, pods/exec], verbs: [{verbs}]}}]\n\
             ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
             metadata: {{name: exec, namespace: streams}}\n\
             roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: exec}}\n\
             subjects: [{{kind: ServiceAccount, name: default, namespace: streams}}]\n"
        )
    };
    server.apply_yaml(&role("get"));
    wait_until("get on pods is granted", TIMEOUT, || {
        let pod = "/api/v1/namespaces/streams/pods/nobody";
        text(&kubectl_as(&server, token, &["get", "--raw", pod])).contains("not found")
    });
    let refused = kubectl_as(&server, token, &["get", "--raw", exec]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("cannot create resource \"pods/exec\""),
        "{}",
        text(&refused)
    );
    server.apply_yaml(&role("get, create"));
    wait_until(
        "with create the request reaches the pod lookup",
        TIMEOUT,
        || text(&kubectl_as(&server, token, &["get", "--raw", exec])).contains("not found"),
    );
}
