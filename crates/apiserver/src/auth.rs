//! Authentication (client certificates, static bearer tokens, bootstrap tokens) and
//! authorization: the Node authorizer ([`crate::node_authorizer`]) then RBAC over the
//! roles and bindings in the watch cache, as upstream's `--authorization-mode=Node,RBAC`.

use std::collections::HashMap;

use krust_api::resources;
use serde_json::Value;

use crate::cache::WatchCache;

/// Who is making a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn anonymous() -> User {
        User {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }
    pub fn is_anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }
    fn authenticated(name: String, uid: String, mut groups: Vec<String>) -> User {
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User { name, uid, groups }
    }
}

/// The user named by a client certificate (CN = user, O = groups), given in DER.
pub fn user_from_certificate(der: &[u8]) -> Option<User> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(User::authenticated(name, String::new(), groups))
}

/// Bearer tokens from the static token file, and the service account token signer.
#[derive(Default)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, User>,
    /// Signs and checks service account tokens; None without a signing key.
    pub service_accounts: Option<crate::service_account::Signer>,
}

impl TokenAuthenticator {
    pub fn new(tokens: &[crate::StaticToken]) -> Self {
        TokenAuthenticator {
            tokens: tokens
                .iter()
                .map(|t| {
                    (
                        t.token.clone(),
                        User::authenticated(t.user.clone(), t.uid.clone(), t.groups.clone()),
                    )
                })
                .collect(),
            service_accounts: None,
        }
    }

    /// Also accepts (and issues) service account tokens signed by `signer`.
    pub fn with_service_accounts(mut self, signer: crate::service_account::Signer) -> Self {
        self.service_accounts = Some(signer);
        self
    }

    /// The user of an `Authorization` header; `Err` when a token was given but is unknown.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Option<User>, UnknownToken> {
        let Some(header) = header else {
            return Ok(None);
        };
        let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
            return Ok(None);
        };
        self.tokens
            .get(token)
            .cloned()
            .map(Some)
            .ok_or(UnknownToken)
    }
}

/// The user of an `Authorization: Bearer` header: a static token, else a bootstrap
/// token ([`crate::bootstrap_token`]), else a service account token
/// ([`crate::service_account`]); `Err` when a token was given that none knows.
pub fn authenticate_bearer(
    tokens: &TokenAuthenticator,
    cache: &WatchCache,
    header: Option<&str>,
) -> Result<Option<User>, UnknownToken> {
    match tokens.authenticate(header) {
        Err(UnknownToken) => {
            let token = header
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim)
                .unwrap_or("");
            crate::bootstrap_token::authenticate(cache, token)
                .or_else(|| {
                    let signer = tokens.service_accounts.as_ref()?;
                    crate::service_account::authenticate(signer, cache, token)
                })
                .map(Some)
                .ok_or(UnknownToken)
        }
        found => found,
    }
}

/// A bearer token that no authenticator knows.
#[derive(Debug)]
pub struct UnknownToken;

/// What a request wants to do, for authorization.
#[derive(Clone, Debug, Default)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// For non-resource requests (`/healthz`, `/api`, ...).
    pub path: Option<String>,
}

