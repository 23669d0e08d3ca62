//! Service account tokens, as kube-apiserver's: the server signs JSON Web Tokens for
//! ServiceAccounts (TokenRequest, `serviceaccounts/<name>/token`), accepts them as
//! bearer tokens, publishes its public key for OIDC discovery, and the ServiceAccount
//! admission mounts a token into every pod.
//!
//! - [`Signer`]: an ES256 key (PEM PKCS#8, P-256), the issuer and the API audiences;
//!   signs and verifies tokens and serves `/.well-known/openid-configuration` and
//!   `/openid/v1/jwks`.
//! - [`token_request`]: issues a token bound to its ServiceAccount and optionally to a
//!   Pod, Secret or Node; a token bound to a pod also names the pod's node. Tokens asked
//!   for 3607 s bound to a pod (what the admission below asks for) live a year, with a
//!   `warnafter` at the asked expiry, as upstream's `--service-account-extend-token-expiration`.
//! - [`authenticate`]: a valid token whose ServiceAccount (and bound object) still
//!   exists with the same uid is user `system:serviceaccount:<ns>:<name>` in groups
//!   `system:serviceaccounts` and `system:serviceaccounts:<ns>`.
//! - [`admit_pod`]: `serviceAccountName` defaults to `default`; unless automounting is
//!   off (on the pod, else on its ServiceAccount) a projected `kube-api-access-<id>`
//!   volume (token, `kube-root-ca.crt`, namespace) is mounted read-only at
//!   `/var/run/secrets/kubernetes.io/serviceaccount` in every container.
//!   Unlike upstream, a pod naming the `default` ServiceAccount before its namespace
//!   has one is admitted (the node agent waits for the account to get the token).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

use crate::auth::User;
use crate::cache::WatchCache;
use crate::errors::{ApiError, ApiResult};
use krust_api::Cause;

/// Where the admission mounts the token, CA and namespace.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The expiry the admission asks for; tokens asked for it are extended.
pub const ADMISSION_EXPIRATION_SECONDS: i64 = 3607;
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// The default issuer and API audience, as upstream's.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The key that signs service account tokens, and what tokens must say.
pub struct Signer {
    key: EcdsaKeyPair,
    key_id: String,
    issuer: String,
    /// Audiences the API accepts (a token must name one).
    audiences: Vec<String>,
}

