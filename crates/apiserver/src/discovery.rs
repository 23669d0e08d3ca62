//! Discovery documents: `/api`, `/apis`, group and group-version resource lists, and
//! the aggregated form (`apidiscovery.k8s.io/v2`) that kubectl asks for first. All
//! built from the resource table.

use krust_api::resources::{self, ResourceInfo};
use serde_json::{Value, json};

/// The Content-Type of an aggregated discovery answer.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the Accept header asks for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList") && first.contains("v=v2"))
}

/// Kind and verbs of a subresource, as upstream advertises them.
fn subresource_kind(
    parent: &ResourceInfo,
    sub: &str,
) -> (
    &'static str,
    &'static str,
    &'static str,
    &'static [&'static str],
) {
    const GPU: &[&str] = &["get", "patch", "update"];
    match sub {
        "status" | "ephemeralcontainers" | "resize" | "approval" => {
            (parent.group, parent.version, parent.kind, GPU)
        }
        "scale" => ("autoscaling", "v1", "Scale", GPU),
        "binding" => ("", "v1", "Binding", &["create"]),
        "eviction" => ("policy", "v1", "Eviction", &["create"]),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        "finalize" => ("", "v1", "Namespace", &["update"]),
        "log" => ("", "v1", "Pod", &["get"]),
        "exec" => ("", "v1", "PodExecOptions", &["create", "get"]),
        "attach" => ("", "v1", "PodAttachOptions", &["create", "get"]),
        "portforward" => ("", "v1", "PodPortForwardOptions", &["create", "get"]),
        "proxy" => (
            "",
            "v1",
            match parent.plural {
                "nodes" => "NodeProxyOptions",
                "services" => "ServiceProxyOptions",
                _ => "PodProxyOptions",
            },
            &["create", "delete", "get", "patch", "update"],
        ),
        _ => (parent.group, parent.version, parent.kind, GPU),
    }
}

fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static ResourceInfo> {
    resources::builtin()
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// `/api`.
pub fn legacy_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_document(group: &str, versions: &[&str]) -> Value {
    let version_entry = |v: &&str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(version_entry).collect::<Vec<_>>(),
        "preferredVersion": version_entry(&versions[0]),
    })
}

/// `/apis`.
pub fn groups() -> Value {
    let groups: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(group, _)| !group.is_empty())
        .map(|(group, versions)| {
            let mut document = group_document(group, &versions);
            let object = document.as_object_mut().unwrap();
            object.remove("kind");
            object.remove("apiVersion");
            document
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn group(name: &str) -> Option<Value> {
    resources::group_versions()
        .into_iter()
        .find(|(group, _)| *group == name && !name.is_empty())
        .map(|(group, versions)| group_document(group, &versions))
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut entries = Vec::new();
    for r in in_group_version(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for sub in r.subresources {
            let (g, v, kind, verbs) = subresource_kind(r, sub);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != group || v != version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": entries}),
    )
}

/// The aggregated discovery document of the core group (`legacy`) or of all groups.
pub fn aggregated(legacy: bool) -> Value {
    let items: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(group, _)| group.is_empty() == legacy)
        .map(|(group, versions)| {
            let versions: Vec<Value> = versions
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = in_group_version(group, version)
                        .map(|r| {
                            let subresources: Vec<Value> = r
                                .subresources
                                .iter()
                                .map(|sub| {
                                    let (g, v, kind, verbs) = subresource_kind(r, sub);
                                    json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
                                })
                                .collect();
                            let mut entry = json!({
                                "resource": r.plural,
                                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                                "singularResource": r.singular,
                                "verbs": r.verbs(),
                            });
                            if !r.short_names.is_empty() {
                                entry["shortNames"] = json!(r.short_names);
                            }
                            if !r.categories.is_empty() {
                                entry["categories"] = json!(r.categories);
                            }
                            if !subresources.is_empty() {
                                entry["subresources"] = json!(subresources);
                            }
                            entry
                        })
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_cover_the_table() {
        let core = resource_list("", "v1").unwrap();
        let names: Vec<&str> = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(
            names.contains(&"pods")
                && names.contains(&"pods/status")
                && names.contains(&"namespaces/finalize")
        );
        let scale = core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "replicationcontrollers/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(
            groups()["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["name"] == "apps")
        );
        assert_eq!(
            group("autoscaling").unwrap()["preferredVersion"]["version"],
            "v2"
        );
        assert!(group("nosuch").is_none());
        let all = aggregated(false);
        assert!(
            all["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["metadata"]["name"] != "")
        );
        assert!(wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
        ));
        assert!(!wants_aggregated("application/json"));
    }
}
