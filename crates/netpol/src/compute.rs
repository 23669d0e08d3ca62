//! The pure part of NetworkPolicy enforcement: from NetworkPolicies, Pods and
//! Namespaces to the nftables script for this node's pods.
//!
//! A pod selected by a policy with policyType Ingress (Egress) is isolated in that
//! direction: only what some selecting policy's rules allow gets in (out). The
//! `forward` chain sees every packet to or from a local pod (routed from other nodes,
//! and bridged between local pods through br_netfilter); established and related
//! traffic passes first, so only new connections are judged. Each isolated pod has a
//! chain per direction whose rules `return` what is allowed and end in `drop`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use krust_api::selector::LabelSelector;
use serde_json::{Map, Value};

/// The table of the node whose pods are on `bridge`.
pub fn table(bridge: &str) -> String {
    format!("krust-netpol-{bridge}")
}

/// A pod as the rules see it.
struct PodView<'a> {
    namespace: &'a str,
    ip: &'a str,
    labels: Option<&'a Map<String, Value>>,
    pod: &'a Value,
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// Pods with an address on the pod network (not host-network, not finished).
fn pod_views(pods: &[Value]) -> Vec<PodView<'_>> {
    pods.iter()
        .filter_map(|pod| {
            let ip = str_at(pod, &["status", "podIP"]).filter(|ip| !ip.is_empty())?;
            if pod["spec"]["hostNetwork"].as_bool() == Some(true) {
                return None;
            }
            if matches!(
                str_at(pod, &["status", "phase"]),
                Some("Succeeded" | "Failed")
            ) {
                return None;
            }
            Some(PodView {
                namespace: str_at(pod, &["metadata", "namespace"]).unwrap_or("default"),
                ip,
                labels: pod["metadata"]["labels"].as_object(),
                pod,
            })
        })
        .collect()
}

fn selector(value: &Value) -> LabelSelector {
    // A selector that does not parse selects nothing (fail closed for isolation,
    // open for nothing).
    LabelSelector::from_json(value).unwrap_or_else(|_| LabelSelector::nothing())
}

/// Which directions a policy governs: policyTypes, or Ingress plus Egress when it
/// has egress rules.
fn policy_types(policy: &Value) -> (bool, bool) {
    match policy["spec"]["policyTypes"].as_array() {
        Some(types) => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        None => (true, policy["spec"]["egress"].is_array()),
    }
}

/// What one rule's peers allow: addresses (pods' IPs and plain ipBlocks) and
/// ipBlocks with exceptions; `any` when the rule names no peer.
#[derive(Default)]
struct Peers {
    any: bool,
    addresses: BTreeSet<String>,
    blocks_with_except: Vec<(String, Vec<String>)>,
    /// The pods among the peers, for named ports of egress rules.
    pods: Vec<usize>,
}

fn rule_peers(
    peers: Option<&Vec<Value>>,
    policy_namespace: &str,
    pods: &[PodView],
    namespaces: &BTreeMap<&str, Option<&Map<String, Value>>>,
) -> Peers {
    let mut out = Peers::default();
    let Some(peers) = peers.filter(|p| !p.is_empty()) else {
        out.any = true;
        return out;
    };
    for peer in peers {
        if let Some(block) = peer.get("ipBlock") {
            let cidr = block["cidr"].as_str().unwrap_or_default().to_string();
            let except: Vec<String> = block["except"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|c| c.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if except.is_empty() {
                out.addresses.insert(cidr);
            } else {
                out.blocks_with_except.push((cidr, except));
            }
            continue;
        }
        let pod_selector = peer.get("podSelector").map(selector);
        let namespace_selector = peer.get("namespaceSelector").map(selector);
        for (index, pod) in pods.iter().enumerate() {
            let namespace_ok = match &namespace_selector {
                Some(selector) => {
                    selector.matches(namespaces.get(pod.namespace).copied().flatten())
                }
                None => pod.namespace == policy_namespace,
            };
            let pod_ok = pod_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(pod.labels));
            if namespace_ok && pod_ok {
                out.addresses.insert(pod.ip.to_string());
                out.pods.push(index);
            }
        }
    }
    out
}