impl Signer {
    /// A signer from a PEM PKCS#8 P-256 private key.
    pub fn new(key_pem: &str, issuer: &str) -> anyhow::Result<Signer> {
        let der = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| anyhow::anyhow!("the service account key is not a PEM private key"))?;
        let rustls::pki_types::PrivateKeyDer::Pkcs8(pkcs8) = der else {
            anyhow::bail!(
                "the service account key must be a PKCS#8 P-256 (ES256) key, e.g. from \
                 `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`"
            );
        };
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|e| anyhow::anyhow!("the service account key is not a P-256 key: {e}"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        Ok(Signer {
            key_id: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            key,
            issuer: issuer.to_string(),
            audiences: vec![issuer.to_string()],
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// A signed token carrying `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "ES256", "kid": self.key_id});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("ECDSA signing does not fail");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    /// The claims of a token this signer made that is in its validity window, issued
    /// by this issuer for one of the API audiences; None otherwise.
    pub fn verify(&self, token: &str, now: i64) -> Option<Value> {
        let mut parts = token.split('.');
        let (header, payload, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        let signed = &token[..header_len(token)?];
        public
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).ok()?)
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let audiences: Vec<&str> = match &claims["aud"] {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let valid = claims["iss"] == self.issuer.as_str()
            && audiences
                .iter()
                .any(|a| self.audiences.iter().any(|ours| ours == a))
            && claims["exp"].as_i64().is_some_and(|exp| now < exp)
            && claims["nbf"].as_i64().is_none_or(|nbf| nbf <= now);
        valid.then_some(claims)
    }

    /// `/.well-known/openid-configuration`.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}/openid/v1/jwks", self.issuer.trim_end_matches('/')),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the public key as a JSON Web Key Set.
    pub fn jwks(&self) -> Value {
        // An uncompressed P-256 point: 0x04, then x and y, 32 bytes each.
        let point = self.key.public_key().as_ref();
        json!({"keys": [{
            "use": "sig", "kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.key_id,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
    }
}

/// The length of `header.payload`, the signed part of a token.
fn header_len(token: &str) -> Option<usize> {
    token.rfind('.')
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

fn cached(cache: &WatchCache, plural: &str, namespace: &str, name: &str) -> Option<Value> {
    let resource = krust_api::resources::find("", "v1", plural)?;
    let key = match namespace {
        "" => format!("{}{name}", resource.key_prefix()),
        namespace => format!("{}{namespace}/{name}", resource.key_prefix()),
    };
    cache.get(&key).map(|object| object.value())
}

fn uid_of(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or("")
}

/// The user a service account token names, when it is valid and what it is bound
/// to still exists.
pub fn authenticate(signer: &Signer, cache: &WatchCache, token: &str) -> Option<User> {
    let claims = signer.verify(token, now_seconds())?;
    let private = &claims["kubernetes.io"];
    let namespace = private["namespace"].as_str()?;
    let account = &private["serviceaccount"];
    let name = account["name"].as_str()?;
    let current = cached(cache, "serviceaccounts", namespace, name)?;
    if uid_of(&current) != account["uid"].as_str()? {
        return None;
    }
    // A token bound to a pod or secret (in the account's namespace) ends with it.
    for (kind, plural) in [("pod", "pods"), ("secret", "secrets")] {
        let bound = &private[kind];
        if bound.is_null() {
            continue;
        }
        let object = cached(cache, plural, namespace, bound["name"].as_str()?)?;
        if uid_of(&object) != bound["uid"].as_str()? {
            return None;
        }
        if let Some(deleted) = object["metadata"]["deletionTimestamp"].as_str()
            && chrono::DateTime::parse_from_rfc3339(deleted)
                .is_ok_and(|at| at.timestamp() < now_seconds())
        {
            return None;
        }
    }
    Some(User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        uid: uid_of(&current).to_string(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    })
}

fn invalid(name: &str, field: &str, message: &str) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        vec![Cause::new("FieldValueInvalid", field, message)],
    )
}

/// Issues the token a TokenRequest for ServiceAccount `account` (in `namespace`)
/// asks for; returns the TokenRequest with its status.
pub fn token_request(
    signer: &Signer,
    cache: &WatchCache,
    namespace: &str,
    account_name: &str,
    request: &Value,
) -> ApiResult<Value> {
    let account = cached(cache, "serviceaccounts", namespace, account_name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", account_name))?;
    let spec = &request["spec"];
    let asked = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if asked < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            account_name,
            "spec.expirationSeconds",
            "may not specify a duration less than 10 minutes",
        ));
    }
    if asked > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            account_name,
            "spec.expirationSeconds",
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = match spec["audiences"].as_array() {
        Some(list) if !list.is_empty() => list
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => signer.audiences.clone(),
    };
    let now = now_seconds();
    let mut private = json!({
        "namespace": namespace,
        "serviceaccount": {"name": account_name, "uid": uid_of(&account)},
    });
    let mut lifetime = asked;
    let bound = &spec["boundObjectRef"];
    if bound.is_object() {
        let kind = bound["kind"].as_str().unwrap_or("");
        let name = bound["name"].as_str().unwrap_or("");
        let (plural, claim, scoped) = match kind {
            "Pod" => ("pods", "pod", true),
            "Secret" => ("secrets", "secret", true),
            "Node" => ("nodes", "node", false),
            other => {
                return Err(invalid(
                    account_name,
                    "spec.boundObjectRef.kind",
                    &format!(
                        "cannot bind a token to a {other:?}: the kind must be Pod, Secret or Node"
                    ),
                ));
            }
        };
        let object = cached(cache, plural, if scoped { namespace } else { "" }, name)
            .ok_or_else(|| ApiError::not_found("", plural, name))?;
        if let Some(uid) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && uid != uid_of(&object)
        {
            return Err(ApiError::conflict(
                "",
                plural,
                name,
                &format!(
                    "the UID in the bound object reference ({uid}) does not match the UID in record ({})",
                    uid_of(&object)
                ),
            ));
        }
        private[claim] = json!({"name": name, "uid": uid_of(&object)});
        if kind == "Pod" {
            let node = object["spec"]["nodeName"].as_str().unwrap_or("");
            if let Some(node_object) = cached(cache, "nodes", "", node).filter(|_| !node.is_empty())
            {
                private["node"] = json!({"name": node, "uid": uid_of(&node_object)});
            }
            if asked == ADMISSION_EXPIRATION_SECONDS {
                lifetime = EXTENDED_EXPIRATION_SECONDS;
                private["warnafter"] = json!(now + asked);
            }
        }
    }
    let expires = now + lifetime;
    let claims = json!({
        "aud": audiences,
        "exp": expires,
        "iat": now,
        "nbf": now,
        "iss": signer.issuer,
        "jti": uuid::Uuid::new_v4().to_string(),
        "sub": format!("system:serviceaccount:{namespace}:{account_name}"),
        "kubernetes.io": private,
    });
    let expiration = chrono::DateTime::from_timestamp(expires, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let mut answer = json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "metadata": {
            "name": account_name, "namespace": namespace,
            "creationTimestamp": account["metadata"]["creationTimestamp"],
        },
        "spec": request["spec"].clone(),
        "status": {"token": signer.sign(&claims), "expirationTimestamp": expiration},
    });
    answer["spec"]["audiences"] = json!(audiences);
    answer["spec"]["expirationSeconds"] = json!(asked);
    Ok(answer)
}

/// The ServiceAccount admission for a new pod in `namespace` (see the module doc).
pub fn admit_pod(cache: &WatchCache, namespace: &str, pod: &mut Value) -> ApiResult<()> {
    if pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some()
    {
        return Ok(());
    }
    let spec = &mut pod["spec"];
    let account_name = match spec["serviceAccountName"]
        .as_str()
        .filter(|n| !n.is_empty())
    {
        Some(name) => name.to_string(),
        None => spec["serviceAccount"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string(),
    };
    spec["serviceAccountName"] = json!(account_name);
    spec["serviceAccount"] = json!(account_name);
    let account = cached(cache, "serviceaccounts", namespace, &account_name);
    if account.is_none() && account_name != "default" {
        return Err(ApiError::forbidden(format!(
            "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
        )));
    }
    let volume_name = format!("kube-api-access-{}", crate::handlers::random_suffix());
    mount_token(spec, account.as_ref(), &volume_name);
    Ok(())
}

/// Adds the projected token volume `volume_name` to a pod `spec` and mounts it in
/// every container without a mount at [`MOUNT_PATH`], unless automounting is off.
fn mount_token(spec: &mut Value, account: Option<&Value>, volume_name: &str) {
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| account?["automountServiceAccountToken"].as_bool())
        .unwrap_or(true);
    if !automount {
        return;
    }
    let mounted = |container: &Value| {
        container["volumeMounts"]
            .as_array()
            .is_some_and(|mounts| mounts.iter().any(|m| m["mountPath"] == MOUNT_PATH))
    };
    let mut mounts_added = false;
    for field in ["initContainers", "containers"] {
        let Some(list) = spec[field].as_array_mut() else {
            continue;
        };
        for container in list.iter_mut().filter(|c| !mounted(c)) {
            let mount = json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH});
            match container["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => container["volumeMounts"] = json!([mount]),
            }
            mounts_added = true;
        }
    }
    if !mounts_added {
        return;
    }
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": ADMISSION_EXPIRATION_SECONDS, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(volume),
        None => spec["volumes"] = json!([volume]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        let key = rcgen::KeyPair::generate().unwrap();
        Signer::new(&key.serialize_pem(), DEFAULT_ISSUER).unwrap()
    }

    fn claims(now: i64, audience: &str) -> Value {
        json!({"iss": DEFAULT_ISSUER, "aud": [audience], "iat": now, "nbf": now, "exp": now + 600,
               "sub": "system:serviceaccount:ns:sa"})
    }

    #[test]
    fn tokens_verify_only_when_signed_valid_and_for_the_api() {
        let signer = signer();
        let now = 1_800_000_000;
        let token = signer.sign(&claims(now, DEFAULT_ISSUER));
        assert_eq!(token.split('.').count(), 3);
        assert!(signer.verify(&token, now).is_some());
        // Expired, not yet valid, another audience, another key, tampered payload.
        assert!(signer.verify(&token, now + 600).is_none());
        assert!(signer.verify(&token, now - 1).is_none());
        let other_audience = signer.sign(&claims(now, "vault"));
        assert!(signer.verify(&other_audience, now).is_none());
        assert!(self::signer().verify(&token, now).is_none());
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut forged = claims(now, DEFAULT_ISSUER);
        forged["sub"] = json!("system:serviceaccount:kube-system:admin");
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string());
        assert!(signer.verify(&parts.join("."), now).is_none());
        assert!(signer.verify("not-a-token", now).is_none());
    }

