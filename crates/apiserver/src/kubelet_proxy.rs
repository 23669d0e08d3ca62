//! Pod subresources served by the pod's node agent: the kubelet API of the node
//! named in `spec.nodeName`, at the Node's InternalIP and
//! `daemonEndpoints.kubeletEndpoint.Port`.
//!
//! - `pods/log` is fetched and streamed back as it comes (a followed log too), as
//!   the body of the answer or, to a WebSocket client, as messages (`crate::websocket`).
//! - `pods/exec`, `pods/attach` and `pods/portforward` are HTTP upgrades (SPDY/3.1 or
//!   WebSocket, whichever the client asks for): the request goes on to the kubelet
//!   with its upgrade headers, the kubelet's answer comes back, and after a
//!   `101 Switching Protocols` bytes are copied both ways until either side closes.
//!   A refused upgrade keeps its non-101 status, so a client that tried WebSocket
//!   first (kubectl does) falls back to SPDY.
//!
//! The API server authenticates to the kubelet with its kubelet client certificate
//! (signed by the cluster CA); the caller's own credentials never go on. Like
//! kube-apiserver without `--kubelet-certificate-authority`, it does not verify the
//! kubelet's self-signed serving certificate.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use serde_json::Value;

use crate::errors::{ApiError, ApiResult};
use crate::request::Query;
use crate::server::Body;
use crate::websocket::ByteStream;

/// The TLS client the API server uses towards kubelets.
pub fn client_config(cert_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use anyhow::Context;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the kubelet client certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("reading the kubelet client key")?
        .context("no private key for the kubelet client certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        .with_client_auth_cert(certs, key)
        .context("the kubelet client certificate does not match its key")?;
    Ok(Arc::new(config))
}

/// Accepts the kubelet's serving certificate (checking only the handshake signatures).
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The container a log request is for: `?container=`, or the pod's only container.
fn container_of(pod: &Value, query: &Query) -> ApiResult<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| pod["spec"][field].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    match query.get("container").filter(|c| !c.is_empty()) {
        Some(container) if names.contains(&container) => Ok(container.to_string()),
        Some(container) => Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        ))),
        None => {
            let main: Vec<&str> = pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .collect();
            match main.as_slice() {
                [only] => Ok(only.to_string()),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    main.join(" ")
                ))),
            }
        }
    }
}

/// Where the node's kubelet API is: (InternalIP, port).
fn kubelet_address(node: &Value) -> Option<(String, u16)> {
    let addresses = node["status"]["addresses"].as_array()?;
    let ip = addresses
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .or_else(|| addresses.first())?["address"]
        .as_str()?
        .to_string();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(10250);
    Some((ip, u16::try_from(port).ok()?))
}

/// The pod's node name and where its kubelet API is.
fn kubelet_of<'a>(pod: &'a Value, node: Option<&Value>) -> ApiResult<(&'a str, String, u16)> {
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    let (ip, port) = node
        .and_then(kubelet_address)
        .ok_or_else(|| no_address(node_name))?;
    Ok((node_name, ip, port))
}

fn no_address(node_name: &str) -> ApiError {
    ApiError::new_service_unavailable(format!(
        "node {node_name:?} has no kubelet address (is its agent running?)"
    ))
}

fn unreachable(node_name: &str, ip: &str, port: u16, error: &dyn std::fmt::Display) -> ApiError {
    ApiError::new_service_unavailable(format!(
        "cannot reach the kubelet of node {node_name:?} at {ip}:{port}: {error}"
    ))
}

/// An HTTP/1.1 connection to a kubelet over TLS, able to switch protocols.
async fn connect(
    client: Arc<rustls::ClientConfig>,
    node_name: &str,
    ip: &str,
    port: u16,
) -> ApiResult<hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>> {
    let fail = |e: &dyn std::fmt::Display| unreachable(node_name, ip, port, e);
    let tcp = tokio::net::TcpStream::connect((ip, port))
        .await
        .map_err(|e| fail(&e))?;
    let server_name =
        rustls::pki_types::ServerName::try_from(ip.to_string()).map_err(|e| fail(&e))?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(server_name, tcp)
        .await
        .map_err(|e| fail(&e))?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| fail(&e))?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender)
}

