//! `krust agent`: the node agent on its own, joining a cluster by URL and token, and
//! the agent embedded in `krust server` (which uses the server's admin kubeconfig).

use std::path::Path;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::AgentArgs;

/// Runs `krust agent` until SIGTERM or SIGINT.
pub fn run(args: AgentArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("krust-agent")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut config = args.agent.resolve(Path::new("/var/lib/krust/agent"))?;
        if let Some(path) = &args.ca_file {
            config.client_ca_pem = Some(
                std::fs::read(path)
                    .with_context(|| format!("cannot read --ca-file {}", path.display()))?,
            );
        }
        let (client, renewal) = client_for(&args, &config).await?;
        let network = NodeNetwork {
            options: args.net.clone(),
            proxy: args.proxy.clone(),
            cluster_cidr: args.cluster_cidr,
            service_cidr: args.service_cidr,
        };
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?;
        let renewed = async {
            match renewal {
                Some(renewal) => renewal.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = run_node(config, network, client) => result,
            result = renewed => {
                result?;
                restart_self()
            }
            _ = terminate.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// Replaces this process with a new start of the same command (same pid, so the
/// agent's containerd stays its child and is reused; pods keep running).
fn restart_self() -> Result<()> {
    use std::os::unix::process::CommandExt;
    tracing::info!("restarting the agent on its renewed client certificate");
    let error = std::process::Command::new("/proc/self/exe")
        .args(std::env::args_os().skip(1))
        .exec();
    Err(error).context("cannot restart the agent on its renewed certificate")
}

/// The cluster-wide network settings a node needs besides its own flags.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    pub options: krust_net::NetOptions,
    pub proxy: krust_proxy::ProxyOptions,
    pub cluster_cidr: krust_api::cidr::Ipv4Cidr,
    pub service_cidr: krust_api::cidr::Ipv4Cidr,
}

/// Everything that runs on a node: the kubelet and the node's share of the network
/// (pod network, service proxy, NetworkPolicy). Returns when one of them fails; each
/// runs until the process stops.
async fn run_node(
    mut config: krust_kubelet::AgentConfig,
    network: NodeNetwork,
    client: kube::Client,
) -> Result<()> {
    let std::net::IpAddr::V4(node_ip) = config.node_ip else {
        anyhow::bail!(
            "--node-ip {}: the pod network needs an IPv4 node address",
            config.node_ip
        );
    };
    let _pid_file = crate::killall::PidFile::write(&config.data_dir)?;
    let backend = network.options.flannel_backend;
    config.pod_mtu = krust_net::pod_mtu(backend, node_ip);
    let net = krust_net::NetConfig {
        node_name: config.node_name.clone(),
        node_ip,
        bridge: config.cni_bridge.clone(),
        cluster_cidr: network.cluster_cidr,
        service_cidr: network.service_cidr,
        backend,
    };
    let netpol = krust_netpol::NetpolConfig {
        node_name: config.node_name.clone(),
        bridge: config.cni_bridge.clone(),
    };
    let enforce_policies = !network.options.disable_network_policy;
    let proxy = (!network.options.disable_proxy).then(|| {
        let mut proxy = krust_proxy::ProxyConfig {
            mode: network.proxy.proxy_mode,
            healthz_bind_address: network.proxy.healthz_bind_address.0,
            ..krust_proxy::ProxyConfig::new(&config.node_name, Some(network.cluster_cidr))
        };
        proxy.node.node_ip = Some(node_ip);
        proxy.node.node_port_cidrs = network.proxy.nodeport_addresses.ranges(node_ip);
        proxy.health_check_addresses = network
            .proxy
            .nodeport_addresses
            .health_check_addresses(node_ip, crate::hostaddrs::interface_addresses());
        if proxy.health_check_addresses.is_empty() {
            tracing::warn!(
                "no address of this node is in --nodeport-addresses: Services' health check node ports listen nowhere (name a range that holds one)"
            );
        }
        proxy
    });
    tokio::try_join!(
        krust_kubelet::run(config, client.clone()),
        krust_net::run(net, client.clone()),
        async {
            match proxy {
                Some(proxy) => krust_proxy::run_with(proxy, client.clone()).await,
                None => Ok(()),
            }
        },
        async {
            match enforce_policies {
                true => krust_netpol::run(netpol, client.clone()).await,
                false => Ok(()),
            }
        },
    )?;
    Ok(())
}

/// A client for `--server`, trusting `--ca-file` (or, without one, any certificate:
/// say so loudly). With a bootstrap token (`<id>.<secret>`) the agent is the node
/// `system:node:<name>` by its client certificate ([`crate::node_join`]); any other
/// token is used as it is.
/// With a node certificate, also the renewal of it (done when the new one is stored).
async fn client_for(
    args: &AgentArgs,
    agent: &krust_kubelet::AgentConfig,
) -> Result<(kube::Client, Option<Renewal>)> {
    let url: http::Uri = args.server.parse().with_context(|| {
        format!(
            "--server {:?} is not a URL like https://host:6443",
            args.server
        )
    })?;
    let ca_pem = match &args.ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("cannot read --ca-file {}", path.display()))?,
        ),
        None => {
            tracing::warn!("no --ca-file: the server's certificate is not verified");
            None
        }
    };
    let base = || -> Result<kube::Config> {
        let mut config = kube::Config::new(url.clone());
        match &ca_pem {
            Some(pem) => {
                config.root_cert = Some(rustls_pemfile_certs(pem).with_context(|| {
                    format!(
                        "--ca-file {}: no PEM certificate in it",
                        args.ca_file.as_deref().unwrap_or(Path::new("")).display()
                    )
                })?);
            }
            None => config.accept_invalid_certs = true,
        }
        Ok(config)
    };
    let mut config = base()?;
    config.auth_info.token = Some(args.token.clone().into());
    if !crate::node_join::is_bootstrap_token(&args.token) {
        let client = kube::Client::try_from(config).context("cannot build the agent's client")?;
        return Ok((client, None));
    }
    let bootstrap =
        kube::Client::try_from(config).context("cannot build the agent's bootstrap client")?;
    let paths = crate::node_join::Paths::new(&agent.data_dir);
    let (cert, key) = crate::node_join::ensure_credentials(
        bootstrap,
        &agent.node_name,
        &paths,
        &args.server,
        ca_pem.as_deref(),
    )
    .await?;
    let mut config = base()?;
    config.auth_info.client_certificate_data = Some(BASE64.encode(&cert));
    config.auth_info.client_key_data = Some(BASE64.encode(key).into());
    let client = kube::Client::try_from(config).context("cannot build the node's client")?;
    let (node_client, node_name, server) =
        (client.clone(), agent.node_name.clone(), args.server.clone());
    let renewal: Renewal = Box::pin(async move {
        crate::node_join::renew_when_due(
            node_client,
            &node_name,
            &paths,
            &server,
            ca_pem.as_deref(),
            &cert,
        )
        .await
    });
    Ok((client, Some(renewal)))
}

