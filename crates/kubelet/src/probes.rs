//! Container probes (startup, liveness, readiness) with upstream's timing: a probe
//! runs every `periodSeconds` once `initialDelaySeconds` have passed since the
//! container started, each try may take `timeoutSeconds`, and the result flips after
//! `successThreshold` successes or `failureThreshold` failures in a row. Liveness and
//! readiness wait until the startup probe (if any) has succeeded.
//!
//! Handlers: exec (CRI ExecSync; exit code 0), httpGet (HTTP, or HTTPS without
//! verifying the certificate, as upstream; a status from 200 to 399), tcpSocket (a
//! connection), grpc (`grpc.health.v1.Health/Check` answering SERVING). Each failed
//! try comes back with upstream's wording, for the Unhealthy events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cri::Cri;

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Startup,
    Liveness,
    Readiness,
}

/// One probe's running state for one container instance.
#[derive(Debug)]
struct State {
    container_id: String,
    last_run: Option<Instant>,
    successes: i32,
    failures: i32,
    /// The current verdict (readiness starts false, liveness and startup true/false
    /// as upstream: liveness is assumed alive, startup not yet started).
    ok: bool,
}

/// The probes of one pod's containers.
#[derive(Debug, Default)]
pub struct Prober {
    states: HashMap<(String, Kind), State>,
}

/// What the probes decided for a container in this pass.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// Startup probe succeeded (or there is none).
    pub started: bool,
    /// Readiness probe succeeded (or there is none), and started.
    pub ready: bool,
    /// Liveness (or startup) probe failed past its threshold: kill the container.
    pub kill: bool,
    /// The probe that decided the kill.
    pub killed_by: Option<Kind>,
    /// The probes that failed in this pass, with why.
    pub failures: Vec<(Kind, String)>,
}

impl Kind {
    /// `Liveness`, as upstream's event messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }
}

fn probe_of(container: &Container, kind: Kind) -> Option<&Probe> {
    match kind {
        Kind::Startup => container.startup_probe.as_ref(),
        Kind::Liveness => container.liveness_probe.as_ref(),
        Kind::Readiness => container.readiness_probe.as_ref(),
    }
}

impl Prober {
    /// Runs the probes of a running container that are due and returns the verdict.
    /// `started_at` is when the container started; `pod_ip` is where httpGet and
    /// tcpSocket probes connect.
    pub async fn check(
        &mut self,
        cri: &mut Cri,
        container: &Container,
        container_id: &str,
        started_at: Instant,
        pod_ip: &str,
    ) -> Verdict {
        let mut verdict = Verdict {
            started: true,
            ready: true,
            ..Default::default()
        };
        for kind in [Kind::Startup, Kind::Liveness, Kind::Readiness] {
            let Some(probe) = probe_of(container, kind) else {
                continue;
            };
            if kind != Kind::Startup && !verdict.started {
                if kind == Kind::Readiness {
                    verdict.ready = false;
                }
                continue;
            }
            let key = (container.name.clone(), kind);
            let state = self.states.entry(key.clone()).or_insert_with(|| State {
                container_id: String::new(),
                last_run: None,
                successes: 0,
                failures: 0,
                ok: false,
            });
            if state.container_id != container_id {
                *state = State {
                    container_id: container_id.to_string(),
                    last_run: None,
                    successes: 0,
                    failures: 0,
                    ok: kind == Kind::Liveness,
                };
            }
            let period = Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
            let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
            let due = match state.last_run {
                None => started_at.elapsed() >= delay,
                Some(last) => last.elapsed() >= period,
            };
            if due {
                state.last_run = Some(Instant::now());
                let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
                let outcome = run(cri, probe, container, container_id, pod_ip, timeout).await;
                let success = outcome.is_ok();
                if let Err(why) = outcome {
                    verdict.failures.push((kind, why));
                }
                let success_threshold = if kind == Kind::Readiness {
                    probe.success_threshold.unwrap_or(1).max(1)
                } else {
                    1
                };
                let failure_threshold = probe.failure_threshold.unwrap_or(3).max(1);
                if success {
                    state.successes += 1;
                    state.failures = 0;
                    if state.successes >= success_threshold {
                        state.ok = true;
                    }
                } else {
                    state.failures += 1;
                    state.successes = 0;
                    if state.failures >= failure_threshold {
                        state.ok = false;
                        if kind != Kind::Readiness {
                            verdict.kill = true;
                            verdict.killed_by = Some(kind);
                            tracing::info!(container = %container.name, ?kind, "probe failed; killing the container");
                        }
                    }
                }
            }
            match kind {
                Kind::Startup => verdict.started = state.ok,
                Kind::Liveness => {}
                Kind::Readiness => verdict.ready = state.ok,
            }
        }
        verdict.ready &= verdict.started;
        verdict
    }

