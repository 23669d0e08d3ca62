//! The kubelet API over HTTPS (default port 10250): `/healthz`, `/stats/summary` and
//! `/metrics/resource` (usage sampled by [`crate::stats`]), `/metrics` (the
//! `kubelet_volume_stats_*` families of [`crate::volume_stats`]),
//! `/containerLogs/<namespace>/<pod>/<container>` with upstream's query parameters
//! (follow, previous, tailLines, limitBytes, sinceSeconds, timestamps), and the
//! streaming calls `/exec/<namespace>/<pod>[/<uid>]/<container>`, `/attach/...` and
//! `/portForward/<namespace>/<pod>[/<uid>]`.
//!
//! A streaming call asks the runtime (CRI Exec, Attach, PortForward) for a URL of its
//! own streaming server and relays the client's HTTP upgrade there: the request goes
//! on with its Upgrade, Connection, X-Stream-Protocol-Version and Sec-WebSocket-*
//! headers, the runtime's answer (101 Switching Protocols or an error) comes back,
//! then bytes are copied both ways. The runtime speaks SPDY/3.1 and WebSocket
//! channel.k8s.io v1 to v4 itself.
//!
//! The API server proxies `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` here. Callers must present a client certificate
//! signed by the cluster CA (the API server does); `/healthz` answers anyone. The
//! serving certificate is self-signed for the node's address, as upstream's kubelet
//! does without `--tls-cert-file`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::cri::{Cri, api};
use crate::stats::{self, Sampler};

type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

struct Context_ {
    node_name: String,
    logs_dir: PathBuf,
    cri: Cri,
    stats: Sampler,
}

