//! The iptables mode of the proxy, the fallback for hosts where nftables cannot be
//! used: the shared Service port model ([`crate::compute::service_ports`]) rendered as
//! chains of the `nat` and `filter` tables ([`tables`], pure), laid out as upstream
//! kube-proxy's iptables mode, and applied with one `iptables-restore --noflush` per
//! change ([`Applier`]), atomic per table.
//!
//! nat: `PREROUTING`/`OUTPUT` jump to `KUBE-SERVICES`, which sends a ClusterIP to its
//! internal policy chain (`KUBE-SVC-*` with every usable endpoint, `KUBE-SVL-*` with
//! this node's under internalTrafficPolicy Local), a LoadBalancer address to its
//! `KUBE-EXT-*` chain, and, last, local destinations to `KUBE-NODEPORTS` (node ports to
//! `KUBE-EXT-*`). A policy chain picks an endpoint chain (`KUBE-SEP-*`, which DNATs)
//! with `statistic --mode random` rules of falling probability; under ClientIP
//! affinity `recent` lists remember each endpoint's clients first. Packets to
//! masquerade are marked in `KUBE-MARK-MASQ` and masqueraded in `KUBE-POSTROUTING`; an
//! endpoint reaching itself (hairpin) is marked in its `KUBE-SEP-*` chain.
//! filter: a Service port without endpoints is rejected (dropped under a Local
//! policy without local endpoints) in `KUBE-SERVICES` (ClusterIPs) and
//! `KUBE-EXTERNAL-SERVICES` (node ports, LoadBalancer addresses).
//! `loadBalancerSourceRanges`: a LoadBalancer address goes to the port's `KUBE-FW-*`
//! chain instead, which sends the admitted sources on to `KUBE-EXT-*`; the rest are not
//! DNATed, still have the LoadBalancer address as destination, and are dropped by
//! the filter table's `KUBE-PROXY-FIREWALL` (node ports are not subject to the ranges,
//! as upstream).
//!
//! Chain names are `KUBE-SVC-` and the first 16 characters of the base32 SHA-256 of
//! the Service port's key (its endpoint's address too for `KUBE-SEP-`), so they stay
//! within iptables' 28 characters and the same across restarts.

use std::collections::BTreeMap;
use std::fmt::Write;

use anyhow::{Context, Result};

use crate::apply::Commands;
use crate::compute::{Endpoint, MASQUERADE_MARK, NodeContext, ServicePort};

/// The tables the proxy writes to.
pub const TABLES: [&str; 2] = ["nat", "filter"];

/// The proxy's chains of one table: name to rules (each the part after `-A CHAIN`).
pub type Chains = BTreeMap<String, Vec<String>>;

/// The desired content of the proxy's chains in the `nat` and `filter` tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub nat: Chains,
    pub filter: Chains,
}

/// The jumps from the built-in chains into the proxy's, as `(table, chain, rule)`.
/// They are inserted at the top of the built-in chains once, outside
/// `iptables-restore` (which cannot add a rule only if it is missing).
pub const JUMPS: [(&str, &str, &str); 11] = [
    (
        "nat",
        "PREROUTING",
        "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
    (
        "nat",
        "OUTPUT",
        "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW -m comment --comment \"kube-proxy firewall rules\" -j KUBE-PROXY-FIREWALL",
    ),
];

/// Whether the proxy owns `chain` (creates it, and deletes it when no longer needed).
pub fn owned(chain: &str) -> bool {
    matches!(
        chain,
        "KUBE-SERVICES"
            | "KUBE-NODEPORTS"
            | "KUBE-POSTROUTING"
            | "KUBE-MARK-MASQ"
            | "KUBE-EXTERNAL-SERVICES"
            | "KUBE-PROXY-FIREWALL"
    ) || [
        "KUBE-SVC-",
        "KUBE-SVL-",
        "KUBE-EXT-",
        "KUBE-FW-",
        "KUBE-SEP-",
    ]
    .iter()
    .any(|prefix| chain.starts_with(prefix))
}

/// `prefix` and the first 16 characters of the base32 SHA-256 of `input`.
fn chain_name(prefix: &str, input: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, input.as_bytes());
    let encoded = data_encoding::BASE32.encode(digest.as_ref());
    format!("{prefix}{}", &encoded[..16])
}

/// The chain of `port`'s every usable endpoint (`KUBE-SVC-*`).
pub fn cluster_chain(port: &ServicePort) -> String {
    chain_name("KUBE-SVC-", &port.key)
}

/// The chain of `port`'s endpoints on this node (`KUBE-SVL-*`).
pub fn local_chain(port: &ServicePort) -> String {
    chain_name("KUBE-SVL-", &port.key)
}

