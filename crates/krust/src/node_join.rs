//! TLS bootstrapping of `krust agent` (upstream's kubelet `--bootstrap-kubeconfig`):
//! with a bootstrap token (`<id>.<secret>`), the agent makes its own key, asks for a
//! client certificate with a CertificateSigningRequest (CN `system:node:<name>`, O
//! `system:nodes`, signer `kubernetes.io/kube-apiserver-client-kubelet`), waits for the
//! controller manager to approve and sign it, keeps key, certificate and a kubeconfig
//! under `<agent-data-dir>/pki/` (mode 0600) and from then on is the node
//! `system:node:<name>`. A later start reuses the stored certificate while it is valid
//! for that node, without a new request.
//!
//! Rotation ([`renew_when_due`], upstream's `--rotate-certificates`): at a random point
//! between 70% and 90% of the certificate's lifetime the node asks for a new one with
//! its own identity (auto-approved through `certificatesigningrequests/selfnodeclient`),
//! stores it, and the agent restarts itself on it (containers keep running).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// The signer of kubelet client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// How long the agent waits for its request to be approved and signed.
const SIGNING_DEADLINE: Duration = Duration::from_secs(300);
/// A stored certificate closer than this (or than a tenth of its lifetime) to its
/// end is not reused.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// Whether `token` has the form of a bootstrap token: six then sixteen characters of
/// `[a-z0-9]`, joined by a dot.
pub fn is_bootstrap_token(token: &str) -> bool {
    let Some((id, secret)) = token.split_once('.') else {
        return false;
    };
    let valid = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    valid(id, 6) && valid(secret, 16)
}

/// Where the node's credentials live.
pub struct Paths {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Paths {
    pub fn new(agent_data_dir: &Path) -> Paths {
        let dir = agent_data_dir.join("pki");
        Paths {
            key: dir.join("kubelet-client.key"),
            cert: dir.join("kubelet-client.crt"),
            kubeconfig: agent_data_dir.join("kubelet.kubeconfig"),
        }
    }
}

/// The node's certificate and key: the stored ones when still valid for `node_name`,
/// else new ones from a CertificateSigningRequest made with `bootstrap` (the
/// bootstrap token's client). Writes them and the kubeconfig.
pub async fn ensure_credentials(
    bootstrap: kube::Client,
    node_name: &str,
    paths: &Paths,
    server: &str,
    ca_pem: Option<&[u8]>,
) -> Result<(String, String)> {
    if let (Ok(cert), Ok(key)) = (
        std::fs::read_to_string(&paths.cert),
        std::fs::read_to_string(&paths.key),
    ) {
        match usable(&cert, node_name, std::time::SystemTime::now()) {
            Ok(()) => {
                tracing::info!(cert = %paths.cert.display(), "reusing the node's client certificate");
                return Ok((cert, key));
            }
            Err(why) => tracing::info!(%why, "requesting a new node client certificate"),
        }
    }
    let (request, key) = certificate_request(node_name)?;
    let cert = request_certificate(bootstrap, node_name, &request).await?;
    if let Some(parent) = paths.key.parent() {
        crate::pki::create_private_dir(parent)?;
    }
    crate::pki::write_private(&paths.key, &key)?;
    crate::pki::write_private(&paths.cert, &cert)?;
    crate::pki::write_private(&paths.kubeconfig, &kubeconfig(server, ca_pem, &cert, &key))?;
    tracing::info!(cert = %paths.cert.display(), "got the node's client certificate");
    Ok((cert, key))
}

/// Why a stored certificate cannot be used for `node_name` at `now`, if it cannot.
pub fn usable(cert_pem: &str, node_name: &str, now: std::time::SystemTime) -> Result<(), String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("the stored certificate is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| format!("the stored certificate does not parse: {e}"))?;
    let expected = format!("system:node:{node_name}");
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("");
    if common_name != expected {
        return Err(format!(
            "the stored certificate is for {common_name:?}, not {expected:?}"
        ));
    }
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let validity = cert.validity();
    let (start, end) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let margin = (RENEW_BEFORE.as_secs() as i64).min((end - start) / 10);
    if now < start || now + margin >= end {
        return Err("the stored certificate is expired or about to expire".into());
    }
    Ok(())
}

/// A new key and a PEM certificate request for `system:node:<node_name>`.
pub fn certificate_request(node_name: &str) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate().context("cannot generate the node's key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .context("cannot make the certificate request")?;
    Ok((request, key.serialize_pem()))
}

/// Creates the CSR and waits (a watch, with a deadline) until it is signed.
async fn request_certificate(
    client: kube::Client,
    node_name: &str,
    request: &str,
) -> Result<String> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let csr: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": format!("node-csr-{node_name}-")},
        "spec": {
            "request": BASE64.encode(request),
            "signerName": SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    }))?;
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .context("cannot create the node's CertificateSigningRequest")?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = %name, "waiting for the node's certificate signing request to be approved and signed");
    let condition = |csr: Option<&CertificateSigningRequest>| {
        let Some(status) = csr.and_then(|c| c.status.as_ref()) else {
            return false;
        };
        let signed = status.certificate.as_ref().is_some_and(|c| !c.0.is_empty());
        let refused = status
            .conditions
            .iter()
            .flatten()
            .any(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True");
        signed || refused
    };
    let done = tokio::time::timeout(
        SIGNING_DEADLINE,
        kube::runtime::wait::await_condition(api.clone(), &name, condition),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "certificate signing request {name} was not signed within {} s: is the controller manager running, and may the token create certificatesigningrequests/nodeclient? (`kubectl certificate approve {name}` approves it by hand)",
            SIGNING_DEADLINE.as_secs()
        )
    })?
    .with_context(|| format!("cannot watch certificate signing request {name}"))?;
    let status = done.and_then(|c| c.status).unwrap_or_default();
    if let Some(refusal) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
    {
        bail!(
            "certificate signing request {name} was {}: {}",
            refusal.type_.to_lowercase(),
            refusal.message.as_deref().unwrap_or("no reason given")
        );
    }
    let cert = status.certificate.map(|c| c.0).unwrap_or_default();
    String::from_utf8(cert).with_context(|| format!("the certificate of {name} is not PEM"))
}

