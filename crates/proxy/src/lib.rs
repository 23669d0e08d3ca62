//! The service proxy of one node (`krust-proxy`): Services and EndpointSlices turned
//! into one nftables table (or, as a fallback, iptables chains), applied atomically.
//!
//! [`run_with`] watches Services and EndpointSlices, and after each change (coalesced
//! for a short delay) computes the Service ports with their endpoints
//! ([`compute::service_ports`], pure), renders them for the mode in use and applies
//! the difference from the last sync: the nftables [`Ruleset`] ([`compute::ruleset`])
//! with one `nft -f` ([`apply::Applier`]), or the iptables chains
//! ([`iptables::tables`]) with one `iptables-restore --noflush`
//! ([`iptables::Applier`]). After each successful sync the health check node ports
//! of LoadBalancer Services with externalTrafficPolicy Local follow
//! ([`health::ServiceHealthServers`]), and the proxy's own `/healthz` tells whether
//! syncs succeed and the node (watched alone) is not being deleted or drained
//! ([`health::ProxyHealth`]).

pub mod apply;
pub mod compute;
pub mod health;
pub mod iptables;
pub mod ruleset;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;

pub use compute::{NodeContext, compute};
pub use ruleset::Ruleset;

/// How Services are programmed into the kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// One nftables table, `ip krust-proxy`.
    #[default]
    Nftables,
    /// `KUBE-*` chains in the iptables `nat` and `filter` tables.
    Iptables,
}

/// Flags of the service proxy, in `krust agent` and `krust server`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ProxyOptions {
    /// How Services are programmed: `nftables` (one table, `ip krust-proxy`) or
    /// `iptables` (`KUBE-*` chains applied with iptables-restore, as kube-proxy's
    /// iptables mode). `nftables` falls back to `iptables` when `nft` is missing or
    /// the kernel refuses nf_tables.
    #[arg(long, value_enum, default_value = "nftables", value_name = "MODE")]
    pub proxy_mode: ProxyMode,
    /// Where the service proxy serves `/healthz` and `/livez` (200 while its rule
    /// syncs succeed), as `IP:PORT`; empty disables it.
    #[arg(long, default_value = "0.0.0.0:10256", value_name = "IP:PORT", value_parser = BindAddress::parse)]
    pub healthz_bind_address: BindAddress,
    /// Which local addresses answer node ports: comma-separated IPv4 ranges (e.g.
    /// `192.168.0.0/16,127.0.0.0/8`), or `primary` for the node's own address only;
    /// empty: every local address, 127.0.0.1 too.
    #[arg(long, default_value = "", value_name = "CIDRS|primary", value_parser = NodePortAddresses::parse)]
    pub nodeport_addresses: NodePortAddresses,
}

/// The `--nodeport-addresses` flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodePortAddresses {
    /// Every local address.
    #[default]
    All,
    /// The node's primary address.
    Primary,
    /// The local addresses in these ranges.
    Ranges(Vec<krust_api::cidr::Ipv4Cidr>),
}

impl NodePortAddresses {
    fn parse(text: &str) -> Result<NodePortAddresses, String> {
        match text.trim() {
            "" => Ok(NodePortAddresses::All),
            "primary" => Ok(NodePortAddresses::Primary),
            list => list
                .split(',')
                .map(|range| range.trim().parse())
                .collect::<Result<Vec<_>, String>>()
                .map(NodePortAddresses::Ranges)
                .map_err(|error| {
                    format!(
                        "{error} (--nodeport-addresses takes comma-separated ranges, or primary)"
                    )
                }),
        }
    }

    /// The ranges for a node whose primary address is `node_ip` (empty: every local
    /// address).
    pub fn ranges(&self, node_ip: Ipv4Addr) -> Vec<krust_api::cidr::Ipv4Cidr> {
        match self {
            NodePortAddresses::All => Vec::new(),
            NodePortAddresses::Primary => vec![krust_api::cidr::Ipv4Cidr::new(node_ip, 32)],
            NodePortAddresses::Ranges(ranges) => ranges.clone(),
        }
    }

    /// Where the Services' health check node ports listen, as upstream's: every
    /// address (`0.0.0.0`), or the addresses of `local` (the node's interfaces) in the
    /// ranges. Empty when none is in them.
    pub fn health_check_addresses(
        &self,
        node_ip: Ipv4Addr,
        local: impl IntoIterator<Item = IpAddr>,
    ) -> Vec<IpAddr> {
        let ranges = self.ranges(node_ip);
        if ranges.is_empty() {
            return vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        }
        local
            .into_iter()
            .filter(|address| match address {
                IpAddr::V4(v4) => ranges.iter().any(|range| range.contains(*v4)),
                IpAddr::V6(_) => false,
            })
            .collect()
    }
}

