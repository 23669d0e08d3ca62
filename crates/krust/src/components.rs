//! The leader-elected control-plane components, the scheduler and the controller
//! manager: run inside `krust server`, or on their own as `krust scheduler` and
//! `krust controller-manager`. Either way each runs only while it holds its Lease in
//! `kube-system` (`kube-scheduler`, `kube-controller-manager`), so any number of
//! instances can run against one cluster and exactly one of each works at a time.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

/// The Lease the controller manager is elected on, as upstream's.
pub const CONTROLLER_MANAGER_LEASE: &str = "kube-controller-manager";

fn elector(client: &kube::Client, lease: &str, identity: &str) -> krust_leader::LeaderElector {
    krust_leader::LeaderElector::new(
        client.clone(),
        "kube-system",
        lease,
        identity,
        krust_leader::ElectionConfig::default(),
    )
}

/// Runs the scheduler under leader election until the future is dropped, as the
/// candidate `identity`.
pub async fn scheduler(client: kube::Client, identity: String) -> Result<()> {
    let config = krust_scheduler::SchedulerConfig {
        instance: identity.clone(),
        ..krust_scheduler::SchedulerConfig::default()
    };
    let metrics = Arc::new(krust_scheduler::Metrics::default());
    elector(&client, krust_scheduler::LEASE_NAME, &identity)
        .run(|| krust_scheduler::run(client.clone(), config.clone(), metrics.clone()))
        .await
}

/// Runs the controllers under leader election until the future is dropped, as the
/// candidate `identity`. Losing the Lease stops every controller and its watches.
pub async fn controller_manager(
    client: kube::Client,
    identity: String,
    options: krust_controllers::Options,
) -> Result<()> {
    elector(&client, CONTROLLER_MANAGER_LEASE, &identity)
        .run(|| krust_controllers::run_with(client.clone(), options.clone()))
        .await
}

/// Builds a client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?;
    kube::Client::try_from(config).context("cannot build a client from the kubeconfig")
}

/// Runs one component as its own process (`krust scheduler`, `krust controller-manager`)
/// against the cluster `kubeconfig` names, until it fails or SIGTERM or SIGINT.
pub fn run_standalone<F, Fut>(name: &str, kubeconfig: &Path, component: F) -> Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client_from_kubeconfig(kubeconfig).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?;
        tokio::select! {
            result = component(client) => result,
            _ = terminate.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
