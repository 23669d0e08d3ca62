//! Node client certificates from CertificateSigningRequests, as upstream's
//! `csrapproving` and `csrsigning` controllers.
//!
//! The approver approves a pending `kubernetes.io/kube-apiserver-client-kubelet`
//! request when it asks for a kubelet client certificate (CN `system:node:<name>`, O
//! `system:nodes`, no alternative names, client usages) and a SubjectAccessReview says
//! its requester may create `certificatesigningrequests/nodeclient` (a new node, with
//! a bootstrap token) or, when the requester is that very node renewing,
//! `certificatesigningrequests/selfnodeclient`. Anything else stays pending for a
//! person (`kubectl certificate approve|deny`).
//!
//! The signer signs approved requests of the `kube-apiserver-client-kubelet` and
//! `kube-apiserver-client` signers with the cluster CA: subject and names from the
//! request, usages from the spec, valid for `expirationSeconds` (at most a year),
//! backdated five minutes. A request the signer refuses gets a Failed condition.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rcgen::{
    CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::json;

/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other API client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The longest validity the signer gives (upstream's `--cluster-signing-duration`).
const MAX_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start this long before they are signed, for clocks slightly behind.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster CA the signer signs with (PEM).
#[derive(Clone, Debug)]
pub struct SigningCa {
    pub cert_pem: String,
    pub key_pem: String,
    /// The longest a signed certificate is valid (`--cluster-signing-duration`).
    pub max_validity: Duration,
}

impl SigningCa {
    /// The CA with upstream's default longest validity, a year.
    pub fn new(cert_pem: String, key_pem: String) -> SigningCa {
        SigningCa {
            cert_pem,
            key_pem,
            max_validity: MAX_VALIDITY,
        }
    }
}

/// Runs the approver and, with a CA, the signer, until the process ends.
pub async fn run(client: kube::Client, ca: Option<SigningCa>) -> Result<()> {
    let issuer = match &ca {
        Some(ca) => {
            let key = KeyPair::from_pem(&ca.key_pem).context("cannot read the signing CA key")?;
            Some((
                Issuer::from_ca_cert_pem(&ca.cert_pem, key)
                    .context("cannot use the cluster CA to sign")?,
                ca.max_validity,
            ))
        }
        None => {
            tracing::warn!("no signing CA: approved CSRs are not signed");
            None
        }
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut events = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    // A request that could not be handled (the API server did not answer) is read
    // again and retried after RETRY_DELAY.
    let (retry_tx, mut retry_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    loop {
        let csr = tokio::select! {
            event = events.next() => match event {
                Some(Ok(csr)) => csr,
                Some(Err(_)) => continue,
                None => return Ok(()),
            },
            Some(name) = retry_rx.recv() => match api.get_opt(&name).await {
                Ok(Some(csr)) => csr,
                Ok(None) => continue,
                Err(_) => {
                    schedule_retry(&retry_tx, name);
                    continue;
                }
            },
        };
        if let Err(error) = reconcile(&client, &api, issuer.as_ref(), &csr).await {
            let name = csr.metadata.name.clone().unwrap_or_default();
            tracing::warn!(
                csr = %name,
                error = format!("{error:#}"),
                "cannot handle the certificate signing request; retrying"
            );
            schedule_retry(&retry_tx, name);
        }
    }
}

/// How long a failed request waits before it is tried again.
const RETRY_DELAY: Duration = Duration::from_secs(5);

fn schedule_retry(retry: &tokio::sync::mpsc::UnboundedSender<String>, name: String) {
    let retry = retry.clone();
    tokio::spawn(async move {
        tokio::time::sleep(RETRY_DELAY).await;
        let _ = retry.send(name);
    });
}

async fn reconcile(
    client: &kube::Client,
    api: &Api<CertificateSigningRequest>,
    issuer: Option<&(Issuer<'static, KeyPair>, Duration)>,
    csr: &CertificateSigningRequest,
) -> Result<()> {
    let name = csr.metadata.name.clone().unwrap_or_default();
    let approved = has_condition(csr, "Approved");
    if !approved && !has_condition(csr, "Denied") {
        // As upstream's sarapprove: the renewal permission first, then the new-node one.
        let mut tried = Vec::new();
        let mut allowed = false;
        for subresource in recognize(csr) {
            tried.push(subresource);
            if requester_may(client, csr, subresource).await? {
                allowed = true;
                break;
            }
        }
        if !allowed {
            if !tried.is_empty() {
                tracing::info!(csr = %name, ?tried, "not auto-approved: the requester may not create it");
            }
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let approval = json!({"status": {"conditions": [{
            "type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
            "lastUpdateTime": now, "lastTransitionTime": now,
        }]}});
        api.patch_subresource(
            "approval",
            &name,
            &PatchParams::default(),
            &Patch::Merge(&approval),
        )
        .await
        .context("cannot approve")?;
        tracing::info!(csr = %name, "auto-approved a node client certificate request");
        return Ok(());
    }
    let signed = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let signer = csr.spec.signer_name.as_str();
    if !approved
        || signed
        || has_condition(csr, "Failed")
        || ![KUBELET_CLIENT_SIGNER, CLIENT_SIGNER].contains(&signer)
    {
        return Ok(());
    }
    let Some((issuer, max_validity)) = issuer else {
        return Ok(());
    };
    let status = match sign(issuer, csr, time::OffsetDateTime::now_utc(), *max_validity) {
        Ok(pem) => json!({"status": {"certificate": k8s_openapi::ByteString(pem.into_bytes())}}),
        Err(reason) => {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            tracing::info!(csr = %name, %reason, "refused to sign");
            let mut conditions: Vec<serde_json::Value> = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .map(|c| serde_json::to_value(c).unwrap_or_default())
                .collect();
            conditions.push(json!({
                "type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                "message": reason, "lastUpdateTime": now, "lastTransitionTime": now,
            }));
            json!({"status": {"conditions": conditions}})
        }
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .context("cannot write the certificate")?;
    Ok(())
}

/// Asks the API server whether the CSR's requester may create `subresource` of
/// certificatesigningrequests.
async fn requester_may(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool> {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let spec = &csr.spec;
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "metadata": {},
        "spec": {
            "user": spec.username, "uid": spec.uid, "groups": spec.groups, "extra": spec.extra,
            "resourceAttributes": {
                "group": "certificates.k8s.io", "resource": "certificatesigningrequests",
                "subresource": subresource, "verb": "create",
            },
        },
    }))?;
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .context("cannot ask for a SubjectAccessReview")?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The permissions that would approve this request automatically, in the order they
/// are tried: `selfnodeclient` when the requester is the node the certificate names
/// (a renewal), then `nodeclient` (a new node); empty when it is not a kubelet client
/// certificate request.
pub fn recognize(csr: &CertificateSigningRequest) -> Vec<&'static str> {
    if csr.spec.signer_name != KUBELET_CLIENT_SIGNER {
        return Vec::new();
    }
    let Ok(request) = parse(csr) else {
        return Vec::new();
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let Ok(common_name) = validate_kubelet_client(&request, &usages) else {
        return Vec::new();
    };
    match csr.spec.username.as_deref() == Some(common_name.as_str()) {
        true => vec!["selfnodeclient", "nodeclient"],
        false => vec!["nodeclient"],
    }
}

/// Parses and verifies the request in a CSR's spec.
fn parse(csr: &CertificateSigningRequest) -> Result<CertificateSigningRequestParams, String> {
    let pem = std::str::from_utf8(&csr.spec.request.0)
        .map_err(|_| "the request is not PEM text".to_string())?;
    CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| format!("the request does not parse or verify: {e}"))
}

fn dn_values(request: &CertificateSigningRequestParams, kind: DnType) -> Vec<String> {
    request
        .params
        .distinguished_name
        .iter()
        .filter(|(k, _)| **k == kind)
        .map(|(_, v)| match v {
            DnValue::PrintableString(s) => s.to_string(),
            DnValue::Utf8String(s) => s.clone(),
            DnValue::Ia5String(s) => s.to_string(),
            DnValue::TeletexString(s) => s.to_string(),
            other => format!("{other:?}"),
        })
        .collect()
}

/// Checks a kubelet client certificate request as upstream's
/// ValidateKubeletClientCSR; returns its common name.
pub fn validate_kubelet_client(
    request: &CertificateSigningRequestParams,
    usages: &[String],
) -> Result<String, String> {
    let organizations = dn_values(request, DnType::OrganizationName);
    if organizations != ["system:nodes"] {
        return Err(format!(
            "subject organization is not system:nodes: {organizations:?}"
        ));
    }
    if !request.params.subject_alt_names.is_empty() {
        return Err("DNS, email, IP and URI subjectAltNames are not allowed".into());
    }
    let common_name = dn_values(request, DnType::CommonName)
        .into_iter()
        .next()
        .unwrap_or_default();
    if !common_name.starts_with("system:node:") || common_name.len() == "system:node:".len() {
        return Err(format!(
            "subject common name does not begin with system:node: {common_name:?}"
        ));
    }
    let mut sorted: Vec<&str> = usages.iter().map(String::as_str).collect();
    sorted.sort();
    sorted.dedup();
    let allowed: [&[&str]; 2] = [
        &["client auth", "digital signature"],
        &["client auth", "digital signature", "key encipherment"],
    ];
    if !allowed.contains(&sorted.as_slice()) {
        return Err(format!(
            "usages must be digital signature and client auth (and key encipherment), not {usages:?}"
        ));
    }
    Ok(common_name)
}

/// Checks the usages of a `kube-apiserver-client` request: client auth, optionally
/// digital signature and key encipherment, nothing else.
pub fn validate_client_usages(usages: &[String]) -> Result<(), String> {
    for usage in usages {
        if !["digital signature", "key encipherment", "client auth"].contains(&usage.as_str()) {
            return Err(format!("invalid usage for client certificate: {usage}"));
        }
    }
    if !usages.iter().any(|u| u == "client auth") {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

/// Signs an approved CSR; the PEM certificate, or why not (the reason of the Failed
/// condition).
pub fn sign(
    issuer: &Issuer<'_, KeyPair>,
    csr: &CertificateSigningRequest,
    now: time::OffsetDateTime,
    max_validity: Duration,
) -> Result<String, String> {
    let mut request = parse(csr)?;
    let usages = csr.spec.usages.clone().unwrap_or_default();
    match csr.spec.signer_name.as_str() {
        KUBELET_CLIENT_SIGNER => {
            validate_kubelet_client(&request, &usages)?;
        }
        CLIENT_SIGNER => validate_client_usages(&usages)?,
        other => return Err(format!("signer {other:?} is not one this signer serves")),
    }
    let params = &mut request.params;
    params.key_usages.clear();
    params.extended_key_usages.clear();
    for usage in &usages {
        match usage.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            _ => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
        }
    }
    params.key_usages.dedup();
    params.extended_key_usages.dedup();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    let validity = csr
        .spec
        .expiration_seconds
        .map(|s| Duration::from_secs(s.max(600) as u64))
        .unwrap_or(max_validity)
        .min(max_validity);
    // Short-lived certificates are backdated less, so most of their life is ahead.
    params.not_before = now - BACKDATE.min(validity / 10);
    params.not_after = now + validity;
    let certificate = request
        .signed_by(issuer)
        .map_err(|e| format!("cannot sign: {e}"))?;
    Ok(certificate.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn request(cn: &str, org: &str, san: Option<&str>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        if let Some(san) = san {
            params
                .subject_alt_names
                .push(rcgen::SanType::DnsName(san.try_into().unwrap()));
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(
        pem: String,
        username: &str,
        usages: &[&str],
        signer: &str,
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: k8s_openapi::ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                username: Some(username.into()),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    const USAGES: &[&str] = &["digital signature", "client auth"];

    #[test]
    fn recognizes_new_and_renewing_kubelet_client_requests() {
        let pem = request("system:node:n1", "system:nodes", None);
        let new = csr(
            pem.clone(),
            "system:bootstrap:abc123",
            USAGES,
            KUBELET_CLIENT_SIGNER,
        );
        assert_eq!(recognize(&new), ["nodeclient"]);
        let renew = csr(pem.clone(), "system:node:n1", USAGES, KUBELET_CLIENT_SIGNER);
        assert_eq!(recognize(&renew), ["selfnodeclient", "nodeclient"]);
        let other_signer = csr(pem, "system:node:n1", USAGES, CLIENT_SIGNER);
        assert!(recognize(&other_signer).is_empty());
    }

    #[test]
    fn other_requests_are_left_for_a_person() {
        let user = "system:bootstrap:abc123";
        for (pem, usages) in [
            (request("alice", "system:nodes", None), USAGES),
            (request("system:node:n1", "system:masters", None), USAGES),
            (
                request("system:node:n1", "system:nodes", Some("n1.example")),
                USAGES,
            ),
            (
                request("system:node:n1", "system:nodes", None),
                &["digital signature", "client auth", "server auth"][..],
            ),
        ] {
            assert!(recognize(&csr(pem, user, usages, KUBELET_CLIENT_SIGNER)).is_empty());
        }
        let mut garbage = csr(String::new(), user, USAGES, KUBELET_CLIENT_SIGNER);
        garbage.spec.request = k8s_openapi::ByteString(b"not a request".to_vec());
        assert!(recognize(&garbage).is_empty());
    }

    #[test]
    fn signs_with_the_ca_for_the_requested_time() {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap();
        let now = time::OffsetDateTime::now_utc();

        let mut request_csr = csr(
            request("system:node:n1", "system:nodes", None),
            "system:bootstrap:abc123",
            USAGES,
            KUBELET_CLIENT_SIGNER,
        );
        request_csr.spec.expiration_seconds = Some(3600);
        let pem = sign(&issuer, &request_csr, now, MAX_VALIDITY).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        let subject = cert.subject().to_string();
        assert!(subject.contains("CN=system:node:n1"), "{subject}");
        assert!(subject.contains("O=system:nodes"), "{subject}");
        let lifetime = cert.validity().not_after.timestamp() - now.unix_timestamp();
        assert!((3590..=3610).contains(&lifetime), "{lifetime}");
        let ca_der = x509_parser::pem::parse_x509_pem(ca_cert.pem().as_bytes())
            .unwrap()
            .1;
        let ca_parsed = ca_der.parse_x509().unwrap();
        cert.verify_signature(Some(ca_parsed.public_key())).unwrap();

        request_csr.spec.usages = Some(vec!["digital signature".into()]);
        assert!(sign(&issuer, &request_csr, now, MAX_VALIDITY).is_err());
    }

    fn issuer() -> Issuer<'static, KeyPair> {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::default();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        Issuer::from_ca_cert_pem(&ca_cert.pem(), ca_key).unwrap()
    }

    #[test]
    fn garbage_or_wrong_requests_are_refused_with_a_reason() {
        let issuer = issuer();
        let now = time::OffsetDateTime::now_utc();
        let user = "system:bootstrap:abc123";
        let mut garbage = csr(String::new(), user, USAGES, KUBELET_CLIENT_SIGNER);
        garbage.spec.request = k8s_openapi::ByteString(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                .to_vec(),
        );
        let reason = sign(&issuer, &garbage, now, MAX_VALIDITY).unwrap_err();
        assert!(reason.contains("does not parse"), "{reason}");
        garbage.spec.request = k8s_openapi::ByteString(vec![0xff, 0xfe]);
        assert!(
            sign(&issuer, &garbage, now, MAX_VALIDITY)
                .unwrap_err()
                .contains("PEM")
        );

        let wrong_cn = csr(
            request("alice", "system:nodes", None),
            user,
            USAGES,
            KUBELET_CLIENT_SIGNER,
        );
        assert!(
            sign(&issuer, &wrong_cn, now, MAX_VALIDITY)
                .unwrap_err()
                .contains("system:node:")
        );
        let server_usage = csr(
            request("alice", "devs", None),
            "alice",
            &["client auth", "server auth"],
            CLIENT_SIGNER,
        );
        assert!(
            sign(&issuer, &server_usage, now, MAX_VALIDITY)
                .unwrap_err()
                .contains("server auth")
        );
        let other_signer = csr(
            request("system:node:n1", "system:nodes", None),
            user,
            USAGES,
            "example.com/other",
        );
        assert!(sign(&issuer, &other_signer, now, MAX_VALIDITY).is_err());
    }

    #[test]
    fn client_signer_keeps_subject_and_gives_client_usages_for_a_year_at_most() {
        let issuer = issuer();
        let now = time::OffsetDateTime::now_utc();
        let mut request_csr = csr(
            request("alice", "devs", None),
            "alice",
            &["client auth", "key encipherment", "digital signature"],
            CLIENT_SIGNER,
        );
        request_csr.spec.expiration_seconds = Some(10 * 365 * 24 * 3600);
        let pem = sign(&issuer, &request_csr, now, MAX_VALIDITY).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        assert!(cert.subject().to_string().contains("CN=alice"));
        let lifetime = cert.validity().not_after.timestamp() - now.unix_timestamp();
        assert!(lifetime <= MAX_VALIDITY.as_secs() as i64 + 1, "{lifetime}");
        let start = now.unix_timestamp() - cert.validity().not_before.timestamp();
        assert!((295..=305).contains(&start), "backdated {start}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let constraints = cert.basic_constraints().unwrap();
        assert!(constraints.is_none_or(|c| !c.value.ca));
        // A shorter --cluster-signing-duration caps it further.
        let pem = sign(&issuer, &request_csr, now, Duration::from_secs(90)).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let not_after = block.parse_x509().unwrap().validity().not_after.timestamp();
        assert!((89..=91).contains(&(not_after - now.unix_timestamp())));
        let not_before = block
            .parse_x509()
            .unwrap()
            .validity()
            .not_before
            .timestamp();
        assert!((8..=10).contains(&(now.unix_timestamp() - not_before)));
    }
}