/// An optional `IP:PORT` flag: empty means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

impl BindAddress {
    fn parse(text: &str) -> Result<BindAddress, String> {
        if text.is_empty() {
            return Ok(BindAddress(None));
        }
        text.parse()
            .map(|address| BindAddress(Some(address)))
            .map_err(|_| {
                format!(
                    "{text:?} is not IP:PORT (e.g. 0.0.0.0:10256; empty disables the health server)"
                )
            })
    }
}

/// How the proxy runs (the agent builds it from its flags; tests aim it at a netns).
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub node: NodeContext,
    pub mode: ProxyMode,
    /// Prefix for `nft`/`iptables-restore`/`sysctl` (e.g. `ip netns exec NS`);
    /// empty on a real node.
    pub command_prefix: Vec<String>,
    /// How long to wait after a change for more before syncing.
    pub coalesce: Duration,
    /// Sync at least this often even without changes.
    pub sync_period: Duration,
    /// Where `/healthz` and `/livez` are served; `None`: nowhere.
    pub healthz_bind_address: Option<SocketAddr>,
    /// The addresses the Services' health check node ports listen on (every address
    /// of the node: `0.0.0.0`; see [`NodePortAddresses::health_check_addresses`]).
    pub health_check_addresses: Vec<IpAddr>,
}

impl ProxyConfig {
    pub fn new(node_name: &str, cluster_cidr: Option<krust_api::cidr::Ipv4Cidr>) -> ProxyConfig {
        ProxyConfig {
            node: NodeContext {
                node_name: node_name.to_string(),
                cluster_cidr,
                node_ip: None,
                node_port_cidrs: Vec::new(),
            },
            mode: ProxyMode::Nftables,
            command_prefix: Vec::new(),
            coalesce: Duration::from_millis(10),
            sync_period: Duration::from_secs(30),
            healthz_bind_address: None,
            health_check_addresses: vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)],
        }
    }
}

/// Removes both modes' rules from this network namespace: the nftables table and the
/// iptables chains with the jumps into them (what is not there is skipped). For
/// `krust killall`; the proxy itself leaves its rules in place when it stops, so
/// Services keep working across a restart.
pub async fn teardown() -> Result<()> {
    let mut nftables = apply::Applier::new(Vec::new());
    if nftables.commands().exists("nft") {
        nftables
            .remove_table()
            .await
            .context("cannot remove the nftables table of the service proxy")?;
    }
    iptables::Applier::new(apply::Commands::new(Vec::new()))
        .remove_all()
        .await
        .context("cannot remove the iptables chains of the service proxy")
}

/// The mode the proxy runs in for the asked `mode`: nftables unless it does not work
/// here (`nft` missing, or the kernel refuses a table), then iptables. The other
/// mode's rules are removed, so that switching modes leaves nothing behind.
/// `prefix` as [`ProxyConfig::command_prefix`].
pub async fn select_mode(mode: ProxyMode, prefix: &[String]) -> ProxyMode {
    let mut nftables = apply::Applier::new(prefix.to_vec());
    let mode = match mode {
        ProxyMode::Nftables => match nftables.nftables_works().await {
            Ok(()) => ProxyMode::Nftables,
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "nftables does not work on this node; the service proxy falls back to iptables mode (install nftables, or pass --proxy-mode iptables to silence this)"
                );
                ProxyMode::Iptables
            }
        },
        ProxyMode::Iptables => ProxyMode::Iptables,
    };
    tracing::info!(mode = ?mode, "service proxy mode");
    match mode {
        ProxyMode::Nftables => {
            let mut iptables = iptables::Applier::new(apply::Commands::new(prefix.to_vec()));
            if let Err(error) = iptables.remove_all().await {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot remove the iptables mode's chains"
                );
            }
        }
        ProxyMode::Iptables => {
            if nftables.commands().exists("nft")
                && let Err(error) = nftables.remove_table().await
            {
                tracing::debug!(
                    error = format!("{error:#}"),
                    "cannot remove the nftables mode's table"
                );
            }
        }
    }
    mode
}

/// The rules of one mode, applied by its applier.
enum Backend {
    Nftables(apply::Applier),
    Iptables(iptables::Applier),
}

impl Backend {
    /// The applier of `mode`.
    fn new(mode: ProxyMode, prefix: &[String]) -> Backend {
        match mode {
            ProxyMode::Nftables => Backend::Nftables(apply::Applier::new(prefix.to_vec())),
            ProxyMode::Iptables => Backend::Iptables(iptables::Applier::new(apply::Commands::new(
                prefix.to_vec(),
            ))),
        }
    }

