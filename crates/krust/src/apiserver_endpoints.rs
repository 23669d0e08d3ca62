//! Which API servers are behind the `kubernetes` Service and the cluster DNS, as
//! upstream's lease endpoint reconciler keeps it when several servers share one
//! datastore.
//!
//! Every server holds a Lease `kube-system/apiserver-endpoint-<address>` (label
//! [`LABEL`]) that it renews every [`RENEW`] for [`LEASE_DURATION`]. On each renewal
//! it lists the live Leases and writes their addresses, sorted, into the
//! `default/kubernetes` Endpoints and EndpointSlice (with its own port: the servers
//! of one cluster serve on one port, as upstream requires), and removes the
//! `kube-dns` EndpointSlices (one per server, see `krust_dns::service`) of servers
//! whose Lease has ended. A server that stops cleanly gives its Lease up at once
//! ([`withdraw`]); one that dies is dropped when its Lease runs out.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Endpoints;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

/// The label of the servers' Leases.
pub const LABEL: &str = "krust.io/apiserver-endpoint";
/// How long a server's Lease lasts without renewal (upstream's master lease TTL).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often a server renews its Lease and reconciles the endpoints.
pub const RENEW: Duration = Duration::from_secs(5);
/// The field manager of what this module writes.
const MANAGER: &str = "krust-apiserver-endpoints";

/// The name of the Lease of the server at `address`.
pub fn lease_name(address: IpAddr) -> String {
    format!(
        "apiserver-endpoint-{}",
        address.to_string().replace(['.', ':'], "-")
    )
}

/// Renews this server's Lease and reconciles the endpoints every [`RENEW`], until
/// the process ends.
pub async fn run(client: kube::Client, address: IpAddr, port: u16) {
    let mut tick = tokio::time::interval(RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = reconcile(&client, address, port).await {
            tracing::warn!(%error, "cannot update the API server endpoints");
        }
    }
}

/// Gives this server's Lease up and takes its address out of the endpoints (on a
/// clean stop).
pub async fn withdraw(client: &kube::Client, address: IpAddr, port: u16) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    if let Err(error) = leases
        .delete(&lease_name(address), &DeleteParams::default())
        .await
    {
        tracing::debug!(%error, "cannot delete this server's endpoint Lease");
    }
    let remaining = match live_servers(client).await {
        Ok(live) => live.into_iter().filter(|a| *a != address).collect(),
        Err(error) => {
            tracing::debug!(%error, "cannot list the API servers' Leases");
            return;
        }
    };
    if let Err(error) = write_endpoints(client, &remaining, port).await {
        tracing::debug!(%error, "cannot take this server out of the kubernetes endpoints");
    }
}

async fn reconcile(client: &kube::Client, address: IpAddr, port: u16) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": lease_name(address), "labels": {LABEL: "true"}},
        "spec": {
            "holderIdentity": address.to_string(),
            "leaseDurationSeconds": LEASE_DURATION.as_secs(),
            "renewTime": MicroTime(Timestamp::now()),
        },
    });
    leases
        .patch(
            &lease_name(address),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(lease),
        )
        .await?;
    let live = live_servers(client).await?;
    write_endpoints(client, &live, port).await?;
    remove_dns_slices_of_gone_servers(client, &live).await
}

/// The addresses of the servers whose Leases have not run out.
async fn live_servers(client: &kube::Client) -> kube::Result<BTreeSet<IpAddr>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let now = Timestamp::now();
    let listed = leases.list(&ListParams::default().labels(LABEL)).await?;
    Ok(listed
        .items
        .iter()
        .filter_map(|lease| {
            let spec = lease.spec.as_ref()?;
            let renewed = spec.renew_time.as_ref()?.0;
            let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds?));
            let address = spec.holder_identity.as_deref()?.parse().ok()?;
            (renewed + duration > now).then_some(address)
        })
        .collect())
}

/// Points the `kubernetes` Endpoints and EndpointSlice at `servers` (each kept as
/// is when it already says so).
async fn write_endpoints(
    client: &kube::Client,
    servers: &BTreeSet<IpAddr>,
    port: u16,
) -> kube::Result<()> {
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let subsets = if servers.is_empty() {
        json!([])
    } else {
        json!([{
            "addresses": servers.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(),
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }])
    };
    let current = endpoints.get_opt("kubernetes").await?;
    let stored = current.map(|e| serde_json::to_value(e.subsets.unwrap_or_default()));
    if stored.and_then(Result::ok).unwrap_or(json!([])) != subsets {
        endpoints
            .patch(
                "kubernetes",
                &PatchParams::default(),
                &Patch::Merge(json!({"subsets": subsets})),
            )
            .await?;
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let wanted: Vec<serde_json::Value> = servers
        .iter()
        .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}}))
        .collect();
    let wanted = json!({
        "endpoints": wanted,
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    let current = slices.get_opt("kubernetes").await?;
    let stored = current.map(|s| {
        json!({
            "endpoints": serde_json::to_value(&s.endpoints).unwrap_or_default(),
            "ports": serde_json::to_value(&s.ports).unwrap_or_default(),
        })
    });
    if stored.as_ref() != Some(&wanted) {
        slices
            .patch("kubernetes", &PatchParams::default(), &Patch::Merge(wanted))
            .await?;
    }
    Ok(())
}

/// Deletes the cluster DNS slices of servers that are gone.
async fn remove_dns_slices_of_gone_servers(
    client: &kube::Client,
    live: &BTreeSet<IpAddr>,
) -> kube::Result<()> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "kube-system");
    let managed = format!(
        "endpointslice.kubernetes.io/managed-by={}",
        krust_dns::service::MANAGER
    );
    let listed = slices.list(&ListParams::default().labels(&managed)).await?;
    for slice in listed.items {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let addresses: Vec<IpAddr> = slice
            .endpoints
            .iter()
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        if addresses.iter().any(|a| live.contains(a)) {
            continue;
        }
        tracing::info!(slice = %name, "removing the cluster DNS endpoints of a server that is gone");
        if let Err(error) = slices.delete(&name, &DeleteParams::default()).await {
            tracing::debug!(%error, slice = %name, "cannot delete a cluster DNS slice");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_object_names() {
        assert_eq!(
            lease_name("198.18.0.1".parse().unwrap()),
            "apiserver-endpoint-198-18-0-1"
        );
        assert_eq!(
            lease_name("fd00::1".parse().unwrap()),
            "apiserver-endpoint-fd00--1"
        );
    }
}
