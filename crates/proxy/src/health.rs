//! The proxy's health answers over HTTP, as upstream kube-proxy's:
//!
//! - [`ProxyHealth`]: whether rule syncs succeed, served by [`serve_proxy_health`] at
//!   `--healthz-bind-address` (`/healthz`, `/livez`): 503 once a sync has been due
//!   for longer than the timeout (twice the sync period) without succeeding.
//!   `/healthz` also answers 503 while the node is not eligible for traffic (being
//!   deleted, or tainted `ToBeDeletedByClusterAutoscaler`), so that load balancers
//!   drain it first; `/livez` ignores the node.
//! - [`ServiceHealthServers`]: one listener per LoadBalancer Service with
//!   externalTrafficPolicy Local on its `healthCheckNodePort`, answering any request
//!   with 200 while this node has a ready local endpoint of the Service (and the proxy
//!   is healthy), 503 otherwise, so that load balancers send traffic only to nodes
//!   that can serve it. [`ServiceHealthServers::sync`] opens and closes listeners as
//!   Services come and go.
//!
//! A port that cannot be bound is logged and tried again at the next sync; the proxy
//! keeps running.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::compute::{ServiceName, ServicePort};

/// Whether the proxy keeps its rules in sync: healthy unless a sync has been due for
/// longer than the timeout.
#[derive(Debug)]
pub struct ProxyHealth {
    timeout: Duration,
    state: Mutex<SyncState>,
}

#[derive(Debug)]
struct SyncState {
    /// When the oldest sync that has not succeeded yet became due.
    pending_since: Option<Instant>,
    last_updated: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the node may receive load-balanced traffic (true until its Node says
    /// otherwise, as upstream).
    node_eligible: bool,
}

/// The taint the cluster autoscaler puts on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// Whether `node` may receive load-balanced traffic: not being deleted and not
/// tainted [`TO_BE_DELETED_TAINT`].
pub fn node_eligible(node: &k8s_openapi::api::core::v1::Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && !node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .any(|t| t.key == TO_BE_DELETED_TAINT)
}

impl ProxyHealth {
    pub fn new(timeout: Duration) -> Arc<ProxyHealth> {
        Arc::new(ProxyHealth {
            timeout,
            state: Mutex::new(SyncState {
                pending_since: None,
                last_updated: None,
                node_eligible: true,
            }),
        })
    }

    /// Records whether the node may receive load-balanced traffic ([`node_eligible`]).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.state.lock().unwrap().node_eligible = eligible;
    }

    /// A sync is due (kept as the oldest one until a sync succeeds).
    pub fn queued(&self) {
        let mut state = self.state.lock().unwrap();
        state.pending_since.get_or_insert_with(Instant::now);
    }

    /// The rules are in sync.
    pub fn updated(&self) {
        let mut state = self.state.lock().unwrap();
        state.pending_since = None;
        state.last_updated = Some(chrono::Utc::now());
    }

    pub fn is_healthy(&self) -> bool {
        let state = self.state.lock().unwrap();
        state
            .pending_since
            .is_none_or(|since| since.elapsed() < self.timeout)
    }

    /// The `/healthz` answer (`with_node`: the node's eligibility counts and is
    /// reported) or the `/livez` one.
    fn answer(&self, with_node: bool) -> Answer {
        let node_eligible = self.state.lock().unwrap().node_eligible;
        let healthy = self.is_healthy() && (node_eligible || !with_node);
        let now = chrono::Utc::now();
        let last_updated = if healthy {
            Some(now)
        } else {
            self.state.lock().unwrap().last_updated
        };
        let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        let node = if with_node {
            format!(", \"nodeEligible\": {node_eligible}")
        } else {
            String::new()
        };
        Answer {
            status: if healthy { 200 } else { 503 },
            body: format!(
                "{{\"lastUpdated\": {:?},\"currentTime\": {:?}{node}}}",
                time(last_updated),
                time(Some(now))
            ),
        }
    }
}

/// Serves `/healthz` and `/livez` of `health` at `address` until the process stops;
/// returns at once, after logging why, when the address cannot be bound.
pub async fn serve_proxy_health(address: SocketAddr, health: Arc<ProxyHealth>) {
    let listener = match listen(address) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(
                %address,
                %error,
                "cannot serve the service proxy's /healthz and /livez (free the port, or choose another with --healthz-bind-address; empty disables it)"
            );
            return;
        }
    };
    tracing::info!(%address, "serving the service proxy's /healthz and /livez");
    serve(listener, move |path| match path {
        "/healthz" => health.answer(true),
        "/livez" => health.answer(false),
        _ => Answer {
            status: 404,
            body: "404 page not found\n".into(),
        },
    })
    .await;
}

