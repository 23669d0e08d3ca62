//! The admin kubeconfig (`<data-dir>/admin.kubeconfig`).
//!
//! One cluster `krust` (the CA inline), one user `admin` (the admin client certificate
//! inline) and one context `krust`, which is current. The file is rewritten on every
//! start, so it always names the current port and certificates.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;

use crate::pki::{CertAndKey, Pki};

/// The name of the cluster and of the context.
pub const CLUSTER_NAME: &str = "krust";
/// The name of the user.
pub const USER_NAME: &str = "admin";

/// The URL clients should use for a server bound to `bind`: the bind address, or
/// 127.0.0.1 when it binds every interface.
pub fn server_url(bind: SocketAddr) -> String {
    let host = if bind.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        bind.ip()
    };
    // SocketAddr's Display brackets IPv6 addresses, as URLs need.
    format!("https://{}", SocketAddr::new(host, bind.port()))
}

/// Renders a kubeconfig for `user` against the cluster's CA at `server`.
pub fn render(pki: &Pki, server: &str, user: &CertAndKey) -> String {
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": CLUSTER_NAME,
            "cluster": {
                "server": server,
                "certificate-authority-data": BASE64.encode(&pki.ca.cert_pem),
            },
        }],
        "users": [{
            "name": USER_NAME,
            "user": {
                "client-certificate-data": BASE64.encode(&user.cert_pem),
                "client-key-data": BASE64.encode(&user.key_pem),
            },
        }],
        "contexts": [{
            "name": CLUSTER_NAME,
            "context": { "cluster": CLUSTER_NAME, "user": USER_NAME },
        }],
        "current-context": CLUSTER_NAME,
        "preferences": {},
    });
    serde_yaml::to_string(&config).expect("a JSON value always serializes to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pki() -> Pki {
        let part = |name: &str| CertAndKey {
            cert_pem: format!("{name} cert"),
            key_pem: format!("{name} key"),
        };
        Pki {
            ca: part("ca"),
            serving: part("serving"),
            admin: part("admin"),
        }
    }

    #[test]
    fn server_url_uses_loopback_for_wildcards() {
        assert_eq!(
            server_url("0.0.0.0:6443".parse().unwrap()),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            server_url("[::]:6443".parse().unwrap()),
            "https://127.0.0.1:6443"
        );
        assert_eq!(
            server_url("192.0.2.5:7443".parse().unwrap()),
            "https://192.0.2.5:7443"
        );
        assert_eq!(
            server_url("[fd00::5]:443".parse().unwrap()),
            "https://[fd00::5]:443"
        );
    }

    #[test]
    fn kubeconfig_has_cluster_user_and_current_context() {
        let pki = pki();
        let text = render(&pki, "https://127.0.0.1:6443", &pki.admin);
        let value: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(value["current-context"], "krust");
        assert_eq!(value["clusters"][0]["name"], "krust");
        assert_eq!(
            value["clusters"][0]["cluster"]["server"],
            "https://127.0.0.1:6443"
        );
        let ca = value["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        assert_eq!(BASE64.decode(ca).unwrap(), b"ca cert");
        assert_eq!(value["users"][0]["name"], "admin");
        let key = value["users"][0]["user"]["client-key-data"]
            .as_str()
            .unwrap();
        assert_eq!(BASE64.decode(key).unwrap(), b"admin key");
        assert_eq!(value["contexts"][0]["context"]["user"], "admin");
        assert_eq!(value["contexts"][0]["context"]["cluster"], "krust");
    }
}
