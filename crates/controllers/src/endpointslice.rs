//! The EndpointSlice controller, as upstream's (pkg/controller/endpointslice): every
//! Service with a selector gets discovery.k8s.io/v1 EndpointSlices listing the pods it
//! selects, at most [`MAX_ENDPOINTS_PER_SLICE`] each, one set of slices per distinct
//! set of resolved ports. Each endpoint carries the conditions `ready` (serving and not
//! terminating, or always with `publishNotReadyAddresses`), `serving` and
//! `terminating`, its node and that node's zone, and a hostname for pods that name
//! the Service as their subdomain. Slices are labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by` and owned
//! by their Service (the garbage collector removes them with it). A Service without
//! endpoints keeps one empty slice, as upstream's placeholder.
//!
//! Pod selection and port resolution come from [`crate::endpoints`].

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::endpoints::{
    ResolvedPort, endpoint_labels, hostname, is_pod_ready, pod_ipv4, pod_reference,
    publishes_not_ready, resolved_ports, selector, selects, services_in, should_be_in_endpoints,
};
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The most endpoints in one slice (upstream's `--max-endpoints-per-slice` default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Names the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Names who manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller, as upstream names it.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The node label with the node's zone.
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The content of one slice: its ports and endpoints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SliceContent {
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

fn slice_ports(ports: &[ResolvedPort]) -> Vec<EndpointPort> {
    ports
        .iter()
        .map(|(name, port, protocol, app_protocol)| EndpointPort {
            name: Some(name.clone()),
            port: Some(*port),
            protocol: Some(protocol.clone()),
            app_protocol: app_protocol.clone(),
        })
        .collect()
}

/// The slices the Service should have, grouped by their ports (in the order of the
/// groups' ports), `zone_of` naming a node's zone.
pub fn desired_slices(
    service: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> Vec<(Vec<ResolvedPort>, Vec<SliceContent>)> {
    let tolerate_unready = publishes_not_ready(service);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Endpoint>> = BTreeMap::new();
    for pod in pods {
        if !selects(service, pod) || !should_be_in_endpoints(pod, true) {
            continue;
        }
        let serving = is_pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let endpoint = Endpoint {
            addresses: vec![pod_ipv4(pod).unwrap_or_default()],
            conditions: Some(EndpointConditions {
                ready: Some(tolerate_unready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: hostname(service, pod),
            zone: node_name.as_deref().and_then(&zone_of),
            node_name,
            target_ref: Some(pod_reference(pod)),
            ..Endpoint::default()
        };
        groups
            .entry(resolved_ports(service, pod))
            .or_default()
            .push(endpoint);
    }
    if groups.is_empty() {
        // The placeholder: a Service without endpoints still has one (empty) slice.
        return vec![(Vec::new(), vec![SliceContent::default()])];
    }
    groups
        .into_iter()
        .map(|(ports, mut endpoints)| {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            let contents = endpoints
                .chunks(MAX_ENDPOINTS_PER_SLICE)
                .map(|chunk| SliceContent {
                    ports: slice_ports(&ports),
                    endpoints: chunk.to_vec(),
                })
                .collect();
            (ports, contents)
        })
        .collect()
}

/// The ports of an existing slice, as a group key.
fn ports_key(slice: &EndpointSlice) -> Vec<ResolvedPort> {
    slice
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port.unwrap_or(0),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                p.app_protocol.clone(),
            )
        })
        .collect()
}

/// What to do to go from the existing slices to the desired ones.
#[derive(Debug, Default)]
pub struct Plan {
    /// New slices' contents.
    pub create: Vec<SliceContent>,
    /// Existing slices (by name) to rewrite with new contents.
    pub update: Vec<(String, SliceContent)>,
    /// Existing slices (by name) no longer needed.
    pub delete: Vec<String>,
}

/// Fills existing slices with the same ports first (in name order), creates the rest
/// and deletes what is left over; slices already right are left alone.
pub fn plan(
    existing: &[Arc<EndpointSlice>],
    desired: Vec<(Vec<ResolvedPort>, Vec<SliceContent>)>,
    labels: &BTreeMap<String, String>,
) -> Plan {
    let mut by_ports: BTreeMap<Vec<ResolvedPort>, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in existing {
        by_ports.entry(ports_key(slice)).or_default().push(slice);
    }
    for slices in by_ports.values_mut() {
        slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    }
    let mut plan = Plan::default();
    for (ports, contents) in desired {
        let mut reusable = by_ports.remove(&ports).unwrap_or_default().into_iter();
        for content in contents {
            match reusable.next() {
                Some(slice) => {
                    let same = slice.endpoints == content.endpoints
                        && slice.ports.clone().unwrap_or_default() == content.ports
                        && slice.metadata.labels.as_ref() == Some(labels)
                        && slice.address_type == "IPv4";
                    if !same {
                        plan.update
                            .push((slice.metadata.name.clone().unwrap_or_default(), content));
                    }
                }
                None => plan.create.push(content),
            }
        }
        plan.delete
            .extend(reusable.filter_map(|slice| slice.metadata.name.clone()));
    }
    for slices in by_ports.into_values() {
        plan.delete.extend(
            slices
                .into_iter()
                .filter_map(|slice| slice.metadata.name.clone()),
        );
    }
    plan
}

/// The labels of the Service's slices.
pub fn slice_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoint_labels(service);
    labels.insert(
        SERVICE_NAME_LABEL.into(),
        service.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

/// Whether this controller manages `slice`, and for which Service.
fn managed_service(slice: &EndpointSlice) -> Option<ObjectKey> {
    managed_service_by(slice, MANAGED_BY)
}

/// Whether `manager` manages `slice`, and for which Service.
pub fn managed_service_by(slice: &EndpointSlice, manager: &str) -> Option<ObjectKey> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(manager) {
        return None;
    }
    Some(ObjectKey::new(
        slice.metadata.namespace.clone().unwrap_or_default(),
        labels.get(SERVICE_NAME_LABEL)?.clone(),
    ))
}

struct Controller {
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    nodes: Arc<Cache<Node>>,
    slices: Arc<Cache<EndpointSlice>>,
    client: kube::Client,
}

/// Runs the controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        services: caches.get(),
        pods: caches.get(),
        nodes: caches.get(),
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
        controller.slices.subscribe(),
        queue.clone(),
        |change: &Change<EndpointSlice>| managed_service(change.object()).into_iter().collect(),
    ));
    let services = controller.services.clone();
    tokio::spawn(forward(
        controller.pods.subscribe(),
        queue.clone(),
        move |change: &Change<Pod>| {
            let namespace = change.object().metadata.namespace.as_deref().unwrap_or("");
            services_in(&services, namespace)
        },
    ));
    // A node's zone label shows on its endpoints.
    let services = controller.services.clone();
    tokio::spawn(forward(
        controller.nodes.subscribe(),
        queue.clone(),
        move |_: &Change<Node>| {
            services
                .filter(|service| selector(service).is_some())
                .iter()
                .map(|service| ObjectKey::of(service.as_ref()))
                .collect()
        },
    ));
    controller.services.wait_synced().await;
    controller.pods.wait_synced().await;
    controller.nodes.wait_synced().await;
    controller.slices.wait_synced().await;
    run_workers("endpointslice", queue, 4, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let Some(service) = self.services.get(&key.namespace, &key.name) else {
            // Owned by the Service: the garbage collector removes them.
            return Ok(Outcome::Done);
        };
        if selector(&service).is_none() {
            return Ok(Outcome::Done);
        }
        let existing = self
            .slices
            .filter(|slice| managed_service(slice).as_ref() == Some(key));
        let pods = self.pods.list_namespace(&key.namespace);
        let nodes = &self.nodes;
        let desired = desired_slices(&service, &pods, |node| {
            nodes
                .get("", node)?
                .metadata
                .labels
                .as_ref()?
                .get(ZONE_LABEL)
                .cloned()
        });
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: key.name.clone(),
            uid: service.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        let target = SliceTarget {
            name_prefix: format!("{}-", key.name),
            labels: slice_labels(&service),
            owner,
        };
        write_slices(&api, &existing, desired, &target).await?;
        Ok(Outcome::Done)
    }
}

