//! Cluster DNS (`krust-dns`): `<svc>.<ns>.svc.cluster.local`, endpoint and pod
//! records from the API; every other name forwarded to an upstream resolver.
//!
//! A newcomer starts at [`index`] (the records, pure); the server part answers
//! questions from the latest index and forwards the rest.

pub mod forward;
pub mod index;
pub mod server;
pub mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use hickory_proto::rr::Name;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;

/// How long a burst of changes is gathered into one rebuild of the index.
const COALESCE: Duration = Duration::from_millis(20);
/// A rebuild without a change, as a safety net.
const RESYNC: Duration = Duration::from_secs(60);

/// Flags of the cluster DNS in `krust server`.
#[derive(Clone, Debug, clap::Args)]
pub struct DnsOptions {
    /// Port the cluster DNS serves UDP and TCP on, at the server's advertise address
    /// (0: any free port).
    #[arg(long, default_value_t = 53, value_name = "PORT")]
    pub cluster_dns_port: u16,

    /// Do not run the cluster DNS in this server.
    #[arg(long)]
    pub disable_cluster_dns: bool,

    /// Resolver for names outside the cluster domain, IP or IP:PORT; repeatable
    /// (default: the nameservers of the host's /etc/resolv.conf).
    #[arg(long, value_name = "IP[:PORT]", value_parser = forward::parse_upstream)]
    pub cluster_dns_upstream: Vec<SocketAddr>,
}

/// How many free UDP ports [`bind`] tries when the same TCP port is taken.
const BIND_ATTEMPTS: usize = 16;

/// Binds UDP and TCP sockets on the same address. For port 0 the UDP socket
/// picks a free port and the TCP listener takes the same one; when another
/// process already holds that TCP port, a fresh UDP port is tried.
pub async fn bind(listen: SocketAddr) -> Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let attempts = if listen.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = tokio::net::UdpSocket::bind(listen)
            .await
            .with_context(|| format!("cannot serve the cluster DNS on UDP {listen}"))?;
        let bound = udp.local_addr()?;
        match tokio::net::TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) => {
                last_error = Some(anyhow::Error::new(error).context(format!(
                    "cannot serve the cluster DNS on TCP {bound}: free the port or choose another with --cluster-dns-port"
                )))
            }
        }
    }
    Err(last_error.expect("at least one attempt"))
}

/// Binds UDP and TCP at `listen` (port 0: one free port for both), then serves
/// the records of `domain` from watches of Services and EndpointSlices through
/// `client`, and publishes the `kube-dns` Service at `cluster_ip` with this
/// server's EndpointSlice ([`service`]). Returns the address served on; runs
/// until the runtime ends.
pub async fn start(
    client: kube::Client,
    listen: SocketAddr,
    domain: &str,
    upstreams: Vec<SocketAddr>,
    cluster_ip: &str,
) -> Result<SocketAddr> {
    let zone = Name::from_ascii(domain)
        .map(|mut zone| {
            zone.set_fqdn(true);
            zone
        })
        .with_context(|| format!("--cluster-domain {domain:?} is not a DNS name"))?;
    let (udp, tcp) = bind(listen).await?;
    let listen = udp.local_addr()?;
    let upstreams: Vec<SocketAddr> = upstreams.into_iter().filter(|u| *u != listen).collect();
    let resolver = Arc::new(server::Resolver::new(&zone, upstreams));
    tokio::spawn(server::serve_udp(resolver.clone(), udp));
    tokio::spawn(server::serve_tcp(resolver.clone(), tcp));

    tokio::spawn(service::publish(
        client.clone(),
        cluster_ip.to_string(),
        listen,
    ));
    let changed = Arc::new(tokio::sync::Notify::new());
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    tokio::spawn(krust_net::watch::mirror(
        kube::Api::<Service>::all(client.clone()),
        service_writer,
        changed.clone(),
    ));
    tokio::spawn(krust_net::watch::mirror(
        kube::Api::<EndpointSlice>::all(client),
        slice_writer,
        changed.clone(),
    ));
    tracing::info!(%listen, %zone, "cluster DNS serving");
    tokio::spawn(async move {
        let _ = futures::future::join(services.wait_until_ready(), slices.wait_until_ready()).await;
        loop {
            let (services, slices) = (services.state(), slices.state());
            let index = index::Index::build(
                &zone,
                services.iter().map(|s| s.as_ref()),
                slices.iter().map(|s| s.as_ref()),
            );
            tracing::debug!(names = index.len(), "cluster DNS index rebuilt");
            resolver.publish(index);
            krust_net::watch::next_sync(&changed, RESYNC, COALESCE).await;
        }
    });
    Ok(listen)
}

/// The upstreams to use: those given, or the host's resolvers.
pub fn upstreams(options: &DnsOptions) -> Vec<SocketAddr> {
    if !options.cluster_dns_upstream.is_empty() {
        return options.cluster_dns_upstream.clone();
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    forward::nameservers(&conf)
}