/// The chain outside clients of `port` enter (`KUBE-EXT-*`).
pub fn external_chain(port: &ServicePort) -> String {
    chain_name("KUBE-EXT-", &port.key)
}

/// The chain that checks the sources of `port`'s LoadBalancer traffic against its
/// `loadBalancerSourceRanges` (`KUBE-FW-*`).
pub fn firewall_chain(port: &ServicePort) -> String {
    chain_name("KUBE-FW-", &port.key)
}

/// The chain that DNATs to one endpoint of `port` (`KUBE-SEP-*`).
pub fn endpoint_chain(port: &ServicePort, endpoint: &Endpoint) -> String {
    chain_name(
        "KUBE-SEP-",
        &format!("{}/{}:{}", port.key, endpoint.ip, endpoint.port),
    )
}

/// The proxy's chains for these Service ports on this node.
pub fn tables(ports: &[ServicePort], node: &NodeContext) -> Tables {
    let mut tables = Tables::default();
    for chain in ["KUBE-SERVICES", "KUBE-NODEPORTS"] {
        tables.nat.insert(chain.into(), Vec::new());
    }
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-PROXY-FIREWALL",
    ] {
        tables.filter.insert(chain.into(), Vec::new());
    }
    tables.nat.insert(
        "KUBE-MARK-MASQ".into(),
        vec![format!("-j MARK --or-mark {MASQUERADE_MARK}")],
    );
    tables.nat.insert(
        "KUBE-POSTROUTING".into(),
        vec![
            format!("-m mark ! --mark {MASQUERADE_MARK}/{MASQUERADE_MARK} -j RETURN"),
            format!("-j MARK --xor-mark {MASQUERADE_MARK}"),
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        ],
    );
    for port in ports {
        add_port(&mut tables, port, node);
    }
    // Local destinations go to the node ports last, after every ClusterIP and
    // LoadBalancer address had its chance (only those in `--nodeport-addresses` when
    // it is set).
    let comment = "-m comment --comment \"kubernetes service nodeports; must be the last rule\"";
    if node.node_port_cidrs.is_empty() {
        rule(
            &mut tables.nat,
            "KUBE-SERVICES",
            format!("{comment} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"),
        );
    }
    for range in &node.node_port_cidrs {
        rule(
            &mut tables.nat,
            "KUBE-SERVICES",
            format!("{comment} -d {range} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"),
        );
    }
    tables
}

fn rule(chains: &mut Chains, chain: &str, rule: String) {
    chains.entry(chain.to_string()).or_default().push(rule);
}

/// `-p tcp -m tcp --dport 80` and the like.
fn port_match(protocol: &str, port: i32) -> String {
    format!("-p {protocol} -m {protocol} --dport {port}")
}

/// What answers a Service port without (local) endpoints in the filter table:
/// a TCP reset (as the nftables mode: the ICMP error was not seen by pods' sockets),
/// the ICMP error for other protocols, or a silent drop under a Local policy.
fn no_endpoints_target(protocol: &str, local_policy: bool) -> &'static str {
    match (local_policy, protocol) {
        (true, _) => "DROP",
        (false, "tcp") => "REJECT --reject-with tcp-reset",
        (false, _) => "REJECT",
    }
}

