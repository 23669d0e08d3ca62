//! A pod's resolv.conf: the nameservers, search list and options the runtime writes
//! into the sandbox, from the pod's `dnsPolicy` and `dnsConfig`, the node's cluster
//! DNS settings and the host's resolv.conf, by upstream's kubelet rules:
//!
//! - `ClusterFirst` (the default): the cluster DNS servers only, searching
//!   `<namespace>.svc.<domain> svc.<domain> <domain>` then the host's search list,
//!   with `ndots:5`. On a hostNetwork pod it means `Default`, and so it does when the
//!   node has no cluster DNS (the caller warns);
//! - `ClusterFirstWithHostNet`: `ClusterFirst` even on the host network;
//! - `Default`: the host's resolv.conf as it is;
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! `dnsConfig` then appends nameservers and searches (duplicates dropped) and
//! overrides options by name. What exceeds the limits (3 nameservers, 32 search
//! domains, 2048 characters of search line, 253 characters a domain) is cut, with a
//! warning the caller reports.

use k8s_openapi::api::core::v1::PodSpec;

use crate::cri::api;

/// Most nameservers a resolver uses (glibc's MAXNS).
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains in a pod's resolv.conf.
pub const MAX_SEARCH_PATHS: usize = 32;
/// Longest search line, domains joined by spaces.
pub const MAX_SEARCH_LINE_CHARS: usize = 2048;
/// Longest search domain (a DNS-1123 subdomain).
const MAX_DOMAIN_CHARS: usize = 253;

/// The node's DNS settings every pod's resolv.conf starts from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeDns {
    /// The cluster DNS servers (`--cluster-dns`); empty: the node has none.
    pub cluster_servers: Vec<String>,
    /// The cluster domain (`--cluster-domain`); empty: no cluster search domains.
    pub cluster_domain: String,
    /// The host's resolv.conf (`--resolv-conf`).
    pub host: api::DnsConfig,
}

/// A pod's resolv.conf, and what had to be cut or fallen back from to make it.
#[derive(Debug, PartialEq)]
pub struct PodDns {
    pub config: api::DnsConfig,
    pub warnings: Vec<String>,
}

/// Parses a resolv.conf: `nameserver` lines accumulate, the last `search` and
/// `options` lines win, comments are skipped; trailing dots of search domains go.
pub fn parse_resolv_conf(text: &str) -> api::DnsConfig {
    let mut dns = api::DnsConfig::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            Some("search") => {
                dns.searches = words.map(|s| s.trim_end_matches('.').to_string()).collect()
            }
            Some("options") => dns.options = words.map(str::to_string).collect(),
            _ => {}
        }
    }
    dns
}

/// Whether every nameserver of `dns` is a loopback address (a local stub resolver
/// such as systemd-resolved's 127.0.0.53), which a pod in its own network namespace
/// cannot reach.
pub fn only_loopback_servers(dns: &api::DnsConfig) -> bool {
    !dns.servers.is_empty()
        && dns.servers.iter().all(|server| {
            server
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false)
        })
}

/// The resolv.conf of a pod in `namespace` with `spec`, on a node with `node`.
pub fn pod_dns(spec: &PodSpec, namespace: &str, node: &NodeDns) -> PodDns {
    let mut warnings = Vec::new();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let wants_cluster = match policy {
        "None" => None,
        "ClusterFirstWithHostNet" => Some(true),
        "ClusterFirst" => Some(!host_network),
        // "Default"; the API server rejects anything else.
        _ => Some(false),
    };
    let mut config = match wants_cluster {
        None => api::DnsConfig::default(),
        Some(true) if !node.cluster_servers.is_empty() => api::DnsConfig {
            servers: node.cluster_servers.clone(),
            searches: cluster_searches(namespace, &node.cluster_domain, &node.host.searches),
            options: vec!["ndots:5".into()],
        },
        Some(true) => {
            warnings.push(format!(
                "the node has no cluster DNS server (--cluster-dns) and cannot give pods the \
                 {policy:?} policy; falling back to \"Default\" (the host's resolv.conf)"
            ));
            node.host.clone()
        }
        Some(false) => node.host.clone(),
    };
    if let Some(extra) = &spec.dns_config {
        config
            .servers
            .extend(extra.nameservers.iter().flatten().cloned());
        config.servers = without_duplicates(std::mem::take(&mut config.servers));
        config
            .searches
            .extend(extra.searches.iter().flatten().cloned());
        config.searches = without_duplicates(std::mem::take(&mut config.searches));
        for option in extra.options.iter().flatten() {
            let name = option.name.clone().unwrap_or_default();
            let merged = match option.value.as_deref() {
                Some(value) if !value.is_empty() => format!("{name}:{value}"),
                _ => name.clone(),
            };
            match config.options.iter_mut().find(|o| option_name(o) == name) {
                Some(existing) => *existing = merged,
                None => config.options.push(merged),
            }
        }
    }
    fit_limits(&mut config, &mut warnings);
    PodDns { config, warnings }
}

