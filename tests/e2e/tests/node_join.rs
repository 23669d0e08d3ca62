//! Node joining with a bootstrap token (TLS bootstrapping), against a real server: the
//! token's identity creates a CertificateSigningRequest for a kubelet client
//! certificate, the approver approves it after a SubjectAccessReview, the signer signs
//! it with the cluster CA, and the certificate then authenticates as the node, limited
//! by the Node authorizer and NodeRestriction. Clients: kube-rs and the real kubectl.

use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use krust_e2e::TestServer;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(30);

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// `[a-z0-9]{n}` from the clock and a counter (unique enough within one test run).
fn token_part(n: usize, seed: u64) -> String {
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut x = seed
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            alphabet[((x >> 33) % 36) as usize] as char
        })
        .collect()
}

/// Writes a bootstrap token Secret as the admin; returns the token `<id>.<secret>`.
fn create_token(
    server: &TestServer,
    seed: u64,
    expiration: chrono::DateTime<chrono::Utc>,
) -> String {
    let id = token_part(6, seed);
    let secret = token_part(16, seed.wrapping_add(17));
    let manifest = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "stringData": {
            "token-id": id, "token-secret": secret,
            "usage-bootstrap-authentication": "true",
            "expiration": expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        },
    });
    let out = server.kubectl_stdin(["apply", "-f", "-"], &manifest.to_string());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("{id}.{secret}")
}

fn ca_pem(server: &TestServer) -> Vec<u8> {
    std::fs::read(server.data_dir().join("tls/ca.crt")).expect("the server's CA")
}

fn token_client(server: &TestServer, token: &str) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.auth_info.token = Some(token.to_string().into());
    config.root_cert = Some(pem_certs(&ca_pem(server)));
    kube::Client::try_from(config).unwrap()
}

fn cert_client(server: &TestServer, cert_pem: &str, key_pem: &str) -> kube::Client {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {
            "server": server.url(),
            "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca_pem(server)),
        }}],
        "users": [{"name": "u", "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem),
        }}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let kubeconfig: kube::config::Kubeconfig = serde_json::from_value(kubeconfig).unwrap();
    let config = futures::executor::block_on(kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &Default::default(),
    ))
    .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .map(|block| {
            let body: String = block
                .split("-----END CERTIFICATE-----")
                .next()
                .unwrap()
                .split_whitespace()
                .collect();
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap()
        })
        .collect()
}

/// A PEM certificate request and its key, as a joining node makes them.
fn request(common_name: &str, organization: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, organization);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    (csr, key.serialize_pem())
}

fn csr_object(name: &str, request_pem: &str) -> CertificateSigningRequest {
    serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    }))
    .unwrap()
}

fn condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

