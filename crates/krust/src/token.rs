//! `krust token create`: a bootstrap token for joining nodes, as `kubeadm token create`.
//! Writes the Secret `kube-system/bootstrap-token-<id>` through the API (with an admin
//! kubeconfig) and prints `<id>.<secret>`, the only line on stdout.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

/// A new token `<id>.<secret>`: 6 and 16 characters of `[a-z0-9]` from the kernel's
/// random source.
pub fn generate() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut random = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("cannot read /dev/urandom")?;
    // 252 is the largest multiple of 36 below 256: no bias.
    let mut chars = random
        .iter()
        .filter(|b| **b < 252)
        .map(|b| ALPHABET[(*b % 36) as usize] as char);
    let id: String = chars.by_ref().take(6).collect();
    let secret: String = chars.by_ref().take(16).collect();
    anyhow::ensure!(
        id.len() == 6 && secret.len() == 16,
        "not enough random bytes"
    );
    Ok(format!("{id}.{secret}"))
}

/// The Secret that makes `token` a bootstrap token for authentication, expiring
/// `ttl` after `now` (never for a zero ttl).
pub fn secret_for(token: &str, ttl: Duration, now: SystemTime, description: &str) -> Secret {
    let (id, secret) = token.split_once('.').unwrap_or((token, ""));
    let mut data = json!({
        "token-id": id,
        "token-secret": secret,
        "usage-bootstrap-authentication": "true",
        "description": description,
    });
    if !ttl.is_zero() {
        let at = now + ttl;
        let seconds = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let at = time::OffsetDateTime::from_unix_timestamp(seconds)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        data["expiration"] = json!(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            at.year(),
            at.month() as u8,
            at.day(),
            at.hour(),
            at.minute(),
            at.second()
        ));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
        "type": "bootstrap.kubernetes.io/token",
        "stringData": data,
    }))
    .expect("a valid Secret")
}

/// Runs `krust token create`.
pub fn create(args: crate::TokenCreateArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = crate::components::client_from_kubeconfig(&args.kubeconfig).await?;
        let token = generate()?;
        let secret = secret_for(&token, args.ttl, SystemTime::now(), &args.description);
        Api::<Secret>::namespaced(client, "kube-system")
            .create(&PostParams::default(), &secret)
            .await
            .context("cannot create the bootstrap token Secret")?;
        println!("{token}");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_bootstrap_form_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(crate::node_join::is_bootstrap_token(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn the_secret_names_the_id_and_expires_after_the_ttl() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let secret = secret_for(
            "abcdef.0123456789abcdef",
            Duration::from_secs(3600),
            now,
            "x",
        );
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("bootstrap-token-abcdef")
        );
        assert_eq!(
            secret.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = secret.string_data.unwrap();
        assert_eq!(data["token-secret"], "0123456789abcdef");
        assert_eq!(data["expiration"], "2023-11-14T23:13:20Z");
        let forever = secret_for("abcdef.0123456789abcdef", Duration::ZERO, now, "");
        assert!(!forever.string_data.unwrap().contains_key("expiration"));
    }
}
