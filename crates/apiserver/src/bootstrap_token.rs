//! Bootstrap tokens: bearer tokens `<id>.<secret>` kept as Secrets
//! `kube-system/bootstrap-token-<id>` of type `bootstrap.kubernetes.io/token`, as
//! upstream's bootstrap token authenticator. A new node joins with one: it may only
//! create a CertificateSigningRequest for its client certificate and wait for it.
//!
//! The token authenticates as `system:bootstrap:<id>`, groups `system:bootstrappers`
//! and the secret's `auth-extra-groups`, while the secret says
//! `usage-bootstrap-authentication: "true"`, is not expired and is not being deleted.

use base64::Engine;
use serde_json::Value;

use crate::auth::User;
use crate::cache::WatchCache;

/// The namespace bootstrap token Secrets live in.
pub const NAMESPACE: &str = "kube-system";
/// The type of a bootstrap token Secret.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group every bootstrap token user is in.
pub const GROUP: &str = "system:bootstrappers";
/// The prefix of a bootstrap token user's name.
pub const USER_PREFIX: &str = "system:bootstrap:";

/// The name of the Secret holding token `id`.
pub fn secret_name(id: &str) -> String {
    format!("bootstrap-token-{id}")
}

/// Splits a token into its id and secret when it has the bootstrap form: six then
/// sixteen characters of `[a-z0-9]`, joined by a dot.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let valid = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (valid(id, 6) && valid(secret, 16)).then_some((id, secret))
}

/// The user a bootstrap token authenticates as, given the Secret stored for its id
/// (as JSON, `data` in base64) and the current time; `None` when the Secret does not
/// allow this token to authenticate now.
pub fn user_for(token: &str, secret: &Value, now: chrono::DateTime<chrono::Utc>) -> Option<User> {
    let (id, token_secret) = parse_token(token)?;
    if secret["type"] != SECRET_TYPE
        || secret["metadata"]["name"] != secret_name(id).as_str()
        || !secret["metadata"]["deletionTimestamp"].is_null()
    {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let encoded = secret["data"][name].as_str()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    if field("token-id").as_deref() != Some(id)
        || !constant_time_eq(
            field("token-secret").unwrap_or_default().as_bytes(),
            token_secret.as_bytes(),
        )
        || field("usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(expiration) = field("expiration") {
        let expires = chrono::DateTime::parse_from_rfc3339(expiration.trim()).ok()?;
        if expires <= now {
            return None;
        }
    }
    let mut groups = vec![GROUP.to_string()];
    for group in field("auth-extra-groups").unwrap_or_default().split(',') {
        let group = group.trim();
        // As upstream: extra groups must be bootstrap groups, never e.g. system:masters.
        if group.is_empty() || !group.starts_with("system:bootstrappers:") {
            continue;
        }
        if !groups.iter().any(|g| g == group) {
            groups.push(group.to_string());
        }
    }
    groups.push("system:authenticated".into());
    Some(User {
        name: format!("{USER_PREFIX}{id}"),
        uid: String::new(),
        groups,
    })
}

/// Authenticates a bearer token against the bootstrap token Secrets in the cache.
pub fn authenticate(cache: &WatchCache, token: &str) -> Option<User> {
    let (id, _) = parse_token(token)?;
    let resource = krust_api::resources::find("", "v1", "secrets")?;
    let key = format!("{}{NAMESPACE}/{}", resource.key_prefix(), secret_name(id));
    let secret = cache.get(&key)?;
    user_for(token, &secret.value(), chrono::Utc::now())
}

/// A new random bootstrap token, `<id>.<secret>`.
pub fn generate() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut part = |len: usize| -> String {
        (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let id = part(6);
    let secret = part(16);
    format!("{id}.{secret}")
}

/// The Secret that makes `token` a bootstrap token, for `description`, with extra
/// groups and an optional expiration (RFC 3339).
pub fn secret_for(
    token: &str,
    description: &str,
    extra_groups: &[&str],
    expiration: Option<&str>,
) -> Option<Value> {
    let (id, token_secret) = parse_token(token)?;
    let mut string_data = serde_json::json!({
        "description": description,
        "token-id": id,
        "token-secret": token_secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
    });
    if !extra_groups.is_empty() {
        string_data["auth-extra-groups"] = extra_groups.join(",").into();
    }
    if let Some(expiration) = expiration {
        string_data["expiration"] = expiration.into();
    }
    let data: serde_json::Map<String, Value> = string_data
        .as_object()?
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .encode(v.as_str().unwrap_or(""))
                    .into(),
            )
        })
        .collect();
    Some(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": secret_name(id), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "data": data,
    }))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "abc123.0123456789abcdef";

    fn now() -> chrono::DateTime<chrono::Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn token_form_is_six_dot_sixteen_lowercase_alphanumerics() {
        assert_eq!(parse_token(TOKEN), Some(("abc123", "0123456789abcdef")));
        for bad in [
            "abc12.0123456789abcdef",
            "ABC123.0123456789abcdef",
            "abc123.0123456789abcde",
            "abc123-0123456789abcdef",
            "abc123.0123456789abcdef.x",
            "",
        ] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
        let generated = generate();
        assert!(parse_token(&generated).is_some(), "{generated}");
        assert_ne!(generated, generate());
    }

    #[test]
    fn a_valid_secret_authenticates_with_its_extra_groups() {
        let secret = secret_for(
            TOKEN,
            "test",
            &["system:bootstrappers:krust:nodes", "system:masters"],
            Some("2026-06-01T00:00:00Z"),
        )
        .unwrap();
        let user = user_for(TOKEN, &secret, now()).unwrap();
        assert_eq!(user.name, "system:bootstrap:abc123");
        // system:masters is not a bootstrap group: dropped.
        assert_eq!(
            user.groups,
            vec![
                "system:bootstrappers",
                "system:bootstrappers:krust:nodes",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn wrong_secret_expired_unusable_or_deleted_is_refused() {
        let secret = secret_for(TOKEN, "test", &[], Some("2025-12-31T23:59:59Z")).unwrap();
        assert!(user_for(TOKEN, &secret, now()).is_none(), "expired");

        let secret = secret_for(TOKEN, "test", &[], None).unwrap();
        assert!(user_for(TOKEN, &secret, now()).is_some());
        assert!(
            user_for("abc123.0123456789abcdee", &secret, now()).is_none(),
            "wrong secret"
        );
        assert!(
            user_for("abc124.0123456789abcdef", &secret, now()).is_none(),
            "wrong id"
        );

        let mut not_for_auth = secret.clone();
        not_for_auth["data"]
            .as_object_mut()
            .unwrap()
            .remove("usage-bootstrap-authentication");
        assert!(user_for(TOKEN, &not_for_auth, now()).is_none());

        let mut wrong_type = secret.clone();
        wrong_type["type"] = "Opaque".into();
        assert!(user_for(TOKEN, &wrong_type, now()).is_none());

        let mut deleting = secret;
        deleting["metadata"]["deletionTimestamp"] = "2025-01-01T00:00:00Z".into();
        assert!(user_for(TOKEN, &deleting, now()).is_none());
    }
}