async fn wait_csr(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    what: &str,
    done: impl Fn(&CertificateSigningRequest) -> bool,
) -> CertificateSigningRequest {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let csr = api.get(name).await.unwrap();
        if done(&csr) {
            return csr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CSR {name} not {what} within {DEADLINE:?}: {:?}",
            csr.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_code<T: std::fmt::Debug>(result: kube::Result<T>) -> u16 {
    match result {
        Err(kube::Error::Api(status)) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A bootstrap token's identity gets a kubelet client certificate approved and signed
/// without a person; the certificate is the node, the Node authorizer and
/// NodeRestriction hold it to its own objects; bad tokens get 401; a request that is
/// not for a node stays pending until `kubectl certificate approve`.
#[test]
fn bootstrap_token_gets_a_node_certificate_limited_to_its_node() {
    let server = TestServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let admin = server.client().await;
        let future = chrono::Utc::now() + chrono::Duration::hours(1);
        let token = create_token(&server, 1, future);
        let id = token.split('.').next().unwrap().to_string();
        let expired = create_token(
            &server,
            2,
            chrono::Utc::now() - chrono::Duration::minutes(1),
        );

        // Unknown, wrong-secret and expired tokens: 401.
        let unknown = format!("{}.{}", token_part(6, 3), token_part(16, 4));
        let wrong_secret = format!("{id}.{}", token_part(16, 5));
        for bad in [unknown.as_str(), wrong_secret.as_str(), expired.as_str()] {
            let api: Api<Namespace> = Api::all(token_client(&server, bad));
            assert_eq!(
                status_code(api.list(&Default::default()).await),
                401,
                "{bad}"
            );
        }

        // The bootstrap identity.
        let bootstrap = token_client(&server, &token);
        let review: SelfSubjectReview = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
        }))
        .unwrap();
        let me = Api::<SelfSubjectReview>::all(bootstrap.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        let user = me.status.unwrap().user_info.unwrap();
        assert_eq!(
            user.username.as_deref(),
            Some(format!("system:bootstrap:{id}").as_str())
        );
        assert!(
            user.groups
                .unwrap()
                .contains(&"system:bootstrappers".to_string())
        );
        // It may not read Secrets.
        let secrets: Api<Secret> = Api::namespaced(bootstrap.clone(), "kube-system");
        assert_eq!(status_code(secrets.list(&Default::default()).await), 403);

        // A request that is not a node's (wrong CN) first, then the node's.
        let csrs: Api<CertificateSigningRequest> = Api::all(bootstrap.clone());
        let node = unique("joiner");
        let other_csr = unique("not-a-node");
        let (other_pem, _) = request("alice", "system:nodes");
        csrs.create(&PostParams::default(), &csr_object(&other_csr, &other_pem))
            .await
            .unwrap();
        let node_csr = unique("node-csr");
        let (node_pem, node_key) = request(&format!("system:node:{node}"), "system:nodes");
        let created = csrs
            .create(&PostParams::default(), &csr_object(&node_csr, &node_pem))
            .await
            .unwrap();
        // The requester was stamped by the server, not taken from the body.
        assert_eq!(
            created.spec.username.as_deref(),
            Some(format!("system:bootstrap:{id}").as_str())
        );
        let signed = wait_csr(&csrs, &node_csr, "signed", |c| {
            c.status
                .as_ref()
                .and_then(|s| s.certificate.as_ref())
                .is_some_and(|c| !c.0.is_empty())
        })
        .await;
        assert!(condition(&signed, "Approved"));
        let cert_pem = String::from_utf8(signed.status.unwrap().certificate.unwrap().0).unwrap();

        // The wrong-CN request was seen before and is still pending.
        let pending = csrs.get(&other_csr).await.unwrap();
        assert!(
            !condition(&pending, "Approved") && !condition(&pending, "Denied"),
            "{:?}",
            pending.status
        );

        // The certificate is the node.
        let node_client = cert_client(&server, &cert_pem, &node_key);
        let me = Api::<SelfSubjectReview>::all(node_client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        let user = me.status.unwrap().user_info.unwrap();
        assert_eq!(
            user.username.as_deref(),
            Some(format!("system:node:{node}").as_str())
        );
        assert!(user.groups.unwrap().contains(&"system:nodes".to_string()));

        // Its own Node: create and get. Another Node: no changes. Secrets: no.
        let nodes_as_node: Api<Node> = Api::all(node_client.clone());
        let own: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": node},
        }))
        .unwrap();
        nodes_as_node
            .create(&PostParams::default(), &own)
            .await
            .unwrap();
        nodes_as_node.get(&node).await.unwrap();
        let other_node = unique("other-node");
        let other: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": other_node},
        }))
        .unwrap();
        let nodes_as_admin: Api<Node> = Api::all(admin.clone());
        nodes_as_admin
            .create(&PostParams::default(), &other)
            .await
            .unwrap();
        let label = json!({"metadata": {"labels": {"krust.test/by-other-node": "yes"}}});
        let denied = nodes_as_node
            .patch(&other_node, &PatchParams::default(), &Patch::Merge(&label))
            .await;
        assert_eq!(status_code(denied), 403);
        let secret_name = unique("not-for-the-node");
        let secret: Secret = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
            "stringData": {"k": "v"},
        }))
        .unwrap();
        Api::<Secret>::namespaced(admin.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let node_secrets: Api<Secret> = Api::namespaced(node_client.clone(), "default");
        assert_eq!(status_code(node_secrets.get(&secret_name).await), 403);
        // NodeRestriction: its own Node may not get node-restriction labels either.
        let restricted =
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/pool": "x"}}});
        let denied = nodes_as_node
            .patch(&node, &PatchParams::default(), &Patch::Merge(&restricted))
            .await;
        assert_eq!(status_code(denied), 403);

        // A person approves the pending request with kubectl; the kubelet signer then
        // refuses its CN with a Failed condition.
        let out = server.kubectl(["certificate", "approve", &other_csr]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let failed = wait_csr(&csrs, &other_csr, "failed", |c| condition(c, "Failed")).await;
        assert!(condition(&failed, "Approved"));
        assert!(failed.status.unwrap().certificate.is_none());

        // Clean up.
        let admin_csrs: Api<CertificateSigningRequest> = Api::all(admin.clone());
        for name in [&node_csr, &other_csr] {
            admin_csrs.delete(name, &Default::default()).await.unwrap();
        }
        for name in [&node, &other_node] {
            nodes_as_admin
                .delete(name, &Default::default())
                .await
                .unwrap();
        }
        Api::<Secret>::namespaced(admin.clone(), "default")
            .delete(&secret_name, &Default::default())
            .await
            .unwrap();
    });
}

