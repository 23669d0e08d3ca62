//! EndpointSlice mirroring, as upstream's endpointslicemirroring controller: the
//! Endpoints of a Service *without* a selector (written by hand or by another
//! controller) are mirrored into EndpointSlices, so consumers of slices (the service
//! proxy, DNS) see them too. Mirrored slices are labelled `kubernetes.io/service-name`
//! and managed by [`MANAGED_BY`], and owned by their Endpoints (they go with it).
//! Endpoints labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (as the
//! `kubernetes` Service's) are left alone; at most [`MAX_MIRRORED`] addresses are
//! mirrored.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::endpoints::{ResolvedPort, selector};
use crate::endpointslice::{
    MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL, SliceContent, SliceTarget,
    managed_service_by, write_slices,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// This controller, as upstream names it.
pub const MANAGED_BY: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints with this label set to "true" are not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// The most addresses mirrored from one Endpoints object.
pub const MAX_MIRRORED: usize = 1000;

/// The slices mirroring `endpoints`: one group per distinct set of subset ports,
/// IPv4 addresses only, ready ones first.
pub fn mirrored_slices(endpoints: &Endpoints) -> Vec<(Vec<ResolvedPort>, Vec<SliceContent>)> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Endpoint>> = BTreeMap::new();
    let mut budget = MAX_MIRRORED;
    for ready in [true, false] {
        for subset in endpoints.subsets.iter().flatten() {
            let ports: Vec<ResolvedPort> = subset
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    (
                        p.name.clone().unwrap_or_default(),
                        p.port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        p.app_protocol.clone(),
                    )
                })
                .collect();
            let addresses = if ready {
                &subset.addresses
            } else {
                &subset.not_ready_addresses
            };
            for address in addresses.iter().flatten() {
                if budget == 0 || address.ip.parse::<std::net::Ipv4Addr>().is_err() {
                    continue;
                }
                budget -= 1;
                groups
                    .entry(ports.clone())
                    .or_default()
                    .push(mirror(address, ready));
            }
        }
    }
    groups
        .into_iter()
        .map(|(ports, endpoints)| {
            let slice_ports = ports
                .iter()
                .map(|(name, port, protocol, app_protocol)| {
                    k8s_openapi::api::discovery::v1::EndpointPort {
                        name: Some(name.clone()),
                        port: Some(*port),
                        protocol: Some(protocol.clone()),
                        app_protocol: app_protocol.clone(),
                    }
                })
                .collect::<Vec<_>>();
            let contents = endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(|chunk| SliceContent {
                    ports: slice_ports.clone(),
                    endpoints: chunk.to_vec(),
                })
                .collect();
            (ports, contents)
        })
        .collect()
}

fn mirror(address: &EndpointAddress, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![address.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..EndpointConditions::default()
        }),
        hostname: address.hostname.clone(),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Endpoint::default()
    }
}

/// Whether `endpoints` should be mirrored, given its Service.
fn wants_mirror(endpoints: &Endpoints, service: Option<&Service>) -> bool {
    let skip = endpoints
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SKIP_MIRROR_LABEL))
        .is_some_and(|v| v == "true");
    !skip && service.is_some_and(|service| selector(service).is_none())
}

struct Controller {
    services: Arc<Cache<Service>>,
    endpoints: Arc<Cache<Endpoints>>,
    slices: Arc<Cache<EndpointSlice>>,
    client: kube::Client,
}

/// Runs the controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        services: caches.get(),
        endpoints: caches.get(),
        slices: caches.get(),
        client: caches.client().clone(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        controller.services.subscribe(),
        queue.clone(),
        |change: &Change<Service>| vec![ObjectKey::of(change.object().as_ref())],
    ));
    tokio::spawn(forward(
        controller.endpoints.subscribe(),
        queue.clone(),
        |change: &Change<Endpoints>| vec![ObjectKey::of(change.object().as_ref())],
    ));
    tokio::spawn(forward(
        controller.slices.subscribe(),
        queue.clone(),
        |change: &Change<EndpointSlice>| {
            managed_service_by(change.object(), MANAGED_BY)
                .into_iter()
                .collect()
        },
    ));
    controller.services.wait_synced().await;
    controller.endpoints.wait_synced().await;
    controller.slices.wait_synced().await;
    run_workers("endpointslicemirroring", queue, 2, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let existing = self
            .slices
            .filter(|slice| managed_service_by(slice, MANAGED_BY).as_ref() == Some(key));
        let endpoints = self.endpoints.get(&key.namespace, &key.name);
        let service = self.services.get(&key.namespace, &key.name);
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let Some(endpoints) = endpoints.filter(|e| wants_mirror(e, service.as_deref())) else {
            // Nothing to mirror (any more): the mirrored slices go.
            if !existing.is_empty() {
                let target = SliceTarget {
                    name_prefix: String::new(),
                    labels: BTreeMap::new(),
                    owner: OwnerReference::default(),
                };
                write_slices(&api, &existing, Vec::new(), &target).await?;
            }
            return Ok(Outcome::Done);
        };
        let mut labels = endpoints.metadata.labels.clone().unwrap_or_default();
        labels.insert(SERVICE_NAME_LABEL.into(), key.name.clone());
        labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        let target = SliceTarget {
            name_prefix: format!("{}-", key.name),
            labels,
            owner: OwnerReference {
                api_version: "v1".into(),
                kind: "Endpoints".into(),
                name: key.name.clone(),
                uid: endpoints.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        };
        write_slices(&api, &existing, mirrored_slices(&endpoints), &target).await?;
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subsets_become_slices_by_ports_with_readiness() {
        let endpoints: Endpoints = serde_json::from_value(json!({
            "metadata": {"name": "ext", "namespace": "ns"},
            "subsets": [
                {"addresses": [{"ip": "10.1.0.1"}], "notReadyAddresses": [{"ip": "10.1.0.2"}],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.1.0.3"}, {"ip": "fd00::1"}],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
                {"addresses": [{"ip": "10.1.0.4"}], "ports": [{"port": 53, "protocol": "UDP"}]},
            ],
        }))
        .unwrap();
        let slices = mirrored_slices(&endpoints);
        assert_eq!(slices.len(), 2);
        let http = slices.iter().find(|(ports, _)| ports[0].1 == 80).unwrap();
        let mirrored: Vec<(String, bool)> = http.1[0]
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.addresses[0].clone(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            mirrored,
            [
                ("10.1.0.1".to_string(), true),
                ("10.1.0.3".to_string(), true),
                ("10.1.0.2".to_string(), false)
            ]
        );

        let service = |selector: serde_json::Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "ext"}, "spec": {"selector": selector}}),
            )
            .unwrap()
        };
        assert!(wants_mirror(&endpoints, Some(&service(json!(null)))));
        assert!(!wants_mirror(
            &endpoints,
            Some(&service(json!({"app": "x"})))
        ));
        assert!(!wants_mirror(&endpoints, None));
        let mut skipped = endpoints.clone();
        skipped.metadata.labels = Some(BTreeMap::from([(SKIP_MIRROR_LABEL.into(), "true".into())]));
        assert!(!wants_mirror(&skipped, Some(&service(json!(null)))));
    }
}