/// Who a set of slices belongs to and how they are labelled.
pub struct SliceTarget {
    /// `generateName` of new slices.
    pub name_prefix: String,
    pub labels: BTreeMap<String, String>,
    pub owner: OwnerReference,
}

/// Brings the `existing` slices of one owner to the `desired` contents: rewrites
/// those that differ, creates what is missing, deletes what is left over.
pub async fn write_slices(
    api: &Api<EndpointSlice>,
    existing: &[Arc<EndpointSlice>],
    desired: Vec<(Vec<ResolvedPort>, Vec<SliceContent>)>,
    target: &SliceTarget,
) -> anyhow::Result<()> {
    let plan = plan(existing, desired, &target.labels);
    let slice_of = |content: SliceContent, name: Option<String>| EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| target.name_prefix.clone()),
            name,
            labels: Some(target.labels.clone()),
            owner_references: Some(vec![target.owner.clone()]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints: content.endpoints,
        ports: Some(content.ports),
    };
    for (name, content) in plan.update {
        let Some(current) = existing
            .iter()
            .find(|s| s.metadata.name.as_ref() == Some(&name))
        else {
            continue;
        };
        let mut slice = slice_of(content, Some(name.clone()));
        slice.metadata.resource_version = current.metadata.resource_version.clone();
        slice.metadata.annotations = current.metadata.annotations.clone();
        ignore_races(api.replace(&name, &PostParams::default(), &slice).await)?;
    }
    for content in plan.create {
        ignore_races(
            api.create(&PostParams::default(), &slice_of(content, None))
                .await,
        )?;
    }
    for name in plan.delete {
        ignore_races(api.delete(&name, &DeleteParams::default()).await)?;
    }
    Ok(())
}

