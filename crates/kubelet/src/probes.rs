//! Container probes (startup, liveness, readiness) with upstream's timing: a probe
//! runs every `periodSeconds` once `initialDelaySeconds` have passed since the
//! container started, each try may take `timeoutSeconds`, and the result flips after
//! `successThreshold` successes or `failureThreshold` failures in a row. Liveness and
//! readiness wait until the startup probe (if any) has succeeded.
//!
//! Handlers: exec (CRI ExecSync), httpGet (plain HTTP; a status from 200 to 399 is a
//! success), tcpSocket (a connection is a success). gRPC and HTTPS probes are not
//! done yet: they count as failures with a message saying so.

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
#[derive(Debug, Default, Clone, Copy)]
pub struct Verdict {
    /// Startup probe succeeded (or there is none).
    pub started: bool,
    /// Readiness probe succeeded (or there is none), and started.
    pub ready: bool,
    /// Liveness (or startup) probe failed past its threshold: kill the container.
    pub kill: bool,
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
            kill: false,
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
                let success = run(cri, probe, container, container_id, pod_ip, timeout).await;
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

/// Runs a probe's handler once; true on success.
async fn run(
    cri: &mut Cri,
    probe: &Probe,
    container: &Container,
    container_id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> bool {
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match cri
            .exec_sync(container_id, command, timeout.as_secs() as i64)
            .await
        {
            Ok(result) => result.exit_code == 0,
            Err(_) => false,
        };
    }
    if let Some(http) = &probe.http_get {
        if http.scheme.as_deref() == Some("HTTPS") {
            tracing::warn!(container = %container.name, "HTTPS probes are not supported yet; counted as failure");
            return false;
        }
        let Some(port) = resolve_port(&http.port, container) else {
            return false;
        };
        let host = http
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: String = http
            .http_headers
            .iter()
            .flatten()
            .map(|h| format!("{}: {}\r\n", h.name, h.value))
            .collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
        );
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = vec![0u8; 64];
            let n = stream.read(&mut head).await?;
            Ok::<_, std::io::Error>(http_status(&head[..n]))
        };
        return matches!(
            tokio::time::timeout(timeout, attempt).await,
            Ok(Ok(Some(200..=399)))
        );
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = resolve_port(&tcp.port, container) else {
            return false;
        };
        let host = tcp
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| pod_ip.to_string());
        return matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect((host.as_str(), port))
            )
            .await,
            Ok(Ok(_))
        );
    }
    if probe.grpc.is_some() {
        tracing::warn!(container = %container.name, "gRPC probes are not supported yet; counted as failure");
    }
    false
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
