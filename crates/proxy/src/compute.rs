//! The pure part of the proxy: from Services and EndpointSlices to the model both
//! modes share ([`service_ports`]: each Service port with its entry points and usable
//! endpoints), and from that to the desired nftables [`Ruleset`] ([`compute`]),
//! following the chain layout of upstream kube-proxy's nftables mode (the iptables
//! mode renders the same model in [`crate::iptables`]).
//!
//! Traffic enters at the `services` chain through two verdict maps: `service-ips`
//! (ClusterIP and LoadBalancer ingress address . protocol . port) and
//! `service-nodeports` (protocol . node port, on any local address, 127.0.0.1 too,
//! or only on the local addresses in `--nodeport-addresses`).
//! A ClusterIP goes to the port's `svc-` chain, a node port or LoadBalancer address
//! to its `ext-` chain; both end in a policy chain (`cluster-` with every usable
//! endpoint, `local-` with this node's) that DNATs to an endpoint picked by
//! `numgen random` from an inline map. Under ClientIP affinity the policy chain
//! instead jumps to the endpoint's `endpoint-` chain (the client's remembered one, or
//! a random one), which remembers the client and DNATs. Unlike upstream, endpoints
//! without affinity get no chain of their own: an endpoint change is then one rule
//! and a few set elements, and the table stays small enough for `nft` to fetch
//! quickly (see BENCHMARKS.md). Packets to masquerade are marked (0x4000) and
//! masqueraded in postrouting; hairpin traffic is found there by the `hairpin` set.
//! A Service port without endpoints is in `no-endpoint-services` /
//! `no-endpoint-nodeports`, checked by filter chains, and answers reject (drop when a
//! Local traffic policy has no local endpoint).
//! A LoadBalancer Service with `loadBalancerSourceRanges` has its ingress addresses in
//! the `firewall-ips` map, checked before DNAT (`firewall-check`, from the
//! `filter-prerouting-pre-dnat` and `filter-output-pre-dnat` base chains): its
//! `firewall-` chain drops new connections from any other source. Node ports are not
//! subject to the ranges, as upstream.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use krust_api::cidr::Ipv4Cidr;

use crate::ruleset::{Chain, Collection, CollectionKind, Ruleset};

/// The mark a packet gets when it must be masqueraded (as upstream's).
pub const MASQUERADE_MARK: &str = "0x4000";

/// The set of `endpoint . endpoint` address pairs: a packet from an endpoint DNATed
/// back to itself (hairpin) is masqueraded.
pub const HAIRPIN_SET: &str = "hairpin";

/// Where the proxy runs: what the rules depend on besides the API objects.
#[derive(Clone, Debug)]
pub struct NodeContext {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// The pod network; traffic from outside it to a ClusterIP is masqueraded.
    pub cluster_cidr: Option<Ipv4Cidr>,
    /// This node's address: when a Service's `loadBalancerSourceRanges` admit it, its
    /// LoadBalancer addresses are admitted as sources too (traffic from the node to
    /// such an address may come from that address), as upstream.
    pub node_ip: Option<Ipv4Addr>,
    /// The ranges whose local addresses answer node ports (`--nodeport-addresses`);
    /// empty: every local address.
    pub node_port_cidrs: Vec<Ipv4Cidr>,
}

impl NodeContext {
    /// The nftables match of a packet to a node port's address: a local address, in
    /// `node_port_cidrs` when there are any.
    pub fn node_port_destination(&self) -> String {
        if self.node_port_cidrs.is_empty() {
            return "fib daddr type local".into();
        }
        let ranges: Vec<String> = self.node_port_cidrs.iter().map(|c| c.to_string()).collect();
        format!("fib daddr type local ip daddr {{ {} }}", ranges.join(", "))
    }
}

/// The namespace and name of a Service.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName {
    pub namespace: String,
    pub name: String,
}

/// One endpoint of a Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: String,
    pub port: i32,
    /// On this node (`nodeName` is this node's).
    pub local: bool,
    pub ready: bool,
    pub serving_terminating: bool,
}

/// One port of one Service as the proxy programs it, whatever the backend: where
/// traffic enters (ClusterIP, node port, LoadBalancer addresses) and the endpoints
/// that may serve it. Both the nftables and the iptables rules are rendered from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The Service this port is of.
    pub service: ServiceName,
    /// `namespace/name/protocol/port` (the port's name, or its number when unnamed):
    /// unique per Service port; chain names derive from it.
    pub key: String,
    /// `namespace/name:port` (`namespace/name` for an unnamed port) for comments and
    /// logs, as upstream names a Service port.
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    pub cluster_ip: String,
    pub port: i32,
    /// Set for NodePort and LoadBalancer Services.
    pub node_port: Option<i32>,
    /// The IPv4 ingress addresses of a LoadBalancer Service.
    pub ingress_ips: Vec<String>,
    /// The sources that may reach the ingress addresses when the Service has
    /// `loadBalancerSourceRanges` (its IPv4 ranges, and the ingress addresses when a
    /// range holds the node's address; none left: no source may); `None` when every
    /// source may.
    pub allowed_sources: Option<Vec<Ipv4Cidr>>,
    /// The `healthCheckNodePort` of a LoadBalancer Service with externalTrafficPolicy
    /// Local: where this node tells load balancers whether it has local endpoints.
    pub health_check_node_port: Option<u16>,
    /// ClientIP session affinity and its timeout in seconds.
    pub affinity_timeout: Option<i32>,
    /// internalTrafficPolicy Local: the ClusterIP uses only this node's endpoints.
    pub internal_local: bool,
    /// externalTrafficPolicy Local: outside clients use only this node's endpoints.
    pub external_local: bool,
    /// Every usable endpoint.
    pub cluster: Vec<Endpoint>,
    /// The usable endpoints on this node.
    pub local: Vec<Endpoint>,
}

