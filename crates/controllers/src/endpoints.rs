//! The Endpoints controller, as upstream's (pkg/controller/endpoint): every Service
//! with a selector gets an Endpoints object of the same name listing the pods it
//! selects, ready ones in `addresses`, the others in `notReadyAddresses` (all in
//! `addresses` with `publishNotReadyAddresses`), with target ports resolved per pod
//! (a named `targetPort` is looked up in the pod's container ports). Pods with the same
//! resolved ports share a subset. More than [`MAX_ADDRESSES`] addresses are truncated
//! and the object is annotated [`OVER_CAPACITY_ANNOTATION`].
//!
//! The pod selection and port resolution here are shared with the
//! [`endpointslice`](crate::endpointslice) controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};

use crate::cache::{Cache, Caches, Change, ObjectKey};
use crate::changes::forward;
use crate::workqueue::{Outcome, WorkQueue, run_workers};

/// The most addresses one Endpoints object lists.
pub const MAX_ADDRESSES: usize = 1000;
/// Set to `truncated` on an Endpoints object that lists fewer addresses than exist.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// On the Endpoints and EndpointSlices of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The Service's selector, if it selects pods (a Service without one has its
/// endpoints managed by someone else).
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    service
        .spec
        .as_ref()?
        .selector
        .as_ref()
        .filter(|selector| !selector.is_empty())
}

/// Whether `service` selects `pod`.
pub fn selects(service: &Service, pod: &Pod) -> bool {
    let Some(selector) = selector(service) else {
        return false;
    };
    if pod.metadata.namespace != service.metadata.namespace {
        return false;
    }
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// Whether the pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The pod's IPv4 address, once it has one.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let mut candidates = status
        .pod_ip
        .iter()
        .cloned()
        .chain(status.pod_ips.iter().flatten().map(|ip| ip.ip.clone()));
    candidates.find(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok())
}

/// Whether the pod belongs in a Service's endpoints at all (upstream's
/// ShouldPodBeInEndpoints): it has an address, is not finished for good, and is not
/// being deleted unless `include_terminating`.
pub fn should_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ipv4(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let restart_policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
    match restart_policy {
        Some("Never") => !matches!(phase, Some("Failed") | Some("Succeeded")),
        Some("OnFailure") => phase != Some("Succeeded"),
        _ => true,
    }
}

/// The pod port a Service port sends to: its `targetPort` number, or the container
/// port of that name and protocol. None when the pod has no port of that name.
pub fn resolve_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(number)) => Some(*number),
        Some(IntOrString::String(name)) => {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// A resolved port of one pod: name, number, protocol, appProtocol.
pub type ResolvedPort = (String, i32, String, Option<String>);

/// The Service's ports as this pod serves them (those it can resolve), in the
/// Service's order.
pub fn resolved_ports(service: &Service, pod: &Pod) -> Vec<ResolvedPort> {
    let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref());
    ports
        .into_iter()
        .flatten()
        .filter_map(|port| {
            Some((
                port.name.clone().unwrap_or_default(),
                resolve_port(pod, port)?,
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port.app_protocol.clone(),
            ))
        })
        .collect()
}

/// Whether the Service has no ClusterIP (its pods get DNS records of their own).
pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// Whether the Service wants pods listed before they are ready.
pub fn publishes_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// The pod's hostname in the Service's DNS records: set when the pod names the
/// Service as its subdomain.
pub fn hostname(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace)
        .then(|| hostname.clone())
}

/// A reference to the pod, as endpoints carry it.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The labels of the Service's endpoint objects: the Service's own, plus the
/// headless marker.
pub fn endpoint_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The subsets of the Service's Endpoints, and whether they were truncated.
pub fn desired_subsets(service: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let tolerate_unready = publishes_not_ready(service);
    let no_ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(Vec::is_empty);
    // Pods with the same ports share a subset.
    type Addresses = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Addresses> = BTreeMap::new();
    for pod in pods {
        if !selects(service, pod) || !should_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let ports = resolved_ports(service, pod);
        if ports.is_empty() && !(no_ports && is_headless(service)) {
            continue;
        }
        let address = EndpointAddress {
            ip: pod_ipv4(pod).unwrap_or_default(),
            hostname: hostname(service, pod),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_reference(pod)),
        };
        let (ready, not_ready) = groups.entry(ports).or_default();
        if tolerate_unready || is_pod_ready(pod) {
            ready.push(address);
        } else {
            not_ready.push(address);
        }
    }
    let mut budget = MAX_ADDRESSES;
    let mut truncated = false;
    let mut take = |addresses: &mut Vec<EndpointAddress>| {
        addresses.sort_by(|a, b| a.ip.cmp(&b.ip));
        if addresses.len() > budget {
            addresses.truncate(budget);
            truncated = true;
        }
        budget -= addresses.len();
    };
    // Ready addresses first: they are the ones that take traffic.
    for (ready, _) in groups.values_mut() {
        take(ready);
    }
    for (_, not_ready) in groups.values_mut() {
        take(not_ready);
    }
    let subsets = groups
        .into_iter()
        .filter(|(_, (ready, not_ready))| !ready.is_empty() || !not_ready.is_empty())
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: Some(ready).filter(|a| !a.is_empty()),
            not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app_protocol)| EndpointPort {
                        name: Some(name).filter(|n| !n.is_empty()),
                        port,
                        protocol: Some(protocol),
                        app_protocol,
                    })
                    .collect::<Vec<_>>(),
            )
            .filter(|p| !p.is_empty()),
        })
        .collect();
    (subsets, truncated)
}