/// Binds the kubelet API on `bind` and serves it in the background.
pub async fn serve(
    bind: SocketAddr,
    node_name: &str,
    client_ca_pem: &[u8],
    logs_dir: PathBuf,
    cri: Cri,
    stats: Sampler,
) -> Result<tokio::task::JoinHandle<()>> {
    let tls = tls_config(bind, node_name, client_ca_pem)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} for the kubelet API (--kubelet-port)"))?;
    let context = Arc::new(Context_ {
        node_name: node_name.to_string(),
        logs_dir,
        cri,
        stats,
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let context = context.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let authenticated = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let service = hyper::service::service_fn(move |req| {
                    let context = context.clone();
                    async move { Ok::<_, Infallible>(handle(&context, req, authenticated).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    }))
}

fn tls_config(
    bind: SocketAddr,
    node_name: &str,
    client_ca_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>> {
    let mut names = vec![node_name.to_string(), "localhost".to_string()];
    if !bind.ip().is_unspecified() {
        names.push(bind.ip().to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .context("cannot create the kubelet's serving certificate")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(cert.context("reading the cluster CA certificate")?)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .context("building the client certificate verifier")?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| anyhow::anyhow!("the kubelet's key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![certified.cert.der().clone()], key)?;
    Ok(Arc::new(config))
}

use rustls::pki_types::pem::PemObject;

fn text(status: u16, message: &str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(format!("{message}\n"))).boxed())
        .expect("a valid response")
}

async fn handle(
    context: &Context_,
    mut req: Request<Incoming>,
    authenticated: bool,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    if path == "/healthz" {
        return text(200, "ok");
    }
    if !authenticated {
        return text(
            401,
            "Unauthorized: present a client certificate signed by the cluster CA",
        );
    }
    let query = parse_query(req.uri().query().unwrap_or(""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["containerLogs", namespace, pod, container] => {
            match container_logs(context, namespace, pod, container, &query).await {
                Ok(response) => response,
                Err(error) => text(404, &format!("{error:#}")),
            }
        }
        ["stats", "summary"] => {
            let summary = stats::summary(&context.node_name, &context.stats.snapshot());
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(summary.to_string())).boxed())
                .expect("a valid response")
        }
        ["metrics"] => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(
                Full::new(Bytes::from(crate::volume_stats::claim_metrics(
                    &context.stats.snapshot().volumes,
                )))
                .boxed(),
            )
            .expect("a valid response"),
        ["metrics", "resource"] => Response::builder()
            .header("content-type", "text/plain; version=0.0.4")
            .body(
                Full::new(Bytes::from(stats::resource_metrics(
                    &context.stats.snapshot(),
                )))
                .boxed(),
            )
            .expect("a valid response"),
        ["exec" | "attach", namespace, pod, .., container] if parts.len() <= 5 => {
            let raw_query = req.uri().query().unwrap_or("").to_string();
            let url =
                match stream_url(context, parts[0], namespace, pod, container, &raw_query).await {
                    Ok(url) => url,
                    Err(error) => return text(400, &format!("{error:#}")),
                };
            proxy_upgrade(&mut req, &url).await
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            let raw_query = req.uri().query().unwrap_or("").to_string();
            let url = match port_forward_url(context, namespace, pod, &raw_query).await {
                Ok(url) => url,
                Err(error) => return text(400, &format!("{error:#}")),
            };
            proxy_upgrade(&mut req, &url).await
        }
        _ => text(404, &format!("{path} is not a kubelet API path")),
    }
}

/// Every value of a repeated query parameter (`command=sh&command=-c`), decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| percent_decode(k) == key)
        .map(|(_, v)| percent_decode(v))
        .collect()
}

/// The running container of a pod, by name (its latest attempt).
async fn running_container(
    context: &Context_,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String> {
    let label = |c: &api::Container, key: &str| c.labels.get(key).cloned().unwrap_or_default();
    let containers = context.cri.clone().list_containers().await?;
    containers
        .into_iter()
        .filter(|c| {
            label(c, "io.kubernetes.pod.namespace") == namespace
                && label(c, "io.kubernetes.pod.name") == pod
                && label(c, "io.kubernetes.container.name") == container
                && c.state == api::ContainerState::ContainerRunning as i32
        })
        .max_by_key(|c| c.metadata.as_ref().map(|m| m.attempt))
        .map(|c| c.id)
        .with_context(|| {
            format!("container not found ({container:?}): it is not running in pod {namespace}/{pod} on this node")
        })
}

/// The runtime's streaming URL for an exec or attach request.
async fn stream_url(
    context: &Context_,
    kind: &str,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Result<String> {
    let flag = |name: &str| {
        query_values(query, name)
            .first()
            .is_some_and(|v| v == "1" || v == "true")
    };
    let (stdin, stdout, stderr, tty) = (flag("stdin"), flag("stdout"), flag("stderr"), flag("tty"));
    if !(stdin || stdout || stderr) {
        anyhow::bail!("you must specify at least 1 of stdin, stdout, stderr");
    }
    let container_id = running_container(context, namespace, pod, container).await?;
    let mut cri = context.cri.clone();
    if kind == "exec" {
        let cmd = query_values(query, "command");
        if cmd.is_empty() {
            anyhow::bail!("you must specify the command to run (command=...)");
        }
        cri.exec(api::ExecRequest {
            container_id,
            cmd,
            tty,
            stdin,
            stdout,
            stderr: stderr && !tty,
        })
        .await
    } else {
        cri.attach(api::AttachRequest {
            container_id,
            stdin,
            tty,
            stdout,
            stderr: stderr && !tty,
        })
        .await
    }
}

/// The runtime's streaming URL forwarding ports of the pod's sandbox.
async fn port_forward_url(
    context: &Context_,
    namespace: &str,
    pod: &str,
    query: &str,
) -> Result<String> {
    let sandboxes = context.cri.clone().list_pod_sandboxes().await?;
    let sandbox = sandboxes
        .into_iter()
        .find(|s| {
            let meta = s.metadata.as_ref();
            meta.is_some_and(|m| m.namespace == namespace && m.name == pod)
                && s.state == api::PodSandboxState::SandboxReady as i32
        })
        .with_context(|| format!("pod {namespace}/{pod} has no ready sandbox on this node"))?;
    let mut port = Vec::new();
    for value in query_values(query, "ports") {
        for part in value.split(',').filter(|p| !p.is_empty()) {
            port.push(
                part.trim()
                    .parse::<i32>()
                    .with_context(|| format!("port {part:?} is not a number"))?,
            );
        }
    }
    context
        .cri
        .clone()
        .port_forward(api::PortForwardRequest {
            pod_sandbox_id: sandbox.id,
            port,
        })
        .await
}

/// Relays an HTTP upgrade request to the runtime's streaming `url` (plain HTTP on
/// loopback), returns its answer, and after a 101 copies bytes both ways.
async fn proxy_upgrade(req: &mut Request<Incoming>, url: &str) -> Response<Body> {
    match try_proxy_upgrade(req, url).await {
        Ok(response) => response,
        Err(error) => text(
            502,
            &format!("streaming through the runtime failed: {error:#}"),
        ),
    }
}

async fn try_proxy_upgrade(req: &mut Request<Incoming>, url: &str) -> Result<Response<Body>> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("the runtime's streaming URL {url:?}"))?;
    let host = uri
        .host()
        .context("the runtime's streaming URL has no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to the runtime's streaming server {host}:{port}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(connection.with_upgrades());
    let mut forwarded = Request::builder().method(req.method().clone()).uri(
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string(),
    );
    for (name, value) in req.headers() {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            forwarded = forwarded.header(name, value);
        }
    }
    let forwarded = forwarded
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let client_upgrade = hyper::upgrade::on(req);
    let mut response = sender.send_request(forwarded).await?;
    let status = response.status();
    let headers = response.headers().clone();
    if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let body = response.into_body().collect().await?.to_bytes();
        let mut answer = Response::builder().status(status);
        for (name, value) in &headers {
            answer = answer.header(name, value);
        }
        return Ok(answer.body(Full::new(body).boxed())?);
    }
    let runtime_upgrade = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (Ok(client), Ok(runtime)) = (client_upgrade.await, runtime_upgrade.await) else {
            return;
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut runtime = hyper_util::rt::TokioIo::new(runtime);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut runtime).await;
    });
    let mut answer = Response::builder().status(status);
    for (name, value) in &headers {
        answer = answer.header(name, value);
    }
    Ok(answer.body(http_body_util::Empty::new().boxed())?)
}