impl ServicePort {
    /// The endpoints that serve the ClusterIP.
    pub fn internal(&self) -> &[Endpoint] {
        if self.internal_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// The endpoints that serve outside clients (node port, LoadBalancer addresses).
    pub fn external(&self) -> &[Endpoint] {
        if self.external_local {
            &self.local
        } else {
            &self.cluster
        }
    }

    /// Whether the port has a node port or LoadBalancer addresses.
    pub fn is_external(&self) -> bool {
        self.node_port.is_some() || !self.ingress_ips.is_empty()
    }

    /// Whether a chain for this node's endpoints is needed (a Local policy with some).
    pub fn uses_local_chain(&self) -> bool {
        (self.internal_local || self.external_local) && !self.local.is_empty()
    }

    /// Whether traffic to the LoadBalancer addresses is checked against
    /// `loadBalancerSourceRanges`.
    pub fn uses_firewall(&self) -> bool {
        self.allowed_sources.is_some() && !self.ingress_ips.is_empty()
    }
}

/// The source ranges a LoadBalancer Service names: `spec.loadBalancerSourceRanges`, or
/// when that is empty the older comma-separated annotation, which the built-in load
/// balancer honours as k3s's does (upstream's kube-proxy reads the field alone; cloud
/// load balancers read both, in this order).
fn source_ranges(service: &Service) -> Vec<String> {
    let field = service
        .spec
        .as_ref()
        .and_then(|spec| spec.load_balancer_source_ranges.clone())
        .unwrap_or_default();
    if !field.is_empty() {
        return field;
    }
    service
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| {
            annotations.get(krust_api::validation::LOAD_BALANCER_SOURCE_RANGES_ANNOTATION)
        })
        .map(|ranges| {
            ranges
                .split(',')
                .map(str::trim)
                .filter(|range| !range.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The sources a LoadBalancer Service admits to its ingress addresses `ingress_ips`
/// (see [`ServicePort::allowed_sources`]). Ranges are trimmed (upstream accepts
/// surrounding spaces); IPv6 and unparsable ones are left out (the API server refuses
/// unparsable ones). Ranges inside another are left out, so the list can be an nftables
/// set without overlapping intervals.
fn allowed_sources(
    ranges: &[String],
    ingress_ips: &[String],
    node_ip: Option<Ipv4Addr>,
) -> Option<Vec<Ipv4Cidr>> {
    if ranges.is_empty() {
        return None;
    }
    let mut sources: Vec<Ipv4Cidr> = ranges
        .iter()
        .filter_map(|range| range.trim().parse().ok())
        .collect();
    if node_ip.is_some_and(|ip| sources.iter().any(|range| range.contains(ip))) {
        sources.extend(
            ingress_ips
                .iter()
                .filter_map(|ip| ip.parse::<Ipv4Addr>().ok())
                .map(|ip| Ipv4Cidr::new(ip, 32)),
        );
    }
    sources.sort();
    sources.dedup();
    let covered = |range: &Ipv4Cidr, sources: &[Ipv4Cidr]| {
        sources.iter().any(|other| {
            other != range && other.prefix() <= range.prefix() && other.contains(range.network())
        })
    };
    let minimal: Vec<Ipv4Cidr> = sources
        .iter()
        .filter(|range| !covered(range, &sources))
        .copied()
        .collect();
    Some(minimal)
}

/// Every programmable Service port of these Services with its endpoints, in the order
/// of `services`: headless, ExternalName and IPv6 Services are left out.
pub fn service_ports(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &NodeContext,
) -> Vec<ServicePort> {
    let mut slices_by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
        let Some(service) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
        else {
            continue;
        };
        if slice.address_type != "IPv4" {
            continue;
        }
        slices_by_service
            .entry((namespace, service.as_str()))
            .or_default()
            .push(slice);
    }
    let mut ports = Vec::new();
    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let slices = slices_by_service
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        add_service_ports(&mut ports, namespace, name, service, slices, node);
    }
    ports
}

/// The whole ruleset for these Services and EndpointSlices on this node.
pub fn compute(services: &[Service], slices: &[EndpointSlice], node: &NodeContext) -> Ruleset {
    ruleset(&service_ports(services, slices, node), node)
}

/// The whole nftables ruleset for these Service ports on this node.
pub fn ruleset(ports: &[ServicePort], node: &NodeContext) -> Ruleset {
    let mut set = base_ruleset(node);
    for port in ports {
        add_port(&mut set, port, node);
    }
    set
}

/// The fixed part: base chains hooked into netfilter, masquerading, the maps.
fn base_ruleset(node: &NodeContext) -> Ruleset {
    let mut set = Ruleset::default();
    let base = [
        (
            "nat-prerouting",
            "type nat hook prerouting priority dstnat;",
            "jump services",
        ),
        (
            "nat-output",
            "type nat hook output priority -100;",
            "jump services",
        ),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat;",
            "jump masquerading",
        ),
        (
            "filter-forward",
            "type filter hook forward priority -110;",
            "ct state new jump service-endpoints-check",
        ),
        (
            "filter-output",
            "type filter hook output priority -110;",
            "ct state new jump service-endpoints-check",
        ),
    ];
    for (name, declaration, rule) in base {
        set.chains.insert(
            name.into(),
            Chain {
                declaration: declaration.into(),
                rules: vec![rule.into()],
            },
        );
    }
    // Before DNAT, so that the LoadBalancer address is still the destination.
    for (name, hook) in [
        ("filter-prerouting-pre-dnat", "prerouting"),
        ("filter-output-pre-dnat", "output"),
    ] {
        set.chains.insert(
            name.into(),
            Chain {
                declaration: format!("type filter hook {hook} priority -110;"),
                rules: vec!["ct state new jump firewall-check".into()],
            },
        );
    }
    set.chains.insert(
        "filter-input".into(),
        Chain {
            declaration: "type filter hook input priority -110;".into(),
            rules: vec![
                "ct state new jump nodeport-endpoints-check".into(),
                "ct state new jump service-endpoints-check".into(),
            ],
        },
    );
    let triple = "type ipv4_addr . inet_proto . inet_service : verdict;";
    let pair = "type inet_proto . inet_service : verdict;";
    for (name, declaration) in [
        ("service-ips", triple),
        ("service-nodeports", pair),
        ("no-endpoint-services", triple),
        ("no-endpoint-nodeports", pair),
        ("firewall-ips", triple),
    ] {
        set.collections.insert(
            name.into(),
            Collection {
                kind: CollectionKind::Map,
                declaration: declaration.into(),
                elements: BTreeMap::new(),
            },
        );
    }
    set.rule(
        "services",
        "ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    let node_port_destination = node.node_port_destination();
    set.rule(
        "services",
        format!("{node_port_destination} meta l4proto . th dport vmap @service-nodeports"),
    );
    set.rule(
        "service-endpoints-check",
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
    );
    set.rule(
        "firewall-check",
        "ip daddr . meta l4proto . th dport vmap @firewall-ips",
    );
    set.rule(
        "nodeport-endpoints-check",
        format!("{node_port_destination} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    );
    // TCP gets a reset (the ICMP error plain `reject` sends for a forwarded
    // packet did not reach the pod's socket); everything else the ICMP error.
    set.rule("reject-chain", "meta l4proto tcp reject with tcp reset");
    set.rule("reject-chain", "reject");
    set.rule(
        "mark-for-masquerade",
        format!("meta mark set meta mark | {MASQUERADE_MARK}"),
    );
    set.collections.insert(
        HAIRPIN_SET.into(),
        Collection {
            kind: CollectionKind::Set,
            declaration: "type ipv4_addr . ipv4_addr;".into(),
            elements: BTreeMap::new(),
        },
    );
    // Hairpin: a pod DNATed to itself is masqueraded, or it would answer itself
    // from its own address and drop the reply.
    set.rule(
        "masquerading",
        format!("ct status dnat ip saddr . ip daddr @{HAIRPIN_SET} meta mark set meta mark | {MASQUERADE_MARK}"),
    );
    set.rule(
        "masquerading",
        format!("meta mark & {MASQUERADE_MARK} == 0 return"),
    );
    set.rule(
        "masquerading",
        format!("meta mark set meta mark ^ {MASQUERADE_MARK}"),
    );
    set.rule("masquerading", "masquerade fully-random");
    set
}

fn add_service_ports(
    ports: &mut Vec<ServicePort>,
    namespace: &str,
    name: &str,
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) {
    let Some(spec) = &service.spec else { return };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return;
    }
    let Some(cluster_ip) = spec.cluster_ip.as_deref() else {
        return;
    };
    if cluster_ip == "None" || cluster_ip.is_empty() || cluster_ip.contains(':') {
        return; // headless (or IPv6, not programmed yet)
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(10800)
    });
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local")
        && matches!(kind, "NodePort" | "LoadBalancer");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let ingress_ips: Vec<String> = if kind == "LoadBalancer" {
        service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.clone())
            .filter(|ip| !ip.contains(':'))
            .collect()
    } else {
        Vec::new()
    };
    let allowed_sources = allowed_sources(&source_ranges(service), &ingress_ips, node.node_ip)
        .filter(|_| kind == "LoadBalancer");
    let health_check_node_port = spec
        .health_check_node_port
        .filter(|_| kind == "LoadBalancer" && external_local)
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port > 0);