/// The Endpoints object the Service should have.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let (subsets, truncated) = desired_subsets(service, pods);
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(endpoint_labels(service)).filter(|l| !l.is_empty()),
            annotations: truncated.then(|| {
                BTreeMap::from([(
                    OVER_CAPACITY_ANNOTATION.to_string(),
                    "truncated".to_string(),
                )])
            }),
            ..ObjectMeta::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// Keys of every Service with a selector in `namespace`.
pub fn services_in(services: &Cache<Service>, namespace: &str) -> Vec<ObjectKey> {
    services
        .list_namespace(namespace)
        .iter()
        .filter(|service| selector(service).is_some())
        .map(|service| ObjectKey::of(service.as_ref()))
        .collect()
}

struct Controller {
    services: Arc<Cache<Service>>,
    pods: Arc<Cache<Pod>>,
    endpoints: Arc<Cache<Endpoints>>,
    client: kube::Client,
}

/// Runs the controller until the process ends.
pub async fn run(caches: Caches) -> anyhow::Result<()> {
    let controller = Arc::new(Controller {
        services: caches.get(),
        pods: caches.get(),
        endpoints: caches.get(),
        client: caches.client().clone(),
    });
    let queue: WorkQueue<ObjectKey> = WorkQueue::new();
    tokio::spawn(forward(
        controller.services.subscribe(),
        queue.clone(),
        |change: &Change<Service>| vec![ObjectKey::of(change.object().as_ref())],
    ));
    // Endpoints of no Service are someone else's (as upstream, they are left alone
    // unless their Service goes); managed ones changed or deleted are put back.
    let services = controller.services.clone();
    tokio::spawn(forward(
        controller.endpoints.subscribe(),
        queue.clone(),
        move |change: &Change<Endpoints>| {
            let key = ObjectKey::of(change.object().as_ref());
            match services.get(&key.namespace, &key.name) {
                Some(service) if selector(&service).is_some() => vec![key],
                _ => Vec::new(),
            }
        },
    ));
    // A pod change can concern any Service of its namespace (also one whose selector
    // matched the pod's labels before they changed).
    let services = controller.services.clone();
    tokio::spawn(forward(
        controller.pods.subscribe(),
        queue.clone(),
        move |change: &Change<Pod>| {
            let namespace = change.object().metadata.namespace.as_deref().unwrap_or("");
            services_in(&services, namespace)
        },
    ));
    controller.services.wait_synced().await;
    controller.pods.wait_synced().await;
    controller.endpoints.wait_synced().await;
    run_workers("endpoints", queue, 4, |key| {
        let controller = controller.clone();
        async move { controller.sync(&key).await }
    })
    .await;
    Ok(())
}