/// The validity window of a PEM certificate, in Unix seconds.
fn validity(cert_pem: &str) -> Result<(i64, i64)> {
    let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the node's certificate is not PEM: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the node's certificate does not parse: {e}"))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

/// When to renew a certificate valid from `start` to `end`: at `fraction` (0.7 to
/// 0.9) of its lifetime.
fn renewal_time(start: i64, end: i64, fraction: f64) -> i64 {
    start + ((end - start) as f64 * fraction.clamp(0.7, 0.9)) as i64
}

/// Waits until `cert_pem` is due for renewal, then gets a new certificate with the
/// node's own `client` and stores it (key, certificate, kubeconfig). Returns once the
/// new one is stored: the caller restarts on it.
pub async fn renew_when_due(
    client: kube::Client,
    node_name: &str,
    paths: &Paths,
    server: &str,
    ca_pem: Option<&[u8]>,
    cert_pem: &str,
) -> Result<()> {
    let (start, end) = validity(cert_pem)?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let jitter = since_epoch.subsec_nanos() as f64 / 1e9;
    let due = renewal_time(start, end, 0.7 + 0.2 * jitter);
    let now = since_epoch.as_secs() as i64;
    tracing::info!(
        renew_in_s = (due - now).max(0),
        "the node's client certificate will be renewed"
    );
    tokio::time::sleep(Duration::from_secs((due - now).max(0) as u64)).await;
    let (request, key) = certificate_request(node_name)?;
    let cert = request_certificate(client, node_name, &request)
        .await
        .context("cannot renew the node's client certificate")?;
    crate::pki::write_private(&paths.key, &key)?;
    crate::pki::write_private(&paths.cert, &cert)?;
    crate::pki::write_private(&paths.kubeconfig, &kubeconfig(server, ca_pem, &cert, &key))?;
    tracing::info!(cert = %paths.cert.display(), "renewed the node's client certificate");
    Ok(())
}

/// A kubeconfig for the node's certificate (for people and tools on the node).
fn kubeconfig(server: &str, ca_pem: Option<&[u8]>, cert: &str, key: &str) -> String {
    let cluster = match ca_pem {
        Some(ca) => json!({"server": server, "certificate-authority-data": BASE64.encode(ca)}),
        None => json!({"server": server, "insecure-skip-tls-verify": true}),
    };
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "krust", "cluster": cluster}],
        "users": [{"name": "node", "user": {
            "client-certificate-data": BASE64.encode(cert),
            "client-key-data": BASE64.encode(key),
        }}],
        "contexts": [{"name": "krust", "context": {"cluster": "krust", "user": "node"}}],
        "current-context": "krust",
    });
    serde_yaml::to_string(&config).expect("a JSON value always serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_between_70_and_90_percent_of_the_lifetime() {
        assert_eq!(renewal_time(1000, 2000, 0.8), 1800);
        assert_eq!(renewal_time(1000, 2000, 0.1), 1700);
        assert_eq!(renewal_time(1000, 2000, 1.5), 1900);
    }

    #[test]
    fn bootstrap_tokens_are_told_from_other_tokens() {
        assert!(is_bootstrap_token("abcdef.0123456789abcdef"));
        for other in [
            "abcdef0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcde",
            "some-static-token",
            "",
        ] {
            assert!(!is_bootstrap_token(other), "{other}");
        }
    }

    #[test]
    fn the_request_is_a_kubelet_client_request_and_certificates_are_checked_before_reuse() {
        let (request, key_pem) = certificate_request("n1").unwrap();
        let parsed = rcgen::CertificateSigningRequestParams::from_pem(&request).unwrap();
        let names: Vec<String> = parsed
            .params
            .distinguished_name
            .iter()
            .map(|(k, v)| format!("{k:?}={v:?}"))
            .collect();
        let joined = names.join(",");
        assert!(joined.contains("system:node:n1"), "{joined}");
        assert!(joined.contains("system:nodes"), "{joined}");
        assert!(parsed.params.subject_alt_names.is_empty());

        // Signed by a throwaway CA for an hour: usable for n1 now, not for n2, not
        // once (nearly) expired.
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
        let mut parsed = parsed;
        let now = time::OffsetDateTime::now_utc();
        parsed.params.not_before = now - time::Duration::minutes(5);
        parsed.params.not_after = now + time::Duration::hours(1);
        let cert = parsed.signed_by(&issuer).unwrap().pem();
        let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
        assert!(!key.serialize_pem().is_empty());
        let system_now = std::time::SystemTime::now();
        assert_eq!(usable(&cert, "n1", system_now), Ok(()));
        assert!(
            usable(&cert, "n2", system_now)
                .unwrap_err()
                .contains("system:node:n2")
        );
        let later = system_now + Duration::from_secs(3600 - 60);
        assert!(usable(&cert, "n1", later).unwrap_err().contains("expire"));
        assert!(usable("garbage", "n1", system_now).is_err());
    }
}