    for port in spec.ports.iter().flatten() {
        let protocol = port
            .protocol
            .as_deref()
            .unwrap_or("TCP")
            .to_ascii_lowercase();
        if !matches!(protocol.as_str(), "tcp" | "udp" | "sctp") {
            continue;
        }
        let port_name = port.name.clone().unwrap_or_default();
        let key = format!(
            "{namespace}/{name}/{protocol}/{}",
            if port_name.is_empty() {
                port.port.to_string()
            } else {
                port_name.clone()
            }
        );
        let endpoints = endpoints_for(slices, &port_name, &protocol, &node.node_name);
        let cluster = usable(endpoints.iter());
        let local = usable(endpoints.iter().filter(|e| e.local));
        let node_port = port
            .node_port
            .filter(|_| matches!(kind, "NodePort" | "LoadBalancer"));
        ports.push(ServicePort {
            service: ServiceName {
                namespace: namespace.to_string(),
                name: name.to_string(),
            },
            key,
            name: if port_name.is_empty() {
                format!("{namespace}/{name}")
            } else {
                format!("{namespace}/{name}:{port_name}")
            },
            protocol,
            cluster_ip: cluster_ip.to_string(),
            port: port.port,
            node_port,
            ingress_ips: ingress_ips.clone(),
            allowed_sources: allowed_sources.clone(),
            health_check_node_port,
            affinity_timeout,
            internal_local,
            external_local,
            cluster,
            local,
        });
    }
}

