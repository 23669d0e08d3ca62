//! Service ClusterIP and NodePort allocation, done in the API server's Service write
//! path as upstream's Service registry does (pkg/registry/core/service/ipallocator and
//! portallocator).
//!
//! Every allocated value is a key in the store, created with the store's
//! create-if-absent: a ClusterIP is an `IPAddress` object (networking.k8s.io/v1, named
//! by the address, `parentRef` naming its Service, as upstream's IPAddress-based
//! allocator), a NodePort a key under [`NODE_PORT_PREFIX`]. So two servers sharing
//! one etcd never hand out the same value, and the allocations survive a restart with
//! nothing to rebuild. A value is claimed before its Service is written and released
//! when that write fails or the Service goes; [`repair_periodically`] releases
//! claims whose Service is gone by any other way (a crash between the two writes, a
//! delete through finalizers).
//!
//! Headless Services (`clusterIP: None`) and ExternalName Services get no ClusterIP;
//! only NodePort and LoadBalancer Services get NodePorts (and LoadBalancer Services with
//! `externalTrafficPolicy: Local` a `healthCheckNodePort`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use krust_api::Cause;
use krust_api::cidr::{Ipv4Cidr, PortRange};
use krust_api::resources;
use rand::Rng;
use serde_json::{Value, json};

use crate::errors::{ApiError, ApiResult};
use crate::handlers::{Api, Call, Tracking, object_key};

/// Where claimed NodePorts are kept (one key per port; upstream keeps a bitmap at
/// `/registry/ranges/servicenodeports`).
pub const NODE_PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";
/// Labels upstream puts on the IPAddress objects of its allocator.
const IP_FAMILY_LABEL: &str = "ipaddress.kubernetes.io/ip-family";
const MANAGED_BY_LABEL: &str = "ipaddress.kubernetes.io/managed-by";
const MANAGED_BY: &str = "ipallocator.k8s.io";
/// A claim younger than this may belong to a Service whose write is still on its way.
const LEAK_GRACE: chrono::Duration = chrono::Duration::seconds(30);
/// How often leaked claims are looked for.
const REPAIR_INTERVAL: Duration = Duration::from_secs(30);

/// The ranges Services get their ClusterIPs and NodePorts from.
#[derive(Clone, Copy, Debug)]
pub struct ServiceRanges {
    /// `--service-cluster-ip-range`.
    pub cluster_ips: Ipv4Cidr,
    /// `--service-node-port-range`.
    pub node_ports: PortRange,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            cluster_ips: "10.43.0.0/16".parse().expect("valid default range"),
            node_ports: PortRange {
                first: 30000,
                last: 32767,
            },
        }
    }
}

impl ServiceRanges {
    /// The ClusterIP of the `kubernetes` Service: the first address of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.cluster_ips.usable().0
    }
}

/// One allocated value of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    Ip(Ipv4Addr),
    Port(u16),
}

impl Claim {
    fn key(&self) -> String {
        match self {
            Claim::Ip(ip) => object_key(ip_address_resource(), None, &ip.to_string()),
            Claim::Port(port) => format!("{NODE_PORT_PREFIX}{port}"),
        }
    }
}

fn ip_address_resource() -> &'static resources::ResourceInfo {
    resources::builtin()
        .iter()
        .find(|r| r.group == "networking.k8s.io" && r.plural == "ipaddresses")
        .expect("IPAddress is a built-in resource")
}

fn service_type(service: &Value) -> &str {
    service["spec"]["type"].as_str().unwrap_or("ClusterIP")
}

fn wants_cluster_ip(service: &Value) -> bool {
    service_type(service) != "ExternalName" && service["spec"]["clusterIP"] != "None"
}

fn wants_node_ports(service: &Value) -> bool {
    match service_type(service) {
        "NodePort" => true,
        "LoadBalancer" => service["spec"]["allocateLoadBalancerNodePorts"] != false,
        _ => false,
    }
}

fn wants_health_check_port(service: &Value) -> bool {
    service_type(service) == "LoadBalancer" && service["spec"]["externalTrafficPolicy"] == "Local"
}