fn add_port(tables: &mut Tables, port: &ServicePort, node: &NodeContext) {
    let name = &port.name;
    let protocol = port.protocol.as_str();
    let svc = cluster_chain(port);
    let svl = local_chain(port);
    let ext = external_chain(port);
    if !port.cluster.is_empty() {
        tables.nat.insert(svc.clone(), Vec::new());
    }
    if port.uses_local_chain() {
        tables.nat.insert(svl.clone(), Vec::new());
    }

    // ClusterIP: its internal policy chain masquerades traffic from outside the pod
    // network (only for the ClusterIP: the chain is entered from KUBE-EXT-* too).
    let cluster_ip = format!(
        "-d {}/32 {}",
        port.cluster_ip,
        port_match(protocol, port.port)
    );
    let internal = if port.internal_local { &svl } else { &svc };
    if port.internal().is_empty() {
        let (what, target) = if port.internal_local {
            (
                "has no local endpoints",
                no_endpoints_target(protocol, true),
            )
        } else {
            ("has no endpoints", no_endpoints_target(protocol, false))
        };
        rule(
            &mut tables.filter,
            "KUBE-SERVICES",
            format!("-m comment --comment \"{name} {what}\" {cluster_ip} -j {target}"),
        );
    } else {
        rule(
            &mut tables.nat,
            "KUBE-SERVICES",
            format!("-m comment --comment \"{name} cluster IP\" {cluster_ip} -j {internal}"),
        );
        let outside = match node.cluster_cidr {
            Some(cidr) => format!(" ! -s {cidr}"),
            None => String::new(),
        };
        rule(
            &mut tables.nat,
            internal,
            format!(
                "-m comment --comment \"{name} cluster IP\" {cluster_ip}{outside} -j KUBE-MARK-MASQ"
            ),
        );
    }
    if !port.cluster.is_empty() {
        add_policy_rules(tables, &svc, port, &port.cluster);
    }
    if port.uses_local_chain() {
        add_policy_rules(tables, &svl, port, &port.local);
    }

    // Node port and LoadBalancer addresses: the external entry points.
    if !port.is_external() {
        return;
    }
    if !port.cluster.is_empty() {
        let mut ext_rules = Vec::new();
        if port.external_local {
            // Pods and the node itself are served by every endpoint (as upstream);
            // the node's own traffic is masqueraded, outside clients keep their IP.
            if let Some(cidr) = node.cluster_cidr {
                ext_rules.push(format!(
                    "-m comment --comment \"pod traffic for {name} external destinations\" -s {cidr} -j {svc}"
                ));
            }
            ext_rules.push(format!(
                "-m comment --comment \"masquerade LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"
            ));
            ext_rules.push(format!(
                "-m comment --comment \"route LOCAL traffic for {name} external destinations\" -m addrtype --src-type LOCAL -j {svc}"
            ));
            if !port.local.is_empty() {
                ext_rules.push(format!("-j {svl}"));
            }
        } else {
            ext_rules.push(format!(
                "-m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ"
            ));
            ext_rules.push(format!("-j {svc}"));
        }
        tables.nat.insert(ext.clone(), ext_rules);
        if let Some(node_port) = port.node_port {
            rule(
                &mut tables.nat,
                "KUBE-NODEPORTS",
                format!(
                    "-m comment --comment \"{name}\" {} -j {ext}",
                    port_match(protocol, node_port)
                ),
            );
        }
        let load_balancer_chain = if port.uses_firewall() {
            add_firewall(tables, port, &ext);
            firewall_chain(port)
        } else {
            ext.clone()
        };
        for ip in &port.ingress_ips {
            rule(
                &mut tables.nat,
                "KUBE-SERVICES",
                format!(
                    "-m comment --comment \"{name} loadbalancer IP\" -d {ip}/32 {} -j {load_balancer_chain}",
                    port_match(protocol, port.port)
                ),
            );
        }
    }
    if port.external().is_empty() {
        let what = if port.external_local {
            "has no local endpoints"
        } else {
            "has no endpoints"
        };
        let target = no_endpoints_target(protocol, port.external_local);
        if let Some(node_port) = port.node_port {
            rule(
                &mut tables.filter,
                "KUBE-EXTERNAL-SERVICES",
                format!(
                    "-m comment --comment \"{name} {what}\" -m addrtype --dst-type LOCAL {} -j {target}",
                    port_match(protocol, node_port)
                ),
            );
        }
        for ip in &port.ingress_ips {
            rule(
                &mut tables.filter,
                "KUBE-EXTERNAL-SERVICES",
                format!(
                    "-m comment --comment \"{name} {what}\" -d {ip}/32 {} -j {target}",
                    port_match(protocol, port.port)
                ),
            );
        }
    }
}

/// The `KUBE-FW-*` chain of `port`: admitted sources go on to its external chain
/// `ext`; the others leave it without DNAT and are dropped in `KUBE-PROXY-FIREWALL`.
fn add_firewall(tables: &mut Tables, port: &ServicePort, ext: &str) {
    let name = &port.name;
    let fw = firewall_chain(port);
    let mut rules: Vec<String> = port
        .allowed_sources
        .iter()
        .flatten()
        .map(|source| {
            format!("-m comment --comment \"{name} loadbalancer IP\" -s {source} -j {ext}")
        })
        .collect();
    rules.push(format!(
        "-m comment --comment \"other traffic to {name} will be dropped by KUBE-PROXY-FIREWALL\""
    ));
    tables.nat.insert(fw.clone(), rules);
    for ip in &port.ingress_ips {
        rule(
            &mut tables.filter,
            "KUBE-PROXY-FIREWALL",
            format!(
                "-m comment --comment \"{name} traffic not accepted by {fw}\" -d {ip}/32 {} -j DROP",
                port_match(&port.protocol, port.port)
            ),
        );
    }
}

