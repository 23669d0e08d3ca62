//! NetworkPolicy enforcement on one node (`krust-netpol`), in an nftables table of its
//! own: [`run`] watches NetworkPolicies, Pods and Namespaces and after each change
//! (coalesced) computes the whole table for this node's pods ([`compute::script`],
//! pure) and applies it in one `nft -f` transaction when it differs from the last.

pub mod compute;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::reflector;

/// How long a sync waits after a change for more changes.
const COALESCE: Duration = Duration::from_millis(20);
/// How often the table is rewritten without a change (repairs drift).
const RESYNC: Duration = Duration::from_secs(60);

/// What the enforcement of a node runs with.
#[derive(Clone, Debug)]
pub struct NetpolConfig {
    pub node_name: String,
    /// The bridge of the node's pods (names the table).
    pub bridge: String,
}

/// Runs until the task is dropped; the table stays (and keeps enforcing) after.
pub async fn run(config: NetpolConfig, client: kube::Client) -> Result<()> {
    let changed = Arc::new(tokio::sync::Notify::new());
    let (policies, policies_writer) = reflector::store::<NetworkPolicy>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (namespaces, namespaces_writer) = reflector::store::<Namespace>();
    let watches = futures::future::join3(
        krust_net::watch::mirror(
            kube::Api::all(client.clone()),
            policies_writer,
            changed.clone(),
        ),
        krust_net::watch::mirror(kube::Api::all(client.clone()), pods_writer, changed.clone()),
        krust_net::watch::mirror(kube::Api::all(client), namespaces_writer, changed.clone()),
    );
    let sync = async {
        policies
            .wait_until_ready()
            .await
            .context("NetworkPolicy watch stopped")?;
        pods.wait_until_ready().await.context("Pod watch stopped")?;
        namespaces
            .wait_until_ready()
            .await
            .context("Namespace watch stopped")?;
        let mut applied: Option<String> = None;
        let mut last_full = std::time::Instant::now();
        loop {
            let script = compute::script(
                &config.bridge,
                &config.node_name,
                &values_of(policies.state()),
                &values_of(pods.state()),
                &values_of(namespaces.state()),
            );
            let stale = last_full.elapsed() > RESYNC;
            if applied.as_deref() != Some(script.as_str()) || stale {
                match krust_net::command::nft(&script)
                    .await
                    .context("cannot apply the network policy rules")
                {
                    Ok(()) => {
                        tracing::debug!("network policy rules applied");
                        applied = Some(script);
                        last_full = std::time::Instant::now();
                    }
                    Err(error) => {
                        applied = None;
                        tracing::error!(
                            error = format!("{error:#}"),
                            "cannot apply network policies"
                        );
                    }
                }
            }
            krust_net::watch::next_sync(&changed, RESYNC, COALESCE).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), anyhow::Error>(())
    };
    tokio::select! {
        result = sync => result,
        _ = watches => Ok(()),
    }
}

fn values_of<K: serde::Serialize>(items: Vec<Arc<K>>) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(&**item).ok())
        .collect()
}

/// Removes the table [`run`] keeps for `bridge`. For tests and resets.
pub fn teardown(bridge: &str) {
    krust_net::command::delete_table_quietly(&compute::table(bridge));
}