/// The values a stored Service holds.
fn held(service: &Value) -> BTreeSet<Claim> {
    let spec = &service["spec"];
    let mut claims = BTreeSet::new();
    if wants_cluster_ip(service) {
        for ip in spec["clusterIPs"].as_array().into_iter().flatten() {
            if let Some(ip) = ip.as_str().and_then(|ip| ip.parse().ok()) {
                claims.insert(Claim::Ip(ip));
            }
        }
    }
    for port in spec["ports"].as_array().into_iter().flatten() {
        if let Some(port) = port["nodePort"].as_u64().filter(|p| *p > 0) {
            claims.insert(Claim::Port(port as u16));
        }
    }
    if let Some(port) = spec["healthCheckNodePort"].as_u64().filter(|p| *p > 0) {
        claims.insert(Claim::Port(port as u16));
    }
    claims
}

fn invalid(service: &Value, field: &str, value: &Value, message: &str) -> ApiError {
    let shown = match value {
        Value::String(text) => format!("{text:?}"),
        other => other.to_string(),
    };
    ApiError::invalid(
        "",
        "Service",
        service["metadata"]["name"].as_str().unwrap_or(""),
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {shown}: {message}"),
            field: field.into(),
        }],
    )
}

/// Upstream's checks of a Service's IP family fields against this cluster's single
/// IPv4 service network (after defaulting): SingleStack with two families or cluster
/// IPs is contradictory, RequireDualStack cannot be met, and IPv6 is not configured.
/// A headless Service without selector may name both families (it gets no IP).
fn check_ip_families(service: &Value) -> ApiResult<()> {
    if service_type(service) == "ExternalName" {
        return Ok(());
    }
    let spec = &service["spec"];
    let policy = spec["ipFamilyPolicy"].as_str().unwrap_or("SingleStack");
    let list = |field: &str| -> Vec<String> {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    let families = list("ipFamilies");
    if policy == "SingleStack" {
        for (field, what) in [("clusterIPs", "cluster IPs"), ("ipFamilies", "IP families")] {
            if list(field).len() == 2 {
                return Err(invalid(
                    service,
                    "spec.ipFamilyPolicy",
                    &json!(policy),
                    &format!(
                        "must be 'RequireDualStack' or 'PreferDualStack' when multiple {what} are specified"
                    ),
                ));
            }
        }
    }
    let headless_without_selector = spec["clusterIP"].as_str() == Some("None")
        && spec["selector"].as_object().is_none_or(|s| s.is_empty());
    if headless_without_selector {
        return Ok(());
    }
    if policy == "RequireDualStack" {
        return Err(invalid(
            service,
            "spec.ipFamilyPolicy",
            &json!(policy),
            "this cluster is not configured for dual-stack services",
        ));
    }
    if let Some((index, family)) = families.iter().enumerate().find(|(_, f)| *f != "IPv4") {
        return Err(invalid(
            service,
            &format!("spec.ipFamilies[{index}]"),
            &json!(family),
            "not configured on this cluster",
        ));
    }
    Ok(())
}

/// Drops from an updated Service what only its old type had, when the client sent it
/// back unchanged (upstream's dropTypeDependentFields): the ClusterIP and IP families
/// of a Service that becomes an ExternalName, the NodePorts of one that no longer
/// needs them, and an unneeded healthCheckNodePort. Runs before validation.
pub fn drop_type_dependent_fields(service: &mut Value, old: &Value) {
    let becomes_external =
        service_type(service) == "ExternalName" && service_type(old) != "ExternalName";
    let drops_node_ports = wants_node_ports(old) && !wants_node_ports(service);
    let drops_health_check = wants_health_check_port(old) && !wants_health_check_port(service);
    let Some(spec) = service["spec"].as_object_mut() else {
        return;
    };
    if becomes_external {
        for field in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            let unchanged = spec.get(field) == old["spec"].get(field);
            if unchanged || spec.get(field) == Some(&json!("")) {
                spec.remove(field);
            }
        }
    }
    if drops_node_ports {
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let was = old["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|o| o["nodePort"] == port["nodePort"]);
            if was && let Some(port) = port.as_object_mut() {
                port.remove("nodePort");
            }
        }
    }
    if drops_health_check
        && spec.get("healthCheckNodePort") == old["spec"].get("healthCheckNodePort")
    {
        spec.remove("healthCheckNodePort");
    }
}

