//! `krust scheduler`: the scheduler as its own process, and the same scheduler inside
//! `krust server`. Either way it runs only while it holds the `kube-system/kube-scheduler`
//! Lease, so any number of instances can run against one cluster and exactly one
//! schedules at a time.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::SchedulerArgs;

/// Runs the scheduler under leader election until the future is dropped, as the
/// candidate `identity`.
pub async fn run_elected(client: kube::Client, identity: String) -> Result<()> {
    let elector = krust_leader::LeaderElector::new(
        client.clone(),
        "kube-system",
        krust_scheduler::LEASE_NAME,
        &identity,
        krust_leader::ElectionConfig::default(),
    );
    let config = krust_scheduler::SchedulerConfig {
        instance: identity.clone(),
        ..krust_scheduler::SchedulerConfig::default()
    };
    let metrics = Arc::new(krust_scheduler::Metrics::default());
    elector
        .run(|| krust_scheduler::run(client.clone(), config.clone(), metrics.clone()))
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

/// `krust scheduler --kubeconfig FILE`: runs until SIGTERM or SIGINT.
pub fn run(args: SchedulerArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("krust-scheduler")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = client_from_kubeconfig(&args.kubeconfig).await?;
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .context("cannot handle SIGTERM")?;
        tokio::select! {
            result = run_elected(client, krust_leader::default_identity()) => result,
            _ = terminate.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