fn cluster_searches(namespace: &str, domain: &str, host_searches: &[String]) -> Vec<String> {
    if domain.is_empty() {
        return host_searches.to_vec();
    }
    let mut searches = vec![
        format!("{namespace}.svc.{domain}"),
        format!("svc.{domain}"),
        domain.to_string(),
    ];
    searches.extend(host_searches.iter().cloned());
    without_duplicates(searches)
}

fn option_name(option: &str) -> &str {
    option.split(':').next().unwrap_or(option)
}

/// `items` in order, each only at its first place.
fn without_duplicates(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|item| seen.insert(item.clone()))
        .collect()
}

fn fit_limits(config: &mut api::DnsConfig, warnings: &mut Vec<String>) {
    if config.servers.len() > MAX_NAMESERVERS {
        config.servers.truncate(MAX_NAMESERVERS);
        warnings.push(format!(
            "nameserver limits were exceeded, some nameservers have been omitted; the \
             applied nameserver line is: {}",
            config.servers.join(" ")
        ));
    }
    let before = config.searches.clone();
    config.searches.truncate(MAX_SEARCH_PATHS);
    config
        .searches
        .retain(|search| search.len() <= MAX_DOMAIN_CHARS);
    while config.searches.join(" ").len() > MAX_SEARCH_LINE_CHARS {
        config.searches.pop();
    }
    if config.searches != before {
        warnings.push(format!(
            "search line limits were exceeded, some search paths have been omitted; the \
             applied search line is: {}",
            config.searches.join(" ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodDNSConfig, PodDNSConfigOption};

    fn node() -> NodeDns {
        NodeDns {
            cluster_servers: vec!["10.43.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host: parse_resolv_conf(
                "# host\nnameserver 192.0.2.53\nsearch corp.example. lab.example\noptions timeout:2\n",
            ),
        }
    }

    fn spec(policy: Option<&str>, host_network: bool) -> PodSpec {
        PodSpec {
            dns_policy: policy.map(str::to_string),
            host_network: Some(host_network),
            ..Default::default()
        }
    }

    #[test]
    fn parses_resolv_conf_as_a_resolver_does() {
        let dns = parse_resolv_conf(
            "nameserver 1.1.1.1\n; c\nsearch a.example\nnameserver 8.8.8.8\nsearch b.example. c\noptions ndots:1\noptions rotate\n",
        );
        assert_eq!(dns.servers, ["1.1.1.1", "8.8.8.8"]);
        assert_eq!(dns.searches, ["b.example", "c"]);
        assert_eq!(dns.options, ["rotate"]);
    }

    #[test]
    fn cluster_first_uses_the_cluster_server_and_search_list() {
        let dns = pod_dns(&spec(None, false), "shop", &node());
        assert_eq!(dns.config.servers, ["10.43.0.10"]);
        assert_eq!(
            dns.config.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "lab.example"
            ]
        );
        assert_eq!(dns.config.options, ["ndots:5"]);
        assert!(dns.warnings.is_empty());
    }

    #[test]
    fn host_network_means_default_unless_asked_for_cluster_dns() {
        let host = pod_dns(&spec(Some("ClusterFirst"), true), "a", &node());
        assert_eq!(host.config, node().host);
        let cluster = pod_dns(&spec(Some("ClusterFirstWithHostNet"), true), "a", &node());
        assert_eq!(cluster.config.servers, ["10.43.0.10"]);
        let default = pod_dns(&spec(Some("Default"), false), "a", &node());
        assert_eq!(default.config, node().host);
    }

    #[test]
    fn cluster_first_without_cluster_dns_falls_back_to_the_host_with_a_warning() {
        let mut without = node();
        without.cluster_servers.clear();
        let dns = pod_dns(&spec(None, false), "a", &without);
        assert_eq!(dns.config, without.host);
        assert_eq!(dns.warnings.len(), 1, "{:?}", dns.warnings);
        assert!(dns.warnings[0].contains("--cluster-dns"));
    }

    #[test]
    fn dns_config_appends_without_duplicates_and_overrides_options() {
        let mut pod = spec(None, false);
        pod.dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["10.43.0.10".into(), "192.0.2.1".into()]),
            searches: Some(vec!["cluster.local".into(), "extra.example".into()]),
            options: Some(vec![
                PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                },
                PodDNSConfigOption {
                    name: Some("edns0".into()),
                    value: None,
                },
            ]),
        });
        let dns = pod_dns(&pod, "a", &node());
        assert_eq!(dns.config.servers, ["10.43.0.10", "192.0.2.1"]);
        assert_eq!(dns.config.searches.last().unwrap(), "extra.example");
        assert_eq!(
            dns.config
                .searches
                .iter()
                .filter(|s| *s == "cluster.local")
                .count(),
            1
        );
        assert_eq!(dns.config.options, ["ndots:2", "edns0"]);
    }

    #[test]
    fn policy_none_has_only_the_pods_own_settings() {
        let mut pod = spec(Some("None"), false);
        pod.dns_config = Some(PodDNSConfig {
            nameservers: Some(vec!["192.0.2.9".into()]),
            searches: None,
            options: None,
        });
        let dns = pod_dns(&pod, "a", &node());
        assert_eq!(dns.config.servers, ["192.0.2.9"]);
        assert!(dns.config.searches.is_empty() && dns.config.options.is_empty());
    }

    #[test]
    fn limits_cut_nameservers_and_search_domains_with_warnings() {
        let mut pod = spec(Some("None"), false);
        let long = format!("{}.example", "a".repeat(250));
        let mut searches: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
        searches.insert(0, long.clone());
        pod.dns_config = Some(PodDNSConfig {
            nameservers: Some((1..=5).map(|i| format!("192.0.2.{i}")).collect()),
            searches: Some(searches),
            options: None,
        });
        let dns = pod_dns(&pod, "a", &node());
        assert_eq!(dns.config.servers.len(), MAX_NAMESERVERS);
        assert!(dns.config.searches.len() <= MAX_SEARCH_PATHS);
        assert!(!dns.config.searches.contains(&long));
        assert_eq!(dns.config.searches[0], "d0.example");
        assert_eq!(dns.warnings.len(), 2, "{:?}", dns.warnings);

        let mut wide = spec(Some("None"), false);
        wide.dns_config = Some(PodDNSConfig {
            searches: Some(
                (0..30)
                    .map(|i| format!("{i:02}{}", "b".repeat(98)))
                    .collect(),
            ),
            ..Default::default()
        });
        let dns = pod_dns(&wide, "a", &node());
        assert!(dns.config.searches.join(" ").len() <= MAX_SEARCH_LINE_CHARS);
        assert_eq!(dns.config.searches.len(), 20);
    }

    #[test]
    fn loopback_only_resolvers_are_recognised() {
        assert!(only_loopback_servers(&parse_resolv_conf(
            "nameserver 127.0.0.53\n"
        )));
        assert!(!only_loopback_servers(&parse_resolv_conf(
            "nameserver 127.0.0.53\nnameserver 192.0.2.1\n"
        )));
        assert!(!only_loopback_servers(&parse_resolv_conf("")));
    }
}