/// What a Service write claimed, to release if the write does not happen.
#[derive(Debug, Default)]
pub struct Claimed {
    keys: Vec<String>,
    /// A dry run only checks what is free (in the watch cache) and stores nothing.
    dry_run: bool,
}

impl Api {
    /// Fills in and claims the ClusterIP and NodePorts `service` needs, keeping those
    /// `old` (the stored version, on update) already holds. A requested value that is
    /// taken or out of range is a 422 and nothing stays claimed.
    pub(crate) async fn allocate_service(
        &self,
        service: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<Claimed> {
        self.allocate(service, old, false).await
    }

    /// What [`Api::allocate_service`] would fill in and refuse, claiming nothing
    /// (for dry-run requests, as upstream's dry-run allocator).
    pub(crate) async fn allocate_service_dry_run(
        &self,
        service: &mut Value,
        old: Option<&Value>,
    ) -> ApiResult<()> {
        self.allocate(service, old, true).await.map(|_| ())
    }

    async fn allocate(
        &self,
        service: &mut Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> ApiResult<Claimed> {
        let mut claimed = Claimed {
            keys: Vec::new(),
            dry_run,
        };
        match self.claim_service_values(service, old, &mut claimed).await {
            Ok(()) => Ok(claimed),
            Err(error) => {
                self.release_claimed(claimed).await;
                Err(error)
            }
        }
    }

    async fn claim_service_values(
        &self,
        service: &mut Value,
        old: Option<&Value>,
        claimed: &mut Claimed,
    ) -> ApiResult<()> {
        check_ip_families(service)?;
        let ranges = self.service_ranges;
        let already = old.map(held).unwrap_or_default();
        let owner = (
            service["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            service["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );

        // A ClusterIP stays what it was, unless the Service becomes an ExternalName.
        if let Some(old_ip) = old
            .filter(|old| wants_cluster_ip(old))
            .and_then(|old| old["spec"]["clusterIP"].as_str())
            .filter(|ip| !ip.is_empty())
            && service_type(service) != "ExternalName"
        {
            let requested = service["spec"]["clusterIP"].as_str().unwrap_or("");
            if !requested.is_empty() && requested != old_ip {
                return Err(invalid(
                    service,
                    "spec.clusterIPs[0]",
                    &json!([requested]),
                    "may not change once set",
                ));
            }
        }
        if wants_cluster_ip(service) {
            let requested = service["spec"]["clusterIP"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let kept = old
                .filter(|old| wants_cluster_ip(old))
                .and_then(|old| old["spec"]["clusterIP"].as_str())
                .filter(|ip| !ip.is_empty() && *ip != "None")
                .map(str::to_string);
            let ip = match (requested.as_str(), kept) {
                ("", Some(kept)) => kept,
                ("", None) => self.claim_free_ip(&owner, claimed).await?.to_string(),
                (requested, _) => {
                    let failed = |why: String| {
                        invalid(
                            service,
                            "spec.clusterIPs",
                            &json!([requested]),
                            &format!("failed to allocate IP {requested}: {why}"),
                        )
                    };
                    let address: Ipv4Addr = match requested.parse::<IpAddr>() {
                        Ok(IpAddr::V4(address)) => address,
                        _ => return Err(failed("not a valid IPv4 address".into())),
                    };
                    if !ranges.cluster_ips.contains(address) {
                        return Err(failed(format!(
                            "the provided IP ({address}) is not in the valid range. The range of valid IPs is {}",
                            ranges.cluster_ips
                        )));
                    }
                    let claim = Claim::Ip(address);
                    if !already.contains(&claim) && !self.claim(&claim, &owner, claimed).await? {
                        return Err(failed("provided IP is already allocated".into()));
                    }
                    requested.to_string()
                }
            };
            service["spec"]["clusterIP"] = json!(ip);
            service["spec"]["clusterIPs"] = json!([ip]);
        }

        let old_ports: Vec<Value> = old
            .filter(|old| wants_node_ports(old))
            .and_then(|old| old["spec"]["ports"].as_array().cloned())
            .unwrap_or_default();
        if wants_node_ports(service) {
            let count = service["spec"]["ports"].as_array().map_or(0, Vec::len);
            // Ports of this Service already settled in this write: two ports of one
            // Service (TCP and UDP of one number) may share a NodePort.
            let mut settled: BTreeSet<u16> = BTreeSet::new();
            for index in 0..count {
                let port = &service["spec"]["ports"][index];
                let mut node_port = port["nodePort"].as_i64().unwrap_or(0);
                if node_port == 0 {
                    // Upstream keeps the NodePort of the same port across updates.
                    node_port = old_ports
                        .iter()
                        .find(|o| o["port"] == port["port"] && o["protocol"] == port["protocol"])
                        .and_then(|o| o["nodePort"].as_i64())
                        .unwrap_or(0);
                }
                let field = format!("spec.ports[{index}].nodePort");
                let node_port = if node_port == 0 {
                    self.claim_free_port(&owner, claimed).await?
                } else {
                    self.claim_requested_port(
                        service, &field, node_port, &already, &settled, &owner, claimed,
                    )
                    .await?
                };
                settled.insert(node_port);
                service["spec"]["ports"][index]["nodePort"] = json!(node_port);
            }
        }

        if wants_health_check_port(service) {
            let requested = service["spec"]["healthCheckNodePort"]
                .as_i64()
                .filter(|p| *p > 0)
                .or_else(|| {
                    old.and_then(|old| old["spec"]["healthCheckNodePort"].as_i64())
                        .filter(|p| *p > 0)
                });
            let port = match requested {
                None => self.claim_free_port(&owner, claimed).await?,
                Some(port) => {
                    self.claim_requested_port(
                        service,
                        "spec.healthCheckNodePort",
                        port,
                        &already,
                        &BTreeSet::new(),
                        &owner,
                        claimed,
                    )
                    .await?
                }
            };
            service["spec"]["healthCheckNodePort"] = json!(port);
        } else if let Some(spec) = service["spec"].as_object_mut() {
            spec.remove("healthCheckNodePort");
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn claim_requested_port(
        &self,
        service: &Value,
        field: &str,
        port: i64,
        already: &BTreeSet<Claim>,
        settled: &BTreeSet<u16>,
        owner: &(String, String),
        claimed: &mut Claimed,
    ) -> ApiResult<u16> {
        let range = self.service_ranges.node_ports;
        if !range.contains(port) {
            return Err(invalid(
                service,
                field,
                &json!(port),
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {range}"
                ),
            ));
        }
        let port = port as u16;
        let claim = Claim::Port(port);
        if settled.contains(&port)
            || already.contains(&claim)
            || self.claim(&claim, owner, claimed).await?
        {
            Ok(port)
        } else {
            Err(invalid(
                service,
                field,
                &json!(port),
                "provided port is already allocated",
            ))
        }
    }

    /// Claims a free address of the range, starting the search at a random one.
    async fn claim_free_ip(
        &self,
        owner: &(String, String),
        claimed: &mut Claimed,
    ) -> ApiResult<Ipv4Addr> {
        let (first, last) = self.service_ranges.cluster_ips.usable();
        let (first, last) = (u32::from(first), u32::from(last));
        let taken = self.cached_names(&ip_address_resource().key_prefix());
        let reserved = self.service_ranges.kubernetes_service_ip();
        let candidates = (first..=last)
            .map(Ipv4Addr::from)
            .filter(|ip| *ip != reserved && !taken.contains(&ip.to_string()));
        let found = self
            .claim_first(
                candidates,
                u64::from(last - first) + 1,
                Claim::Ip,
                owner,
                claimed,
            )
            .await?;
        found.ok_or_else(|| {
            ApiError::internal("failed to allocate a serviceIP: range is full".to_string())
        })
    }

    /// Claims a free NodePort, starting the search at a random one.
    async fn claim_free_port(
        &self,
        owner: &(String, String),
        claimed: &mut Claimed,
    ) -> ApiResult<u16> {
        let range = self.service_ranges.node_ports;
        let taken = self.cached_names(NODE_PORT_PREFIX);
        let candidates = (range.first..=range.last).filter(|p| !taken.contains(&p.to_string()));
        let found = self
            .claim_first(
                candidates,
                u64::from(range.len()),
                Claim::Port,
                owner,
                claimed,
            )
            .await?;
        found.ok_or_else(|| {
            ApiError::internal("failed to allocate a nodePort: range is full".to_string())
        })
    }

    /// Tries `candidates` from a random position on (wrapping around) until one can
    /// be claimed.
    async fn claim_first<T: Copy>(
        &self,
        candidates: impl Iterator<Item = T>,
        size: u64,
        claim_of: impl Fn(T) -> Claim,
        owner: &(String, String),
        claimed: &mut Claimed,
    ) -> ApiResult<Option<T>> {
        let candidates: Vec<T> = candidates.collect();
        if candidates.is_empty() || size == 0 {
            return Ok(None);
        }
        let start = rand::rng().random_range(0..candidates.len());
        for offset in 0..candidates.len() {
            let candidate = candidates[(start + offset) % candidates.len()];
            if self.claim(&claim_of(candidate), owner, claimed).await? {
                return Ok(Some(candidate));
            }
        }
        Ok(None)
    }

    /// Names of the cached objects under `prefix` (the last part of their keys).
    fn cached_names(&self, prefix: &str) -> BTreeSet<String> {
        self.cache
            .list(prefix, None)
            .objects
            .into_iter()
            .filter_map(|(key, _)| key.strip_prefix(prefix).map(str::to_string))
            .collect()
    }

    /// Creates the key of `claim`; false when it exists already (taken).
    async fn claim(
        &self,
        claim: &Claim,
        (namespace, name): &(String, String),
        claimed: &mut Claimed,
    ) -> ApiResult<bool> {
        let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
        let parent_ref =
            json!({"group": "", "resource": "services", "namespace": namespace, "name": name});
        let value = match claim {
            Claim::Ip(ip) => json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "IPAddress",
                "metadata": {
                    "name": ip.to_string(),
                    "uid": uuid::Uuid::new_v4().to_string(),
                    "creationTimestamp": now,
                    "labels": {IP_FAMILY_LABEL: "IPv4", MANAGED_BY_LABEL: MANAGED_BY},
                },
                "spec": {"parentRef": parent_ref},
            }),
            Claim::Port(port) => json!({
                "metadata": {"name": port.to_string(), "creationTimestamp": now},
                "spec": {"parentRef": parent_ref},
            }),
        };
        let key = claim.key();
        if claimed.dry_run {
            return Ok(self.cache.get(&key).is_none());
        }
        let bytes = bytes::Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        match self.store.create(&key, bytes).await {
            Ok(_) => {
                claimed.keys.push(key);
                Ok(true)
            }
            Err(krust_store::Error::AlreadyExists(_)) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Releases what a failed write claimed.
    pub(crate) async fn release_claimed(&self, claimed: Claimed) {
        for key in claimed.keys {
            self.release_key(&key).await;
        }
    }

    /// Releases the values `old` held that `new` (None: the Service is gone) does not.
    pub(crate) async fn release_service(&self, old: &Value, new: Option<&Value>) {
        let keep = new.map(held).unwrap_or_default();
        for claim in held(old).difference(&keep) {
            self.release_key(&claim.key()).await;
        }
    }

    async fn release_key(&self, key: &str) {
        match self.store.delete(key, None).await {
            Ok(_) | Err(krust_store::Error::NotFound(_)) => {}
            // Left for the repair loop.
            Err(error) => tracing::warn!(%error, key, "releasing a Service allocation failed"),
        }
    }

    /// Releases the claims whose Service is gone or no longer holds them.
    async fn repair_service_allocations(&self) {
        let services = resources::builtin()
            .iter()
            .find(|r| r.group.is_empty() && r.plural == "services")
            .expect("Service is a built-in resource");
        let ip_prefix = ip_address_resource().key_prefix();
        for prefix in [ip_prefix.as_str(), NODE_PORT_PREFIX] {
            for (key, cached) in self.cache.list(prefix, None).objects {
                let claim = cached.value();
                if prefix == ip_prefix
                    && claim["metadata"]["labels"][MANAGED_BY_LABEL] != MANAGED_BY
                {
                    continue;
                }
                let young = claim["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
                    .is_none_or(|at| Utc::now() - at.with_timezone(&Utc) < LEAK_GRACE);
                if young {
                    continue;
                }
                let parent = &claim["spec"]["parentRef"];
                let service_key = object_key(
                    services,
                    parent["namespace"].as_str(),
                    parent["name"].as_str().unwrap_or(""),
                );
                let owner_holds = self.cache.get(&service_key).is_some_and(|service| {
                    held(&service.value()).iter().any(|held| held.key() == key)
                });
                if !owner_holds {
                    tracing::info!(key, "releasing a leaked Service allocation");
                    if let Err(error) = self.store.delete(&key, Some(cached.revision)).await {
                        tracing::debug!(%error, key, "releasing a leaked allocation failed");
                    }
                }
            }
        }
    }
}

/// Looks for leaked claims every [`REPAIR_INTERVAL`], until the process ends.
pub async fn repair_periodically(api: Arc<Api>) {
    let mut ticker = tokio::time::interval(REPAIR_INTERVAL);
    loop {
        ticker.tick().await;
        if api.cache.sync().await.is_ok() {
            api.repair_service_allocations().await;
        }
    }
}

/// Creates the `kubernetes` Service in `default` at the first address of the
/// ClusterIP range, with Endpoints and an EndpointSlice of this server when there are
/// none yet (from then on the servers' endpoint reconciler keeps them).
pub async fn ensure_kubernetes_service(
    api: &Api,
    address: IpAddr,
    port: u16,
    user: crate::auth::User,
) -> anyhow::Result<()> {
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": api.service_ranges.kubernetes_service_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
            "sessionAffinity": "None",
        },
    });
    let family = if address.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": address.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": family,
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    for (group, plural, object) in [
        ("", "services", service),
        ("", "endpoints", endpoints),
        ("discovery.k8s.io", "endpointslices", slice),
    ] {
        let resource = resources::builtin()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .expect("built-in resource");
        let call = Call {
            resource,
            namespace: Some("default".into()),
            name: None,
            subresource: None,
            query: Default::default(),
            accept: String::new(),
            content_type: String::new(),
            user: user.clone(),
            field_manager: "krust-apiserver".to_string(),
        };
        let key = object_key(resource, Some("default"), "kubernetes");
        // Existing ones are kept as they are: the servers' endpoint reconciler
        // (krust's apiserver_endpoints) lists every live server in them.
        if api.store.get(&key).await?.is_some() {
            continue;
        }
        match api.create_object(&call, object, Tracking::Update).await {
            // Another server created it first.
            Ok(_) => {}
            Err(error) if error.code == 409 => {}
            Err(error) => anyhow::bail!("creating the kubernetes {plural}: {}", error.message),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API over the in-memory store with a tiny ClusterIP range.
    async fn api(range: &str) -> Arc<Api> {
        let store: Arc<dyn krust_store::Store> = Arc::new(krust_store::memory::MemoryStore::new());
        let cache = crate::cache::WatchCache::start(store.clone())
            .await
            .unwrap();
        let ranges = ServiceRanges {
            cluster_ips: range.parse().unwrap(),
            node_ports: "30000-30009".parse().unwrap(),
        };
        Arc::new(Api::new(
            store,
            cache,
            "127.0.0.1:6443".into(),
            Arc::new(crate::auth::TokenAuthenticator::new(&[])),
            ranges,
        ))
    }

    fn node_port_service(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "ns"},
               "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    }

    async fn stored_keys(api: &Api, prefix: &str) -> usize {
        api.store
            .list(prefix, Default::default())
            .await
            .unwrap()
            .kvs
            .len()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_allocations_never_share_and_failures_release_their_claims() {
        // Ten NodePorts for twelve Services: ten get distinct values, two are refused
        // and keep nothing.
        let api = api("10.0.0.0/24").await;
        let allocations = (0..12).map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut service = node_port_service(&format!("s{i}"));
                api.allocate_service(&mut service, None)
                    .await
                    .map(|_| service)
            })
        });
        let results: Vec<ApiResult<Value>> = futures::future::join_all(allocations)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let allocated: Vec<&Value> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(allocated.len(), 10);
        for refused in results.iter().filter_map(|r| r.as_ref().err()) {
            assert!(
                refused.message.contains("range is full"),
                "{}",
                refused.message
            );
        }
        let ips: BTreeSet<&str> = allocated
            .iter()
            .map(|s| s["spec"]["clusterIP"].as_str().unwrap())
            .collect();
        let ports: BTreeSet<u64> = allocated
            .iter()
            .map(|s| s["spec"]["ports"][0]["nodePort"].as_u64().unwrap())
            .collect();
        assert_eq!((ips.len(), ports.len()), (10, 10));
        assert!(
            !ips.contains("10.0.0.1"),
            "the kubernetes Service's address"
        );
        assert_eq!(
            stored_keys(&api, &ip_address_resource().key_prefix()).await,
            10
        );
        assert_eq!(stored_keys(&api, NODE_PORT_PREFIX).await, 10);
    }

    #[tokio::test]
    async fn repair_releases_only_old_claims_of_services_that_do_not_hold_them() {
        let api = api("10.0.0.0/24").await;
        let claim = |port: u16, age_seconds: i64| {
            let at = Utc::now() - chrono::Duration::seconds(age_seconds);
            json!({"metadata": {"name": port.to_string(),
                                "creationTimestamp": at.to_rfc3339_opts(SecondsFormat::Secs, true)},
                   "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "ns", "name": "gone"}}})
        };
        for (port, age) in [(30001, 120), (30002, 1)] {
            let value = bytes::Bytes::from(serde_json::to_vec(&claim(port, age)).unwrap());
            api.store
                .create(&Claim::Port(port).key(), value)
                .await
                .unwrap();
        }
        api.cache.sync().await.unwrap();
        api.repair_service_allocations().await;
        assert!(
            api.store
                .get(&Claim::Port(30001).key())
                .await
                .unwrap()
                .is_none(),
            "leaked and old: released"
        );
        assert!(
            api.store
                .get(&Claim::Port(30002).key())
                .await
                .unwrap()
                .is_some(),
            "young: its Service may be on its way"
        );
    }

    #[test]
    fn held_values_follow_the_service_type() {
        let service = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 81, "nodePort": 30081}]}});
        assert_eq!(
            held(&service),
            BTreeSet::from([
                Claim::Ip("10.43.0.9".parse().unwrap()),
                Claim::Port(30080),
                Claim::Port(30081)
            ])
        );
        let headless = json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}});
        assert!(held(&headless).is_empty());
        assert!(!wants_cluster_ip(
            &json!({"spec": {"type": "ExternalName"}})
        ));
        assert!(wants_node_ports(&json!({"spec": {"type": "LoadBalancer"}})));
        assert!(!wants_node_ports(
            &json!({"spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}})
        ));
    }

    #[test]
    fn claims_have_one_key_each() {
        assert_eq!(
            Claim::Ip("10.43.0.1".parse().unwrap()).key(),
            "/registry/networking.k8s.io/ipaddresses/10.43.0.1"
        );
        assert_eq!(
            Claim::Port(30000).key(),
            "/registry/ranges/servicenodeports/30000"
        );
        assert_eq!(
            ServiceRanges::default().kubernetes_service_ip().to_string(),
            "10.43.0.1"
        );
    }
}
