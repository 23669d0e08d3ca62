//! The HTTPS front: accepts connections, authenticates each request, authorizes it,
//! and hands it to discovery, non-resource or resource handlers.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};

use crate::auth::{self, Attributes, TokenAuthenticator, User};
use crate::errors::ApiError;
use crate::handlers::Api;
use crate::request::{self, DiscoveryPath, Target};
use crate::{discovery, openapi};

pub type Body = BoxBody<Bytes, Infallible>;

/// How many requests are served at once, reads and writes counted apart. Watches
/// and other long-running requests are not limited.
pub struct Limits {
    reads: tokio::sync::Semaphore,
    writes: tokio::sync::Semaphore,
}

impl Limits {
    pub fn new(reads: usize, writes: usize) -> Limits {
        Limits {
            reads: tokio::sync::Semaphore::new(reads),
            writes: tokio::sync::Semaphore::new(writes),
        }
    }

    /// A permit for this request, `Ok(None)` when it is not limited, or the 429.
    fn admit(
        &self,
        req: &Request<Incoming>,
    ) -> Result<Option<tokio::sync::SemaphorePermit<'_>>, ApiError> {
        let query = req.uri().query().unwrap_or("");
        let long_running = query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
            || ["/log", "/exec", "/attach", "/portforward", "/proxy"]
                .iter()
                .any(|suffix| req.uri().path().ends_with(suffix));
        if long_running {
            return Ok(None);
        }
        let semaphore = match *req.method() {
            Method::GET | Method::HEAD | Method::OPTIONS => &self.reads,
            _ => &self.writes,
        };
        semaphore
            .try_acquire()
            .map(Some)
            .map_err(|_| ApiError::too_many_requests("Too many requests, please try again later."))
    }
}

/// Accepts TLS connections forever.
pub async fn accept_loop(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    tokens: Arc<TokenAuthenticator>,
    limits: Arc<Limits>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        let tokens = tokens.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let Ok(tls_stream) = acceptor.accept(stream).await else {
                return;
            };
            let cert_user = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| auth::user_from_certificate(cert.as_ref()));
            let service = hyper::service::service_fn(move |req| {
                let api = api.clone();
                let tokens = tokens.clone();
                let cert_user = cert_user.clone();
                let limits = limits.clone();
                async move {
                    let _permit = match limits.admit(&req) {
                        Ok(permit) => permit,
                        Err(error) => {
                            let mut response = error_response(&error);
                            response
                                .headers_mut()
                                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
                            return Ok::<_, Infallible>(response);
                        }
                    };
                    Ok::<_, Infallible>(handle(req, api, tokens, cert_user).await)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                .await;
        });
    }
}

/// A JSON response.
pub fn json_response(status: u16, value: &Value) -> Response<Body> {
    bytes_response(
        status,
        "application/json",
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
    )
}

pub fn bytes_response(status: u16, content_type: &str, body: Bytes) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body).boxed())
        .unwrap()
}

pub fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.code, &error.status())
}

async fn handle(
    req: Request<Incoming>,
    api: Arc<Api>,
    tokens: Arc<TokenAuthenticator>,
    cert_user: Option<User>,
) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    // As upstream: a verified client certificate wins, then a bearer token.
    let user = match cert_user {
        Some(user) => user,
        None => match auth::authenticate_bearer(&tokens, &api.cache, authorization) {
            Ok(Some(user)) => user,
            Ok(None) => User::anonymous(),
            Err(_) => return error_response(&ApiError::unauthorized()),
        },
    };
    let path = req.uri().path().to_string();
    let target = match request::parse_path(&path) {
        Ok(target) => target,
        Err(error) => {
            if user.is_anonymous() {
                return error_response(&ApiError::unauthorized());
            }
            return error_response(&error);
        }
    };
    let public = matches!(&target, Target::NonResource(p) if is_public(p));
    if user.is_anonymous() && !public {
        return error_response(&ApiError::unauthorized());
    }
    match target {
        Target::NonResource(path) => {
            let attributes = Attributes {
                verb: req.method().as_str().to_ascii_lowercase(),
                path: Some(path.clone()),
                ..Default::default()
            };
            if !public && !auth::authorize(&api.cache, &user, &attributes) {
                return error_response(&ApiError::forbidden(format!(
                    "forbidden: User \"{}\" cannot {} path \"{path}\"",
                    user.name, attributes.verb
                )));
            }
            non_resource(&api, &path, &req).await
        }
        Target::Discovery(discovery_path) => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            discovery_response(&api, discovery_path, accept)
        }
        Target::Resource(resource_path) => api.handle_resource(req, resource_path, user).await,
    }
}

