//! CertificateSigningRequests (certificates.k8s.io/v1), as upstream's registry: on
//! create the requester's identity is written into the spec (the approver trusts it,
//! so clients cannot choose it) and the status is dropped; the `approval` subresource
//! changes only the Approved/Denied conditions, and only for users allowed to
//! `approve` for the signer; the `status` subresource changes the certificate and the
//! other conditions, never the spec or the approval.

use base64::Engine;
use serde_json::{Value, json};

use crate::auth::{self, Attributes, User};
use crate::cache::WatchCache;
use crate::errors::ApiError;
use krust_api::Cause;

/// Condition types that only the approval subresource sets.
const APPROVAL_TYPES: [&str; 2] = ["Approved", "Denied"];

/// Stamps the requesting user into a new CSR and drops any status it came with.
pub fn prepare_create(csr: &mut Value, user: &User) {
    csr["spec"]["username"] = json!(user.name);
    csr["spec"]["groups"] = json!(user.groups);
    match user.uid.as_str() {
        "" => {
            csr["spec"].as_object_mut().map(|s| s.remove("uid"));
        }
        uid => csr["spec"]["uid"] = json!(uid),
    }
    csr["spec"].as_object_mut().map(|s| s.remove("extra"));
    csr.as_object_mut().map(|o| o.remove("status"));
}

/// The CSR an update of `subresource` produces from the stored one.
pub fn merge_update(subresource: Option<&str>, old: &Value, new: &Value) -> Value {
    let conditions = |csr: &Value, approval: bool| -> Vec<Value> {
        csr["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| APPROVAL_TYPES.contains(&c["type"].as_str().unwrap_or("")) == approval)
            .cloned()
            .collect()
    };
    let mut merged = old.clone();
    match subresource {
        Some("approval") => {
            let mut all = conditions(new, true);
            all.extend(conditions(old, false));
            merged["metadata"] = new["metadata"].clone();
            set_conditions(&mut merged, all);
        }
        Some("status") => {
            let mut all = conditions(old, true);
            all.extend(conditions(new, false));
            merged["status"] = new["status"].clone();
            set_conditions(&mut merged, all);
        }
        _ => {
            // The main resource changes metadata only.
            merged["metadata"] = new["metadata"].clone();
        }
    }
    merged
}

fn set_conditions(csr: &mut Value, conditions: Vec<Value>) {
    if !csr["status"].is_object() {
        csr["status"] = json!({});
    }
    match conditions.is_empty() {
        true => {
            csr["status"]
                .as_object_mut()
                .map(|s| s.remove("conditions"));
        }
        false => csr["status"]["conditions"] = json!(conditions),
    }
}

/// Whether a CSR has a condition of `kind` set to True.
pub fn has_condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"].as_str().unwrap_or("True") == "True")
}

/// Field errors of a CSR: a PEM CERTIFICATE REQUEST (the signer checks its signature), a signer, usages,
/// never both approved and denied, a certificate only once approved.
pub fn validate(csr: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &csr["spec"];
    match spec["request"].as_str() {
        None | Some("") => causes.push(Cause::new(
            "FieldValueRequired",
            "spec.request",
            "Required value",
        )),
        Some(encoded) => {
            if let Err(message) = parse_request(encoded) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "spec.request",
                    format!("Invalid value: \"<PEM data>\": {message}"),
                ));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or("");
    if signer.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.signerName",
            "Required value",
        ));
    } else if !signer.contains('/') {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.signerName",
            format!("Invalid value: \"{signer}\": must be a fully qualified domain and path of the form 'example.com/signer-name'"),
        ));
    }
    if spec["usages"].as_array().is_none_or(|u| u.is_empty()) {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.usages",
            "Required value",
        ));
    }
    if let Some(seconds) = spec["expirationSeconds"].as_i64()
        && seconds < 600
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.expirationSeconds",
            format!("Invalid value: {seconds}: may not specify a duration less than 600 seconds (10 minutes)"),
        ));
    }
    if has_condition(csr, "Approved") && has_condition(csr, "Denied") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "status.conditions",
            "Invalid value: approved and denied conditions are mutually exclusive",
        ));
    }
    let has_certificate = csr["status"]["certificate"]
        .as_str()
        .is_some_and(|c| !c.is_empty());
    if has_certificate && !has_condition(csr, "Approved") {
        causes.push(Cause::new(
            "FieldValueForbidden",
            "status.certificate",
            "Forbidden: certificate may only be set once the request is approved",
        ));
    }
    causes
}

/// Decodes `spec.request` (base64 of a PEM CERTIFICATE REQUEST) to its DER.
pub fn parse_request(encoded: &str) -> Result<Vec<u8>, String> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| "not base64".to_string())?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|_| "no PEM block".to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "PEM block type must be CERTIFICATE REQUEST, not {}",
            block.label
        ));
    }
    use x509_parser::prelude::FromDer;
    x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("not a certificate request: {e}"))?;
    Ok(block.contents)
}

