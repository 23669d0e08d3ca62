//! `krust server`: wires the control plane together and runs it until a signal.
//!
//! Start-up order: read the token file (pure input checks first), create the data
//! dir, open the datastore, create or reuse the certificates, write the admin
//! kubeconfig, start the API server. Once it answers, the line
//! `export KUBECONFIG=<data-dir>/admin.kubeconfig` goes to stdout (and nothing else
//! does, so scripts can read it). SIGTERM or SIGINT stops the server cleanly.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::ServerArgs;
use crate::pki::{self, ServingNames};
use crate::{hostaddrs, kubeconfig, tokens};

/// How long shutdown waits for leftover tasks before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long opening the datastore (connecting to etcd) may take.
const DATASTORE_OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `krust server` until SIGTERM or SIGINT.
pub fn run(args: ServerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("krust")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve_until_signal(args));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result
}

async fn serve_until_signal(args: ServerArgs) -> Result<()> {
    // ring is the only provider compiled in; installing it explicitly keeps rustls from
    // guessing. An error only means some code installed it first.
    let _ = rustls::crypto::ring::default_provider().install_default();

    // Handle signals from the start, so that a stop during start-up is clean too.
    let mut signals = ShutdownSignals::install()?;
    let (mut server, endpoints) = tokio::select! {
        signal = signals.recv() => {
            tracing::info!("received {signal} while starting; stopped");
            return Ok(());
        }
        started = start(args) => started?,
    };

    tokio::select! {
        signal = signals.recv() => {
            tracing::info!("received {signal}, shutting down");
            let (client, address, port) = endpoints;
            let withdraw = crate::apiserver_endpoints::withdraw(&client, address, port);
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, withdraw).await;
            server.abort();
            let _ = server.await;
            tracing::info!("stopped");
            Ok(())
        }
        result = &mut server => match result {
            Ok(()) => bail!("the API server stopped by itself; see the log above"),
            Err(err) if err.is_panic() => bail!("the API server crashed (panic); see the log above"),
            Err(err) => bail!("the API server task ended: {err}"),
        },
    }
}

/// What a server needs to take itself out of the `kubernetes` endpoints: a client,
/// its advertise address and its port.
type Endpoint = (kube::Client, std::net::IpAddr, u16);