fn parse_query(query: &str) -> std::collections::HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                Err(_) => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The log files of a container, oldest attempt first.
fn log_files(
    logs_dir: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<(String, Vec<(u32, PathBuf)>)> {
    let prefix = format!("{namespace}_{pod}_");
    let pod_dir = std::fs::read_dir(logs_dir)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .with_context(|| format!("pod {namespace}/{pod} has no logs on this node"))?;
    let uid = pod_dir.file_name().to_string_lossy()[prefix.len()..].to_string();
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(pod_dir.path().join(container))
        .with_context(|| {
            format!("container {container:?} of pod {namespace}/{pod} has no logs yet")
        })?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let attempt: u32 = name.strip_suffix(".log")?.parse().ok()?;
            Some((attempt, e.path()))
        })
        .collect();
    files.sort();
    Ok((uid, files))
}

/// Options of a log request, as upstream's PodLogOptions.
struct LogOptions {
    follow: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    limit_bytes: Option<usize>,
    since: Option<chrono::DateTime<chrono::Utc>>,
}

/// Renders complete CRI log lines as the user sees them.
fn render(lines: &str, options: &LogOptions) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(time), Some(_stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let message = parts.next().unwrap_or("");
        if let Some(since) = options.since
            && chrono::DateTime::parse_from_rfc3339(time).is_ok_and(|t| t < since)
        {
            continue;
        }
        let newline = if tag == "P" { "" } else { "\n" };
        if options.timestamps {
            out.push(format!("{time} {message}{newline}"));
        } else {
            out.push(format!("{message}{newline}"));
        }
    }
    out
}