impl Controller {
    async fn sync(&self, key: &ObjectKey) -> anyhow::Result<Outcome> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let existing = self.endpoints.get(&key.namespace, &key.name);
        let Some(service) = self.services.get(&key.namespace, &key.name) else {
            // The Service is gone: so are its endpoints.
            if existing.is_some() {
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            return Ok(Outcome::Done);
        };
        if selector(&service).is_none() {
            return Ok(Outcome::Done);
        }
        let pods = self.pods.list_namespace(&key.namespace);
        let mut desired = desired_endpoints(&service, &pods);
        match existing {
            Some(existing) => {
                let same = existing.subsets == desired.subsets
                    && existing.metadata.labels == desired.metadata.labels
                    && existing
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
                        == desired
                            .metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION));
                if same {
                    return Ok(Outcome::Done);
                }
                let mut annotations = existing.metadata.annotations.clone().unwrap_or_default();
                annotations.remove(OVER_CAPACITY_ANNOTATION);
                annotations.extend(desired.metadata.annotations.take().unwrap_or_default());
                desired.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
                desired.metadata.resource_version = existing.metadata.resource_version.clone();
                match api
                    .replace(&key.name, &PostParams::default(), &desired)
                    .await
                {
                    Ok(_) => {}
                    // A newer version is on its way through the watch.
                    Err(kube::Error::Api(status)) if status.code == 409 => {}
                    Err(error) => return Err(error.into()),
                }
            }
            None => match api.create(&PostParams::default(), &desired).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(error) => return Err(error.into()),
            },
        }
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::{Value, json};

    pub(crate) fn service(spec: Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "ns"}, "spec": spec}),
        )
        .unwrap()
    }

    pub(crate) fn pod(name: &str, ip: &str, ready: bool, extra: Value) -> Arc<Pod> {
        let mut object = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running",
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        });
        merge(&mut object, extra);
        Arc::new(serde_json::from_value(object).unwrap())
    }

    pub(crate) fn merge(target: &mut Value, patch: Value) {
        if let (Value::Object(target), Value::Object(patch)) = (&mut *target, &patch) {
            for (key, value) in patch {
                merge(
                    target.entry(key.clone()).or_insert(Value::Null),
                    value.clone(),
                );
            }
        } else {
            *target = patch;
        }
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_readiness_splits_addresses() {
        let web = service(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}));
        let pods = vec![
            pod("a", "10.42.0.2", true, json!({})),
            pod("b", "10.42.0.3", false, json!({})),
            // Another port number under the same name: its own subset.
            pod(
                "c",
                "10.42.0.4",
                true,
                json!({"spec": {"containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 9090}]}]}}),
            ),
            // No port of that name: not listed.
            pod(
                "d",
                "10.42.0.5",
                true,
                json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": []}]}}),
            ),
            // Not selected, no IP yet, being deleted, finished.
            pod(
                "e",
                "10.42.0.6",
                true,
                json!({"metadata": {"labels": {"app": "other"}}}),
            ),
            pod("f", "", true, json!({})),
            pod(
                "g",
                "10.42.0.7",
                true,
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            pod(
                "h",
                "10.42.0.8",
                true,
                json!({"spec": {"restartPolicy": "Never"}, "status": {"phase": "Succeeded"}}),
            ),
        ];
        let (subsets, truncated) = desired_subsets(&web, &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 2);
        let ips = |a: &Option<Vec<EndpointAddress>>| -> Vec<String> {
            a.iter().flatten().map(|a| a.ip.clone()).collect()
        };
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(ips(&subsets[0].addresses), ["10.42.0.2"]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.42.0.3"]);
        assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 9090);
        assert_eq!(ips(&subsets[1].addresses), ["10.42.0.4"]);
        let address = &subsets[0].addresses.as_ref().unwrap()[0];
        assert_eq!(address.node_name.as_deref(), Some("node-1"));
        assert_eq!(
            address.target_ref.as_ref().unwrap().name.as_deref(),
            Some("a")
        );

        // publishNotReadyAddresses lists every pod as ready.
        let tolerant = service(
            json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true,
            "ports": [{"port": 80, "targetPort": 8080}]}),
        );
        let (subsets, _) = desired_subsets(&tolerant, &pods[..2]);
        assert_eq!(ips(&subsets[0].addresses), ["10.42.0.2", "10.42.0.3"]);
    }

    #[test]
    fn headless_services_carry_hostnames_and_past_capacity_is_truncated() {
        let headless = service(json!({"selector": {"app": "web"}, "clusterIP": "None"}));
        let member = pod(
            "a",
            "10.42.0.2",
            true,
            json!({"spec": {"hostname": "a", "subdomain": "web"}}),
        );
        let endpoints = desired_endpoints(&headless, &[member]);
        let subset = &endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(
            subset.addresses.as_ref().unwrap()[0].hostname.as_deref(),
            Some("a")
        );
        assert!(subset.ports.is_none());
        assert_eq!(endpoints.metadata.labels.unwrap()[HEADLESS_LABEL], "");

        let web = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let many: Vec<Arc<Pod>> = (0..1100)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 250, i % 250 + 1),
                    i % 2 == 0,
                    json!({}),
                )
            })
            .collect();
        let endpoints = desired_endpoints(&web, &many);
        let subset = &endpoints.subsets.as_ref().unwrap()[0];
        assert_eq!(subset.addresses.as_ref().unwrap().len(), 550);
        assert_eq!(subset.not_ready_addresses.as_ref().unwrap().len(), 450);
        assert_eq!(
            endpoints.metadata.annotations.unwrap()[OVER_CAPACITY_ANNOTATION],
            "truncated"
        );
    }
}