/// The nftables rules and map entries of one Service port.
fn add_port(set: &mut Ruleset, port: &ServicePort, node: &NodeContext) {
    let ServicePort {
        key,
        protocol,
        cluster,
        local,
        ..
    } = port;
    let cluster_chain = format!("cluster-{key}");
    let local_chain = format!("local-{key}");
    if !cluster.is_empty() {
        add_policy_chain(
            set,
            &cluster_chain,
            key,
            cluster,
            protocol,
            port.affinity_timeout,
        );
    }
    if port.uses_local_chain() {
        add_policy_chain(
            set,
            &local_chain,
            key,
            local,
            protocol,
            port.affinity_timeout,
        );
    }

    // ClusterIP.
    let internal_chain = if port.internal_local {
        &local_chain
    } else {
        &cluster_chain
    };
    let cluster_ip_key = format!("{} . {protocol} . {}", port.cluster_ip, port.port);
    if port.internal().is_empty() {
        let verdict = if port.internal_local {
            "drop"
        } else {
            "goto reject-chain"
        };
        set.map_element("no-endpoint-services", cluster_ip_key, verdict.into());
    } else {
        let chain = format!("svc-{key}");
        if let Some(cidr) = node.cluster_cidr {
            set.rule(
                &chain,
                format!("ip saddr != {cidr} jump mark-for-masquerade"),
            );
        } else {
            set.rule(&chain, "jump mark-for-masquerade");
        }
        set.rule(&chain, format!("goto {internal_chain}"));
        set.map_element("service-ips", cluster_ip_key, format!("goto {chain}"));
    }

    // Node port and LoadBalancer addresses: the external entry points.
    if !port.is_external() {
        return;
    }
    let ext_chain = format!("ext-{key}");
    if !cluster.is_empty() {
        if port.external_local {
            // Pods and the node itself are served by every endpoint (as upstream);
            // the node's own traffic is masqueraded, outside clients keep their IP.
            if let Some(cidr) = node.cluster_cidr {
                set.rule(&ext_chain, format!("ip saddr {cidr} goto {cluster_chain}"));
            }
            set.rule(&ext_chain, "fib saddr type local jump mark-for-masquerade");
            set.rule(
                &ext_chain,
                format!("fib saddr type local goto {cluster_chain}"),
            );
            if !local.is_empty() {
                set.rule(&ext_chain, format!("goto {local_chain}"));
            }
        } else {
            set.rule(&ext_chain, "jump mark-for-masquerade");
            set.rule(&ext_chain, format!("goto {cluster_chain}"));
        }
    }
    let missing_verdict = if port.external_local {
        "drop"
    } else {
        "goto reject-chain"
    };
    let mut entry = |map_with: &str, map_without: &str, element: String| {
        if !cluster.is_empty() {
            set.map_element(map_with, element.clone(), format!("goto {ext_chain}"));
        }
        if port.external().is_empty() {
            set.map_element(map_without, element, missing_verdict.into());
        }
    };
    if let Some(node_port) = port.node_port {
        entry(
            "service-nodeports",
            "no-endpoint-nodeports",
            format!("{protocol} . {node_port}"),
        );
    }
    for ip in &port.ingress_ips {
        entry(
            "service-ips",
            "no-endpoint-services",
            format!("{ip} . {protocol} . {}", port.port),
        );
    }
    add_firewall(set, port);
}

/// The `firewall-` chain of a LoadBalancer Service port with source ranges, and its
/// ingress addresses in `firewall-ips`: new connections from other sources are
/// dropped before DNAT.
fn add_firewall(set: &mut Ruleset, port: &ServicePort) {
    let Some(sources) = port
        .allowed_sources
        .as_ref()
        .filter(|_| port.uses_firewall())
    else {
        return;
    };
    let chain = format!("firewall-{}", port.key);
    let rule = if sources.is_empty() {
        "drop".to_string()
    } else {
        let sources: Vec<String> = sources.iter().map(Ipv4Cidr::to_string).collect();
        format!("ip saddr != {{ {} }} drop", sources.join(", "))
    };
    set.rule(&chain, rule);
    for ip in &port.ingress_ips {
        set.map_element(
            "firewall-ips",
            format!("{ip} . {} . {}", port.protocol, port.port),
            format!("goto {chain}"),
        );
    }
}

/// A policy chain choosing among `endpoints`. Without session affinity it is one
/// rule that DNATs to an endpoint picked by `numgen random` from an inline map, so an
/// endpoint costs a map entry, not a chain (the kernel's chain list is what every
/// `nft` run fetches and what a ruleset change validates). With ClientIP affinity each
/// endpoint gets its own `endpoint-` chain, which remembers the client in a set.
/// Every endpoint goes in the `hairpin` set (a pod reaching itself is masqueraded).
fn add_policy_chain(
    set: &mut Ruleset,
    chain: &str,
    key: &str,
    endpoints: &[Endpoint],
    protocol: &str,
    affinity_timeout: Option<i32>,
) {
    for endpoint in endpoints {
        set.set_element(HAIRPIN_SET, format!("{0} . {0}", endpoint.ip));
    }
    let Some(timeout) = affinity_timeout else {
        let choices: Vec<String> = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| format!("{index} : {} . {}", endpoint.ip, endpoint.port))
            .collect();
        set.rule(
            chain,
            format!(
                "meta l4proto {protocol} dnat ip addr . port to numgen random mod {} map {{ {} }}",
                endpoints.len(),
                choices.join(", ")
            ),
        );
        return;
    };
    let mut choices = Vec::new();
    for (index, endpoint) in endpoints.iter().enumerate() {
        let endpoint_chain = format!("endpoint-{key}__{}/{}", endpoint.ip, endpoint.port);
        let affinity = affinity_set(key, endpoint, timeout);
        if !set.chains.contains_key(&endpoint_chain) {
            set.collections.insert(
                affinity.clone(),
                Collection {
                    kind: CollectionKind::DynamicSet,
                    declaration: format!(
                        "type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;"
                    ),
                    elements: BTreeMap::new(),
                },
            );
            set.rule(
                &endpoint_chain,
                format!("update @{affinity} {{ ip saddr }}"),
            );
            set.rule(
                &endpoint_chain,
                format!(
                    "meta l4proto {protocol} dnat to {}:{}",
                    endpoint.ip, endpoint.port
                ),
            );
        }
        set.rule(chain, format!("ip saddr @{affinity} goto {endpoint_chain}"));
        choices.push(format!("{index} : goto {endpoint_chain}"));
    }
    set.rule(
        chain,
        format!(
            "numgen random mod {} vmap {{ {} }}",
            endpoints.len(),
            choices.join(", ")
        ),
    );
}