/// Refuses an approval change by a user not allowed to `approve` for the CSR's
/// signer (`signers` named `<signer>` or `<domain>/*`, as upstream's
/// CertificateApproval admission).
pub fn admit_approval(cache: &WatchCache, user: &User, csr: &Value) -> Result<(), ApiError> {
    let signer = csr["spec"]["signerName"].as_str().unwrap_or("");
    let domain_wildcard = format!("{}/*", signer.split('/').next().unwrap_or(""));
    let allowed = [signer, domain_wildcard.as_str()].iter().any(|name| {
        auth::authorize(
            cache,
            user,
            &Attributes {
                verb: "approve".into(),
                group: "certificates.k8s.io".into(),
                resource: "signers".into(),
                name: name.to_string(),
                ..Default::default()
            },
        )
    });
    match allowed {
        true => Ok(()),
        false => Err(ApiError::forbidden(format!(
            "user not permitted to approve requests with signerName \"{signer}\""
        ))),
    }
}

/// Whether an update changes the Approved/Denied conditions.
pub fn approval_changed(old: &Value, new: &Value) -> bool {
    let approval = |csr: &Value| -> Vec<Value> {
        csr["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| APPROVAL_TYPES.contains(&c["type"].as_str().unwrap_or("")))
            .map(|c| json!([c["type"], c["status"]]))
            .collect()
    };
    approval(old) != approval(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let csr = params.serialize_request(&key).unwrap();
        base64::engine::general_purpose::STANDARD.encode(csr.pem().unwrap())
    }

    fn csr() -> Value {
        json!({
            "metadata": {"name": "c"},
            "spec": {"request": request_pem(), "signerName": "kubernetes.io/kube-apiserver-client-kubelet", "usages": ["client auth"]},
        })
    }

    #[test]
    fn create_takes_the_requester_from_the_request_not_the_body() {
        let mut csr = csr();
        csr["spec"]["username"] = json!("system:admin");
        csr["status"] = json!({"certificate": "x"});
        let user = User {
            name: "system:bootstrap:abc123".into(),
            uid: String::new(),
            groups: vec!["system:bootstrappers".into()],
        };
        prepare_create(&mut csr, &user);
        assert_eq!(csr["spec"]["username"], "system:bootstrap:abc123");
        assert_eq!(csr["spec"]["groups"], json!(["system:bootstrappers"]));
        assert!(csr.get("status").is_none());
        assert!(validate(&csr).is_empty(), "{:?}", validate(&csr));
    }

    #[test]
    fn approval_and_status_each_change_their_own_part() {
        let old = csr();
        let mut new = old.clone();
        new["spec"]["signerName"] = json!("evil.example/signer");
        new["status"] = json!({"certificate": "Y2VydA==", "conditions": [
            {"type": "Approved", "status": "True", "reason": "R"},
            {"type": "Failed", "status": "True"},
        ]});
        let approved = merge_update(Some("approval"), &old, &new);
        assert_eq!(approved["spec"], old["spec"]);
        assert_eq!(
            approved["status"]["conditions"].as_array().unwrap().len(),
            1
        );
        assert!(approved["status"].get("certificate").is_none());
        assert!(has_condition(&approved, "Approved"));

        let mut signed = approved.clone();
        signed["status"] = json!({"certificate": "Y2VydA==", "conditions": [{"type": "Failed", "status": "True"}]});
        let stored = merge_update(Some("status"), &approved, &signed);
        assert_eq!(stored["status"]["certificate"], "Y2VydA==");
        assert!(has_condition(&stored, "Approved"), "approval kept");
        assert!(has_condition(&stored, "Failed"));
        assert!(approval_changed(&old, &approved));
        assert!(!approval_changed(&approved, &stored));
    }

    #[test]
    fn bad_csrs_name_their_fields() {
        let fields = |csr: &Value| -> Vec<String> {
            validate(csr).iter().map(|c| c.field.clone()).collect()
        };
        let mut bad = csr();
        bad["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode("junk"));
        bad["spec"]["signerName"] = json!("nodomain");
        bad["spec"]["usages"] = json!([]);
        bad["spec"]["expirationSeconds"] = json!(60);
        assert_eq!(
            fields(&bad),
            vec![
                "spec.request",
                "spec.signerName",
                "spec.usages",
                "spec.expirationSeconds"
            ]
        );
        let mut both = csr();
        both["status"] = json!({"certificate": "eA==", "conditions": [
            {"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]});
        assert_eq!(fields(&both), vec!["status.conditions"]);
        let mut unapproved = csr();
        unapproved["status"] = json!({"certificate": "eA=="});
        assert_eq!(fields(&unapproved), vec!["status.certificate"]);
    }
}