/// Starts everything; returns the running API server once it is ready and announced.
async fn start(args: ServerArgs) -> Result<(tokio::task::JoinHandle<()>, Endpoint)> {
    let static_tokens = match &args.token_auth_file {
        Some(path) => tokens::read_token_file(path)?,
        None => Vec::new(),
    };
    let data_dir = prepare_data_dir(&args.data_dir)?;
    let store = tokio::time::timeout(
        DATASTORE_OPEN_TIMEOUT,
        krust_store::open(args.datastore.as_deref(), &data_dir),
    )
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "the datastore did not answer within {} s; check that it runs and that --datastore names it",
            DATASTORE_OPEN_TIMEOUT.as_secs()
        )
    })?
    .context("cannot open the datastore")?;

    let bind = SocketAddr::new(args.bind_address, args.port);
    let names = ServingNames::new(args.bind_address, hostaddrs::interface_addresses());
    let given_service_account_key =
        match &args.service_account_key_file {
            Some(path) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the service account key {}", path.display())
            })?),
            None => None,
        };
    let tls_dir = data_dir.join("tls");
    crate::cluster_secrets::share(
        &store,
        &tls_dir,
        &names,
        given_service_account_key.as_deref(),
    )
    .await?;
    let pki = pki::ensure(&tls_dir, &names)?;
    let server_url = kubeconfig::server_url(bind);
    let kubeconfig_path = data_dir.join("admin.kubeconfig");
    pki::write_private(
        &kubeconfig_path,
        &kubeconfig::render(&pki, &server_url, &pki.admin),
    )?;

    let service_account_key = match given_service_account_key {
        Some(key) => key,
        None => pki::ensure_service_account_key(&tls_dir.join(pki::SERVICE_ACCOUNT_KEY_FILE))?,
    };
    let config = krust_apiserver::ServerConfig {
        bind,
        store,
        client_ca_pem: pki.ca.cert_pem.clone(),
        serving_cert_pem: pki.serving.cert_pem.clone(),
        serving_key_pem: pki.serving.key_pem.clone(),
        static_tokens,
        max_requests_inflight: args.max_requests_inflight as usize,
        max_mutating_requests_inflight: args.max_mutating_requests_inflight as usize,
        service_ranges: krust_apiserver::service_alloc::ServiceRanges {
            cluster_ips: args.service_cluster_ip_range,
            node_ports: args.service_node_port_range,
        },
        advertise_address: advertise_address(args.bind_address),
        // Kubelets accept the admin identity (system:masters) for pods/log.
        kubelet_client_cert_pem: Some((pki.admin.cert_pem.clone(), pki.admin.key_pem.clone())),
        service_account_key_pem: Some(service_account_key),
        service_account_issuer: args.service_account_issuer.clone(),
    };
    let server = krust_apiserver::serve(config)
        .await
        .with_context(|| format!("cannot start the API server on {bind}"))?;
    // A stable identity for this server's scheduler and controller manager: after a
    // restart they take their own Leases back at once instead of waiting for them to
    // expire.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let identity = format!("{}_krust-server-{}", host.trim(), args.port);
    let mut controller_options = args.controllers.options(Some(pki.ca.cert_pem.clone()));
    // The cluster CA signs approved client certificate requests (joining nodes).
    controller_options.signing_ca = Some(krust_controllers::certificates::SigningCa {
        cert_pem: pki.ca.cert_pem.clone(),
        key_pem: pki.ca.key_pem.clone(),
        max_validity: args.controllers.cluster_signing_duration,
    });
    start_controllers(
        &kubeconfig_path,
        controller_options,
        identity,
        !args.disable_scheduler,
        !args.disable_controllers,
    )
    .await?;
    // The kube-dns Service's ClusterIP: the first of the nameservers pods are given.
    let cluster_dns_ip = args
        .agent
        .cluster_dns
        .split(',')
        .next()
        .unwrap_or("")
        .trim();
    if args.dns.disable_cluster_dns || cluster_dns_ip.is_empty() {
        tracing::info!("no cluster DNS (--disable-cluster-dns or an empty --cluster-dns)");
    } else {
        let client = crate::components::client_from_kubeconfig(&kubeconfig_path).await?;
        let listen = SocketAddr::new(
            advertise_address(args.bind_address),
            args.dns.cluster_dns_port,
        );
        krust_dns::start(
            client,
            listen,
            &args.agent.cluster_domain,
            krust_dns::upstreams(&args.dns),
            cluster_dns_ip,
        )
        .await?;
    }
    if !args.disable_agent {
        let network = crate::agent::NodeNetwork {
            options: args.net.clone(),
            proxy: args.proxy.clone(),
            cluster_cidr: args.controllers.cluster_cidr,
            service_cidr: args.service_cluster_ip_range,
        };
        crate::agent::start_embedded(&args.agent, network, &data_dir, &kubeconfig_path).await?;
    }
    // This server behind the `kubernetes` Service (and its DNS behind kube-dns) while
    // it lives, beside the other servers of the cluster.
    let client = crate::components::client_from_kubeconfig(&kubeconfig_path).await?;
    let address = advertise_address(args.bind_address);
    tokio::spawn(crate::apiserver_endpoints::run(
        client.clone(),
        address,
        args.port,
    ));
    tracing::info!(url = %server_url, data_dir = %data_dir.display(), "krust server is ready");
    announce_kubeconfig(&kubeconfig_path)?;
    Ok((server, (client, address, args.port)))
}

/// Starts the controller manager and the scheduler (unless disabled) in this process.
/// Like upstream's, they talk to the API server only through the API, with the admin
/// kubeconfig's identity.
async fn start_controllers(
    kubeconfig_path: &Path,
    options: krust_controllers::Options,
    identity: String,
    with_scheduler: bool,
    with_controllers: bool,
) -> Result<()> {
    let client = crate::components::client_from_kubeconfig(kubeconfig_path).await?;
    // The scheduler, leader-elected like a separate `krust scheduler` would be.
    if with_scheduler {
        let scheduler = crate::components::scheduler(client.clone(), identity.clone());
        tokio::spawn(async move {
            if let Err(error) = scheduler.await {
                tracing::error!(%error, "the scheduler stopped");
            }
        });
    }
    if !with_controllers {
        return Ok(());
    }
    tokio::spawn(async move {
        let controllers = crate::components::controller_manager(client, identity, options);
        if let Err(error) = controllers.await {
            tracing::error!(%error, "the controllers stopped");
        }
    });
    Ok(())
}

/// The address the `kubernetes` Service points at: the bind address, or for a
/// wildcard bind the host's first non-loopback address (loopback if it has none).
fn advertise_address(bind: std::net::IpAddr) -> std::net::IpAddr {
    if !bind.is_unspecified() {
        return bind;
    }
    hostaddrs::interface_addresses()
        .into_iter()
        .find(|ip| ip.is_ipv4() == bind.is_ipv4() && !ip.is_loopback())
        .unwrap_or(if bind.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        })
}

/// Creates the data dir (mode 0700) and returns its absolute path.
fn prepare_data_dir(dir: &Path) -> Result<PathBuf> {
    pki::create_private_dir(dir)?;
    dir.canonicalize()
        .with_context(|| format!("cannot resolve the data dir {}", dir.display()))
}

/// Prints the one line scripts and people need to use the cluster.
fn announce_kubeconfig(path: &Path) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "export KUBECONFIG={}", path.display())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")
}

/// SIGTERM and SIGINT, caught from the moment they are installed.
struct ShutdownSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl ShutdownSignals {
    fn install() -> Result<Self> {
        Ok(ShutdownSignals {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Waits for the next signal and names it.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