/// What one Service's health check answers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub port: u16,
    /// This node's ready endpoints of the Service (distinct addresses over its ports).
    pub local_endpoints: usize,
}

/// The health checks these Service ports need on this node: one per Service with a
/// `healthCheckNodePort`.
pub fn health_checks(ports: &[ServicePort]) -> BTreeMap<ServiceName, HealthCheck> {
    let mut addresses: BTreeMap<ServiceName, (u16, BTreeSet<&str>)> = BTreeMap::new();
    for port in ports {
        let Some(health_port) = port.health_check_node_port else {
            continue;
        };
        let (_, ready) = addresses
            .entry(port.service.clone())
            .or_insert_with(|| (health_port, BTreeSet::new()));
        ready.extend(port.local.iter().filter(|e| e.ready).map(|e| e.ip.as_str()));
    }
    addresses
        .into_iter()
        .map(|(service, (port, ready))| {
            (
                service,
                HealthCheck {
                    port,
                    local_endpoints: ready.len(),
                },
            )
        })
        .collect()
}

/// The health check listeners of the Services that need one, on the node's addresses
/// for node ports.
#[derive(Debug)]
pub struct ServiceHealthServers {
    addresses: Vec<IpAddr>,
    proxy: Arc<ProxyHealth>,
    listeners: HashMap<ServiceName, Listener>,
}

/// One Service's listener, a socket on each address.
#[derive(Debug)]
struct Listener {
    port: u16,
    local_endpoints: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listener {
    /// Stops serving and closes the sockets (done when this returns, so the port can
    /// be bound again at once).
    async fn close(self) {
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for task in self.listeners.values().flat_map(|listener| &listener.tasks) {
            task.abort();
        }
    }
}

impl ServiceHealthServers {
    /// Listeners on each of `addresses` (`0.0.0.0` on a node: every address; the
    /// local addresses in `--nodeport-addresses` where that is given), answering 503
    /// while `proxy` is unhealthy.
    pub fn new(addresses: Vec<IpAddr>, proxy: Arc<ProxyHealth>) -> ServiceHealthServers {
        ServiceHealthServers {
            addresses,
            proxy,
            listeners: HashMap::new(),
        }
    }

    /// Makes the open listeners those of `wanted`: a Service gone (or on another
    /// port) is closed, a new one opened, and every count updated.
    pub async fn sync(&mut self, wanted: &BTreeMap<ServiceName, HealthCheck>) {
        let gone: Vec<ServiceName> = self
            .listeners
            .iter()
            .filter(|(service, listener)| {
                wanted
                    .get(*service)
                    .is_none_or(|check| check.port != listener.port)
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in gone {
            if let Some(listener) = self.listeners.remove(&service) {
                tracing::info!(
                    service = %format!("{}/{}", service.namespace, service.name),
                    port = listener.port,
                    "closing the health check node port"
                );
                listener.close().await;
            }
        }
        for (service, check) in wanted {
            if let Some(listener) = self.listeners.get(service) {
                listener
                    .local_endpoints
                    .store(check.local_endpoints, Ordering::Relaxed);
                continue;
            }
            let name = format!("{}/{}", service.namespace, service.name);
            let sockets: std::io::Result<Vec<TcpListener>> = self
                .addresses
                .iter()
                .map(|address| listen(SocketAddr::new(*address, check.port)))
                .collect();
            let sockets = match sockets {
                Ok(sockets) => sockets,
                Err(error) => {
                    tracing::error!(
                        service = %name,
                        port = check.port,
                        addresses = ?self.addresses,
                        %error,
                        "cannot open the Service's health check node port; load balancers will see this node as down (free the port; retried at the next sync)"
                    );
                    continue;
                }
            };
            tracing::info!(service = %name, port = check.port, addresses = ?self.addresses, "opened the health check node port");
            let local_endpoints = Arc::new(AtomicUsize::new(check.local_endpoints));
            let tasks = sockets
                .into_iter()
                .map(|socket| {
                    tokio::spawn(serve(socket, {
                        let local_endpoints = local_endpoints.clone();
                        let proxy = self.proxy.clone();
                        let service = service.clone();
                        move |_path| {
                            service_answer(
                                &service,
                                local_endpoints.load(Ordering::Relaxed),
                                proxy.is_healthy(),
                            )
                        }
                    }))
                })
                .collect();
            self.listeners.insert(
                service.clone(),
                Listener {
                    port: check.port,
                    local_endpoints,
                    tasks,
                },
            );
        }
    }

    /// The ports listened on now, by Service.
    pub fn ports(&self) -> BTreeMap<ServiceName, u16> {
        self.listeners
            .iter()
            .map(|(service, listener)| (service.clone(), listener.port))
            .collect()
    }
}

/// A Service health check's answer, as upstream's: 200 with local endpoints and a
/// healthy proxy, otherwise 503; the JSON body tells which.
fn service_answer(service: &ServiceName, local_endpoints: usize, proxy_healthy: bool) -> Answer {
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    Answer {
        status: if local_endpoints > 0 && proxy_healthy {
            200
        } else {
            503
        },
        body: format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
            quote(&service.namespace),
            quote(&service.name)
        ),
    }
}

/// An HTTP answer with a JSON body.
struct Answer {
    status: u16,
    body: String,
}

/// A listening socket on `address`, reusing the address (as Go's listeners do, so a
/// port closed and opened again is not refused for its connections in TIME_WAIT).
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(128)
}

/// Accepts connections on `listener` forever, answering each request with what
/// `answer` gives for its path.
async fn serve(listener: TcpListener, answer: impl Fn(&str) -> Answer + Send + Sync + 'static) {
    let answer = Arc::new(answer);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                respond(stream, |path| answer(path)),
            )
            .await;
        });
    }
}