    async fn apply(&mut self, ports: &[compute::ServicePort], node: &NodeContext) -> Result<bool> {
        match self {
            Backend::Nftables(applier) => applier.apply(compute::ruleset(ports, node)).await,
            Backend::Iptables(applier) => applier.apply(iptables::tables(ports, node)).await,
        }
    }
}

/// Runs the proxy until an error it cannot retry: watch, coalesce, compute, apply.
/// The rules stay when it stops (pods keep reaching Services across an agent
/// restart; the next start rewrites them).
pub async fn run_with(config: ProxyConfig, client: kube::Client) -> Result<()> {
    // Unhealthy when no sync succeeds for twice the sync period, as upstream.
    let proxy_health = health::ProxyHealth::new(2 * config.sync_period);
    proxy_health.queued();
    if let Some(address) = config.healthz_bind_address {
        tokio::spawn(health::serve_proxy_health(address, proxy_health.clone()));
    }
    let mut service_health = health::ServiceHealthServers::new(
        config.health_check_addresses.clone(),
        proxy_health.clone(),
    );
    let commands = apply::Commands::new(config.command_prefix.clone());
    if let Err(error) = commands.enable_route_localnet().await {
        tracing::warn!(
            error = format!("{error:#}"),
            "node ports will not answer on 127.0.0.1"
        );
    }
    let mode = select_mode(config.mode, &config.command_prefix).await;
    let mut backend = Backend::new(mode, &config.command_prefix);
    let changed = Arc::new(tokio::sync::Notify::new());
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let watch_services = krust_net::watch::mirror(
        kube::Api::<Service>::all(client.clone()),
        services_writer,
        changed.clone(),
    );
    let watch_slices = krust_net::watch::mirror(
        kube::Api::<EndpointSlice>::all(client.clone()),
        slices_writer,
        changed.clone(),
    );
    let watch_node = watch_node_eligibility(
        kube::Api::<Node>::all(client),
        config.node.node_name.clone(),
        proxy_health.clone(),
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
            let ports = compute::service_ports(
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
            proxy_health.queued();
            match backend.apply(&ports, &config.node).await {
                Ok(changed) => {
                    if changed {
                        tracing::debug!(elapsed = ?started.elapsed(), "service rules synced");
                    }
                    proxy_health.updated();
                    service_health.sync(&health::health_checks(&ports)).await;
                }
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
        () = watch_node => Ok(()),
    }
}

/// Keeps `health`'s node eligibility that of the Node `name` (eligible while it is
/// missing or cannot be read, as upstream: a proxy starting before its Node exists
/// is healthy); runs until dropped.
async fn watch_node_eligibility(
    api: kube::Api<Node>,
    name: String,
    health: Arc<health::ProxyHealth>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            // A deleted Node counts as its last state says, as upstream.
            Ok(watcher::Event::Apply(node))
            | Ok(watcher::Event::InitApply(node))
            | Ok(watcher::Event::Delete(node)) => {
                health.set_node_eligible(health::node_eligible(&node))
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "node watch error; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeport_addresses_parse_ranges_primary_and_empty_and_reject_bad_ranges() {
        let node_ip: Ipv4Addr = "192.0.2.7".parse().unwrap();
        let parse = |text| NodePortAddresses::parse(text).map(|a| a.ranges(node_ip));
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(parse("primary"), Ok(vec!["192.0.2.7/32".parse().unwrap()]));
        assert_eq!(
            parse("10.0.0.0/8, 127.0.0.0/8"),
            Ok(vec![
                "10.0.0.0/8".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap()
            ])
        );
        let error = parse("10.0.0.0").unwrap_err();
        assert!(
            error.contains("not a CIDR") && error.contains("--nodeport-addresses"),
            "{error}"
        );
        assert!(parse("10.0.0.0/8,primary").is_err());
    }

    #[test]
    fn health_check_ports_listen_on_the_local_addresses_in_nodeport_addresses() {
        let node_ip: Ipv4Addr = "192.0.2.5".parse().unwrap();
        let local: Vec<IpAddr> = ["127.0.0.1", "192.0.2.5", "198.51.100.7", "2001:db8::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let addresses = |flag: &str| {
            NodePortAddresses::parse(flag)
                .unwrap()
                .health_check_addresses(node_ip, local.clone())
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(addresses(""), ["0.0.0.0"]);
        assert_eq!(addresses("primary"), ["192.0.2.5"]);
        assert_eq!(
            addresses("127.0.0.0/8, 198.51.100.0/24"),
            ["127.0.0.1", "198.51.100.7"]
        );
        assert!(addresses("203.0.113.0/24").is_empty());
    }
}