/// A conflict or a missing object means a newer state is on its way through the
/// watch, which queues the Service again.
fn ignore_races<T>(result: kube::Result<T>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::tests::{pod, service};
    use serde_json::json;

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let web = service(
            json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}),
        );
        let pods = vec![
            pod("ready", "10.42.0.2", true, json!({})),
            pod("unready", "10.42.0.3", false, json!({})),
            pod(
                "leaving",
                "10.42.0.4",
                true,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        let zone = |node: &str| (node == "node-1").then(|| "zone-a".to_string());
        let desired = desired_slices(&web, &pods, zone);
        assert_eq!(desired.len(), 1);
        let content = &desired[0].1[0];
        assert_eq!(content.ports[0].port, Some(8080));
        let conditions: Vec<(bool, bool, bool)> = content
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.as_ref().unwrap();
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
            })
            .collect();
        assert_eq!(
            conditions,
            [
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(content.endpoints[0].zone.as_deref(), Some("zone-a"));
        assert_eq!(content.endpoints[0].node_name.as_deref(), Some("node-1"));

        let tolerant = service(
            json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true, "ports": [{"port": 80}]}),
        );
        let desired = desired_slices(&tolerant, &pods, zone);
        assert!(
            desired[0].1[0]
                .endpoints
                .iter()
                .all(|e| e.conditions.as_ref().unwrap().ready == Some(true))
        );
    }

    #[test]
    fn slices_hold_at_most_a_hundred_and_are_reused() {
        let web = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let pods: Vec<Arc<Pod>> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 200, i % 200 + 1),
                    true,
                    json!({}),
                )
            })
            .collect();
        let desired = desired_slices(&web, &pods, |_| None);
        let sizes: Vec<usize> = desired[0].1.iter().map(|c| c.endpoints.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        let labels = slice_labels(&web);
        assert_eq!(labels[SERVICE_NAME_LABEL], "web");
        assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);

        // Two existing slices with these ports (one already right), one with other ports.
        let existing_slice = |name: &str, port: i32, content: &SliceContent| {
            Arc::new(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    labels: Some(labels.clone()),
                    ..ObjectMeta::default()
                },
                address_type: "IPv4".into(),
                endpoints: content.endpoints.clone(),
                ports: Some(vec![EndpointPort {
                    port: Some(port),
                    ..content.ports[0].clone()
                }]),
            })
        };
        let existing = vec![
            existing_slice("web-a", 80, &desired[0].1[0]),
            existing_slice(
                "web-b",
                80,
                &SliceContent {
                    ports: desired[0].1[0].ports.clone(),
                    endpoints: vec![],
                },
            ),
            existing_slice("web-old", 81, &desired[0].1[0]),
        ];
        let plan = plan(&existing, desired, &labels);
        assert_eq!(
            plan.update
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["web-b"]
        );
        assert_eq!(plan.create.len(), 1);
        assert_eq!(plan.delete, ["web-old"]);

        // No endpoints: one empty placeholder.
        let desired = desired_slices(&web, &[], |_| None);
        assert_eq!(desired, vec![(Vec::new(), vec![SliceContent::default()])]);
    }
}