async fn container_logs(
    context: &Context_,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &std::collections::HashMap<String, String>,
) -> Result<Response<Body>> {
    let flag = |name: &str| query.get(name).is_some_and(|v| v == "true" || v == "1");
    let number = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
    let options = LogOptions {
        follow: flag("follow"),
        timestamps: flag("timestamps"),
        tail_lines: number("tailLines").map(|n| n.max(0) as usize),
        limit_bytes: number("limitBytes").map(|n| n.max(0) as usize),
        since: number("sinceSeconds")
            .map(|s| chrono::Utc::now() - chrono::Duration::seconds(s))
            .or_else(|| {
                query
                    .get("sinceTime")
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
            }),
    };
    let (uid, files) = log_files(&context.logs_dir, namespace, pod, container)?;
    let (attempt, file) = if flag("previous") {
        files.iter().rev().nth(1).cloned().with_context(|| {
            format!("previous terminated container {container:?} in pod {pod:?} not found")
        })?
    } else {
        files
            .last()
            .cloned()
            .with_context(|| format!("container {container:?} has no logs yet"))?
    };
    let mut handle = tokio::fs::File::open(&file).await?;
    let mut contents = String::new();
    handle.read_to_string(&mut contents).await?;
    let complete = contents.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let mut offset = complete as u64;
    let mut lines = render(&contents[..complete], &options);
    if let Some(tail) = options.tail_lines {
        lines = lines.split_off(lines.len().saturating_sub(tail));
    }
    let mut initial: String = lines.concat();
    if let Some(limit) = options.limit_bytes {
        let mut end = limit.min(initial.len());
        while !initial.is_char_boundary(end) {
            end -= 1;
        }
        initial.truncate(end);
    }
    if !options.follow {
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(initial)).boxed())?);
    }
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let mut cri = context.cri.clone();
    let container = container.to_string();
    tokio::spawn(async move {
        if sender
            .send(Ok(Frame::data(Bytes::from(initial))))
            .await
            .is_err()
        {
            return;
        }
        let mut pending = String::new();
        loop {
            let mut chunk = String::new();
            if handle.seek(std::io::SeekFrom::Start(offset)).await.is_err()
                || handle.read_to_string(&mut chunk).await.is_err()
            {
                return;
            }
            offset += chunk.len() as u64;
            pending.push_str(&chunk);
            if let Some(end) = pending.rfind('\n') {
                let complete: String = pending.drain(..=end).collect();
                let text = render(&complete, &options).concat();
                if !text.is_empty()
                    && sender
                        .send(Ok(Frame::data(Bytes::from(text))))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            if chunk.is_empty() && !running(&mut cri, &uid, &container, attempt).await {
                return;
            }
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body(BodyExt::boxed(StreamBody::new(stream)))?)
}

/// Whether the container instance that writes this log still runs.
async fn running(cri: &mut Cri, uid: &str, container: &str, attempt: u32) -> bool {
    let Ok(containers) = cri.list_containers().await else {
        return false;
    };
    containers.iter().any(|c| {
        c.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid)
            && c.labels
                .get("io.kubernetes.container.name")
                .map(String::as_str)
                == Some(container)
            && c.metadata.as_ref().map(|m| m.attempt) == Some(attempt)
            && c.state == api::ContainerState::ContainerRunning as i32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LogOptions {
        LogOptions {
            follow: false,
            timestamps: false,
            tail_lines: None,
            limit_bytes: None,
            since: None,
        }
    }

    #[test]
    fn renders_cri_lines() {
        let log = "2026-01-01T00:00:00.1Z stdout F hello\n2026-01-01T00:00:01Z stderr P part\n2026-01-01T00:00:02Z stderr F ial\n";
        assert_eq!(render(log, &options()).concat(), "hello\npartial\n");
        let with_times = LogOptions {
            timestamps: true,
            ..options()
        };
        assert_eq!(
            render(log, &with_times)[0],
            "2026-01-01T00:00:00.1Z hello\n"
        );
        let since = LogOptions {
            since: Some("2026-01-01T00:00:01Z".parse().unwrap()),
            ..options()
        };
        assert_eq!(render(log, &since).concat(), "partial\n");
    }

    #[test]
    fn query_decoding() {
        let query = parse_query("follow=true&sinceTime=2026-01-01T00%3A00%3A00Z&x");
        assert_eq!(query["follow"], "true");
        assert_eq!(query["sinceTime"], "2026-01-01T00:00:00Z");
        assert_eq!(query["x"], "");
    }
}
