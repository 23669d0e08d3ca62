//! `pods/log` proxied to the pod's node agent: the kubelet API of the node named in
//! `spec.nodeName`, at the Node's InternalIP and `daemonEndpoints.kubeletEndpoint.Port`.
//!
//! The API server authenticates to the kubelet with its kubelet client certificate
//! (signed by the cluster CA). Like kube-apiserver without
//! `--kubelet-certificate-authority`, it does not verify the kubelet's self-signed
//! serving certificate. The response (a followed log too) streams back as it comes.

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

/// Proxies `pods/<name>/log` to the node's kubelet.
pub async fn pod_log(
    client: Arc<rustls::ClientConfig>,
    pod: &Value,
    node: Option<&Value>,
    query: &Query,
) -> ApiResult<Response<Body>> {
    let container = container_of(pod, query)?;
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    let (ip, port) = node.and_then(kubelet_address).ok_or_else(|| {
        ApiError::new_service_unavailable(format!(
            "node {node_name:?} has no kubelet address (is its agent running?)"
        ))
    })?;
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
    let unreachable = |e: &dyn std::fmt::Display| {
        ApiError::new_service_unavailable(format!(
            "cannot reach the kubelet of node {node_name:?} at {ip}:{port}: {e}"
        ))
    };
    let tcp = tokio::net::TcpStream::connect((ip.as_str(), port))
        .await
        .map_err(|e| unreachable(&e))?;
    let server_name =
        rustls::pki_types::ServerName::try_from(ip.clone()).map_err(|e| unreachable(&e))?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(server_name, tcp)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header("host", format!("{ip}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = response.status();
    if !status.is_success() {
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let message = String::from_utf8_lossy(&body).trim().to_string();
        return Err(if status.as_u16() == 404 {
            ApiError::bad_request(message)
        } else {
            unreachable(&message)
        });
    }
    // Relay the stream; an error from the kubelet ends it.
    let stream = http_body_util::BodyStream::new(response.into_body())
        .take_while(|frame| std::future::ready(frame.is_ok()))
        .filter_map(|frame| std::future::ready(frame.ok().and_then(|f| f.into_data().ok())))
        .map(|data| Ok::<_, std::convert::Infallible>(Frame::data(data)));
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(BodyExt::boxed(StreamBody::new(stream)))
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