/// The set remembering which clients went to `endpoint` (its name carries the
/// timeout, so a changed timeout makes a new set).
fn affinity_set(key: &str, endpoint: &Endpoint, timeout: i32) -> String {
    format!(
        "affinity-{timeout}-{key}__{}/{}",
        endpoint.ip, endpoint.port
    )
}

/// The endpoints traffic may go to, as upstream: the ready ones, or when none is
/// ready, the serving terminating ones.
fn usable<'a>(endpoints: impl Iterator<Item = &'a Endpoint> + Clone) -> Vec<Endpoint> {
    let ready: Vec<Endpoint> = endpoints.clone().filter(|e| e.ready).cloned().collect();
    if !ready.is_empty() {
        return ready;
    }
    endpoints
        .filter(|e| e.serving_terminating)
        .cloned()
        .collect()
}

/// Every endpoint of the Service port named `port_name`, one per address and port.
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
    node_name: &str,
) -> Vec<Endpoint> {
    let mut found = BTreeMap::new();
    for slice in slices {
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or_default() == port_name
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(protocol)
        }) else {
            continue;
        };
        let Some(number) = port.port else { continue };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let ready = conditions.ready.unwrap_or(true);
            let serving = conditions.serving.unwrap_or(ready);
            let terminating = conditions.terminating.unwrap_or(false);
            let Some(ip) = endpoint.addresses.first() else {
                continue;
            };
            found.entry((ip.clone(), number)).or_insert(Endpoint {
                ip: ip.clone(),
                port: number,
                local: endpoint.node_name.as_deref() == Some(node_name),
                ready: ready && !terminating,
                serving_terminating: serving && terminating,
            });
        }
    }
    found.into_values().collect()
}

