//! The built-in service load balancer (as k3s's servicelb): every Service of type
//! LoadBalancer without a `loadBalancerClass` gets the InternalIPs of the Ready nodes
//! as `status.loadBalancer.ingress`, so LoadBalancer Services work without a cloud.
//! Every node's service proxy answers on those addresses. A Service that stops being
//! a LoadBalancer has its ingress cleared.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

struct Controller {
    services: Arc<Cache<Service>>,
    nodes: Arc<Cache<Node>>,
    client: kube::Client,
}

fn is_ours(service: &Service) -> bool {
    service.spec.as_ref().is_some_and(|spec| {
        spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.is_none()
    })
}

/// The ingress entries for the Ready nodes: their InternalIPs, sorted.
pub fn ingress_for(nodes: &[Arc<Node>]) -> Vec<Value> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
                && node.metadata.deletion_timestamp.is_none()
        })
        .filter_map(|node| {
            node.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips.into_iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect()
}

/// Runs the controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        services: caches.get(),
        nodes: caches.get(),
        client: caches.client().clone(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        controller.services.subscribe(),
        queue.clone(),
        |change: &Change<Service>| match change {
            Change::Applied(service) => vec![ObjectKey::of(service.as_ref())],
            Change::Deleted(_) => Vec::new(),
        },
    ));
    // Nodes coming, going or changing readiness change every LoadBalancer's ingress.
    let services = controller.services.clone();
    tokio::spawn(forward(
        controller.nodes.subscribe(),
        queue.clone(),
        move |_: &Change<Node>| {
            services
                .filter(is_ours)
                .iter()
                .map(|service| ObjectKey::of(service.as_ref()))
                .collect()
        },
    ));
    controller.services.wait_synced().await;
    controller.nodes.wait_synced().await;
    run_workers("servicelb", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let (namespace, name) = (key.namespace.as_str(), key.name.as_str());
        let Some(service) = self.services.get(namespace, name) else {
            return Ok(Outcome::Done);
        };
        let current = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| serde_json::to_value(ingress).unwrap_or_default())
            .unwrap_or_else(|| json!([]));
        let managed_by_others = service
            .spec
            .as_ref()
            .is_some_and(|spec| spec.load_balancer_class.is_some());
        let desired = if is_ours(&service) {
            Value::Array(ingress_for(&self.nodes.list()))
        } else if managed_by_others {
            return Ok(Outcome::Done);
        } else {
            json!([])
        };
        if current == desired {
            return Ok(Outcome::Done);
        }
        let api: Api<Service> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({"status": {"loadBalancer": {"ingress": desired}}});
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(Outcome::Done),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Outcome::Done),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, ready: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": ip}],
                    "conditions": [{"type": "Ready", "status": ready}],
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ingress_lists_the_ready_nodes_addresses_sorted() {
        let nodes = [
            node("b", "198.18.0.12", "True"),
            node("a", "198.18.0.11", "True"),
            node("c", "198.18.0.13", "False"),
        ];
        assert_eq!(
            ingress_for(&nodes),
            [
                json!({"ip": "198.18.0.11", "ipMode": "VIP"}),
                json!({"ip": "198.18.0.12", "ipMode": "VIP"}),
            ]
        );
    }
}