/// The renewal of the node's client certificate, done once the new one is stored.
type Renewal = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

fn rustls_pemfile_certs(pem: &[u8]) -> Option<Vec<Vec<u8>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .map(|c| c.to_vec())
        .collect();
    (!certs.is_empty()).then_some(certs)
}

/// Starts the agent inside `krust server`, with the admin kubeconfig's identity.
/// Runs in the background: a failure is logged and does not stop the control plane.
pub async fn start_embedded(
    options: &krust_kubelet::AgentOptions,
    network: NodeNetwork,
    data_dir: &Path,
    kubeconfig_path: &Path,
) -> Result<()> {
    let mut config = options.resolve(&data_dir.join("agent"))?;
    let ca = data_dir.join("tls/ca.crt");
    config.client_ca_pem =
        Some(std::fs::read(&ca).with_context(|| format!("cannot read {}", ca.display()))?);
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path)
        .context("cannot read the admin kubeconfig for the agent")?;
    let client_config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("cannot load the admin kubeconfig for the agent")?;
    let client =
        kube::Client::try_from(client_config).context("cannot build the agent's client")?;
    tokio::spawn(async move {
        if let Err(error) = run_node(config, network, client).await {
            tracing::error!(error = format!("{error:#}"), "the node agent stopped");
        }
    });
    Ok(())
}