    #[test]
    fn the_key_set_publishes_the_public_point_under_the_token_key_id() {
        let signer = signer();
        let jwks = signer.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["kid"].as_str(), Some(signer.key_id.as_str()));
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        let config = signer.openid_configuration();
        assert_eq!(config["issuer"], DEFAULT_ISSUER);
        assert_eq!(
            config["jwks_uri"],
            format!("{DEFAULT_ISSUER}/openid/v1/jwks")
        );
        let header = token_header(&signer.sign(&claims(0, DEFAULT_ISSUER)));
        assert_eq!(header["kid"], key["kid"]);
        assert!(Signer::new("not a key", DEFAULT_ISSUER).is_err());
    }

    fn token_header(token: &str) -> Value {
        let header = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap()
    }

    #[test]
    fn the_token_volume_is_mounted_in_every_container_unless_opted_out() {
        let mut spec = json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]},
            ],
        });
        mount_token(&mut spec, None, "kube-api-access-x");
        assert_eq!(spec["volumes"][0]["name"], "kube-api-access-x");
        let sources = &spec["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            spec["initContainers"][0]["volumeMounts"][0]["mountPath"],
            MOUNT_PATH
        );
        assert_eq!(spec["containers"][0]["volumeMounts"][0]["readOnly"], true);
        // b mounts something of its own there: left alone.
        assert_eq!(
            spec["containers"][1]["volumeMounts"]
                .as_array()
                .unwrap()
                .len(),
            1
        );

        for (pod_says, account_says, mounted) in [
            (Some(false), None, false),
            (None, Some(false), false),
            (Some(true), Some(false), true),
            (None, None, true),
        ] {
            let mut spec = json!({"containers": [{"name": "a"}]});
            if let Some(value) = pod_says {
                spec["automountServiceAccountToken"] = json!(value);
            }
            let account = account_says.map(|v| json!({"automountServiceAccountToken": v}));
            mount_token(&mut spec, account.as_ref(), "v");
            assert_eq!(
                spec.get("volumes").is_some(),
                mounted,
                "{pod_says:?} {account_says:?}"
            );
        }
    }
}