impl Attributes {
    /// `pods`, `pods/status`, as RBAC rules name resources.
    fn resource_with_sub(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Whether `user` may do what `attributes` describe: the Node authorizer first, then
/// RBAC.
pub fn authorize(cache: &WatchCache, user: &User, attributes: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == "system:masters") {
        return true;
    }
    if crate::node_authorizer::authorize(cache, user, attributes)
        == crate::node_authorizer::Decision::Allow
    {
        return true;
    }
    rules_for(cache, user, &attributes.namespace)
        .iter()
        .any(|rule| rule_allows(rule, attributes))
}

/// Every policy rule that applies to `user` in `namespace` (cluster-wide rules too).
pub fn rules_for(cache: &WatchCache, user: &User, namespace: &str) -> Vec<Value> {
    let mut rules = Vec::new();
    let prefix = |plural: &str| {
        resources::find("rbac.authorization.k8s.io", "v1", plural)
            .map(|r| r.key_prefix())
            .unwrap_or_default()
    };
    let role_rules = |kind: &str, role_namespace: &str, name: &str| -> Vec<Value> {
        let key = if kind == "ClusterRole" {
            format!("{}{name}", prefix("clusterroles"))
        } else {
            format!("{}{role_namespace}/{name}", prefix("roles"))
        };
        cache
            .get(&key)
            .and_then(|role| role.value().get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    for (_, binding) in cache.list(&prefix("clusterrolebindings"), None).objects {
        let binding = binding.value();
        if binds(&binding, user, "") {
            let role_ref = &binding["roleRef"];
            rules.extend(role_rules(
                "ClusterRole",
                "",
                role_ref["name"].as_str().unwrap_or(""),
            ));
        }
    }
    if !namespace.is_empty() {
        let namespaced = format!("{}{namespace}/", prefix("rolebindings"));
        for (_, binding) in cache.list(&namespaced, None).objects {
            let binding = binding.value();
            if binds(&binding, user, namespace) {
                let role_ref = &binding["roleRef"];
                rules.extend(role_rules(
                    role_ref["kind"].as_str().unwrap_or(""),
                    namespace,
                    role_ref["name"].as_str().unwrap_or(""),
                ));
            }
        }
    }
    rules
}

fn binds(binding: &Value, user: &User, binding_namespace: &str) -> bool {
    let Some(subjects) = binding.get("subjects").and_then(Value::as_array) else {
        return false;
    };
    subjects.iter().any(|subject| {
        let name = subject["name"].as_str().unwrap_or("");
        match subject["kind"].as_str().unwrap_or("") {
            "User" => name == user.name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                let namespace = subject["namespace"].as_str().unwrap_or(binding_namespace);
                user.name == format!("system:serviceaccount:{namespace}:{name}")
            }
            _ => false,
        }
    })
}

fn contains(list: &Value, wanted: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|item| item == "*" || item == wanted))
}

/// Whether one PolicyRule allows the request.
pub fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    if !contains(&rule["verbs"], &attributes.verb) {
        return false;
    }
    if let Some(path) = &attributes.path {
        return rule["nonResourceURLs"].as_array().is_some_and(|urls| {
            urls.iter().filter_map(Value::as_str).any(|url| {
                url == "*"
                    || url == path
                    || url.strip_suffix('*').is_some_and(|p| path.starts_with(p))
            })
        });
    }
    if !contains(&rule["apiGroups"], &attributes.group) {
        return false;
    }
    let wanted = attributes.resource_with_sub();
    let resource_matches = rule["resources"].as_array().is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|item| {
            item == "*"
                || item == wanted
                || (!attributes.subresource.is_empty()
                    && item == format!("*/{}", attributes.subresource))
                || (item == format!("{}/*", attributes.resource)
                    && !attributes.subresource.is_empty())
        })
    });
    if !resource_matches {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => {
            !attributes.name.is_empty() && names.iter().any(|n| n == attributes.name.as_str())
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attributes(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let rule =
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "pods/log"]});
        assert!(rule_allows(&rule, &attributes("get", "", "pods", "", "a")));
        assert!(rule_allows(
            &rule,
            &attributes("get", "", "pods", "log", "a")
        ));
        assert!(!rule_allows(
            &rule,
            &attributes("get", "", "pods", "exec", "a")
        ));
        assert!(!rule_allows(
            &rule,
            &attributes("delete", "", "pods", "", "a")
        ));
        assert!(!rule_allows(
            &rule,
            &attributes("get", "apps", "pods", "", "a")
        ));
        let named =
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "resourceNames": ["x"]});
        assert!(rule_allows(
            &named,
            &attributes("get", "apps", "deployments", "", "x")
        ));
        assert!(!rule_allows(
            &named,
            &attributes("list", "apps", "deployments", "", "")
        ));
        let scale = json!({"verbs": ["update"], "apiGroups": ["apps"], "resources": ["*/scale"]});
        assert!(rule_allows(
            &scale,
            &attributes("update", "apps", "deployments", "scale", "d")
        ));
        let paths = json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]});
        let mut a = attributes("get", "", "", "", "");
        a.path = Some("/api/v1".into());
        assert!(rule_allows(&paths, &a));
        a.path = Some("/metrics".into());
        assert!(!rule_allows(&paths, &a));
    }
}