/// The number of the container port named `name` in `pod` (with its protocol).
fn named_port(pod: &Value, name: &str, protocol: &str) -> Option<i64> {
    pod["spec"]["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        .and_then(|p| p["containerPort"].as_i64())
}

/// One port match: `tcp dport 80`, `udp dport 53-60`, or any port of a protocol.
fn port_match(protocol: &str, ports: Option<String>) -> String {
    let protocol = protocol.to_ascii_lowercase();
    match ports {
        Some(ports) => format!("meta l4proto {protocol} th dport {ports}"),
        None => format!("meta l4proto {protocol}"),
    }
}

/// The matches of one rule's `ports` for traffic to `target` (the pod whose named
/// ports count); `[""]` when the rule names no port (every port).
fn rule_ports(ports: Option<&Vec<Value>>, target: Option<&Value>) -> Vec<String> {
    let Some(ports) = ports.filter(|p| !p.is_empty()) else {
        return vec![String::new()];
    };
    let mut matches = Vec::new();
    for port in ports {
        let protocol = port["protocol"].as_str().unwrap_or("TCP");
        let number = match &port["port"] {
            Value::Null => None,
            Value::Number(n) => n.as_i64(),
            Value::String(name) => match name.parse::<i64>() {
                Ok(n) => Some(n),
                // A named port this pod does not have matches nothing.
                Err(_) => match target.and_then(|pod| named_port(pod, name, protocol)) {
                    Some(n) => Some(n),
                    None => continue,
                },
            },
            _ => continue,
        };
        let ports = number.map(|n| match port["endPort"].as_i64() {
            Some(end) if end > n => format!("{n}-{end}"),
            _ => n.to_string(),
        });
        matches.push(port_match(protocol, ports));
    }
    matches
}

/// One direction of one pod: the rules of its chain.
fn chain_rules(
    direction: Direction,
    pod_index: usize,
    policies: &[&Value],
    pods: &[PodView],
    namespaces: &BTreeMap<&str, Option<&Map<String, Value>>>,
) -> Vec<String> {
    let (key, field) = match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    let other = match direction {
        Direction::Ingress => "saddr",
        Direction::Egress => "daddr",
    };
    let mut rules = Vec::new();
    for policy in policies {
        let namespace = str_at(policy, &["metadata", "namespace"]).unwrap_or("default");
        for rule in policy["spec"][key].as_array().into_iter().flatten() {
            let peers = rule_peers(rule[field].as_array(), namespace, pods, namespaces);
            let ports = rule["ports"].as_array();
            let has_named = ports.into_iter().flatten().any(|p| {
                p["port"]
                    .as_str()
                    .is_some_and(|n| n.parse::<i64>().is_err())
            });
            if direction == Direction::Egress && has_named {
                // Named ports are the destination pod's: one rule per peer pod.
                for &peer in &peers.pods {
                    for port in rule_ports(ports, Some(pods[peer].pod)) {
                        rules.push(format!("ip daddr {} {port} return", pods[peer].ip));
                    }
                }
                continue;
            }
            let target = (direction == Direction::Ingress).then(|| pods[pod_index].pod);
            for port in rule_ports(ports, target) {
                if peers.any {
                    rules.push(format!("{port} return").trim_start().to_string());
                    continue;
                }
                if !peers.addresses.is_empty() {
                    let set = peers
                        .addresses
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ");
                    rules.push(format!("ip {other} {{ {set} }} {port} return"));
                }
                for (cidr, except) in &peers.blocks_with_except {
                    rules.push(format!(
                        "ip {other} {cidr} ip {other} != {{ {} }} {port} return",
                        except.join(", ")
                    ));
                }
            }
        }
    }
    rules
        .iter_mut()
        .for_each(|r| *r = r.split_whitespace().collect::<Vec<_>>().join(" "));
    rules.push("drop".into());
    rules
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Ingress,
    Egress,
}

/// The `nft -f` script that (re)defines the table of `bridge` for the pods on
/// `node_name`.
pub fn script(
    bridge: &str,
    node_name: &str,
    policies: &[Value],
    pods: &[Value],
    namespaces: &[Value],
) -> String {
    let views = pod_views(pods);
    let namespace_labels: BTreeMap<&str, Option<&Map<String, Value>>> = namespaces
        .iter()
        .filter_map(|ns| {
            Some((
                str_at(ns, &["metadata", "name"])?,
                ns["metadata"]["labels"].as_object(),
            ))
        })
        .collect();
    let mut chains = String::new();
    let mut ingress_map = Vec::new();
    let mut egress_map = Vec::new();
    for (index, pod) in views.iter().enumerate() {
        if str_at(pod.pod, &["spec", "nodeName"]) != Some(node_name) {
            continue;
        }
        let selecting: Vec<&Value> = policies
            .iter()
            .filter(|policy| {
                str_at(policy, &["metadata", "namespace"]).unwrap_or("default") == pod.namespace
                    && selector(&policy["spec"]["podSelector"]).matches(pod.labels)
            })
            .collect();
        for direction in [Direction::Ingress, Direction::Egress] {
            let governing: Vec<&Value> = selecting
                .iter()
                .copied()
                .filter(|policy| {
                    let (ingress, egress) = policy_types(policy);
                    match direction {
                        Direction::Ingress => ingress,
                        Direction::Egress => egress,
                    }
                })
                .collect();
            if governing.is_empty() {
                continue;
            }
            let prefix = match direction {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
            };
            let chain = format!("{prefix}-{}", pod.ip.replace('.', "-"));
            let _ = writeln!(chains, "\tchain {chain} {{");
            for rule in chain_rules(direction, index, &governing, &views, &namespace_labels) {
                let _ = writeln!(chains, "\t\t{rule}");
            }
            let _ = writeln!(chains, "\t}}");
            let entry = format!("{} : jump {chain}", pod.ip);
            match direction {
                Direction::Ingress => ingress_map.push(entry),
                Direction::Egress => egress_map.push(entry),
            }
        }
    }
    let table = table(bridge);
    let mut script = format!("table ip {table}\ndelete table ip {table}\ntable ip {table} {{\n");
    script.push_str(&chains);
    script.push_str(
        "\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tct state established,related accept\n",
    );
    if !egress_map.is_empty() {
        let _ = writeln!(script, "\t\tip saddr vmap {{ {} }}", egress_map.join(", "));
    }
    if !ingress_map.is_empty() {
        let _ = writeln!(script, "\t\tip daddr vmap {{ {} }}", ingress_map.join(", "));
    }
    script.push_str("\t}\n}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ns: &str, ip: &str, node: &str, labels: Value) -> Value {
        json!({
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIP": ip, "phase": "Running"},
        })
    }

    fn policy(ns: &str, spec: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec})
    }

    fn world() -> (Vec<Value>, Vec<Value>) {
        let pods = vec![
            pod("web", "app", "10.42.1.5", "n1", json!({"app": "web"})),
            pod("ok", "app", "10.42.2.6", "n2", json!({"role": "ok"})),
            pod("other", "app", "10.42.2.7", "n2", json!({"role": "other"})),
            pod("far", "team", "10.42.2.8", "n2", json!({"role": "ok"})),
        ];
        let namespaces = vec![
            json!({"metadata": {"name": "app"}}),
            json!({"metadata": {"name": "team", "labels": {"team": "x"}}}),
        ];
        (pods, namespaces)
    }

    #[test]
    fn unselected_pods_are_not_isolated() {
        let (pods, namespaces) = world();
        let script = script("b", "n1", &[], &pods, &namespaces);
        assert!(!script.contains("vmap"), "{script}");
        assert!(script.contains("ct state established,related accept"));
    }

    #[test]
    fn default_deny_drops_everything_new_to_the_pod() {
        let (pods, namespaces) = world();
        let deny = policy("app", json!({"podSelector": {}}));
        let script = script("b", "n1", &[deny], &pods, &namespaces);
        assert!(
            script.contains("ip daddr vmap { 10.42.1.5 : jump ingress-10-42-1-5 }"),
            "{script}"
        );
        assert!(
            script.contains("chain ingress-10-42-1-5 {\n\t\tdrop\n"),
            "{script}"
        );
        assert!(!script.contains("saddr vmap"), "{script}");
    }

    #[test]
    fn pod_and_namespace_selectors_and_named_ports_allow_their_peers() {
        let (pods, namespaces) = world();
        let allow = policy(
            "app",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [
                    {"from": [{"podSelector": {"matchLabels": {"role": "ok"}}}],
                     "ports": [{"port": "http"}]},
                    {"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}]},
                ],
            }),
        );
        let script = script("b", "n1", &[allow], &pods, &namespaces);
        assert!(
            script.contains("ip saddr { 10.42.2.6 } meta l4proto tcp th dport 8080 return"),
            "{script}"
        );
        assert!(script.contains("ip saddr { 10.42.2.8 } return"), "{script}");
        assert!(!script.contains("10.42.2.7"), "{script}");
    }

    #[test]
    fn ip_blocks_with_exceptions_port_ranges_and_egress() {
        let (pods, namespaces) = world();
        let egress = policy(
            "app",
            json!({
                "podSelector": {"matchLabels": {"app": "web"}},
                "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.2.0/24"]}}],
                            "ports": [{"protocol": "UDP", "port": 53, "endPort": 60}]}],
            }),
        );
        let script = script("b", "n1", &[egress], &pods, &namespaces);
        assert!(
            script.contains("ip saddr vmap { 10.42.1.5 : jump egress-10-42-1-5 }"),
            "{script}"
        );
        assert!(
            script.contains("ip daddr 10.0.0.0/8 ip daddr != { 10.42.2.0/24 } meta l4proto udp th dport 53-60 return"),
            "{script}"
        );
        assert!(!script.contains("daddr vmap"), "{script}");
    }

    #[test]
    fn an_empty_rule_allows_all_and_only_local_pods_get_chains() {
        let (pods, namespaces) = world();
        let allow_all = policy("app", json!({"podSelector": {}, "ingress": [{}]}));
        let script = script("b", "n2", &[allow_all], &pods, &namespaces);
        assert!(
            script.contains("chain ingress-10-42-2-6 {\n\t\treturn\n\t\tdrop"),
            "{script}"
        );
        assert!(!script.contains("ingress-10-42-1-5"), "{script}");
        assert!(
            !script.contains("ingress-10-42-2-8"),
            "the team namespace has no policy"
        );
    }

    /// The real `nft` accepts a script with every kind of rule (check mode). Needs root.
    #[test]
    fn nft_accepts_the_script() {
        let (pods, namespaces) = world();
        let policies = vec![
            policy(
                "app",
                json!({"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80, "endPort": 90}]}]}),
            ),
            policy(
                "app",
                json!({"podSelector": {}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.42.0.0/16"]}}]},
                           {"to": [{"podSelector": {}}], "ports": [{"port": "http"}]}]}),
            ),
        ];
        let script = script("b", "n2", &policies, &pods, &namespaces);
        krust_net::command::nft_check(&script).unwrap();
    }
}