/// The rules of a policy chain choosing among `endpoints`, and each endpoint's
/// `KUBE-SEP-*` chain. Under ClientIP affinity a client the endpoint's `recent` list
/// remembers goes back to it; otherwise endpoint i of n is taken with probability
/// 1/(n-i), which makes every endpoint equally likely.
fn add_policy_rules(tables: &mut Tables, chain: &str, port: &ServicePort, endpoints: &[Endpoint]) {
    let name = &port.name;
    let protocol = port.protocol.as_str();
    let sep_chains: Vec<String> = endpoints
        .iter()
        .map(|endpoint| endpoint_chain(port, endpoint))
        .collect();
    if let Some(timeout) = port.affinity_timeout {
        for (endpoint, sep) in endpoints.iter().zip(&sep_chains) {
            rule(
                &mut tables.nat,
                chain,
                format!(
                    "-m comment --comment \"{name} -> {}:{}\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {timeout} --reap -j {sep}",
                    endpoint.ip, endpoint.port
                ),
            );
        }
    }
    let count = endpoints.len();
    for (index, (endpoint, sep)) in endpoints.iter().zip(&sep_chains).enumerate() {
        let left = count - index;
        let chance = if left > 1 {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / left as f64
            )
        } else {
            String::new()
        };
        rule(
            &mut tables.nat,
            chain,
            format!(
                "-m comment --comment \"{name} -> {}:{}\"{chance} -j {sep}",
                endpoint.ip, endpoint.port
            ),
        );
        if tables.nat.contains_key(sep) {
            continue; // the same endpoint in the cluster and the local chain
        }
        let remember = if port.affinity_timeout.is_some() {
            format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set")
        } else {
            String::new()
        };
        tables.nat.insert(
            sep.clone(),
            vec![
                format!(
                    "-m comment --comment \"{name}\" -s {}/32 -j KUBE-MARK-MASQ",
                    endpoint.ip
                ),
                format!(
                    "-m comment --comment \"{name}\" -p {protocol}{remember} -m {protocol} -j DNAT --to-destination {}:{}",
                    endpoint.ip, endpoint.port
                ),
            ],
        );
    }
}

impl Tables {
    fn table(&self, table: &str) -> &Chains {
        match table {
            "nat" => &self.nat,
            _ => &self.filter,
        }
    }

    /// The `iptables-restore --noflush` input that turns the proxy's chains from
    /// `previous` into `self`: every chain that is new or whose rules changed (all of
    /// them when `full`) declared, which empties it, and filled; every chain of
    /// `previous` no longer wanted emptied and deleted. Tables without a change are
    /// left out; empty when nothing changes.
    pub fn render(&self, previous: &Tables, full: bool) -> String {
        let mut out = String::new();
        for table in TABLES {
            let (new, old) = (self.table(table), previous.table(table));
            let changed: Vec<(&String, &Vec<String>)> = new
                .iter()
                .filter(|(name, rules)| full || old.get(*name) != Some(*rules))
                .collect();
            let gone: Vec<&String> = old.keys().filter(|name| !new.contains_key(*name)).collect();
            if changed.is_empty() && gone.is_empty() {
                continue;
            }
            let _ = writeln!(out, "*{table}");
            for name in changed
                .iter()
                .map(|(name, _)| *name)
                .chain(gone.iter().copied())
            {
                let _ = writeln!(out, ":{name} - [0:0]");
            }
            for (name, rules) in &changed {
                for rule in rules.iter() {
                    let _ = writeln!(out, "-A {name} {rule}");
                }
            }
            for name in &gone {
                let _ = writeln!(out, "-X {name}");
            }
            let _ = writeln!(out, "COMMIT");
        }
        out
    }

    /// The proxy's chains (without their rules) in `iptables-save` output of one table.
    fn chains_in_save(save: &str) -> Chains {
        save.lines()
            .filter_map(|line| line.strip_prefix(':'))
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| owned(name))
            .map(|name| (name.to_string(), Vec::new()))
            .collect()
    }
}

/// Runs `iptables-restore` (and `iptables`, `iptables-save`) for the proxy.
#[derive(Debug)]
pub struct Applier {
    commands: Commands,
    /// What the last successful apply left; `None` when unknown (at the start, after
    /// a failure): the next apply then reads the chains that exist and rewrites all.
    applied: Option<Tables>,
}

impl Applier {
    pub fn new(commands: Commands) -> Applier {
        Applier {
            commands,
            applied: None,
        }
    }

    /// Brings the proxy's chains to `desired`; returns whether anything changed.
    pub async fn apply(&mut self, desired: Tables) -> Result<bool> {
        let (previous, full) = match self.applied.take() {
            Some(applied) => (applied, false),
            None => (self.existing().await?, true),
        };
        let script = desired.render(&previous, full);
        if script.is_empty() {
            self.applied = Some(desired);
            return Ok(false);
        }
        self.restore(&script).await?;
        if full {
            self.ensure_jumps().await?;
        }
        self.applied = Some(desired);
        Ok(true)
    }