/// The API error for a kubelet's non-success answer: what the kubelet said, with
/// its status where that is the caller's fault (bad request, not found, refused upgrade).
async fn kubelet_error(
    node_name: &str,
    ip: &str,
    port: u16,
    response: hyper::Response<hyper::body::Incoming>,
) -> ApiError {
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        400 | 404 => ApiError::bad_request(message),
        403 => ApiError::forbidden(message),
        _ => unreachable(node_name, ip, port, &message),
    }
}

/// The headers of an upgrade request that go on to the kubelet: those that negotiate
/// the protocol. Credentials and hop-by-hop headers of the caller stay here.
fn is_upgrade_header(name: &hyper::header::HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "connection" | "upgrade" | "x-stream-protocol-version" | "user-agent" | "origin"
    ) || name.starts_with("sec-websocket-")
}

/// Proxies `pods/<name>/exec`, `attach` or `portforward` (an HTTP upgrade) to the
/// pod's kubelet, then relays the switched connection.
pub async fn pod_stream(
    client: Arc<rustls::ClientConfig>,
    pod: &Value,
    node: Option<&Value>,
    subresource: &str,
    mut request: hyper::Request<hyper::body::Incoming>,
    query: &Query,
) -> ApiResult<Response<Body>> {
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        let action = match subresource {
            "exec" => "exec into",
            "attach" => "attach to",
            _ => "forward ports of",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {action} a container in a completed pod; current phase is {phase}"
        )));
    }
    let raw_query = request.uri().query().unwrap_or("").to_string();
    let path = match subresource {
        "exec" | "attach" => {
            let container = container_of(pod, query)?;
            if subresource == "exec" && query.get("command").is_none() {
                return Err(ApiError::bad_request(
                    "you must specify the command to run (the command parameter)",
                ));
            }
            format!("/{subresource}/{namespace}/{name}/{container}?{raw_query}")
        }
        _ => format!("/portForward/{namespace}/{name}?{raw_query}"),
    };
    let (node_name, ip, port) = kubelet_of(pod, node)?;
    let mut sender = connect(client, node_name, &ip, port).await?;
    let mut forwarded = hyper::Request::builder()
        .method(request.method().clone())
        .uri(path)
        .header("host", format!("{ip}:{port}"));
    for (header, value) in request.headers() {
        if is_upgrade_header(header) {
            forwarded = forwarded.header(header, value);
        }
    }
    let forwarded = forwarded
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let offered: Vec<String> = request
        .headers()
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|offer| offer.trim().to_string())
        .collect();
    let caller_upgrade = hyper::upgrade::on(&mut request);
    let mut response = sender
        .send_request(forwarded)
        .await
        .map_err(|e| unreachable(node_name, &ip, port, &e))?;
    if response.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let mut error = kubelet_error(node_name, &ip, port, response).await;
        if error.code == 403 && error.message.is_empty() {
            // The runtime's WebSocket server refuses a subprotocol it does not
            // serve with a bare 403; the status stays (clients fall back to SPDY).
            error.message = format!(
                "the container runtime refused the {subresource} stream: WebSocket subprotocol(s) \
                 {offered:?} are not served; offer v4.channel.k8s.io, v4.base64.channel.k8s.io, \
                 channel.k8s.io or base64.channel.k8s.io, or use SPDY"
            );
        }
        return Err(error);
    }
    let kubelet_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(caller), Ok(kubelet)) = (caller_upgrade.await, kubelet_upgrade.await) else {
            return;
        };
        let mut caller = hyper_util::rt::TokioIo::new(caller);
        let mut kubelet = hyper_util::rt::TokioIo::new(kubelet);
        let _ = tokio::io::copy_bidirectional(&mut caller, &mut kubelet).await;
    });
    let mut answer = Response::builder().status(hyper::StatusCode::SWITCHING_PROTOCOLS);
    for (header, value) in response.headers() {
        answer = answer.header(header, value);
    }
    answer
        .body(BodyExt::boxed(http_body_util::Empty::new()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// GETs a JSON document (`/stats/summary`) from a node's kubelet.
pub async fn get_json(
    client: Arc<rustls::ClientConfig>,
    node: &Value,
    path: &str,
) -> ApiResult<Value> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let (ip, port) = kubelet_address(node).ok_or_else(|| no_address(node_name))?;
    let response = kubelet_get(client, node_name, &ip, port, path).await?;
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(node_name, &ip, port, &e))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| unreachable(node_name, &ip, port, &e))
}

