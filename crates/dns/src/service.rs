//! The `kube-system/kube-dns` Service and this server's EndpointSlice behind it.
//!
//! The Service has no selector and sits at the cluster DNS address the kubelets write
//! into pods' resolv.conf (`--cluster-dns`, 10.43.0.10 by default), with upstream's
//! labels and ports (53/UDP `dns`, 53/TCP `dns-tcp`). Each server that runs the DNS
//! publishes one slice, `kube-dns-<address>`, with its own address and port, so the
//! service proxy on every node takes pods' queries to a server. Both are written by
//! server-side apply and re-applied periodically, so a deleted one comes back.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

/// How often the Service and the slice are applied again.
const REAPPLY: Duration = Duration::from_secs(30);

/// The field manager (and slice managed-by label) of these objects.
pub const MANAGER: &str = "krust-dns";

/// The name of the slice a server at `address` publishes.
pub fn slice_name(address: &SocketAddr) -> String {
    let ip = address.ip().to_string().replace(['.', ':'], "-");
    format!("kube-dns-{ip}")
}

/// The Service object.
pub fn service(cluster_ip: &str, target_port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {
                "k8s-app": "kube-dns",
                "kubernetes.io/cluster-service": "true",
                "kubernetes.io/name": "CoreDNS",
            },
        },
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": target_port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": target_port},
            ],
        },
    })
}

/// The slice of the server answering at `address`.
pub fn slice(address: &SocketAddr) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": slice_name(address),
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": MANAGER,
            },
        },
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "protocol": "UDP", "port": address.port()},
            {"name": "dns-tcp", "protocol": "TCP", "port": address.port()},
        ],
    })
}

/// Applies the Service and this server's slice now and every [`REAPPLY`].
pub async fn publish(client: kube::Client, cluster_ip: String, address: SocketAddr) {
    let services: Api<Service> = Api::namespaced(client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(client, "kube-system");
    let params = PatchParams::apply(MANAGER).force();
    let mut tick = tokio::time::interval(REAPPLY);
    loop {
        tick.tick().await;
        if let Err(error) = services
            .patch(
                "kube-dns",
                &params,
                &Patch::Apply(service(&cluster_ip, address.port())),
            )
            .await
        {
            tracing::warn!(%error, %cluster_ip, "cannot apply the kube-dns Service (is --cluster-dns inside the service CIDR?)");
            continue;
        }
        if let Err(error) = slices
            .patch(
                &slice_name(&address),
                &params,
                &Patch::Apply(slice(&address)),
            )
            .await
        {
            tracing::warn!(%error, "cannot apply the kube-dns EndpointSlice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slice_points_at_this_server() {
        let address: SocketAddr = "198.18.0.1:5353".parse().unwrap();
        let slice = slice(&address);
        assert_eq!(slice["metadata"]["name"], "kube-dns-198-18-0-1");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "198.18.0.1");
        assert_eq!(
            slice["ports"][1],
            json!({"name": "dns-tcp", "protocol": "TCP", "port": 5353})
        );
        let v6: SocketAddr = "[fd00::1]:53".parse().unwrap();
        assert_eq!(super::slice(&v6)["addressType"], "IPv6");
        let service = service("10.43.0.10", 5353);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 5353);
        assert!(service["spec"].get("selector").is_none());
    }
}