fn is_public(path: &str) -> bool {
    matches!(path, "/version" | "/healthz" | "/livez" | "/readyz")
        || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

fn discovery_response(api: &Api, path: DiscoveryPath, accept: &str) -> Response<Body> {
    let aggregated = discovery::wants_aggregated(accept);
    let document = match path {
        DiscoveryPath::LegacyVersions if aggregated => {
            return aggregated_response(discovery::aggregated(true));
        }
        DiscoveryPath::Groups if aggregated => {
            return aggregated_response(discovery::aggregated(false));
        }
        DiscoveryPath::LegacyVersions => Some(discovery::legacy_versions(&api.address)),
        DiscoveryPath::Groups => Some(discovery::groups()),
        DiscoveryPath::Group(group) => discovery::group(&group),
        DiscoveryPath::GroupVersion(group, version) => discovery::resource_list(&group, &version),
    };
    match document {
        Some(document) => json_response(200, &document),
        None => error_response(&ApiError::path_not_found()),
    }
}

fn aggregated_response(document: Value) -> Response<Body> {
    bytes_response(
        200,
        discovery::AGGREGATED_CONTENT_TYPE,
        Bytes::from(serde_json::to_vec(&document).unwrap_or_default()),
    )
}

/// The Kubernetes version krust serves as.
pub fn version_document() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0+krust-", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

async fn non_resource(api: &Api, path: &str, req: &Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error_response(&ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({path})"
        )));
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match path {
        "/version" => json_response(200, &version_document()),
        "/.well-known/openid-configuration" | "/openid/v1/jwks" => {
            let Some(signer) = &api.tokens.service_accounts else {
                return error_response(&ApiError::path_not_found());
            };
            let (document, content_type) = match path {
                "/openid/v1/jwks" => (signer.jwks(), "application/jwk-set+json"),
                _ => (signer.openid_configuration(), "application/json"),
            };
            let body = Bytes::from(serde_json::to_vec(&document).unwrap_or_default());
            bytes_response(200, content_type, body)
        }
        "/openapi/v2" => {
            let protobuf = openapi::v2_wants_protobuf(accept);
            let document = tokio::task::spawn_blocking(move || {
                if protobuf {
                    openapi::v2_document_protobuf()
                } else {
                    openapi::v2_document()
                }
            })
            .await
            .unwrap_or_default();
            let content_type = if protobuf {
                openapi::V2_PROTOBUF_CONTENT_TYPE
            } else {
                "application/json"
            };
            bytes_response(200, content_type, document)
        }
        "/openapi/v3" => {
            let index = tokio::task::spawn_blocking(openapi::v3_index)
                .await
                .unwrap_or_default();
            json_response(200, &index)
        }
        p if p.starts_with("/openapi/v3/") => {
            let document_path = p.trim_start_matches("/openapi/v3/").to_string();
            match tokio::task::spawn_blocking(move || openapi::v3_document(&document_path)).await {
                Ok(Some(document)) => {
                    let mut response = bytes_response(200, "application/json", document);
                    if req.uri().query().is_some_and(|q| q.contains("hash=")) {
                        response.headers_mut().insert(
                            header::CACHE_CONTROL,
                            http::HeaderValue::from_static("public, immutable"),
                        );
                    }
                    response
                }
                _ => error_response(&ApiError::path_not_found()),
            }
        }
        "/healthz" | "/livez" | "/readyz" => {
            let verbose = req.uri().query().is_some_and(|q| q.contains("verbose"));
            let store_ok = api.store.current_revision().await.is_ok();
            let checks = [("ping", true), ("etcd", store_ok), ("informer-sync", true)];
            let healthy = checks.iter().all(|(_, ok)| *ok);
            let code = if healthy { 200 } else { 500 };
            if verbose {
                let mut text = String::new();
                for (name, ok) in checks {
                    text.push_str(&format!(
                        "[{}]{name} {}\n",
                        if ok { "+" } else { "-" },
                        if ok { "ok" } else { "failed" }
                    ));
                }
                text.push_str(&format!(
                    "{} check {}\n",
                    &path[1..],
                    if healthy { "passed" } else { "failed" }
                ));
                bytes_response(code, "text/plain; charset=utf-8", Bytes::from(text))
            } else {
                bytes_response(
                    code,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(if healthy { b"ok" } else { b"unhealthy" }),
                )
            }
        }
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            bytes_response(200, "text/plain; charset=utf-8", Bytes::from_static(b"ok"))
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}