/// `pods/<name>/log` from the node's kubelet: the log's bytes as they come (a
/// followed log until the container's log stream ends or the caller goes).
pub async fn pod_log_stream(
    client: Arc<rustls::ClientConfig>,
    pod: &Value,
    node: Option<&Value>,
    query: &Query,
) -> ApiResult<ByteStream> {
    let container = container_of(pod, query)?;
    let (node_name, ip, port) = kubelet_of(pod, node)?;
    let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let mut params = Vec::new();
    for key in [
        "follow",
        "previous",
        "timestamps",
        "tailLines",
        "limitBytes",
        "sinceSeconds",
        "sinceTime",
    ] {
        if let Some(value) = query.get(key) {
            let value: String =
                percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC)
                    .to_string();
            params.push(format!("{key}={value}"));
        }
    }
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}?{}",
        params.join("&")
    );
    let response = kubelet_get(client, node_name, &ip, port, &path).await?;
    Ok(body_bytes(response))
}

/// Proxies `pods/<name>/log` to the node's kubelet as a plain HTTP answer.
pub async fn pod_log(
    client: Arc<rustls::ClientConfig>,
    pod: &Value,
    node: Option<&Value>,
    query: &Query,
) -> ApiResult<Response<Body>> {
    let log = pod_log_stream(client, pod, node, query).await?;
    streamed(log, "text/plain")
}

/// `nodes/<name>/proxy/<path>`: a GET of any kubelet API path (`/stats/summary`,
/// `/metrics/resource`, `/pods`, `/healthz`), streamed back.
pub async fn node_proxy(
    client: Arc<rustls::ClientConfig>,
    node: &Value,
    path_and_query: &str,
) -> ApiResult<Response<Body>> {
    let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
    let (ip, port) = kubelet_address(node).ok_or_else(|| no_address(node_name))?;
    let response = kubelet_get(client, node_name, &ip, port, path_and_query).await?;
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain")
        .to_string();
    relay(response, &content_type)
}

/// A successful answer of the kubelet to `GET path`.
async fn kubelet_get(
    client: Arc<rustls::ClientConfig>,
    node_name: &str,
    ip: &str,
    port: u16,
    path: &str,
) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
    let mut sender = connect(client, node_name, ip, port).await?;
    let request = hyper::Request::get(path)
        .header("host", format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(node_name, ip, port, &e))?;
    if !response.status().is_success() {
        return Err(kubelet_error(node_name, ip, port, response).await);
    }
    Ok(response)
}

/// The body of a kubelet's answer as it comes; an error from the kubelet ends it.
fn body_bytes(response: hyper::Response<hyper::body::Incoming>) -> ByteStream {
    Box::pin(
        http_body_util::BodyStream::new(response.into_body())
            .take_while(|frame| std::future::ready(frame.is_ok()))
            .filter_map(|frame| std::future::ready(frame.ok().and_then(|f| f.into_data().ok()))),
    )
}

/// Streams a kubelet's answer back as it comes.
fn relay(
    response: hyper::Response<hyper::body::Incoming>,
    content_type: &str,
) -> ApiResult<Response<Body>> {
    streamed(body_bytes(response), content_type)
}

/// A 200 answer whose body is `bytes`, sent as they come.
fn streamed(bytes: ByteStream, content_type: &str) -> ApiResult<Response<Body>> {
    let frames = bytes.map(|data| Ok::<_, std::convert::Infallible>(Frame::data(data)));
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_the_container() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container_of(&pod, &Query::parse(None)).unwrap(), "a");
        assert_eq!(
            container_of(&pod, &Query::parse(Some("container=i"))).unwrap(),
            "i"
        );
        let error = container_of(&pod, &Query::parse(Some("container=zz"))).unwrap_err();
        assert!(format!("{error:?}").contains("container zz is not valid for pod p"));
        let two = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let error = container_of(&two, &Query::parse(None)).unwrap_err();
        assert!(format!("{error:?}").contains("choose one of: [a b]"));
    }

    #[test]
    fn kubelet_address_from_node_status() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        assert_eq!(kubelet_address(&node), Some(("127.0.0.1".into(), 12345)));
        assert_eq!(kubelet_address(&json!({})), None);
    }
}