/// Reads one request's head from `stream` and writes the answer for its path; the
/// connection is closed after it.
async fn respond(mut stream: TcpStream, answer: impl Fn(&str) -> Answer) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let head = String::from_utf8_lossy(&head);
    let path = head
        .lines()
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    let Answer { status, body } = answer(path);
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Real listeners on 127.0.0.1, asked over real TCP connections.
#[cfg(test)]
mod tests {
    use super::*;

    /// A port free on 127.0.0.1 just now.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The whole response to `GET path` on 127.0.0.1, or the connection error.
    async fn get(port: u16, path: &str) -> std::io::Result<String> {
        get_at("127.0.0.1", port, path).await
    }

    async fn get_at(address: &str, port: u16, path: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect((address, port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: node\r\n\r\n").as_bytes())
            .await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok(response)
    }

    fn web() -> ServiceName {
        ServiceName {
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    fn wanted(port: u16, local_endpoints: usize) -> BTreeMap<ServiceName, HealthCheck> {
        BTreeMap::from([(
            web(),
            HealthCheck {
                port,
                local_endpoints,
            },
        )])
    }

    #[tokio::test]
    async fn health_check_answers_200_with_local_endpoints_503_without_and_closes_when_gone() {
        let proxy = ProxyHealth::new(Duration::from_secs(60));
        let mut servers =
            ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], proxy.clone());
        let port = free_port();
        servers.sync(&wanted(port, 2)).await;
        assert_eq!(servers.ports(), BTreeMap::from([(web(), port)]));
        let response = get(port, "/any/path").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("\r\nContent-Type: application/json\r\n"));
        assert!(response.contains("\r\nX-Content-Type-Options: nosniff\r\n"));
        let body = response.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"service": {"namespace": "default", "name": "web"},
                               "localEndpoints": 2, "serviceProxyHealthy": true})
        );

        servers.sync(&wanted(port, 0)).await;
        let response = get(port, "/").await.unwrap();
        assert!(
            response.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{response}"
        );
        assert!(response.contains("\"localEndpoints\": 0"), "{response}");

        // An unhealthy proxy fails the check whatever the endpoints.
        servers.sync(&wanted(port, 1)).await;
        let stalled = ProxyHealth::new(Duration::ZERO);
        stalled.queued();
        let mut stalled_servers =
            ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], stalled.clone());
        let other = free_port();
        stalled_servers.sync(&wanted(other, 1)).await;
        let response = get(other, "/").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
        assert!(
            response.contains("\"serviceProxyHealthy\": false"),
            "{response}"
        );

        servers.sync(&BTreeMap::new()).await;
        assert!(servers.ports().is_empty());
        let refused = get(port, "/").await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        // Opened again on the same port at once.
        servers.sync(&wanted(port, 1)).await;
        assert!(get(port, "/").await.unwrap().starts_with("HTTP/1.1 200 "));
    }

    #[tokio::test]
    async fn health_check_ports_listen_only_on_the_addresses_given() {
        let proxy = ProxyHealth::new(Duration::from_secs(60));
        let addresses = vec!["127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()];
        let mut servers = ServiceHealthServers::new(addresses, proxy);
        let port = free_port();
        servers.sync(&wanted(port, 1)).await;
        for address in ["127.0.0.1", "127.0.0.2"] {
            let response = get_at(address, port, "/").await.unwrap();
            assert!(
                response.starts_with("HTTP/1.1 200 OK"),
                "{address}: {response}"
            );
        }
        let elsewhere = get_at("127.0.0.3", port, "/").await;
        assert!(
            elsewhere.is_err(),
            "nothing listens on other local addresses: {elsewhere:?}"
        );
        servers.sync(&BTreeMap::new()).await;
        assert!(get_at("127.0.0.2", port, "/").await.is_err());
    }

    #[tokio::test]
    async fn a_port_in_use_is_skipped_and_opened_at_a_later_sync() {
        let proxy = ProxyHealth::new(Duration::from_secs(60));
        let mut servers = ServiceHealthServers::new(vec!["127.0.0.1".parse().unwrap()], proxy);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        servers.sync(&wanted(port, 1)).await;
        assert!(servers.ports().is_empty(), "the port is someone else's");
        drop(taken);
        servers.sync(&wanted(port, 1)).await;
        assert_eq!(servers.ports(), BTreeMap::from([(web(), port)]));
        assert!(get(port, "/").await.unwrap().starts_with("HTTP/1.1 200 "));
    }

    #[tokio::test]
    async fn proxy_healthz_follows_the_syncs() {
        let health = ProxyHealth::new(Duration::ZERO);
        assert!(health.is_healthy(), "healthy while nothing is due");
        health.queued();
        assert!(
            !health.is_healthy(),
            "a sync due for longer than the timeout"
        );
        health.updated();
        assert!(health.is_healthy());

        let port = free_port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(serve_proxy_health(address, health.clone()));
        let mut response = Err(std::io::ErrorKind::NotConnected.into());
        for _ in 0..100 {
            response = get(port, "/healthz").await;
            if response.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
        let response = response.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("\"lastUpdated\": "), "{response}");
        assert!(
            get(port, "/livez")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200 ")
        );
        assert!(
            get(port, "/metrics")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 404 ")
        );
        health.queued();
        assert!(
            get(port, "/healthz")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 503 ")
        );
        assert!(
            get(port, "/livez")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 503 ")
        );
    }

    #[tokio::test]
    async fn healthz_answers_503_for_a_node_being_deleted_or_drained_livez_does_not() {
        use k8s_openapi::api::core::v1::Node;
        let node = |taint: Option<&str>, deleting: bool| -> Node {
            let mut node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n1"},
                "spec": {"taints": taint.map(|key| vec![
                    serde_json::json!({"key": key, "effect": "NoSchedule"})
                ]).unwrap_or_default()},
            }))
            .unwrap();
            if deleting {
                node.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
            }
            node
        };
        assert!(node_eligible(&node(None, false)));
        assert!(node_eligible(&node(Some("example.com/other"), false)));
        assert!(!node_eligible(&node(Some(TO_BE_DELETED_TAINT), false)));
        assert!(!node_eligible(&node(None, true)));

        let health = ProxyHealth::new(Duration::from_secs(60));
        health.updated();
        let port = free_port();
        let address: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        tokio::spawn(serve_proxy_health(address, health.clone()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let response = loop {
            match get(port, "/healthz").await {
                Ok(response) => break response,
                Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
                Err(error) => panic!("the health server does not answer: {error}"),
            }
        };
        assert!(response.starts_with("HTTP/1.1 200 "), "{response}");
        assert!(response.contains("\"nodeEligible\": true"), "{response}");

        health.set_node_eligible(false);
        let response = get(port, "/healthz").await.unwrap();
        assert!(response.starts_with("HTTP/1.1 503 "), "{response}");
        assert!(response.contains("\"nodeEligible\": false"), "{response}");
        let live = get(port, "/livez").await.unwrap();
        assert!(live.starts_with("HTTP/1.1 200 "), "{live}");
        assert!(!live.contains("nodeEligible"), "{live}");

        health.set_node_eligible(true);
        assert!(
            get(port, "/healthz")
                .await
                .unwrap()
                .starts_with("HTTP/1.1 200 ")
        );
    }
}
