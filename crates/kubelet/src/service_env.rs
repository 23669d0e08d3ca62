//! The environment variables kubelets give containers for Services (upstream's
//! `enableServiceLinks`): for each Service with a cluster IP in the pod's namespace,
//! and always for `kubernetes` in `default` (how in-cluster clients find the API),
//! `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`, one `<NAME>_SERVICE_PORT_<PORT>` per
//! named port, and the Docker-link style `<NAME>_PORT`, `<NAME>_PORT_<n>_<PROTO>`
//! with `_PROTO`, `_PORT` and `_ADDR`. Names are upper-cased with `-` as `_`;
//! Services are taken in name order, and the container's own env wins over them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};

/// The namespace and name of the Service whose variables every pod gets.
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// The Service variables for `pod`, from every Service the node knows.
pub fn for_pod<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    pod: &Pod,
) -> Vec<(String, String)> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for service in services {
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let service_namespace = service.metadata.namespace.as_deref().unwrap_or_default();
        if !has_cluster_ip(service) {
            continue;
        }
        if (service_namespace, name) == MASTER_SERVICE {
            chosen.entry(name.to_string()).or_insert(service);
        } else if service_namespace == namespace && links {
            chosen.insert(name.to_string(), service);
        }
    }
    chosen
        .values()
        .flat_map(|service| variables(service))
        .collect()
}

fn has_cluster_ip(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or("");
    !ip.is_empty() && ip != "None"
}

fn env_name(name: &str) -> String {
    name.to_uppercase().replace('-', "_")
}

/// The variables of one Service with a cluster IP.
fn variables(service: &Service) -> Vec<(String, String)> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let ports = spec.ports.as_deref().unwrap_or_default();
    let Some(first) = ports.first() else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let prefix = env_name(service.metadata.name.as_deref().unwrap_or_default());
    let host_port = |port: i32| match ip.contains(':') {
        true => format!("[{ip}]:{port}"),
        false => format!("{ip}:{port}"),
    };
    let mut env = vec![
        (format!("{prefix}_SERVICE_HOST"), ip.clone()),
        (format!("{prefix}_SERVICE_PORT"), first.port.to_string()),
    ];
    for port in ports {
        if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
            env.push((
                format!("{prefix}_SERVICE_PORT_{}", env_name(name)),
                port.port.to_string(),
            ));
        }
    }
    for (index, port) in ports.iter().enumerate() {
        let protocol = port.protocol.as_deref().unwrap_or("TCP");
        let url = format!("{}://{}", protocol.to_lowercase(), host_port(port.port));
        if index == 0 {
            env.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        env.push((port_prefix.clone(), url));
        env.push((format!("{port_prefix}_PROTO"), protocol.to_lowercase()));
        env.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        env.push((format!("{port_prefix}_ADDR"), ip.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(namespace: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": ports},
        }))
        .unwrap()
    }

    fn pod(namespace: &str, links: Option<bool>) -> Pod {
        let mut pod =
            json!({"metadata": {"name": "p", "namespace": namespace}, "spec": {"containers": []}});
        if let Some(links) = links {
            pod["spec"]["enableServiceLinks"] = json!(links);
        }
        serde_json::from_value(pod).unwrap()
    }

    #[test]
    fn a_service_gives_upstreams_variables_in_order() {
        let web = service(
            "ns",
            "my-web",
            "10.43.0.20",
            json!([{"name": "http", "port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        );
        let env = for_pod([&web], &pod("ns", None));
        let expected = [
            ("MY_WEB_SERVICE_HOST", "10.43.0.20"),
            ("MY_WEB_SERVICE_PORT", "80"),
            ("MY_WEB_SERVICE_PORT_HTTP", "80"),
            ("MY_WEB_SERVICE_PORT_DNS_UDP", "53"),
            ("MY_WEB_PORT", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP", "tcp://10.43.0.20:80"),
            ("MY_WEB_PORT_80_TCP_PROTO", "tcp"),
            ("MY_WEB_PORT_80_TCP_PORT", "80"),
            ("MY_WEB_PORT_80_TCP_ADDR", "10.43.0.20"),
            ("MY_WEB_PORT_53_UDP", "udp://10.43.0.20:53"),
            ("MY_WEB_PORT_53_UDP_PROTO", "udp"),
            ("MY_WEB_PORT_53_UDP_PORT", "53"),
            ("MY_WEB_PORT_53_UDP_ADDR", "10.43.0.20"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn only_the_pods_namespace_and_the_api_service_headless_ones_never() {
        let api = service(
            "default",
            "kubernetes",
            "10.43.0.1",
            json!([{"name": "https", "port": 443}]),
        );
        let here = service("ns", "here", "10.43.0.5", json!([{"port": 8080}]));
        let elsewhere = service("other", "there", "10.43.0.6", json!([{"port": 8080}]));
        let headless = service("ns", "headless", "None", json!([{"port": 80}]));
        let all = [&api, &here, &elsewhere, &headless];
        let names = |env: Vec<(String, String)>| -> Vec<String> {
            env.into_iter()
                .filter(|(k, _)| k.ends_with("_SERVICE_HOST"))
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            names(for_pod(all, &pod("ns", None))),
            vec!["HERE_SERVICE_HOST", "KUBERNETES_SERVICE_HOST"]
        );
        // Links off: still the API's.
        assert_eq!(
            names(for_pod(all, &pod("ns", Some(false)))),
            vec!["KUBERNETES_SERVICE_HOST"]
        );
    }
}