    /// Forgets containers that are gone.
    pub fn retain(&mut self, live_ids: &[&str]) {
        self.states
            .retain(|_, state| live_ids.contains(&state.container_id.as_str()));
    }
}

/// Runs a probe's handler once; Err says why it failed.
async fn run(
    cri: &mut Cri,
    probe: &Probe,
    container: &Container,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    let host_of = |host: &Option<String>| {
        host.clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string())
    };
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match cri
            .exec_sync(container_id, command, timeout.as_secs() as i64)
            .await
        {
            Ok(result) if result.exit_code == 0 => Ok(()),
            Ok(result) => {
                let output = String::from_utf8_lossy(&[result.stdout, result.stderr].concat())
                    .trim()
                    .to_string();
                Err(match output.is_empty() {
                    true => format!("command exited with code {}", result.exit_code),
                    false => output,
                })
            }
            Err(error) => Err(format!("{error:#}")),
        };
    }
    if let Some(http) = &probe.http_get {
        let port = resolve_port(&http.port, container)
            .ok_or_else(|| format!("unknown port {:?}", http.port))?;
        let host = host_of(&http.host);
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let https = http.scheme.as_deref() == Some("HTTPS");
        let scheme = if https { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}/{}",
            join_host_port(&host, port),
            path.trim_start_matches('/')
        );
        let headers: String = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n",
            join_host_port(&host, port)
        );
        let attempt = http_get(&host, port, https, request);
        return match tokio::time::timeout(timeout, attempt).await {
            Err(_) => Err(format!(
                "Get \"{url}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            )),
            Ok(Err(error)) => Err(format!("Get \"{url}\": {error}")),
            Ok(Ok(Some(code @ 200..=399))) => {
                let _ = code;
                Ok(())
            }
            Ok(Ok(Some(code))) => Err(format!("HTTP probe failed with statuscode: {code}")),
            Ok(Ok(None)) => Err(format!("Get \"{url}\": malformed HTTP response")),
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)
            .ok_or_else(|| format!("unknown port {:?}", tcp.port))?;
        let host = host_of(&tcp.host);
        let address = join_host_port(&host, port);
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&address)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("dial tcp {address}: {error}")),
            Err(_) => Err(format!("dial tcp {address}: i/o timeout")),
        };
    }
    if let Some(grpc) = &probe.grpc {
        let port = u16::try_from(grpc.port).map_err(|_| format!("invalid port {}", grpc.port))?;
        let service = grpc.service.clone().unwrap_or_default();
        let address = join_host_port(pod_ip, port);
        return match tokio::time::timeout(timeout, grpc_health(&address, service)).await {
            Err(_) => Err(format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            )),
            Ok(result) => result,
        };
    }
    Err("the probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

fn join_host_port(host: &str, port: u16) -> String {
    match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }
}

/// Sends `request` and reads the status code of the answer, over TLS when `https`
/// (the server's certificate is not checked, as upstream's probes).
async fn http_get(
    host: &str,
    port: u16,
    https: bool,
    request: String,
) -> std::io::Result<Option<u16>> {
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let mut head = vec![0u8; 64];
    let n = if https {
        let config = any_certificate_client();
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut tls = connector.connect(name, stream).await?;
        tls.write_all(request.as_bytes()).await?;
        tls.read(&mut head).await?
    } else {
        let mut stream = stream;
        stream.write_all(request.as_bytes()).await?;
        stream.read(&mut head).await?
    };
    Ok(http_status(&head[..n]))
}

