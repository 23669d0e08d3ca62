//! The TLS setup of the server: the serving certificate, and client certificates
//! verified against the cluster CA when offered (anonymous connections are allowed
//! so health and version endpoints answer without credentials).

use std::sync::Arc;

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;

/// Builds the rustls server configuration.
pub fn server_config(
    client_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut client_ca_pem.as_bytes()) {
        roots.add(cert.context("reading the client CA certificate")?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the serving certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("reading the serving key")?
        .context("the serving key file holds no private key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .context("the serving certificate does not match its key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