/// `kubectl certificate deny` on a pending request: Denied, never signed.
#[test]
fn kubectl_denies_a_pending_request() {
    let server = TestServer::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let admin = server.client().await;
        let csrs: Api<CertificateSigningRequest> = Api::all(admin);
        let name = unique("to-deny");
        // Not a node's certificate (CN bob): the approver leaves it for a person.
        let (pem, _) = request("bob", "devs");
        csrs.create(&PostParams::default(), &csr_object(&name, &pem))
            .await
            .unwrap();
        let out = server.kubectl(["certificate", "deny", &name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let denied = wait_csr(&csrs, &name, "denied", |c| condition(c, "Denied")).await;
        assert!(!condition(&denied, "Approved"));
        assert!(denied.status.unwrap().certificate.is_none());
        csrs.delete(&name, &Default::default()).await.unwrap();
    });
}

/// `krust token create` writes a bootstrap token Secret through the API and prints the
/// token, which then authenticates as `system:bootstrap:<id>`.
#[test]
fn krust_token_create_prints_a_working_bootstrap_token() {
    let server = TestServer::start();
    let kubeconfig = server.kubeconfig_path();
    let out = krust_e2e::run_krust(
        [
            "token",
            "create",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--ttl",
            "1h",
        ],
        DEADLINE,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (id, _) = token.split_once('.').expect("<id>.<secret>");
    let expiration = server.kubectl_ok([
        "get",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
        "-o",
        "jsonpath={.data.expiration}",
    ]);
    let expiration = base64::engine::general_purpose::STANDARD
        .decode(expiration.trim())
        .unwrap();
    let expiration =
        chrono::DateTime::parse_from_rfc3339(std::str::from_utf8(&expiration).unwrap()).unwrap();
    let left = expiration
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((3500..=3600).contains(&left), "{left}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    runtime.block_on(async {
        let review: SelfSubjectReview = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview", "metadata": {},
        }))
        .unwrap();
        let me = Api::<SelfSubjectReview>::all(token_client(&server, &token))
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        let user = me.status.unwrap().user_info.unwrap();
        assert_eq!(user.username.unwrap(), format!("system:bootstrap:{id}"));
    });
    server.kubectl_ok([
        "delete",
        "secret",
        "-n",
        "kube-system",
        &format!("bootstrap-token-{id}"),
    ]);
}