/// A TLS client that takes any server certificate (checking only the handshake's
/// signatures): probes reach the pod by IP, with whatever certificate it has.
fn any_certificate_client() -> std::sync::Arc<rustls::ClientConfig> {
    use std::sync::{Arc, OnceLock};
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
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
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The gRPC health protocol's request and answer (grpc.health.v1).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// `grpc.health.v1.Health/Check` at `address`: Ok when the service is SERVING.
async fn grpc_health(address: &str, service: String) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("invalid address {address}: {e}"))?;
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("failed to connect service {address:?}: {e}"))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| format!("failed to connect service {address:?}: {e}"))?;
    let path = http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let codec: tonic_prost::ProstCodec<HealthCheckRequest, HealthCheckResponse> =
        tonic_prost::ProstCodec::default();
    let answer = client
        .unary(
            tonic::Request::new(HealthCheckRequest { service }),
            path,
            codec,
        )
        .await
        .map_err(|status| format!("health rpc failed: {}", status.message()))?;
    const SERVING: i32 = 1;
    match answer.into_inner().status {
        SERVING => Ok(()),
        other => {
            let name = match other {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            };
            Err(format!("service unhealthy (responded with {name:?})"))
        }
    }
}

/// A numeric port, or a named one looked up in the container's ports.
fn resolve_port(port: &IntOrString, container: &Container) -> Option<u16> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .or_else(|| name.parse().ok()),
    }
}

/// The status code of an HTTP/1.x response head.
fn http_status(head: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(head).ok()?;
    let mut words = text.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    words.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A grpc.health.v1 server on loopback answering `status` for every service.
    async fn health_server(status: i32) -> u16 {
        #[derive(Clone)]
        struct Health(i32);
        impl tonic::server::NamedService for Health {
            const NAME: &'static str = "grpc.health.v1.Health";
        }
        struct Check(i32);
        impl tonic::server::UnaryService<HealthCheckRequest> for Check {
            type Response = HealthCheckResponse;
            type Future =
                std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;
            fn call(&mut self, _: tonic::Request<HealthCheckRequest>) -> Self::Future {
                std::future::ready(Ok(tonic::Response::new(HealthCheckResponse {
                    status: self.0,
                })))
            }
        }
        impl tower::Service<http::Request<tonic::body::Body>> for Health {
            type Response = http::Response<tonic::body::Body>;
            type Error = std::convert::Infallible;
            type Future = std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
            >;
            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
                let status = self.0;
                Box::pin(async move {
                    let codec: tonic_prost::ProstCodec<HealthCheckResponse, HealthCheckRequest> =
                        tonic_prost::ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec);
                    Ok(grpc.unary(Check(status), request).await)
                })
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Health(status))
                .serve_with_incoming(incoming),
        );
        port
    }

    #[tokio::test]
    async fn grpc_health_checks_pass_only_when_serving() {
        let serving = health_server(1).await;
        assert_eq!(
            grpc_health(&format!("127.0.0.1:{serving}"), String::new()).await,
            Ok(())
        );
        let not_serving = health_server(2).await;
        let error = grpc_health(&format!("127.0.0.1:{not_serving}"), "db".into())
            .await
            .unwrap_err();
        assert_eq!(error, "service unhealthy (responded with \"NOT_SERVING\")");
        // Nothing listening: a connection error, not a hang.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let error = grpc_health(&format!("127.0.0.1:{port}"), String::new())
            .await
            .unwrap_err();
        assert!(error.starts_with("failed to connect service"), "{error}");
    }

    #[tokio::test]
    async fn https_gets_take_any_certificate() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["somewhere.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(stream).await.unwrap();
            let mut request = vec![0u8; 1024];
            let _ = tls.read(&mut request).await;
            tls.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            let _ = tls.shutdown().await;
        });
        let request = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_string();
        assert_eq!(
            http_get("127.0.0.1", port, true, request).await.unwrap(),
            Some(204)
        );
    }

    #[test]
    fn status_line() {
        assert_eq!(http_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(http_status(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(http_status(b"garbage"), None);
    }

    #[test]
    fn named_ports() {
        let container: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "ports": [{"name": "http", "containerPort": 8080}]
        }))
        .unwrap();
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &container),
            Some(8080)
        );
        assert_eq!(resolve_port(&IntOrString::Int(81), &container), Some(81));
        assert_eq!(
            resolve_port(&IntOrString::String("nope".into()), &container),
            None
        );
    }
}
