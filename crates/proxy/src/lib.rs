//! The service proxy of one node (`krust-proxy`): Services and EndpointSlices turned
//! into one nftables table, applied atomically.
//!
//! [`run`] watches Services and EndpointSlices, and after each change (coalesced for a
//! short delay) computes the whole desired [`Ruleset`] ([`compute::compute`], pure)
//! and applies the difference from the last one with one `nft -f` ([`apply::Applier`]).

pub mod apply;
pub mod compute;
pub mod ruleset;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;

pub use compute::{NodeContext, compute};
pub use ruleset::Ruleset;

/// How the proxy runs (the agent builds it from its flags; tests aim it at a netns).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node: NodeContext,
    /// Prefix for `nft`/`sysctl` (e.g. `ip netns exec NS`); empty on a real node.
    pub command_prefix: Vec<String>,
    /// How long to wait after a change for more before syncing.
    pub coalesce: Duration,
    /// Sync at least this often even without changes.
    pub sync_period: Duration,
}

impl ProxyConfig {
    pub fn new(node_name: &str, cluster_cidr: Option<krust_api::cidr::Ipv4Cidr>) -> ProxyConfig {
        ProxyConfig {
            node: NodeContext {
                node_name: node_name.to_string(),
                cluster_cidr,
            },
            command_prefix: Vec::new(),
            coalesce: Duration::from_millis(10),
            sync_period: Duration::from_secs(30),
        }
    }
}

/// Runs the proxy until an error it cannot retry: watch, coalesce, compute, apply.
pub async fn run_with(config: ProxyConfig, client: kube::Client) -> Result<()> {
    let mut applier = apply::Applier::new(config.command_prefix.clone());
    if let Err(error) = applier.enable_route_localnet().await {
        tracing::warn!(
            error = format!("{error:#}"),
            "node ports will not answer on 127.0.0.1"
        );
    }
    let changed = Arc::new(tokio::sync::Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let watch_services = krust_net::watch::mirror(
        kube::Api::<Service>::all(client.clone()),
        services_writer,
        changed.clone(),
    );
    let watch_slices = krust_net::watch::mirror(
        kube::Api::<EndpointSlice>::all(client),
        slices_writer,
        changed.clone(),
    );
    let sync = async {
        services
            .wait_until_ready()
            .await
            .context("Service watch stopped")?;
        slices
            .wait_until_ready()
            .await
            .context("EndpointSlice watch stopped")?;
        loop {
            let started = std::time::Instant::now();
            let desired = compute(
                &services
                    .state()
                    .iter()
                    .map(|s| (**s).clone())
                    .collect::<Vec<_>>(),
                &slices
                    .state()
                    .iter()
                    .map(|s| (**s).clone())
                    .collect::<Vec<_>>(),
                &config.node,
            );
            match applier.apply(desired).await {
                Ok(true) => tracing::debug!(elapsed = ?started.elapsed(), "service rules synced"),
                Ok(false) => {}
                Err(error) => tracing::error!(
                    error = format!("{error:#}"),
                    "cannot program service rules; retrying"
                ),
            }
            krust_net::watch::next_sync(&changed, config.sync_period, config.coalesce).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        result = sync => result,
        () = watch_services => Ok(()),
        () = watch_slices => Ok(()),
    }
}