    /// Removes every chain of the proxy and the jumps into them (nothing if there are
    /// none, or if iptables is not installed).
    pub async fn remove_all(&mut self) -> Result<()> {
        self.applied = None;
        if !self.commands.exists("iptables-restore") {
            return Ok(());
        }
        for (table, chain, rule) in JUMPS {
            // Deleted until none is left (an earlier run may have inserted it twice).
            while self.has_rule(table, chain, rule).await {
                self.iptables(table, "-D", chain, rule).await?;
            }
        }
        let existing = self.existing().await?;
        let script = Tables::default().render(&existing, true);
        if !script.is_empty() {
            self.restore(&script).await?;
        }
        Ok(())
    }

    /// The proxy's chains that exist now (their rules left out).
    async fn existing(&self) -> Result<Tables> {
        let save = |table: &'static str| async move {
            self.commands
                .output(&["iptables-save", "-t", table], None)
                .await
                .map(|text| Tables::chains_in_save(&text))
        };
        Ok(Tables {
            nat: save("nat").await?,
            filter: save("filter").await?,
        })
    }

    async fn restore(&self, script: &str) -> Result<()> {
        self.commands
            .output(&["iptables-restore", "-w", "--noflush"], Some(script))
            .await
            .map(drop)
            .with_context(|| format!("iptables-restore refused the proxy's rules:\n{script}"))
    }

    /// Inserts every missing jump from a built-in chain at its top.
    async fn ensure_jumps(&self) -> Result<()> {
        for (table, chain, rule) in JUMPS {
            if !self.has_rule(table, chain, rule).await {
                self.iptables(table, "-I", chain, rule).await?;
            }
        }
        Ok(())
    }

    async fn has_rule(&self, table: &str, chain: &str, rule: &str) -> bool {
        self.iptables(table, "-C", chain, rule).await.is_ok()
    }

    async fn iptables(&self, table: &str, action: &str, chain: &str, rule: &str) -> Result<()> {
        let mut argv = vec!["iptables", "-w", "-t", table, action, chain];
        let words = split_words(rule);
        argv.extend(words.iter().map(String::as_str));
        self.commands.output(&argv, None).await.map(drop)
    }
}