/// Fixtures the nftables and iptables renderers' tests share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use serde_json::json;

    /// Node `node-a` in cluster CIDR 10.42.0.0/16.
    pub fn node() -> NodeContext {
        NodeContext {
            node_name: "node-a".into(),
            cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
            node_ip: Some("198.18.0.2".parse().unwrap()),
            node_port_cidrs: Vec::new(),
        }
    }

    /// Service `default/web` with `spec`.
    pub fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        }))
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{node, service};
    use super::*;
    use serde_json::json;

    /// A slice of `web` with endpoints `(ip, node, ready, serving, terminating)` on port http/8080.
    fn slice(endpoints: &[(&str, &str, bool, bool, bool)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints.iter().map(|(ip, node, ready, serving, terminating)| json!({
                "addresses": [ip], "nodeName": node,
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn cluster_ip_spec() -> serde_json::Value {
        json!({"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    }

    const SVC: &str = "svc-default/web/tcp/http";
    const CLUSTER: &str = "cluster-default/web/tcp/http";
    const LOCAL: &str = "local-default/web/tcp/http";
    const EXT: &str = "ext-default/web/tcp/http";

    fn rules<'a>(set: &'a Ruleset, chain: &str) -> &'a [String] {
        &set.chains
            .get(chain)
            .unwrap_or_else(|| panic!("no chain {chain}"))
            .rules
    }

    #[test]
    fn cluster_ip_balances_over_ready_endpoints_and_masquerades_outside_traffic() {
        let set = compute(
            &[service(cluster_ip_spec())],
            &[slice(&[
                ("10.42.0.5", "node-a", true, true, false),
                ("10.42.1.6", "node-b", true, true, false),
                ("10.42.1.7", "node-b", false, false, false),
            ])],
            &node(),
        );
        assert_eq!(
            set.lookup("service-ips", "10.43.0.5 . tcp . 80"),
            Some(&*format!("goto {SVC}"))
        );
        assert_eq!(
            rules(&set, SVC),
            [
                "ip saddr != 10.42.0.0/16 jump mark-for-masquerade".to_string(),
                format!("goto {CLUSTER}")
            ]
        );
        assert_eq!(
            rules(&set, CLUSTER),
            [
                "meta l4proto tcp dnat ip addr . port to numgen random mod 2 \
                 map { 0 : 10.42.0.5 . 8080, 1 : 10.42.1.6 . 8080 }"
            ]
        );
        assert!(
            !set.chains.keys().any(|c| c.starts_with("endpoint-")),
            "without affinity an endpoint is a map entry, not a chain"
        );
        // Hairpin: a pod reaching itself through the Service is masqueraded.
        assert!(set.contains(HAIRPIN_SET, "10.42.0.5 . 10.42.0.5"));
        assert!(set.contains(HAIRPIN_SET, "10.42.1.6 . 10.42.1.6"));
        assert_eq!(
            rules(&set, "masquerading")[0],
            "ct status dnat ip saddr . ip daddr @hairpin meta mark set meta mark | 0x4000"
        );
        assert!(
            !rules(&set, CLUSTER)[0].contains("10.42.1.7")
                && !set.contains(HAIRPIN_SET, "10.42.1.7 . 10.42.1.7"),
            "not ready: not served"
        );
        assert_eq!(
            set.lookup("no-endpoint-services", "10.43.0.5 . tcp . 80"),
            None
        );
        assert_eq!(
            rules(&set, "masquerading").last().unwrap(),
            "masquerade fully-random"
        );
    }

    #[test]
    fn no_endpoints_rejects() {
        let set = compute(&[service(cluster_ip_spec())], &[], &node());
        assert_eq!(
            set.lookup("no-endpoint-services", "10.43.0.5 . tcp . 80"),
            Some("goto reject-chain")
        );
        assert_eq!(set.lookup("service-ips", "10.43.0.5 . tcp . 80"), None);
        assert!(!set.chains.contains_key(SVC));
        assert_eq!(
            rules(&set, "reject-chain"),
            ["meta l4proto tcp reject with tcp reset", "reject"]
        );
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let terminating = ("10.42.0.8", "node-a", false, true, true);
        let set = compute(
            &[service(cluster_ip_spec())],
            &[slice(&[terminating])],
            &node(),
        );
        assert!(rules(&set, CLUSTER)[0].contains("10.42.0.8 . 8080"));
        let set = compute(
            &[service(cluster_ip_spec())],
            &[slice(&[
                terminating,
                ("10.42.0.9", "node-a", true, true, false),
            ])],
            &node(),
        );
        assert!(!rules(&set, CLUSTER)[0].contains("10.42.0.8"));
        // Terminating and not serving: never used.
        let set = compute(
            &[service(cluster_ip_spec())],
            &[slice(&[("10.42.0.8", "node-a", false, false, true)])],
            &node(),
        );
        assert_eq!(
            set.lookup("no-endpoint-services", "10.43.0.5 . tcp . 80"),
            Some("goto reject-chain")
        );
    }

    #[test]
    fn headless_and_external_name_get_no_rules() {
        let base = compute(&[], &[], &node());
        let headless =
            service(json!({"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}));
        let external = service(json!({"type": "ExternalName", "externalName": "example.com"}));
        let endpoints = slice(&[("10.42.0.5", "node-a", true, true, false)]);
        assert_eq!(compute(&[headless, external], &[endpoints], &node()), base);
    }

    #[test]
    fn session_affinity_remembers_clients_per_endpoint_with_the_timeout() {
        let mut spec = cluster_ip_spec();
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        let set = compute(
            &[service(spec)],
            &[slice(&[("10.42.0.5", "node-a", true, true, false)])],
            &node(),
        );
        let affinity = "affinity-60-default/web/tcp/http__10.42.0.5/8080";
        let endpoint = "endpoint-default/web/tcp/http__10.42.0.5/8080";
        let collection = &set.collections[affinity];
        assert_eq!(collection.kind, CollectionKind::DynamicSet);
        assert!(collection.declaration.contains("timeout 60s"));
        assert_eq!(
            rules(&set, CLUSTER)[0],
            format!("ip saddr @{affinity} goto {endpoint}")
        );
        assert_eq!(
            rules(&set, CLUSTER)[1],
            format!("numgen random mod 1 vmap {{ 0 : goto {endpoint} }}")
        );
        assert_eq!(
            rules(&set, endpoint),
            [
                format!("update @{affinity} {{ ip saddr }}"),
                "meta l4proto tcp dnat to 10.42.0.5:8080".to_string()
            ]
        );
        assert!(set.contains(HAIRPIN_SET, "10.42.0.5 . 10.42.0.5"));
    }

    fn node_port_spec(policy: &str) -> serde_json::Value {
        json!({"type": "NodePort", "clusterIP": "10.43.0.5", "externalTrafficPolicy": policy,
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]})
    }

    #[test]
    fn node_port_masquerades_and_uses_every_endpoint() {
        let set = compute(
            &[service(node_port_spec("Cluster"))],
            &[slice(&[("10.42.1.6", "node-b", true, true, false)])],
            &node(),
        );
        assert_eq!(
            set.lookup("service-nodeports", "tcp . 30080"),
            Some(&*format!("goto {EXT}"))
        );
        assert_eq!(
            rules(&set, EXT),
            [
                "jump mark-for-masquerade".to_string(),
                format!("goto {CLUSTER}")
            ]
        );
        assert_eq!(
            rules(&set, "services")[1],
            "fib daddr type local meta l4proto . th dport vmap @service-nodeports"
        );
        let empty = compute(&[service(node_port_spec("Cluster"))], &[], &node());
        assert_eq!(
            empty.lookup("no-endpoint-nodeports", "tcp . 30080"),
            Some("goto reject-chain")
        );
        assert_eq!(empty.lookup("service-nodeports", "tcp . 30080"), None);
    }

    #[test]
    fn external_traffic_policy_local_keeps_the_client_ip_and_uses_local_endpoints() {
        let set = compute(
            &[service(node_port_spec("Local"))],
            &[slice(&[
                ("10.42.0.5", "node-a", true, true, false),
                ("10.42.1.6", "node-b", true, true, false),
            ])],
            &node(),
        );
        assert_eq!(
            rules(&set, EXT),
            [
                format!("ip saddr 10.42.0.0/16 goto {CLUSTER}"),
                "fib saddr type local jump mark-for-masquerade".to_string(),
                format!("fib saddr type local goto {CLUSTER}"),
                format!("goto {LOCAL}"),
            ]
        );
        assert!(
            !rules(&set, EXT)
                .iter()
                .any(|r| r == "jump mark-for-masquerade")
        );
        assert!(
            rules(&set, LOCAL)[0].contains("10.42.0.5")
                && !rules(&set, LOCAL)[0].contains("10.42.1.6")
        );
        // No local endpoint: outside clients are dropped, pods still served.
        let remote_only = compute(
            &[service(node_port_spec("Local"))],
            &[slice(&[("10.42.1.6", "node-b", true, true, false)])],
            &node(),
        );
        assert_eq!(
            remote_only.lookup("no-endpoint-nodeports", "tcp . 30080"),
            Some("drop")
        );
        assert_eq!(
            remote_only.lookup("service-nodeports", "tcp . 30080"),
            Some(&*format!("goto {EXT}"))
        );
        assert!(!remote_only.chains.contains_key(LOCAL));
    }

    #[test]
    fn internal_traffic_policy_local_uses_only_local_endpoints() {
        let mut spec = cluster_ip_spec();
        spec["internalTrafficPolicy"] = json!("Local");
        let set = compute(
            &[service(spec.clone())],
            &[slice(&[
                ("10.42.0.5", "node-a", true, true, false),
                ("10.42.1.6", "node-b", true, true, false),
            ])],
            &node(),
        );
        assert_eq!(rules(&set, SVC)[1], format!("goto {LOCAL}"));
        assert!(!rules(&set, LOCAL)[0].contains("10.42.1.6"));
        let remote_only = compute(
            &[service(spec)],
            &[slice(&[("10.42.1.6", "node-b", true, true, false)])],
            &node(),
        );
        assert_eq!(
            remote_only.lookup("no-endpoint-services", "10.43.0.5 . tcp . 80"),
            Some("drop")
        );
    }

    #[test]
    fn load_balancer_ingress_addresses_are_external_entry_points() {
        let mut spec = node_port_spec("Cluster");
        spec["type"] = json!("LoadBalancer");
        let mut svc = service(spec);
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.2"}]}}))
                .unwrap();
        let set = compute(
            &[svc],
            &[slice(&[("10.42.1.6", "node-b", true, true, false)])],
            &node(),
        );
        assert_eq!(
            set.lookup("service-ips", "198.18.0.2 . tcp . 80"),
            Some(&*format!("goto {EXT}"))
        );
        assert_eq!(
            set.lookup("service-nodeports", "tcp . 30080"),
            Some(&*format!("goto {EXT}"))
        );
    }

    /// A LoadBalancer Service at 198.18.0.2 and 198.18.0.7 (the fixture node is
    /// 198.18.0.2) with these source ranges and traffic policy.
    fn load_balancer(ranges: serde_json::Value, policy: &str) -> Service {
        let mut spec = node_port_spec(policy);
        spec["type"] = json!("LoadBalancer");
        spec["loadBalancerSourceRanges"] = ranges;
        let mut svc = service(spec);
        svc.status = serde_json::from_value(
            json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.2"}, {"ip": "198.18.0.7"}]}}),
        )
        .unwrap();
        svc
    }

    const FIREWALL: &str = "firewall-default/web/tcp/http";

    #[test]
    fn the_older_source_ranges_annotation_counts_when_the_field_is_empty() {
        let endpoints = [slice(&[("10.42.1.6", "node-b", true, true, false)])];
        let mut annotated = load_balancer(json!([]), "Cluster");
        annotated.metadata.annotations = Some(
            [(
                "service.beta.kubernetes.io/load-balancer-source-ranges".to_string(),
                "192.0.2.0/24, 203.0.113.0/25".to_string(),
            )]
            .into(),
        );
        let set = compute(std::slice::from_ref(&annotated), &endpoints, &node());
        assert_eq!(
            rules(&set, FIREWALL),
            ["ip saddr != { 192.0.2.0/24, 203.0.113.0/25 } drop"]
        );
        // The field wins over the annotation.
        annotated.spec.as_mut().unwrap().load_balancer_source_ranges =
            Some(vec!["198.51.100.0/24".into()]);
        let set = compute(&[annotated], &endpoints, &node());
        assert_eq!(
            rules(&set, FIREWALL),
            ["ip saddr != { 198.51.100.0/24 } drop"]
        );
    }

    #[test]
    fn source_ranges_drop_other_sources_to_the_load_balancer_addresses_before_dnat() {
        let endpoints = [slice(&[("10.42.1.6", "node-b", true, true, false)])];
        let set = compute(
            &[load_balancer(
                json!(["192.0.2.0/24", " 203.0.113.0/25"]),
                "Cluster",
            )],
            &endpoints,
            &node(),
        );
        for ip in ["198.18.0.2", "198.18.0.7"] {
            assert_eq!(
                set.lookup("firewall-ips", &format!("{ip} . tcp . 80")),
                Some(&*format!("goto {FIREWALL}"))
            );
            assert_eq!(
                set.lookup("service-ips", &format!("{ip} . tcp . 80")),
                Some(&*format!("goto {EXT}")),
                "admitted sources still reach the Service"
            );
        }
        assert_eq!(
            rules(&set, FIREWALL),
            ["ip saddr != { 192.0.2.0/24, 203.0.113.0/25 } drop"]
        );
        assert_eq!(set.lookup("firewall-ips", "tcp . 30080"), None);
        assert_eq!(
            rules(&set, "firewall-check"),
            ["ip daddr . meta l4proto . th dport vmap @firewall-ips"]
        );
        for chain in ["filter-prerouting-pre-dnat", "filter-output-pre-dnat"] {
            let base = &set.chains[chain];
            assert!(
                base.declaration.contains("priority -110"),
                "before DNAT (dstnat is -100): {}",
                base.declaration
            );
            assert_eq!(base.rules, ["ct state new jump firewall-check"]);
        }
        // A Local policy without local endpoints: dropped by the policy anyway, and
        // still checked first.
        let local = compute(
            &[load_balancer(json!(["192.0.2.0/24"]), "Local")],
            &endpoints,
            &node(),
        );
        assert_eq!(
            rules(&local, FIREWALL),
            ["ip saddr != { 192.0.2.0/24 } drop"]
        );
    }

    #[test]
    fn a_range_holding_the_node_admits_the_load_balancer_addresses_and_none_admits_all() {
        let endpoints = [slice(&[("10.42.1.6", "node-b", true, true, false)])];
        // 198.18.0.2/32 holds the node: both ingress addresses are admitted, the
        // node's own once (it is the range itself).
        let set = compute(
            &[load_balancer(
                json!(["198.18.0.2/32", "10.0.0.0/8", "10.1.0.0/16"]),
                "Cluster",
            )],
            &endpoints,
            &node(),
        );
        assert_eq!(
            rules(&set, FIREWALL),
            ["ip saddr != { 10.0.0.0/8, 198.18.0.2/32, 198.18.0.7/32 } drop"],
            "ranges inside another are left out"
        );
        // No ranges: every source may, no firewall.
        let open = compute(&[load_balancer(json!([]), "Cluster")], &endpoints, &node());
        assert!(!open.chains.contains_key(FIREWALL));
        assert!(open.collections["firewall-ips"].elements.is_empty());
        // Only IPv6 ranges: no IPv4 source may.
        let v6 = compute(
            &[load_balancer(json!(["2001:db8::/64"]), "Cluster")],
            &endpoints,
            &node(),
        );
        assert_eq!(rules(&v6, FIREWALL), ["drop"]);
        // Not a LoadBalancer: the field means nothing.
        let mut spec = node_port_spec("Cluster");
        spec["loadBalancerSourceRanges"] = json!(["192.0.2.0/24"]);
        let node_port = compute(&[service(spec)], &endpoints, &node());
        assert!(!node_port.chains.contains_key(FIREWALL));
    }

    #[test]
    fn health_check_node_port_only_for_load_balancers_with_a_local_policy() {
        let ports = |policy: &str, kind: &str| {
            let mut spec = node_port_spec(policy);
            spec["type"] = json!(kind);
            spec["healthCheckNodePort"] = json!(32000);
            service_ports(&[service(spec)], &[], &node())
        };
        assert_eq!(
            ports("Local", "LoadBalancer")[0].health_check_node_port,
            Some(32000)
        );
        assert_eq!(
            ports("Cluster", "LoadBalancer")[0].health_check_node_port,
            None
        );
        assert_eq!(ports("Local", "NodePort")[0].health_check_node_port, None);
        let port = &ports("Local", "LoadBalancer")[0];
        assert_eq!(
            port.service,
            ServiceName {
                namespace: "default".into(),
                name: "web".into()
            }
        );
    }

    #[test]
    fn slices_of_other_services_and_ports_are_ignored() {
        let mut other = slice(&[("10.42.0.5", "node-a", true, true, false)]);
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/service-name".into(), "db".into());
        let mut wrong_port = slice(&[("10.42.0.6", "node-a", true, true, false)]);
        wrong_port.ports.as_mut().unwrap()[0].name = Some("metrics".into());
        let set = compute(&[service(cluster_ip_spec())], &[other, wrong_port], &node());
        assert_eq!(
            set.lookup("no-endpoint-services", "10.43.0.5 . tcp . 80"),
            Some("goto reject-chain")
        );
    }
}

/// The rendered scripts checked by the real `nft -c -f` (check mode: parses and
/// validates against the kernel, programs nothing; needs root).
#[cfg(test)]
mod nft_check {
    use super::*;
    use serde_json::json;

    fn every_kind() -> (Vec<Service>, Vec<EndpointSlice>) {
        let service = |name: &str, spec: serde_json::Value, status: serde_json::Value| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"}, "spec": spec, "status": status,
            }))
            .unwrap()
        };
        let slice = |name: &str, endpoints: serde_json::Value| -> EndpointSlice {
            serde_json::from_value(json!({
                "metadata": {"name": format!("{name}-x"), "namespace": "default",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "dns", "port": 53, "protocol": "UDP"}],
                "endpoints": endpoints,
            }))
            .unwrap()
        };
        let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080},
                           {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]);
        let ready = json!([
            {"addresses": ["10.42.0.5"], "nodeName": "node-a", "conditions": {"ready": true}},
            {"addresses": ["10.42.1.6"], "conditions": {"ready": true}},
        ]);
        let services = vec![
            service(
                "plain",
                json!({"clusterIP": "10.43.0.5", "ports": ports}),
                json!({}),
            ),
            service(
                "empty",
                json!({"clusterIP": "10.43.0.6", "ports": ports}),
                json!({}),
            ),
            service(
                "sticky",
                json!({"clusterIP": "10.43.0.7", "ports": ports, "sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}}),
                json!({}),
            ),
            service(
                "local",
                json!({"type": "LoadBalancer", "clusterIP": "10.43.0.8", "ports": ports,
                       "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                       "healthCheckNodePort": 32000,
                       "loadBalancerSourceRanges": ["192.0.2.0/24", "198.18.0.0/16"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.9"}]}}),
            ),
            service(
                "closed",
                json!({"type": "LoadBalancer", "clusterIP": "10.43.0.10", "ports": ports,
                       "loadBalancerSourceRanges": ["2001:db8::/64"]}),
                json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.10"}]}}),
            ),
            service(
                "node",
                json!({"type": "NodePort", "clusterIP": "10.43.0.9",
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30090}]}),
                json!({}),
            ),
        ];
        let slices = vec![
            slice("plain", ready.clone()),
            slice("sticky", ready.clone()),
            slice("local", ready.clone()),
        ];
        (services, slices)
    }

    fn nft_check(script: &str) {
        krust_net::command::nft_check(script).unwrap();
    }

    #[test]
    fn full_table_of_every_service_kind_is_accepted_by_nft() {
        let node = NodeContext {
            node_name: "node-a".into(),
            cluster_cidr: Some("10.42.0.0/16".parse().unwrap()),
            node_ip: Some("198.18.0.1".parse().unwrap()),
            node_port_cidrs: vec![
                "198.18.0.0/24".parse().unwrap(),
                "127.0.0.0/8".parse().unwrap(),
            ],
        };
        let (services, slices) = every_kind();
        let full = compute(&services, &slices, &node);
        assert!(full.chains.len() > 20, "every kind makes chains");
        nft_check(&full.render(None));
        // A diff is checked as the full table followed by the change (check mode
        // keeps no state between runs).
        let fewer = compute(&services[1..], &slices[1..2], &node);
        nft_check(&format!(
            "{}{}",
            full.render(None),
            fewer.render(Some(&full))
        ));
    }
}
