//! The API server: the only entry to the cluster.
//!
//! Requests go through one pipeline ([`server`]): TLS and authentication (client
//! certificates, bearer tokens) -> authorization (RBAC) -> routing by the resource
//! table ([`request`]) -> one generic handler per verb ([`handlers`]) -> the store.
//! LIST and WATCH are served from the in-memory [`cache`] fed by one store watch.
//!
//! A newcomer starts at [`serve`], then [`handlers`].

use std::net::SocketAddr;
use std::sync::Arc;

pub mod auth;
pub mod bootstrap;
pub mod bootstrap_token;
pub mod cache;
pub mod csr;
pub mod discovery;
pub mod errors;
pub mod eviction;
pub mod handlers;
pub mod kubelet_proxy;
pub mod limit_ranger;
pub mod metrics_api;
pub mod node_authorizer;
pub mod node_restriction;
pub mod openapi;
pub mod protobuf;
pub mod request;
pub mod server;
pub mod service_account;
pub mod service_alloc;
pub mod storage_admission;
pub mod tls;
pub mod watch;
pub mod websocket;

/// A bearer token accepted by the server (from `--token-auth-file`).
#[derive(Clone, Debug)]
pub struct StaticToken {
    pub token: String,
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// Everything the API server needs to run.
pub struct ServerConfig {
    /// Address and port to serve HTTPS on.
    pub bind: SocketAddr,
    pub store: Arc<dyn krust_store::Store>,
    /// PEM of the CA that signs client certificates.
    pub client_ca_pem: String,
    /// PEM of the serving certificate chain and its private key.
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub static_tokens: Vec<StaticToken>,
    /// Most read requests (watches excepted) and writes served at once; requests
    /// beyond these get 429 Too Many Requests, as kube-apiserver's
    /// `--max-requests-inflight` and `--max-mutating-requests-inflight`.
    pub max_requests_inflight: usize,
    pub max_mutating_requests_inflight: usize,
    /// Where Services get their ClusterIPs and NodePorts.
    pub service_ranges: service_alloc::ServiceRanges,
    /// The address other components reach this server at: the endpoint of the
    /// `kubernetes` Service.
    pub advertise_address: std::net::IpAddr,
    /// PEM of the client certificate and key the server presents to kubelets
    /// (pods/log); None answers those requests with 503.
    pub kubelet_client_cert_pem: Option<(String, String)>,
    /// PEM of the key that signs service account tokens (PKCS#8 P-256), and the
    /// issuer they name; None serves no service account tokens.
    pub service_account_key_pem: Option<String>,
    pub service_account_issuer: String,
}

/// Starts serving the API. Returns once the listener is bound, the watch cache is
/// loaded and the built-in objects exist, with the handle of the running server.
pub async fn serve(config: ServerConfig) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tls = tls::server_config(
        &config.client_ca_pem,
        &config.serving_cert_pem,
        &config.serving_key_pem,
    )?;
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "can not listen on {}: {e}; is another server running there?",
                config.bind
            )
        })?;
    let cache = cache::WatchCache::start(config.store.clone()).await?;
    let mut tokens = auth::TokenAuthenticator::new(&config.static_tokens);
    if let Some(key) = &config.service_account_key_pem {
        let signer = service_account::Signer::new(key, &config.service_account_issuer)?;
        tokens = tokens.with_service_accounts(signer);
    }
    let tokens = Arc::new(tokens);
    let mut api = handlers::Api::new(
        config.store.clone(),
        cache,
        config.bind.to_string(),
        tokens.clone(),
        config.service_ranges,
    );
    if let Some((cert, key)) = &config.kubelet_client_cert_pem {
        api.kubelet_client = Some(kubelet_proxy::client_config(cert, key)?);
    }
    let api = Arc::new(api);
    bootstrap::ensure_builtin_objects(&api).await?;
    service_alloc::ensure_kubernetes_service(
        &api,
        config.advertise_address,
        config.bind.port(),
        bootstrap::system_user(),
    )
    .await?;
    tokio::spawn(service_alloc::repair_periodically(api.clone()));
    tokio::spawn(bootstrap::compact_periodically(config.store.clone()));
    let limits = Arc::new(server::Limits::new(
        config.max_requests_inflight,
        config.max_mutating_requests_inflight,
    ));
    Ok(tokio::spawn(server::accept_loop(
        listener, tls, api, tokens, limits,
    )))
}