/// Splits a rule into its words as a shell would, for `"quoted words"` only.
fn split_words(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in rule.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::fixtures::{node, service};
    use crate::compute::service_ports;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    /// A ready endpoint slice of `web` on port http/8080: `(ip, node)`.
    fn slice(endpoints: &[(&str, &str)]) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints.iter().map(|(ip, node)| json!({
                "addresses": [ip], "nodeName": node, "conditions": {"ready": true},
            })).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn render(services: &[Service], slices: &[EndpointSlice]) -> (Vec<ServicePort>, Tables) {
        let ports = service_ports(services, slices, &node());
        let tables = tables(&ports, &node());
        (ports, tables)
    }

    fn cluster_ip() -> serde_json::Value {
        json!({"clusterIP": "10.43.0.5", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]})
    }

    fn node_port(policy: &str) -> serde_json::Value {
        json!({"type": "NodePort", "clusterIP": "10.43.0.5", "externalTrafficPolicy": policy,
               "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]})
    }

    #[test]
    fn chain_names_are_hashes_of_the_service_port_within_iptables_limits() {
        let (ports, _) = render(&[service(cluster_ip())], &[]);
        let svc = cluster_chain(&ports[0]);
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        assert!(svc.starts_with("KUBE-SVC-"));
        assert!(
            svc["KUBE-SVC-".len()..]
                .chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
        assert_eq!(svc, cluster_chain(&ports[0]), "stable");
        assert_eq!(svc[9..], local_chain(&ports[0])[9..], "one hash per port");
        assert!(owned(&svc) && owned("KUBE-MARK-MASQ") && !owned("KUBE-FIREWALL"));
        assert_eq!(ports[0].name, "default/web:http");
        let unnamed = json!({"clusterIP": "10.43.0.5", "ports": [{"port": 80}]});
        let (ports, _) = render(&[service(unnamed)], &[]);
        assert_eq!(
            ports[0].name, "default/web",
            "as upstream names an unnamed port"
        );
    }

    #[test]
    fn cluster_ip_balances_with_falling_probabilities_and_masquerades_outside_traffic() {
        let (ports, tables) = render(
            &[service(cluster_ip())],
            &[slice(&[
                ("10.42.0.5", "node-a"),
                ("10.42.1.6", "node-b"),
                ("10.42.1.7", "node-b"),
            ])],
        );
        let port = &ports[0];
        let svc = cluster_chain(port);
        let seps: Vec<String> = port
            .cluster
            .iter()
            .map(|e| endpoint_chain(port, e))
            .collect();
        assert_eq!(
            tables.nat["KUBE-SERVICES"],
            [
                format!(
                    "-m comment --comment \"default/web:http cluster IP\" -d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j {svc}"
                ),
                "-m comment --comment \"kubernetes service nodeports; must be the last rule\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS".to_string(),
            ]
        );
        assert_eq!(
            tables.nat[&svc],
            [
                "-m comment --comment \"default/web:http cluster IP\" -d 10.43.0.5/32 -p tcp -m tcp --dport 80 ! -s 10.42.0.0/16 -j KUBE-MARK-MASQ".to_string(),
                format!(
                    "-m comment --comment \"default/web:http -> 10.42.0.5:8080\" -m statistic --mode random --probability 0.3333333333 -j {}",
                    seps[0]
                ),
                format!(
                    "-m comment --comment \"default/web:http -> 10.42.1.6:8080\" -m statistic --mode random --probability 0.5000000000 -j {}",
                    seps[1]
                ),
                format!(
                    "-m comment --comment \"default/web:http -> 10.42.1.7:8080\" -j {}",
                    seps[2]
                ),
            ]
        );
        // Each endpoint DNATs, and masquerades its own traffic (hairpin).
        assert_eq!(
            tables.nat[&seps[0]],
            [
                "-m comment --comment \"default/web:http\" -s 10.42.0.5/32 -j KUBE-MARK-MASQ",
                "-m comment --comment \"default/web:http\" -p tcp -m tcp -j DNAT --to-destination 10.42.0.5:8080",
            ]
        );
        assert_eq!(tables.nat["KUBE-MARK-MASQ"], ["-j MARK --or-mark 0x4000"]);
        assert_eq!(
            tables.nat["KUBE-POSTROUTING"].last().unwrap(),
            "-m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
        );
        assert!(tables.filter["KUBE-SERVICES"].is_empty());
    }

    #[test]
    fn service_without_endpoints_is_rejected_in_the_filter_table() {
        let (ports, tables) = render(&[service(node_port("Cluster"))], &[]);
        assert_eq!(
            tables.filter["KUBE-SERVICES"],
            [
                "-m comment --comment \"default/web:http has no endpoints\" -d 10.43.0.5/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset"
            ]
        );
        assert_eq!(
            tables.filter["KUBE-EXTERNAL-SERVICES"],
            [
                "-m comment --comment \"default/web:http has no endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT --reject-with tcp-reset"
            ]
        );
        assert!(!tables.nat.contains_key(&cluster_chain(&ports[0])));
        assert!(!tables.nat.contains_key(&external_chain(&ports[0])));
        assert!(tables.nat["KUBE-NODEPORTS"].is_empty());
        // Other protocols get the ICMP error.
        let udp = json!({"clusterIP": "10.43.0.5", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]});
        let (_, tables) = render(&[service(udp)], &[]);
        assert!(tables.filter["KUBE-SERVICES"][0].ends_with("-p udp -m udp --dport 53 -j REJECT"));
    }

    #[test]
    fn node_port_masquerades_and_enters_the_cluster_chain() {
        let (ports, tables) = render(
            &[service(node_port("Cluster"))],
            &[slice(&[("10.42.1.6", "node-b")])],
        );
        let (svc, ext) = (cluster_chain(&ports[0]), external_chain(&ports[0]));
        assert_eq!(
            tables.nat["KUBE-NODEPORTS"],
            [format!(
                "-m comment --comment \"default/web:http\" -p tcp -m tcp --dport 30080 -j {ext}"
            )]
        );
        assert_eq!(
            tables.nat[&ext],
            [
                "-m comment --comment \"masquerade traffic for default/web:http external destinations\" -j KUBE-MARK-MASQ".to_string(),
                format!("-j {svc}"),
            ]
        );
        assert!(tables.filter["KUBE-EXTERNAL-SERVICES"].is_empty());
    }

    #[test]
    fn session_affinity_remembers_clients_in_recent_lists() {
        let mut spec = cluster_ip();
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
        let (ports, tables) = render(
            &[service(spec)],
            &[slice(&[("10.42.0.5", "node-a"), ("10.42.1.6", "node-b")])],
        );
        let port = &ports[0];
        let svc = &tables.nat[&cluster_chain(port)];
        let sep = endpoint_chain(port, &port.cluster[0]);
        let other = endpoint_chain(port, &port.cluster[1]);
        assert_eq!(
            svc[1],
            format!(
                "-m comment --comment \"default/web:http -> 10.42.0.5:8080\" -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds 60 --reap -j {sep}"
            )
        );
        assert!(svc[2].contains(&format!("--rcheck --seconds 60 --reap -j {other}")));
        // The remembered clients are checked before the random choice.
        assert!(svc[3].contains("--probability 0.5000000000"));
        assert_eq!(
            tables.nat[&sep][1],
            format!(
                "-m comment --comment \"default/web:http\" -p tcp -m recent --name {sep} --mask 255.255.255.255 --rsource --set -m tcp -j DNAT --to-destination 10.42.0.5:8080"
            )
        );
    }

    #[test]
    fn external_traffic_policy_local_keeps_outside_clients_on_local_endpoints() {
        let (ports, tables) = render(
            &[service(node_port("Local"))],
            &[slice(&[("10.42.0.5", "node-a"), ("10.42.1.6", "node-b")])],
        );
        let port = &ports[0];
        let (svc, svl, ext) = (cluster_chain(port), local_chain(port), external_chain(port));
        assert_eq!(
            tables.nat[&ext],
            [
                format!(
                    "-m comment --comment \"pod traffic for default/web:http external destinations\" -s 10.42.0.0/16 -j {svc}"
                ),
                "-m comment --comment \"masquerade LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ".to_string(),
                format!(
                    "-m comment --comment \"route LOCAL traffic for default/web:http external destinations\" -m addrtype --src-type LOCAL -j {svc}"
                ),
                format!("-j {svl}"),
            ]
        );
        let local_sep = endpoint_chain(port, &port.local[0]);
        assert_eq!(
            tables.nat[&svl],
            [format!(
                "-m comment --comment \"default/web:http -> 10.42.0.5:8080\" -j {local_sep}"
            )]
        );
        // No local endpoint: outside clients are dropped, pods still served.
        let (ports, tables) = render(
            &[service(node_port("Local"))],
            &[slice(&[("10.42.1.6", "node-b")])],
        );
        assert!(!tables.nat.contains_key(&local_chain(&ports[0])));
        assert_eq!(tables.nat[&external_chain(&ports[0])].len(), 3);
        assert_eq!(
            tables.filter["KUBE-EXTERNAL-SERVICES"],
            [
                "-m comment --comment \"default/web:http has no local endpoints\" -m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j DROP"
            ]
        );
    }

    #[test]
    fn internal_traffic_policy_local_uses_the_local_chain_for_the_cluster_ip() {
        let mut spec = cluster_ip();
        spec["internalTrafficPolicy"] = json!("Local");
        let (ports, tables) = render(
            &[service(spec)],
            &[slice(&[("10.42.0.5", "node-a"), ("10.42.1.6", "node-b")])],
        );
        let svl = local_chain(&ports[0]);
        assert!(tables.nat["KUBE-SERVICES"][0].ends_with(&format!("-j {svl}")));
        assert!(tables.nat[&svl][0].ends_with("-j KUBE-MARK-MASQ"));
        assert_eq!(tables.nat[&svl].len(), 2, "one local endpoint");
    }

    #[test]
    fn load_balancer_addresses_enter_the_external_chain() {
        let mut spec = node_port("Cluster");
        spec["type"] = json!("LoadBalancer");
        let mut svc = service(spec);
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.18.0.2"}]}}))
                .unwrap();
        let (ports, tables) = render(&[svc.clone()], &[slice(&[("10.42.1.6", "node-b")])]);
        assert_eq!(
            tables.nat["KUBE-SERVICES"][1],
            format!(
                "-m comment --comment \"default/web:http loadbalancer IP\" -d 198.18.0.2/32 -p tcp -m tcp --dport 80 -j {}",
                external_chain(&ports[0])
            )
        );
        let (_, empty) = render(&[svc], &[]);
        assert!(empty.filter["KUBE-EXTERNAL-SERVICES"][1].contains("-d 198.18.0.2/32"));
    }

    #[test]
    fn source_ranges_send_load_balancer_traffic_through_the_firewall_chain() {
        let mut spec = node_port("Cluster");
        spec["type"] = json!("LoadBalancer");
        spec["loadBalancerSourceRanges"] = json!(["192.0.2.0/24", "198.18.0.0/24"]);
        let mut svc = service(spec);
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.18.1.9"}]}}))
                .unwrap();
        let (ports, tables) = render(&[svc.clone()], &[slice(&[("10.42.1.6", "node-b")])]);
        let fw = firewall_chain(&ports[0]);
        let ext = external_chain(&ports[0]);
        assert!(fw.starts_with("KUBE-FW-") && fw.len() <= 28 && owned(&fw));
        assert_eq!(
            tables.nat["KUBE-SERVICES"][1],
            format!(
                "-m comment --comment \"default/web:http loadbalancer IP\" -d 198.18.1.9/32 -p tcp -m tcp --dport 80 -j {fw}"
            )
        );
        // The fixture node 198.18.0.2 is in a range: the LoadBalancer address is
        // admitted as a source too.
        assert_eq!(
            tables.nat[&fw],
            [
                format!("-m comment --comment \"default/web:http loadbalancer IP\" -s 192.0.2.0/24 -j {ext}"),
                format!("-m comment --comment \"default/web:http loadbalancer IP\" -s 198.18.0.0/24 -j {ext}"),
                format!("-m comment --comment \"default/web:http loadbalancer IP\" -s 198.18.1.9/32 -j {ext}"),
                "-m comment --comment \"other traffic to default/web:http will be dropped by KUBE-PROXY-FIREWALL\"".to_string(),
            ]
        );
        assert_eq!(
            tables.filter["KUBE-PROXY-FIREWALL"],
            [format!(
                "-m comment --comment \"default/web:http traffic not accepted by {fw}\" -d 198.18.1.9/32 -p tcp -m tcp --dport 80 -j DROP"
            )]
        );
        // The node port is not subject to the ranges.
        assert!(tables.nat["KUBE-NODEPORTS"][0].ends_with(&format!("-j {ext}")));
        assert!(JUMPS.iter().any(|(table, chain, rule)| *table == "filter"
            && *chain == "INPUT"
            && rule.ends_with("-j KUBE-PROXY-FIREWALL")));
        // Without endpoints the address is rejected for everyone instead (as
        // upstream); without ranges there is no firewall.
        let (_, empty) = render(&[svc.clone()], &[]);
        assert!(empty.filter["KUBE-PROXY-FIREWALL"].is_empty());
        assert!(!empty.nat.keys().any(|chain| chain.starts_with("KUBE-FW-")));
        let mut spec = node_port("Cluster");
        spec["type"] = json!("LoadBalancer");
        svc.spec = serde_json::from_value(spec).unwrap();
        let (_, open) = render(&[svc], &[slice(&[("10.42.1.6", "node-b")])]);
        assert!(open.filter["KUBE-PROXY-FIREWALL"].is_empty());
        assert!(open.nat["KUBE-SERVICES"][1].ends_with(&format!("-j {ext}")));
    }

    #[test]
    fn render_declares_changed_chains_and_deletes_gone_ones() {
        let (_, old) = render(
            &[service(cluster_ip())],
            &[slice(&[("10.42.0.5", "node-a")])],
        );
        let (ports, new) = render(
            &[service(cluster_ip())],
            &[slice(&[("10.42.0.6", "node-a")])],
        );
        let full = new.render(&Tables::default(), true);
        assert!(full.starts_with("*nat\n:KUBE-MARK-MASQ - [0:0]\n"));
        assert!(full.contains("-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n"));
        assert!(full.contains("COMMIT\n*filter\n:KUBE-EXTERNAL-SERVICES - [0:0]\n"));
        assert!(full.ends_with("COMMIT\n"));
        assert_eq!(new.render(&new, false), "", "nothing changed");
        // One endpoint replaced: its service chain rewritten, the old endpoint chain
        // deleted, the filter table untouched.
        let diff = new.render(&old, false);
        let svc = cluster_chain(&ports[0]);
        let sep = endpoint_chain(&ports[0], &ports[0].cluster[0]);
        let old_ports = service_ports(
            &[service(cluster_ip())],
            &[slice(&[("10.42.0.5", "node-a")])],
            &node(),
        );
        let old_sep = endpoint_chain(&old_ports[0], &old_ports[0].cluster[0]);
        let mut declared: Vec<&str> = diff.lines().filter(|l| l.starts_with(':')).collect();
        declared.sort();
        let mut expected = vec![
            format!(":{svc} - [0:0]"),
            format!(":{sep} - [0:0]"),
            format!(":{old_sep} - [0:0]"),
        ];
        expected.sort();
        assert_eq!(declared, expected);
        assert!(diff.starts_with("*nat\n"));
        assert!(diff.ends_with(&format!("-X {old_sep}\nCOMMIT\n")));
        assert!(!diff.contains("*filter"));
    }

    #[test]
    fn chains_in_save_are_the_owned_ones() {
        let save = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-ABC - [0:0]\n:DOCKER - [0:0]\n-A PREROUTING -j KUBE-SERVICES\nCOMMIT\n";
        let chains = Tables::chains_in_save(save);
        assert_eq!(
            chains.keys().collect::<Vec<_>>(),
            ["KUBE-SERVICES", "KUBE-SVC-ABC"]
        );
    }

    #[test]
    fn rule_words_keep_quoted_comments_together() {
        assert_eq!(
            split_words("-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
            [
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
    }
}
